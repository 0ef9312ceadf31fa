"""Helpers of the timeline report (notebooks/timeline_calibration.ipynb): calibrated recovery
ranges per profile, the quoted ranges checked, and the cross-validated calibration.
"""

from __future__ import annotations

import pandas as pd

from analysis.plots import profile_label
from analysis.privacy import enough_people, mask_small_counts_in_text, suppress_small_cells
from analysis.tables import (
    TIME_RATIO_HEADER,
    RegressionTable,
    format_interval,
    merged_regression_table,
)

DISTRIBUTION_NAMES = {
    "weibull": "Weibull",
    "lognormal": "Log-normal",
    "loglogistic": "Log-logistic",
}


def aft_table(
    coefficients: pd.DataFrame, comparison: pd.DataFrame, units, min_cell_size: int
) -> RegressionTable:
    """The interval-censored AFT models side by side, one per distribution (the lowest AIC
    named), as time ratios with their people and recoveries."""
    best = set(comparison.loc[comparison["best_by_aic"].astype(bool), "distribution"])
    models = [
        (
            DISTRIBUTION_NAMES.get(name, name) + (", lowest AIC" if name in best else ""),
            rows.drop(columns="distribution"),
        )
        for name, rows in coefficients.groupby("distribution", sort=False)
    ]
    table = merged_regression_table(
        models, units, estimate_header=TIME_RATIO_HEADER, min_cell_size=min_cell_size
    )
    table.notes.append(
        "Events: people whose recovery was seen (between two visits); the others are "
        "right-censored. The timeline uses the model with the lowest AIC."
    )
    return table


def timeline_for_report(timeline: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """The timeline table with profile sizes below min_cell_size shown as "<k".

    Predictions are model-based and stay; an observed median needs min_profile_size people
    anyway, and is blanked with the count. Counts quoted in the notes ("n=3") are masked too.
    """
    estimates = [c for c in ("observed_median_weeks",) if c in timeline]
    hidden = suppress_small_cells(
        timeline, ["n_in_profile"], min_cell_size, estimate_columns=estimates
    )
    return mask_small_counts_in_text(hidden, min_cell_size)


QUOTED_RANGE_COLUMNS = ("claim", "quoted", "observed", "verdict", "detail")


def timeline_quoted_ranges_for_report(quotes: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """The timeline's quoted-range checks in words (every estimate there with its 95% CI);
    counts of people its text quotes below min_cell_size show as "<k"."""
    return mask_small_counts_in_text(quotes[list(QUOTED_RANGE_COLUMNS)], min_cell_size)


def profiles_seen(timeline: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Profiles with at least min_cell_size people in the data (the ones worth plotting)."""
    return timeline[enough_people(timeline["n_in_profile"], min_cell_size)].reset_index(drop=True)


def timeline_display(timeline: pd.DataFrame) -> pd.DataFrame:
    """Profile, people, predicted median (CI) and 10-90 range in weeks, observed median."""

    rows = []
    for _, row in timeline.sort_values("predicted_median_weeks").iterrows():
        rows.append(
            {
                "profile": profile_label(row),
                "people": row["n_in_profile"],
                "predicted median (95% CI)": format_interval(
                    row["predicted_median_weeks"],
                    row["median_conf_low"],
                    row["median_conf_high"],
                    digits=1,
                ),
                "10th-90th percentile": f"{row['predicted_p10_weeks']:.1f}-"
                f"{row['predicted_p90_weeks']:.1f}",
                "observed median": ""
                if pd.isna(row.get("observed_median_weeks"))
                else f"{row['observed_median_weeks']:.1f}",
            }
        )
    return pd.DataFrame(rows)


def calibration_for_report(calibration: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Calibration groups with fewer than min_cell_size people: count "<k", estimates blanked."""
    return suppress_small_cells(
        calibration, ["n"], min_cell_size, estimate_columns=["predicted", "observed"]
    )
