"""The model-safety rule (docs/model-safety.md): agree with R, refuse, or mark "not estimable".

References come from tests/data/safety_reference.R (R 4.2, survival 3.5-3, cmprsk 2.2-11) on
datasets no other test uses (survival::colon, rotterdam, pbc, cgd, mgus); the R calls are in
each test's docstring, the numbers R printed in tests/data/safety_reference_*.csv.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import ConvergenceError, DataError, ModelWarning, NotEstimableError
from analysis.survival import (
    cumulative_incidence,
    fit_aft,
    fit_cox,
    fit_cox_time_varying,
    fit_fine_gray,
    kaplan_meier,
    turnbull,
)
from analysis.testing import assert_close_to_reference

DATA = Path(__file__).parent / "data"


@cache
def dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"safety_{name}.csv")


def reference(kind: str, model: str | None = None) -> pd.DataFrame:
    table = pd.read_csv(DATA / f"safety_reference_{kind}.csv")
    return table if model is None else table[table["model"] == model].reset_index(drop=True)


# --- Rule 1: Cox never penalizes silently; infinite and aliased terms are marked -------------


def test_level_without_events_is_not_estimable_and_the_others_match_coxph():
    """coxph(Surv(time, status) ~ age + nodes + group, colon_data): a group level no one in it
    died ("none_died"); R warns "Loglik converged before variable 5; coefficient may be
    infinite" and stops at -16.59 (SE 834). The toolkit reports that term as -inf, not
    estimable, and the others at their limit, which R's stopping point matches to ~1e-10
    (estimates) and ~1e-9 (standard errors); the limit is R's fit without those rows.
    """
    with pytest.warns(ModelWarning, match=r"no one with group = none_died had the event"):
        result = fit_cox(dataset("colon"), "time", "status", ["age", "nodes", "group"])
    table = result.tidy().set_index("term")
    diverging = table.loc["group[none_died]"]
    assert diverging["estimate"] == -np.inf and diverging["hazard_ratio"] == 0
    assert not diverging["estimable"] and "minus infinity" in diverging["reason"]
    assert diverging[["std_error", "statistic", "p_value", "conf_low", "conf_high"]].isna().all()
    others = table.drop(index="group[none_died]")
    assert others["estimable"].all()
    for model, rtol in (("colon_no_events", 1e-8), ("colon_limit", 1e-8)):
        expected = reference("cox", model).set_index("term").loc[others.index]
        assert_close_to_reference(others["estimate"], expected["estimate"], rtol=rtol)
        assert_close_to_reference(others["std_error"], expected["std_error"], rtol=rtol)
    # R's log-likelihood is at its stopping point, a hair below the supremum reported here.
    fit = reference("cox_fit", "colon_no_events").iloc[0]
    assert fit["log_likelihood"] < result.log_likelihood
    assert result.log_likelihood == pytest.approx(fit["log_likelihood"], rel=1e-9)
    assert result.concordance == pytest.approx(fit["concordance"], rel=1e-10)


def test_several_diverging_terms_keep_their_contrast_free_as_coxph():
    """coxph(Surv(time_to_recovery_days, recovered) ~ overall_adherence + mean_sitting_hours +
    severity + chronic + underlying_condition + age_years, small_site): 14 people, 13 events.
    R flags none and other (both about +22, SE 13487); nerve_entrapment (no events) stops at
    3.04 with SE 89180. The toolkit marks those three not estimable; the rest agree with R,
    standard errors included (the none/other contrast stays free in the limit, as in R).
    """
    covariates = [
        "overall_adherence",
        "mean_sitting_hours",
        "severity",
        "chronic",
        "underlying_condition",
        "age_years",
    ]
    with pytest.warns(ModelWarning, match="not estimable"):
        result = fit_cox(dataset("small_site"), "time_to_recovery_days", "recovered", covariates)
    table = result.tidy().set_index("term")
    diverging = {
        "underlying_condition[nerve_entrapment]": -np.inf,
        "underlying_condition[none]": np.inf,
        "underlying_condition[other]": np.inf,
    }
    for term, limit in diverging.items():
        assert table.loc[term, "estimate"] == limit and not table.loc[term, "estimable"]
    expected = reference("cox", "small_site").set_index("term").drop(index=list(diverging))
    others = table.loc[expected.index]
    assert others["estimable"].all()
    assert_close_to_reference(others["estimate"], expected["estimate"], rtol=1e-6)
    assert_close_to_reference(others["std_error"], expected["std_error"], rtol=1e-6)


@pytest.mark.parametrize(
    ("model", "covariates", "strata", "aliased"),
    [
        ("rotterdam_aliased", ["age", "age_months", "nodes"], None, "age_months"),
        ("rotterdam_strata_aliased", ["age", "meno", "nodes"], "meno", "meno"),
    ],
)
def test_aliased_cox_term_is_na_as_coxph(model, covariates, strata, aliased):
    """coxph(Surv(dtime, death) ~ age + age_months + nodes, rotterdam_data) (age_months =
    12 age) and coxph(Surv(dtime, death) ~ age + meno + nodes + strata(meno), rotterdam_data):
    R reports the aliased coefficient as NA and fits the rest. coxph stops at a 1e-9 relative
    change in a log-likelihood of -9335, so its estimates are good to ~3e-7 here.
    """
    data = dataset("rotterdam").assign(age_months=lambda d: 12 * d["age"])
    with pytest.warns(ModelWarning, match=rf"{aliased} is not estimable: it is constant"):
        result = fit_cox(data, "dtime", "death", covariates, strata=strata)
    table = result.tidy().set_index("term")
    expected = reference("cox", model).set_index("term")
    assert list(table.index) == list(expected.index)
    assert table.loc[aliased, ["estimate", "std_error", "p_value"]].isna().all()
    assert not table.loc[aliased, "estimable"]
    kept = expected.drop(index=aliased)
    assert_close_to_reference(table.loc[kept.index, "estimate"], kept["estimate"], rtol=1e-6)
    assert_close_to_reference(table.loc[kept.index, "std_error"], kept["std_error"], rtol=1e-6)
    fit = reference("cox_fit", model).iloc[0]
    assert result.log_likelihood == pytest.approx(fit["log_likelihood"], rel=1e-10)


def test_proportional_hazards_test_skips_the_aliased_term_as_cox_zph():
    """cox.zph(coxph(Surv(dtime, death) ~ age + age_months + nodes, rotterdam_data)): rows for
    age, nodes and GLOBAL (2 df); the aliased term has no row."""
    data = dataset("rotterdam").assign(age_months=lambda d: 12 * d["age"])
    with pytest.warns(ModelWarning):
        result = fit_cox(data, "dtime", "death", ["age", "age_months", "nodes"])
    assert_matches_cox_zph(result.proportional_hazards_test(), "rotterdam_aliased", rtol=1e-5)


def test_proportional_hazards_test_with_a_diverging_term_as_cox_zph():
    """cox.zph(coxph(Surv(time, status) ~ age + nodes + group, colon_data)): the group term
    keeps its 3 df; the diverging column adds ~1e-8 to R's statistic and 0 in the limit."""
    with pytest.warns(ModelWarning):
        result = fit_cox(dataset("colon"), "time", "status", ["age", "nodes", "group"])
    assert_matches_cox_zph(result.proportional_hazards_test(), "colon_no_events", rtol=1e-6)


