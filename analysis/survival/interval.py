"""Turnbull's nonparametric survival curve for interval-censored data, as R's survfit.

lifelines' `KaplanMeierFitter.fit_interval_censoring` treats bounds as closed intervals and
differs from R by several percent when visits share days, so the estimator is written here with
survival's own support points and its KM-within-EM iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from analysis.errors import DataError
from analysis.results import TIDY_COLUMNS, ModelResult

ALL_ROWS = "all"
_TOLERANCE = 1e-10
# A bootstrap replicate is read only for where its curve crosses a level (a quantile): its EM
# stops at this change, which moves a quantile only where the curve lies within about this
# of the level at a support point (the published curves stop at _TOLERANCE).
REPLICATE_TOLERANCE = 1e-6
_MAX_ITERATIONS = 100_000
# A curve counts as having reached a level within this (its values are sums of EM masses).
_LEVEL_TOLERANCE = np.sqrt(np.finfo(float).eps)

# survival's status codes for Surv(type="interval2") rows.
_RIGHT, _EXACT, _LEFT, _INTERVAL = 0, 1, 2, 3
# The sort code of each status's end at its time (see _support): exact 0, left end of an
# interval or right-censoring 2, a left-censored row's time 1 (a right end).
_END_CODES = np.array([2, 0, 1, 2])


@dataclass
class TurnbullFit:
    """One group's NPMLE: support points, the probability mass on each, and the curve."""

    support: np.ndarray
    mass: np.ndarray
    times: np.ndarray
    survival: np.ndarray
    iterations: int
    converged: bool

    def quantile(self, probability: float) -> float:
        """The time by which `probability` of people had the event: the first time the
        right-continuous curve is <= 1 - probability (NaN if it never gets there)."""
        reached = np.flatnonzero(self.survival <= 1.0 - probability + _LEVEL_TOLERANCE)
        return float(self.times[reached[0]]) if reached.size else np.nan


@dataclass
class TurnbullResult(ModelResult):
    """Turnbull survival curves per group (`fitted` maps group -> TurnbullFit)."""

    curves: pd.DataFrame = field(default_factory=pd.DataFrame)

    def survival_at(self, times: list[float] | np.ndarray) -> pd.DataFrame:
        """S(t) per group (rows) at the given times (columns), right-continuous steps.

        Within a Turnbull interval the NPMLE is not unique; like survfit, the mass of each
        innermost interval is placed at its midpoint, so S(t) drops there.
        """
        times = np.asarray(times, dtype=float)
        rows = {}
        for group, fit in self.fitted.items():
            position = np.searchsorted(fit.times, times, side="right") - 1
            rows[group] = np.where(position >= 0, fit.survival[np.maximum(position, 0)], 1.0)
        frame = pd.DataFrame(rows, index=times).T
        frame.index.name, frame.columns.name = "group", "time"
        return frame


def turnbull(df: pd.DataFrame, lower: str, upper: str, group: str | None = None) -> TurnbullResult:
    """Turnbull NPMLE of S(t) from interval-censored rows (lower, upper], as survfit's interval2.

    Upper missing/infinite = right-censored at lower; lower missing = left-censored at upper;
    lower == upper = exact. An unused category of a categorical `group` is left out, as R
    drops an empty stratum. The EM is run to a change below 1e-10 (survfit stops at 5e-5, so
    its curve can differ from the converged NPMLE in the 4th decimal). No standard errors:
    survfit's are not valid for the NPMLE.
    """
    (result,) = turnbull_each([df], lower, upper, group)
    return result()


