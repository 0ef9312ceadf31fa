"""Kaplan-Meier curves, log-rank tests and restricted mean survival time, as R's survival."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.distributions import CHI_SQUARE, NORMAL
from analysis.errors import DataError
from analysis.results import TIDY_COLUMNS, ModelResult, z_critical
from analysis.survival.design import check_event_indicator, complete_rows

SINGLE_GROUP = "all"
CURVE_COLUMNS = (
    "group",
    "time",
    "n_risk",
    "n_event",
    "n_censor",
    "survival",
    "std_error",
    "conf_low",
    "conf_high",
)
MEDIAN_COLUMNS = ("group", "n", "events", "median", "conf_low", "conf_high")
# survfit compares S(t) with 0.5 to this tolerance, so a curve that is 0.5 up to rounding
# takes the midpoint rule as R does.
_HALF_TOLERANCE = np.sqrt(np.finfo(float).eps)


def _check_survival_columns(frame: pd.DataFrame, duration: str, event: str) -> None:
    check_event_indicator(frame, event)
    if (frame[duration].astype(float) < 0).any():
        raise DataError("durations must not be negative", column=duration)


def _prepare(
    frame: pd.DataFrame, duration: str, event: str, others: list[str]
) -> tuple[pd.DataFrame, int]:
    columns = [duration, event, *others]
    # Only the used columns are copied (the frame may hold many more).
    present = [name for name in dict.fromkeys(columns) if name in frame.columns]
    used, dropped = complete_rows(frame[present], columns)
    _check_survival_columns(used, duration, event)
    return used, dropped


def _dropped_note(dropped: int, columns: list[str]) -> str:
    return (
        f"{dropped} row(s) were left out because a value was missing in one of "
        f"{', '.join(columns)}; the estimates describe the remaining rows."
    )


def _sorted_levels(values: pd.Series) -> list[Any]:
    return sorted(pd.unique(values))


def _survfit_median(times: np.ndarray, curve: np.ndarray) -> float:
    """First time the curve is <= 0.5; the midpoint of the flat stretch where it is exactly 0.5."""
    keep = ~np.isnan(curve) & (curve < 0.5 + _HALF_TOLERANCE)
    if not keep.any():
        return np.nan
    times, curve = times[keep], curve[keep]
    below = curve < curve[0]
    if abs(curve[0] - 0.5) < _HALF_TOLERANCE and below.any():
        return float((times[0] + times[np.argmax(below)]) / 2)
    return float(times[0])


def kaplan_meier_steps(durations: np.ndarray, events: np.ndarray):
    """Kaplan-Meier as arrays: (distinct times, S at those times); events before exits at ties.

    The bare estimate, for loops that need many curves fast (cross-validation, weights).
    """
    times = np.unique(durations)
    exits = np.searchsorted(np.sort(durations), times, side="left")
    at_risk = len(durations) - exits
    events_at = np.bincount(np.searchsorted(times, durations[events]), minlength=len(times)).astype(
        float
    )
    return times, np.cumprod(1 - events_at / at_risk)


def step_function_at(times: np.ndarray, values: np.ndarray, at: np.ndarray, start: float = 1.0):
    """A right-continuous step function (value `start` before the first time) evaluated at `at`."""
    position = np.searchsorted(times, at, side="right") - 1
    return np.where(position >= 0, values[np.maximum(position, 0)], start)


def _kaplan_meier_curve(durations: np.ndarray, events: np.ndarray, z: float) -> dict:
    """One group's survfit-style columns (every distinct time observed), from counts per time.

    S(t) is exp(cumsum(log(n - d) - log(n))), the product-limit estimate summed on the log
    scale as lifelines does, so curves stay identical to its KaplanMeierFitter's.
    """
    times, at_time = np.unique(durations, return_inverse=True)
    removed = np.bincount(at_time, minlength=len(times))
    n_event = np.bincount(at_time, weights=events, minlength=len(times))
    n_risk = len(durations) - (np.cumsum(removed) - removed)
    with np.errstate(divide="ignore", invalid="ignore"):
        survival = np.exp(np.cumsum(np.log(n_risk - n_event) - np.log(n_risk)))
        # Greenwood variance of the cumulative hazard; infinite once everyone at risk has died.
        greenwood = np.cumsum(n_event / (n_risk * (n_risk - n_event)))
        log_se = np.sqrt(greenwood)
        defined = survival > 0
        # conf.type = "log" (R's default) rather than lifelines' log(-log) interval.
        conf_low = np.where(defined, survival * np.exp(-z * log_se), np.nan)
        conf_high = np.where(defined, np.minimum(survival * np.exp(z * log_se), 1.0), np.nan)
        std_error = np.where(defined, survival * log_se, np.nan)
    return {
        "time": times,
        "n_risk": n_risk,
        "n_event": n_event.astype(int),
        "n_censor": removed - n_event.astype(int),
        "survival": survival,
        "std_error": std_error,
        "conf_low": conf_low,
        "conf_high": conf_high,
    }


@dataclass(kw_only=True)
class KaplanMeierResult(ModelResult):
    """Kaplan-Meier curves per group with survfit's medians and log-scale Greenwood CIs.

    `.fitted` maps each group to its curve (the rows of `.curves` for that group).
    """

    medians: pd.DataFrame
    curves: pd.DataFrame
    durations: dict[Any, np.ndarray] = field(default_factory=dict)

    def survival_at(self, times) -> pd.DataFrame:
        """Survival with CI at chosen times per group (step function, right-continuous).

        As summary(survfit, times=, extend=TRUE): before the first time S = 1; after a group's
        last observed time the last value is carried forward although no one is left at risk.
        """
        times = np.asarray(times, dtype=float)
        parts = []
        for group, curve in self.curves.groupby("group", sort=False):
            row = np.searchsorted(curve["time"].to_numpy(), times, side="right") - 1
            values = curve.iloc[np.maximum(row, 0)].reset_index(drop=True)
            before_first = row < 0
            part = pd.DataFrame({"group": group, "time": times})
            part["n_risk"] = self._n_risk(group, times)
            for name, start in (
                ("survival", 1.0),
                ("std_error", 0.0),
                ("conf_low", 1.0),
                ("conf_high", 1.0),
            ):
                part[name] = np.where(before_first, start, values[name].to_numpy())
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def at_risk(self, times) -> pd.DataFrame:
        """Numbers at risk (still followed, time >= t) per group at chosen times: a risk table."""
        times = np.asarray(times, dtype=float)
        return pd.concat(
            [
                pd.DataFrame({"group": group, "time": times, "n_risk": self._n_risk(group, times)})
                for group in self.durations
            ],
            ignore_index=True,
        )

    def _n_risk(self, group: Any, times: np.ndarray) -> np.ndarray:
        durations = self.durations[group]
        return len(durations) - np.searchsorted(durations, times, side="left")

    def tidy(self) -> pd.DataFrame:
        """The medians: one row per group with n, events, median and its CI."""
        return self.medians.copy()


def kaplan_meier(
    df: pd.DataFrame, duration: str, event: str, group: str | None = None
) -> KaplanMeierResult:
    """Kaplan-Meier estimate per group, with medians, CIs and risk tables as R's survfit.

    CIs are conf.type="log" on Greenwood's variance; the median's CI is read off the CI curves,
    so its upper limit is missing (NaN) when the upper CI curve never reaches 0.5, and the
    median itself is NaN when the survival curve does not (median not reached).
    """
    others = [group] if group is not None else []
    used, dropped = _prepare(df, duration, event, others)
    labels = used[group] if group is not None else pd.Series(SINGLE_GROUP, index=used.index)
    levels = _sorted_levels(labels)
    codes = pd.Categorical(labels, categories=levels).codes
    all_times, all_events = used[duration].to_numpy(float), used[event].to_numpy(float)
    z = z_critical()
    parts, medians, durations = [], [], {}
    for code, level in enumerate(levels):
        in_group = codes == code
        times, events = all_times[in_group], all_events[in_group]
        part = _kaplan_meier_curve(times, events, z)
        parts.append(part)
        durations[level] = np.sort(times)
        medians.append(
            {
                "group": level,
                "n": len(times),
                "events": int(events.sum()),
                **{
                    name: _survfit_median(part["time"], part[column])
                    for name, column in (
                        ("median", "survival"),
                        ("conf_low", "conf_low"),
                        ("conf_high", "conf_high"),
                    )
                },
            }
        )
    sizes = [len(part["time"]) for part in parts]
    curves = pd.DataFrame(
        {
            "group": np.repeat(np.array(levels, dtype=object), sizes),
            **{name: np.concatenate([part[name] for part in parts]) for name in CURVE_COLUMNS[1:]},
        }
    )
    ends = np.cumsum(sizes)
    fitted = {
        level: curves.iloc[end - size : end]
        for level, size, end in zip(levels, sizes, ends, strict=True)
    }
    medians_frame = pd.DataFrame(medians, columns=list(MEDIAN_COLUMNS))
    result = KaplanMeierResult(
        fitted=fitted,
        coefficients=medians_frame,
        medians=medians_frame,
        curves=curves,
        durations=durations,
    )
    if dropped:
        result.note(_dropped_note(dropped, [duration, event, *others]))
    return result


@dataclass(kw_only=True)
class LogrankResult(ModelResult):
    """A (stratified) log-rank test: chi-square statistic and observed/expected per group."""

    statistic: float
    dof: int
    p_value: float
    groups: pd.DataFrame


def _logrank_counts(
    durations: np.ndarray, events: np.ndarray, group_codes: np.ndarray, n_groups: int
):
    """Observed, expected and the variance matrix of O - E over one stratum's event times."""
    event_times = np.unique(durations[events == 1])
    at_risk = np.zeros((len(event_times), n_groups))
    died = np.zeros((len(event_times), n_groups))
    for code in range(n_groups):
        in_group = group_codes == code
        times = np.sort(durations[in_group])
        at_risk[:, code] = len(times) - np.searchsorted(times, event_times, side="left")
        death_times = durations[in_group & (events == 1)]
        died[:, code] = np.bincount(
            np.searchsorted(event_times, death_times), minlength=len(event_times)
        )
    total_at_risk = at_risk.sum(axis=1)
    total_died = died.sum(axis=1)
    share = at_risk / total_at_risk[:, None]
    expected = (share * total_died[:, None]).sum(axis=0)
    # Hypergeometric variance; a time with one subject at risk contributes nothing.
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(
            total_at_risk > 1,
            total_died * (total_at_risk - total_died) / (total_at_risk - 1),
            0.0,
        )
    variance = np.einsum("t,tg,th->gh", spread, share, -share)
    variance[np.diag_indices(n_groups)] += (spread[:, None] * share).sum(axis=0)
    return died.sum(axis=0), expected, variance


