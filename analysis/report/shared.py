"""Showing a report's tables and figures: plain HTML tables, the figure look, and the sentences
every report uses where a model is missing (its notes, its status).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import matplotlib as mpl
import pandas as pd
from IPython.display import HTML

from analysis.privacy import SUPPRESSED_COLUMN


def show(table: pd.DataFrame, caption: str | None = None, digits: int = 3):
    """A table as plain HTML (no index, missing shown blank, floats rounded, suppressed flagged)."""

    shown = table.copy()
    if SUPPRESSED_COLUMN in shown:
        shown[SUPPRESSED_COLUMN] = shown[SUPPRESSED_COLUMN].map({True: "yes", False: ""})
    for name in shown.columns:
        if pd.api.types.is_float_dtype(shown[name]):
            shown[name] = shown[name].map(
                lambda v: (
                    ""
                    if pd.isna(v)
                    else f"{v:.{digits}g}"
                    if abs(v) < 1e-3 and v != 0
                    else f"{v:.{digits}f}"
                )
            )
    html = shown.to_html(index=False, na_rep="", border=0, escape=True)
    if caption:
        html = f"<p><strong>{_escape(caption)}</strong></p>{html}"
    return HTML(html)


def _escape(text: str) -> str:

    return html.escape(str(text))


def setup_figures(dpi: int = 100) -> None:
    """Report-wide figure look: resolution and font sizes readable in a browser."""

    mpl.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
        }
    )


NOT_ESTIMATED = (
    "*Not estimated for this report (too few people, or the model failed): see the model notes.*"
)


def has_tables(models: Mapping[str, pd.DataFrame], *names: str) -> bool:
    """Whether every named model table exists (a model that failed wrote none)."""
    return all(name in models for name in names)


def model_status_sentence(models: Mapping[str, pd.DataFrame], model: str) -> str | None:
    """Why a model is not shown (the fit stage's own sentence), or None when it was fitted."""
    status = models.get("model_status")
    if status is None or model not in set(status["model"]):
        return None
    reason = status.set_index("model").loc[model, "reason"]
    return None if pd.isna(reason) or not str(reason) else f"*{reason}*"


def notes_for_report(models: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Model notes, each once; a row saying so when there were none."""
    notes = models.get("model_notes")
    if notes is None or notes.empty:
        return pd.DataFrame([{"model": "all", "kind": "", "message": "no warnings or failures"}])
    return unique_notes(notes.fillna(""))


def unique_notes(notes: pd.DataFrame) -> pd.DataFrame:
    """A note raised both as a warning and recorded on the result is shown once."""
    return notes.drop_duplicates(subset=["model", "message"]).reset_index(drop=True)
