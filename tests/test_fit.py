"""The fit stage on a simulated study: every configured model runs and reports tidy tables."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import analysis.fit as fit_module
from analysis.cli import app
from analysis.errors import ModelWarning, ParameterError
from analysis.fit import (
    STATUS_FITTED,
    STATUS_NOT_FITTED,
    STATUS_PARTLY_ESTIMABLE,
    FitOutputs,
    baseline_cox_model,
    fit_regression,
    landmark_adherence,
    primary_frame,
    regroup_adherence,
    run_models,
    site_comparison_models,
    unadjusted_fine_gray_models,
)
from analysis.io import DERIVED_FRAMES, read_stage_frames
from analysis.privacy import site_groups_left_out, site_plan
from analysis.results import HAZARD_RATIO_COLUMNS, REFERENCE_COLUMN, TIDY_COLUMNS, ModelResult
from analysis.survival import fit_aft, fit_cox
from analysis.timeline import VERDICTS, turnbull_quantiles
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
    "cox_unadjusted",
    "cox_ph_test",
    "cox_time_varying",
    "turnbull_curves",
    "turnbull_survival_at",
    "cumulative_incidence",
    "fine_gray",
    "fine_gray_unadjusted",
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
    params = {
        "cox_covariates": ["age_years", "severity"],
        "min_events_per_parameter": 10,
        "reference_levels": {"severity": "mild"},
    }
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
    params = {
        "cox_covariates": ["age_years", "severity"],
        "min_events_per_parameter": 10,
        "reference_levels": {"severity": "mild"},
    }
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
        estimated = table[~table[REFERENCE_COLUMN]]
        assert estimated[list(TIDY_COLUMNS[1:])].notna().all().all(), name
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


PRIMARY_TABLES = {
    "primary_effects",
    "primary_baseline_hazard",
    "primary_lag_sensitivity",
    "landmark_counts",
    "landmark_groups",
    "landmark_cox",
}


def test_the_primary_model_writes_effects_in_clinical_units(fitted):
    written = {p.stem for p in (fitted / "models").glob("*.csv")}
    assert written >= PRIMARY_TABLES
    effects = pd.read_csv(fitted / "models" / "primary_effects.csv").set_index("term")
    assert effects.loc["underlying_condition[none]", "unit"] == "reference level"
    assert list(effects.reset_index().columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert set(HAZARD_RATIO_COLUMNS) <= set(effects.columns)
    assert effects.loc["weekly_adherence", "unit"] == "per 10 percentage points of weekly adherence"
    assert effects.loc["weekly_adherence", "conf_method"] == "profile likelihood"
    assert effects.loc["underlying_condition[disc]", "unit"] == "disc vs none"
    assert effects.loc["chronic[True]", "unit"] == "chronic vs not chronic"
    # Per 10 points: a tenth of the per-unit log hazard ratio, a sensible size here.
    assert 0.1 < effects.loc["weekly_adherence", "estimate"] < 0.35
    assert effects.loc["weekly_sitting_hours", "hazard_ratio"] < 1
    # Both columns are published to 6 significant digits.
    np.testing.assert_allclose(effects["hazard_ratio"], np.exp(effects["estimate"]), rtol=1e-5)
    lags = pd.read_csv(fitted / "models" / "primary_lag_sensitivity.csv")
    assert sorted(lags["lag_weeks"].unique()) == [0, 1, 2]


def test_landmark_counts_add_up(fitted):
    counts = pd.read_csv(fitted / "models" / "landmark_counts.csv")
    assert (
        counts["people"]
        == counts["outcome_before_landmark"] + counts["no_adherence"] + counts["kept"]
    ).all()
    groups = pd.read_csv(fitted / "models" / "landmark_groups.csv")
    for weeks, table in groups.groupby("landmark_weeks"):
        kept = counts.set_index("landmark_weeks").loc[weeks, "kept"]
        assert table["n"].sum() == kept
    cox = pd.read_csv(fitted / "models" / "landmark_cox.csv").set_index(["landmark_weeks", "term"])
    assert (cox.xs("landmark_adherence", level="term")["estimate"] > 0).all()


def fit_only(fitted, models, metrics, families: str):
    """`ga-rehab fit --only families` on the fitted study's frames, into `models`."""
    arguments = ["fit", "--processed", fitted / "processed", "--models", models]
    arguments += ["--metrics", metrics, "--params", PROJECT_ROOT / "params.yaml"]
    return CliRunner().invoke(
        app, [str(a) for a in [*arguments, "--only", families]], catch_exceptions=False
    )