def assert_matches_cox_zph(table: pd.DataFrame, model: str, rtol: float) -> None:
    expected = reference("zph", model)
    assert list(table["term"]) == list(expected["term"])
    assert list(table["dof"]) == list(expected["dof"])
    assert_close_to_reference(table["statistic"], expected["statistic"], rtol=rtol)
    assert_close_to_reference(table["p_value"], expected["p_value"], rtol=rtol)


def test_regular_fits_on_unseen_data_match_coxph():
    """coxph(Surv(time, dead) ~ age + edema + log_bili + albumin + sex, pbc_data) with
    concordance and cox.zph; coxph(Surv(tstart, tstop, status) ~ treat + age + inherit, cgd)."""
    pbc = fit_cox(dataset("pbc"), "time", "dead", ["age", "edema", "log_bili", "albumin", "sex"])
    cgd = fit_cox_time_varying(
        dataset("cgd"), "id", "tstart", "tstop", "status", ["treat", "age", "inherit"]
    )
    for model, result in (("pbc", pbc), ("cgd", cgd)):
        expected = reference("cox", model)
        table = result.tidy()
        assert list(table["term"]) == list(expected["term"])
        assert table["estimable"].all() and result.notes == []
        assert_close_to_reference(table["estimate"], expected["estimate"], rtol=1e-7)
        assert_close_to_reference(table["std_error"], expected["std_error"], rtol=1e-7)
        fit = reference("cox_fit", model).iloc[0]
        assert result.log_likelihood == pytest.approx(fit["log_likelihood"], rel=1e-10)
        assert result.concordance == pytest.approx(fit["concordance"], rel=1e-10)
    zph = pbc.proportional_hazards_test()
    expected = reference("zph", "pbc")
    assert_close_to_reference(zph["statistic"], expected["statistic"], rtol=1e-6)