def logrank_test(
    df: pd.DataFrame, duration: str, event: str, group: str, strata: str | list[str] | None = None
) -> LogrankResult:
    """Log-rank test of equal survival across two or more groups, as R's survdiff (rho = 0).

    With strata, observed - expected and its variance are summed over strata (survdiff with
    strata()); the expected counts per group are then totals over strata. Written by hand since
    lifelines' logrank tests have no strata.
    """
    strata_columns = [strata] if isinstance(strata, str) else list(strata or [])
    used, dropped = _prepare(df, duration, event, [group, *strata_columns])
    levels = _sorted_levels(used[group])
    if len(levels) < 2:
        raise DataError("the log-rank test needs at least two groups", column=group)
    codes = pd.Categorical(used[group], categories=levels).codes
    durations = used[duration].to_numpy(float)
    events = used[event].to_numpy(float)
    stratum_keys = (
        used.groupby(strata_columns, sort=True, observed=True).ngroup().to_numpy()
        if strata_columns
        else np.zeros(len(used), dtype=int)
    )
    observed = np.zeros(len(levels))
    expected = np.zeros(len(levels))
    variance = np.zeros((len(levels), len(levels)))
    for key in np.unique(stratum_keys):
        rows = stratum_keys == key
        o, e, v = _logrank_counts(durations[rows], events[rows], codes[rows], len(levels))
        observed, expected, variance = observed + o, expected + e, variance + v
    difference = observed - expected
    # survdiff's rule: groups with no expected events carry no information and leave the test.
    informative = np.flatnonzero(expected > 0)[:-1]
    statistic = float(
        difference[informative]
        @ np.linalg.solve(variance[np.ix_(informative, informative)], difference[informative])
    )
    dof = len(informative)
    p_value = float(CHI_SQUARE.sf(statistic, dof))
    counts = np.bincount(codes, minlength=len(levels))
    groups_frame = pd.DataFrame(
        {"group": levels, "n": counts, "observed": observed, "expected": expected}
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        groups_frame["o_minus_e_squared_over_e"] = difference**2 / expected
        groups_frame["o_minus_e_squared_over_v"] = difference**2 / np.diag(variance)
    tidy = pd.DataFrame([{"term": group, "statistic": statistic, "dof": dof, "p_value": p_value}])
    result = LogrankResult(
        fitted=None,
        coefficients=tidy,
        statistic=statistic,
        dof=dof,
        p_value=p_value,
        groups=groups_frame,
    )
    if dropped:
        result.note(_dropped_note(dropped, [duration, event, group, *strata_columns]))
    return result


def _restricted_mean(curve: pd.DataFrame, horizon: float, start: float) -> tuple[float, float]:
    """Area under one Kaplan-Meier curve up to the horizon and its Greenwood-type SE.

    As survival's survmean (print(survfit, rmean=)) and survRM2::rmst1; past the last observed
    time the curve is extended flat to the horizon.
    """
    time = curve["time"].to_numpy(float)
    n_risk = curve["n_risk"].to_numpy(float)
    n_event = curve["n_event"].to_numpy(float)
    keep = time <= horizon
    survival = curve["survival"].to_numpy(float)[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard_term = np.where(n_risk == n_event, 0.0, n_event / (n_risk * (n_risk - n_event)))[
            keep
        ]
    times = np.append(time[keep], horizon)
    heights = np.concatenate([[1.0], survival])
    rectangles = np.diff(np.concatenate([[start], times])) * heights
    area_after = np.cumsum(rectangles[1:][::-1])
    variance = np.sum(area_after**2 * hazard_term[::-1])
    return float(rectangles.sum() + start), float(np.sqrt(variance))


@dataclass(kw_only=True)
class RmstResult(ModelResult):
    """Restricted mean survival time per group and the differences between groups."""

    horizon: float
    per_group: pd.DataFrame


def _compared_levels(levels: list, reference: Any, group: str, what: str) -> list:
    """The levels in comparison order, the reference first (default: the first sorted)."""
    if len(levels) < 2:
        raise DataError(f"{what} needs at least two groups", column=group)
    if reference is None:
        return levels
    if reference not in levels:
        listed = ", ".join(map(str, levels))
        raise DataError(
            f"reference group {reference!r} is not among the groups ({listed})", column=group
        )
    return [reference, *[level for level in levels if level != reference]]


def rmst_difference(
    df: pd.DataFrame,
    duration: str,
    event: str,
    group: str,
    horizon: float,
    reference: Any = None,
) -> RmstResult:
    """Restricted mean survival time up to `horizon` per group and its difference between groups.

    Differences are each other level minus the `reference` (default: the first sorted level),
    with SE sqrt(var1 + var2) for independent groups and a normal (Wald) test, as survRM2::rmst2
    unadjusted. A horizon beyond a group's last follow-up extrapolates that curve flat (R's
    survmean does; survRM2 refuses).
    """
    km = kaplan_meier(df, duration, event, group)
    levels = _compared_levels(list(km.fitted), reference, group, "an RMST difference")
    start = min(0.0, min(float(times.min()) for times in km.durations.values()))
    z = z_critical()
    rows = []
    for level, curve in km.fitted.items():
        estimate, std_error = _restricted_mean(curve, horizon, start)
        rows.append(
            {
                "group": level,
                "horizon": horizon,
                "rmst": estimate,
                "std_error": std_error,
                "conf_low": estimate - z * std_error,
                "conf_high": estimate + z * std_error,
            }
        )
    per_group = pd.DataFrame(rows).set_index("group", drop=False)
    reference = per_group.loc[levels[0]]
    differences = []
    for level in levels[1:]:
        compared = per_group.loc[level]
        estimate = compared["rmst"] - reference["rmst"]
        std_error = float(np.hypot(compared["std_error"], reference["std_error"]))
        statistic = estimate / std_error
        differences.append(
            {
                "term": f"{level} - {levels[0]}",
                "estimate": estimate,
                "std_error": std_error,
                "statistic": statistic,
                "p_value": 2 * NORMAL.sf(abs(statistic)),
                "conf_low": estimate - z * std_error,
                "conf_high": estimate + z * std_error,
            }
        )
    result = RmstResult(
        fitted=km,
        coefficients=pd.DataFrame(differences, columns=list(TIDY_COLUMNS)),
        horizon=horizon,
        per_group=per_group.reset_index(drop=True),
    )
    for message in km.notes:
        result.notes.append(message)
    return result


# Resamples drawn at once (people x this many weights in memory).
_RESAMPLE_BLOCK = 100


def _resampled_medians(
    durations: np.ndarray, events: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Kaplan-Meier medians (survfit's rule, NaN if not reached) of `samples` resamples of the
    people with replacement, as counts per person: many curves on one grid of times at once."""
    n = len(durations)
    order = np.argsort(durations, kind="stable")
    times, starts = np.unique(durations[order], return_index=True)
    died_weight = events[order].astype(float)
    medians = []
    for start in range(0, samples, _RESAMPLE_BLOCK):
        block = min(_RESAMPLE_BLOCK, samples - start)
        picks = rng.integers(0, n, size=(block, n))
        offsets = (np.arange(block) * n)[:, None]
        weights = np.bincount((picks + offsets).ravel(), minlength=block * n).reshape(block, n)
        in_order = weights[:, order].astype(float)
        removed = np.add.reduceat(in_order, starts, axis=1)
        died = np.add.reduceat(in_order * died_weight, starts, axis=1)
        at_risk = n - (np.cumsum(removed, axis=1) - removed)
        with np.errstate(divide="ignore", invalid="ignore"):
            survival = np.cumprod(np.where(at_risk > 0, 1 - died / at_risk, 1.0), axis=1)
        medians.append(_survfit_medians(times, survival))
    return np.concatenate(medians)


def _survfit_medians(times: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """`_survfit_median` of each row of `curves` (non-increasing, no NaN) on shared `times`."""
    rows = np.arange(len(curves))
    reached = curves < 0.5 + _HALF_TOLERANCE
    first = np.argmax(reached, axis=1)
    value = curves[rows, first]
    below = curves < value[:, None]
    exactly_half = (np.abs(value - 0.5) < _HALF_TOLERANCE) & below.any(axis=1)
    median = np.where(
        exactly_half, (times[first] + times[np.argmax(below, axis=1)]) / 2, times[first]
    )
    return np.where(reached.any(axis=1), median, np.nan)


@dataclass(kw_only=True)
class MedianDifferenceResult(ModelResult):
    """Differences of Kaplan-Meier medians between groups with percentile bootstrap CIs."""

    samples: int


def median_difference(
    df: pd.DataFrame,
    duration: str,
    event: str,
    group: str,
    samples: int,
    seed: int,
    reference: Any = None,
) -> MedianDifferenceResult:
    """Each group's Kaplan-Meier median (survfit's rule) minus the reference group's, with a
    percentile bootstrap 95% CI: `samples` resamples of people with replacement within each
    group (group sizes fixed), the same resamples for every comparison.

    No closed form exists for the variance of a difference of medians; the bootstrap is the
    usual answer. A median not reached is beyond follow-up: in a resample it counts as +inf, so
    a difference can be +-inf (its limit then reads "not reached", NaN) or undefined (both not
    reached): if more than 2.5% of resamples are undefined, or the estimate itself is, the CI is
    not estimable (NaN) and a note says why. `std_error` is the resamples' SD where all are
    finite; statistic and p-value are not computed (NaN).
    """
    km = kaplan_meier(df, duration, event, group)
    levels = _compared_levels(list(km.fitted), reference, group, "a difference of medians")
    used, _ = _prepare(df, duration, event, [group])
    rng = np.random.default_rng(seed)
    boot = {}
    for level in levels:
        rows = used[used[group] == level]
        medians = _resampled_medians(
            rows[duration].to_numpy(float), rows[event].to_numpy(bool), samples, rng
        )
        boot[level] = np.where(np.isnan(medians), np.inf, medians)
    estimates = km.medians.set_index("group")["median"]
    rows, notes = [], []
    for level in levels[1:]:
        term = f"{level} - {levels[0]}"
        with np.errstate(invalid="ignore"):
            differences = boot[level] - boot[levels[0]]
        undefined = np.isnan(differences)
        estimate = estimates[level] - estimates[levels[0]]
        conf_low = conf_high = std_error = np.nan
        if np.isnan(estimate):
            notes.append(f"{term}: a median is not reached, so its difference is not estimable.")
        elif undefined.mean() > 0.025:
            notes.append(
                f"{term}: in {undefined.sum()} of {samples} resamples neither median is reached; "
                "the difference's CI is not estimable."
            )
        else:
            ordered = np.sort(np.where(undefined, np.inf, differences))
            low, high = np.quantile(ordered, [0.025, 0.975], method="inverted_cdf")
            conf_low, conf_high = (value if np.isfinite(value) else np.nan for value in (low, high))
            if np.isfinite(ordered).all():
                std_error = float(np.std(ordered, ddof=1))
        rows.append(
            {
                "term": term,
                "estimate": estimate,
                "std_error": std_error,
                "statistic": np.nan,
                "p_value": np.nan,
                "conf_low": conf_low,
                "conf_high": conf_high,
            }
        )
    result = MedianDifferenceResult(
        fitted=km, coefficients=pd.DataFrame(rows, columns=list(TIDY_COLUMNS)), samples=samples
    )
    for message in [*km.notes, *notes]:
        result.note(message)
    return result
