"""Recovery timelines: profiles from a known Weibull AFT, quoted-range verdicts, calibration."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.derive import interval_censored_frame
from analysis.errors import DataError, ModelWarning, ParameterError
from analysis.schema import Recovery
from analysis.survival import fit_aft
from analysis.testing import assert_ci_contains_estimate
from analysis.timeline import (
    COMPARISON_COLUMNS,
    DAYS_PER_WEEK,
    TimelineModel,
    calibration_diagnostics,
    combined_verdict,
    compare_with_quoted_ranges,
    range_verdict,
    timeline_table,
    turnbull_quantiles,
)

# Log-day coefficients of the generating Weibull AFT, named as the fit names its terms. With
# these, a mild, recent, high-adherence case with no underlying condition fully recovers in a
# median of about 11 weeks, considerably longer than the 6-8 weeks the domain text quotes for
# such a case's first functional changes, and the cohort spans from about 7 weeks (10th
# percentile) to beyond the 40 weeks of follow-up (90th): as quoted.
AGREEING_MODEL = {
    "(Intercept)": 4.96,
    "overall_adherence": -1.0,
    "mean_sitting_hours": 0.06,
    "severity[moderate]": 0.3,
    "severity[severe]": 0.6,
    "chronic[True]": 0.35,
    "underlying_condition[disc]": 0.4,
    "underlying_condition[nerve_entrapment]": 0.45,
    "underlying_condition[other]": 0.2,
}
# The opposite story: quick recoveries (median ~3.5 weeks for the mild profile, everyone done by
# ~4 months), severe cases and disc/nerve problems faster rather than slower.
DISAGREEING_MODEL = {
    **AGREEING_MODEL,
    "(Intercept)": 3.79,
    "severity[moderate]": -0.2,
    "severity[severe]": -0.4,
    "underlying_condition[disc]": -0.3,
    "underlying_condition[nerve_entrapment]": -0.3,
}
TRUE_SCALE = 0.55
VISIT_EVERY_DAYS = 14
FOLLOW_UP_DAYS = 280
CONDITIONS = ("none", "disc", "nerve_entrapment", "other")


def true_log_time_mean(frame: pd.DataFrame, model: dict) -> np.ndarray:
    """The generating linear predictor X beta (log days) for each row."""
    linear = (
        model["(Intercept)"]
        + model["overall_adherence"] * frame[Recovery.overall_adherence].to_numpy(float)
        + model["mean_sitting_hours"] * frame[Recovery.mean_sitting_hours].to_numpy(float)
        + model["chronic[True]"] * frame[Recovery.chronic].to_numpy(float)
    )
    for column, levels in (
        (Recovery.severity, ("moderate", "severe")),
        (Recovery.underlying_condition, CONDITIONS[1:]),
    ):
        for level in levels:
            linear = linear + model[f"{column}[{level}]"] * (frame[column] == level).to_numpy(float)
    return linear


def true_quantile_weeks(frame: pd.DataFrame, model: dict, quantile: float) -> np.ndarray:
    offset = stats.gumbel_l.ppf(quantile)
    return np.exp(true_log_time_mean(frame, model) + TRUE_SCALE * offset) / DAYS_PER_WEEK


def simulate_recovery(
    n: int, seed: int, model: dict = AGREEING_MODEL, conditions=CONDITIONS
) -> pd.DataFrame:
    """A Recovery-like frame from a known Weibull AFT, seen at visits every 14 days.

    Recovery is detected at the first visit on or after it, so the bounds are (previous visit,
    that visit]; withdrawals (exponential, independent of recovery) and the end of follow-up at
    day 280 censor at the last visit before leaving.
    """
    rng = np.random.default_rng(seed)
    shares = {"none": 0.6, "disc": 0.15, "nerve_entrapment": 0.12, "other": 0.13}
    probabilities = np.array([shares[c] for c in conditions])
    frame = pd.DataFrame(
        {
            Recovery.participant_id: [f"P{i:05d}" for i in range(n)],
            Recovery.severity: rng.choice(["mild", "moderate", "severe"], n, p=[0.4, 0.38, 0.22]),
            Recovery.underlying_condition: rng.choice(
                list(conditions), n, p=probabilities / probabilities.sum()
            ),
            Recovery.symptom_months: np.where(
                rng.random(n) < 0.5, rng.uniform(0.5, 5.9, n), rng.uniform(6.1, 36, n)
            ),
            Recovery.overall_adherence: rng.beta(4, 2, n),
            Recovery.mean_sitting_hours: np.clip(rng.normal(7.0, 2.0, n), 1, 16),
        }
    )
    frame[Recovery.chronic] = frame[Recovery.symptom_months] >= 6
    true_days = np.exp(
        true_log_time_mean(frame, model) + TRUE_SCALE * stats.gumbel_l.rvs(size=n, random_state=rng)
    )
    withdrawal_day = rng.exponential(600.0, n)
    detected_day = np.ceil(true_days / VISIT_EVERY_DAYS) * VISIT_EVERY_DAYS
    recovered = (detected_day <= FOLLOW_UP_DAYS) & (detected_day <= withdrawal_day)
    exit_day = np.minimum(withdrawal_day, FOLLOW_UP_DAYS)
    last_visit = np.floor(exit_day / VISIT_EVERY_DAYS) * VISIT_EVERY_DAYS
    frame[Recovery.recovered] = recovered
    frame[Recovery.time_to_recovery_days] = np.where(recovered, detected_day, exit_day)
    frame[Recovery.interval_lower_days] = np.where(
        recovered, detected_day - VISIT_EVERY_DAYS, last_visit
    )
    frame[Recovery.interval_upper_days] = np.where(recovered, detected_day, np.nan)
    frame[Recovery.adherence_group] = pd.cut(
        frame[Recovery.overall_adherence],
        [-np.inf, 0.5, 0.8, np.inf],
        right=False,
        labels=["low", "moderate", "high"],
    ).astype(object)
    frame[Recovery.sitting_band] = pd.cut(
        frame[Recovery.mean_sitting_hours],
        [-np.inf, 6.0, 9.0, np.inf],
        right=False,
        labels=["low", "moderate", "high"],
    ).astype(object)
    return frame


def aft_fits(cohort: pd.DataFrame, params: dict) -> dict:
    """Each configured AFT distribution fitted to the cohort's intervals, as the fit stage does."""
    frame = interval_censored_frame(cohort)
    return {
        distribution: fit_aft(
            frame,
            params["fit"]["aft_covariates"],
            distribution=distribution,
            lower=Recovery.interval_lower_days,
            upper=Recovery.interval_upper_days,
        )
        for distribution in params["fit"]["aft_distributions"]
    }


