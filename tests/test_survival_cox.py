"""Cox models against R survival 3.5-3 (coxph, concordance, cox.zph).

References come from tests/data/cox_reference.R (datasets survival::lung, veteran and heart,
exported beside it as cox_*.csv); the R calls are listed in MODELS' docstrings below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index as lifelines_concordance_index

from analysis.errors import DataError, ModelWarning
from analysis.results import ESTIMABILITY_COLUMNS, HAZARD_RATIO_COLUMNS, TIDY_COLUMNS
from analysis.survival.cox import (
    _CoxData,
    _prefix_counts_below,
    concordance_index,
    fit_cox,
    fit_cox_time_varying,
)
from analysis.testing import assert_ci_contains_estimate, assert_close_to_reference

DATA = Path(__file__).parent / "data"
RTOL = 1e-4


@pytest.fixture(scope="module")
def lung() -> pd.DataFrame:
    return pd.read_csv(DATA / "cox_lung.csv")


@pytest.fixture(scope="module")
def fits(lung) -> dict:
    """The models of cox_reference.R, fitted once for the module.

    veteran:      coxph(Surv(time, event) ~ trt + karno + age + celltype, veteran_data)
    lung:         coxph(Surv(time, event) ~ age + sex + ph_ecog, lung_data)
    lung_strata:  coxph(Surv(time, event) ~ age + ph_ecog + strata(sex), lung_data)
    lung_cluster: coxph(Surv(time, event) ~ age + sex, lung_data, cluster = inst)
    heart:        coxph(Surv(start, stop, event) ~ age + year + surgery + transplant, heart_data)
    """
    veteran = pd.read_csv(DATA / "cox_veteran.csv")
    heart = pd.read_csv(DATA / "cox_heart.csv")
    # The lung fits drop rows missing ph_ecog or inst; that note is tested on its own below.
    with pytest.warns(ModelWarning, match="1 row"):
        lung_fit = fit_cox(lung, "time", "event", ["age", "sex", "ph_ecog"])
    with pytest.warns(ModelWarning, match="1 row"):
        strata_fit = fit_cox(lung, "time", "event", ["age", "ph_ecog"], strata="sex")
    with pytest.warns(ModelWarning, match="1 row"):
        cluster_fit = fit_cox(lung, "time", "event", ["age", "sex"], cluster="inst")
    return {
        "veteran": fit_cox(veteran, "time", "event", ["trt", "karno", "age", "celltype"]),
        "lung": lung_fit,
        "lung_strata": strata_fit,
        "lung_cluster": cluster_fit,
        "heart": fit_cox_time_varying(
            heart, "id", "start", "stop", "event", ["age", "year", "surgery", "transplant"]
        ),
    }


MODELS = ["veteran", "lung", "lung_strata", "lung_cluster", "heart"]


@pytest.mark.parametrize("model", MODELS)
def test_coefficients_match_coxph(fits, model):
    """coef, sqrt(diag(vcov)) (robust with cluster), z, Wald p, confint and exp() of them."""
    reference = pd.read_csv(DATA / "cox_reference_coefficients.csv")
    reference = reference[reference["model"] == model].reset_index(drop=True)
    tidy = fits[model].tidy()
    assert list(tidy.columns) == list(TIDY_COLUMNS + HAZARD_RATIO_COLUMNS + ESTIMABILITY_COLUMNS)
    assert list(tidy["term"]) == list(reference["term"])
    assert tidy["estimable"].all()
    assert (tidy["reason"] == "").all()
    for column in [*TIDY_COLUMNS[1:], *HAZARD_RATIO_COLUMNS]:
        assert_close_to_reference(tidy[column], reference[column], RTOL)
    assert_ci_contains_estimate(tidy)
    assert_ci_contains_estimate(
        tidy, estimate="hazard_ratio", low="hr_conf_low", high="hr_conf_high"
    )


@pytest.mark.parametrize("model", MODELS)
def test_fit_statistics_match_coxph(fits, model):
    """fit$n, fit$nevent, fit$loglik[2], concordance(fit)$concordance."""
    reference = pd.read_csv(DATA / "cox_reference_fit.csv").set_index("model").loc[model]
    result = fits[model]
    assert (result.n, result.events) == (reference["n"], reference["events"])
    assert_close_to_reference(
        [result.log_likelihood, result.concordance],
        [reference["log_likelihood"], reference["concordance"]],
        RTOL,
    )


@pytest.mark.parametrize("model", ["veteran", "lung", "lung_strata", "lung_cluster"])
def test_proportional_hazards_test_matches_cox_zph(fits, model):
    """cox.zph(fit)$table (transform = "km"): chisq, df, p per term (celltype: 3 df) and GLOBAL."""
    reference = pd.read_csv(DATA / "cox_reference_zph.csv")
    reference = reference[reference["model"] == model].reset_index(drop=True)
    table = fits[model].proportional_hazards_test()
    assert list(table["term"]) == list(reference["term"])
    assert list(table["dof"]) == list(reference["dof"])
    assert_close_to_reference(table["statistic"], reference["statistic"], RTOL)
    assert_close_to_reference(table["p_value"], reference["p_value"], RTOL)


def test_unstratified_concordance_agrees_with_lifelines(fits, lung):
    """R's and lifelines' Harrell's C agree without strata (lifelines ranks survival times)."""
    result = fits["lung"]
    used = lung.dropna(subset=["ph_ecog"])
    # Column by column, so identical rows get identical scores (a BLAS product may round them
    # apart and turn risk-score ties into concordant or discordant pairs).
    age, sex, ph_ecog = result.tidy()["estimate"]
    risk = (used["age"] * age + used["sex"] * sex + used["ph_ecog"] * ph_ecog).to_numpy()
    theirs = lifelines_concordance_index(used["time"], -risk, used["event"])
    assert result.concordance == pytest.approx(theirs, rel=1e-12)