def test_fit_only_refits_the_named_families_and_keeps_the_rest(fitted, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(fitted / "models", models)
    metrics = tmp_path / "metrics.json"
    shutil.copy(fitted / "metrics.json", metrics)
    (models / "primary_effects.csv").unlink()
    cox_before = (models / "cox.csv").stat().st_mtime_ns
    result = fit_only(fitted, models, metrics, "primary")
    assert result.exit_code == 0, result.output
    assert (models / "primary_effects.csv").is_file()
    assert (models / "cox.csv").stat().st_mtime_ns == cox_before
    kept = json.loads(metrics.read_text())
    assert "cox_concordance" in kept and "primary_hazard_ratios" in kept
    unknown = fit_only(fitted, models, metrics, "primry")
    assert unknown.exit_code == 1 and "primry" in unknown.output


def test_lag_shifts_adherence_within_each_person():
    intervals = pd.DataFrame(
        {
            "participant_id": ["a"] * 4 + ["b"] * 2,
            "start": [0.0, 7, 14, 21, 0, 7],
            "stop": [7.0, 14, 21, 28, 7, 10],
            "event": [False, False, False, True, False, True],
            "weekly_adherence": [0.1, 0.2, 0.3, 0.4, 0.9, 0.8],
            "weekly_sitting_hours": [8.0, 8, 8, 8, 6, 6],
            "phase": [1, 1, 2, 2, 1, 1],
        }
    )
    recovery = pd.DataFrame(
        {
            "participant_id": ["a", "b"],
            "interval_lower_days": [14.0, 0.0],
            "interval_upper_days": [28.0, 10.0],
            "severity": ["mild", "severe"],
        }
    )
    spec = {"covariates": ["weekly_adherence", "severity"], "lagged": ["weekly_adherence"]}
    lagged = primary_frame(intervals, recovery, spec, lag_weeks=2)
    # Before a lagged week exists, the first week's value stands in.
    assert lagged["weekly_adherence"].tolist() == [0.1, 0.1, 0.1, 0.2, 0.9, 0.9]
    assert lagged["weekly_sitting_hours"].tolist() == intervals["weekly_sitting_hours"].tolist()
    # A value missing in the lagged week stays missing (no silent fill).
    gappy = intervals.assign(weekly_adherence=[0.1, np.nan, 0.3, 0.4, 0.9, 0.8])
    one_week = primary_frame(gappy, recovery, spec, lag_weeks=1)["weekly_adherence"]
    assert np.isnan(one_week.iloc[2])
    assert one_week.iloc[3] == 0.3 and one_week.iloc[1] == 0.1
    assert primary_frame(intervals, recovery, spec)["weekly_adherence"].tolist() == [
        0.1,
        0.2,
        0.3,
        0.4,
        0.9,
        0.8,
    ]


def test_landmark_uses_the_first_weeks_and_excludes_earlier_outcomes():
    intervals = pd.DataFrame(
        {
            "participant_id": ["a"] * 3 + ["b"] * 1 + ["c"] * 3,
            "start": [0.0, 7, 14, 0, 0, 7, 14],
            "stop": [7.0, 14, 20, 5, 7, 14, 21],
            "weekly_adherence": [0.2, 0.4, 1.0, 0.9, 0.9, 0.7, 0.0],
        }
    )
    recovery = pd.DataFrame(
        {
            "participant_id": ["a", "b", "c"],
            "time_to_recovery_days": [20.0, 5.0, 21.0],
            "recovered": [True, True, False],
            "interval_lower_days": [10.0, 0.0, 21.0],
            "interval_upper_days": [20.0, 5.0, np.nan],
        }
    )
    landmark = landmark_adherence(recovery, intervals, 2, [0.5, 0.8], ["low", "mid", "high"])
    frame = landmark.frame.set_index("participant_id")
    assert landmark.counts == {
        "landmark_weeks": 2,
        "people": 3,
        "outcome_before_landmark": 1,
        "no_adherence": 0,
        "kept": 2,
    }
    assert frame.loc["a", "landmark_adherence"] == pytest.approx(0.3)
    assert frame.loc["c", "landmark_group"] == "high"
    assert frame.loc["a", "time_to_recovery_days"] == 6.0
    assert frame.loc["a", "interval_lower_days"] == 0.0
    assert frame.loc["a", "interval_upper_days"] == 6.0


def test_both_milestones_get_kaplan_meier_the_primary_model_and_quoted_ranges(fitted, params):
    """Issue 11 item 7: first functional change and full recovery, each estimated and checked."""
    models = fitted / "models"
    medians = pd.read_csv(models / "milestone_km_medians.csv")
    assert set(medians["milestone"]) == {"first_change", "full_recovery"}
    overall = medians[medians["group"] == "all"].set_index("milestone")["median"]
    assert overall["first_change"] < overall["full_recovery"]
    effects = pd.read_csv(models / "milestone_primary_effects.csv")
    adherence = effects[effects["term"] == "weekly_adherence"].set_index("milestone")
    assert set(adherence.index) == {"first_change", "full_recovery"}
    assert (adherence["hazard_ratio"] > 1).all()
    full = pd.read_csv(models / "primary_effects.csv").set_index("term")
    assert adherence.loc["full_recovery", "estimate"] == full.loc["weekly_adherence", "estimate"]
    quotes = pd.read_csv(models / "milestone_quoted_ranges.csv")
    assert len(quotes) == len(params["fit"]["milestones"]["quoted"])
    assert set(quotes["verdict"]) <= set(VERDICTS)
    # Each verdict rests on the estimate's 95% CI: inside the range agree, outside disagree.
    assert (quotes["conf_low_weeks"] <= quotes["estimate_weeks"]).all()
    assert (quotes["estimate_weeks"] <= quotes["conf_high_weeks"]).all()
    inside = (quotes["conf_low_weeks"] >= quotes["quoted_low_weeks"]) & (
        quotes["conf_high_weeks"] <= quotes["quoted_high_weeks"]
    )
    outside = (quotes["conf_high_weeks"] < quotes["quoted_low_weeks"]) | (
        quotes["conf_low_weeks"] > quotes["quoted_high_weeks"]
    )
    assert (inside == (quotes["verdict"] == "agree")).all()
    assert (outside == (quotes["verdict"] == "disagree")).all()
    assert (~inside & ~outside == (quotes["verdict"] == "inconclusive")).all()


# Regression tables and the factors each codes against fit.reference_levels.
REGRESSION_TABLES = {
    "cox": ["severity", "chronic", "underlying_condition"],
    "cox_unadjusted": ["severity", "chronic", "underlying_condition"],
    "cox_time_varying": ["severity", "chronic", "underlying_condition"],
    "fine_gray": ["severity", "chronic", "underlying_condition"],
    "fine_gray_unadjusted": ["severity", "chronic", "underlying_condition"],
    "aft_coefficients": ["severity", "chronic", "underlying_condition"],
    "primary_effects": ["severity", "chronic", "underlying_condition"],
    "primary_unadjusted": ["severity", "chronic", "underlying_condition"],
    "primary_lag_sensitivity": ["severity", "chronic", "underlying_condition"],
    "landmark_cox": ["severity", "chronic", "underlying_condition"],
    "milestone_primary_effects": ["severity", "chronic", "underlying_condition"],
}


def test_every_regression_codes_factors_against_the_configured_reference_levels(fitted, params):
    """Reference rows name params.yaml's levels (mild, recent, no condition), not sorted-first."""
    references = params["fit"]["reference_levels"]
    for name, factors in REGRESSION_TABLES.items():
        table = pd.read_csv(fitted / "models" / f"{name}.csv")
        marked = table[table[REFERENCE_COLUMN]]
        for factor in factors:
            reference = f"{factor}[{references[factor]}]"
            assert reference in set(marked["term"]), (name, reference)
            # No estimated term is the reference level itself.
            assert reference not in set(table.loc[~table[REFERENCE_COLUMN], "term"]), name
        assert (marked["estimate"] == 0).all(), name
        if "hazard_ratio" in table:
            assert (marked["hazard_ratio"] == 1).all(), name
        assert marked[["std_error", "p_value", "conf_low", "conf_high"]].isna().all().all()
        # The reference row comes right before the factor's other levels.
        for row in marked.index:
            factor = marked.loc[row, "term"].split("[")[0]
            assert table.loc[row + 1, "term"].startswith(f"{factor}["), name


def test_every_regression_table_says_how_many_people_and_events_its_model_describes(fitted):
    status = pd.read_csv(fitted / "models" / "model_status.csv", keep_default_na=False)
    events_by_model = status.set_index("model")["events"]
    for name in REGRESSION_TABLES:
        table = pd.read_csv(fitted / "models" / f"{name}.csv")
        assert {"n", "events"} <= set(table.columns), name
        assert (table["events"] <= table["n"]).all() and (table["events"] > 0).all(), name
    cox = pd.read_csv(fitted / "models" / "cox.csv")
    assert cox["n"].nunique() == 1 and cox["events"].iloc[0] == events_by_model["cox"]
    aft = pd.read_csv(fitted / "models" / "aft_coefficients.csv")
    assert aft["events"].iloc[0] == events_by_model["aft_weibull"]


def test_unadjusted_estimates_are_one_covariate_at_a_time(fitted, params):
    """cox_unadjusted / primary_unadjusted: one model per covariate, each in model_status."""
    status = set(pd.read_csv(fitted / "models" / "model_status.csv")["model"])
    cox = pd.read_csv(fitted / "models" / "cox_unadjusted.csv")
    adjusted = pd.read_csv(fitted / "models" / "cox.csv")
    assert set(cox["term"]) == set(adjusted["term"])
    for covariate in params["fit"]["cox_covariates"]:
        assert f"cox_unadjusted_{covariate}" in status
    # Each model uses everyone with its covariate, so n differs where covariates are missing.
    assert cox["n"].max() >= adjusted["n"].iloc[0]
    primary = pd.read_csv(fitted / "models" / "primary_unadjusted.csv")
    effects = pd.read_csv(fitted / "models" / "primary_effects.csv")
    assert set(primary["term"]) == set(effects["term"])
    for covariate in params["fit"]["primary"]["covariates"]:
        assert f"primary_unadjusted_{covariate}" in status
    weekly = primary.set_index("term").loc["weekly_adherence"]
    assert weekly["unit"] == "per 10 percentage points of weekly adherence"
    assert weekly["conf_method"] == "profile likelihood"


def test_the_aft_family_is_fitted_once_for_the_aft_tables_and_the_timeline(
    fitted, params, monkeypatch
):
    """One run fits each AFT distribution once; the timeline compares and uses those fits."""
    frames = read_stage_frames(fitted / "processed", DERIVED_FRAMES, "derive")
    calls = []
    monkeypatch.setattr(
        fit_module, "fit_aft", lambda *a, **k: calls.append(k["distribution"]) or fit_aft(*a, **k)
    )
    quick = copy.deepcopy(params)
    quick["timeline"].update(bootstrap_samples=2, calibration_folds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelWarning)
        outputs = run_models(
            frames["recovery"],
            frames["weekly_intervals"],
            frames["weekly_trajectories"],
            quick,
            only=["aft", "timeline"],
        )
    assert calls == params["fit"]["aft_distributions"]
    pd.testing.assert_frame_equal(
        outputs.tables["timeline_model_comparison"], outputs.tables["aft_models"]
    )


def _run_quietly(frames: dict, params: dict, **options) -> FitOutputs:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelWarning)
        return run_models(
            frames["recovery"],
            frames["weekly_intervals"],
            frames["weekly_trajectories"],
            params,
            **options,
        )


