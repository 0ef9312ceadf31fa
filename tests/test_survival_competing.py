"""Competing risks against R: survfit's Aalen-Johansen and cmprsk::crr's Fine-Gray.

References: tests/data/cif_reference.R (cif_aalen_johansen.csv) ran
    survfit(Surv(etime, event) ~ 1, data = mgus2_competing)     # and ~ sex
and tests/data/finegray_reference.R (finegray_coefficients.csv) ran
    crr(etime, event, cov1 = model.matrix(~ age + sex + mspike)[, -1],
        failcode = "pcm", cencode = "censored")                 # and "death"; and ~ age + sex
    coxph(Surv(fgstart, fgstop, fgstatus) ~ age + sex + mspike, weights = fgwt,
          data = finegray(Surv(etime, event) ~ ., data = mgus2_competing, etype = "pcm"))
on mgus2 with etime/event built as in survival's "compete" vignette (months, many ties).
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from analysis.errors import ConvergenceError, DataError, ModelWarning
from analysis.results import ESTIMABILITY_COLUMNS, HAZARD_RATIO_COLUMNS, TIDY_COLUMNS
from analysis.survival.competing import (
    CumulativeIncidenceResult,
    FineGrayResult,
    GrayTestResult,
    cumulative_incidence,
    fit_fine_gray,
    gray_test,
)
from analysis.testing import (
    assert_ci_contains_estimate,
    assert_close_to_reference,
    assert_survival_curve,
)

DATA = Path(__file__).parent / "data"


@cache
def mgus2() -> pd.DataFrame:
    return pd.read_csv(DATA / "cif_mgus2.csv")


@cache
def mgus2_for_fine_gray() -> pd.DataFrame:
    """The same rows, as written by finegray_reference.R."""
    return pd.read_csv(DATA / "finegray_mgus2.csv")


@cache
def incidence(group: str | None) -> CumulativeIncidenceResult:
    return cumulative_incidence(mgus2(), "etime", "event", group=group)


@cache
def fine_gray(event: str, covariates: tuple[str, ...]) -> tuple[FineGrayResult, tuple[str, ...]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_fine_gray(mgus2_for_fine_gray(), "etime", "event", event, list(covariates))
    return result, tuple(str(warning.message) for warning in caught)


# --- Aalen-Johansen --------------------------------------------------------------------------


def test_aalen_johansen_matches_survfit_estimates_errors_and_log_intervals() -> None:
    """Largest relative difference seen: 3e-13 (estimates, standard errors and limits)."""
    reference = pd.read_csv(DATA / "cif_aalen_johansen.csv")
    table = pd.concat([incidence(None).table, incidence("sex").table], ignore_index=True)
    merged = reference.merge(table, on=["group", "event", "time"], suffixes=("_r", ""))
    assert len(merged) == len(reference) == len(table)
    for column in ("estimate", "std_error", "conf_low", "conf_high"):
        defined = merged[f"{column}_r"].notna()
        np.testing.assert_array_equal(merged[column].notna(), defined)
        np.testing.assert_allclose(
            merged.loc[defined, column], merged.loc[defined, f"{column}_r"], rtol=1e-6, atol=1e-12
        )


def test_aalen_johansen_with_tied_times_of_every_kind() -> None:
    """Events of both types and censoring tied at times 1, 3 and 5.

    tied <- data.frame(time = c(1, 1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 6),
      event = factor(c("a", "b", "censored", "a", "a", "b", "censored", "a", "censored",
                       "b", "a", "censored"), c("censored", "a", "b")))
    fit <- survfit(Surv(time, event) ~ 1, data = tied); fit$pstate[, 2:3]; fit$std.err[, 2:3]
    """
    tied = pd.DataFrame(
        {
            "time": [1, 1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 6],
            "event": [
                "a",
                "b",
                "censored",
                "a",
                "a",
                "b",
                "censored",
                "a",
                "censored",
                "b",
                "a",
                "censored",
            ],
        }
    )
    estimate_a = [
        0.083333333333333329,
        0.268518518518518490,
        0.361111111111111049,
        0.361111111111111049,
        0.515432098765432056,
        0.515432098765432056,
    ]
    estimate_b = [
        0.083333333333333329,
        0.083333333333333329,
        0.175925925925925930,
        0.175925925925925930,
        0.330246913580246937,
        0.330246913580246937,
    ]
    error_a = [
        0.079785592313028189,
        0.133047604798090108,
        0.144708329704516497,
        0.144708329704516497,
        0.170559408106612909,
        0.170559408106612909,
    ]
    error_b = [
        0.079785592313028189,
        0.079785592313028189,
        0.113328777578624418,
        0.113328777578624418,
        0.162454553873412705,
        0.162454553873412705,
    ]
    table = cumulative_incidence(tied, "time", "event").table
    a, b = table[table.event == "a"], table[table.event == "b"]
    np.testing.assert_array_equal(a["time"], [1, 2, 3, 4, 5, 6])
    assert_close_to_reference(a["estimate"], estimate_a, rtol=1e-12)
    assert_close_to_reference(b["estimate"], estimate_b, rtol=1e-12)
    assert_close_to_reference(a["std_error"], error_a, rtol=1e-12)
    assert_close_to_reference(b["std_error"], error_b, rtol=1e-12)


@pytest.mark.parametrize("group", [None, "sex"])
def test_incidences_and_any_event_survival_sum_to_one(group: str | None) -> None:
    result = incidence(group)
    data = mgus2()
    subsets = {"all": data} if group is None else dict(list(data.groupby(group)))
    for name, rows in subsets.items():
        km = KaplanMeierFitter().fit(rows["etime"], rows["event"] != "censored")
        curves = result.table[result.table.group == name]
        times = curves["time"].unique()
        total = curves.groupby("time")["estimate"].sum().loc[times].to_numpy()
        survival = km.survival_function_at_times(times).to_numpy()
        np.testing.assert_allclose(total + survival, 1.0, atol=1e-12)
        np.testing.assert_allclose(result.fitted[name]["survival"], survival, atol=1e-12)
        assert_survival_curve(1 - curves[curves.event == "pcm"]["estimate"])
        assert_ci_contains_estimate(curves)


def test_at_reads_the_step_function() -> None:
    result = incidence(None)
    at = result.at([0.5, 2, 2.5, 1e6])
    pcm = at[at.event == "pcm"].set_index("time")
    curve = result.table[result.table.event == "pcm"].set_index("time")
    assert pcm.loc[0.5, "estimate"] == 0.0
    assert pcm.loc[2.5, "estimate"] == curve.loc[2, "estimate"]
    assert pcm.loc[1e6, "estimate"] == curve["estimate"].iloc[-1]
    assert pcm.loc[2, "conf_high"] == curve.loc[2, "conf_high"]


def test_cumulative_incidence_is_deterministic_and_tidy() -> None:
    first = cumulative_incidence(mgus2(), "etime", "event", group="sex")
    second = cumulative_incidence(mgus2(), "etime", "event", group="sex")
    pd.testing.assert_frame_equal(first.table, second.table, check_exact=True)
    assert tuple(first.tidy().columns) == ("group", "time", *TIDY_COLUMNS)


def test_censor_code_is_a_parameter() -> None:
    data = mgus2().assign(status=mgus2()["event"].map({"censored": 0, "pcm": 1, "death": 2}))
    coded = cumulative_incidence(data, "etime", "status", censored=0).table
    labelled = incidence(None).table
    np.testing.assert_array_equal(
        coded[coded.event == 1]["estimate"], labelled[labelled.event == "pcm"]["estimate"]
    )
    with pytest.raises(DataError, match="every row is censored"):
        cumulative_incidence(data.assign(status=0), "etime", "status", censored=0)


# --- Fine-Gray -------------------------------------------------------------------------------


def r_term(term: str) -> str:
    return term.replace("[", "").replace("]", "")


@pytest.mark.parametrize(
    ("method", "covariates"),
    [("crr", ("age", "sex", "mspike")), ("crr_age_sex", ("age", "sex"))],
)
@pytest.mark.parametrize("event", ["pcm", "death"])
def test_fine_gray_matches_crr(event: str, method: str, covariates: tuple[str, ...]) -> None:
    """Largest relative difference seen: 2e-8 (coefficients), 2e-9 (standard errors)."""
    reference = pd.read_csv(DATA / "finegray_coefficients.csv")
    reference = reference[(reference.method == method) & (reference.event == event)]
    result, messages = fine_gray(event, covariates)
    table = result.tidy()
    assert list(table["term"].map(r_term)) == list(reference["term"])
    assert_close_to_reference(table["estimate"], reference["estimate"], rtol=1e-6)
    assert_close_to_reference(table["std_error"], reference["std_error"], rtol=1e-6)
    expected = (
        (
            "11 row(s) were left out because a value was missing in one of etime, event, age, "
            "sex, mspike; the estimates describe the remaining 1373 row(s).",
        )
        if "mspike" in covariates
        else ()
    )
    assert messages == expected


@pytest.mark.parametrize("event", ["pcm", "death"])
def test_fine_gray_is_close_to_finegray_plus_weighted_coxph(event: str) -> None:
    """finegray + coxph uses Efron ties, crr Breslow: estimates agree to about 0.5 %."""
    reference = pd.read_csv(DATA / "finegray_coefficients.csv")
    reference = reference[(reference.method == "finegray_coxph") & (reference.event == event)]
    table = fine_gray(event, ("age", "sex", "mspike"))[0].tidy()
    assert_close_to_reference(table["estimate"], reference["estimate"], rtol=1e-2)


def test_fine_gray_tidy_has_subdistribution_hazard_ratios() -> None:
    result = fine_gray("pcm", ("age", "sex", "mspike"))[0]
    table = result.tidy()
    assert tuple(table.columns) == (*TIDY_COLUMNS, *HAZARD_RATIO_COLUMNS, *ESTIMABILITY_COLUMNS)
    np.testing.assert_allclose(table["hazard_ratio"], np.exp(table["estimate"]))
    assert_ci_contains_estimate(table)
    assert_ci_contains_estimate(table, "hazard_ratio", "hr_conf_low", "hr_conf_high")
    assert table.notna().all().all()
    # crr's robust errors differ from the naive inverse information (by ~20 % in general).
    naive = np.sqrt(np.diag(result.fitted.naive_covariance))
    assert not np.allclose(naive, table["std_error"], rtol=1e-2)


def test_fine_gray_is_deterministic() -> None:
    data = mgus2_for_fine_gray().dropna()
    first = fit_fine_gray(data, "etime", "event", "death", ["age", "sex"]).tidy()
    second = fit_fine_gray(data, "etime", "event", "death", ["age", "sex"]).tidy()
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_fine_gray_marks_a_constant_covariate_not_estimable() -> None:
    data = mgus2_for_fine_gray().dropna().assign(clinic=1.0)
    with pytest.warns(ModelWarning, match=r"clinic is not estimable: it is constant"):
        result = fit_fine_gray(data, "etime", "event", "pcm", ["age", "clinic"])
    table = result.tidy().set_index("term")
    assert list(table.index) == ["age", "clinic"]
    assert table.loc["age"].notna().all() and table.loc["age", "estimable"]
    assert table.loc["clinic", list(TIDY_COLUMNS[1:])].isna().all()
    assert not table.loc["clinic", "estimable"]


def test_fine_gray_refuses_hopeless_data() -> None:
    data = mgus2_for_fine_gray().dropna()
    separating = data.assign(marker=(data["event"] == "pcm").astype(float))
    with pytest.raises(ConvergenceError, match="monotone likelihood"):
        fit_fine_gray(separating, "etime", "event", "pcm", ["age", "marker"])
    with pytest.raises(DataError, match="no rows with the event of interest"):
        fit_fine_gray(data, "etime", "event", "relapse", ["age"])


# --- Gray's test ------------------------------------------------------------------------------

# cmprsk 2.2-12 cuminc(...)$Tests (stat, pv, df), printed with digits = 17 by
# tests/data/gray_reference.R:
#   d <- read.csv("cif_mgus2.csv")
#   d$age_band <- cut(d$age, c(-Inf, 65, 75, Inf), right = FALSE,
#                     labels = c("lt65", "65to74", "ge75"))
#   cuminc(d$etime, d$event, group = d$sex, cencode = "censored")
#   cuminc(d$etime, d$event, group = d$age_band, cencode = "censored")
#   cuminc(d$etime, d$event, group = d$sex, strata = d$age_band, cencode = "censored")
#   cuminc(d$etime, d$event, group = d$age_band, cencode = "censored", rho = 1)
#   cuminc(small$time, small$event, group = small$group, cencode = "censored")
# (R's p-value of 0 for age_band/death is 1 - pchisq below double precision; not compared.)
GRAY_REFERENCE = {
    ("sex", None, 0.0): {
        "death": (11.6512590121277384, 0.00064159097640792417, 1),
        "pcm": (1.1945078250755148, 0.27442215678800419010, 1),
    },
    ("age_band", None, 0.0): {
        "death": (270.8392311135434056, None, 2),
        "pcm": (3.9434996023562556, 0.13921304781406929, 2),
    },
    ("sex", "age_band", 0.0): {
        "death": (25.6960497033741113, 3.9964426756800009e-07, 1),
        "pcm": (1.4185248257417673, 2.3364636216970558e-01, 1),
    },
    ("age_band", None, 1.0): {
        "death": (215.0980986235497880, None, 2),
        "pcm": (3.5555520591170406, 0.16901361087865707, 2),
    },
}
# A small frame with ties within and across causes and a group whose risk set empties early.
SMALL_COMPETING = pd.DataFrame(
    {
        "time": [2, 7, 6, 3, 1, 4, 3, 4, 3, 4, 2, 4, 1, 7, 1, 6, 4, 4, 7, 5, 4, 4, 4, 1, 1, 6, 6]
        + [4, 4, 4],
        "event": ["relapse", "censored", "relapse", "death", "censored", "relapse", "death"]
        + ["relapse", "relapse", "relapse", "censored", "censored", "death", "censored"]
        + ["censored", "death", "death", "death", "death", "death", "relapse", "death"]
        + ["censored", "death", "death", "censored", "censored", "censored", "death", "relapse"],
        "group": list("caabccccbcbcabcacabaccccaabcca"),
    }
)
SMALL_REFERENCE = {
    "death": (0.63643638951024162, 0.72744404662129525, 2),
    "relapse": (1.85901147931226074, 0.39474877082551696, 2),
}


def mgus2_with_age_band() -> pd.DataFrame:
    data = mgus2()
    bands = pd.cut(
        data["age"], [-np.inf, 65, 75, np.inf], right=False, labels=["lt65", "65to74", "ge75"]
    )
    return data.assign(age_band=bands)


def assert_gray_matches(result: GrayTestResult, reference: dict) -> None:
    table = result.tidy().set_index("event")
    assert list(table.columns) == ["statistic", "dof", "p_value"]
    assert sorted(table.index) == sorted(reference)
    for event, (statistic, p_value, dof) in reference.items():
        assert table.loc[event, "statistic"] == pytest.approx(statistic, rel=1e-10)
        assert table.loc[event, "dof"] == dof
        if p_value is not None:
            assert table.loc[event, "p_value"] == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(("group", "strata", "rho"), list(GRAY_REFERENCE))
def test_gray_test_matches_cmprsk_cuminc_on_mgus2(group, strata, rho) -> None:
    result = gray_test(
        mgus2_with_age_band(), "etime", "event", group, strata=strata, censored="censored", rho=rho
    )
    assert_gray_matches(result, GRAY_REFERENCE[(group, strata, rho)])


def test_gray_test_matches_cmprsk_with_ties_and_a_group_that_runs_out() -> None:
    result = gray_test(SMALL_COMPETING, "time", "event", "group", censored="censored")
    assert_gray_matches(result, SMALL_REFERENCE)
    assert result.groups == ("a", "b", "c")


def test_gray_test_does_not_depend_on_row_order() -> None:
    shuffled = SMALL_COMPETING.sample(frac=1.0, random_state=np.random.default_rng(5))
    first = gray_test(SMALL_COMPETING, "time", "event", "group", censored="censored").tidy()
    second = gray_test(shuffled, "time", "event", "group", censored="censored").tidy()
    pd.testing.assert_frame_equal(first, second, rtol=1e-12)


def test_gray_test_refuses_a_single_group() -> None:
    with pytest.raises(DataError, match="at least two groups"):
        gray_test(SMALL_COMPETING.assign(group="a"), "time", "event", "group", censored="censored")
