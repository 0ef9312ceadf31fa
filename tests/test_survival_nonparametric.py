"""Kaplan-Meier, log-rank and RMST against R survival 3.5-3.

References come from tests/data/km_reference.R (datasets survival::lung, veteran, ovarian,
exported beside it as km_*.csv); small hand-made cases keep their R code in the docstring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from analysis.errors import DataError, ModelWarning
from analysis.survival.nonparametric import (
    kaplan_meier,
    logrank_test,
    median_difference,
    rmst_difference,
)
from analysis.testing import (
    assert_ci_contains_estimate,
    assert_close_to_reference,
    assert_survival_curve,
)

DATA = Path(__file__).parent / "data"
RTOL = 1e-4
CASES = [("lung", ""), ("lung", "sex"), ("veteran", "celltype"), ("ovarian", "rx")]


def _read(name: str) -> pd.DataFrame:
    # keep_default_na=False: the single-group rows have grouping "" (not missing); R writes NA.
    return pd.read_csv(DATA / name, keep_default_na=False, na_values=["NA"])


@pytest.fixture(scope="module")
def datasets() -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(DATA / f"km_{name}.csv") for name in ("lung", "veteran", "ovarian")}


def _reference(name: str, dataset: str, grouping: str) -> pd.DataFrame:
    frame = _read(name)
    part = frame[(frame["dataset"] == dataset) & (frame["grouping"] == grouping)]
    return part.reset_index(drop=True)


def _assert_matches(actual: pd.DataFrame, reference: pd.DataFrame, columns: list[str]) -> None:
    """Same missing cells (e.g. a median not reached) and R's numbers elsewhere."""
    for column in columns:
        mine, theirs = actual[column].to_numpy(float), reference[column].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), err_msg=column)
        defined = ~np.isnan(theirs)
        assert_close_to_reference(mine[defined], theirs[defined], rtol=RTOL)


def _fit(datasets, dataset: str, grouping: str):
    return kaplan_meier(datasets[dataset], "time", "event", grouping or None)


@pytest.mark.parametrize(("dataset", "grouping"), CASES)
def test_km_medians_and_ci_match_survfit(datasets, dataset, grouping):
    """print(survfit(Surv(time, event) ~ group)): n, events, median, 0.95LCL, 0.95UCL."""
    result = _fit(datasets, dataset, grouping)
    reference = _reference("km_reference_medians.csv", dataset, grouping)
    assert list(result.medians["group"].astype(str)) == list(reference["group"].astype(str))
    _assert_matches(result.tidy(), reference, ["n", "events", "median", "conf_low", "conf_high"])


@pytest.mark.parametrize(("dataset", "grouping"), CASES)
def test_km_curves_match_survfit_log_ci(datasets, dataset, grouping):
    """summary(survfit(...), censored=TRUE): every time, numbers, S(t), SE of S, log CI."""
    curves = _fit(datasets, dataset, grouping).curves
    reference = _reference("km_reference_curves.csv", dataset, grouping)
    assert list(curves["group"].astype(str)) == list(reference["group"].astype(str))
    columns = ["time", "n_risk", "n_event", "n_censor", "survival", "std_error"]
    _assert_matches(curves, reference, [*columns, "conf_low", "conf_high"])


@pytest.mark.parametrize(("dataset", "grouping"), CASES)
def test_survival_at_and_numbers_at_risk_match_summary_times(datasets, dataset, grouping):
    """summary(survfit(...), times = c(0, 30, 100, 200.5, 365, 500), extend = TRUE)."""
    result = _fit(datasets, dataset, grouping)
    times = [0, 30, 100, 200.5, 365, 500]
    reference = _reference("km_reference_at_times.csv", dataset, grouping)
    at = result.survival_at(times)
    _assert_matches(at, reference, ["time", "n_risk", "survival", "std_error"])
    _assert_matches(at, reference, ["conf_low", "conf_high"])
    risk_table = result.at_risk(times)
    assert list(risk_table["n_risk"]) == list(reference["n_risk"].astype(int))