def with_timeline(params: dict, **changes) -> dict:
    timeline = copy.deepcopy(params["timeline"])
    timeline.update(changes)
    return timeline


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return simulate_recovery(3000, seed=11)


@pytest.fixture(scope="module")
def timeline(cohort, params):
    return timeline_table(
        cohort,
        aft_fits(cohort, params),
        with_timeline(params, bootstrap_samples=25),
        params["derive"],
    )


@pytest.fixture(scope="module")
def calibration(cohort, params):
    return calibration_diagnostics(cohort, params["timeline"], params["fit"])


# ---- timeline table ------------------------------------------------------------------------


def test_weibull_is_chosen_by_aic_and_its_scale_recovered(timeline):
    assert timeline.distribution == "weibull"
    assert timeline.model.distribution == "weibull"
    comparison = timeline.model_comparison.set_index("distribution")
    assert comparison["aic"].idxmin() == "weibull"
    assert set(timeline.fitted) == {"weibull", "lognormal", "loglogistic"}
    assert timeline.model.scale == pytest.approx(TRUE_SCALE, rel=0.05)
    assert (timeline.tidy()["distribution"] == "weibull").all()


def test_one_row_per_profile_with_the_documented_columns(timeline, params):
    table = timeline.tidy()
    assert len(table) == 3 * 3 * 3 * 4 * 2
    assert not table.duplicated(params["timeline"]["profile_dimensions"]).any()
    for label in ("p10", "median", "p90"):
        assert_ci_contains_estimate(
            table, f"predicted_{label}_weeks", f"{label}_conf_low", f"{label}_conf_high"
        )
    ordered = table[["predicted_p10_weeks", "predicted_median_weeks", "predicted_p90_weeks"]]
    assert (ordered.diff(axis=1).iloc[:, 1:] > 0).all().all()
    assert (table["bootstrap_replicates"] == 25).all()
    # Everyone in the fit has every dimension, so the profiles partition the people.
    assert table["n_in_profile"].sum() == timeline.model.n_observations