def test_two_processes_give_the_outputs_of_one(fitted, params):
    """The families of the second process come back as one process fits them: every table,
    metric, note and status row, in the configured order."""
    frames = read_stage_frames(fitted / "processed", DERIVED_FRAMES, "derive")
    quick = copy.deepcopy(params)
    quick["timeline"].update(bootstrap_samples=3, calibration_folds=2)
    only = ["kaplan_meier", "milestones", "aft", "timeline", "site_comparison"]
    assert set(fit_module.SECOND_PROCESS_FAMILIES) < set(only)
    one = _run_quietly(frames, quick, only=only)
    two = _run_quietly(frames, quick, only=only, processes=2)
    assert list(two.tables) == list(one.tables)
    for name, table in one.tables.items():
        pd.testing.assert_frame_equal(two.tables[name], table, check_exact=True)
    assert two.metrics == one.metrics
    assert two.notes == one.notes
    assert two.status == one.status
    assert two.timeline_model == one.timeline_model


def test_quoted_claims_about_the_same_people_share_one_bootstrap(fitted, params, monkeypatch):
    """The milestones' claims estimate one Turnbull curve and one bootstrap per milestone and
    profile, whatever number of claims (quantiles) rest on it."""
    frames = read_stage_frames(fitted / "processed", DERIVED_FRAMES, "derive")
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[3])
        return turnbull_quantiles(*args, **kwargs)

    monkeypatch.setattr(fit_module, "turnbull_quantiles", counted)
    _run_quietly(frames, params, only=["milestones"])
    quoted = params["fit"]["milestones"]["quoted"]
    people = {(claim["milestone"], str(sorted(claim["profile"].items()))) for claim in quoted}
    assert len(calls) == len(people) < len(quoted)
    assert sum(len(quantiles) for quantiles in calls) == len(quoted)