def test_zero_events_is_the_toolkits_error():
    """coxph on data without events reports every coefficient as NA (0 df); the toolkit refuses."""
    data = dataset("pbc").assign(dead=0)
    with pytest.raises(NotEstimableError, match="'dead' has no events"):
        fit_cox(data, "time", "dead", ["age"])
    with pytest.raises(NotEstimableError, match="no events"):
        fit_cox_time_varying(
            dataset("cgd").assign(status=0), "id", "tstart", "tstop", "status", ["age"]
        )


def test_the_issue_frame_gets_no_ridge_penalty():
    """coxph(Surv(t, e) ~ g, d) with no events in level c (the frame of issue 9):
    g[b] -0.5469066, SE 0.9162367; gc -21.19 (SE 17509, R warns "may be infinite")."""
    frame = pd.DataFrame(
        {
            "t": np.arange(1.0, 13.0),
            "e": [1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 0],
            "g": list("abc") * 4,
        }
    )
    frame.loc[frame["g"] == "c", "e"] = 0
    with pytest.warns(ModelWarning, match=r"g\[c\] is not estimable"):
        table = fit_cox(frame, "t", "e", ["g"]).tidy().set_index("term")
    assert table.loc["g[b]", "estimate"] == pytest.approx(-0.5469066, abs=5e-8)
    assert table.loc["g[b]", "std_error"] == pytest.approx(0.9162367, abs=5e-8)
    assert table.loc["g[c]", "estimate"] == -np.inf


# --- Rule 2: event codes follow R (0 = censored) -----------------------------------------------


def test_numeric_codes_read_zero_as_censored_as_survfit():
    """survfit(Surv(etime, factor(status)) ~ 1, mgus_data), summary at 1000, 3000, 6000, 9000."""
    result = cumulative_incidence(dataset("mgus"), "etime", "status")
    expected = reference("cif")
    at = result.at([1000, 3000, 6000, 9000])
    assert set(at["event"]) == {1, 2}
    for event, rows in expected.groupby("event"):
        mine = at[at["event"] == event]
        assert_close_to_reference(mine["estimate"], rows["estimate"], rtol=1e-10)
        assert_close_to_reference(mine["std_error"], rows["std_error"], rtol=1e-8)


def test_a_censoring_label_absent_while_zero_occurs_is_an_error_naming_the_column():
    with pytest.raises(DataError, match=r"column 'status'.*'censored' does not occur, but 0"):
        cumulative_incidence(dataset("mgus"), "etime", "status", censored="censored")
    with pytest.raises(DataError, match=r"column 'status'.*censored=0"):
        fit_fine_gray(dataset("mgus").dropna(), "etime", "status", 1, ["age"], censored="c")


@pytest.mark.parametrize("code", [1, 2])
def test_fine_gray_reads_r_codes_as_crr(code):
    """crr(etime, status, cbind(age, male, mspike), failcode = code, cencode = 0), mgus_data."""
    data = dataset("mgus").dropna()
    table = fit_fine_gray(data, "etime", "status", code, ["age", "male", "mspike"]).tidy()
    expected = reference("crr", f"crr_{code}")
    assert_close_to_reference(table["estimate"], expected["estimate"], rtol=1e-6)
    assert_close_to_reference(table["std_error"], expected["std_error"], rtol=1e-6)


# --- Rule 3: no censoring, empty categories, one event time --------------------------------


def test_fine_gray_without_censoring_matches_crr():
    """crr on the mgus rows with an event (none censored): crr fits it."""
    data = dataset("mgus").dropna()
    data = data[data["status"] != 0]
    with pytest.warns(ModelWarning, match="No row of status is marked censored"):
        table = fit_fine_gray(data, "etime", "status", 1, ["age", "male"]).tidy()
    expected = reference("crr", "crr_no_censoring")
    assert_close_to_reference(table["estimate"], expected["estimate"], rtol=1e-6)
    assert_close_to_reference(table["std_error"], expected["std_error"], rtol=1e-6)