def test_observed_median_only_for_profiles_with_enough_people(timeline, params):
    table = timeline.tidy()
    minimum = params["timeline"]["min_profile_size_for_observed"]
    small = table["n_in_profile"] < minimum
    assert table.loc[small, "observed_median_weeks"].isna().all()
    assert table.loc[small, "observed_note"].str.startswith("fewer than").all()
    large = table[table["n_in_profile"] >= 40]
    assert len(large) >= 10
    assert large["observed_median_weeks"].notna().all()
    # Turnbull puts mass at interval midpoints, so agreement is to about one visit (2 weeks).
    difference = (large["observed_median_weeks"] - large["predicted_median_weeks"]).abs()
    assert difference.median() < VISIT_EVERY_DAYS / DAYS_PER_WEEK


def test_profile_covariates_are_medians_within_group_and_band(timeline, cohort):
    table = timeline.tidy()
    informative = cohort[
        cohort[Recovery.interval_upper_days].notna() | (cohort[Recovery.interval_lower_days] > 0)
    ]
    for dimension, covariate in (
        (Recovery.adherence_group, Recovery.overall_adherence),
        (Recovery.sitting_band, Recovery.mean_sitting_hours),
    ):
        medians = informative.groupby(dimension)[covariate].median()
        used = table.groupby(dimension)[f"typical_{covariate}"].unique()
        for level, values in used.items():
            assert values.tolist() == [pytest.approx(medians[level])]


def test_predicted_quantiles_match_the_generating_model(timeline):
    table = timeline.tidy()
    for quantile, label in ((0.1, "p10"), (0.5, "median"), (0.9, "p90")):
        truth = true_quantile_weeks(
            table.rename(
                columns={
                    "typical_overall_adherence": Recovery.overall_adherence,
                    "typical_mean_sitting_hours": Recovery.mean_sitting_hours,
                }
            ),
            AGREEING_MODEL,
            quantile,
        )
        estimate = table[f"predicted_{label}_weeks"].to_numpy()
        np.testing.assert_allclose(estimate, truth, rtol=0.12)
        inside = (table[f"{label}_conf_low"] <= truth) & (truth <= table[f"{label}_conf_high"])
        # 95% percentile CIs from 25 replicates, over 216 correlated profiles: most cover.
        assert inside.mean() > 0.7


def test_table_predictions_are_the_aft_results_own(timeline):
    table = timeline.tidy()
    frame = table.rename(
        columns={
            "typical_overall_adherence": Recovery.overall_adherence,
            "typical_mean_sitting_hours": Recovery.mean_sitting_hours,
        }
    )
    reference = timeline.model.predict_quantiles(frame, (0.1, 0.5, 0.9)) / DAYS_PER_WEEK
    np.testing.assert_allclose(table["predicted_median_weeks"], reference[0.5], rtol=1e-12)
    np.testing.assert_allclose(table["predicted_p90_weeks"], reference[0.9], rtol=1e-12)


def test_bootstrap_is_reproducible_with_its_seed(params):
    cohort = simulate_recovery(500, seed=3)
    run = lambda seed: timeline_table(  # noqa: E731
        cohort,
        aft_fits(cohort, params),
        with_timeline(params, bootstrap_samples=5, seed=seed),
        params["derive"],
    ).tidy()
    first, again, other = run(1), run(1), run(2)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_series_equal(first["predicted_median_weeks"], other["predicted_median_weeks"])
    assert not np.allclose(first["median_conf_low"], other["median_conf_low"])