def turnbull_each(
    frames: list[pd.DataFrame], lower: str, upper: str, group: str | None = None
) -> list[Callable[[], TurnbullResult]]:
    """`turnbull` of each frame, all their curves' EMs run side by side: per frame, a function
    that returns its result and issues its notes, or raises its error (a missing column, a
    lower bound above the upper), so a caller can take each frame's apart."""
    prepared = []
    for df in frames:
        try:
            notes, groups = _turnbull_groups(df, lower, upper, group)
            curves = [
                _curve(rows[lower].to_numpy(float), rows[upper].to_numpy(float), lower)
                for rows in groups.values()
            ]
        except DataError as error:
            prepared.append(error)
        else:
            prepared.append((notes, groups, curves))
    fits = iter(
        _fit_curves(
            [curve for part in prepared if isinstance(part, tuple) for curve in part[2]],
            _TOLERANCE,
        )
    )
    return [
        partial(_turnbull_result, {name: next(fits) for name in part[1]}, part[0])
        if isinstance(part, tuple)
        else partial(_raise, part)
        for part in prepared
    ]


def _raise(error: Exception):
    raise error


def _turnbull_groups(
    df: pd.DataFrame, lower: str, upper: str, group: str | None
) -> tuple[list[str], dict]:
    """The notes on rows left out, and the rows of each group's curve."""
    for name in (lower, upper, group):
        if name is not None and name not in df:
            raise DataError("column not in the frame", column=name)
    notes = []
    no_bounds = df[lower].isna() & df[upper].isna()
    if no_bounds.any():
        notes.append(
            f"{int(no_bounds.sum())} row(s) were left out because they have neither bound, "
            "so they say nothing about when the event happened."
        )
    used = df.loc[~no_bounds]
    if group is not None and used[group].isna().any():
        notes.append(
            f"{int(used[group].isna().sum())} row(s) were left out because their {group} is "
            "missing, so they belong to no group's curve."
        )
        used = used.loc[used[group].notna()]
    groups = (
        {ALL_ROWS: used}
        if group is None
        else {name: rows for name, rows in used.groupby(group, sort=True, observed=True)}
    )
    return notes, groups


def _turnbull_result(fits: dict, notes: list[str]) -> TurnbullResult:
    """The result of the groups' fits, its notes (those given, then convergence) issued."""
    notes = list(notes)
    for name, fit in fits.items():
        if not fit.converged:
            notes.append(
                f"The Turnbull estimate for group {name!r} stopped after {fit.iterations} "
                "iterations without converging, so its curve may still change in the later "
                "decimals."
            )
    curves = pd.concat(
        [
            pd.DataFrame({"group": name, "time": fit.times, "survival": fit.survival})
            for name, fit in fits.items()
        ],
        ignore_index=True,
    )
    tidy = curves.rename(columns={"survival": "estimate"}).assign(term="survival")
    for column in TIDY_COLUMNS:
        if column not in tidy:
            tidy[column] = np.nan
    result = TurnbullResult(
        fitted=fits, coefficients=tidy[["group", "time", *TIDY_COLUMNS]], curves=curves
    )
    for message in notes:
        result.note(message)
    return result


def _status(low: np.ndarray, high: np.ndarray, column: str) -> np.ndarray:
    """survival's interval2 status per row: 0 right, 1 exact, 2 left, 3 interval."""
    open_above = np.isnan(high) | np.isposinf(high)
    open_below = np.isnan(low) | np.isneginf(low)
    if np.any(~open_above & ~open_below & (low > high)):
        raise DataError("lower bound above upper bound", column=column)
    return np.select(
        [open_above, open_below, low == high], [_RIGHT, _LEFT, _EXACT], default=_INTERVAL
    )


def _support(time: np.ndarray, upper: np.ndarray, status: np.ndarray) -> np.ndarray:
    """survival's jump points: exact times and midpoints of innermost (left end, right end) pairs.

    Ends are sorted by time with exact < right end < left end at ties, so (l, u] is open on the
    left; a left end followed directly by a right end bounds an innermost interval.
    """
    codes = _END_CODES[status]
    interval = status == _INTERVAL
    points = np.concatenate([time, upper[interval]])
    codes = np.concatenate([codes, np.ones(interval.sum(), dtype=int)])
    order = np.lexsort((codes, points))
    points, codes = points[order], codes[order]
    pairs = (codes[:-1] != 1) & (codes[1:] == 1)
    midpoints = 0.5 * (points[:-1] + points[1:])[pairs]
    return np.concatenate([points[codes == 0], midpoints])