def test_with_two_processes_the_error_raised_is_the_one_of_the_first_failing_family(
    fitted, params, monkeypatch
):
    """An error that is not the toolkit's stops the stage, as in one process: the family that
    comes first in fit.families (site_comparison, fitted in the second process) names it, not
    the later adherence_grouping fitted in the first."""
    frames = read_stage_frames(fitted / "processed", DERIVED_FRAMES, "derive")

    def failing(error):
        def fit(*args, **kwargs):
            raise error

        return fit

    monkeypatch.setattr(fit_module, "site_comparison_models", failing(ValueError("site")))
    monkeypatch.setattr(fit_module, "adherence_grouping_models", failing(KeyError("grouping")))
    only = ["kaplan_meier", "site_comparison", "adherence_grouping"]
    for processes in (1, 2):
        with pytest.raises(ValueError, match="site"):
            _run_quietly(frames, params, only=only, processes=processes)


def test_regroup_adherence_bands_are_left_closed():
    recovery = pd.DataFrame({"overall_adherence": [0.0, 0.59, 0.6, 0.89, 0.9, 1.2, None]})
    regrouped = regroup_adherence(recovery, [0.6, 0.9], ["a", "b", "c"])
    assert regrouped["adherence_group"].tolist() == ["a", "a", "b", "b", "c", "c", None]