def test_people_without_covariates_are_left_out_with_a_model_warning(params):
    cohort = simulate_recovery(600, seed=5)
    cohort.loc[:9, Recovery.overall_adherence] = np.nan
    cohort.loc[:9, Recovery.adherence_group] = None
    with pytest.warns(ModelWarning, match="row\\(s\\) were left out"):
        fits = aft_fits(cohort, params)
    with pytest.warns(ModelWarning, match="10 people without every AFT covariate"):
        result = timeline_table(
            cohort, fits, with_timeline(params, bootstrap_samples=0), params["derive"]
        )
    informative = cohort[Recovery.interval_upper_days].notna() | (
        cohort[Recovery.interval_lower_days] > 0
    )
    complete = cohort[Recovery.overall_adherence].notna()
    assert result.model.n_observations == (informative & complete).sum()
    assert result.tidy()["median_conf_low"].isna().all()


def test_a_level_missing_from_the_data_gets_no_prediction(params):
    cohort = simulate_recovery(800, seed=7, conditions=CONDITIONS[:3])
    result = timeline_table(
        cohort,
        aft_fits(cohort, params),
        with_timeline(params, bootstrap_samples=3),
        params["derive"],
    )
    table = result.tidy()
    other = table[table[Recovery.underlying_condition] == "other"]
    assert other["predicted_median_weeks"].isna().all()
    assert (other["predicted_note"] == "a level of this profile has no model estimate").all()
    assert table.loc[table.index.difference(other.index), "predicted_median_weeks"].notna().all()


def test_the_timeline_uses_the_fits_it_is_given_and_refuses_fits_of_other_data(cohort, params):
    fits = aft_fits(cohort, params)
    result = timeline_table(
        cohort, fits, with_timeline(params, bootstrap_samples=0), params["derive"]
    )
    assert all(result.fitted[name] is fit for name, fit in fits.items())
    with pytest.raises(DataError, match="fitted on other data"):
        timeline_table(
            cohort.iloc[:2000], fits, with_timeline(params, bootstrap_samples=0), params["derive"]
        )


def test_quantiles_without_a_median_are_a_parameter_error(cohort, params):
    with pytest.raises(ParameterError, match="include 0.5"):
        timeline_table(
            cohort,
            aft_fits(cohort, params),
            with_timeline(params, quantiles=[0.1, 0.9]),
            params["derive"],
        )


# ---- quoted ranges -------------------------------------------------------------------------


def mild_profile(timeline) -> int:
    return timeline.profile_index(
        severity="mild", chronic=False, adherence_group="high", underlying_condition="none"
    )


def test_quoted_ranges_agree_with_data_generated_like_the_domain_text(timeline, cohort, params):
    comparison = compare_with_quoted_ranges(timeline, cohort, params["timeline"])
    assert tuple(comparison.columns) == COMPARISON_COLUMNS
    assert len(comparison) == 4
    assert comparison["verdict"].tolist() == ["agree"] * 4, comparison.to_string()
    mild = comparison.iloc[0]
    assert "adherence_group=high" in mild["detail"] and "chronic=False" in mild["detail"]
    # Full recovery beyond the first changes' 6-8 weeks, on the CI; the profile's own people
    # (the observed median, with its CI) beside the model.
    assert 8 < mild["conf_low_weeks"] <= mild["estimate_weeks"] <= mild["conf_high_weeks"]
    assert mild["observed_conf_low_weeks"] <= mild["observed_weeks"]
    assert mild["observed_weeks"] <= mild["observed_conf_high_weeks"]
    assert mild["people"] == timeline.table.loc[mild_profile(timeline), "n_in_profile"]
    assert f"{mild['estimate_weeks']:.1f} weeks (95% CI" in mild["observed"]


