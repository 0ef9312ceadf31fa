"""Turnbull curves against R's survfit for Surv(lower, upper, type = "interval2").

References: tests/data/turnbull_reference.R wrote turnbull_curves.csv (every time of each curve)
and turnbull_survival_at.csv (summary(fit, times = ...)) for
    survfit(Surv(lower, upper, type = "interval2") ~ 1, data = lung_interval)   # and ~ sex
    survfit(Surv(lower, upper, type = "interval2") ~ 1, data = small)           # and ~ group
survfit stops its EM when the curve moves less than 5e-5 per step, so its curve is within about
1e-3 of the converged NPMLE; the largest absolute difference seen is 7e-4 (small, group b) and
4.3e-4 on lung (day 105, an exact death at the midpoint of a visit interval).
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from analysis.errors import DataError, ModelWarning
from analysis.results import TIDY_COLUMNS
from analysis.survival.interval import (
    TurnbullFit,
    TurnbullResult,
    turnbull,
    turnbull_each,
    turnbull_replicates,
)
from analysis.testing import assert_survival_curve

DATA = Path(__file__).parent / "data"
ABSOLUTE_TOLERANCE = 1e-3
CASES = {
    "lung": ("turnbull_lung_interval.csv", None),
    "lung_by_sex": ("turnbull_lung_interval.csv", "sex"),
    "small": ("turnbull_small.csv", None),
    "small_by_group": ("turnbull_small.csv", "group"),
}


@cache
def fitted(case: str) -> TurnbullResult:
    file, group = CASES[case]
    return turnbull(pd.read_csv(DATA / file), "lower", "upper", group=group)


@pytest.mark.parametrize("case", list(CASES))
def test_curve_matches_survfit(case: str) -> None:
    reference = pd.read_csv(DATA / "turnbull_curves.csv")
    reference = reference[reference.dataset == case]
    curves = fitted(case).curves
    assert list(curves["group"].astype(str)) == list(reference["group"])
    np.testing.assert_array_equal(curves["time"], reference["time"])
    np.testing.assert_allclose(curves["survival"], reference["survival"], atol=ABSOLUTE_TOLERANCE)


@pytest.mark.parametrize("case", list(CASES))
def test_survival_at_matches_summary_of_survfit(case: str) -> None:
    reference = pd.read_csv(DATA / "turnbull_survival_at.csv")
    reference = reference[reference.dataset == case]
    result = fitted(case)
    for group, expected in reference.groupby("group"):
        actual = result.survival_at(expected["time"].to_numpy()).loc[group]
        np.testing.assert_allclose(actual, expected["survival"], atol=ABSOLUTE_TOLERANCE)


@pytest.mark.parametrize("case", list(CASES))
def test_curves_are_survival_curves(case: str) -> None:
    result = fitted(case)
    for _, curve in result.curves.groupby("group"):
        assert_survival_curve(curve["survival"])
    for fit in result.fitted.values():
        assert fit.converged
        assert fit.mass.sum() == pytest.approx(1 - fit.survival[-1])


def test_tidy_is_the_curve() -> None:
    result = fitted("lung_by_sex")
    table = result.tidy()
    assert tuple(table.columns) == ("group", "time", *TIDY_COLUMNS)
    np.testing.assert_array_equal(table["estimate"], result.curves["survival"])
    assert (table["term"] == "survival").all()


def test_survival_at_before_the_first_time_is_one() -> None:
    at = fitted("lung").survival_at([0.0, 1.0])
    np.testing.assert_array_equal(at.to_numpy(), [[1.0, 1.0]])


def test_without_interval_rows_it_is_kaplan_meier() -> None:
    lung = pd.read_csv(DATA / "aft_lung.csv")
    frame = lung.assign(upper=np.where(lung["status"] == 1, lung["time"], np.nan))
    result = turnbull(frame, "time", "upper")
    km = KaplanMeierFitter().fit(lung["time"], lung["status"])
    expected = km.survival_function_at_times(result.curves["time"]).to_numpy()
    np.testing.assert_allclose(result.curves["survival"], expected, rtol=1e-12)


def test_is_deterministic() -> None:
    data = pd.read_csv(DATA / "turnbull_lung_interval.csv")
    first = turnbull(data, "lower", "upper", group="sex")
    second = turnbull(data, "lower", "upper", group="sex")
    pd.testing.assert_frame_equal(first.curves, second.curves, check_exact=True)


def test_replicates_fitted_side_by_side_are_those_fitted_one_by_one() -> None:
    """The EMs run as one batch (rows of different lengths, stopping at different iterations,
    the batch rebuilt as they stop) give each replicate's numbers bit for bit; a replicate
    without censored rows is its Kaplan-Meier curve."""
    data = pd.read_csv(DATA / "turnbull_lung_interval.csv")
    low, high = data["lower"].to_numpy(float), data["upper"].to_numpy(float)
    rng = np.random.default_rng(3)
    picks = [rng.integers(0, len(data), size) for size in rng.integers(5, len(data), 40)]
    picks.append(np.flatnonzero(np.isnan(high)))
    together = turnbull_replicates(low, high, picks)
    assert len({fit.iterations for fit in together}) > 5
    for pick, fit in zip(picks, together, strict=True):
        (alone,) = turnbull_replicates(low, high, [pick])
        for name in ("support", "mass", "times", "survival"):
            assert getattr(fit, name).tobytes() == getattr(alone, name).tobytes()
        assert (fit.iterations, fit.converged) == (alone.iterations, alone.converged)
    assert together[-1].iterations == 0


def test_turnbull_each_gives_each_frame_its_turnbull_and_its_own_notes() -> None:
    data = pd.read_csv(DATA / "turnbull_lung_interval.csv")
    gap = pd.DataFrame({"lower": [np.nan], "upper": [np.nan], "sex": [1]})
    frames = [data, pd.concat([data.iloc[:40], gap], ignore_index=True), data.iloc[40:]]
    results = turnbull_each(frames, "lower", "upper", group="sex")
    note_counts = []
    for frame, result in zip(frames, results, strict=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            together = result()
        with warnings.catch_warnings(record=True) as alone_caught:
            warnings.simplefilter("always")
            alone = turnbull(frame, "lower", "upper", group="sex")
        pd.testing.assert_frame_equal(together.curves, alone.curves, check_exact=True)
        assert together.notes == alone.notes
        assert [str(w.message) for w in caught] == [str(w.message) for w in alone_caught]
        note_counts.append(len(together.notes))
    assert note_counts == [0, 1, 0]


def test_turnbull_each_raises_a_frames_error_when_its_result_is_asked_for() -> None:
    good = pd.read_csv(DATA / "turnbull_small.csv")
    reversed_bounds = pd.DataFrame({"lower": [2.0, 1.0], "upper": [1.0, 3.0]})
    first, second = turnbull_each([reversed_bounds, good], "lower", "upper")
    pd.testing.assert_frame_equal(second().curves, fitted("small").curves, check_exact=True)
    with pytest.raises(DataError, match="lower bound above"):
        first()


def test_rows_without_bounds_are_dropped_with_a_note() -> None:
    data = pd.read_csv(DATA / "turnbull_small.csv")
    with_gap = pd.concat([data, pd.DataFrame({"lower": [np.nan], "upper": [np.nan]})])
    with pytest.warns(ModelWarning, match="1 row"):
        result = turnbull(with_gap, "lower", "upper")
    pd.testing.assert_frame_equal(result.curves, fitted("small").curves)


def test_bad_bounds_raise() -> None:
    with pytest.raises(DataError, match="lower bound above"):
        turnbull(pd.DataFrame({"lower": [2.0, 1.0], "upper": [1.0, 3.0]}), "lower", "upper")
    with pytest.raises(DataError, match="not in the frame"):
        turnbull(pd.DataFrame({"lower": [1.0]}), "lower", "upper")


def test_quantile_is_the_first_time_the_curve_reaches_it() -> None:
    curve = TurnbullFit(
        support=np.array([]),
        mass=np.array([]),
        times=np.array([7.0, 14.0, 21.0]),
        survival=np.array([0.8, 0.5, 0.2]),
        iterations=1,
        converged=True,
    )
    assert curve.quantile(0.1) == 7.0
    assert curve.quantile(0.5) == 14.0
    assert np.isnan(curve.quantile(0.9))
