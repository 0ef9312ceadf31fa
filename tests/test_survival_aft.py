"""Parametric AFT models against R's survreg (survival 3.5-3).

References: tests/data/aft_reference.R wrote aft_coefficients.csv, aft_fits.csv and
aft_quantiles.csv from the datasets it exported beside them (lung, ovarian, veteran, and an
interval-censored lung on a 30-day visit grid), e.g.
    survreg(Surv(time, status) ~ age + sex + ph_ecog, data = lung_data, dist = "weibull")
    survreg(Surv(ifelse(lower == 0, NA, lower), upper, type = "interval2") ~ age + sex + ph_ecog,
            data = lung_interval, dist = "loglogistic")
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import ConvergenceError, DataError, ModelWarning
from analysis.results import ESTIMABILITY_COLUMNS, TIDY_COLUMNS
from analysis.survival import aft
from analysis.survival.aft import AftResult, fit_aft
from analysis.testing import assert_ci_contains_estimate, assert_close_to_reference

DATA = Path(__file__).parent / "data"
DISTRIBUTIONS = ("weibull", "lognormal", "loglogistic")
MODELS = {
    "lung": ("aft_lung.csv", ["age", "sex", "ph_ecog"], {"duration": "time", "event": "status"}),
    "ovarian": (
        "aft_ovarian.csv",
        ["age", "rx", "ecog_ps"],
        {"duration": "futime", "event": "fustat"},
    ),
    "veteran": (
        "aft_veteran.csv",
        ["karno", "celltype", "trt"],
        {"duration": "time", "event": "status"},
    ),
    "lung_interval": (
        "aft_lung_interval.csv",
        ["age", "sex", "ph_ecog"],
        {"lower": "lower", "upper": "upper"},
    ),
}
# Achieved: largest relative difference ~1e-7 (standard errors), ~1e-8 elsewhere.
RTOL = 1e-5


@cache
def dataset(model: str) -> pd.DataFrame:
    return pd.read_csv(DATA / MODELS[model][0])


@cache
def fitted(model: str, distribution: str) -> tuple[AftResult, tuple[str, ...]]:
    """The fit and the warnings it raised (lung has one missing ph_ecog)."""
    _, covariates, outcome = MODELS[model]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_aft(dataset(model), covariates, distribution, **outcome)
    return result, tuple(str(warning.message) for warning in caught)


def r_term(term: str) -> str:
    """design_matrix's ``sex[male]`` is R's ``sexmale``."""
    return term.replace("[", "").replace("]", "")


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_coefficients_match_survreg(model: str, distribution: str) -> None:
    reference = pd.read_csv(DATA / "aft_coefficients.csv")
    reference = reference[(reference.model == model) & (reference.distribution == distribution)]
    table = fitted(model, distribution)[0].tidy()
    assert list(table["term"].map(r_term)) == list(reference["term"])
    for column in ("estimate", "std_error", "statistic"):
        assert_close_to_reference(table[column], reference[column], rtol=RTOL)
    # p-values as small as 1e-50 magnify the 1e-7 differences in z a hundredfold.
    assert_close_to_reference(table["p_value"], reference["p_value"], rtol=1e-3)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_scale_loglik_aic_and_quantiles_match_survreg(model: str, distribution: str) -> None:
    result = fitted(model, distribution)[0]
    fits = pd.read_csv(DATA / "aft_fits.csv")
    reference = fits[(fits.model == model) & (fits.distribution == distribution)].iloc[0]
    assert_close_to_reference(
        [result.scale, result.log_likelihood, result.aic],
        [reference.scale, reference.log_likelihood, reference.aic],
        rtol=RTOL,
    )
    assert result.n_observations == reference.n

    quantiles = pd.read_csv(DATA / "aft_quantiles.csv")
    quantiles = quantiles[(quantiles.model == model) & (quantiles.distribution == distribution)]
    _, covariates, _ = MODELS[model]
    kept = dataset(model).dropna(subset=covariates).reset_index(drop=True)
    rows = sorted(quantiles["row"].unique())
    predicted = result.predict_quantiles(kept.iloc[[row - 1 for row in rows]], (0.1, 0.5, 0.9))
    predicted.index = rows
    actual = [
        predicted.loc[row, q]
        for row, q in zip(quantiles["row"], quantiles["quantile"], strict=True)
    ]
    assert_close_to_reference(actual, quantiles["time"], rtol=RTOL)


def test_tidy_shape_log_scale_row_and_notes() -> None:
    result, messages = fitted("lung", "weibull")
    table = result.tidy()
    assert tuple(table.columns) == (*TIDY_COLUMNS, *ESTIMABILITY_COLUMNS)
    assert table["term"].iloc[-1] == "Log(scale)"
    assert table["estimate"].iloc[-1] == pytest.approx(np.log(result.scale))
    assert table.notna().all().all()
    assert_ci_contains_estimate(table)
    assert (
        messages
        == (
            "1 row(s) were left out because a value was missing in a used column; the model "
            "describes the remaining 227 row(s).",
        )
        == tuple(result.notes)
    )
    # Weibull's survreg scale is 1 / shape.
    assert result.params.index[0] == "(Intercept)"


def test_interval_coding_of_right_censored_data_gives_the_same_fit() -> None:
    lung = dataset("lung").dropna()
    as_interval = lung.assign(
        lower=lung["time"], upper=np.where(lung["status"] == 1, lung["time"], np.nan)
    )
    for distribution in DISTRIBUTIONS:
        right = fit_aft(lung, ["age", "sex"], distribution, duration="time", event="status")
        interval = fit_aft(as_interval, ["age", "sex"], distribution, lower="lower", upper="upper")
        pd.testing.assert_frame_equal(right.tidy(), interval.tidy(), rtol=1e-8)


def test_left_censoring_by_zero_or_missing_lower_bound_is_the_same() -> None:
    data = dataset("lung_interval").dropna(subset=["ph_ecog"])
    zero = data.assign(lower=data["lower"].fillna(0))
    missing = data.assign(lower=data["lower"].replace(0, np.nan))
    upper_infinite = missing.assign(upper=missing["upper"].fillna(np.inf))
    fits = [
        fit_aft(frame, ["age", "sex"], "weibull", lower="lower", upper="upper").tidy()
        for frame in (zero, missing, upper_infinite)
    ]
    pd.testing.assert_frame_equal(fits[0], fits[1])
    pd.testing.assert_frame_equal(fits[0], fits[2])


def test_fit_is_deterministic() -> None:
    data = dataset("veteran")
    first = fit_aft(data, ["karno", "celltype"], "loglogistic", duration="time", event="status")
    second = fit_aft(data, ["karno", "celltype"], "loglogistic", duration="time", event="status")
    pd.testing.assert_frame_equal(first.tidy(), second.tidy(), check_exact=True)


def test_prediction_codes_factors_against_the_fitted_levels() -> None:
    result = fitted("veteran", "weibull")[0]
    data = dataset("veteran")
    one_level = data[data["celltype"] == "squamous"].head(3)
    predicted = result.predict_quantiles(one_level, (0.5,))
    expected = result.predict_quantiles(data, (0.5,)).loc[one_level.index]
    pd.testing.assert_frame_equal(predicted, expected)
    with pytest.raises(DataError, match="not seen"):
        result.predict_quantiles(one_level.assign(celltype="unknown"), (0.5,))


def test_aliased_covariates_are_marked_not_estimable_as_survreg_na() -> None:
    """survreg(Surv(futime, fustat) ~ age + dose + age_months, ovarian): dose, age_months NA."""
    data = dataset("ovarian").assign(dose=1.0)
    data["age_months"] = data["age"] * 12
    with pytest.warns(ModelWarning, match=r"not estimable: it is constant") as caught:
        result = fit_aft(
            data, ["age", "dose", "age_months"], "weibull", duration="futime", event="fustat"
        )
    assert {str(w.message).split(" ")[0] for w in caught} == {"dose", "age_months"}
    table = result.tidy().set_index("term")
    assert list(table.index) == ["(Intercept)", "age", "dose", "age_months", "Log(scale)"]
    assert list(table["estimable"]) == [True, True, False, False, True]
    assert table.loc[["dose", "age_months"], list(TIDY_COLUMNS[1:])].isna().all().all()
    plain = fit_aft(dataset("ovarian"), ["age"], "weibull", duration="futime", event="fustat")
    pd.testing.assert_frame_equal(
        table.loc[["(Intercept)", "age", "Log(scale)"]].reset_index(),
        plain.tidy(),
    )


def test_hopeless_data_raise() -> None:
    data = dataset("ovarian")
    with pytest.raises(ConvergenceError, match="no events"):
        fit_aft(data.assign(fustat=0), ["age"], duration="futime", event="fustat")
    with pytest.raises(DataError, match="lower bound above"):
        fit_aft(
            pd.DataFrame({"lo": [3.0, 1.0], "hi": [2.0, 4.0], "x": [0, 1]}),
            ["x"],
            lower="lo",
            upper="hi",
        )
    with pytest.raises(DataError, match="either duration and event"):
        fit_aft(data, ["age"], duration="futime")


def test_a_reference_level_recodes_the_factor_and_leaves_the_fit_unchanged():
    """survreg after relevel is the same model: the same likelihood and predictions, each
    level's coefficient re-expressed against the new reference (as R's relevel)."""
    data = pd.read_csv(DATA / "aft_veteran.csv")
    outcome = {"duration": "time", "event": "status"}
    sorted_first = fit_aft(data, ["karno", "celltype"], "weibull", **outcome)
    relevelled = fit_aft(
        data, ["karno", "celltype"], "weibull", reference_levels={"celltype": "squamous"}, **outcome
    )
    assert relevelled.factor_levels["celltype"][0] == "squamous"
    assert relevelled.log_likelihood == pytest.approx(sorted_first.log_likelihood, rel=1e-9)
    old, new = sorted_first.params, relevelled.params
    for level in ("large", "smallcell"):
        assert new[f"celltype[{level}]"] == pytest.approx(
            old[f"celltype[{level}]"] - old["celltype[squamous]"], abs=1e-6
        )
    assert new["celltype[adeno]"] == pytest.approx(-old["celltype[squamous]"], abs=1e-6)
    np.testing.assert_allclose(
        relevelled.predict_quantiles(data), sorted_first.predict_quantiles(data), rtol=1e-6
    )


@pytest.mark.parametrize("distribution", ["weibull", "lognormal", "loglogistic"])
def test_analytic_hessian_matches_differences_of_the_gradient(distribution) -> None:
    """Exact, right-, left- and interval-censored rows at once, away from the optimum."""
    rng = np.random.default_rng(7)
    n = 400
    x = rng.normal(size=n)
    time = np.exp(1 + 0.5 * x + 0.7 * rng.gumbel(size=n))
    kind = rng.integers(0, 4, n)  # exact, right, left, interval
    low, high = time * rng.uniform(0.5, 1, n), time * rng.uniform(1, 2, n)
    lower = np.select([kind == 0, kind == 2], [time, np.nan], low)
    upper = np.select([kind == 0, kind == 1], [time, np.inf], high)
    likelihood = aft._Likelihood(
        np.column_stack([np.ones(n), x]),
        aft._interval_censored_times(lower, upper, "lower"),
        aft._ErrorDistribution(distribution),
    )
    parameters = np.array([0.8, 0.4, np.log(0.8)])
    step = 1e-6
    differences = np.column_stack(
        [
            likelihood.value_and_gradient(parameters + step * unit)[1]
            - likelihood.value_and_gradient(parameters - step * unit)[1]
            for unit in np.eye(3)
        ]
    ) / (2 * step)
    hessian = likelihood.derivatives(parameters).hessian
    np.testing.assert_allclose(hessian, differences, rtol=1e-7, atol=1e-7 * np.abs(hessian).max())
    np.testing.assert_array_equal(hessian, hessian.T)


def _fit_quietly(frame: pd.DataFrame, covariates: list[str], **options) -> AftResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelWarning)
        return fit_aft(frame, covariates, **options)


def test_refits_on_rows_are_fit_aft_on_those_rows_number_for_number() -> None:
    """The bootstrap's refits (the frame coded once, then a subset of its rows fitted) equal
    fit_aft on the subset exactly: resamples with repeats, a subset without a level (its column
    absent), one in which a column is aliased, rows with a missing covariate, and interval
    bounds; a subset without the reference level is the same DataError."""
    data = dataset("veteran").assign(trt=lambda frame: frame["trt"].astype(float))
    data.loc[[3, 40], "karno"] = np.nan
    options = {"distribution": "loglogistic", "duration": "time", "event": "status"}
    covariates = ["karno", "celltype", "trt"]
    refits = aft.AftRefits(data, covariates, **options)
    rng = np.random.default_rng(3)
    subsets = [rng.integers(0, len(data), len(data)) for _ in range(4)]
    subsets.append(np.flatnonzero(data["celltype"] != "large"))
    subsets.append(np.flatnonzero(data["trt"] == 1))
    for rows in subsets:
        expected = _fit_quietly(data.iloc[rows], covariates, **options)
        refit = refits.fit(rows)
        np.testing.assert_array_equal(refit.estimates, expected.fitted.parameters.to_numpy())
        np.testing.assert_array_equal(refit.covariance, expected.fitted.covariance.to_numpy())
        assert refit.names == list(expected.fitted.parameters.index)
        assert refit.terms == list(expected.tidy()["term"])
        assert refit.notes == expected.notes
        assert refit.factor_levels == expected.factor_levels
        assert (refit.scale, refit.aic) == (expected.scale, expected.aic)
    assert "celltype[large]" not in refits.fit(subsets[4]).names
    assert refits.fit(subsets[5]).reasons.keys() == {"trt"}

    interval = dataset("lung_interval")
    interval_options = {"distribution": "weibull", "lower": "lower", "upper": "upper"}
    rows = np.random.default_rng(5).integers(0, len(interval), len(interval))
    expected = _fit_quietly(interval.iloc[rows], ["age", "sex", "ph_ecog"], **interval_options)
    refit = aft.AftRefits(interval, ["age", "sex", "ph_ecog"], **interval_options).fit(rows)
    np.testing.assert_array_equal(refit.estimates, expected.fitted.parameters.to_numpy())
    assert refit.notes == expected.notes

    relevelled = aft.AftRefits(data, covariates, reference_levels={"celltype": "adeno"}, **options)
    with pytest.raises(DataError, match="reference level 'adeno' does not occur"):
        relevelled.fit(np.flatnonzero(data["celltype"] != "adeno"))
