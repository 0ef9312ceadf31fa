"""The fit stage on a simulated study: every configured model runs and reports tidy tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.cli import app
from analysis.results import HAZARD_RATIO_COLUMNS, TIDY_COLUMNS
from tests.conftest import PROJECT_ROOT

EXPECTED_TABLES = {
    "km_medians",
    "km_curves",
    "km_curves_overall",
    "km_at_risk",
    "km_survival_at",
    "logrank",
    "logrank_groups",
    "rmst_groups",
    "rmst_difference",
    "cox",
    "cox_ph_test",
    "cox_time_varying",
    "turnbull_curves",
    "turnbull_survival_at",
    "cumulative_incidence",
    "fine_gray",
    "mixed_fixed_effects",
    "mixed_variance_components",
    "mixed_predictions",
    "aft_models",
    "aft_coefficients",
    "timeline",
    "timeline_model_comparison",
    "timeline_quoted_ranges",
    "calibration_summary",
    "calibration_table",
    "model_notes",
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """simulate -> clean -> derive -> fit through the CLI, on a 300-person study."""
    root = tmp_path_factory.mktemp("study")
    params = PROJECT_ROOT / "params.yaml"
    runner = CliRunner()
    steps = [
        [
            "simulate",
            "--out",
            root / "raw",
            "--participants",
            "300",
            "--seed",
            "11",
            "--mess-rate",
            "0.02",
        ],
        ["clean", "--raw", root / "raw", "--out", root / "interim", "--params", params],
        ["derive", "--clean", root / "interim", "--out", root / "processed", "--params", params],
        [
            "fit",
            "--processed",
            root / "processed",
            "--models",
            root / "models",
            "--metrics",
            root / "metrics.json",
            "--params",
            params,
        ],
    ]
    for step in steps:
        result = runner.invoke(app, [str(a) for a in step], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return root


def test_every_model_writes_its_table_and_none_failed(fitted):
    written = {p.stem for p in (fitted / "models").glob("*.csv")}
    assert written >= EXPECTED_TABLES
    notes = pd.read_csv(fitted / "models" / "model_notes.csv")
    assert "failed" not in set(notes["kind"]), notes.to_string()


def test_regression_tables_have_the_tidy_shape(fitted):
    for name in ("cox", "cox_time_varying", "fine_gray"):
        table = pd.read_csv(fitted / "models" / f"{name}.csv")
        assert list(table.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
        assert set(HAZARD_RATIO_COLUMNS) <= set(table.columns)
        assert table[list(TIDY_COLUMNS[1:])].notna().all().all(), name
    mixed = pd.read_csv(fitted / "models" / "mixed_fixed_effects.csv")
    assert set(mixed["outcome"]) == {"pain_low_back", "pain_hip", "pain_knee", "hip_abduction_n"}


def test_adherence_speeds_recovery_in_the_models(fitted):
    """The simulator's truth: more adherence, faster recovery; more sitting, slower."""
    tv = pd.read_csv(fitted / "models" / "cox_time_varying.csv").set_index("term")
    assert tv.loc["weekly_adherence", "estimate"] > 0
    assert tv.loc["weekly_sitting_hours", "estimate"] < 0
    metrics = json.loads((fitted / "metrics.json").read_text())
    medians = metrics["km_median_days"]
    assert medians["high"] < medians["moderate"] < medians["low"]
    assert 0.6 < metrics["cox_concordance"] < 0.9


def test_metrics_are_json_numbers_and_the_timeline_command_reads_the_fit(fitted):
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert all(np.isfinite(v) for v in metrics["cox_hazard_ratios"].values())
    result = CliRunner().invoke(
        app,
        [
            "timeline",
            "--severity",
            "mild",
            "--adherence",
            "0.9",
            "--sitting-hours",
            "6",
            "--symptom-months",
            "3",
            "--models",
            str(fitted / "models"),
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "typically recovers in about" in result.output
    bad = CliRunner().invoke(
        app,
        [
            "timeline",
            "--severity",
            "extreme",
            "--adherence",
            "0.9",
            "--sitting-hours",
            "6",
            "--models",
            str(fitted / "models"),
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
        ],
        catch_exceptions=False,
    )
    assert bad.exit_code == 1 and "severity" in bad.output