def test_an_unused_category_is_dropped_as_r_drops_an_empty_stratum():
    data = dataset("mgus").assign(sex=lambda d: np.where(d["male"] == 1, "male", "female"))
    categorical = data.assign(
        sex=pd.Categorical(data["sex"], categories=["female", "male", "unknown"])
    )
    plain = cumulative_incidence(data, "etime", "status", group="sex").table
    empty = cumulative_incidence(categorical, "etime", "status", group="sex").table
    pd.testing.assert_frame_equal(plain, empty.astype({"group": object}))
    intervals = data.assign(upper=np.where(data["status"] == 0, np.nan, data["etime"]))
    categorical = categorical.assign(upper=intervals["upper"])
    curves = turnbull(intervals, "etime", "upper", group="sex").survival_at([1000, 5000])
    with_empty = turnbull(categorical, "etime", "upper", group="sex").survival_at([1000, 5000])
    pd.testing.assert_frame_equal(curves, with_empty, check_index_type=False)
    km = kaplan_meier(categorical.assign(dead=categorical["status"] > 0), "etime", "dead", "sex")
    assert list(km.medians["group"]) == ["female", "male"]
    dead = categorical.assign(dead=(categorical["status"] > 0).astype(int))
    stratified = fit_cox(dead, "etime", "dead", ["age"], strata="sex").tidy()
    plain = fit_cox(dead.assign(sex=data["sex"]), "etime", "dead", ["age"], strata="sex").tidy()
    pd.testing.assert_frame_equal(stratified, plain)


def test_proportional_hazards_test_with_one_event_time_is_the_toolkits_error():
    """cox.zph(coxph(Surv(t, e) ~ x)) with every event at t = 1: R stops ("system is exactly
    singular"); the toolkit raises its own error."""
    frame = pd.DataFrame(
        {"t": [1, 1, 1, 2, 3, 4], "e": [1, 1, 1, 0, 0, 0], "x": [1, 2, 3, 1, 2, 3]}
    )
    result = fit_cox(frame, "t", "e", ["x"])
    with pytest.raises(NotEstimableError, match="every event happened at one time"):
        result.proportional_hazards_test()


def test_aliased_aft_term_is_na_as_survreg():
    """survreg(Surv(time, dead) ~ age + albumin + log_bili + I(2 * albumin), pbc_data): NA."""
    data = dataset("pbc").assign(albumin_doubled=lambda d: 2 * d["albumin"])
    with pytest.warns(ModelWarning, match="albumin_doubled is not estimable"):
        result = fit_aft(
            data, ["age", "albumin", "log_bili", "albumin_doubled"], duration="time", event="dead"
        )
    table = result.tidy()
    expected = reference("survreg")
    assert table["estimable"].tolist() == expected["estimate"].notna().tolist()
    assert_close_to_reference(table["estimate"], expected["estimate"], rtol=1e-5)
    assert_close_to_reference(table["std_error"], expected["std_error"], rtol=1e-4)


def test_aft_level_without_events_is_not_estimable_and_the_others_match_survreg():
    """survreg(Surv(time, status) ~ age + nodes + group, colon_data): R stops at 16.58 (SE 1401)
    for the level in which no one died, without a warning; the toolkit marks it +inf."""
    with pytest.warns(ModelWarning, match=r"group\[none_died\] is not estimable.*plus infinity"):
        result = fit_aft(
            dataset("colon"), ["age", "nodes", "group"], duration="time", event="status"
        )
    table = result.tidy().set_index("term")
    assert table.loc["group[none_died]", "estimate"] == np.inf
    assert not table.loc["group[none_died]", "estimable"]
    expected = reference("survreg_diverging").set_index("term").drop(index="group[none_died]")
    others = table.loc[expected.index]
    assert others["estimable"].all()
    assert_close_to_reference(others["estimate"], expected["estimate"], rtol=1e-5)
    assert_close_to_reference(others["std_error"], expected["std_error"], rtol=1e-4)


def test_fine_gray_with_a_level_without_events_refuses_naming_the_term():
    """crr has no finite estimate either; the toolkit says which term runs to infinity."""
    data = dataset("colon")
    with pytest.raises(ConvergenceError, match=r"coefficient of group\[none_died\] runs to"):
        fit_fine_gray(data, "time", "status", 1, ["age", "group"])
