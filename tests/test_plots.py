"""Report figures: drawn from real model tables, one colour per group, suppression, PNG output."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from analysis import plots  # noqa: E402
from analysis.errors import DataError  # noqa: E402
from analysis.survival import cumulative_incidence, fit_cox, kaplan_meier, turnbull  # noqa: E402
from analysis.tables import cohort_flow  # noqa: E402

GROUP_ORDER = ["low", "moderate", "high"]
RISK_TIMES = [0, 28, 56, 84, 112, 140]


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
def cif(cohort):
    return cumulative_incidence(cohort, "days", "event_type", group="adherence_group").table


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


def save_png(ax: Axes, tmp_path) -> None:
    path = tmp_path / "figure.png"
    ax.figure.savefig(path, dpi=60)
    assert path.stat().st_size > 1000


def test_palette_is_fixed_by_the_configured_order():
    palette = plots.group_palette(GROUP_ORDER)
    assert len(set(palette[level] for level in GROUP_ORDER)) == 3
    assert plots.group_palette(GROUP_ORDER)["high"] == palette["high"]
    assert plots.group_palette(["low", "moderate", "high", "extra"])["high"] == palette["high"]


def test_km_draws_one_curve_per_group_with_risk_table(km, tmp_path):
    ax = plots.plot_km(km.curves, km.at_risk(RISK_TIMES), group_order=GROUP_ORDER, min_cell_size=5)
    assert isinstance(ax, Axes)
    assert sorted(line_colours(ax)) == sorted(GROUP_ORDER)
    assert len(ax.collections) == 3, "one CI band per group"
    assert_labelled_with_units(ax, "weeks", "proportion")
    risk_table = next(child for child in ax.child_axes if child.get_gid() == "risk-table")
    counts = [text.get_text() for text in risk_table.texts]
    assert len(counts) == 3 * len(RISK_TIMES)
    at_risk = km.at_risk(RISK_TIMES)
    assert str(at_risk.loc[0, "n_risk"]) in counts
    assert max(line.get_xdata().max() for line in ax.get_lines()) <= km.curves["time"].max() / 7
    save_png(ax, tmp_path)


def test_km_skips_a_suppressed_group_and_says_so(km):
    ax = plots.plot_km(km.curves, km.at_risk(RISK_TIMES), suppressed_groups=["moderate"])
    assert sorted(line_colours(ax)) == ["high", "low"]
    assert "moderate" in plots.suppression_note(ax)


def test_a_group_keeps_its_colour_across_figures_even_when_another_is_hidden(km, cif):
    km_ax = plots.plot_km(km.curves, km.at_risk(RISK_TIMES), group_order=GROUP_ORDER)
    cif_ax = plots.plot_cumulative_incidence(
        cif, group_order=GROUP_ORDER, suppressed_groups=["low"]
    )
    km_colours, cif_colours = line_colours(km_ax), line_colours(cif_ax)
    for level in ("moderate", "high"):
        assert km_colours[level] == cif_colours[level] == plots.group_palette()[level].lower()


def test_cumulative_incidence_draws_group_by_event(cif, tmp_path):
    ax = plots.plot_cumulative_incidence(cif, group_order=GROUP_ORDER)
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(lines) == 3 * 2, "three groups x (recovered, withdrawn)"
    styles = {line.get_label().split(", ")[1]: line.get_linestyle() for line in lines}
    assert styles["recovered"] != styles["withdrawn"]
    assert_labelled_with_units(ax, "weeks", "proportion")
    save_png(ax, tmp_path)


def test_turnbull_beside_km_for_the_whole_cohort(cohort, tmp_path):
    overall = kaplan_meier(cohort, "days", "recovered")
    interval = turnbull(cohort, "lower", "upper")
    ax = plots.plot_turnbull_vs_km(interval.curves, overall.curves)
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 2 and any("Turnbull" in label for label in labels)
    assert_labelled_with_units(ax, "weeks", "proportion")
    save_png(ax, tmp_path)


def test_turnbull_vs_km_needs_the_requested_curve(cohort, km):
    interval = turnbull(cohort, "lower", "upper")
    with pytest.raises(DataError, match="all"):
        plots.plot_turnbull_vs_km(interval.curves, km.curves)


def test_forest_has_a_row_per_term_on_a_log_scale(cohort, tmp_path):
    tidy = fit_cox(cohort, "days", "recovered", ["overall_adherence", "severity"]).tidy()
    ax = plots.plot_forest(tidy)
    assert ax.get_xscale() == "log"
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert labels == ["Overall adherence", "Severity: moderate", "Severity: severe"]
    assert "hazard ratio" in ax.get_xlabel().lower()
    assert any(np.allclose(line.get_xdata(), 1.0) for line in ax.get_lines())
    save_png(ax, tmp_path)


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
    save_png(ax, tmp_path)


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
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "cohort span (6-26 weeks)" in legend
    shaded = [patch for patch in ax.patches if patch.get_x() == 6]
    assert len(shaded) == 2
    save_png(ax, tmp_path)


def test_calibration_has_a_diagonal_and_hides_tiny_groups(tmp_path):
    table = pd.DataFrame(
        {
            "group": [1, 2, 3] * 2,
            "week": [8] * 3 + [26] * 3,
            "predicted": [0.1, 0.3, 0.5, 0.3, 0.6, 0.9],
            "observed": [0.12, 0.28, 0.55, 0.3, 0.5, 0.8],
            "n": [30, 30, 3, 30, 30, 3],
        }
    )
    ax = plots.plot_calibration(table, min_cell_size=5)
    diagonal = ax.get_lines()[0]
    assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata())
    assert sum(len(collection.get_offsets()) for collection in ax.collections) == 4
    assert "3" in plots.suppression_note(ax)
    assert_labelled_with_units(ax, "proportion", "proportion")
    save_png(ax, tmp_path)


def test_plots_draw_into_given_axes():
    figure, axes = plt.subplots(1, 2)
    ax = plots.plot_calibration(
        pd.DataFrame({"group": [1], "week": [8], "predicted": [0.2], "observed": [0.3], "n": [10]}),
        ax=axes[1],
    )
    assert ax is axes[1] and ax.figure is figure
