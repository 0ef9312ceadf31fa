"""Out-of-sample checks of any survival model: folds, Harrell's C, IPCW Brier, calibration.

Generic over a frame and its column names; what is predicted (and how) is the caller's. The
checks follow the usual definitions: Harrell's C as survival::concordance, the Brier score with
Graf et al.'s inverse-probability-of-censoring weights, and calibration as predicted against
observed event probability within groups of predicted probability.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis.results import run_collecting_notes
from analysis.survival.cox import concordance_index
from analysis.survival.interval import turnbull_each
from analysis.survival.nonparametric import kaplan_meier_steps, step_function_at

FOLD = "fold"
CALIBRATION_GROUP_COLUMNS = ("group", "n", "predicted", "observed")


def fold_assignment(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced random folds 0 .. folds-1: a seeded permutation dealt out round-robin."""
    assignment = np.empty(n, dtype=int)
    assignment[rng.permutation(n)] = np.arange(n) % folds
    return assignment


def cross_validated(
    frame: pd.DataFrame,
    folds: int,
    rng: np.random.Generator,
    fit_predict: Callable[[int, pd.DataFrame, pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame:
    """Out-of-fold predictions: `fit_predict(fold, train, test)` per fold, stacked.

    `fit_predict` fits on `train` and returns one row per held-out row it can predict, indexed
    as `test` (it may leave rows out and say why); the result gains a 1-based `fold` column.
    """
    assignment = fold_assignment(len(frame), folds, rng)
    parts = []
    for fold in range(folds):
        held_out = assignment == fold
        predicted = fit_predict(fold + 1, frame[~held_out], frame[held_out])
        parts.append(predicted.assign(**{FOLD: fold + 1}))
    return pd.concat(parts)


def harrell_c(frame: pd.DataFrame, risk: str, duration: str, event: str) -> float:
    """Harrell's C of `risk` (higher means the event comes sooner), one stratum, no late entry.

    survival::concordance's conventions: risk ties count 1/2, event-time ties are not
    comparable, a subject censored at an event time is.
    """
    durations = frame[duration].to_numpy(float)
    return concordance_index(
        frame[risk].to_numpy(float),
        durations,
        frame[event].astype(int).to_numpy(),
        np.zeros(len(durations), dtype=int),
        np.full(len(durations), -np.inf),
    )


def censoring_survival(
    frame: pd.DataFrame, duration: str, event: str
) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier of the censoring time G(t) (an event counts as censoring for it)."""
    return kaplan_meier_steps(
        frame[duration].to_numpy(float), ~frame[event].astype(bool).to_numpy()
    )


def ipcw_brier_scores(
    frame: pd.DataFrame,
    predicted_survival: np.ndarray,
    duration: str,
    event: str,
    times: np.ndarray,
    censoring: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Graf et al.'s IPCW Brier score at each of `times` for predicted S(t) (rows x times).

    `censoring` is G(t) as `censoring_survival` returns it; the weights assume censoring
    independent of the covariates.
    """
    durations = frame[duration].to_numpy(float)
    events = frame[event].astype(bool).to_numpy()
    censoring_times, censoring_curve = censoring
    # G(T_i-) for people with the event by t; G(t) for people still event-free at t.
    at_event = step_function_at(censoring_times, censoring_curve, durations - 1e-9)
    at_time = step_function_at(censoring_times, censoring_curve, times)
    event_by = events[:, None] & (durations[:, None] <= times[None, :])
    still_waiting = durations[:, None] > times[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(event_by, predicted_survival**2 / at_event[:, None], 0.0) + np.where(
            still_waiting, (1 - predicted_survival) ** 2 / at_time[None, :], 0.0
        )
    return score.mean(axis=0)


def integrated_brier_score(times: np.ndarray, scores: np.ndarray) -> float:
    """The Brier score averaged over the time window (trapezoid integral / window length)."""
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def calibration_by_groups(
    frame: pd.DataFrame, predicted: str, lower: str, upper: str, time: float, groups: int
) -> tuple[pd.DataFrame, list[str]]:
    """Mean predicted P(event by `time`) against the observed share, per group of prediction.

    Rows are ranked on `predicted` and cut into `groups` groups of (nearly) equal size; the
    observed share is 1 - Turnbull S(time) of the group's (lower, upper] intervals (right
    censoring is upper missing), so visit-detected events are compared like for like. Returns
    the table and the Turnbull fits' notes.
    """
    ranks = frame[predicted].rank(method="first")
    group = pd.qcut(ranks, min(groups, len(frame)), labels=False) + 1
    rows, notes = [], []
    grouped = list(frame.groupby(group))
    # The groups' curves fitted side by side; each group's notes collected on their own.
    results = turnbull_each([members for _, members in grouped], lower, upper)
    for (number, members), result in zip(grouped, results, strict=True):
        curve, fit_notes = run_collecting_notes("turnbull", result, failures=())
        notes.extend(f"group {number}: {message}" for _, _, message in fit_notes)
        fit = next(iter(curve.fitted.values()))
        survival = step_function_at(fit.times, fit.survival, np.array([time]))
        rows.append(
            {
                "group": int(number),
                "n": len(members),
                "predicted": float(members[predicted].mean()),
                "observed": float(1 - survival[0]),
            }
        )
    return pd.DataFrame(rows, columns=list(CALIBRATION_GROUP_COLUMNS)), notes
