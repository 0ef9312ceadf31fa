"""Helpers of the adherence report (notebooks/adherence_groups.ipynb): the trial team's grouping
of overall adherence and what only that report shows about it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd

from analysis.derive import regroup_adherence
from analysis.errors import ReportError
from analysis.model_tables import (
    ADHERENCE_GROUPING_TABLE_PREFIX,
    GROUPING_DEFINITION,
    GROUPING_SENSITIVITY,
)
from analysis.report.comparison import weeks_interval
from analysis.report.inputs import ReportInputs
from analysis.report.study_report import fewer_than
from analysis.tables import format_interval


def grouping_models(inputs: ReportInputs) -> dict[str, pd.DataFrame]:
    """The fit stage's adherence_grouping tables under their whole-study names (whole study)."""
    if inputs.site is not None:
        raise ReportError(
            "the adherence grouping is fitted on the whole study only: render adherence_groups "
            "without a site"
        )
    chosen = {
        name.removeprefix(ADHERENCE_GROUPING_TABLE_PREFIX): table
        for name, table in inputs.models.items()
        if name.startswith(ADHERENCE_GROUPING_TABLE_PREFIX)
    }
    if GROUPING_DEFINITION not in chosen:
        raise ReportError(
            "the fit stage wrote no adherence_grouping tables: run `ga-rehab fit` with "
            "adherence_grouping in params.yaml's fit.families"
        )
    return chosen


def grouping_definition(models: Mapping[str, pd.DataFrame]) -> tuple[list[float], list[str]]:
    """The cut-offs and labels the fit stage grouped overall adherence by."""
    definition = models[GROUPING_DEFINITION]
    cutoffs = definition["lower"].dropna().astype(float).tolist()
    return cutoffs, definition["group"].astype(str).tolist()


def regrouped(recovery: pd.DataFrame, models: Mapping[str, pd.DataFrame], group: str):
    """The people with `group` set to the fitted grouping (for counts; nothing is refitted)."""
    cutoffs, labels = grouping_definition(models)
    return regroup_adherence(recovery, cutoffs, labels, group)


def grouping_table(cutoffs: Sequence[float], labels: Sequence[str]) -> pd.DataFrame:
    """Each group's range of overall adherence, as text."""
    bounds = [None, *[float(c) for c in cutoffs], None]
    rows = []
    for label, low, high in zip(labels, bounds, bounds[1:], strict=False):
        if low is None:
            rule = f"below {high:g}"
        elif high is None:
            rule = f"{low:g} or more"
        else:
            rule = f"{low:g} to below {high:g}"
        rows.append({"group": str(label), "overall adherence": rule})
    return pd.DataFrame(rows)


def grouping_text(cutoffs: Sequence[float], labels: Sequence[str]) -> str:
    """ "low (below 0.5), moderate (0.5 to below 0.8), high (0.8 or more)"."""
    return ", ".join(
        f"{row['group']} ({row['overall adherence']})"
        for _, row in grouping_table(cutoffs, labels).iterrows()
    )


def reference_level_text(cox: pd.DataFrame, group: str) -> str:
    """Which group the Cox hazard ratios compare against: the model's reference row
    (fit.reference_levels, as the fit stage chose it)."""
    levels = cox["term"].str.extract(rf"^{re.escape(group)}\[(.*)\]$")[0]
    is_reference = cox["reference"].astype(str).str.lower() == "true"
    references = levels[is_reference & levels.notna()]
    if references.empty:
        return ""
    return f"Reference group for the hazard ratios: **{references.iloc[0]}**."


def same_grouping(
    cutoffs: Sequence[float],
    labels: Sequence[str],
    study_cutoffs: Sequence[float],
    study_labels: Sequence[str],
) -> bool:
    """Whether the fitted grouping is the study's own adherence groups (derive.adherence)."""
    return [float(c) for c in cutoffs] == [float(c) for c in study_cutoffs] and [
        str(label) for label in labels
    ] == [str(label) for label in study_labels]


def middle_group_width(cutoffs: Sequence[float]) -> float | None:
    """The width of the narrowest group between two cut-offs (None with fewer than two)."""
    bounds = sorted(float(c) for c in cutoffs)
    widths = [high - low for low, high in zip(bounds, bounds[1:], strict=False)]
    return min(widths) if widths else None


