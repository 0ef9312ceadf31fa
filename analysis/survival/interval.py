"""Turnbull's nonparametric survival curve for interval-censored data, as R's survfit.

lifelines' `KaplanMeierFitter.fit_interval_censoring` treats bounds as closed intervals and
differs from R by several percent when visits share days, so the estimator is written here with
survival's own support points and its KM-within-EM iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    fits: dict = {}
    for name, rows in groups.items():
        fit = _fit_one(rows[lower].to_numpy(float), rows[upper].to_numpy(float), lower)
        if not fit.converged:
            notes.append(
                f"The Turnbull estimate for group {name!r} stopped after {fit.iterations} "
                "iterations without converging, so its curve may still change in the later "
                "decimals."
            )
        fits[name] = fit
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
    end_code = {_RIGHT: 2, _EXACT: 0, _LEFT: 1, _INTERVAL: 2}
    codes = np.array([end_code[s] for s in status])
    interval = status == _INTERVAL
    points = np.concatenate([time, upper[interval]])
    codes = np.concatenate([codes, np.ones(interval.sum(), dtype=int)])
    order = np.lexsort((codes, points))
    points, codes = points[order], codes[order]
    pairs = (codes[:-1] != 1) & (codes[1:] == 1)
    midpoints = 0.5 * (points[:-1] + points[1:])[pairs]
    return np.concatenate([points[codes == 0], midpoints])


def turnbull_replicate(low: np.ndarray, high: np.ndarray) -> TurnbullFit:
    """The NPMLE of one group's rows (low, high] as arrays, for a bootstrap replicate: the same
    estimator as `turnbull`, its EM stopped at REPLICATE_TOLERANCE, no frame built."""
    keep = ~(np.isnan(low) & np.isnan(high))
    return _fit_one(low[keep], high[keep], "lower", REPLICATE_TOLERANCE)


def _fit_one(
    low: np.ndarray, high: np.ndarray, column: str, tolerance: float = _TOLERANCE
) -> TurnbullFit:
    """survfitTurnbull's iteration: KM of exact, right-censored and expected interval events."""
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

    def kaplan_meier(expected_events: np.ndarray) -> np.ndarray:
        events = exact_events.copy()
        events[support_position] += expected_events
        out = leaving.copy()
        out[support_position] += expected_events
        at_risk = out[::-1].cumsum()[::-1]
        hazard = np.where(at_risk > 0, events / at_risk, 0.0)
        return np.cumprod(1 - hazard)

    # Division by an empty risk set is masked out just above; the EM step runs thousands of
    # times, so the error state is set once around all of it.
    with np.errstate(divide="ignore", invalid="ignore"):
        if rows.size == 0:
            survival = kaplan_meier(np.zeros(len(support)))
            mass = -np.diff(np.concatenate([[1.0], survival[support_position]]))
            return TurnbullFit(support, mass, curve_times, survival, 0, True)
        survival, survival_at_support, iterations, converged = _self_consistency(
            first, stop, len(support), kaplan_meier, support_position, tolerance
        )
    mass = -np.diff(np.concatenate([[1.0], survival_at_support]))
    return TurnbullFit(support, mass, curve_times, survival, iterations, bool(converged))


def _self_consistency(
    first: np.ndarray,
    stop: np.ndarray,
    points: int,
    kaplan_meier,
    support_position: np.ndarray,
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """survfitTurnbull's EM (KM within EM), accelerated by SQUAREM, to a change below
    `tolerance`; censored rows admit the support points [first, stop) of `points`.

    Returns the curve, its values at the support points, the iterations and whether it
    converged.
    """
    # Rows admitting the same run of support points are one run with a count (visits make
    # many intervals alike); sums over a run are differences of cumulative sums.
    runs, counts = np.unique(first * (points + 1) + stop, return_counts=True)
    run_first, run_stop = np.divmod(runs, points + 1)
    previous = np.empty(points)
    previous[0] = 1.0

    def spread(per_run: np.ndarray) -> np.ndarray:
        """Each run's value added to every support point of the run."""
        edges = np.bincount(run_first, per_run, points + 1) - np.bincount(
            run_stop, per_run, points + 1
        )
        return np.cumsum(edges)[:points]

    def em_step(survival_at_support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One self-consistency step: the survival curve, and its values at the support."""
        # E step: each censored row's unit spread over its admissible support points in
        # proportion to their mass.
        previous[1:] = survival_at_support[:-1]
        mass = previous - survival_at_support
        cumulative = np.concatenate([[0.0], np.cumsum(mass)])
        totals = cumulative[run_stop] - cumulative[run_first]
        shares = np.divide(counts, totals, out=np.zeros_like(totals), where=totals > 0)
        # M step as survival does it: Kaplan-Meier with those expected events added.
        survival = kaplan_meier(mass * spread(shares))
        return survival, survival[support_position]

    start = spread(counts.astype(float))
    survival_at_support = 1 - np.cumsum(start) / start.sum()
    converged, iterations = False, 0
    while not converged and iterations < _MAX_ITERATIONS:
        iterations += 1
        # SQUAREM (Varadhan & Roland 2008): extrapolate along two EM steps, project back onto
        # non-increasing curves in [0, 1], then take one EM step from there. Same fixed point
        # as plain EM, reached in far fewer iterations (EM alone needs ~10^4 here).
        _, once = em_step(survival_at_support)
        _, twice = em_step(once)
        step, curvature = once - survival_at_support, twice - 2 * once + survival_at_support
        scale = np.linalg.norm(curvature)
        alpha = -np.linalg.norm(step) / scale if scale > 0 else -1.0
        alpha = min(alpha, -1.0)
        proposal = survival_at_support - 2 * alpha * step + alpha**2 * curvature
        proposal = np.minimum.accumulate(np.clip(proposal, 0.0, 1.0))
        survival, updated = em_step(proposal)
        converged = np.max(np.abs(updated - survival_at_support)) < tolerance
        survival_at_support = updated
    return survival, survival_at_support, iterations, bool(converged)