def test_quoted_ranges_disagree_with_data_that_contradict_them(params):
    cohort = simulate_recovery(1500, seed=13, model=DISAGREEING_MODEL)
    contrary = timeline_table(
        cohort,
        aft_fits(cohort, params),
        with_timeline(params, bootstrap_samples=10),
        params["derive"],
    )
    comparison = compare_with_quoted_ranges(contrary, cohort, params["timeline"])
    assert comparison["verdict"].tolist() == ["disagree"] * 4, comparison.to_string()


# ---- calibration ---------------------------------------------------------------------------


def test_band_covers_about_eighty_percent_out_of_sample(calibration):
    summary = calibration.summary.set_index("metric")["value"]
    assert 0.72 <= summary["band_coverage"] <= 0.88
    assert 0.72 <= summary["band_coverage_determined"] <= 0.92


def test_concordance_and_brier_beat_chance_and_the_null_model(calibration):
    summary = calibration.summary.set_index("metric")["value"]
    assert summary["concordance"] > 0.65
    assert summary["integrated_brier_model"] < summary["integrated_brier_null"]
    assert summary["brier_skill"] > 0.1


def test_predicted_recovery_probabilities_match_the_observed(calibration, params):
    table = calibration.calibration_table
    weeks = params["timeline"]["calibration_weeks"]
    assert sorted(table["week"].unique()) == weeks
    assert table.groupby("week")["n"].sum().nunique() == 1
    assert table[["predicted", "observed"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["predicted"] - table["observed"]).abs().max() < 0.1
    summary = calibration.summary.set_index("metric")["value"]
    assert summary["calibration_mean_abs_error"] < 0.04


def test_calibration_is_reproducible_with_its_seed(params):
    cohort = simulate_recovery(500, seed=17)
    run = lambda seed: calibration_diagnostics(  # noqa: E731
        cohort, params["timeline"], params["fit"], seed=seed
    )
    first, again, other = run(1), run(1), run(2)
    pd.testing.assert_frame_equal(first.summary, again.summary)
    assert not first.predictions["fold"].equals(other.predictions["fold"])


# ---- the serialisable model ----------------------------------------------------------------


def test_timeline_model_round_trips_through_json(timeline):
    model = timeline.timeline_model
    restored = TimelineModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    assert restored.predict_weeks("severe", 0.6, 9, 14, "disc") == model.predict_weeks(
        "severe", 0.6, 9, 14, "disc"
    )


def test_predict_weeks_is_the_fitted_models_quantiles(timeline):
    person = pd.DataFrame(
        {
            Recovery.overall_adherence: [0.9],
            Recovery.mean_sitting_hours: [6.0],
            Recovery.severity: ["mild"],
            Recovery.chronic: [False],
            Recovery.underlying_condition: ["none"],
        }
    )
    expected = timeline.model.predict_quantiles(person).iloc[0] / DAYS_PER_WEEK
    predicted = timeline.timeline_model.predict_weeks("mild", 0.9, 6, symptom_months=3)
    np.testing.assert_allclose(predicted, expected.to_numpy(), rtol=1e-12)
    truth = [true_quantile_weeks(person, AGREEING_MODEL, q)[0] for q in (0.1, 0.5, 0.9)]
    np.testing.assert_allclose(predicted, truth, rtol=0.1)


def test_describe_range_quotes_the_rounded_numbers(timeline):
    model = timeline.timeline_model
    low, median, high = model.predict_weeks("mild", 0.9, 6, symptom_months=3)
    text = model.describe_range("mild", 0.9, 6, symptom_months=3)
    assert text.startswith("A mild, recent case (3 months) with 90 % adherence sitting 6 h a day:")
    assert f"typically recovers in about {round(median)} weeks;" in text
    assert f"8 in 10 people like this recover between {round(low)} and {round(high)} weeks" in text
    chronic = model.describe_range("severe", 0.6, 9.5, 14, "nerve_entrapment")
    assert chronic.startswith(
        "A severe, chronic case (14 months) with nerve entrapment and 60 % adherence sitting 9.5 h"
    )
    assert "months)." in chronic  # a 90th percentile beyond 26 weeks is also given in months


def test_describe_range_flags_extrapolation(timeline):
    text = timeline.timeline_model.describe_range("mild", 0.9, 20, symptom_months=3)
    assert "Sitting hours outside the range seen in the study" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"severity": "extreme"}, "unknown severity 'extreme'"),
        ({"adherence": 1.5}, "1.5 is outside \\[0, 1\\]"),
        ({"adherence": 90}, "e.g. 0.9 for 90 %"),
        ({"adherence": "high"}, "not a number"),
        ({"sitting_hours": -1}, "outside \\[0, 24\\]"),
        ({"sitting_hours": float("nan")}, "outside"),
        ({"symptom_months": -3}, "outside \\[0, 600\\]"),
        ({"underlying_condition": "hernia"}, "unknown underlying condition 'hernia'"),
        ({"chronic_after_months": 0}, "outside \\(0, 600\\]"),
    ],
)
def test_bad_inputs_are_data_errors(timeline, arguments, message):
    person = {"severity": "mild", "adherence": 0.9, "sitting_hours": 6.0, "symptom_months": 3}
    with pytest.raises(DataError, match=message):
        timeline.timeline_model.predict_weeks(**{**person, **arguments})


