"""Report figures drawn from the fit stage's tidy tables (matplotlib; every function returns axes).

One colour per adherence group in every figure (`group_palette`), colour-blind safe (Okabe-Ito).
Figures draw what they are given: frames come already made safe by `analysis.privacy` (curves
truncated and coarsened, risk tables of counts >= k, small groups left out). Given
`min_cell_size`, a figure refuses a frame that still shows fewer people than that; groups the
caller leaves out are named on the figure. Every text is at least `MIN_FONT_SIZE` points; the
time axis is in weeks. `figure_caption(ax)` gives what a caption must say about a figure.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MultipleLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from analysis.errors import DataError
from analysis.privacy import require_safe_counts
from analysis.schema import DAYS_PER_WEEK
from analysis.tables import (
    MAIN_STAGES,
    OUTCOME_STAGES,
    STAGE_NO_GROUP,
    STAGE_NOT_IN_ANALYSIS_FRAME,
    STAGE_PARTICIPANT_DUPLICATES,
    STAGE_PARTICIPANT_QUARANTINED,
    STAGE_RECORDS_QUARANTINED,
    format_interval,
    format_p_value,
    readable_term,
)

# params.yaml fit.group_order; notebooks pass it, this is only the fallback.
DEFAULT_GROUP_ORDER = ("low", "moderate", "high")
WHOLE_COHORT = "all"
# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency. The first
# three go to low/moderate/high; black is kept for the whole cohort.
OKABE_ITO = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
WHOLE_COHORT_COLOUR = "#000000"
EVENT_LINESTYLES = {"recovered": "-", "withdrawn": "--"}
OTHER_EVENT_LINESTYLES = (":", "-.")
SUPPRESSION_NOTE_GID = "suppression-note"
CAPTION_GID = "figure-caption"
RISK_TABLE_GID = "risk-table"
CENSOR_MARKS_GID = "censor-marks"
TEST_TEXT_GID = "test-result"
ESTIMATE_COLUMN_GID = "estimate-column"
# The smallest text on any figure, in points at the size the report shows it.
MIN_FONT_SIZE = 9
# The report page's content is about 1036 px wide (1100 px less padding), 10.4 inches at the
# report's 100 dpi: a wider figure is shrunk to fit, and its text with it below MIN_FONT_SIZE.
MAX_FIGURE_WIDTH_INCHES = 10.0
# Forest-plot ticks: 1-2-5 steps read as plain ratios; the in-between values are used only when
# the axis spans too little for three of those.
FOREST_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
FOREST_FINE_TICKS = (0.25, 0.33, 0.5, 0.67, 0.75, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 4)
# What the estimate column of a forest plot is headed, by the axis label the caller passes.
FOREST_COLUMN_TITLES = {
    "Hazard ratio (95% CI)": "HR (95% CI)",
    "Subdistribution hazard ratio (95% CI)": "SHR (95% CI)",
}
CONFIDENCE_BAND_ALPHA = 0.15
# Calibration markers are sized by n only when the largest group is this many times the smallest.
CALIBRATION_SIZE_RATIO = 1.5
CENSOR_MARKER = "+"

TIME_LABEL = "Weeks since enrolment"
NOT_RECOVERED_LABEL = "Proportion not yet recovered"
OUTCOME_LABELS = {
    "pain_low_back": "Low-back pain (NRS 0-10)",
    "pain_hip": "Hip pain (NRS 0-10)",
    "pain_knee": "Knee pain (NRS 0-10)",
    "hip_abduction_n": "Hip abduction strength (N)",
    "weekly_adherence": "Adherence (completed/prescribed sessions)",
    "weekly_sitting_hours": "Sitting (hours/day)",
}
PROFILE_COLUMNS = ("severity", "adherence_group", "sitting_band", "underlying_condition", "chronic")
# params.yaml timeline.quoted_ranges, as the clinicians quote them (weeks).
DEFAULT_QUOTED_RANGES = {
    "quoted for mild, recent, adherent cases (6-8 weeks)": (6.0, 8.0),
    "quoted span for the cohort (6-26 weeks)": (6.0, 26.0),
}
SAFE_CURVE_HINT = "pass the curve through analysis.privacy.safe_curve first"


# --- report-wide set-up -----------------------------------------------------------------------

# Salt for the ids matplotlib gives clip paths and glyphs in an SVG: fixed, so a re-run gives
# the same bytes (by default they are random).
SVG_ID_SALT = "ga-rehab"


def setup_figures(dpi: int = 100) -> None:
    """Report-wide figure look: text sizes >= MIN_FONT_SIZE and, in a notebook, SVG output.

    Figures are vector graphics (sharp at any zoom and in print), shown on the page at `dpi`
    pixels per inch of figure. Each is drawn once and not cropped: IPython's default crop lays
    a figure out and measures every text once more before drawing it, and the figures'
    constrained layout fills the canvas already.
    """
    mpl.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": MIN_FONT_SIZE,
            "ytick.labelsize": MIN_FONT_SIZE,
            "legend.fontsize": MIN_FONT_SIZE,
            "legend.title_fontsize": MIN_FONT_SIZE,
            "svg.hashsalt": SVG_ID_SALT,
        }
    )
    shell = _notebook_shell()
    if shell is not None:
        # Importing the inline backend sets its default formats: first, so they do not
        # replace these later.
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("svg")  # and no other format of each figure
        shell.display_formatter.formatters["image/svg+xml"].for_type(Figure, svg_figure)


def svg_figure(figure: Figure) -> tuple[str, dict] | None:
    """A figure as the report shows it: SVG with no date in its metadata, and its size on the
    page (pixels at the figure's dpi) for the HTML export; None for a figure with nothing in it.
    """
    if not figure.axes and not figure.lines:
        return None
    drawn = io.BytesIO()
    figure.savefig(
        drawn,
        format="svg",
        bbox_inches=None,
        metadata={"Date": None},
        facecolor=figure.get_facecolor(),
        edgecolor=figure.get_edgecolor(),
    )
    width, height = figure.get_size_inches() * figure.dpi
    return drawn.getvalue().decode("utf-8"), {"width": round(width), "height": round(height)}


def _notebook_shell():
    """The running IPython shell, or None outside IPython (scripts, tests)."""
    ipython = sys.modules.get("IPython")
    return None if ipython is None else ipython.get_ipython()


# --- shared pieces ----------------------------------------------------------------------------


def group_palette(levels: Sequence | None = None) -> dict:
    """Colour per group level: position in `levels` (params fit.group_order) fixes the colour.

    Pass the full configured order, not just the levels one figure shows, so that a group keeps
    its colour when another is suppressed. The whole cohort ("all") is black.
    """
    levels = list(DEFAULT_GROUP_ORDER if levels is None else levels)
    palette = {level: OKABE_ITO[i % len(OKABE_ITO)] for i, level in enumerate(levels)}
    palette.setdefault(WHOLE_COHORT, WHOLE_COHORT_COLOUR)
    return palette


def ordered_groups(present: Iterable, group_order: Sequence | None = None) -> list:
    """Groups in the configured order, unknown ones after it (sorted)."""
    present = list(dict.fromkeys(present))
    order = list(DEFAULT_GROUP_ORDER if group_order is None else group_order)
    known = [level for level in order if level in present]
    return known + sorted((level for level in present if level not in order), key=str)


def _palette_for(present: Iterable, group_order: Sequence | None) -> dict:
    order = list(DEFAULT_GROUP_ORDER if group_order is None else group_order)
    extra = [level for level in ordered_groups(present, order) if level not in order]
    return group_palette(order + extra)


def _axes(ax: Axes | None, figsize: tuple[float, float] = (7.0, 4.5)) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _note_suppressed(ax: Axes, suppressed: Sequence, what: str = "group") -> None:
    """Say on the figure what is not drawn and why (small numbers)."""
    if not len(suppressed):
        return
    names = ", ".join(str(level) for level in suppressed)
    ax.annotate(
        f"Not shown (too few participants to report): {what} {names}",
        xy=(0, 1),
        xycoords="axes fraction",
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=MIN_FONT_SIZE,
        style="italic",
        va="bottom",
        gid=SUPPRESSION_NOTE_GID,
    )


def suppression_note(ax: Axes) -> str | None:
    """The text of the suppression note a plot wrote, if any (for reports and tests)."""
    return _text_with_gid(ax, SUPPRESSION_NOTE_GID)


def figure_caption(ax: Axes) -> str | None:
    """What the caption of this figure must say (bands, marks, what is not drawn), if anything."""
    return _text_with_gid(ax, CAPTION_GID)


def _set_caption(ax: Axes, sentences: Iterable[str]) -> None:
    """Keep the caption on the axes as an invisible text (read back with `figure_caption`)."""
    ax.text(0, 0, " ".join(sentences), visible=False, gid=CAPTION_GID, fontsize=MIN_FONT_SIZE)


def _text_with_gid(ax: Axes, gid: str) -> str | None:
    for text in ax.texts:
        if text.get_gid() == gid:
            return text.get_text()
    return None


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)}", column=missing[0])


def _step_from_start(time_days: np.ndarray, values: np.ndarray, start: float):
    """A curve that starts at (0, start) so a step plot begins at enrolment."""
    if len(time_days) and time_days[0] <= 0:
        return time_days / DAYS_PER_WEEK, values
    return np.concatenate([[0.0], time_days]) / DAYS_PER_WEEK, np.concatenate([[start], values])


def _week_axis(ax: Axes) -> None:
    """Weeks ticked every 4 (the programme's months), starting at enrolment."""
    ax.xaxis.set_major_locator(MultipleLocator(4))
    ax.set_xlim(left=0)
    ax.set_xlabel(TIME_LABEL)


def _draw_curve_with_band(
    ax: Axes, curve: pd.DataFrame, value: str, start: float, colour: str, **line
) -> tuple[np.ndarray, np.ndarray]:
    """A step curve from enrolment and, where the frame has conf_low/high, its shaded band."""
    time = curve["time"].to_numpy(float)
    weeks, values = _step_from_start(time, curve[value].to_numpy(float), start)
    ax.step(weeks, values, where="post", color=colour, **line)
    if {"conf_low", "conf_high"} <= set(curve.columns):
        _, low = _step_from_start(time, curve["conf_low"].to_numpy(float), start)
        _, high = _step_from_start(time, curve["conf_high"].to_numpy(float), start)
        ax.fill_between(
            weeks, low, high, step="post", color=colour, alpha=CONFIDENCE_BAND_ALPHA, linewidth=0
        )
    return weeks, values


def format_test_result(tests: pd.DataFrame, name: str) -> str:
    """One line per test row: "Log-rank: chi2 = 59.1, df = 2, p <0.001" (strata named if any).

    Reads the tidy columns statistic, p_value and dof; a `strata` column other than
    "none" says what the test was stratified by; an `event` column names the event type.
    """
    _require(tests, ["statistic", "p_value"], f"the {name} table")
    dof_column = "dof" if "dof" in tests else None
    lines = []
    for _, row in tests.iterrows():
        label = name
        if "event" in row and pd.notna(row["event"]):
            label += f", {str(row['event']).replace('_', ' ')}"
        if "strata" in row and pd.notna(row["strata"]) and row["strata"] != "none":
            label += f" (stratified by {str(row['strata']).replace('_', ' ')})"
        p_value = format_p_value(row["p_value"])
        p_text = f"p < {p_value[1:]}" if p_value.startswith("<") else f"p = {p_value}"
        dof = f", df = {int(row[dof_column])}" if dof_column is not None else ""
        lines.append(f"{label}: \u03c7\u00b2 = {row['statistic']:.1f}{dof}, {p_text}")
    return "\n".join(lines)


def _draw_test_text(ax: Axes, text: str, x: float, y: float, ha: str, va: str) -> None:
    ax.text(
        x,
        y,
        text,
        transform=ax.transAxes,
        ha=ha,
        va=va,
        fontsize=MIN_FONT_SIZE,
        gid=TEST_TEXT_GID,
        bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.8"},
    )


# --- survival curves --------------------------------------------------------------------------


def plot_km(
    curves: pd.DataFrame,
    at_risk: pd.DataFrame,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    min_cell_size: int | None = None,
    test: pd.DataFrame | None = None,
    censor_marks: pd.DataFrame | None = None,
    test_name: str = "Log-rank",
) -> Axes:
    """Kaplan-Meier curves by group with 95% bands, censoring marks, the test and a risk table.

    `curves` (privacy.safe_curve of km_curves) and `at_risk` (privacy.safe_at_risk of
    km_at_risk) are in days; the axis and the risk table under it are in weeks, with the x ticks
    at the risk-table times. `censor_marks` (group, time; privacy.safe_censor_marks) are drawn as
    "+" on the curves; `test` (the log-rank tidy table, one row per stratification) is written
    on the plot. With `min_cell_size`, a frame still showing fewer people is refused.
    """
    _require(curves, ["group", "time", "survival", "conf_low", "conf_high"], "km_curves")
    _require(at_risk, ["group", "time", "n_risk"], "km_at_risk")
    require_safe_counts(curves, "n_risk", min_cell_size, "km_curves", SAFE_CURVE_HINT)
    require_safe_counts(
        at_risk, "n_risk", min_cell_size, "km_at_risk", "pass it through privacy.safe_at_risk"
    )
    if not pd.to_numeric(at_risk["n_risk"], errors="coerce").notna().all():
        raise DataError(
            "km_at_risk holds marks instead of counts; the risk table shows counts >= k only",
            column="n_risk",
            hint="pass it through privacy.safe_at_risk",
        )
    ax = _axes(ax, figsize=(7.5, 6.0))
    palette = _palette_for(curves["group"], group_order)
    drawn = [g for g in ordered_groups(curves["group"], group_order) if g not in suppressed_groups]
    for level in drawn:
        curve = curves[curves["group"] == level].sort_values("time")
        weeks, survival = _draw_curve_with_band(
            ax, curve, "survival", 1.0, palette[level], linewidth=1.8, label=str(level)
        )
        marks = (
            censor_marks[censor_marks["group"] == level]
            if censor_marks is not None
            else curve.iloc[:0]
        )
        # A mark needs a curve to sit on: none past the curve's last published step.
        marks = marks[marks["time"] <= curve["time"].max()]
        if len(marks):
            mark_weeks = marks["time"].to_numpy(float) / DAYS_PER_WEEK
            # On the curve as drawn, so a mark shows no value the published curve does not.
            heights = survival[np.searchsorted(weeks, mark_weeks, side="right") - 1]
            ax.plot(
                mark_weeks,
                heights,
                linestyle="",
                marker=CENSOR_MARKER,
                markersize=7,
                markeredgewidth=1.2,
                color=palette[level],
                gid=CENSOR_MARKS_GID,
            )
    ax.set_ylim(0, 1.02)
    risk_weeks = np.sort(pd.unique(at_risk["time"].to_numpy(float))) / DAYS_PER_WEEK
    if len(risk_weeks):
        # Ticks on the risk-table times so every count sits under a labelled week.
        ax.set_xticks(risk_weeks, [f"{week:g}" for week in risk_weeks])
        ax.set_xlim(min(0.0, risk_weeks[0]), max(risk_weeks[-1], ax.get_xlim()[1]))
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(NOT_RECOVERED_LABEL)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(title="Adherence group", frameon=False, loc="upper right")
    if test is not None and len(test):
        # Bottom left: curves of "not yet recovered" start at the top left and fall to the
        # right, so that corner stays free.
        _draw_test_text(ax, format_test_result(test, test_name), 0.02, 0.03, "left", "bottom")
    _draw_risk_table(ax, at_risk, drawn, palette)
    # A group with people at risk but no curve left is one the privacy module cut whole.
    cut_whole = [g for g in ordered_groups(at_risk["group"], group_order) if g not in drawn]
    _note_suppressed(
        ax,
        [g for g in suppressed_groups if g in set(curves["group"])]
        + [g for g in cut_whole if g not in suppressed_groups],
    )
    caption = ["Shaded: 95% confidence band (log scale, Greenwood)."]
    if censor_marks is not None:
        at_least = "several" if min_cell_size is None else f"at least {min_cell_size}"
        caption.append(
            f"{CENSOR_MARKER}: people censored (each mark stands for {at_least} people, placed "
            "where that many had been censored since the previous mark)."
        )
    caption.append(
        "Curves and the numbers at risk end where too few people remain at risk to report."
    )
    _set_caption(ax, caption)
    return ax


# The risk table's rows, and its top below the plot's bottom edge: room for the plot's tick
# labels, its axis label and the table's title.
RISK_TABLE_ROW_INCHES = 0.25
RISK_TABLE_OFFSET_INCHES = 0.8


def _draw_risk_table(ax: Axes, at_risk: pd.DataFrame, groups: list, palette: dict) -> Axes:
    """Numbers at risk as rows of text in an axes under the plot, at the plot's x ticks (weeks)."""
    rows = max(len(groups), 1)
    height = RISK_TABLE_ROW_INCHES * rows
    # Placed in inches from the plot's bottom edge, not as a fraction of the plot's height: the
    # figure's layout then makes room for the table in one pass (a figure is drawn once).
    below_plot = blended_transform_factory(
        ax.transAxes, ax.figure.dpi_scale_trans + ScaledTranslation(0, 0, ax.transAxes)
    )
    table_ax = ax.inset_axes(
        [0.0, -RISK_TABLE_OFFSET_INCHES - height, 1.0, height], transform=below_plot, sharex=ax
    )
    table_ax.set_gid(RISK_TABLE_GID)
    table_ax.set_ylim(-0.5, rows - 0.5)
    for row, level in enumerate(groups):
        counts = at_risk[at_risk["group"] == level]
        y = rows - 1 - row
        for time, n_risk in zip(counts["time"], counts["n_risk"], strict=True):
            table_ax.text(
                time / DAYS_PER_WEEK,
                y,
                f"{int(n_risk)}",
                ha="center",
                va="center",
                fontsize=MIN_FONT_SIZE,
                color=palette[level],
            )
    table_ax.set_yticks(
        range(rows - 1, rows - 1 - len(groups), -1),
        [str(g) for g in groups],
        fontsize=MIN_FONT_SIZE,
    )
    for label, level in zip(table_ax.get_yticklabels(), groups, strict=True):
        label.set_color(palette[level])
    table_ax.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    table_ax.tick_params(axis="y", length=0, pad=14)
    for spine in table_ax.spines.values():
        spine.set_visible(False)
    table_ax.set_title("Number at risk", fontsize=MIN_FONT_SIZE, loc="left")
    return table_ax


def risk_table_axes(ax: Axes) -> Axes | None:
    """The risk table under a Kaplan-Meier plot, if it has one."""
    return next((child for child in ax.child_axes if child.get_gid() == RISK_TABLE_GID), None)


def plot_turnbull_vs_km(
    turnbull_curves: pd.DataFrame,
    km_curves: pd.DataFrame,
    ax: Axes | None = None,
    group=WHOLE_COHORT,
) -> Axes:
    """The interval-censored Turnbull curve beside the Kaplan-Meier curve (visit day as event time).

    KM treats recovery as happening on the visit day, so it lags the Turnbull curve, which only
    knows recovery lies between two visits. Both tables must hold `group` ("all" = whole cohort).
    The Turnbull curve gets a band where its table has conf_low/conf_high; `figure_caption` says
    which curves have one.
    """
    _require(turnbull_curves, ["group", "time", "survival"], "turnbull_curves")
    _require(km_curves, ["group", "time", "survival", "conf_low", "conf_high"], "km_curves")
    for name, table in (("turnbull_curves", turnbull_curves), ("km_curves", km_curves)):
        # An empty table is a curve the privacy module cut whole (too few people): noted below.
        if len(table) and group not in set(table["group"]):
            raise DataError(
                f"{name} has no curve for group {group!r}",
                column="group",
                hint="for the whole cohort pass kaplan_meier(frame, ...).curves "
                "fitted without a group",
            )
    ax = _axes(ax)
    colour = group_palette().get(group, WHOLE_COHORT_COLOUR)
    km = km_curves[km_curves["group"] == group].sort_values("time")
    _draw_curve_with_band(
        ax,
        km,
        "survival",
        1.0,
        colour,
        linewidth=1.6,
        label="Kaplan-Meier (recovery on the visit day)",
    )
    turnbull = turnbull_curves[turnbull_curves["group"] == group].sort_values("time")
    _draw_curve_with_band(
        ax,
        turnbull,
        "survival",
        1.0,
        OKABE_ITO[5],
        linewidth=1.8,
        linestyle="--",
        label="Turnbull (recovery between visits)",
    )
    ax.set_ylim(0, 1.02)
    _week_axis(ax)
    ax.set_ylabel(NOT_RECOVERED_LABEL)
    ax.grid(alpha=0.3)
    if len(km) or len(turnbull):
        ax.legend(frameon=False, title=None if group == WHOLE_COHORT else f"Group {group}")
    _note_suppressed(
        ax,
        [name for name, curve in (("Kaplan-Meier", km), ("Turnbull", turnbull)) if curve.empty],
        what="curve",
    )
    caption = ["Shaded: 95% confidence band of the Kaplan-Meier curve."]
    if {"conf_low", "conf_high"} <= set(turnbull.columns):
        caption.append("The Turnbull curve's band is shaded in its colour.")
    else:
        caption.append(
            "The Turnbull curve has no band: the fit gives no valid standard errors for the "
            "nonparametric maximum-likelihood estimate (R's survfit gives none either)."
        )
    _set_caption(ax, caption)
    return ax


def plot_cumulative_incidence(
    cif_table: pd.DataFrame,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    confidence_bands: bool = True,
    test: pd.DataFrame | None = None,
    min_cell_size: int | None = None,
) -> Axes:
    """Cumulative incidence of recovery and of withdrawal (colour = group, line style = event).

    Bands are the 95% CIs where the table has conf_low/conf_high; `test` (gray_test(...).tidy(),
    one row per event type) is written on the plot. Pass curves made safe by
    privacy.safe_cumulative_incidence; with `min_cell_size`, a table with n_risk below it is
    refused.
    """
    _require(cif_table, ["group", "event", "time", "estimate"], "cumulative_incidence")
    require_safe_counts(
        cif_table,
        "n_risk",
        min_cell_size,
        "cumulative_incidence",
        "pass it through privacy.safe_cumulative_incidence",
    )
    ax = _axes(ax, figsize=(8.0, 4.8))
    palette = _palette_for(cif_table["group"], group_order)
    events = sorted(
        pd.unique(cif_table["event"]), key=lambda e: (e not in EVENT_LINESTYLES, str(e))
    )
    others = iter(OTHER_EVENT_LINESTYLES * len(events))
    styles = {event: EVENT_LINESTYLES.get(event) or next(others) for event in events}
    groups = ordered_groups(cif_table["group"], group_order)
    drawn = [level for level in groups if level not in suppressed_groups]
    table = (
        cif_table
        if confidence_bands
        else cif_table.drop(columns=["conf_low", "conf_high"], errors="ignore")
    )
    for level in drawn:
        for event in events:
            curve = table[(table["group"] == level) & (table["event"] == event)]
            if curve.empty:
                continue  # cut whole by the privacy module (too few people or events)
            _draw_curve_with_band(
                ax,
                curve.sort_values("time"),
                "estimate",
                0.0,
                palette[level],
                linestyle=styles[event],
                linewidth=1.8,
                label=f"{level}, {event}",
            )
    ax.set_ylim(0, 1.0)
    _week_axis(ax)
    ax.set_ylabel("Cumulative incidence (proportion)")
    ax.grid(alpha=0.3)
    group_handles = [
        Line2D([], [], color=palette[level], linewidth=2, label=str(level)) for level in drawn
    ]
    event_handles = [
        Line2D([], [], color="0.3", linestyle=styles[event], linewidth=2, label=str(event))
        for event in events
    ]
    if group_handles:
        # Outside the axes: the curves fill the corners a legend would sit in.
        group_legend = ax.legend(
            handles=group_handles,
            title="Adherence group",
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
        ax.add_artist(group_legend)
    ax.legend(
        handles=event_handles,
        title="Event",
        frameon=False,
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
    )
    if test is not None and len(test):
        # Top left: incidence rises from the bottom left, so that corner stays free.
        _draw_test_text(ax, format_test_result(test, "Gray's test"), 0.02, 0.98, "left", "top")
    _note_suppressed(ax, [g for g in suppressed_groups if g in set(groups)])
    caption = []
    if confidence_bands and {"conf_low", "conf_high"} <= set(cif_table.columns):
        caption.append("Shaded: 95% confidence bands (Aalen-Johansen, log scale).")
    caption.append(
        "Curves end where too few people remain at risk to report, and rise only in steps "
        "of several events."
    )
    _set_caption(ax, caption)
    return ax


# --- regression results -----------------------------------------------------------------------


def plot_forest(
    tidy: pd.DataFrame,
    ax: Axes | None = None,
    estimate: str = "hazard_ratio",
    low: str = "hr_conf_low",
    high: str = "hr_conf_high",
    label: str = "Hazard ratio (95% CI)",
    log_scale: bool = True,
    reference: float = 1.0,
    column_title: str | None = None,
) -> Axes:
    """Forest plot: one row per term, estimate with its CI, a line at no effect (log scale), and
    the numbers as text ("HR (95% CI)") in a column right of the axes.

    Ticks are plain ratios (0.5, 1, 2), thinned until no two labels touch.
    """
    _require(tidy, ["term", estimate, low, high], "the tidy table")
    rows = tidy[np.isfinite(tidy[estimate].to_numpy(float))].reset_index(drop=True)
    ax = _axes(ax, figsize=(8.0, 0.42 * len(rows) + 1.6))
    y = np.arange(len(rows))[::-1]
    point = rows[estimate].to_numpy(float)
    low_values, high_values = rows[low].to_numpy(float), rows[high].to_numpy(float)
    # A limit that could not be estimated gets no bar on that side rather than an infinite one.
    lower = np.where(np.isfinite(low_values), low_values, point)
    upper = np.where(np.isfinite(high_values), high_values, point)
    ax.errorbar(
        point,
        y,
        xerr=[point - lower, upper - point],
        fmt="s",
        color="0.15",
        ecolor="0.15",
        capsize=3,
        markersize=5,
        linewidth=1.4,
    )
    ax.axvline(reference, color="0.5", linestyle="--", linewidth=1)
    if log_scale:
        ax.set_xscale("log")
        span = np.concatenate([lower, upper, [reference]])
        # Half a decade's margin on each side, so caps and markers clear the frame.
        ax.set_xlim(span.min() / 1.25, span.max() * 1.25)
        _readable_log_ticks(ax)
    # Raw model terms ("severity[moderate]", never a space) read as words; labelled rows
    # (tables.forest_rows) are shown as they are.
    ax.set_yticks(y, [str(t) if " " in str(t) else readable_term(t) for t in rows["term"]])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3, which="major")
    title = column_title or FOREST_COLUMN_TITLES.get(label, label)
    _estimate_column(ax, y, point, low_values, high_values, title, len(rows))
    return ax


def _estimate_column(
    ax: Axes,
    y: np.ndarray,
    point: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    title: str,
    n_rows: int,
) -> None:
    """ "1.23 (1.01-1.50)" per row right of the axes (the tables' CI style), headed by `title`."""
    transform = ax.get_yaxis_transform()  # x in axes fraction, y in data
    style = {"transform": transform, "fontsize": MIN_FONT_SIZE, "gid": ESTIMATE_COLUMN_GID}
    ax.text(1.03, n_rows - 0.3, title, ha="left", va="bottom", weight="bold", **style)
    for row_y, estimate, conf_low, conf_high in zip(y, point, low, high, strict=True):
        ax.text(
            1.03,
            row_y,
            format_interval(estimate, conf_low, conf_high),
            ha="left",
            va="center",
            **style,
        )


def _readable_log_ticks(ax: Axes) -> None:
    """Plain-number ticks on a log axis, thinned until no two labels overlap."""
    low_limit, high_limit = ax.get_xlim()
    ticks = [tick for tick in FOREST_TICKS if low_limit <= tick <= high_limit]
    if len(ticks) < 3:
        ticks = sorted(
            {tick for tick in FOREST_TICKS + FOREST_FINE_TICKS if low_limit <= tick <= high_limit}
        )
    ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    kept = _non_overlapping(ax, ticks)
    ax.set_xticks(kept, [f"{tick:g}" for tick in kept])


def _non_overlapping(ax: Axes, ticks: list[float]) -> list[float]:
    """The ticks whose labels do not touch a kept neighbour; 1 (no effect) is kept first."""
    renderer = ax.figure.canvas.get_renderer()
    extents = {
        tick: label.get_window_extent(renderer)
        for tick, label in zip(ticks, ax.xaxis.get_ticklabels(), strict=True)
    }
    gap = MIN_FONT_SIZE * ax.figure.dpi / 72 / 2  # half a character between labels
    priority = sorted(ticks, key=lambda tick: (tick != 1, FOREST_TICKS.count(tick) == 0))
    kept: list[float] = []
    for tick in priority:
        box = extents[tick]
        if all(
            box.x1 + gap < extents[other].x0 or extents[other].x1 + gap < box.x0 for other in kept
        ):
            kept.append(tick)
    return sorted(kept)


# --- trajectories -----------------------------------------------------------------------------


def weekly_means(observed: pd.DataFrame, outcome: str, group: str, week: str = "week"):
    """Mean, 95% CI half-width (normal) and n of an outcome per group and week."""
    used = observed[observed[outcome].notna() & observed[group].notna()]
    summary = used.groupby([group, week])[outcome].agg(["mean", "std", "count"]).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        summary["half_width"] = 1.96 * summary["std"] / np.sqrt(summary["count"])
    return summary.rename(columns={"count": "n"})


def plot_trajectories(
    observed: pd.DataFrame | None,
    predictions: pd.DataFrame,
    outcome: str,
    group: str,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    min_cell_size: int | None = None,
    week: str = "week",
    means: pd.DataFrame | None = None,
) -> Axes:
    """Observed weekly means (95% CI) and the mixed model's fitted lines per group over weeks.

    `predictions` is mixed_predictions (week, group, outcome, fitted). The points are `means`
    when given (a weekly-means table made safe for the report: group, week, mean, half_width,
    n, optionally outcome; rows without a mean are not drawn), else the weekly means of
    `observed` (the weekly trajectories). With `min_cell_size`, a mean of fewer people is refused.
    """
    _require(predictions, [week, group, "outcome", "fitted"], "mixed_predictions")
    ax = _axes(ax)
    fitted = predictions[predictions["outcome"] == outcome]
    if means is not None:
        _require(means, ["group", week, "mean", "half_width", "n"], "the weekly means")
        summary = means if "outcome" not in means else means[means["outcome"] == outcome]
        summary = summary[summary["mean"].notna()].rename(columns={"group": group})
    else:
        _require(observed, [week, outcome, group], "the observed trajectories")
        summary = weekly_means(observed, outcome, group, week)
    require_safe_counts(
        summary,
        "n",
        min_cell_size,
        "the weekly means",
        "pass means= made safe for the report (privacy hides means of fewer people)",
    )
    if len(fitted):
        summary = summary[summary[week] <= fitted[week].max()]
    present = list(summary[group]) + list(fitted[group])
    palette = _palette_for(present, group_order)
    groups = ordered_groups(present, group_order)
    drawn = [level for level in groups if level not in suppressed_groups]
    # Points of different groups are shifted slightly so their error bars do not overlap.
    offsets = np.linspace(-0.2, 0.2, len(drawn)) if len(drawn) > 1 else [0.0]
    for level, offset in zip(drawn, offsets, strict=True):
        points = summary[summary[group] == level]
        ax.errorbar(
            points[week] + offset,
            points["mean"],
            yerr=points["half_width"],
            fmt="o",
            color=palette[level],
            markersize=3.5,
            elinewidth=0.8,
            alpha=0.75,
        )
        line = fitted[fitted[group] == level].sort_values(week)
        ax.plot(line[week], line["fitted"], color=palette[level], linewidth=2, label=str(level))
    _week_axis(ax)
    ax.set_xlim(left=-0.5)  # room for the shifted week-0 points
    ax.set_ylabel(OUTCOME_LABELS.get(outcome, outcome.replace("_", " ")))
    ax.grid(alpha=0.3)
    handles = [
        Line2D(
            [], [], color=palette[level], linewidth=2, marker="o", markersize=4, label=str(level)
        )
        for level in drawn
    ]
    if handles:
        ax.legend(
            handles=handles,
            title="Adherence group\n(points: observed mean, 95% CI; lines: mixed model)",
            title_fontsize=MIN_FONT_SIZE,
            frameon=False,
            fontsize=MIN_FONT_SIZE,
        )
    _note_suppressed(ax, [g for g in suppressed_groups if g in set(groups)])
    _set_caption(
        ax,
        [
            "Points: observed weekly means with 95% CIs (shifted slightly per group);",
            "lines: the mixed model's fitted means. Means of too few people are not drawn.",
        ],
    )
    return ax


# --- cohort flow ------------------------------------------------------------------------------


def plot_flow_diagram(flow: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """CONSORT-style diagram from `cohort_flow`: main boxes down the middle, exclusions beside."""
    _require(flow, ["stage", "n", "detail"], "the cohort flow")
    ax = _axes(ax, figsize=(8.0, 7.5))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    main_x, side_x = 0.33, 0.77
    box = {"boxstyle": "round,pad=0.5", "facecolor": "white", "edgecolor": "0.2"}
    side_box = {**box, "facecolor": "0.95"}

    def rows(stages: Iterable[str]) -> pd.DataFrame:
        return flow[flow["stage"].isin(list(stages))]

    def total(stage: str) -> str:
        return _flow_count(rows([stage])["n"])

    def listing(stages: Iterable[str], title: str) -> str | None:
        chosen = rows(stages)
        if chosen.empty:
            return None
        lines = [f"{title}: {_flow_count(chosen['n'])}"]
        lines += [
            f"  {str(detail).replace('_', ' ')}: {_flow_count([n])}"
            for n, detail in zip(chosen["n"], chosen["detail"], strict=True)
        ]
        return "\n".join(lines)

    def text(
        x: float, y: float, content: str, style: dict, size: int = MIN_FONT_SIZE, align="center"
    ):
        return ax.text(
            x,
            y,
            content,
            ha="center",
            va="center",
            fontsize=size,
            bbox=style,
            linespacing=1.4,
            multialignment=align,
        )

    def arrow(start, end, patch_a=None, patch_b=None) -> None:
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "0.2",
                "patchA": patch_a,
                "patchB": patch_b,
                "shrinkA": 2,
                "shrinkB": 2,
            },
        )

    labels = {
        MAIN_STAGES[0]: "Enrolled (participant rows in the export)",
        MAIN_STAGES[1]: "Included after cleaning",
        MAIN_STAGES[2]: "Analysed (known adherence group)",
    }
    heights = {MAIN_STAGES[0]: 0.93, MAIN_STAGES[1]: 0.68, MAIN_STAGES[2]: 0.40}
    main_boxes = {}
    for stage in MAIN_STAGES:
        if stage in set(flow["stage"]):
            main_boxes[stage] = text(
                main_x, heights[stage], f"{labels[stage]}\nn = {total(stage)}", box, size=10
            )
    outcome_text = "\n".join(
        f"{stage.capitalize()}: {_flow_count(rows([stage])['n'])}"
        for stage in OUTCOME_STAGES
        if stage in set(flow["stage"])
    )
    if outcome_text:
        main_boxes["outcomes"] = text(
            main_x, 0.12, "Outcome of those analysed\n" + outcome_text, box
        )
    chain = list(main_boxes.values())
    for upper, lower in zip(chain, chain[1:], strict=False):
        arrow(
            upper.get_position(),
            lower.get_position(),
            upper.get_bbox_patch(),
            lower.get_bbox_patch(),
        )
    sides = [
        (
            0.805,
            [STAGE_PARTICIPANT_QUARANTINED, STAGE_PARTICIPANT_DUPLICATES],
            "Participant rows removed",
        ),
        (0.54, [STAGE_NOT_IN_ANALYSIS_FRAME, STAGE_NO_GROUP], "Not analysed"),
    ]
    for y, stages, title in sides:
        content = listing(stages, title)
        if content:
            side = text(side_x, y, content, side_box, size=MIN_FONT_SIZE, align="left")
            arrow((main_x, y), (side_x, y), None, side.get_bbox_patch())
    records = listing([STAGE_RECORDS_QUARANTINED], "Data rows quarantined (not participants)")
    if records:
        text(
            side_x, 0.22, records, {**side_box, "linestyle": "--"}, size=MIN_FONT_SIZE, align="left"
        )
    return ax


def _flow_count(values) -> str:
    """A flow count, or a sum of counts; a sum that includes a suppressed "<k" is not shown."""
    values = list(values)
    if any(isinstance(value, str) for value in values):
        return values[0] if len(values) == 1 else "see below"
    return f"{int(sum(values))}"


# --- timelines and calibration ----------------------------------------------------------------


def profile_label(row: Mapping) -> str:
    """A patient profile in words: "mild · high adherence · low sitting · none · recent"."""
    parts = []
    for name in PROFILE_COLUMNS:
        if name not in row or pd.isna(row[name]):
            continue
        value = row[name]
        if name == "adherence_group":
            parts.append(f"{value} adherence")
        elif name == "sitting_band":
            parts.append(f"{value} sitting")
        elif name == "chronic":
            parts.append("chronic" if bool(value) else "recent")
        else:
            parts.append(str(value).replace("_", " "))
    return " · ".join(parts)


def quoted_ranges_from_params(quoted: Mapping[str, Sequence[float]]) -> dict:
    """params timeline.quoted_ranges as legend label -> (start, stop) weeks."""
    return {
        f"{name.replace('_', ' ').replace(' weeks', '')} ({low:g}-{high:g} weeks)": (low, high)
        for name, (low, high) in quoted.items()
    }


def plot_timeline_ranges(
    timeline: pd.DataFrame,
    ax: Axes | None = None,
    quoted_ranges: Mapping[str, tuple[float, float]] | None = None,
    group_order: Sequence | None = None,
) -> Axes:
    """Predicted median (with CI) and 10th-90th percentile recovery weeks per patient profile.

    The ranges clinicians quote are shaded behind; the observed median is drawn where the
    profile had enough people. Profiles are sorted by predicted median.
    """
    _require(
        timeline,
        ["predicted_median_weeks", "predicted_p10_weeks", "predicted_p90_weeks"],
        "the timeline table",
    )
    rows = timeline.sort_values("predicted_median_weeks", ascending=False).reset_index(drop=True)
    ax = _axes(ax, figsize=(9.0, 0.36 * len(rows) + 2.2))
    ranges = DEFAULT_QUOTED_RANGES if quoted_ranges is None else quoted_ranges
    shades = ("0.55", "0.85", "0.7")
    legend_handles = []
    for (name, (start, stop)), shade in zip(ranges.items(), shades, strict=False):
        ax.axvspan(start, stop, color=shade, alpha=0.35, linewidth=0, zorder=0)
        legend_handles.append(Patch(color=shade, alpha=0.35, label=name))
    y = np.arange(len(rows))
    groups = (
        rows["adherence_group"]
        if "adherence_group" in rows
        else pd.Series(WHOLE_COHORT, index=rows.index)
    )
    palette = _palette_for(groups.dropna(), group_order)
    colours = [palette.get(level, WHOLE_COHORT_COLOUR) for level in groups]
    ax.hlines(
        y,
        rows["predicted_p10_weeks"],
        rows["predicted_p90_weeks"],
        colors=colours,
        linewidth=1.2,
        alpha=0.8,
    )
    if {"median_conf_low", "median_conf_high"} <= set(rows.columns):
        ax.hlines(
            y,
            rows["median_conf_low"],
            rows["median_conf_high"],
            colors=colours,
            linewidth=4,
            alpha=0.5,
        )
    ax.scatter(rows["predicted_median_weeks"], y, c=colours, s=22, zorder=3)
    if "observed_median_weeks" in rows:
        ax.scatter(
            rows["observed_median_weeks"],
            y,
            marker="D",
            facecolors="none",
            edgecolors="black",
            s=22,
            zorder=4,
        )
        legend_handles.append(
            Line2D(
                [],
                [],
                marker="D",
                linestyle="",
                markerfacecolor="none",
                markeredgecolor="black",
                label="observed median",
            )
        )
    legend_handles.append(
        Line2D(
            [],
            [],
            marker="o",
            color="0.3",
            linewidth=1.2,
            label="predicted median (thick: 95% CI), 10th-90th percentile",
        )
    )
    legend_handles += [
        Line2D([], [], marker="o", linestyle="", color=palette[level], label=f"{level} adherence")
        for level in ordered_groups(groups.dropna(), group_order)
        if level in palette and level != WHOLE_COHORT
    ]
    ax.set_yticks(y, [profile_label(row) for _, row in rows.iterrows()], fontsize=MIN_FONT_SIZE)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(left=0)
    ax.set_xlabel("Weeks from enrolment to recovery")
    ax.grid(axis="x", alpha=0.3)
    # Above the plot, in the figure's top margin: with many profiles no corner of the plot is
    # free, and a legend centred on the plot (shifted right by the long profile labels) would
    # reach past the figure's edge.
    ax.figure.legend(
        handles=legend_handles,
        frameon=False,
        fontsize=MIN_FONT_SIZE,
        loc="outside upper center",
        ncol=2,
    )
    return ax


def plot_calibration(
    calibration_table: pd.DataFrame,
    ax: Axes | None = None,
    min_cell_size: int | None = None,
) -> Axes:
    """Predicted against observed probability of recovery by a given week, with the diagonal.

    One colour and marker per week (a sequential map, unlike the adherence colours); where the
    groups differ in size, marker area grows with n and the legend shows the scale. Rows the
    privacy module blanked (no predicted or observed value) are not drawn and are named; with
    `min_cell_size`, a drawn point on fewer people is refused. Limits leave room for a marker at
    (1, 1), so no point is cut by the frame.
    """
    _require(
        calibration_table, ["group", "week", "predicted", "observed", "n"], "the calibration table"
    )
    ax = _axes(ax, figsize=(6.0, 6.0))
    table = calibration_table
    blanked = table["predicted"].isna() | table["observed"].isna()
    shown = table[~blanked]
    require_safe_counts(
        shown,
        "n",
        min_cell_size,
        "the calibration table",
        "blank the estimates of small groups first (privacy.suppress_small_cells)",
    )
    weeks = sorted(pd.unique(table["week"]))
    colours = plt.get_cmap("cividis")(np.linspace(0.05, 0.85, max(len(weeks), 1)))
    markers = ("o", "s", "^", "D", "v", "P")
    diagonal = ax.plot(
        [0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration"
    )
    handles = list(diagonal)
    sizes = pd.to_numeric(shown["n"])
    largest = float(sizes.max()) if len(shown) else 1.0
    smallest = float(sizes.min()) if len(shown) else 1.0
    # Areas that differ by less than this read as one size: then all markers are equal.
    sized_by_n = largest >= CALIBRATION_SIZE_RATIO * smallest

    def area(n) -> np.ndarray:
        return 20 + 120 * np.asarray(n, dtype=float) / largest if sized_by_n else 60.0

    for i, week in enumerate(weeks):
        points = shown[shown["week"] == week].sort_values("predicted")
        ax.plot(points["predicted"], points["observed"], color=colours[i], linewidth=1, alpha=0.6)
        ax.scatter(
            points["predicted"],
            points["observed"],
            color=colours[i],
            marker=markers[i % len(markers)],
            s=area(pd.to_numeric(points["n"])),
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                color=colours[i],
                marker=markers[i % len(markers)],
                linewidth=1,
                label=f"by week {week:g}",
            )
        )
    title = f"groups of {smallest:g}-{largest:g} people" if len(shown) else None
    if sized_by_n:
        title = "marker area: number of people"
        for n in sorted({int(sizes.min()), int(largest)}):
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="",
                    marker="o",
                    color="0.5",
                    markersize=float(np.sqrt(area(n))),
                    label=f"n = {n}",
                )
            )
    # Room beyond 0 and 1 for the largest marker's radius, so a point at a corner is whole.
    radius_points = float(np.sqrt(np.max(area(sizes)) if len(shown) else 60.0)) / 2
    axes_points = 72 * min(ax.figure.get_size_inches()) * 0.7
    margin = 1.5 * radius_points / axes_points
    ax.set_xlim(-margin, 1 + margin)
    ax.set_ylim(-margin, 1 + margin)
    ax.set_aspect("equal")
    ax.set_xlabel("Predicted probability of recovery (proportion)")
    ax.set_ylabel("Observed probability of recovery (proportion)")
    ax.grid(alpha=0.3)
    ax.legend(
        handles=handles,
        frameon=False,
        fontsize=MIN_FONT_SIZE,
        loc="upper left",
        title=title,
        title_fontsize=MIN_FONT_SIZE,
    )
    if blanked.any():
        _note_suppressed(
            ax, sorted(pd.unique(table.loc[blanked, "group"]), key=str), what="calibration group"
        )
    return ax