@pytest.mark.parametrize(
    ("cutoffs", "labels", "message"),
    [
        ([0.5], ["a", "b", "c"], "need 2 labels"),
        ([0.8, 0.5], ["a", "b", "c"], "must increase"),
        ([0.5], ["a", "a"], "must differ"),
    ],
)
def test_regroup_adherence_rejects_inconsistent_groups(cutoffs, labels, message):
    recovery = pd.DataFrame({"overall_adherence": [0.1]})
    with pytest.raises(ParameterError, match=message):
        regroup_adherence(recovery, cutoffs, labels)


def test_each_site_gets_the_group_comparison_with_its_small_groups_left_out(fitted, params):
    """site_comparison: the study report's comparison per site that gets a report; the groups
    the site plan leaves out (fewer than min_cell_size people, and those hidden with them) are
    left out before fitting, so no table has a row for them or counts their people."""
    min_cell_size = params["report"]["min_cell_size"]
    recovery = pd.read_parquet(fitted / "processed" / "recovery.parquet")
    intervals = pd.read_parquet(fitted / "processed" / "weekly_intervals.parquet")
    first, second = sorted(recovery["site"].unique())[:2]
    recovery = recovery[recovery["site"].isin([first, second])].copy()
    # Three people of the first site form a group of their own; two people form a site.
    tiny = recovery.index[recovery["site"] == first][:3]
    recovery.loc[tiny, "adherence_group"] = "tiny"
    recovery.loc[recovery.index[recovery["site"] == second][:2], "site"] = "two people"
    outputs = FitOutputs()
    site_comparison_models(recovery, intervals, params["fit"], min_cell_size, outputs)
    tables = outputs.tables
    assert set(tables["site_km_medians"]["site"]) == {first, second}
    counts, plan = site_plan(recovery, "site", "adherence_group", min_cell_size)
    planned = {
        (site, group)
        for site in (first, second)
        for group in site_groups_left_out(plan, counts, site)
    }
    left_out = tables["site_suppressed_groups"]
    assert set(zip(left_out["site"], left_out["group"], strict=True)) == planned
    assert (first, "tiny") in planned
    for name in ("km_curves", "km_at_risk", "km_medians", "cumulative_incidence", "rmst_groups"):
        table = tables[f"site_{name}"]
        assert list(table.columns)[0] == "site", name
        for site, group in planned:
            assert group not in set(table.loc[table["site"] == site, "group"]), name
    medians = tables["site_km_medians"].set_index(["site", "group"])["n"]
    overall = tables["site_km_curves_overall"].groupby("site")["n_risk"].first()
    for site in (first, second):
        shown = recovery[
            (recovery["site"] == site)
            & recovery["adherence_group"].notna()
            & ~recovery["adherence_group"].isin([g for s, g in planned if s == site])
        ]
        assert medians.loc[site].drop("all").sum() == len(shown)
        # The whole-cohort curve of a site is of everyone its report shows, no one else.
        assert overall[site] == len(shown)
    assert "site_turnbull_curves" in tables
    # Each site's regressions have a status (a site of ~50 people is too small for the Cox model).
    status = tables["site_model_status"]
    unadjusted = [f"cox_unadjusted_{term}" for term in params["fit"]["cox_covariates"]]
    assert set(zip(status["site"], status["model"], strict=True)) == {
        (site, model)
        for site in (first, second)
        for model in ("cox", "cox_time_varying", *unadjusted)
    }


