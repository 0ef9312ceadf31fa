"""Report figures: drawn from real model tables made safe by the privacy module, one colour per
group, every element checked on the returned axes (marks, tests, risk table, text sizes)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from analysis import plots, privacy  # noqa: E402
from analysis.errors import DataError  # noqa: E402
from analysis.survival import (  # noqa: E402
    cumulative_incidence,
    fit_cox,
    gray_test,
    kaplan_meier,
    logrank_test,
    turnbull,
)
from analysis.tables import cohort_flow  # noqa: E402

GROUP_ORDER = ["low", "moderate", "high"]
RISK_TIMES = [0, 28, 56, 84, 112, 140]
K = 5
# The smallest min_cell_size allowed: this small cohort (30 per group) has too few censorings
# and withdrawals for marks and steps of 5 on the part of the curves still published.
SMALL_K = 3


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    """A tiny random cohort: days to recovery by adherence group, some withdrawals."""
    rng = np.random.default_rng(20261125)
    n = 90
    group = rng.choice(GROUP_ORDER, n)
    rate = pd.Series(group).map({"low": 1 / 120, "moderate": 1 / 80, "high": 1 / 50}).to_numpy()
    recovery_day = np.round(rng.exponential(1 / rate)) + 1
    end_day = np.round(rng.uniform(40, 180, n))
    withdrew = rng.uniform(size=n) < 0.25
    recovered = recovery_day <= end_day
    event_type = np.where(recovered, "recovered", np.where(withdrew, "withdrawn", "censored"))
    days = np.minimum(recovery_day, end_day)
    return pd.DataFrame(
        {
            "participant_id": [f"P{i:03d}" for i in range(n)],
            "adherence_group": group,
            "days": days,
            "recovered": recovered,
            "event_type": event_type,
            "censor_reason": np.where(
                event_type == "withdrawn",
                "withdrawn",
                np.where(event_type == "censored", "end_of_follow_up", None),
            ),
            "lower": np.where(recovered, np.maximum(days - 14, 0), days),
            "upper": np.where(recovered, days, np.nan),
            "overall_adherence": rng.uniform(0, 1, n),
            "severity": rng.choice(["mild", "moderate", "severe"], n),
        }
    )


@pytest.fixture(scope="module")
def km(cohort):
    return kaplan_meier(cohort, "days", "recovered", group="adherence_group")


@pytest.fixture(scope="module")
def safe_km(km):
    """The KM frames as a report passes them: curve, risk table and censor marks made safe."""
    return (
        privacy.safe_curve(km.curves, SMALL_K),
        privacy.safe_at_risk(km.at_risk(RISK_TIMES), SMALL_K),
        privacy.safe_censor_marks(km.curves, SMALL_K),
    )


@pytest.fixture(scope="module")
def logrank(cohort):
    return logrank_test(cohort, "days", "recovered", "adherence_group").tidy()


@pytest.fixture(scope="module")
def cif(cohort):
    return cumulative_incidence(cohort, "days", "event_type", group="adherence_group").table


@pytest.fixture(scope="module")
def safe_cif(cohort, cif):
    return privacy.safe_cumulative_incidence(
        cif, cohort, "days", "event_type", "adherence_group", SMALL_K
    )


@pytest.fixture(scope="module")
def trajectories(cohort):
    """Weekly pain per participant, and mixed_predictions-shaped fitted lines."""
    rng = np.random.default_rng(3)
    weeks = np.arange(12)
    observed = cohort[["participant_id", "adherence_group"]].merge(
        pd.DataFrame({"week": weeks}), how="cross"
    )
    slope = observed["adherence_group"].map({"low": -0.05, "moderate": -0.15, "high": -0.25})
    observed["pain_hip"] = 6 + slope * observed["week"] + rng.normal(0, 1, len(observed))
    grid = pd.MultiIndex.from_product([weeks, GROUP_ORDER], names=["week", "adherence_group"])
    predictions = grid.to_frame(index=False)
    predictions["outcome"] = "pain_hip"
    predictions["fitted"] = (
        6
        + predictions["adherence_group"].map({"low": -0.05, "moderate": -0.15, "high": -0.25})
        * predictions["week"]
    )
    return observed, predictions


def line_colours(ax: Axes) -> dict[str, str]:
    """Colour of each labelled line, by the group its label starts with."""
    return {
        line.get_label().split(",")[0]: to_hex(line.get_color())
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }


def assert_labelled_with_units(ax: Axes, x_unit: str, y_unit: str) -> None:
    assert x_unit in ax.get_xlabel().lower()
    assert y_unit in ax.get_ylabel().lower()


def assert_text_at_least(figure, points: float = plots.MIN_FONT_SIZE) -> None:
    """Every visible text of the figure (labels, ticks, legends, annotations) is >= points."""
    figure.canvas.draw()
    small = [
        (text.get_text(), text.get_fontsize())
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text.get_fontsize() < points
    ]
    assert not small, small


def tick_labels_overlap(ax: Axes) -> list[tuple[str, str]]:
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    labels = [label for label in ax.get_xticklabels() if label.get_text()]
    boxes = sorted(
        ((label.get_window_extent(renderer), label.get_text()) for label in labels),
        key=lambda item: item[0].x0,
    )
    return [
        (first, second)
        for (box, first), (next_box, second) in zip(boxes, boxes[1:], strict=False)
        if box.x1 >= next_box.x0
    ]


def save_png(ax: Axes, tmp_path) -> None:
    path = tmp_path / "figure.png"
    ax.figure.savefig(path, dpi=60)
    assert path.stat().st_size > 1000


def test_palette_is_fixed_by_the_configured_order():
    palette = plots.group_palette(GROUP_ORDER)
    assert len(set(palette[level] for level in GROUP_ORDER)) == 3
    assert plots.group_palette(GROUP_ORDER)["high"] == palette["high"]
    assert plots.group_palette(["low", "moderate", "high", "extra"])["high"] == palette["high"]


def test_km_draws_bands_censor_marks_test_and_risk_table_in_weeks(km, safe_km, logrank, tmp_path):
    curves, at_risk, marks = safe_km
    ax = plots.plot_km(
        curves,
        at_risk,
        group_order=GROUP_ORDER,
        min_cell_size=SMALL_K,
        test=logrank,
        censor_marks=marks,
    )
    assert isinstance(ax, Axes)
    assert sorted(line_colours(ax)) == sorted(GROUP_ORDER)
    assert len(ax.collections) == 3, "one CI band per group"
    assert_labelled_with_units(ax, "weeks", "proportion")
    # Censor marks: "+" markers, one line per group, on the curve as drawn.
    censor_lines = [line for line in ax.get_lines() if line.get_gid() == plots.CENSOR_MARKS_GID]
    last_step = marks["group"].map(curves.groupby("group")["time"].max())
    on_curves = marks[marks["time"] <= last_step]
    assert len(censor_lines) == on_curves["group"].nunique() > 0
    assert all(line.get_marker() == "+" for line in censor_lines)
    assert sum(len(line.get_xdata()) for line in censor_lines) == len(on_curves)
    for line in censor_lines:
        colour = to_hex(line.get_color())
        curve_end = max(
            curve.get_xdata().max()
            for curve in ax.get_lines()
            if curve.get_gid() is None and to_hex(curve.get_color()) == colour
        )
        assert line.get_xdata().max() <= curve_end, "no mark beyond its curve"
    # The test and its p on the plot.
    test_text = next(text.get_text() for text in ax.texts if text.get_gid() == "test-result")
    assert "Log-rank" in test_text and "p " in test_text and "df = 2" in test_text
    # The risk table sits under the axis at the axis' own ticks, in weeks.
    risk_table = plots.risk_table_axes(ax)
    positions = sorted({text.get_position()[0] for text in risk_table.texts})
    np.testing.assert_allclose(positions, sorted(ax.get_xticks()))
    np.testing.assert_allclose(positions, np.array(RISK_TIMES[: len(positions)]) / 7)
    assert risk_table.get_position().y1 < ax.get_position().y0
    counts = [int(text.get_text()) for text in risk_table.texts]
    assert min(counts) >= SMALL_K and len(counts) == len(at_risk)
    assert max(line.get_xdata().max() for line in ax.get_lines()) <= km.curves["time"].max() / 7
    assert "censored" in plots.figure_caption(ax)
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_km_censor_marks_sit_on_the_drawn_curve(safe_km):
    curves, at_risk, marks = safe_km
    ax = plots.plot_km(curves, at_risk, group_order=GROUP_ORDER, censor_marks=marks)
    low_curve = curves[curves["group"] == "low"].sort_values("time")
    low_marks = marks[marks["group"] == "low"]["time"].to_numpy()
    low_marks = low_marks[low_marks <= low_curve["time"].max()]
    line = next(
        line
        for line in ax.get_lines()
        if line.get_gid() == plots.CENSOR_MARKS_GID
        and to_hex(line.get_color()) == plots.group_palette()["low"].lower()
    )
    rows = np.searchsorted(low_curve["time"].to_numpy(), low_marks, side="right") - 1
    expected = np.where(rows >= 0, low_curve["survival"].to_numpy()[np.maximum(rows, 0)], 1.0)
    np.testing.assert_allclose(line.get_ydata(), expected)


def test_km_refuses_curves_and_risk_tables_not_made_safe(km, safe_km):
    curves, at_risk, _ = safe_km
    with pytest.raises(DataError, match="n_risk below 5"):
        plots.plot_km(km.curves, at_risk, min_cell_size=K)
    with pytest.raises(DataError, match="n_risk below 5"):
        plots.plot_km(curves, km.at_risk(RISK_TIMES), min_cell_size=K)
    marked = at_risk.astype({"n_risk": object})
    marked.loc[marked.index[-1], "n_risk"] = privacy.mark(SMALL_K)
    with pytest.raises(DataError, match="marks instead of counts"):
        plots.plot_km(curves, marked, min_cell_size=SMALL_K)


def test_km_skips_a_suppressed_group_and_says_so(safe_km):
    curves, at_risk, _ = safe_km
    ax = plots.plot_km(curves, at_risk, suppressed_groups=["moderate"])
    assert sorted(line_colours(ax)) == ["high", "low"]
    assert "moderate" in plots.suppression_note(ax)


def test_km_names_a_group_whose_curve_privacy_cut_whole(safe_km):
    curves, at_risk, _ = safe_km
    ax = plots.plot_km(curves[curves["group"] != "high"], at_risk)
    assert sorted(line_colours(ax)) == ["low", "moderate"]
    assert plots.suppression_note(ax).endswith("group high")


def test_a_group_keeps_its_colour_across_figures_even_when_another_is_hidden(safe_km, safe_cif):
    curves, at_risk, _ = safe_km
    km_ax = plots.plot_km(curves, at_risk, group_order=GROUP_ORDER)
    cif_ax = plots.plot_cumulative_incidence(
        safe_cif, group_order=GROUP_ORDER, suppressed_groups=["low"]
    )
    km_colours, cif_colours = line_colours(km_ax), line_colours(cif_ax)
    for level in ("moderate", "high"):
        assert km_colours[level] == cif_colours[level] == plots.group_palette()[level].lower()


def test_cumulative_incidence_draws_bands_and_grays_test(cohort, safe_cif, tmp_path):
    gray = gray_test(cohort, "days", "event_type", "adherence_group").tidy()
    ax = plots.plot_cumulative_incidence(safe_cif, group_order=GROUP_ORDER, test=gray)
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    curves = safe_cif.groupby(["group", "event"]).ngroups
    assert len(lines) == curves >= 3, "one line per group and event the privacy module kept"
    assert len(ax.collections) == curves, "a confidence band per curve"
    event_legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert event_legend == ["recovered", "withdrawn"]
    styles = {line.get_label().split(", ")[1]: line.get_linestyle() for line in lines}
    assert styles["recovered"] != styles["withdrawn"]
    test_text = next(text.get_text() for text in ax.texts if text.get_gid() == "test-result")
    for event in ("recovered", "withdrawn"):
        p_value = gray.set_index("event").loc[event, "p_value"]
        assert f"Gray's test, {event}" in test_text
        assert plots.format_p_value(p_value).lstrip("<") in test_text
    assert "95% confidence bands" in plots.figure_caption(ax)
    assert_labelled_with_units(ax, "weeks", "proportion")
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_cumulative_incidence_refuses_curves_with_few_at_risk(cohort, cif):
    counted = privacy.attach_counts(
        cif[cif["event"] == "recovered"],
        cohort.rename(columns={"adherence_group": "group"}),
        "days",
        "recovered",
    )
    with pytest.raises(DataError, match="n_risk below 5"):
        plots.plot_cumulative_incidence(counted, min_cell_size=K)


def test_turnbull_beside_km_for_the_whole_cohort(cohort, tmp_path):
    overall = kaplan_meier(cohort, "days", "recovered")
    interval = turnbull(cohort, "lower", "upper")
    ax = plots.plot_turnbull_vs_km(interval.curves, overall.curves)
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 2 and any("Turnbull" in label for label in labels)
    assert len(ax.collections) == 1, "a band for Kaplan-Meier only"
    assert "Turnbull curve has no band" in plots.figure_caption(ax)
    assert_labelled_with_units(ax, "weeks", "proportion")
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_turnbull_gets_a_band_when_its_table_has_one(cohort):
    overall = kaplan_meier(cohort, "days", "recovered")
    curves = turnbull(cohort, "lower", "upper").curves
    banded = curves.assign(conf_low=curves["survival"] * 0.9, conf_high=curves["survival"])
    ax = plots.plot_turnbull_vs_km(banded, overall.curves)
    assert len(ax.collections) == 2
    assert "no band" not in plots.figure_caption(ax)


def test_turnbull_vs_km_needs_the_requested_curve(cohort, km):
    interval = turnbull(cohort, "lower", "upper")
    with pytest.raises(DataError, match="all"):
        plots.plot_turnbull_vs_km(interval.curves, km.curves)


def test_turnbull_vs_km_names_a_curve_privacy_cut_whole(cohort):
    overall = kaplan_meier(cohort, "days", "recovered").curves
    interval = turnbull(cohort, "lower", "upper").curves
    ax = plots.plot_turnbull_vs_km(interval.iloc[:0], overall)
    assert [line.get_label() for line in ax.get_lines()][0].startswith("Kaplan-Meier")
    assert "Turnbull" in plots.suppression_note(ax)


def test_forest_has_a_row_per_term_an_estimate_column_and_a_reference(cohort, tmp_path):
    tidy = fit_cox(cohort, "days", "recovered", ["overall_adherence", "severity"]).tidy()
    ax = plots.plot_forest(tidy)
    assert ax.get_xscale() == "log"
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert labels == ["Overall adherence", "Severity: moderate", "Severity: severe"]
    assert "hazard ratio" in ax.get_xlabel().lower()
    assert any(np.allclose(line.get_xdata(), 1.0) for line in ax.get_lines())
    column = [text.get_text() for text in ax.texts if text.get_gid() == "estimate-column"]
    assert column[0] == "HR (95% CI)"
    expected = [
        f"{row.hazard_ratio:.2f} ({row.hr_conf_low:.2f} to {row.hr_conf_high:.2f})"
        for row in tidy.itertuples()
    ]
    assert column[1:] == expected
    assert not tick_labels_overlap(ax)
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.18, 0.3), (0.2, 0.26), (0.8, 1.3), (0.011, 95.0), (0.5, 60.0), (0.95, 1.05)],
)
def test_forest_tick_labels_never_overlap(low, high):
    tidy = pd.DataFrame(
        {
            "term": ["a", "b"],
            "hazard_ratio": [np.sqrt(low * high), high * 0.9],
            "hr_conf_low": [low, high * 0.8],
            "hr_conf_high": [high, high],
        }
    )
    ax = plots.plot_forest(tidy, label="Subdistribution hazard ratio (95% CI)")
    assert len([label for label in ax.get_xticklabels() if label.get_text()]) >= 2
    assert not tick_labels_overlap(ax), [label.get_text() for label in ax.get_xticklabels()]
    assert "SHR (95% CI)" in [text.get_text() for text in ax.texts]


def test_trajectories_draw_points_and_fitted_lines_per_group(trajectories, tmp_path):
    observed, predictions = trajectories
    ax = plots.plot_trajectories(
        observed,
        predictions,
        "pain_hip",
        "adherence_group",
        group_order=GROUP_ORDER,
        suppressed_groups=["high"],
        min_cell_size=5,
    )
    fitted = [line for line in ax.get_lines() if line.get_label() in GROUP_ORDER]
    assert sorted(line.get_label() for line in fitted) == ["low", "moderate"]
    assert_labelled_with_units(ax, "weeks", "nrs 0-10")
    assert "high" in plots.suppression_note(ax)
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_flow_diagram_shows_every_main_count(cohort, tmp_path):
    report = {
        "tables": {
            "participants": {
                "input_rows": 95,
                "kept": 90,
                "quarantined": 5,
                "merged_duplicates": 0,
                "quarantined_rows_by_rule": {"invalid_id": 5},
            },
            "diary": {
                "input_rows": 10,
                "kept": 9,
                "quarantined": 1,
                "merged_duplicates": 0,
                "quarantined_rows_by_rule": {"future_date": 1},
            },
        }
    }
    flow = cohort_flow(report, cohort)
    ax = plots.plot_flow_diagram(flow)
    text = "\n".join(t.get_text() for t in ax.texts)
    for count in (
        "n = 95",
        "n = 90",
        f"Recovered: {int(cohort['recovered'].sum())}",
        "invalid id: 5",
        "diary: future date: 1",
    ):
        assert count in text
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_trajectories_draw_the_safe_means_given_and_refuse_small_ones(trajectories):
    observed, predictions = trajectories
    means = plots.weekly_means(observed, "pain_hip", "adherence_group").rename(
        columns={"adherence_group": "group"}
    )
    blanked = means.assign(mean=means["mean"].where(means["week"] != 3))
    ax = plots.plot_trajectories(
        None, predictions, "pain_hip", "adherence_group", means=blanked, min_cell_size=K
    )
    points = [
        container
        for container in ax.containers
        if len(container.lines[0].get_xdata())  # errorbar containers of the drawn groups
    ]
    drawn_weeks = np.concatenate(
        [np.round(np.asarray(c.lines[0].get_xdata(), float)) for c in points]
    )
    assert 3 not in drawn_weeks and len(drawn_weeks) == 3 * 11
    tiny = means.assign(n=means["n"].where(means["week"] != 5, 2))
    with pytest.raises(DataError, match="n below 5"):
        plots.plot_trajectories(
            None, predictions, "pain_hip", "adherence_group", means=tiny, min_cell_size=K
        )


def timeline_table() -> pd.DataFrame:
    profiles = pd.MultiIndex.from_product(
        [["mild", "severe"], GROUP_ORDER], names=["severity", "adherence_group"]
    ).to_frame(index=False)
    median = np.array([7.0, 10.0, 14.0, 16.0, 20.0, 25.0])
    return profiles.assign(
        sitting_band="low",
        underlying_condition="none",
        chronic=[False, True] * 3,
        predicted_median_weeks=median,
        predicted_p10_weeks=median * 0.5,
        predicted_p90_weeks=median * 1.8,
        median_conf_low=median - 1,
        median_conf_high=median + 1,
        observed_median_weeks=[7.5, np.nan, 13, np.nan, 21, 24],
    )


def test_timeline_ranges_one_row_per_profile_with_quoted_ranges(tmp_path):
    table = timeline_table()
    ranges = plots.quoted_ranges_from_params(
        {"mild_recent_adherent_median_weeks": [6, 8], "cohort_span_weeks": [6, 26]}
    )
    ax = plots.plot_timeline_ranges(table, quoted_ranges=ranges)
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert len(labels) == len(table) and "mild · low adherence · low sitting" in labels[-1]
    assert "weeks" in ax.get_xlabel().lower()
    (legend,) = ax.figure.legends
    assert "cohort span (6-26 weeks)" in [text.get_text() for text in legend.get_texts()]
    shaded = [patch for patch in ax.patches if patch.get_x() == 6]
    assert len(shaded) == 2
    assert all(label.get_fontsize() >= plots.MIN_FONT_SIZE for label in ax.get_yticklabels())
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def calibration_table(n: list[int]) -> pd.DataFrame:
    """Ten groups at weeks 8 and 26; seven of the week-26 points at (1, 1), as in the issue."""
    predicted_26 = [0.3, 0.6, 0.8] + [1.0] * 7
    observed_26 = [0.25, 0.55, 0.85] + [1.0] * 7
    return pd.DataFrame(
        {
            "group": list(range(1, 11)) * 2,
            "week": [8] * 10 + [26] * 10,
            "predicted": list(np.linspace(0.0, 0.3, 10)) + predicted_26,
            "observed": list(np.linspace(0.0, 0.35, 10)) + observed_26,
            "n": n * 2,
        }
    )


def marker_boxes_inside_axes(ax: Axes) -> bool:
    """Every scatter marker lies wholly inside the axes (none cut by the frame)."""
    ax.figure.canvas.draw()
    frame = ax.get_window_extent()
    for collection in ax.collections:
        centres = collection.get_offset_transform().transform(collection.get_offsets())
        radii = np.sqrt(collection.get_sizes()) / 2 * ax.figure.dpi / 72
        radii = np.broadcast_to(radii, (len(centres),))
        for (x, y), radius in zip(centres, radii, strict=True):
            if not (
                frame.x0 <= x - radius
                and x + radius <= frame.x1
                and frame.y0 <= y - radius
                and y + radius <= frame.y1
            ):
                return False
    return True


def test_calibration_clips_no_point_and_explains_equal_markers(tmp_path):
    ax = plots.plot_calibration(calibration_table([49, 50, 49, 49, 49, 49, 49, 49, 49, 50]))
    diagonal = ax.get_lines()[0]
    assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata())
    assert sum(len(collection.get_offsets()) for collection in ax.collections) == 20
    assert marker_boxes_inside_axes(ax)
    sizes = np.concatenate([collection.get_sizes() for collection in ax.collections])
    assert np.unique(sizes).size == 1, "groups of 49 and 50 read as one size"
    legend = ax.get_legend()
    assert "marker area" not in legend.get_title().get_text()
    assert legend.get_title().get_text() == "groups of 49-50 people"
    assert_labelled_with_units(ax, "proportion", "proportion")
    assert_text_at_least(ax.figure)
    save_png(ax, tmp_path)


def test_calibration_sizes_markers_by_n_only_when_groups_differ():
    ax = plots.plot_calibration(calibration_table([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]))
    sizes = np.concatenate([collection.get_sizes() for collection in ax.collections])
    assert np.unique(sizes).size == 10
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "marker area: number of people"
    assert {"n = 10", "n = 100"} <= {text.get_text() for text in legend.get_texts()}
    assert marker_boxes_inside_axes(ax)


def test_calibration_draws_what_privacy_left_and_refuses_small_groups():
    table = calibration_table([30] * 9 + [3])
    safe = privacy.suppress_small_cells(table, ["n"], K, estimate_columns=["predicted", "observed"])
    ax = plots.plot_calibration(safe, min_cell_size=K)
    assert sum(len(collection.get_offsets()) for collection in ax.collections) == 18
    assert "10" in plots.suppression_note(ax)
    with pytest.raises(DataError, match="n below 5"):
        plots.plot_calibration(table, min_cell_size=K)


def test_plots_draw_into_given_axes():
    figure, axes = plt.subplots(1, 2)
    ax = plots.plot_calibration(
        pd.DataFrame({"group": [1], "week": [8], "predicted": [0.2], "observed": [0.3], "n": [10]}),
        ax=axes[1],
    )
    assert ax is axes[1] and ax.figure is figure


def test_setup_figures_sets_readable_sizes_outside_a_notebook():
    with matplotlib.rc_context():
        plots.setup_figures(dpi=120)
        assert matplotlib.rcParams["figure.dpi"] == 120
        for key in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize", "font.size"):
            assert matplotlib.rcParams[key] >= plots.MIN_FONT_SIZE


def test_every_figure_fits_the_report_page_so_text_keeps_its_size(
    safe_km, safe_cif, cohort, trajectories
):
    curves, at_risk, marks = safe_km
    observed, predictions = trajectories
    tidy = fit_cox(cohort, "days", "recovered", ["overall_adherence", "severity"]).tidy()
    figures = [
        plots.plot_km(curves, at_risk, censor_marks=marks).figure,
        plots.plot_cumulative_incidence(safe_cif).figure,
        plots.plot_forest(tidy).figure,
        plots.plot_timeline_ranges(timeline_table()).figure,
        plots.plot_calibration(calibration_table([30] * 10)).figure,
        plots.plot_trajectories(observed, predictions, "pain_hip", "adherence_group").figure,
    ]
    for figure in figures:
        assert figure.get_size_inches()[0] <= plots.MAX_FIGURE_WIDTH_INCHES
        assert_text_at_least(figure)
        assert_whole_when_drawn_once(figure)


def assert_whole_when_drawn_once(figure) -> None:
    """The report draws each figure once, uncropped (plots.setup_figures): after one layout
    pass nothing (legend, risk table, labels) may reach past the canvas."""
    figure.canvas.draw()
    drawn = figure.get_tightbbox(figure.canvas.get_renderer())
    width, height = figure.get_size_inches()
    assert drawn.x0 >= 0 and drawn.y0 >= 0, drawn
    assert drawn.x1 <= width and drawn.y1 <= height, drawn


def test_report_figures_are_svg_without_a_date_and_the_same_bytes_each_time(safe_km):
    curves, at_risk, marks = safe_km
    with matplotlib.rc_context():
        plots.setup_figures(90)
        figure = plots.plot_km(curves, at_risk, censor_marks=marks).figure
        svg, size = plots.svg_figure(figure)
        again = plots.svg_figure(figure)[0]
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "dc:date" not in svg and not re.search(r"\d{4}-\d{2}-\d{2}", svg)
    # Ids (clip paths, glyphs) come from a fixed salt: a re-run gives the same bytes.
    assert again == svg
    width, height = figure.get_size_inches() * 90
    assert size == {"width": round(width), "height": round(height)}
    assert plots.svg_figure(plt.figure()) is None  # nothing drawn: no image
