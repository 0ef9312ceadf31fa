"""Generic out-of-sample checks: folds, Harrell's C, the IPCW Brier score, calibration groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index as lifelines_concordance

from analysis.survival.validation import (
    calibration_by_groups,
    censoring_survival,
    cross_validated,
    fold_assignment,
    harrell_c,
    integrated_brier_score,
    ipcw_brier_scores,
)


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    rng = np.random.default_rng(20261130)
    n = 200
    risk = rng.normal(size=n)
    time = np.round(rng.exponential(30 * np.exp(-risk)), 1) + 0.5
    censor = rng.uniform(5, 80, n)
    return pd.DataFrame(
        {
            "risk": risk,
            "time": np.minimum(time, censor),
            "event": (time <= censor).astype(int),
        }
    )


def test_folds_are_balanced_and_seeded():
    first = fold_assignment(23, 5, np.random.default_rng(1))
    assert sorted(np.bincount(first)) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(first, fold_assignment(23, 5, np.random.default_rng(1)))


def test_cross_validation_predicts_every_row_once_from_the_other_folds(people):
    seen = []

    def fit_predict(fold, train, test):
        assert not set(train.index) & set(test.index)
        seen.append(fold)
        return pd.DataFrame({"train_size": len(train)}, index=test.index)

    pooled = cross_validated(people, 4, np.random.default_rng(3), fit_predict)
    assert seen == [1, 2, 3, 4]
    assert sorted(pooled.index) == list(people.index)
    assert (
        pooled["train_size"] == len(people) - pooled.groupby("fold")["fold"].transform("size")
    ).all()


def test_harrell_c_agrees_with_lifelines(people):
    """lifelines' concordance_index takes a predicted time (longer = later): risk is negated.

    survival::concordance's conventions (the toolkit's) and lifelines' agree on right-censored
    data without late entry.
    """
    expected = lifelines_concordance(people["time"], -people["risk"], people["event"])
    assert harrell_c(people, "risk", "time", "event") == pytest.approx(expected, rel=1e-12)


def test_brier_without_censoring_is_the_mean_squared_error_of_the_indicator(people):
    everyone = people.assign(event=1)
    times = np.array([10.0, 20.0, 40.0])
    predicted = np.tile([0.7, 0.5, 0.2], (len(everyone), 1))
    censoring = censoring_survival(everyone, "time", "event")
    scores = ipcw_brier_scores(everyone, predicted, "time", "event", times, censoring)
    alive = (everyone["time"].to_numpy()[:, None] > times[None, :]).astype(float)
    np.testing.assert_allclose(scores, ((alive - predicted) ** 2).mean(axis=0), rtol=1e-12)
    assert integrated_brier_score(times, np.array([0.1, 0.1, 0.1])) == pytest.approx(0.1)


def test_brier_weights_people_still_waiting_by_the_censoring_curve(people):
    """Graf's weights: 1/G(t) for people event-free at t, 1/G(T-) for events by t."""
    times = np.array([15.0])
    predicted = np.full((len(people), 1), 0.6)
    censoring = censoring_survival(people, "time", "event")
    (score,) = ipcw_brier_scores(people, predicted, "time", "event", times, censoring)
    grid, curve = censoring

    def g(at):
        position = np.searchsorted(grid, at, side="right") - 1
        return curve[position] if position >= 0 else 1.0

    total = 0.0
    for row in people.itertuples():
        if row.time <= 15 and row.event:
            total += 0.6**2 / g(row.time - 1e-9)
        elif row.time > 15:
            total += 0.4**2 / g(15.0)
    assert score == pytest.approx(total / len(people), rel=1e-12)


def test_calibration_groups_compare_mean_prediction_with_the_observed_share():
    rng = np.random.default_rng(5)
    n = 100
    predicted = rng.uniform(0, 1, n)
    happened = rng.uniform(0, 1, n) < predicted
    frame = pd.DataFrame(
        {
            "predicted": predicted,
            "lower": np.where(happened, 5.0, 20.0),
            "upper": np.where(happened, 10.0, np.nan),
        }
    )
    table, notes = calibration_by_groups(frame, "predicted", "lower", "upper", 15.0, 4)
    assert table["n"].tolist() == [25, 25, 25, 25] and notes == []
    ranked = frame.assign(group=pd.qcut(frame["predicted"].rank(method="first"), 4, labels=False))
    by_group = ranked.groupby("group")
    np.testing.assert_allclose(table["predicted"], by_group["predicted"].mean(), rtol=1e-12)
    np.testing.assert_allclose(table["observed"], by_group["upper"].count() / 25, atol=1e-9)