def test_midpoint_median_when_survival_is_exactly_one_half():
    """R: summary(survfit(Surv(c(1, 2, 3, 4), c(1, 1, 1, 1)) ~ 1))$table
    median 2.5, 0.95LCL 1, 0.95UCL NA, rmean (to t = 4) 2.5, se(rmean) 0.559016994374947.
    """
    frame = pd.DataFrame({"time": [1, 2, 3, 4], "event": [1, 1, 1, 1], "arm": ["a"] * 4})
    medians = kaplan_meier(frame, "time", "event").medians
    assert medians.loc[0, "median"] == 2.5
    assert medians.loc[0, "conf_low"] == 1.0
    assert np.isnan(medians.loc[0, "conf_high"])


def test_censored_hand_case_survival_at_and_median():
    """R: fit <- survfit(Surv(c(1, 2, 2, 3, 5, 6), c(1, 0, 1, 1, 0, 0)) ~ 1)
    summary(fit)$table: median 3, 0.95LCL 2, 0.95UCL NA
    summary(fit, times = c(0.5, 2, 4, 7), extend = TRUE): n.risk 6 5 2 0;
    surv 1 0.666666666666667 0.444444444444444 0.444444444444444;
    lower 1 0.378606460887095 0.166807936628079 0.166807936628079; upper 1 1 1 1.
    """
    frame = pd.DataFrame({"time": [1, 2, 2, 3, 5, 6], "event": [1, 0, 1, 1, 0, 0]})
    result = kaplan_meier(frame, "time", "event")
    assert result.medians.loc[0, ["median", "conf_low"]].tolist() == [3.0, 2.0]
    at = result.survival_at([0.5, 2, 4, 7])
    assert at["n_risk"].tolist() == [6, 5, 2, 0]
    assert_close_to_reference(
        at["survival"], [1, 0.666666666666667, 0.444444444444444, 0.444444444444444], RTOL
    )
    assert_close_to_reference(
        at["conf_low"], [1, 0.378606460887095, 0.166807936628079, 0.166807936628079], RTOL
    )
    assert_close_to_reference(at["conf_high"], [1, 1, 1, 1], RTOL)


def test_median_not_reached_is_missing():
    frame = pd.DataFrame({"time": [1, 2, 3, 4, 5], "event": [1, 0, 0, 0, 0]})
    medians = kaplan_meier(frame, "time", "event").medians
    assert medians[["median", "conf_high"]].isna().all(axis=None)


@pytest.mark.parametrize(("dataset", "grouping"), CASES)
def test_curves_are_survival_functions_and_cis_contain_them(datasets, dataset, grouping):
    result = _fit(datasets, dataset, grouping)
    for _, curve in result.curves.groupby("group"):
        assert_survival_curve(curve["survival"])
        assert_ci_contains_estimate(curve, estimate="survival")
    assert_ci_contains_estimate(result.medians, estimate="median")
    assert set(result.fitted) == set(result.medians["group"])


def test_missing_rows_are_dropped_with_a_note():
    frame = pd.DataFrame(
        {"time": [1, 2, np.nan, 4], "event": [1, 1, 1, 0], "g": ["a", "b", "a", None]}
    )
    with pytest.warns(ModelWarning, match="2 row"):
        result = kaplan_meier(frame, "time", "event", "g")
    assert result.medians["n"].sum() == 2
    assert result.notes


def test_event_must_be_binary():
    frame = pd.DataFrame({"time": [1, 2], "event": [1, 2]})
    with pytest.raises(DataError, match="event"):
        kaplan_meier(frame, "time", "event")


LOGRANK_CASES = {
    "two_groups": ("lung", "sex", None),
    "four_groups": ("veteran", "celltype", None),
    "stratified": ("veteran", "trt", "celltype"),
}


