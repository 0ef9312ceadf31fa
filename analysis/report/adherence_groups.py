"""Helpers of the adherence report (notebooks/adherence_groups.ipynb): the trial team's grouping
of overall adherence and what only that report shows about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from analysis.errors import ReportError
from analysis.fit import regroup_adherence
from analysis.model_tables import ADHERENCE_GROUPING_TABLE_PREFIX, GROUPING_DEFINITION
from analysis.report.inputs import ReportInputs


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


def reference_level_text(recovery: pd.DataFrame, group: str) -> str:
    """Which group the Cox hazard ratios compare against (treatment coding, first sorted level)."""
    levels = sorted(recovery[group].dropna().astype(str).unique())
    if not levels:
        return ""
    return f"Reference group for the hazard ratios: **{levels[0]}** (first in sorted order)."
