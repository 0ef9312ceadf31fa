"""analysis.mixed: parity with lme4 1.1-31 and the warning/error paths of fit_mixed.

The references come from tests/data/mixed_lme4_references.R, which exported each data set
(tests/data/mixed_<dataset>.csv), fitted it with lmer and wrote every number with 17
significant digits to mixed_lme4_references.csv (fixef, sqrt(diag(vcov)), as.data.frame(VarCorr),
logLik, AIC, isSingular) and mixed_lme4_ranef.csv (ranef); its printed output, with
digits = 15, is mixed_lme4_references.Rout.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import mixed
from analysis.errors import ConvergenceError, ConvergenceWarning, DataError, ModelWarning
from analysis.mixed import MixedResult, fit_mixed, r_term_name
from analysis.results import TIDY_COLUMNS
from analysis.testing import assert_ci_contains_estimate, assert_close_to_reference

DATA = Path(__file__).parent / "data"
RTOL = 1e-3

# model name in the reference CSVs -> (data set, formula, group, re_formula, reml), the lmer call
# written the toolkit's way.
LME4_MODELS = {
    "sleepstudy_slopes_reml": ("sleepstudy", "Reaction ~ Days", "Subject", "~Days", True),
    "sleepstudy_slopes_ml": ("sleepstudy", "Reaction ~ Days", "Subject", "~Days", False),
    "sleepstudy_intercept_reml": ("sleepstudy", "Reaction ~ Days", "Subject", "1", True),
    "sleepstudy_dropout_slopes_reml": (
        "sleepstudy_dropout",
        "Reaction ~ Days",
        "Subject",
        "~Days",
        True,
    ),
    "orthodont_slopes_reml": ("orthodont", "distance ~ age * Sex", "Subject", "~age", True),
    "dyestuff_intercept_reml": ("dyestuff", "Yield ~ 1", "Batch", "1", True),
    "dyestuff2_intercept_reml": ("dyestuff2", "Yield ~ 1", "Batch", "1", True),
}


@cache
def dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"mixed_{name}.csv", dtype={"Subject": str, "Batch": str})


@cache
def lme4_references() -> pd.DataFrame:
    return pd.read_csv(DATA / "mixed_lme4_references.csv", keep_default_na=False)


@cache
def fitted_model(model: str) -> tuple[MixedResult, tuple[str, ...]]:
    """The toolkit's fit of one reference model, with the warnings it issued (fitted once)."""
    name, formula, group, re_formula, reml = LME4_MODELS[model]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_mixed(dataset(name), formula, group, re_formula=re_formula, reml=reml)
    return result, tuple(f"{w.category.__name__}: {w.message}" for w in caught)


def reference(model: str, quantity: str) -> pd.DataFrame:
    rows = lme4_references()
    selected = rows[(rows["model"] == model) & (rows["quantity"].str.startswith(quantity))]
    return selected.assign(value=selected["value"].astype(float))


def reference_value(model: str, quantity: str) -> float:
    return float(reference(model, quantity)["value"].item())


@pytest.mark.parametrize("model", list(LME4_MODELS))
def test_fixed_effects_and_standard_errors_match_lme4(model):
    """fixef(fit) and sqrt(diag(vcov(fit))), matched by R's term name."""
    result, _ = fitted_model(model)
    tidy = result.tidy().set_index("term")
    for quantity, column in (("estimate", "estimate"), ("std_error", "std_error")):
        expected = reference(model, quantity).set_index("term1")["value"]
        assert sorted(tidy.index) == sorted(expected.index)
        assert_close_to_reference(tidy.loc[expected.index, column], expected, rtol=RTOL)


