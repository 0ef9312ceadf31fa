"""Helpers of the adherence report (notebooks/adherence_groups.ipynb): the trial team's grouping
of overall adherence and what only that report shows about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


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