def test_the_trial_teams_grouping_is_fitted_with_the_groups_in_the_cox_model(fitted, params):
    spec = params["fit"]["adherence_grouping"]
    models = fitted / "models"
    definition = pd.read_csv(models / "adherence_grouping_definition.csv")
    assert definition["group"].tolist() == spec["labels"]
    assert definition["lower"].dropna().tolist() == spec["cutoffs"]
    assert definition["upper"].dropna().tolist() == spec["cutoffs"]
    cox = pd.read_csv(models / "adherence_grouping_cox.csv")
    assert any(term.startswith("adherence_group") for term in cox["term"])
    assert "overall_adherence" not in set(cox["term"])
    medians = pd.read_csv(models / "adherence_grouping_km_medians.csv")
    assert medians["group"].tolist()[:-1] == spec["labels"]


def test_the_grouping_is_refitted_with_each_cut_off_moved_on_its_own(fitted, params):
    """adherence_grouping_sensitivity: the grouping as set (its medians are the grouping's own
    Kaplan-Meier medians) and each cut-off moved by each shift, where the cut-offs stay
    increasing; each hazard ratio is a Cox model with the regrouped groups only."""
    spec = params["fit"]["adherence_grouping"]
    models = fitted / "models"
    table = pd.read_csv(models / "adherence_grouping_sensitivity.csv")
    moved = len(spec["cutoffs"]) * len(spec["sensitivity_shifts"])
    assert table["grouping"].nunique() == 1 + moved
    as_set = table[table["grouping"] == "as set"].set_index("group")
    medians = pd.read_csv(models / "adherence_grouping_km_medians.csv").set_index("group")
    for group in spec["labels"]:
        assert as_set.loc[group, "median"] == medians.loc[group, "median"]
    assert as_set.loc[spec["labels"][0], "hazard_ratio"] == 1.0
    recovery = pd.read_parquet(fitted / "processed" / "recovery.parquet")
    row = table[table["grouping"] == "low/moderate cut-off +0.05"].set_index("group")
    assert row["cutoffs"].iloc[0] == "0.55, 0.8"
    regrouped = regroup_adherence(recovery, [0.55, 0.8], spec["labels"], "adherence_group")
    regrouped = regrouped[regrouped["adherence_group"].notna()]
    cox = (
        fit_cox(
            regrouped,
            "time_to_recovery_days",
            "recovered",
            ["adherence_group"],
            reference_levels={"adherence_group": "low"},
        )
        .tidy()
        .set_index("term")
    )
    assert row.loc["high", "hazard_ratio"] == pytest.approx(
        np.exp(cox.loc["adherence_group[high]", "estimate"]), rel=1e-5
    )
    assert (row["n"].sum()) == len(regrouped)