@pytest.mark.parametrize("model", list(LME4_MODELS))
def test_variance_components_match_lme4_varcorr(model):
    """as.data.frame(VarCorr(fit)): variances, covariances, SDs, correlation, residual.

    Dyestuff2's between-batch variance is exactly 0 in lme4 (a boundary fit) and about 1e-9 here;
    a zero reference is compared on the scale of the residual SD instead of relatively.
    """
    result, _ = fitted_model(model)
    ours = result.random_effects_sd_cor.fillna("")
    residual_sd = np.sqrt(result.residual_variance)
    for quantity, column in (("varcorr_variance", "variance"), ("varcorr_sd_cor", "sd_cor")):
        expected = reference(model, quantity)
        assert len(expected) == len(ours)
        for row in expected.itertuples():
            group = row.quantity.split(":", 1)[1]
            match = ours[
                (ours.group == group) & (ours.term1 == row.term1) & (ours.term2 == row.term2)
            ]
            actual = float(match[column].item())
            if row.value == 0:
                zero_tolerance = RTOL * residual_sd * (residual_sd if column == "variance" else 1)
                assert abs(actual) <= zero_tolerance, (group, row.term1, column, actual)
            else:
                assert actual == pytest.approx(row.value, rel=RTOL), (group, row.term1, column)


@pytest.mark.parametrize("model", list(LME4_MODELS))
def test_log_likelihood_aic_and_singularity_match_lme4(model):
    """logLik(fit) (the REML criterion / -2 for REML fits), AIC(fit) and isSingular(fit)."""
    result, _ = fitted_model(model)
    assert result.log_likelihood == pytest.approx(
        reference_value(model, "log_likelihood"), rel=1e-6
    )
    assert result.aic == pytest.approx(reference_value(model, "aic"), rel=1e-6)
    assert result.singular == bool(reference_value(model, "singular"))
    assert result.converged


@pytest.mark.parametrize("model", list(LME4_MODELS))
def test_random_effects_match_lme4_ranef(model):
    """ranef(fit) (conditional modes = BLUPs), per group and term.

    A BLUP near 0 is compared absolutely, at RTOL times that term's random-effect SD.
    """
    result, _ = fitted_model(model)
    ranef = pd.read_csv(DATA / "mixed_lme4_ranef.csv", dtype={"group": str})
    expected = ranef[ranef["model"] == model].pivot(index="group", columns="term", values="value")
    ours = result.random_effects
    assert sorted(ours.index.astype(str)) == sorted(expected.index)
    assert sorted(ours.columns) == sorted(expected.columns)
    for term in expected.columns:
        term_sd = np.sqrt(result.random_effects_covariance.loc[term, term])
        np.testing.assert_allclose(
            ours.loc[expected.index, term],
            expected[term],
            rtol=RTOL,
            atol=RTOL * max(term_sd, 1e-8),
        )


def test_statsmodels_bse_fe_would_miss_lme4_on_unbalanced_random_slopes():
    """On sleepstudy with dropout statsmodels' Hessian-based bse_fe is ~6 % off lme4; ours is not.

    R: lmer(Reaction ~ Days + (Days | Subject), sleepstudy_dropout_data) gives
    sqrt(diag(vcov(fit))) = 7.6394272999687614, 2.0336756617107907.
    """
    model = "sleepstudy_dropout_slopes_reml"
    result, _ = fitted_model(model)
    expected = reference(model, "std_error").set_index("term1")["value"]
    assert expected.to_dict() == pytest.approx(
        {"(Intercept)": 7.6394272999687614, "Days": 2.0336756617107907}, rel=1e-15
    )
    statsmodels_se = pd.Series(
        np.asarray(result.fitted.bse_fe),
        index=[r_term_name(n) for n in result.fitted.model.exog_names],
    )
    statsmodels_error = (statsmodels_se / expected - 1).abs()
    ours_error = (result.tidy().set_index("term")["std_error"] / expected - 1).abs()
    assert statsmodels_error.max() > 10 * RTOL
    assert ours_error.max() < RTOL


