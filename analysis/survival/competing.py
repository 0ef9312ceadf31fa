"""Competing risks: Aalen-Johansen cumulative incidence and Fine-Gray regression.

Neither is taken from a library: lifelines' AalenJohansenFitter breaks tied times with random
jitter (about 2 % off R), and no installed Python package fits the Fine-Gray model with
cmprsk::crr's variance. Both are written to reproduce R (survfit multi-state, cmprsk::crr).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from analysis.distributions import CHI_SQUARE
from analysis.errors import ConvergenceError, DataError
from analysis.results import (
    TIDY_COLUMNS,
    ModelResult,
    wald_table,
    with_estimability,
    with_hazard_ratios,
    z_critical,
)
from analysis.survival.design import (
    aliased_columns,
    aliased_reason,
    complete_rows,
    design_matrix,
)

ALL_ROWS = "all"
CIF_COLUMNS = ("group", "event", "time", "estimate", "std_error", "conf_low", "conf_high")


def _complete_rows(df: pd.DataFrame, columns: list[str], notes: list[str]) -> pd.DataFrame:
    used, dropped = complete_rows(df, columns)
    if dropped:
        notes.append(
            f"{dropped} row(s) were left out because a value was missing in one of "
            f"{', '.join(columns)}; the estimates describe the remaining {len(used)} row(s)."
        )
    return used


def censoring_label(labels: pd.Series, censored: object, notes: list[str]) -> object:
    """The label of censored rows: as given, else R's 0 for numeric codes, else "censored".

    A label that does not occur while 0 does is refused: the data are most likely coded as R
    codes them (0 = censored, 1, 2, ... = event types), and reading 0 as an event type would
    silently change every estimate. A label that does not occur at all means no censoring,
    which is said in a note.
    """
    if censored is None:
        censored = 0 if is_numeric_dtype(labels) else "censored"
    present = set(pd.unique(labels))
    if censored in present:
        return censored
    if 0 in present or "0" in present:
        raise DataError(
            f"the censoring label {censored!r} does not occur, but 0 does; R codes 0 as "
            "censored, so pass censored=0 if that is what 0 means here",
            column=str(labels.name),
        )
    notes.append(
        f"No row of {labels.name} is marked censored (label {censored!r}), so every row counts "
        "as an event of some type."
    )
    return censored


def competing_rows(
    df: pd.DataFrame, columns: list[str], event_type: str, censored: object, notes: list[str]
) -> tuple[pd.DataFrame, object, list]:
    """The complete rows, the censoring label (`censoring_label`) and the event types present,
    sorted; no event at all is a DataError. Shared by the incidence curves and Gray's test."""
    used = _complete_rows(df, columns, notes)
    censored = censoring_label(used[event_type], censored, notes)
    event_labels = sorted(
        (label for label in used[event_type].unique() if label != censored), key=str
    )
    if not event_labels:
        raise DataError("no events: every row is censored", column=event_type)
    return used, censored, event_labels


# --- Aalen-Johansen --------------------------------------------------------------------------


@dataclass
class CumulativeIncidenceResult(ModelResult):
    """Cumulative incidence curves per group and event type (`table`, long format).

    `fitted` maps group -> the Kaplan-Meier of any event on the same time grid (`time`,
    `survival`), which with the incidences sums to 1 at every time.
    """

    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def at(self, times: list[float] | np.ndarray) -> pd.DataFrame:
        """The curves read at the given times (right-continuous; 0 before the first time)."""
        times = np.asarray(times, dtype=float)
        pieces = []
        for (group, event), curve in self.table.groupby(["group", "event"], sort=False):
            position = np.searchsorted(curve["time"].to_numpy(), times, side="right") - 1
            values = curve.iloc[np.maximum(position, 0)]
            piece = pd.DataFrame({"group": group, "event": event, "time": times})
            before_start = position < 0
            for column in ("estimate", "std_error", "conf_low", "conf_high"):
                column_values = values[column].to_numpy(float).copy()
                column_values[before_start] = 0.0 if column in ("estimate", "std_error") else np.nan
                piece[column] = column_values
            pieces.append(piece)
        return pd.concat(pieces, ignore_index=True)[list(CIF_COLUMNS)]