def test_missing_rows_dropped_with_a_note(lung):
    with pytest.warns(ModelWarning, match="1 row.*ph_ecog"):
        result = fit_cox(lung, "time", "event", ["age", "ph_ecog"])
    assert result.n == len(lung) - 1
    assert result.notes == [
        "1 row(s) were left out because a value was missing in one of time, event, age, "
        "ph_ecog; the model describes the remaining 227 row(s)."
    ]


def test_separated_data_marks_the_term_not_estimable_never_penalizes():
    """Every treated subject fails before every control: the MLE is infinite (R warns too).

    The default never adds lifelines' ridge penalty; it happens only when asked for.
    """
    rng = np.random.default_rng(20240501)
    arm = np.repeat(["control", "treated"], 20)
    frame = pd.DataFrame(
        {
            "days": np.where(arm == "treated", rng.uniform(1, 5, 40), rng.uniform(6, 10, 40)),
            "recovered": 1,
            "arm": arm,
            "noise": rng.normal(size=40),
        }
    )
    with pytest.warns(ModelWarning, match=r"arm\[treated\] is not estimable.*plus infinity"):
        result = fit_cox(frame, "days", "recovered", ["arm", "noise"])
    table = result.tidy().set_index("term")
    assert table.loc["arm[treated]", "estimate"] == np.inf
    assert not table.loc["arm[treated]", "estimable"]
    assert table.loc["arm[treated]", ["std_error", "p_value", "conf_low"]].isna().all()
    assert table.loc["noise", "estimable"] and np.isfinite(table.loc["noise", "std_error"])
    with pytest.warns(ModelWarning, match="ridge penalty of 0.5.*asked for"):
        penalized = fit_cox(frame, "days", "recovered", ["arm", "noise"], penalizer=0.5)
    assert np.isfinite(penalized.tidy()["estimate"]).all()


def test_time_varying_fit_has_no_zph(fits):
    with pytest.raises(NotImplementedError):
        fits["heart"].proportional_hazards_test()


# coxph after relevel, on cox_veteran.csv (R 4.2.2, survival 3.5-3), printed with digits = 17:
#   veteran_data <- read.csv("cox_veteran.csv")
#   veteran_data$celltype <- relevel(factor(veteran_data$celltype), ref = "squamous")
#   fit <- coxph(Surv(time, event) ~ trt + karno + age + celltype, veteran_data)
#   cbind(estimate = coef(fit), std_error = sqrt(diag(vcov(fit))),
#         p = summary(fit)$coefficients[, 5]); fit$loglik; c(fit$n, fit$nevent)
RELEVEL_SQUAMOUS = pd.DataFrame(
    {
        "term": [
            "trt",
            "karno",
            "age",
            "celltype[adeno]",
            "celltype[large]",
            "celltype[smallcell]",
        ],
        "estimate": [
            0.3030480951269730050,
            -0.0326854827400992198,
            -0.0089031651314809192,
            1.1788070293942434219,
            0.4023321967700368984,
            0.8563403758726617632,
        ],
        "std_error": [
            0.2056559007869977196,
            0.0054088496336279577,
            0.0092242831890019493,
            0.2964404777398922386,
            0.2825436509010853525,
            0.2713223635120166621,
        ],
        "p_value": [
            1.4059775818571477e-01,
            1.5130857700583334e-09,
            3.3445078177960375e-01,
            6.9925626100030049e-05,
            1.5445667890002365e-01,
            1.5985390000640175e-03,
        ],
    }
)
RELEVEL_LOGLIK = -474.45779018483995