@pytest.mark.parametrize("case", list(LOGRANK_CASES))
def test_logrank_matches_survdiff(datasets, case):
    """survdiff(Surv(time, event) ~ sex, lung); ~ celltype, veteran;
    ~ trt + strata(celltype), veteran (see km_reference.R)."""
    dataset, group, strata = LOGRANK_CASES[case]
    result = logrank_test(datasets[dataset], "time", "event", group, strata=strata)
    reference = pd.read_csv(DATA / "logrank_reference.csv").set_index("case").loc[case]
    groups = pd.read_csv(DATA / "logrank_reference_groups.csv")
    groups = groups[groups["case"] == case]
    assert result.dof == reference["dof"]
    assert_close_to_reference(
        [result.statistic, result.p_value], [reference["statistic"], reference["p_value"]], RTOL
    )
    assert list(result.groups["n"]) == list(groups["n"])
    assert_close_to_reference(result.groups["observed"], groups["observed"], RTOL)
    assert_close_to_reference(result.groups["expected"], groups["expected"], RTOL)
    assert list(result.tidy().columns) == ["term", "statistic", "dof", "p_value"]


def test_unstratified_logrank_agrees_with_lifelines(datasets):
    veteran = datasets["veteran"]
    theirs = multivariate_logrank_test(veteran["time"], veteran["celltype"], veteran["event"])
    mine = logrank_test(veteran, "time", "event", "celltype")
    assert_close_to_reference([mine.statistic], [theirs.test_statistic], 1e-10)


@pytest.mark.parametrize(("dataset", "grouping"), [c for c in CASES if c[1]])
def test_rmst_per_group_and_difference_match_r(datasets, dataset, grouping):
    """Per group: print(survfit(...), rmean = 365) rmean and se(rmean); differences as
    survRM2::rmst2 (later level minus first, SE sqrt(se1^2 + se2^2)), see km_reference.R."""
    result = rmst_difference(datasets[dataset], "time", "event", grouping, horizon=365)
    per_group = _reference("rmst_reference.csv", dataset, grouping)
    assert_close_to_reference(result.per_group["rmst"], per_group["rmst"], RTOL)
    assert_close_to_reference(result.per_group["std_error"], per_group["std_error"], RTOL)
    reference = _reference("rmst_reference_difference.csv", dataset, grouping)
    tidy = result.tidy()
    assert list(tidy["term"]) == list(reference["term"])
    for column in ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"):
        assert_close_to_reference(tidy[column], reference[column], RTOL)


def test_rmst_single_group_matches_r(datasets):
    """print(survfit(Surv(time, event) ~ 1, lung), rmean = 365):
    rmean 263.221866482007, se(rmean) 7.79885908631446 (the same sample twice: difference 0).
    """
    lung = datasets["lung"]
    twice = pd.concat([lung.assign(copy="first"), lung.assign(copy="second")])
    result = rmst_difference(twice, "time", "event", "copy", horizon=365)
    assert_close_to_reference(result.per_group["rmst"], [263.221866482007] * 2, RTOL)
    assert_close_to_reference(result.per_group["std_error"], [7.79885908631446] * 2, RTOL)
    assert result.tidy().loc[0, "estimate"] == 0


def test_curves_equal_lifelines_kaplan_meier_fitter_exactly():
    """The array-level estimate sums log(1 - d/n) as lifelines does: the same numbers, bit for
    bit, with ties between events and censorings and a last time where everyone dies."""
    rng = np.random.default_rng(11)
    durations = rng.integers(1, 40, 500).astype(float)
    events = (rng.random(500) < 0.7).astype(float)
    events[durations == durations.max()] = 1.0
    frame = pd.DataFrame({"t": durations, "e": events})
    curve = kaplan_meier(frame, "t", "e").curves
    fitter = KaplanMeierFitter().fit(durations, events)
    table = fitter.event_table[fitter.event_table["removed"] > 0]
    np.testing.assert_array_equal(curve["time"], table.index.to_numpy(float))
    np.testing.assert_array_equal(curve["n_risk"], table["at_risk"])
    np.testing.assert_array_equal(curve["n_event"], table["observed"])
    np.testing.assert_array_equal(curve["n_censor"], table["censored"])
    np.testing.assert_array_equal(
        curve["survival"], fitter.survival_function_at_times(curve["time"]).to_numpy()
    )


# --- difference of medians (percentile bootstrap) ----------------------------------------------


