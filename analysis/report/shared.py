"""What more than one report uses: the stage outputs read once per kernel, plain HTML tables,
the figure look, the sentences where a model is missing (its notes, its status), and the
milestones' quoted ranges (study and timeline reports).
"""

from __future__ import annotations

import copy
import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from great_tables import GT, loc, style
from IPython.display import HTML

from analysis.privacy import SUPPRESSED_COLUMN, enough_people, mark
from analysis.report.inputs import ReportInputs, read_report_inputs
from analysis.tables import RegressionTable

# The last inputs read in this process, by the signature of their files (see report_inputs).
_inputs_read: dict[tuple, ReportInputs] = {}


def report_inputs(
    processed_dir: Path | str, models_dir: Path | str, cleaning_report: Path | str
) -> ReportInputs:
    """`inputs.read_report_inputs`, read once for as long as its files are unchanged.

    A report kernel runs the notebooks one after another (the study report once per site), and
    each read the same frames and ~80 fit tables (0.2-0.3 s). Each call gets its own deep copy,
    so a notebook never sees what another changed; a file written since (other size, time or
    inode) makes it read again.
    """
    signature = _file_signature(processed_dir, models_dir, cleaning_report)
    if signature not in _inputs_read:
        _inputs_read.clear()
        _inputs_read[signature] = read_report_inputs(processed_dir, models_dir, cleaning_report)
    return copy.deepcopy(_inputs_read[signature])


def _file_signature(*locations: Path | str) -> tuple:
    """(path, size, modification time, inode) of each file at or under the locations."""
    signature = []
    for location in locations:
        path = Path(location).resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.exists():  # read_report_inputs says what is missing
                signature.append((str(file), None))
                continue
            stat = file.stat()
            signature.append((str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(signature)


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
        html = f'<p class="table-caption"><strong>{_escape(caption)}</strong></p>{html}'
    return HTML(html)


def show_table(
    table: RegressionTable | pd.DataFrame, caption: str | None = None, notes: Sequence[str] = ()
):
    """A report table through great-tables: its caption above it, each model's columns
    under a spanner naming the model with its N and events, the notes (the table's and
    `notes`) under the table.

    great-tables writes self-contained HTML (an inline <style>, no scripts or links); the id
    follows the caption so that the same report renders to the same bytes.
    """
    if isinstance(table, RegressionTable):
        frame, spanners, notes = table.frame, table.spanners, [*table.notes, *notes]
    else:
        frame, spanners = table, {}
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    table_id = "gt_" + hashlib.sha1(str(caption).encode()).hexdigest()[:10]
    shown = GT(frame, id=table_id)
    for header, columns in spanners.items():
        shown = shown.tab_spanner(label=header, columns=columns)
        # Under a spanner naming the model, a column says only what it holds.
        prefix = header.split(" (")[0] + " "
        shown = shown.cols_label(
            **{c: c.removeprefix(prefix) for c in columns if c.startswith(prefix)}
        )
    shown = shown.cols_align(align="left", columns=list(frame.columns[:1]))
    # An estimate and its interval stay on one line ("11.5 [10.5,13.9]" never splits).
    shown = shown.tab_style(
        style=style.text(whitespace="nowrap"), locations=loc.body(columns=list(frame.columns[1:]))
    )
    for note in notes:
        shown = shown.tab_source_note(note)
    # The caption as every report table has it, so the export numbers it ("Table N.").
    heading = f'<p class="table-caption"><strong>{_escape(caption)}</strong></p>' if caption else ""
    return HTML(heading + shown.as_raw_html())


def figure_caption(what: str, details: str | None = None):
    """A figure's caption: what it shows, then what the plot recorded (bands, marks, what is
    not drawn; plots.figure_caption). The HTML export numbers it "Figure N."."""
    more = "" if not details else f" {_escape(details)}"
    return HTML(f'<p class="figure-caption"><strong>{_escape(what)}.</strong>{more}</p>')


def _escape(text: str) -> str:

    return html.escape(str(text))


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


def quoted_ranges_for_report(quotes: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Each quoted range beside the data's estimate, in weeks; claims about fewer than
    min_cell_size people show no estimate."""

    def quoted(low: float, high: float) -> str:
        return f"{low:g}+" if np.isinf(high) else f"{low:g}-{high:g}"

    small = ~enough_people(quotes["people"], min_cell_size)
    return pd.DataFrame(
        {
            "milestone": quotes["milestone"],
            "claim": quotes["claim"],
            "people": quotes["people"].astype(object).where(~small, mark(min_cell_size)),
            "quantile": quotes["quantile"],
            "quoted (weeks)": [
                quoted(low, high)
                for low, high in quotes[["quoted_low_weeks", "quoted_high_weeks"]].to_numpy(float)
            ],
            "data (weeks)": quotes["estimate_weeks"].round(1).astype(object).where(~small, ""),
            "verdict": quotes["verdict"].where(~small, "not shown (too few people)"),
        }
    )
