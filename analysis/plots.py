"""Report figures drawn from the fit stage's tidy tables (matplotlib; every function returns axes).

One colour per adherence group in every figure (`group_palette`), colour-blind safe (Okabe-Ito).
Groups a report suppresses for small numbers are not drawn, and the figure says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MultipleLocator, NullFormatter

from analysis.errors import DataError
from analysis.privacy import enough_people, format_count
from analysis.schema import DAYS_PER_WEEK
from analysis.tables import (
    MAIN_STAGES,
    OUTCOME_STAGES,
    STAGE_NO_GROUP,
    STAGE_NOT_IN_ANALYSIS_FRAME,
    STAGE_PARTICIPANT_DUPLICATES,
    STAGE_PARTICIPANT_QUARANTINED,
    STAGE_RECORDS_QUARANTINED,
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
FOREST_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.5, 2, 4, 5, 10, 20, 50, 100)

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
        fontsize=8,
        style="italic",
        va="bottom",
        gid=SUPPRESSION_NOTE_GID,
    )


def suppression_note(ax: Axes) -> str | None:
    """The text of the suppression note a plot wrote, if any (for reports and tests)."""
    for text in ax.texts:
        if text.get_gid() == SUPPRESSION_NOTE_GID:
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


# --- survival curves --------------------------------------------------------------------------


def plot_km(
    curves: pd.DataFrame,
    at_risk: pd.DataFrame,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    min_cell_size: int | None = None,
) -> Axes:
    """Kaplan-Meier curves by group with log CI bands and a numbers-at-risk table underneath.

    Curves (km_curves) and at-risk counts (km_at_risk) are in days; the axis is in weeks.
    At-risk counts below `min_cell_size` show as "<k".
    """
    _require(curves, ["group", "time", "survival", "conf_low", "conf_high"], "km_curves")
    _require(at_risk, ["group", "time", "n_risk"], "km_at_risk")
    ax = _axes(ax, figsize=(7.5, 5.5))
    palette = _palette_for(curves["group"], group_order)
    drawn = [g for g in ordered_groups(curves["group"], group_order) if g not in suppressed_groups]
    for level in drawn:
        curve = curves[curves["group"] == level].sort_values("time")
        time = curve["time"].to_numpy(float)
        weeks, survival = _step_from_start(time, curve["survival"].to_numpy(float), 1.0)
        _, low = _step_from_start(time, curve["conf_low"].to_numpy(float), 1.0)
        _, high = _step_from_start(time, curve["conf_high"].to_numpy(float), 1.0)
        colour = palette[level]
        ax.step(weeks, survival, where="post", color=colour, linewidth=1.8, label=str(level))
        ax.fill_between(weeks, low, high, step="post", color=colour, alpha=0.15, linewidth=0)
    ax.set_ylim(0, 1.02)
    risk_weeks = np.sort(pd.unique(at_risk["time"].to_numpy(float))) / DAYS_PER_WEEK
    if len(risk_weeks):
        # Ticks on the risk-table times so every count sits under a labelled week.
        ax.set_xticks(risk_weeks)
        ax.set_xlim(min(0.0, risk_weeks[0]), max(risk_weeks[-1], ax.get_xlim()[1]))
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(NOT_RECOVERED_LABEL)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(title="Adherence group", frameon=False)
    _draw_risk_table(ax, at_risk, drawn, palette, min_cell_size)
    _note_suppressed(ax, [g for g in suppressed_groups if g in set(curves["group"])])
    return ax


def _draw_risk_table(
    ax: Axes, at_risk: pd.DataFrame, groups: list, palette: dict, min_cell_size: int | None
) -> Axes:
    """Numbers at risk as rows of text in an axes under the plot, aligned on the weeks."""
    rows = max(len(groups), 1)
    height = 0.065 * rows
    table_ax = ax.inset_axes([0.0, -0.2 - height, 1.0, height], sharex=ax)
    table_ax.set_gid("risk-table")
    table_ax.set_ylim(-0.5, rows - 0.5)
    for row, level in enumerate(groups):
        counts = at_risk[at_risk["group"] == level]
        y = rows - 1 - row
        for time, n_risk in zip(counts["time"], counts["n_risk"], strict=True):
            table_ax.text(
                time / DAYS_PER_WEEK,
                y,
                format_count(n_risk, min_cell_size),
                ha="center",
                va="center",
                fontsize=8,
                color=palette[level],
            )
    table_ax.set_yticks(
        range(rows - 1, rows - 1 - len(groups), -1), [str(g) for g in groups], fontsize=8
    )
    for label, level in zip(table_ax.get_yticklabels(), groups, strict=True):
        label.set_color(palette[level])
    table_ax.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    table_ax.tick_params(axis="y", length=0, pad=14)
    for spine in table_ax.spines.values():
        spine.set_visible(False)
    table_ax.set_title("Number at risk", fontsize=8, loc="left")
    return table_ax


def plot_turnbull_vs_km(
    turnbull_curves: pd.DataFrame,
    km_curves: pd.DataFrame,
    ax: Axes | None = None,
    group=WHOLE_COHORT,
) -> Axes:
    """The interval-censored Turnbull curve beside the Kaplan-Meier curve (visit day as event time).

    KM treats recovery as happening on the visit day, so it lags the Turnbull curve, which only
    knows recovery lies between two visits. Both tables must hold `group` ("all" = whole cohort).
    """
    _require(turnbull_curves, ["group", "time", "survival"], "turnbull_curves")
    _require(km_curves, ["group", "time", "survival", "conf_low", "conf_high"], "km_curves")
    for name, table in (("turnbull_curves", turnbull_curves), ("km_curves", km_curves)):
        if group not in set(table["group"]):
            raise DataError(
                f"{name} has no curve for group {group!r}",
                column="group",
                hint="for the whole cohort pass kaplan_meier(frame, ...).curves "
                "fitted without a group",
            )
    ax = _axes(ax)
    colour = group_palette().get(group, WHOLE_COHORT_COLOUR)
    km = km_curves[km_curves["group"] == group].sort_values("time")
    time = km["time"].to_numpy(float)
    weeks, survival = _step_from_start(time, km["survival"].to_numpy(float), 1.0)
    _, low = _step_from_start(time, km["conf_low"].to_numpy(float), 1.0)
    _, high = _step_from_start(time, km["conf_high"].to_numpy(float), 1.0)
    ax.step(
        weeks,
        survival,
        where="post",
        color=colour,
        linewidth=1.6,
        label="Kaplan-Meier (recovery on the visit day)",
    )
    ax.fill_between(weeks, low, high, step="post", color=colour, alpha=0.12, linewidth=0)
    turnbull = turnbull_curves[turnbull_curves["group"] == group].sort_values("time")
    t_weeks, t_survival = _step_from_start(
        turnbull["time"].to_numpy(float), turnbull["survival"].to_numpy(float), 1.0
    )
    ax.step(
        t_weeks,
        t_survival,
        where="post",
        color=OKABE_ITO[5],
        linewidth=1.8,
        linestyle="--",
        label="Turnbull (recovery between visits)",
    )
    ax.set_ylim(0, 1.02)
    _week_axis(ax)
    ax.set_ylabel(NOT_RECOVERED_LABEL)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, title=None if group == WHOLE_COHORT else f"Group {group}")
    return ax


def plot_cumulative_incidence(
    cif_table: pd.DataFrame,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    confidence_bands: bool = False,
) -> Axes:
    """Cumulative incidence of recovery and of withdrawal (colour = group, line style = event)."""
    _require(cif_table, ["group", "event", "time", "estimate"], "cumulative_incidence")
    ax = _axes(ax)
    palette = _palette_for(cif_table["group"], group_order)
    events = sorted(
        pd.unique(cif_table["event"]), key=lambda e: (e not in EVENT_LINESTYLES, str(e))
    )
    others = iter(OTHER_EVENT_LINESTYLES * len(events))
    styles = {event: EVENT_LINESTYLES.get(event) or next(others) for event in events}
    groups = ordered_groups(cif_table["group"], group_order)
    drawn = [level for level in groups if level not in suppressed_groups]
    for level in drawn:
        for event in events:
            curve = cif_table[(cif_table["group"] == level) & (cif_table["event"] == event)]
            curve = curve.sort_values("time")
            time = curve["time"].to_numpy(float)
            weeks, estimate = _step_from_start(time, curve["estimate"].to_numpy(float), 0.0)
            ax.step(
                weeks,
                estimate,
                where="post",
                color=palette[level],
                linestyle=styles[event],
                linewidth=1.8,
                label=f"{level}, {event}",
            )
            if confidence_bands and {"conf_low", "conf_high"} <= set(curve.columns):
                _, low = _step_from_start(time, curve["conf_low"].to_numpy(float), 0.0)
                _, high = _step_from_start(time, curve["conf_high"].to_numpy(float), 0.0)
                ax.fill_between(
                    weeks, low, high, step="post", color=palette[level], alpha=0.1, linewidth=0
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
    _note_suppressed(ax, [g for g in suppressed_groups if g in set(groups)])
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
) -> Axes:
    """Forest plot: one row per term, estimate with its CI, a line at no effect (log scale)."""
    _require(tidy, ["term", estimate, low, high], "the tidy table")
    rows = tidy[np.isfinite(tidy[estimate].to_numpy(float))].reset_index(drop=True)
    ax = _axes(ax, figsize=(7.0, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    point = rows[estimate].to_numpy(float)
    # A limit that could not be estimated gets no bar on that side rather than an infinite one.
    lower = np.where(np.isfinite(rows[low].to_numpy(float)), rows[low].to_numpy(float), point)
    upper = np.where(np.isfinite(rows[high].to_numpy(float)), rows[high].to_numpy(float), point)
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
        low_limit, high_limit = ax.get_xlim()
        # Plain ratios (0.5, 1, 2) read better than powers of ten on a forest plot.
        ticks = [tick for tick in FOREST_TICKS if low_limit <= tick <= high_limit]
        ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, [readable_term(term) for term in rows["term"]])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3, which="both")
    return ax


# --- trajectories -----------------------------------------------------------------------------


def weekly_means(observed: pd.DataFrame, outcome: str, group: str, week: str = "week"):
    """Mean, 95% CI half-width (normal) and n of an outcome per group and week."""
    used = observed[observed[outcome].notna() & observed[group].notna()]
    summary = used.groupby([group, week])[outcome].agg(["mean", "std", "count"]).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        summary["half_width"] = 1.96 * summary["std"] / np.sqrt(summary["count"])
    return summary.rename(columns={"count": "n"})


def plot_trajectories(
    observed: pd.DataFrame,
    predictions: pd.DataFrame,
    outcome: str,
    group: str,
    ax: Axes | None = None,
    group_order: Sequence | None = None,
    suppressed_groups: Sequence = (),
    min_cell_size: int | None = None,
    week: str = "week",
) -> Axes:
    """Observed weekly means (95% CI) and the mixed model's fitted lines per group over weeks.

    `observed` is the weekly trajectories frame, `predictions` mixed_predictions (week, group,
    outcome, fitted). Weekly means of fewer than `min_cell_size` people are not drawn.
    """
    _require(observed, [week, outcome, group], "the observed trajectories")
    _require(predictions, [week, group, "outcome", "fitted"], "mixed_predictions")
    ax = _axes(ax)
    fitted = predictions[predictions["outcome"] == outcome]
    summary = weekly_means(observed, outcome, group, week)
    if len(fitted):
        summary = summary[summary[week] <= fitted[week].max()]
    if min_cell_size is not None:
        summary = summary[enough_people(summary["n"], min_cell_size)]
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
            title="Adherence group (points: observed mean, 95% CI; lines: mixed model)",
            title_fontsize=8,
            frameon=False,
            fontsize=8,
        )
    _note_suppressed(ax, [g for g in suppressed_groups if g in set(groups)])
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

    def text(x: float, y: float, content: str, style: dict, size: int = 9, align="center"):
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
            side = text(side_x, y, content, side_box, size=8, align="left")
            arrow((main_x, y), (side_x, y), None, side.get_bbox_patch())
    records = listing([STAGE_RECORDS_QUARANTINED], "Data rows quarantined (not participants)")
    if records:
        text(side_x, 0.22, records, {**side_box, "linestyle": "--"}, size=8, align="left")
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
    ax = _axes(ax, figsize=(8.0, 0.28 * len(rows) + 1.8))
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
    ax.set_yticks(y, [profile_label(row) for _, row in rows.iterrows()], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(left=0)
    ax.set_xlabel("Weeks from enrolment to recovery")
    ax.grid(axis="x", alpha=0.3)
    # Above the axes: with many profiles no corner of the plot is free.
    ax.legend(
        handles=legend_handles,
        frameon=False,
        fontsize=8,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
    )
    return ax


def plot_calibration(
    calibration_table: pd.DataFrame,
    ax: Axes | None = None,
    min_cell_size: int | None = None,
) -> Axes:
    """Predicted against observed probability of recovery by a given week, with the diagonal.

    One colour per week (a sequential map, unlike the adherence colours); marker area grows
    with n. Points resting on fewer than `min_cell_size` people are not drawn.
    """
    _require(
        calibration_table, ["group", "week", "predicted", "observed", "n"], "the calibration table"
    )
    ax = _axes(ax, figsize=(5.5, 5.5))
    table = calibration_table
    hidden = pd.Series(False, index=table.index)
    if min_cell_size is not None:
        hidden = ~enough_people(table["n"], min_cell_size)
    shown = table[~hidden]
    weeks = sorted(pd.unique(table["week"]))
    colours = plt.get_cmap("cividis")(np.linspace(0.05, 0.85, max(len(weeks), 1)))
    markers = ("o", "s", "^", "D", "v", "P")
    diagonal = ax.plot(
        [0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration"
    )
    handles = list(diagonal)
    largest = max(float(pd.to_numeric(shown["n"]).max()), 1.0) if len(shown) else 1.0
    for i, week in enumerate(weeks):
        points = shown[shown["week"] == week].sort_values("predicted")
        ax.plot(points["predicted"], points["observed"], color=colours[i], linewidth=1, alpha=0.6)
        ax.scatter(
            points["predicted"],
            points["observed"],
            color=colours[i],
            marker=markers[i % len(markers)],
            s=20 + 120 * pd.to_numeric(points["n"]) / largest,
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
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("Predicted probability of recovery (proportion)")
    ax.set_ylabel("Observed probability of recovery (proportion)")
    ax.grid(alpha=0.3)
    ax.legend(
        handles=handles,
        frameon=False,
        fontsize=8,
        loc="upper left",
        title="marker area: number of people",
        title_fontsize=8,
    )
    if hidden.any():
        _note_suppressed(
            ax, sorted(pd.unique(table.loc[hidden, "group"]), key=str), what="calibration group"
        )
    return ax