def test_unadjusted_fine_gray_agrees_with_crr_one_covariate_at_a_time():
    """fine_gray_unadjusted against cmprsk::crr with each covariate alone (R code and numbers:
    tests/data/finegray_unadjusted_reference.R and finegray_unadjusted_crr.csv)."""
    cohort = pd.read_csv(PROJECT_ROOT / "tests" / "data" / "finegray_unadjusted_cohort.csv")
    reference = pd.read_csv(PROJECT_ROOT / "tests" / "data" / "finegray_unadjusted_crr.csv")
    params = {
        "fine_gray_covariates": list(dict.fromkeys(reference["covariate"])),
        "min_events_per_parameter": 10,
        "reference_levels": {"severity": "mild", "chronic": False, "underlying_condition": "none"},
    }
    outputs = FitOutputs()
    unadjusted_fine_gray_models(cohort, params, outputs)
    table = outputs.tables["fine_gray_unadjusted"]
    estimated = table[~table[REFERENCE_COLUMN]].set_index("term")
    for row in reference.itertuples():
        level = row.term.removeprefix(row.covariate)
        term = row.covariate if not level else f"{row.covariate}[{level}]"
        assert estimated.loc[term, "estimate"] == pytest.approx(row.estimate, rel=1e-6, abs=1e-9)
        assert estimated.loc[term, "std_error"] == pytest.approx(row.std_error, rel=1e-5)
        assert estimated.loc[term, "n"] == row.n
    # Each model its own people and events; reference rows as clinicians read them.
    sitting = estimated.loc["mean_sitting_hours"]
    used = cohort[cohort["mean_sitting_hours"].notna()]
    assert sitting["events"] == (used["event_type"] == "recovered").sum()
    marked = set(table.loc[table[REFERENCE_COLUMN], "term"])
    assert marked == {"severity[mild]", "chronic[False]", "underlying_condition[none]"}
    models = {status["model"] for status in outputs.status}
    assert models == {f"fine_gray_unadjusted_{c}" for c in params["fine_gray_covariates"]}


def test_fit_command_imports_neither_hypothesis_nor_scipy_stats(fitted, tmp_path):
    """Start-up costs the fit command does not need: pandera imports hypothesis (a dev
    dependency, ~0.6 s) on its first validation, scipy.stats ~0.3 s for functions that
    scipy.special has (analysis.distributions). Every family in this one process."""
    script = (
        "import os, sys\n"
        "os.cpu_count = lambda: 1\n"
        "from analysis.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "finally:\n"
        "    print(sorted({'hypothesis', 'scipy.stats'} & set(sys.modules)), file=sys.stderr)\n"
    )
    arguments = ["fit", "--processed", fitted / "processed", "--models", tmp_path / "models"]
    arguments += ["--metrics", tmp_path / "metrics.json", "--params", PROJECT_ROOT / "params.yaml"]
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
