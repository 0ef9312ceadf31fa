"""The fit-to-report contract: the name and columns of each table the fit stage writes to
data/models/ and a report reads.

The fit stage's writer and the report's reader both check a table against its definition
here (`check_model_table`), so a tunable that renames a column (e.g. timeline.quantiles, which
builds predicted_p10_weeks) fails with one line naming the table and the column, not somewhere
inside a notebook. A table may carry more columns than it declares (the timeline's profile
dimensions and quantiles follow params.yaml); the declared ones are those a report relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from analysis.errors import DataError
from analysis.results import HAZARD_RATIO_COLUMNS, TIDY_COLUMNS
from analysis.schema import Recovery
from analysis.survival.competing import GRAY_TEST_COLUMNS
from analysis.timeline import COMPARISON_COLUMNS as QUOTED_RANGE_COLUMNS

# Tables of the per-site comparison (fit family site_comparison): site_<whole-study name>.
SITE_TABLE_PREFIX = "site_"
# Tables of the trial team's adherence grouping (fit family adherence_grouping).
ADHERENCE_GROUPING_TABLE_PREFIX = "adherence_grouping_"
# The column naming the site in the site_comparison tables.
SITE_COLUMN = Recovery.site
# The groups a comparison left out before fitting (fewer than min_cell_size people).
SUPPRESSED_GROUPS = "suppressed_groups"
# The ranges of the adherence grouping (adherence_grouping_definition).
GROUPING_DEFINITION = "definition"
# The groups' medians and hazard ratios under moved cut-offs (adherence_grouping_sensitivity).
GROUPING_SENSITIVITY = "sensitivity"

# The timeline columns the report draws and tabulates: timeline.quantiles must give them.
TIMELINE_RANGE_COLUMNS = ("predicted_p10_weeks", "predicted_median_weeks", "predicted_p90_weeks")

# milestone_quoted_ranges: each quoted range beside the Turnbull quantile (weeks) and its CI.
MILESTONE_QUOTE_COLUMNS = (
    "milestone",
    "claim",
    "profile",
    "people",
    "quantile",
    "estimate_weeks",
    "conf_low_weeks",
    "conf_high_weeks",
    "quoted_low_weeks",
    "quoted_high_weeks",
    "verdict",
)
_TIDY = tuple(TIDY_COLUMNS)
_HAZARD_RATIOS = (*TIDY_COLUMNS, *HAZARD_RATIO_COLUMNS)
_CURVE = ("group", "time", "n_risk", "n_event", "n_censor", "survival", "conf_low", "conf_high")
_MEDIANS = ("group", "n", "events", "median", "conf_low", "conf_high")
_PRIMARY = (*TIDY_COLUMNS, "unit", "conf_method", *HAZARD_RATIO_COLUMNS)

# The tables of a group comparison (whole study, per site, or under the adherence grouping).
COMPARISON_TABLES: dict[str, tuple[str, ...]] = {
    "km_curves": _CURVE,
    "km_curves_overall": _CURVE,
    "km_at_risk": ("group", "time", "n_risk"),
    "km_survival_at": ("group", "time", "n_risk", "survival", "conf_low", "conf_high"),
    "km_medians": _MEDIANS,
    "logrank": ("term", "statistic", "dof", "p_value", "strata"),
    "logrank_groups": ("group", "n", "observed", "expected"),
    "rmst_groups": ("group", "horizon", "rmst", "std_error", "conf_low", "conf_high"),
    "rmst_difference": _TIDY,
    "km_median_difference": _TIDY,
    "cox": _HAZARD_RATIOS,
    # One covariate at a time, beside the adjusted model (gtsummary's "univariable" column).
    "cox_unadjusted": _HAZARD_RATIOS,
    "cox_ph_test": ("term", "statistic", "dof", "p_value"),
    "cox_time_varying": _HAZARD_RATIOS,
    "cumulative_incidence": ("group", "event", "time", "estimate", "conf_low", "conf_high"),
    "gray_test": GRAY_TEST_COLUMNS,
    "turnbull_curves": ("group", "time", "survival"),
    "model_notes": ("model", "kind", "message"),
    "model_status": ("model", "status", "estimable", "events", "parameters", "reason"),
}
# Tables only a group comparison on a subset or a regrouping writes.
SUBSET_COMPARISON_TABLES: dict[str, tuple[str, ...]] = {SUPPRESSED_GROUPS: ("group",)}

WHOLE_STUDY_TABLES: dict[str, tuple[str, ...]] = {
    **COMPARISON_TABLES,
    # One column per fit.km_times_days: nothing fixed to declare.
    "turnbull_survival_at": (),
    "fine_gray": _HAZARD_RATIOS,
    # One covariate at a time, beside the adjusted Fine-Gray model.
    "fine_gray_unadjusted": _HAZARD_RATIOS,
    # One covariate at a time, beside the adjusted model (gtsummary's "univariable" column).
    "primary_unadjusted": _PRIMARY,
    "primary_effects": _PRIMARY,
    "primary_baseline_hazard": ("piece_start", "piece_stop", "log_hazard", "std_error", "hazard"),
    "primary_lag_sensitivity": ("lag_weeks", *_PRIMARY),
    "milestone_km_medians": (*_MEDIANS, "milestone"),
    "milestone_primary_effects": (*_PRIMARY, "milestone"),
    "milestone_quoted_ranges": MILESTONE_QUOTE_COLUMNS,
    "landmark_counts": (
        "landmark_weeks",
        "people",
        "outcome_before_landmark",
        "no_adherence",
        "kept",
    ),
    "landmark_cox": (*_HAZARD_RATIOS, "landmark_weeks"),
    "landmark_groups": (*_MEDIANS, "landmark_weeks", "median_days_since_enrolment"),
    "mixed_fixed_effects": (*TIDY_COLUMNS, "outcome"),
    "mixed_variance_components": ("group", "variance", "sd_cor", "outcome"),
    "mixed_predictions": ("week", "outcome", "fitted"),
    "mixed_fitted_vs_observed": ("outcome", "week", "group", "n", "gap", "within_interval"),
    "aft_models": ("distribution", "n", "log_likelihood", "aic", "scale", "best_by_aic"),
    "aft_coefficients": (*TIDY_COLUMNS, "distribution"),
    "timeline": (
        "n_in_profile",
        *TIMELINE_RANGE_COLUMNS,
        "median_conf_low",
        "median_conf_high",
        "observed_median_weeks",
    ),
    "timeline_model_comparison": ("distribution", "n", "log_likelihood", "aic", "best_by_aic"),
    "timeline_quoted_ranges": QUOTED_RANGE_COLUMNS,
    "calibration_summary": ("metric", "value"),
    "calibration_table": ("week", "group", "n", "predicted", "observed"),
}


def _all_tables() -> dict[str, tuple[str, ...]]:
    subset = {**COMPARISON_TABLES, **SUBSET_COMPARISON_TABLES}
    return {
        **WHOLE_STUDY_TABLES,
        **{f"{SITE_TABLE_PREFIX}{name}": (SITE_COLUMN, *cols) for name, cols in subset.items()},
        **{f"{ADHERENCE_GROUPING_TABLE_PREFIX}{name}": cols for name, cols in subset.items()},
        f"{ADHERENCE_GROUPING_TABLE_PREFIX}{GROUPING_DEFINITION}": ("group", "lower", "upper"),
        f"{ADHERENCE_GROUPING_TABLE_PREFIX}{GROUPING_SENSITIVITY}": (
            "grouping",
            "cutoffs",
            "group",
            "n",
            "median",
            "median_conf_low",
            "median_conf_high",
            "hazard_ratio",
            "hr_conf_low",
            "hr_conf_high",
        ),
    }


# Every table the fit stage writes, by name (the file is data/models/<name>.csv).
MODEL_TABLES: dict[str, tuple[str, ...]] = _all_tables()


def check_model_table(name: str, columns: Iterable[str]) -> None:
    """A DataError naming the table and the first declared column it lacks (or the table, if
    it is not declared here)."""
    if name not in MODEL_TABLES:
        raise DataError(
            f"model table {name!r} is not declared in analysis/model_tables.py",
            file=f"{name}.csv",
        )
    present = set(columns)
    missing = [column for column in MODEL_TABLES[name] if column not in present]
    if missing:
        raise DataError(
            f"model table {name!r} has no column {missing[0]!r}, which the reports read "
            "(declared in analysis/model_tables.py; a tunable such as timeline.quantiles may "
            "have renamed it)",
            file=f"{name}.csv",
            column=missing[0],
        )


def check_model_tables(tables: Mapping[str, pd.DataFrame]) -> None:
    """Every table checked against its definition (as the fit stage writes or a report reads)."""
    for name, table in tables.items():
        check_model_table(name, table.columns)
