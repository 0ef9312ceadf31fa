"""What more than one report uses: the stage outputs read once per kernel, plain HTML tables,
the figure look, the sentences where a model is missing (its notes, its status), and the
milestones' quoted ranges (study and timeline reports).
"""

from __future__ import annotations

import copy
import hashlib
import html
import re
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
        # Under a spanner naming the model, a column says only what it holds (a model's name
        # may itself hold parentheses: "Hip pain (NRS 0-10) (N = 500; ...)").
        prefix = re.sub(r" \(N = [^()]*\)$", "", header) + " "
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
    """Each quoted range beside the data's estimate and its 95% CI, in weeks, and the verdict
    (timeline.VERDICT_RULE); claims about fewer than min_cell_size people show no estimate."""

    def quoted(low: float, high: float) -> str:
        return f"{low:g}+" if np.isinf(high) else f"{low:g}-{high:g}"

    def weeks(value: float) -> str:
        return "beyond follow-up" if np.isinf(value) else f"{value:.1f}"

    small = ~enough_people(quotes["people"], min_cell_size)
    estimates = [
        f"{weeks(estimate)} ({weeks(low)} to {weeks(high)})"
        for estimate, low, high in quotes[
            ["estimate_weeks", "conf_low_weeks", "conf_high_weeks"]
        ].to_numpy(float)
    ]
    return pd.DataFrame(
        {
            "milestone": quotes["milestone"].str.replace("_", " "),
            "claim": quotes["claim"],
            "people": quotes["people"].astype(object).where(~small, mark(min_cell_size)),
            "quantile": quotes["quantile"],
            "quoted (weeks)": [
                quoted(low, high)
                for low, high in quotes[["quoted_low_weeks", "quoted_high_weeks"]].to_numpy(float)
            ],
            "data: weeks (95% CI)": pd.Series(estimates, index=quotes.index).where(~small, ""),
            "verdict": quotes["verdict"].where(~small, "not shown (too few people)"),
        }
    )


def _interval_text(estimate: float, low: float, high: float) -> str:
    def weeks(value: float) -> str:
        return "beyond follow-up" if np.isinf(value) else f"{value:.1f}"

    return f"{weeks(estimate)} weeks (95% CI {weeks(low)} to {weeks(high)})"


def _same_profile_rows(
    milestone_ranges: pd.DataFrame, timeline_ranges: pd.DataFrame
) -> tuple[pd.Series, pd.Series] | None:
    """The milestone claim about the median full recovery of a profile, and the timeline's
    claim about that profile (the row that carries the model's and the observed medians)."""
    full = milestone_ranges[
        (milestone_ranges["milestone"] == "full_recovery")
        & np.isclose(milestone_ranges["quantile"], 0.5)
        & (milestone_ranges["profile"] != "everyone")
    ]
    modelled = timeline_ranges[timeline_ranges["observed_weeks"].notna()]
    if full.empty or modelled.empty:
        return None
    return full.iloc[0], modelled.iloc[0]


# A profile's "name=level" parts in words (the fit stage's tables name them as coded).
_PROFILE_WORDS = {
    "severity": "{level}",
    "chronic": {"False": "recent", "True": "chronic"},
    "adherence_group": "{level} adherence",
    "sitting_band": "{level} sitting band",
    "underlying_condition": {"none": "no underlying condition"},
    "typical_overall_adherence": "overall adherence {percent}",
    "typical_mean_sitting_hours": "sitting {hours} h/day",
}


def profile_words(profile: str) -> str:
    """ "severity=mild, chronic=False, ..." as "mild, recent, high adherence, ..."."""
    words = []
    for part in str(profile).split(", "):
        name, _, level = part.partition("=")
        rule = _PROFILE_WORDS.get(name)
        if isinstance(rule, dict):
            words.append(rule.get(level, level.replace("_", " ")))
        elif rule is not None and name.startswith("typical_"):
            value = float(level)
            words.append(rule.format(percent=f"{value:.0%}", hours=f"{value:.1f}"))
        elif rule is not None:
            words.append(rule.format(level=level.replace("_", " ")))
        else:
            words.append(part.replace("_", " "))
    return ", ".join(words)


def profile_estimates_for_report(
    milestone_ranges: pd.DataFrame, timeline_ranges: pd.DataFrame, min_cell_size: int
) -> pd.DataFrame:
    """Full recovery of the mild, recent, high-adherence profile: the reports' three estimates
    side by side with their 95% CIs and what each is (an estimate resting on fewer than
    min_cell_size people is not shown)."""
    rows = _same_profile_rows(milestone_ranges, timeline_ranges)
    if rows is None:
        return pd.DataFrame(columns=["estimate", "people", "what it is", "median weeks (95% CI)"])
    claim, modelled = rows
    profile, typical = (modelled["profile"].split(", typical_", 1) + [""])[:2]
    entries = [
        (
            "observed: all such people",
            int(claim["people"]),
            "Turnbull (interval-censored) median of the people who are "
            f"{profile_words(claim['profile'])}, whatever their daily sitting",
            (claim["estimate_weeks"], claim["conf_low_weeks"], claim["conf_high_weeks"]),
        ),
        (
            "observed: the timeline's profile only",
            int(modelled["people"]),
            f"Turnbull median of the people who are {profile_words(profile)}",
            tuple(
                modelled[["observed_weeks", "observed_conf_low_weeks", "observed_conf_high_weeks"]]
            ),
        ),
        (
            "timeline model",
            "",
            "predicted median of the interval-censored AFT model (fitted to everyone) for one "
            f"typical member of that profile ({profile_words('typical_' + typical)})",
            tuple(modelled[["estimate_weeks", "conf_low_weeks", "conf_high_weeks"]]),
        ),
    ]
    table = []
    for name, people, what, interval in entries:
        hidden = people != "" and not enough_people(pd.Series([people]), min_cell_size).iloc[0]
        table.append(
            {
                "estimate": name,
                "people": mark(min_cell_size) if hidden else people,
                "what it is": what,
                "median weeks (95% CI)": "" if hidden else _interval_text(*interval),
            }
        )
    return pd.DataFrame(table)


def profile_estimates_text(milestone_ranges: pd.DataFrame) -> str:
    """What the three estimates of `profile_estimates_for_report` are, and why they differ."""
    first = milestone_ranges[
        (milestone_ranges["milestone"] == "first_change")
        & (milestone_ranges["profile"] != "everyone")
    ]
    quoted = (
        ""
        if first.empty
        else f" it puts at {first.iloc[0]['quoted_low_weeks']:g}-"
        f"{first.iloc[0]['quoted_high_weeks']:g} weeks"
    )
    return (
        "The three numbers answer different questions, so they need not agree. The observed "
        "medians describe the people seen, with every sitting time (the first) or only the "
        "timeline's sitting band (the second); the model's median is for one typical member of "
        "the profile, borrowing from everyone through the model's assumptions (its distribution "
        "family, each factor stretching the time to recovery by the same factor for everyone), "
        "so its interval is narrower. Adherence groups are formed from adherence over each "
        "person's whole follow-up, which for people who recover early covers only their first "
        "weeks, when adherence is highest: that can move early recoverers into the high group "
        "and pull the observed medians of that group down. All three are about full recovery, "
        f"which the domain text says comes after the first functional changes{quoted}."
    )