def turnbull_replicates(
    low: np.ndarray, high: np.ndarray, picks: list[np.ndarray]
) -> list[TurnbullFit]:
    """The NPMLE of the rows (low, high)[pick] for each pick, as for bootstrap replicates: the
    same estimator as `turnbull`, their EMs run side by side (`_self_consistency`) and stopped
    at REPLICATE_TOLERANCE, no frame built. A list of TurnbullFit, one per pick."""
    curves = []
    for pick in picks:
        low_rows, high_rows = low[pick], high[pick]
        keep = ~(np.isnan(low_rows) & np.isnan(high_rows))
        curves.append(_curve(low_rows[keep], high_rows[keep], "lower"))
    return _fit_curves(curves, REPLICATE_TOLERANCE)


@dataclass
class _Curve:
    """One curve's EM problem. Censored rows admit runs of the sorted support points, [first,
    stop) of `points`: rows admitting the same run are one run with a count (visits make many
    intervals alike). The curve's times hold the support and the exact and right-censored
    times, whose events and leavers enter each Kaplan-Meier step as they are; `start` is the EM's
    starting curve at the support."""

    support: np.ndarray
    times: np.ndarray
    support_position: np.ndarray
    exact_events: np.ndarray
    leaving: np.ndarray
    run_first: np.ndarray
    run_stop: np.ndarray
    counts: np.ndarray
    start: np.ndarray


def _curve(low: np.ndarray, high: np.ndarray, column: str) -> TurnbullFit | _Curve:
    """One group's rows set up for the EM, or its fit when no row is censored (plain KM)."""
    status = _status(low, high, column)
    # One time per row as survival stores it: the upper bound for a left-censored row.
    time = np.where(status == _LEFT, high, low)
    support = _support(time, high, status)
    first_jump = support.min() if support.size else np.inf
    # survival counts a left-censoring before the first jump point as an event at that time.
    early_left = (status == _LEFT) & (time < first_jump)
    status = np.where(early_left, _EXACT, status)
    support = np.unique(np.concatenate([time[early_left], support]))

    censored_set = (status == _LEFT) | (status == _INTERVAL)
    rows = np.flatnonzero(censored_set)
    # A censored row's admissible support points are a run of the sorted support, indices
    # [first, stop): up to its time for a left-censored row, in (low, high] for an interval.
    left = status[rows] == _LEFT
    first = np.where(left, 0, np.searchsorted(support, low[rows], side="right"))
    stop = np.searchsorted(support, np.where(left, time[rows], high[rows]), side="right")
    exact_times = time[status == _EXACT]
    right_times = time[status == _RIGHT]
    curve_times = np.unique(np.concatenate([exact_times, right_times, support]))
    support_position = np.searchsorted(curve_times, support)
    exact_events = np.bincount(
        np.searchsorted(curve_times, exact_times), minlength=len(curve_times)
    ).astype(float)
    leaving = exact_events + np.bincount(
        np.searchsorted(curve_times, right_times), minlength=len(curve_times)
    )
    if rows.size == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            at_risk = leaving[::-1].cumsum()[::-1]
            survival = np.cumprod(1 - np.where(at_risk > 0, exact_events / at_risk, 0.0))
        mass = -np.diff(np.concatenate([[1.0], survival[support_position]]))
        return TurnbullFit(support, mass, curve_times, survival, 0, True)
    points = len(support)
    runs, counts = np.unique(first * (points + 1) + stop, return_counts=True)
    run_first, run_stop = np.divmod(runs, points + 1)
    # The EM starts with mass on each support point in proportion to the censored rows
    # admitting it.
    start = np.cumsum(
        np.bincount(run_first, counts.astype(float), points + 1)
        - np.bincount(run_stop, counts.astype(float), points + 1)
    )[:points]
    return _Curve(
        support,
        curve_times,
        support_position,
        exact_events,
        leaving,
        run_first,
        run_stop,
        counts.astype(float),
        1 - np.cumsum(start) / start.sum(),
    )