def comparison_pointer(
    cutoffs: Sequence[float],
    labels: Sequence[str],
    study_cutoffs: Sequence[float],
    study_labels: Sequence[str],
) -> str:
    """Where the groups' Kaplan-Meier curves, medians, log-rank test and RMST are: the study
    report when the grouping is the study's own, else this report's medians table below."""
    if same_grouping(cutoffs, labels, study_cutoffs, study_labels):
        return (
            "These are the study's own adherence groups: their Kaplan-Meier curves, median "
            "times, log-rank test and restricted mean times are in the study report (section "
            "“Time to recovery by adherence group”) and are not repeated here."
        )
    return (
        "These cut-offs differ from the study's adherence groups "
        f"({grouping_text(study_cutoffs, study_labels)}): the median times of these groups "
        "follow; curves, log-rank test and restricted mean times are in the CSVs of the fit "
        "stage (adherence_grouping_*)."
    )


def cutoff_sensitivity(models: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The fit stage's groups under moved cut-offs (adherence_grouping_sensitivity)."""
    if GROUPING_SENSITIVITY not in models:
        raise ReportError(
            "the fit stage wrote no adherence_grouping_sensitivity.csv: run `ga-rehab fit` again "
            "(fit.adherence_grouping.sensitivity_shifts in params.yaml)"
        )
    return models[GROUPING_SENSITIVITY]


def sensitivity_for_report(sensitivity: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """The groups under each moved cut-off (fit stage's adherence_grouping_sensitivity): median
    weeks to recovery and hazard ratio against the first group, with 95% CIs. Group sizes are
    not shown (two groupings' sizes differ by the people between two cut-offs, which can be
    fewer than min_cell_size); a group of fewer than min_cell_size people shows no estimate."""
    rows = []
    for row in sensitivity.itertuples():
        small = row.n < min_cell_size
        rows.append(
            {
                "cut-offs moved": row.grouping,
                "cut-offs": row.cutoffs,
                "group": row.group,
                "median weeks (95% CI)": f"{fewer_than(min_cell_size)} people"
                if small
                else weeks_interval(row.median, row.median_conf_low, row.median_conf_high),
                "hazard ratio vs first group (95% CI)": ""
                if small or pd.isna(row.hazard_ratio)
                else "reference"
                if pd.isna(row.hr_conf_low)
                else format_interval(row.hazard_ratio, row.hr_conf_low, row.hr_conf_high),
            }
        )
    return pd.DataFrame(rows)


def sensitivity_sentence(sensitivity: pd.DataFrame, min_cell_size: int) -> str:
    """The range of each group's hazard ratio over the groupings (those of >= k people)."""
    shown = sensitivity[(sensitivity["n"] >= min_cell_size) & sensitivity["hr_conf_low"].notna()]
    if shown.empty:
        return "Sensitivity to the cut-offs: no grouping has groups large enough to compare."
    parts = [
        f"{group} {rows['hazard_ratio'].min():.2f} to {rows['hazard_ratio'].max():.2f}"
        for group, rows in shown.groupby("group", sort=False)
    ]
    return (
        "Moving each cut-off on its own (table below), the hazard ratios of recovery against "
        f"the first group range: {'; '.join(parts)}. Where the ranges are narrow, the "
        "conclusion does not hang on where the lines are drawn."
    )


def dose_response_sentence(
    primary_effects: pd.DataFrame | None, unit_per: float, band_width: float | None
) -> str:
    """Adherence as a continuous exposure in the primary model: the hazard ratio per its unit
    (fit.primary.units: `unit_per` of the 0-1 fraction, 10 percentage points) and over
    `band_width` (a fraction, e.g. the width of the middle group), both with 95% CIs (an
    interval for the log hazard ratio scales with it)."""
    if primary_effects is None or "weekly_adherence" not in set(primary_effects["term"]):
        return "Dose-response: the primary model was not fitted, so it is not shown."
    row = primary_effects.set_index("term").loc["weekly_adherence"]
    text = (
        "Dose-response (adherence as a continuous exposure in the primary model, week by week): "
        f"hazard ratio of recovery {row['hazard_ratio']:.2f} (95% CI {row['hr_conf_low']:.2f} "
        f"to {row['hr_conf_high']:.2f}) {row['unit']}"
    )
    if band_width is not None:
        steps = band_width / unit_per

        def scaled(value: float) -> str:
            return f"{float(value) ** steps:.2f}"

        text += (
            f"; over {band_width * 100:g} percentage points, the width of the middle group, "
            f"{scaled(row['hazard_ratio'])} (95% CI {scaled(row['hr_conf_low'])} to "
            f"{scaled(row['hr_conf_high'])})"
        )
    return text + (
        ". A straight line on the log-hazard scale is assumed; the groups' Cox model below "
        "shows whether the steps between groups agree."
    )