def test_rows_with_missing_values_are_dropped_with_a_counted_note():
    """The dropout data set has Reaction missing after dropout; lmer's na.omit drops 72 rows."""
    result, caught = fitted_model("sleepstudy_dropout_slopes_reml")
    message = "72 of 180 rows dropped for missing values in Reaction, Days, Subject"
    assert result.notes == [message]
    assert caught == (f"ModelWarning: {message}",)
    assert result.n_observations == 108
    assert result.n_groups == 18


def test_singular_fit_warns_by_name_and_still_matches_lme4():
    """Dyestuff2: lme4 reports 'boundary (singular) fit'; the fit is kept with a named warning."""
    result, caught = fitted_model("dyestuff2_intercept_reml")
    assert result.singular
    assert any("singular fit" in note for note in result.notes)
    assert any(text.startswith("ConvergenceWarning: singular fit") for text in caught)


def test_well_posed_reference_fits_issue_no_warning():
    for model in LME4_MODELS:
        if model in {"sleepstudy_dropout_slopes_reml", "dyestuff2_intercept_reml"}:
            continue
        result, caught = fitted_model(model)
        assert caught == () and result.notes == [], model


def test_tiny_frame_with_identical_groups_warns_instead_of_returning_nan():
    """Three groups with the same trajectory: no between-group variance, a singular fit."""
    frame = pd.DataFrame(
        {"y": [1.0, 2.0, 4.0] * 3, "x": [0.0, 1.0, 2.0] * 3, "g": list("aaabbbccc")}
    )
    with pytest.warns(ConvergenceWarning, match="singular fit"):
        result = fit_mixed(frame, "y ~ x", "g", re_formula="~x")
    assert result.singular
    assert np.isfinite(result.tidy()[["estimate", "std_error"]].to_numpy()).all()
    assert np.isfinite(result.log_likelihood)


def test_optimizer_that_stops_early_is_noted_not_silent(monkeypatch):
    """With one bfgs iteration allowed nothing converges: the best fit is kept with a note."""
    monkeypatch.setattr(mixed, "OPTIMIZER_ATTEMPTS", (("bfgs", {"maxiter": 1}),))
    with pytest.warns(ConvergenceWarning, match="no optimizer converged"):
        result = fit_mixed(dataset("orthodont"), "distance ~ age * Sex", "Subject", "~age")
    assert not result.converged
    assert any("no optimizer converged (bfgs)" in note for note in result.notes)


def test_response_reproduced_by_fixed_effects_raises_convergence_error():
    frame = pd.DataFrame({"y": [1.0] * 6, "x": [0.0, 1.0, 2.0] * 2, "g": list("aaabbb")})
    with pytest.raises(ConvergenceError, match="no residual variance"):
        fit_mixed(frame, "y ~ x", "g", re_formula="~x")


@pytest.mark.parametrize(
    ("frame", "re_formula", "message"),
    [
        (
            pd.DataFrame({"y": [1.0, 2.0, 0.5, 3.0], "x": [0, 1, 2, 3], "g": list("aaaa")}),
            "1",
            "> 1 sampled level",
        ),
        (
            pd.DataFrame({"y": [1.0, 2.0, 0.5, 3.0], "x": [0, 1, 2, 3], "g": list("abcd")}),
            "1",
            "must be < number of observations",
        ),
        (
            pd.DataFrame({"y": [1.0, 2.0, 0.5, 3.0], "x": [0, 1, 0, 1], "g": list("aabb")}),
            "~x",
            "number of random effects",
        ),
    ],
    ids=["one_group", "one_row_per_group", "as_many_random_effects_as_rows"],
)
def test_lme4_identifiability_checks_raise(frame, re_formula, message):
    with pytest.raises(DataError, match=message):
        fit_mixed(frame, "y ~ x", "g", re_formula=re_formula)


def test_missing_group_column_is_a_data_error():
    with pytest.raises(DataError, match="participant_id"):
        fit_mixed(dataset("sleepstudy"), "Reaction ~ Days", "participant_id")