def _fit_curves(curves: list, tolerance: float) -> list[TurnbullFit]:
    """Each _Curve's EM to a change below `tolerance` (`_self_consistency`); fits pass through."""
    problems = [curve for curve in curves if isinstance(curve, _Curve)]
    solved = iter(_self_consistency(problems, tolerance) if problems else [])
    fits = []
    for curve in curves:
        if isinstance(curve, _Curve):
            survival, survival_at_support, iterations, converged = next(solved)
            mass = -np.diff(np.concatenate([[1.0], survival_at_support]))
            curve = TurnbullFit(curve.support, mass, curve.times, survival, iterations, converged)
        fits.append(curve)
    return fits


class _Batch:
    """Several curves' EM steps as one set of array operations, each curve's numbers those of
    its own EM bit for bit: the curves' arrays are rows padded at their ends, and every sum
    runs along a row in the order of the curve's own (cumulative sums and products along rows,
    weighted counts per bin in run order); the risk sets, summed from the last time back, are
    kept reversed so that their padding comes after them too. A padded column of the support
    points repeats the row's last point (a step takes it from the same time of the curve).
    """

    def __init__(self, curves: list[_Curve], states: list[np.ndarray]):
        self.curves = curves
        count = len(curves)
        points = np.array([len(curve.support) for curve in curves])
        times = np.array([len(curve.times) for curve in curves])
        self.points = points.tolist()
        width, length = int(points.max()), int(times.max())
        self.length = length
        rows = np.arange(count)
        runs = np.array([len(curve.counts) for curve in curves])
        run_offset = np.repeat(rows * (width + 1), runs)
        self.run_first = np.concatenate([curve.run_first for curve in curves]) + run_offset
        self.run_stop = np.concatenate([curve.run_stop for curve in curves]) + run_offset
        self.counts = np.concatenate([curve.counts for curve in curves])
        real = np.arange(width) < points[:, None]
        # Support point j of curve r: row r, column j of a points array; column
        # times[r] - 1 - position of the reversed time arrays.
        self.expected_from = np.flatnonzero(real)
        self.reversed_at = np.concatenate(
            [
                r * length + len(curve.times) - 1 - curve.support_position
                for r, curve in enumerate(curves)
            ]
        )
        column = np.minimum(np.arange(width), points[:, None] - 1)
        positions = np.stack([curve.support_position[column[r]] for r, curve in enumerate(curves)])
        self.support_at = rows[:, None] * length + positions
        reverse = np.maximum(times[:, None] - 1 - np.arange(length), 0)
        self.natural_from = rows[:, None] * length + reverse
        # The exact events (row 0) and the leavers (row 1) per time, each row reversed.
        self.exact_and_leaving = np.zeros((2, count, length))
        for r, curve in enumerate(curves):
            self.exact_and_leaving[0, r, : len(curve.times)] = curve.exact_events[::-1]
            self.exact_and_leaving[1, r, : len(curve.times)] = curve.leaving[::-1]
        self.exact_and_leaving = self.exact_and_leaving.reshape(2, count * length)
        self.state = np.stack([state[column[r]] for r, state in enumerate(states)])
        self.previous = np.empty((count, width))
        self.previous[:, 0] = 1.0
        self.cumulative = np.zeros((count, width + 1))
        self.bins = count * (width + 1)

    def em_step(self, survival_at_support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One self-consistency step of every curve: the curves, and their values at the support."""
        count, width = survival_at_support.shape
        # E step: each censored row's unit spread over its admissible support points in
        # proportion to their mass.
        self.previous[:, 1:] = survival_at_support[:, :-1]
        mass = self.previous - survival_at_support
        mass.cumsum(axis=1, out=self.cumulative[:, 1:])
        cumulative = self.cumulative.ravel()
        totals = cumulative[self.run_stop] - cumulative[self.run_first]
        shares = np.divide(self.counts, totals, out=np.zeros(len(totals)), where=totals > 0)
        edges = np.bincount(self.run_first, shares, self.bins) - np.bincount(
            self.run_stop, shares, self.bins
        )
        spread = edges.reshape(count, width + 1).cumsum(axis=1)[:, :width]
        expected = (mass * spread).ravel()[self.expected_from]
        # M step as survival does it: Kaplan-Meier with those expected events added to the
        # events and to the leavers.
        events, leaving = self.exact_and_leaving.copy()
        events[self.reversed_at] += expected
        leaving[self.reversed_at] += expected
        at_risk = leaving.reshape(count, self.length).cumsum(axis=1).ravel()
        hazard = np.where(at_risk > 0, events / at_risk, 0.0)
        survival = (1 - hazard)[self.natural_from].cumprod(axis=1)
        return survival, survival.ravel()[self.support_at]


def _vector_norm(vector: np.ndarray) -> float:
    """np.linalg.norm of a vector, as it computes it (the square root of a BLAS dot product;
    math.sqrt rounds as np.sqrt does), without its checks."""
    return math.sqrt(vector.dot(vector))


def _self_consistency(curves: list[_Curve], tolerance: float) -> list[tuple]:
    """survfitTurnbull's EM (KM within EM), accelerated by SQUAREM, to a change below
    `tolerance`, for several curves at once (_Batch); each curve stops on its own.

    Returns per curve its curve, its values at the support points, the iterations and whether
    it converged.
    """
    results: list = [None] * len(curves)
    rows = list(range(len(curves)))  # the curve of each row of the batch
    iterations = 0
    # Division by an empty risk set is masked out in the step; the EM step runs thousands of
    # times, so the error state is set once around all of it.
    with np.errstate(divide="ignore", invalid="ignore"):
        batch = _Batch(curves, [curve.start for curve in curves])
        state, going = batch.state, list(range(len(rows)))  # going: the rows still iterating
        # 2 alpha and alpha^2 per row; a stopped row's do not matter (its result is taken).
        doubled, squared = np.full(len(rows), -2.0), np.ones(len(rows))
        while going and iterations < _MAX_ITERATIONS:
            iterations += 1
            # SQUAREM (Varadhan & Roland 2008): extrapolate along two EM steps, project back
            # onto non-increasing curves in [0, 1], then take one EM step from there. Same
            # fixed point as plain EM, reached in far fewer iterations (EM alone needs ~10^4).
            _, once = batch.em_step(state)
            _, twice = batch.em_step(once)
            step, curvature = once - state, twice - 2 * once + state
            for row in going:
                points = batch.points[row]
                # Row by row as one curve's EM takes them, from the same numbers.
                scale = _vector_norm(curvature[row, :points])
                alpha = -_vector_norm(step[row, :points]) / scale if scale > 0 else -1.0
                alpha = min(alpha, -1.0)
                doubled[row], squared[row] = 2 * alpha, alpha**2
            proposal = state - doubled[:, None] * step + squared[:, None] * curvature
            proposal = np.minimum.accumulate(proposal.clip(0.0, 1.0), axis=1)
            survival, updated = batch.em_step(proposal)
            # A padded column repeats its row's last support point, so it changes as that.
            converged = np.abs(updated - state).max(axis=1) < tolerance
            state = updated
            if iterations < _MAX_ITERATIONS and not converged.any():
                continue
            stopping = [row for row in going if converged[row] or iterations >= _MAX_ITERATIONS]
            for row in stopping:
                curve = batch.curves[row]
                results[rows[row]] = (
                    survival[row, : len(curve.times)].copy(),
                    state[row, : len(curve.support)].copy(),
                    iterations,
                    bool(converged[row]),
                )
            stopped = set(stopping)
            going = [row for row in going if row not in stopped]
            # Stopped rows are dropped when a quarter of the batch has stopped: a smaller
            # batch is cheaper to step, and building one costs a few steps.
            if going and len(going) <= 0.75 * len(rows):
                rows = [rows[row] for row in going]
                batch = _Batch([curves[i] for i in rows], list(state[going]))
                state, going = batch.state, list(range(len(rows)))
                doubled, squared = np.full(len(rows), -2.0), np.ones(len(rows))
    return results