def test_a_reference_level_is_coded_as_coxph_after_relevel():
    veteran = pd.read_csv(DATA / "cox_veteran.csv")
    fitted = fit_cox(
        veteran,
        "time",
        "event",
        ["trt", "karno", "age", "celltype"],
        reference_levels={"celltype": "squamous", "not_a_covariate": "ignored"},
    )
    table = fitted.tidy()
    assert table["term"].tolist() == RELEVEL_SQUAMOUS["term"].tolist()
    for column in ("estimate", "std_error", "p_value"):
        assert_close_to_reference(table[column], RELEVEL_SQUAMOUS[column], rtol=1e-7)
    assert fitted.log_likelihood == pytest.approx(RELEVEL_LOGLIK, rel=1e-8)
    assert (fitted.n, fitted.events) == (137, 128)


def test_a_reference_level_that_does_not_occur_or_is_not_a_factor_is_a_data_error():
    veteran = pd.read_csv(DATA / "cox_veteran.csv")
    with pytest.raises(DataError, match="reference level 'tiny' does not occur"):
        fit_cox(veteran, "time", "event", ["celltype"], reference_levels={"celltype": "tiny"})
    with pytest.raises(DataError, match="only for a factor"):
        fit_cox(veteran, "time", "event", ["age"], reference_levels={"age": 60})


def _concordance_by_risk_set(risk_score, stop, event, strata, start) -> float:
    """Harrell's C as survival::concordance counts it, one event time's risk set at a time."""
    concordant = tied = comparable = 0
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        for time in np.unique(stop[rows][event[rows] == 1]):
            at_risk = rows[(start[rows] < time) & (stop[rows] >= time)]
            dying = at_risk[(stop[at_risk] == time) & (event[at_risk] == 1)]
            others = risk_score[np.setdiff1d(at_risk, dying)]
            for score in risk_score[dying]:
                concordant += int(np.sum(others < score))
                tied += int(np.sum(others == score))
                comparable += len(others)
    return (concordant + tied / 2) / comparable if comparable else np.nan


@pytest.mark.parametrize("counting_process", [False, True])
def test_concordance_index_counts_pairs_as_the_risk_set_definition(counting_process):
    """Ties in time and score, strata, censoring at event times, (start, stop] rows: the
    O(n log n) count equals the pair-by-pair count exactly."""
    rng = np.random.default_rng(15)
    for _ in range(60):
        n = int(rng.integers(1, 80))
        stop = rng.integers(1, 15, n).astype(float)
        event = (rng.random(n) < 0.6).astype(float)
        strata = rng.integers(0, 3, n)
        score = rng.integers(0, 6, n).astype(float) if rng.random() < 0.5 else rng.normal(size=n)
        start = stop - rng.integers(1, 6, n) if counting_process else np.full(n, -np.inf)
        expected = _concordance_by_risk_set(score, stop, event, strata, start)
        actual = concordance_index(score, stop, event, strata, start)
        assert actual == pytest.approx(expected, rel=1e-15, nan_ok=True)


def test_prefix_counts_below_match_a_direct_count():
    rng = np.random.default_rng(4)
    for _ in range(100):
        ranks = rng.integers(0, int(rng.integers(1, 40)), int(rng.integers(1, 60)))
        prefix = rng.integers(0, len(ranks) + 1, 25)
        thresholds = rng.integers(0, ranks.max() + 3, 25)
        expected = [np.sum(ranks[:m] < r) for m, r in zip(prefix, thresholds, strict=True)]
        np.testing.assert_array_equal(_prefix_counts_below(ranks, prefix, thresholds), expected)


@pytest.mark.parametrize("counting_process", [False, True])
def test_vectorised_efron_sums_equal_the_risk_set_loop(counting_process):
    """Log-likelihood, score and information from running sums over event times equal those
    summed one risk set at a time (heavy ties, strata, (start, stop] rows)."""
    rng = np.random.default_rng(2026)
    n = 300
    stop = rng.integers(1, 30, n).astype(float)
    start = stop - rng.integers(1, 8, n) if counting_process else np.full(n, -np.inf)
    data = _CoxData(
        design=rng.normal(size=(n, 3)),
        stop=stop,
        event=(rng.random(n) < 0.5).astype(float),
        strata=rng.integers(0, 2, n),
        start=start,
    )
    beta = np.array([0.3, -0.7, 0.1])
    loglik, score, information = data.objective(np.eye(3), np.zeros(n))(beta)
    sums = data.efron_sums(beta)
    assert sums.log_likelihood == pytest.approx(loglik, rel=1e-12)
    np.testing.assert_allclose(sums.score, score, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sums.information, information, rtol=1e-10)