def _exponential_groups(rng, medians: dict, n: int, follow_up: float) -> pd.DataFrame:
    """Exponential times with the given medians, censored uniformly and at `follow_up`."""
    parts = []
    for level, median in medians.items():
        times = rng.exponential(median / np.log(2), n)
        censor = np.minimum(rng.uniform(0, 3 * follow_up, n), follow_up)
        parts.append(
            pd.DataFrame({"g": level, "t": np.minimum(times, censor).round(), "e": times <= censor})
        )
    return pd.concat(parts, ignore_index=True)


def test_median_difference_is_the_difference_of_survfits_medians_against_the_reference():
    frame = _exponential_groups(np.random.default_rng(1), {"a": 60, "b": 90, "c": 120}, 80, 400)
    medians = kaplan_meier(frame, "t", "e", "g").medians.set_index("group")["median"]
    result = median_difference(frame, "t", "e", "g", samples=200, seed=3, reference="b")
    table = result.tidy().set_index("term")
    assert list(table.index) == ["a - b", "c - b"]
    assert table.loc["a - b", "estimate"] == medians["a"] - medians["b"]
    assert table.loc["c - b", "estimate"] == medians["c"] - medians["b"]
    for term, row in table.iterrows():
        assert row.conf_low <= row.estimate <= row.conf_high, term
    again = median_difference(frame, "t", "e", "g", samples=200, seed=3, reference="b")
    pd.testing.assert_frame_equal(again.tidy(), result.tidy())
    with pytest.raises(DataError, match="reference group 'z' is not among the groups"):
        median_difference(frame, "t", "e", "g", samples=10, seed=3, reference="z")


def test_median_difference_resamples_are_kaplan_meier_medians_of_the_resampled_people():
    """The vectorised resamples against survfit's median of each resample, one at a time (the
    same draws: people picked with replacement within each group, reference group first)."""
    frame = _exponential_groups(np.random.default_rng(2), {"a": 50, "b": 70}, 40, 200)
    samples, seed = 30, 8
    result = median_difference(frame, "t", "e", "g", samples=samples, seed=seed, reference="a")
    rng = np.random.default_rng(seed)
    boot = {}
    for level in ("a", "b"):
        rows = frame[frame["g"] == level].reset_index(drop=True)
        picks = rng.integers(0, len(rows), size=(samples, len(rows)))
        boot[level] = np.array(
            [kaplan_meier(rows.iloc[pick], "t", "e").medians["median"].iloc[0] for pick in picks]
        )
    differences = np.sort(np.where(np.isnan(boot["b"]), np.inf, boot["b"]) - boot["a"])
    expected = np.quantile(differences, [0.025, 0.975], method="inverted_cdf")
    row = result.tidy().iloc[0]
    assert [row.conf_low, row.conf_high] == list(expected)
    assert row.std_error == pytest.approx(np.std(differences, ddof=1))


def test_median_difference_interval_covers_the_true_difference():
    """Coverage on the simulator's kind of data: exponential times, medians 10 and 14 weeks,
    uniform dropout, 120 people per group; 60 studies, 300 resamples each. The true difference
    is 28 days; a 95% interval should miss it about 3 times in 60 (binomial SD ~1.7)."""
    rng = np.random.default_rng(20261130)
    covered = []
    for study in range(60):
        frame = _exponential_groups(rng, {"slow": 98, "fast": 70}, 120, 280)
        row = median_difference(frame, "t", "e", "g", samples=300, seed=study, reference="fast")
        table = row.tidy().iloc[0]
        covered.append(table.conf_low <= 28 <= table.conf_high)
    assert np.mean(covered) >= 0.85


def test_a_median_not_reached_gives_no_difference_and_says_why():
    rng = np.random.default_rng(4)
    frame = _exponential_groups(rng, {"a": 30, "b": 5000}, 60, 100)
    with pytest.warns(ModelWarning, match="b - a: a median is not reached"):
        result = median_difference(frame, "t", "e", "g", samples=100, seed=1, reference="a")
    row = result.tidy().iloc[0]
    assert np.isnan(row.estimate) and np.isnan(row.conf_low) and np.isnan(row.conf_high)
    assert any("not reached" in note for note in result.notes)
