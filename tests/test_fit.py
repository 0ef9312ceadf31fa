"""The fit stage on a simulated study: every configured model runs and reports tidy tables."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.cli import app
from analysis.fit import (
    STATUS_FITTED,
    STATUS_NOT_FITTED,
    STATUS_PARTLY_ESTIMABLE,
    FitOutputs,
    baseline_cox_model,
    fit_regression,
)
from analysis.results import HAZARD_RATIO_COLUMNS, TIDY_COLUMNS, ModelResult
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
    "model_status",
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


def test_every_regression_has_a_status_and_the_default_study_fits_them_all(fitted):
    status = pd.read_csv(fitted / "models" / "model_status.csv", keep_default_na=False)
    assert {"cox", "cox_time_varying", "fine_gray"} <= set(status["model"])
    assert (status["status"] == STATUS_FITTED).all(), status.to_string()
    assert (status["events"] >= 10 * status["parameters"]).all()


def _small_cohort(people: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "time_to_recovery_days": rng.exponential(100, people).round() + 1,
            "recovered": rng.integers(0, 2, people),
            "age_years": rng.normal(40, 10, people),
            "severity": rng.choice(["mild", "moderate", "severe"], people),
        }
    )


def test_too_few_events_per_parameter_is_said_not_fitted():
    """14 people, ~7 events, 3 parameters: below 10 per parameter, so no Cox model at all."""
    outputs = FitOutputs()
    params = {"cox_covariates": ["age_years", "severity"], "min_events_per_parameter": 10}
    baseline_cox_model(_small_cohort(14, 1), params, outputs)
    assert "cox" not in outputs.tables
    (status,) = outputs.status
    assert status["status"] == STATUS_NOT_FITTED and not status["estimable"]
    assert status["parameters"] == 3
    assert status["reason"].startswith("The Cox model was not fitted: ")
    assert status["reason"].endswith("so its estimates would not be reliable.")
    assert outputs.notes == [("cox", STATUS_NOT_FITTED, status["reason"])]
    enough = FitOutputs()
    baseline_cox_model(_small_cohort(400, 2), params, enough)
    assert enough.status[0]["status"] == STATUS_FITTED and "cox" in enough.tables


def test_a_model_with_a_term_not_estimable_has_that_status():
    frame = _small_cohort(400, 3)
    frame.loc[frame["severity"] == "severe", "recovered"] = 0
    outputs = FitOutputs()
    params = {"cox_covariates": ["age_years", "severity"], "min_events_per_parameter": 10}
    baseline_cox_model(frame, params, outputs)
    (status,) = outputs.status
    assert status["status"] == STATUS_PARTLY_ESTIMABLE and not status["estimable"]
    assert "severity[severe] could not be estimated" in status["reason"]
    assert any("no one with severity = severe had the event" in n[2] for n in outputs.notes)
    assert outputs.metrics["cox_hazard_ratios"]["severity[severe]"] is None
    assert outputs.metrics["cox_hazard_ratios"]["age_years"] is not None


def test_a_library_warning_is_named_in_the_toolkits_words_not_quoted():
    def noisy() -> ModelResult:
        warnings.warn_explicit(
            "Newton-Raphson failed to converge sufficiently. Please see the following code:",
            RuntimeWarning,
            filename="/venv/site-packages/lifelines/fitters/coxph_fitter.py",
            lineno=1,
        )
        return ModelResult(fitted=None, coefficients=pd.DataFrame({"term": ["x"]}))

    outputs = FitOutputs()
    fit_regression(outputs, "demo", "demo model", (100, 1), {"min_events_per_parameter": 10}, noisy)
    ((model, kind, message),) = outputs.notes
    assert (model, kind) == ("demo", "RuntimeWarning")
    assert message == (
        "While fitting, lifelines raised a RuntimeWarning that the toolkit has no rule for; the "
        "numbers were kept, so check this model before relying on it."
    )
    assert outputs.status[0]["status"] == STATUS_FITTED


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