def test_a_broken_model_file_is_a_data_error(timeline):
    data = timeline.timeline_model.to_dict()
    with pytest.raises(DataError, match="missing coefficients"):
        TimelineModel.from_dict({k: v for k, v in data.items() if k != "coefficients"})
    with pytest.raises(DataError, match="unknown AFT distribution"):
        TimelineModel.from_dict({**data, "distribution": "gamma"})


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (6.5, 7.5, "agree"),  # the whole CI inside 6-8
        (6.0, 8.0, "agree"),  # the ends count as inside
        (8.5, 9.0, "disagree"),  # the whole CI above
        (2.0, 5.9, "disagree"),  # the whole CI below
        (5.0, 7.0, "inconclusive"),  # across the lower end
        (5.0, 9.0, "inconclusive"),  # across both ends
        (np.nan, 7.0, "undetermined"),
    ],
)
def test_a_verdict_reads_the_confidence_interval_against_the_quoted_range(low, high, verdict):
    assert range_verdict(low, high, 6.0, 8.0) == verdict


def test_open_ended_ranges_and_claims_of_several_parts():
    assert range_verdict(10.5, np.inf, 10.0) == "agree"  # "10+ weeks", CI open above
    assert range_verdict(9.5, 12.0, 10.0) == "inconclusive"
    assert combined_verdict(["agree", "agree"]) == "agree"
    assert combined_verdict(["agree", "inconclusive"]) == "inconclusive"
    assert combined_verdict(["inconclusive", "disagree"]) == "disagree"
    assert combined_verdict(["disagree", "undetermined"]) == "undetermined"


def test_turnbull_quantiles_carry_bootstrap_intervals_open_where_the_curve_ends(cohort):
    """The CI is a percentile bootstrap over people; a quantile the curve never reaches lies
    beyond its end (+inf), in the estimate and in the replicates alike."""
    people = interval_censored_frame(cohort).iloc[:400]
    found = turnbull_quantiles(
        people,
        Recovery.interval_lower_days,
        Recovery.interval_upper_days,
        [0.1, 0.5, 0.999],
        samples=40,
        rng=np.random.default_rng(3),
    )
    for quantile in (0.1, 0.5):
        interval = found[quantile]
        assert interval.conf_low <= interval.estimate <= interval.conf_high
        assert interval.conf_low < interval.conf_high and interval.replicates == 40
    assert found[0.1].conf_high <= found[0.5].conf_low
    never = found[0.999]
    assert np.isinf(never.estimate) and np.isinf(never.conf_high)
    assert never.text() == "beyond the end of follow-up (so is its 95% CI)"
    again = turnbull_quantiles(
        people,
        Recovery.interval_lower_days,
        Recovery.interval_upper_days,
        [0.5],
        samples=40,
        rng=np.random.default_rng(3),
    )
    assert again[0.5] == found[0.5]  # the seed decides every replicate