def cumulative_incidence(
    df: pd.DataFrame,
    duration: str,
    event_type: str,
    group: str | None = None,
    censored: object = None,
) -> CumulativeIncidenceResult:
    """Aalen-Johansen cumulative incidence of each event type, as survfit on a multi-state Surv.

    `event_type` holds each row's event label; rows equal to `censored` are censored (default:
    0 for numeric codes, as R, else "censored"; see `censoring_label`). An unused category of
    a categorical `group` is left out, as R drops an empty stratum. Standard
    errors are survfit's infinitesimal-jackknife ones; intervals are survfit's default "log"
    type, exp(log p +- z se / p), capped at 1 and undefined where p = 0. Tied times are exact.
    """
    notes: list[str] = []
    columns = [duration, event_type] + ([group] if group is not None else [])
    used, censored, event_labels = competing_rows(df, columns, event_type, censored, notes)
    groups = (
        {ALL_ROWS: used}
        if group is None
        else dict(list(used.groupby(group, sort=True, observed=True)))
    )
    tables, any_event = [], {}
    for name, rows in groups.items():
        table, survival = _aalen_johansen(
            rows[duration].to_numpy(float), rows[event_type].to_numpy(), censored, event_labels
        )
        tables.append(table.assign(group=name))
        any_event[name] = survival
    table = pd.concat(tables, ignore_index=True)[list(CIF_COLUMNS)]
    tidy = table.rename(columns={"event": "term"}).assign(statistic=np.nan, p_value=np.nan)
    result = CumulativeIncidenceResult(
        fitted=any_event, coefficients=tidy[["group", "time", *TIDY_COLUMNS]], table=table
    )
    for message in notes:
        result.note(message)
    return result