@pytest.mark.parametrize(
    ("spellings", "random_terms"),
    [
        (["1", "~1", " ~ 1 "], ["(Intercept)"]),
        (["~Days", "Days", "1 + Days"], ["(Intercept)", "Days"]),
    ],
)
def test_re_formula_spellings_give_the_same_fit(spellings, random_terms):
    fits = [fit_mixed(dataset("sleepstudy"), "Reaction ~ Days", "Subject", s) for s in spellings]
    for result in fits:
        assert list(result.random_effects_covariance.columns) == random_terms
        assert list(result.random_effects.columns) == random_terms
        pd.testing.assert_frame_equal(result.tidy(), fits[0].tidy())


def test_tidy_has_wald_columns_with_normal_p_values():
    result, _ = fitted_model("orthodont_slopes_reml")
    tidy = result.tidy()
    assert tuple(tidy.columns) == TIDY_COLUMNS
    assert_ci_contains_estimate(tidy)
    np.testing.assert_allclose(tidy["statistic"], tidy["estimate"] / tidy["std_error"])
    np.testing.assert_allclose(tidy["p_value"], 2 * stats.norm.sf(tidy["statistic"].abs()))
    np.testing.assert_allclose(
        tidy["conf_high"] - tidy["estimate"], stats.norm.ppf(0.975) * tidy["std_error"]
    )


def test_predict_gives_population_trajectories_for_new_frames():
    """X beta with random effects at 0: from fixef(fit) for the Orthodont interaction model."""
    result, _ = fitted_model("orthodont_slopes_reml")
    beta = result.tidy().set_index("term")["estimate"]
    new = pd.DataFrame(
        {"age": [8.0, 14.0, np.nan, 10.0], "Sex": ["Female", "Male", "Male", "Male"]},
        index=[10, 11, 12, 13],
    )
    expected = [
        beta["(Intercept)"] + 8 * beta["age"],
        beta["(Intercept)"] + beta["SexMale"] + 14 * (beta["age"] + beta["age:SexMale"]),
        np.nan,
        beta["(Intercept)"] + beta["SexMale"] + 10 * (beta["age"] + beta["age:SexMale"]),
    ]
    predicted = result.predict(new)
    assert list(predicted.index) == [10, 11, 12, 13]
    np.testing.assert_allclose(predicted, expected)
    training = result.predict()
    assert len(training) == result.n_observations
    male_intercept, male_slope = (
        beta["(Intercept)"] + beta["SexMale"],
        beta["age"] + beta["age:SexMale"],
    )
    # The first rows are subject M01 at ages 8 and 10.
    np.testing.assert_allclose(
        training.iloc[:2], [male_intercept + 8 * male_slope, male_intercept + 10 * male_slope]
    )


def test_result_keeps_statsmodels_object_and_named_covariances():
    result, _ = fitted_model("sleepstudy_slopes_reml")
    assert result.fitted.__class__.__name__ == "MixedLMResultsWrapper"
    assert list(result.random_effects_covariance.index) == ["(Intercept)", "Days"]
    assert list(result.fixed_effects_covariance.index) == ["(Intercept)", "Days"]
    assert result.random_effects.index.name == "Subject"
    assert result.optimizer in {name for name, _ in mixed.OPTIMIZER_ATTEMPTS}
    assert issubclass(ConvergenceWarning, ModelWarning)


@pytest.mark.parametrize(
    ("statsmodels_name", "r_name"),
    [
        ("Intercept", "(Intercept)"),
        ("week", "week"),
        ("Sex[T.Male]", "SexMale"),
        ("week:adherence_group[T.high]", "week:adherence_grouphigh"),
        ("C(site)[T.B]", "C(site)B"),
        ("flag[T.True]", "flagTRUE"),
        ("site[north]", "sitenorth"),
    ],
)
def test_term_names_follow_r_model_matrix(statsmodels_name, r_name):
    assert r_term_name(statsmodels_name) == r_name