def _aalen_johansen(
    time: np.ndarray, label: np.ndarray, censored: object, event_labels: list
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Incidence and its influence-function (IJ) standard error at every distinct time."""
    grid, row_time_index = np.unique(time, return_inverse=True)
    n_rows, n_times = len(time), len(grid)
    at_risk = np.bincount(row_time_index, minlength=n_times)[::-1].cumsum()[::-1].astype(float)
    is_event = np.array([value != censored for value in label])
    # at_risk_matrix[i, k]: row i is at risk at grid time k.
    at_risk_matrix = row_time_index[:, None] >= np.arange(n_times)[None, :]

    def hazard_and_influence(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d lambda_k and its derivative with respect to each row's case weight."""
        events = np.bincount(row_time_index[rows], minlength=n_times).astype(float)
        hazard = events / at_risk
        influence = -(hazard / at_risk)[None, :] * at_risk_matrix
        influence[np.flatnonzero(rows), row_time_index[rows]] += 1 / at_risk[row_time_index[rows]]
        return hazard, influence

    total_hazard, total_influence = hazard_and_influence(is_event)
    survival = np.cumprod(1 - total_hazard)
    survival_before = np.concatenate([[1.0], survival[:-1]])
    # Influence of S(t_{k-1}), by the recursion S_k = S_{k-1} (1 - d lambda_k).
    influence_before = np.zeros((n_rows, n_times))
    current = np.zeros(n_rows)
    for k in range(n_times):
        influence_before[:, k] = current
        current = current * (1 - total_hazard[k]) - survival_before[k] * total_influence[:, k]

    z = z_critical()
    pieces = []
    for event in event_labels:
        hazard, influence = hazard_and_influence(np.array([value == event for value in label]))
        estimate = np.cumsum(survival_before * hazard)
        estimate_influence = np.cumsum(
            influence_before * hazard[None, :] + survival_before[None, :] * influence, axis=1
        )
        std_error = np.sqrt(np.sum(estimate_influence**2, axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_se = np.where(std_error == 0, 0.0, std_error / estimate)
            defined = estimate > 0
            conf_low = np.where(defined, estimate * np.exp(-z * log_se), np.nan)
            conf_high = np.where(defined, np.minimum(estimate * np.exp(z * log_se), 1.0), np.nan)
        pieces.append(
            pd.DataFrame(
                {
                    "event": event,
                    "time": grid,
                    "estimate": estimate,
                    "std_error": std_error,
                    "conf_low": conf_low,
                    "conf_high": conf_high,
                }
            )
        )
    return pd.concat(pieces, ignore_index=True), pd.DataFrame({"time": grid, "survival": survival})


# --- Fine-Gray -------------------------------------------------------------------------------


@dataclass
class FineGrayFit:
    """Estimates with crr's robust covariance, the naive (inverse information) one, and progress."""

    coefficients: pd.Series
    covariance: pd.DataFrame
    naive_covariance: pd.DataFrame
    log_partial_likelihood: float
    iterations: int


@dataclass
class FineGrayResult(ModelResult):
    """Fine-Gray subdistribution-hazard fit; `tidy()` adds subdistribution hazard ratios."""

    event_of_interest: object = None
    n_observations: int = 0


@dataclass
class _FineGrayData:
    """Rows sorted by time with crr's IPCW risk-set weights at each distinct failure time."""

    covariates: np.ndarray  # n x p, sorted by time
    time: np.ndarray
    kind: np.ndarray  # 1 event of interest, 2 competing event, 0 censored
    censoring_before: np.ndarray  # G(t_i-), KM of the censoring distribution
    failure_times: np.ndarray  # distinct times of the event of interest
    failure_counts: np.ndarray
    failure_censoring: np.ndarray  # G(t_k-) at the distinct failure times
    risk_weights: np.ndarray  # K x n: 1 if still at risk, G(t_k-)/G(t_i-) after a competing event

    @classmethod
    def build(cls, covariates: np.ndarray, time: np.ndarray, kind: np.ndarray) -> _FineGrayData:
        order = np.argsort(time, kind="stable")
        covariates, time, kind = covariates[order], time[order], kind[order]
        censoring_before = _left_limit_kaplan_meier(time, kind == 0)
        failure_times, failure_counts = np.unique(time[kind == 1], return_counts=True)
        failure_censoring = _left_limit_kaplan_meier(time, kind == 0, at=failure_times)
        still_at_risk = time[None, :] >= failure_times[:, None]
        after_competing = ~still_at_risk & (kind == 2)[None, :]
        risk_weights = np.where(
            still_at_risk,
            1.0,
            np.where(after_competing, failure_censoring[:, None] / censoring_before[None, :], 0.0),
        )
        return cls(
            covariates,
            time,
            kind,
            censoring_before,
            failure_times,
            failure_counts,
            failure_censoring,
            risk_weights,
        )

    def risk_sums(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted relative risks A (K x n), S0 (K) and the weighted means xbar (K x p)."""
        relative_risk = np.exp(self.covariates @ beta)
        weighted = self.risk_weights * relative_risk[None, :]
        s0 = weighted.sum(axis=1)
        return weighted, s0, (weighted @ self.covariates) / s0[:, None]

    def log_likelihood(self, beta: np.ndarray) -> float:
        """Breslow log partial likelihood with IPCW risk sets (crr's objective, sign flipped)."""
        _, s0, _ = self.risk_sums(beta)
        events = self.covariates[self.kind == 1]
        return float(np.sum(events @ beta) - np.sum(self.failure_counts * np.log(s0)))

    def score_and_information(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weighted, s0, mean = self.risk_sums(beta)
        score = self.covariates[self.kind == 1].sum(axis=0) - self.failure_counts @ mean
        second = np.einsum("kn,np,nq->kpq", weighted, self.covariates, self.covariates)
        per_time = second / s0[:, None, None] - np.einsum("kp,kq->kpq", mean, mean)
        information = np.einsum("k,kpq->pq", self.failure_counts, per_time)
        return score, information

    def score_residuals(self, beta: np.ndarray) -> np.ndarray:
        """Per-row eta_i + psi_i of crr's Fortran crrvv; their outer products give the meat.

        eta_i is the row's score contribution; psi_i is the correction for estimating the
        censoring distribution, through q(u) at each censoring time u.
        """
        x, time, kind = self.covariates, self.time, self.kind
        n_rows = len(time)
        weighted, s0, mean = self.risk_sums(beta)
        # eta: d N_i part minus the compensator over all failure times where row i counts.
        failure_index = np.searchsorted(self.failure_times, time)
        eta = np.zeros_like(x)
        event_rows = kind == 1
        eta[event_rows] = x[event_rows] - mean[failure_index[event_rows]]
        compensator = weighted * (self.failure_counts / s0)[:, None]
        eta -= compensator.sum(axis=0)[:, None] * x - compensator.T @ mean

        # psi: q(u) = sum over failures at or after u of G(t_k-)/S0_k (C1(u) - xbar_k C0(u)),
        # C0, C1 summing exp(x beta)/G(t_j-) (times x) over competing events before u.
        relative_risk = np.exp(x @ beta)
        competing = (kind == 2) * relative_risk / self.censoring_before
        c0_prefix = np.concatenate([[0.0], np.cumsum(competing)])
        c1_prefix = np.vstack([np.zeros(x.shape[1]), np.cumsum(competing[:, None] * x, axis=0)])
        factor = self.failure_counts * self.failure_censoring / s0
        a_suffix = np.concatenate([np.cumsum(factor[::-1])[::-1], [0.0]])
        b_suffix = np.vstack(
            [np.cumsum((factor[:, None] * mean)[::-1], axis=0)[::-1], np.zeros(x.shape[1])]
        )
        censor_times, censor_counts = np.unique(time[kind == 0], return_counts=True)
        if censor_times.size == 0:
            # No censoring: G = 1 is known, not estimated, so there is no correction term.
            return eta
        first_row = np.searchsorted(time, censor_times, side="left")
        first_failure = np.searchsorted(self.failure_times, censor_times, side="left")
        q = (
            c1_prefix[first_row] * a_suffix[first_failure][:, None]
            - c0_prefix[first_row][:, None] * b_suffix[first_failure]
        )
        at_risk = (n_rows - first_row).astype(float)
        cumulative = -np.cumsum(q * (censor_counts / at_risk**2)[:, None], axis=0)
        last_censor = np.searchsorted(censor_times, time, side="right") - 1
        psi = np.where((last_censor >= 0)[:, None], cumulative[np.maximum(last_censor, 0)], 0.0)
        censored_rows = kind == 0
        own = np.searchsorted(censor_times, time[censored_rows])
        psi[censored_rows] += q[own] / at_risk[own][:, None]
        return eta + psi


def _left_limit_kaplan_meier(
    time: np.ndarray, is_event: np.ndarray, at: np.ndarray | None = None
) -> np.ndarray:
    """Kaplan-Meier of `is_event` just before each time in `at` (default: each row's time)."""
    grid, index = np.unique(time, return_inverse=True)
    at_risk = np.bincount(index, minlength=len(grid))[::-1].cumsum()[::-1]
    events = np.bincount(index, weights=is_event.astype(float), minlength=len(grid))
    survival = np.cumprod(1 - events / at_risk)
    survival_before = np.concatenate([[1.0], survival[:-1]])
    if at is None:
        return survival_before[index]
    position = np.searchsorted(grid, at, side="left")
    return np.where(position < len(grid), survival_before[np.minimum(position, len(grid) - 1)], 0.0)


def fit_fine_gray(
    df: pd.DataFrame,
    duration: str,
    event: str,
    event_of_interest: object,
    covariates: list[str],
    censored: object = None,
    reference_levels: dict | None = None,
) -> FineGrayResult:
    """Fine-Gray regression for the subdistribution hazard of one event, as cmprsk::crr.

    Censoring weights are the Kaplan-Meier of the censoring times (one censoring group), ties
    as Breslow; standard errors are crr's sandwich with the term for the estimated censoring
    distribution. Every other label in `event` than `censored` is a competing event; the
    censoring label defaults as in `cumulative_incidence` (0 for numeric codes, as R). An
    aliased (collinear or constant) covariate stays as a term marked not estimable, as R's NA.
    A factor is coded against its entry in `reference_levels`, else its first sorted level.
    """
    notes: list[str] = []
    used = _complete_rows(df, [duration, event, *covariates], notes)
    censored = censoring_label(used[event], censored, notes)
    if event_of_interest == censored:
        raise DataError(
            f"the event of interest {event_of_interest!r} is the censoring label", column=event
        )
    labels = used[event].to_numpy()
    kind = np.where(labels == event_of_interest, 1, np.where(labels == censored, 0, 2))
    if not np.any(kind == 1):
        raise DataError(f"no rows with the event of interest {event_of_interest!r}", column=event)
    full_design = design_matrix(used, list(covariates), reference_levels)
    aliased = aliased_columns(full_design)
    reasons = {name: aliased_reason(name) for name in aliased}
    notes.extend(reasons.values())
    design = full_design.drop(columns=aliased)
    if design.shape[1] == 0:
        raise DataError("no usable covariates for the Fine-Gray model")
    data = _FineGrayData.build(design.to_numpy(float), used[duration].to_numpy(float), kind)
    beta, iterations, newton_notes = _newton_raphson(data, list(design.columns))
    notes.extend(newton_notes)
    _, information = data.score_and_information(beta)
    try:
        bread = np.linalg.inv(information)
    except np.linalg.LinAlgError as error:
        raise ConvergenceError("the Fine-Gray information matrix is singular") from error
    residuals = data.score_residuals(beta)
    covariance = bread @ (residuals.T @ residuals) @ bread
    names = list(design.columns)
    fitted = FineGrayFit(
        coefficients=pd.Series(beta, index=names),
        covariance=pd.DataFrame(covariance, index=names, columns=names),
        naive_covariance=pd.DataFrame(bread, index=names, columns=names),
        log_partial_likelihood=data.log_likelihood(beta),
        iterations=iterations,
    )
    result = FineGrayResult(
        fitted=fitted,
        coefficients=_hazard_ratio_table(
            full_design.columns,
            pd.Series(beta, index=names),
            pd.Series(np.sqrt(np.diag(covariance)), index=names),
            reasons,
        ),
        event_of_interest=event_of_interest,
        n_observations=len(used),
    )
    for message in notes:
        result.note(message)
    return result


def _newton_raphson(
    data: _FineGrayData, names: list[str], max_iterations: int = 50, tolerance: float = 1e-10
) -> tuple[np.ndarray, int, list[str]]:
    """crr's Newton-Raphson with step halving, to a tighter tolerance than crr's 1e-6."""
    beta = np.zeros(data.covariates.shape[1])
    log_likelihood = data.log_likelihood(beta)
    for iteration in range(1, max_iterations + 1):
        score, information = data.score_and_information(beta)
        if np.max(np.abs(score) * np.maximum(np.abs(beta), 1)) < tolerance * max(
            abs(log_likelihood), 1
        ):
            _check_not_diverging(data, beta, names)
            return beta, iteration - 1, []
        try:
            step = np.linalg.solve(information, score)
        except np.linalg.LinAlgError as error:
            raise ConvergenceError("singular information matrix in Newton-Raphson") from error
        for _ in range(30):
            candidate = data.log_likelihood(beta + step)
            # crr's Armijo rule: accept once the likelihood rises by a fraction of the prediction.
            if np.isfinite(candidate) and candidate >= log_likelihood + 1e-4 * step @ score:
                break
            step = step / 2
        else:
            raise ConvergenceError("Fine-Gray Newton-Raphson could not increase the likelihood")
        beta = beta + step
        log_likelihood = candidate
    _check_not_diverging(data, beta, names)
    return (
        beta,
        max_iterations,
        [
            f"The Fine-Gray fit stopped after {max_iterations} Newton-Raphson steps without "
            "meeting its convergence criterion, so the last decimals of its estimates may be off."
        ],
    )


def _check_not_diverging(data: _FineGrayData, beta: np.ndarray, names: list[str]) -> None:
    """Raise if a large coefficient sits on a flat likelihood (monotone likelihood, separation).

    At a finite maximum, doubling a coefficient lowers the likelihood; when a covariate
    separates the events it barely moves, and the estimate is only where the steps stopped.
    """
    log_likelihood = data.log_likelihood(beta)
    # Screened on the coefficient times the covariate's range (not its SD, which is small for
    # a rare level); the doubling test below decides.
    across_range = np.abs(beta) * np.ptp(data.covariates, axis=0)
    for index in np.flatnonzero(across_range > 5):
        doubled = beta.copy()
        doubled[index] *= 2
        if data.log_likelihood(doubled) > log_likelihood - 1e-4:
            raise ConvergenceError(
                f"The Fine-Gray coefficient of {names[index]} runs to infinity (monotone "
                "likelihood: it separates the events, e.g. a level in which no one had the event "
                "of interest), so the model has no finite estimate; leave that term out or "
                "merge its level."
            )


def _hazard_ratio_table(
    terms: pd.Index, beta: pd.Series, std_errors: pd.Series, reasons: dict[str, str]
) -> pd.DataFrame:
    table = wald_table(terms, beta.reindex(terms), std_errors.reindex(terms))
    return with_estimability(with_hazard_ratios(table), reasons)


# --- Gray's test -----------------------------------------------------------------------------

# Degrees of freedom are `dof`, as in the log-rank and proportional-hazards test tables.
GRAY_TEST_COLUMNS = ("event", "statistic", "dof", "p_value")


@dataclass
class GrayTestResult(ModelResult):
    """Gray's k-sample test per event type; `tidy()` has GRAY_TEST_COLUMNS, one row per event.

    `fitted` maps event -> (score, variance) of the first k - 1 groups, summed over strata.
    """

    groups: tuple = ()


def gray_test(
    df: pd.DataFrame,
    duration: str,
    event_type: str,
    group: str,
    strata: str | None = None,
    censored: object = None,
    rho: float = 0.0,
) -> GrayTestResult:
    """Gray's (1988) test that an event type's cumulative incidence is equal across groups.

    As cmprsk::cuminc's `Tests`: for each event type a weighted score of observed minus expected
    events per group (weight (1 - F(t-))^rho on the pooled incidence F) with Gray's variance,
    summed over `strata` when given; statistic s' V^-1 s, chi-square on (groups - 1) df. The
    censoring label defaults as in `cumulative_incidence`. The p-value is the chi-square upper
    tail (R prints 1 - pchisq, which is 0 below about 1e-16).
    """
    notes: list[str] = []
    columns = [duration, event_type, group] + ([strata] if strata is not None else [])
    used, censored, event_labels = competing_rows(df, columns, event_type, censored, notes)
    levels = sorted(pd.unique(used[group]), key=str)
    if len(levels) < 2:
        raise DataError("Gray's test needs at least two groups", column=group)
    order = np.argsort(used[duration].to_numpy(float), kind="stable")
    used = used.iloc[order]
    time = used[duration].to_numpy(float)
    labels = used[event_type].to_numpy()
    group_codes = pd.Categorical(used[group], categories=levels).codes
    stratum_codes = (
        used.groupby(strata, sort=True, observed=True).ngroup().to_numpy()
        if strata is not None
        else np.zeros(len(used), dtype=int)
    )
    rows, fitted = [], {}
    for event in event_labels:
        kind = np.where(labels == event, 1, np.where(labels == censored, 0, 2))
        score = np.zeros(len(levels) - 1)
        variance = np.zeros((len(levels) - 1, len(levels) - 1))
        for stratum in np.unique(stratum_codes):
            inside = stratum_codes == stratum
            part_score, part_variance = _gray_score(
                time[inside], kind[inside], group_codes[inside], len(levels), rho
            )
            score, variance = score + part_score, variance + part_variance
        try:
            statistic = float(score @ np.linalg.solve(variance, score))
        except np.linalg.LinAlgError as error:
            raise DataError(
                f"Gray's test for {event!r} has a singular variance (a group without any event "
                "or anyone at risk at the event times), so the groups cannot be compared",
                column=group,
            ) from error
        dof = len(levels) - 1
        rows.append(
            {
                "event": event,
                "statistic": statistic,
                "dof": dof,
                "p_value": float(CHI_SQUARE.sf(statistic, dof)),
            }
        )
        fitted[event] = (score, variance)
    result = GrayTestResult(
        fitted=fitted,
        coefficients=pd.DataFrame(rows, columns=list(GRAY_TEST_COLUMNS)),
        groups=tuple(levels),
    )
    for message in notes:
        result.note(message)
    return result


def _gray_score(
    time: np.ndarray, kind: np.ndarray, group_codes: np.ndarray, n_groups: int, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """One stratum's score and variance for Gray's test (kind 1: the event, 2: other, 0: none).

    Per group g at each time with an event: h_g = n_g / S_g(t-) (S: Kaplan-Meier of any event),
    expected events of interest d h_g (1 - F_g(t-)) / sum_r h_r (1 - F_r(t-)); the variance
    collects, per group, the martingale terms of both event types through the weights' running
    sums (Gray 1988, section 3).
    """
    grid, time_index = np.unique(time, return_inverse=True)
    deaths = np.zeros((3, n_groups, len(grid)))
    np.add.at(deaths, (kind, group_codes, time_index), 1.0)
    # at_risk[g, k]: rows of group g whose time is at or after grid time k.
    leaving = deaths.sum(axis=0)
    at_risk = leaving[:, ::-1].cumsum(axis=1)[:, ::-1]

    survival = np.ones(n_groups)  # S_g(t-), Kaplan-Meier of any event
    incidence = np.zeros(n_groups)  # F_g(t-), this event's cumulative incidence
    pooled = 0.0  # F(t-) pooled over groups, for the weight
    score = np.zeros(n_groups)
    running = np.zeros((n_groups, n_groups))  # sum of A dN / (sum h (1 - F)) (the paper's c)
    own = np.zeros(n_groups)  # per-group variance terms
    cross = np.zeros((n_groups, n_groups))  # between the running sums and the groups
    variance = np.zeros((n_groups, n_groups))
    for k in range(len(grid)):
        events, others, n = deaths[1, :, k], deaths[2, :, k], at_risk[:, k]
        total_events, total_others = events.sum(), others.sum()
        if total_events == 0 and total_others == 0:
            continue
        active = n > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            weight_at_risk = np.where(active, n / survival, 0.0)
            survival_after = np.where(
                active, survival * (n - events - others) / np.where(active, n, 1), survival
            )
        incidence_after = np.where(
            active, incidence + survival * events / np.where(active, n, 1), incidence
        )
        total_weight = weight_at_risk.sum()
        pooled_after = pooled + total_events / total_weight
        weight = (1 - pooled) ** rho
        spread = weight * (
            np.diag(weight_at_risk) - np.outer(weight_at_risk, weight_at_risk) / total_weight
        )
        if total_events > 0:
            running += spread * total_events / (total_weight * (1 - pooled))
            expected_share = weight_at_risk * (1 - incidence)
            score += weight * (events - total_events * expected_share / expected_share.sum())
            for g in np.flatnonzero(active):
                remaining = (
                    1 - (1 - pooled_after) / survival_after[g] if survival_after[g] > 0 else 1.0
                )
                tie_factor = (
                    1 - (total_events - 1) / (total_weight * survival[g] - 1)
                    if total_events > 1
                    else 1.0
                )
                increment = tie_factor * survival[g] * total_events / (total_weight * n[g])
                column = spread[:, g] - remaining * running[:, g]
                own[g] += remaining**2 * increment
                cross[:, g] += column * remaining * increment
                variance += np.outer(column, column) * increment
        for g in np.flatnonzero(active & (others > 0) & (survival_after > 0)):
            ratio = (1 - pooled_after) / survival_after[g]
            tie_factor = 1 - (others[g] - 1) / (n[g] - 1) if others[g] > 1 else 1.0
            increment = tie_factor * survival[g] ** 2 * others[g] / n[g] ** 2
            column = ratio * running[:, g]
            own[g] += ratio**2 * increment
            cross[:, g] -= column * ratio * increment
            variance += np.outer(column, column) * increment
        survival, incidence, pooled = survival_after, incidence_after, pooled_after
    variance += running @ np.diag(own) @ running.T + running @ cross.T + cross @ running.T
    kept = n_groups - 1
    return score[:kept], variance[:kept, :kept]
