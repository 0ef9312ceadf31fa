"""Cox proportional hazards models (lifelines, Efron ties) with R coxph's tidy output."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import sparse

from analysis.conventions import CONVENTIONS
from analysis.distributions import CHI_SQUARE
from analysis.errors import ConvergenceError, DataError, NotEstimableError
from analysis.results import ModelResult, wald_table, with_estimability, with_hazard_ratios
from analysis.survival.design import (
    aliased_columns,
    aliased_reason,
    check_event_indicator,
    complete_rows,
    design_matrix,
)
from analysis.survival.nonparametric import kaplan_meier_steps

# lifelines stops Newton-Raphson at a step norm of 1e-7; a tighter stop lets estimates agree
# with coxph (which iterates to a 1e-9 relative change in log-likelihood) to ~1e-8.
_FIT_OPTIONS = {"precision": 1e-10}
# coxph.control(): convergence on the relative change in log-likelihood, and the test for an
# infinite coefficient (the next Newton step is larger than toler.inf * |beta|).
_COXPH_EPS = 1e-9
_COXPH_TOLER_INF = np.sqrt(_COXPH_EPS)
_COXPH_MAX_ITERATIONS = 30
# The limit of the other estimates as a diverging coefficient grows: its value is doubled until
# they stop moving by more than this (relative), at most this many times.
_LIMIT_TOLERANCE = 1e-9
_LIMIT_DOUBLINGS = 12
# Newton steps after coxph's stop continue while they move beta by more than this (relative).
_POLISH_STEP = 1e-12
# Internal column names, so a user's covariate can never shadow the outcome columns.
_DURATION, _EVENT, _START, _STOP, _ID, _STRATUM = (
    "__duration",
    "__event",
    "__start",
    "__stop",
    "__id",
    "__stratum",
)


@dataclass(kw_only=True)
class CoxResult(ModelResult):
    """A fitted Cox model: tidy log-hazard-ratio table, Harrell's C, log-likelihood, counts."""

    concordance: float
    log_likelihood: float
    n: int
    events: int
    terms: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _ph_test: Callable[[], pd.DataFrame] | None = field(default=None, repr=False)

    def proportional_hazards_test(self) -> pd.DataFrame:
        """Score test of proportional hazards per covariate and GLOBAL, as R's cox.zph (km).

        Time is transformed by 1 - KM(t-) of the pooled data; a factor is one term with one
        degree of freedom per dummy (cox.zph's terms=TRUE). Not available for start/stop fits.
        """
        if self._ph_test is None:
            raise NotImplementedError("cox.zph-style tests are implemented for fit_cox only")
        return self._ph_test()


def _terms(covariates: list[str], design: pd.DataFrame) -> dict[str, list[str]]:
    """Design columns of each covariate (a factor's dummies form one term, as R's assign)."""
    return {
        name: [c for c in design.columns if c == name or c.startswith(f"{name}[")]
        for name in covariates
    }


@dataclass
class CoxFit:
    """The toolkit's own Cox estimate, where lifelines cannot give coxph's answer.

    Used when lifelines stops on a ridge of the likelihood (a coefficient running to infinity)
    or fails; named like lifelines' attributes so callers can read either.
    """

    params_: pd.Series
    variance_matrix_: pd.DataFrame
    log_likelihood_: float

    @property
    def standard_errors_(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.variance_matrix_)), index=self.params_.index)


@dataclass
class _CoxData:
    """One Cox problem as arrays: design, outcome, strata codes and interval starts."""

    design: np.ndarray
    stop: np.ndarray
    event: np.ndarray
    strata: np.ndarray
    start: np.ndarray

    def objective(self, basis: np.ndarray, offset: np.ndarray):
        """gamma -> (Efron log partial likelihood, score, information) for coefficients
        basis @ gamma + a fixed part whose risk score is `offset`.

        Used where coefficients run to infinity (`_coxph_estimate`): the basis spans what stays
        finite once some directions diverge (their part of the risk score is the offset). Each
        risk set is scaled by its own largest risk score, so a risk score running to +-infinity
        neither overflows nor empties a risk set; the plain fit uses `efron_sums`, which scales
        each stratum once and needs no loop over risk sets.
        """
        x = self.design @ basis
        risk_sets = list(_risk_sets(self.stop, self.event, self.strata, self.start))

        def evaluate(beta: np.ndarray):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                # A trial Newton step may overflow; it then has a non-finite log-likelihood
                # and is halved by the caller.
                return _at(beta)

        def _at(beta: np.ndarray):
            risk = offset + _linear_predictor(x, beta)
            n_var = x.shape[1]
            loglik, score, information = 0.0, np.zeros(n_var), np.zeros((n_var, n_var))
            for at_risk, dying in risk_sets:
                # The dying rows are in the risk set, so no weight exceeds 1.
                shift = risk[at_risk].max()
                w, xr = np.exp(risk[at_risk] - shift), x[at_risk]
                s0, s1, s2 = w.sum(), w @ xr, (w[:, None] * xr).T @ xr
                wd, xd = np.exp(risk[dying] - shift), x[dying]
                d0, d1, d2 = wd.sum(), wd @ xd, (wd[:, None] * xd).T @ xd
                loglik += risk[dying].sum()
                score += xd.sum(axis=0)
                deaths = len(dying)
                for r in range(deaths):
                    # Efron: the tied deaths keep a fraction 1 - r/d of their weight.
                    fraction = r / deaths
                    total = s0 - fraction * d0
                    mean = (s1 - fraction * d1) / total
                    loglik -= np.log(total) + shift
                    score -= mean
                    information += (s2 - fraction * d2) / total - np.outer(mean, mean)
            return loglik, score, information

        return evaluate

    @cached_property
    def risk_sets(self) -> list[_StratumRiskSets]:
        return _stratum_risk_sets(self.stop, self.event, self.strata, self.start)

    def efron_sums(self, beta: np.ndarray, time_weight: np.ndarray | None = None) -> _EfronSums:
        """Efron log-likelihood, score and information at beta over every column."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # A trial Newton step may overflow; it then has a non-finite log-likelihood
            # and is halved by the caller.
            return _efron_sums(
                self.risk_sets, self.design, _linear_predictor(self.design, beta), time_weight
            )

    def newton_objective(self, beta: np.ndarray):
        sums = self.efron_sums(beta)
        return sums.log_likelihood, sums.score, sums.information


@dataclass
class _StratumRiskSets:
    """One stratum's risk sets as index arrays, fixed for a fit (they do not depend on beta).

    A row is at risk at the event times with index in [enter, leave): after its start, up to
    and including its stop. Efron splits the d deaths at a time into d slots whose dying rows
    keep a fraction 1 - r/d of their weight (r = 0..d-1).
    """

    rows: np.ndarray
    enter: np.ndarray
    leave: np.ndarray
    dying: np.ndarray  # positions within `rows`
    death_time: np.ndarray  # event-time index of each dying row
    slot_time: np.ndarray
    slot_fraction: np.ndarray
    n_times: int

    @cached_property
    def entries_and_exits(self) -> sparse.csr_matrix:
        """(event times + 1) x rows: +1 at each row's leave index, -1 at its enter index."""
        n_rows = len(self.rows)
        columns = np.concatenate([np.arange(n_rows), np.arange(n_rows)])
        signs = np.concatenate([np.ones(n_rows), -np.ones(n_rows)])
        return sparse.csr_matrix(
            (signs, (np.concatenate([self.leave, self.enter]), columns)),
            shape=(self.n_times + 1, n_rows),
        )

    @cached_property
    def deaths_by_time(self) -> sparse.csr_matrix:
        """event times x dying rows: 1 where the row dies at that time."""
        return sparse.csr_matrix(
            (np.ones(len(self.dying)), (self.death_time, np.arange(len(self.dying)))),
            shape=(self.n_times, len(self.dying)),
        )


def _stratum_risk_sets(
    stop: np.ndarray, event: np.ndarray, strata: np.ndarray, start: np.ndarray
) -> list[_StratumRiskSets]:
    layouts = []
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        stops, dead = stop[rows], event[rows] == 1
        times, deaths = np.unique(stops[dead], return_counts=True)
        if len(times) == 0:
            continue
        leave = np.searchsorted(times, stops, side="right")
        dying = np.flatnonzero(dead)
        slot_time = np.repeat(np.arange(len(times)), deaths)
        first_slot = np.repeat(np.cumsum(deaths) - deaths, deaths)
        layouts.append(
            _StratumRiskSets(
                rows=rows,
                enter=np.searchsorted(times, start[rows], side="right"),
                leave=leave,
                dying=dying,
                death_time=leave[dying] - 1,
                slot_time=slot_time,
                slot_fraction=(np.arange(len(slot_time)) - first_slot) / deaths[slot_time],
                n_times=len(times),
            )
        )
    return layouts


@dataclass
class _EfronSums:
    """Efron log partial likelihood, score and information; with time weights g(t), also the
    score and information weighted by g and g^2 over event times (cox.zph's pieces)."""

    log_likelihood: float
    score: np.ndarray
    information: np.ndarray
    weighted_score: np.ndarray | None = None
    weighted_information: np.ndarray | None = None
    squared_weighted_information: np.ndarray | None = None


def _at_risk_sums(values: np.ndarray, layout: _StratumRiskSets) -> np.ndarray:
    """Sum of `values` (rows x columns) over each event time's risk set.

    Rows with leave > k, less rows with enter > k (a subset of them), summed from the last
    event time backwards, so late, small risk sets are not differences of large sums.
    """
    net_leaving = layout.entries_and_exits @ values
    return net_leaving[::-1].cumsum(axis=0)[::-1][1:]


def _slot_information(
    layout: _StratumRiskSets,
    per_time: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    total: np.ndarray,
    mean: np.ndarray,
) -> np.ndarray:
    """Sum over Efron slots of per_time(t) * ((s2 - f d2) / total - mean mean').

    s2 and d2 are never formed per time: each row's x x' enters once, weighted by the sum of
    per_time / total over the slots whose risk set holds it (a running sum over event times).
    """
    k, fraction = layout.slot_time, layout.slot_fraction
    at_risk_share = np.bincount(k, per_time[k] / total, layout.n_times)
    dying_share = np.bincount(k, per_time[k] * fraction / total, layout.n_times)
    running = np.concatenate([[0.0], np.cumsum(at_risk_share)])
    row_share = w * (running[layout.leave] - running[layout.enter])
    x_dying = x[layout.dying]
    dying_weight = w[layout.dying] * dying_share[layout.death_time]
    return (
        (x * row_share[:, None]).T @ x
        - (x_dying * dying_weight[:, None]).T @ x_dying
        - (mean * per_time[k][:, None]).T @ mean
    )


def _efron_sums(
    layouts: list[_StratumRiskSets],
    design: np.ndarray,
    risk_score: np.ndarray,
    time_weight: np.ndarray | None = None,
) -> _EfronSums:
    """Efron terms summed over every event time, from running sums (no loop over times).

    `time_weight` is a value per row that depends on its time only (cox.zph's g(t)); it is
    read at the dying rows. Each stratum's weights are scaled by its largest risk score; a
    risk set whose weights all underflow gives a non-finite log-likelihood, which callers
    treat as a failed step.
    """
    n_var = design.shape[1]
    loglik, score, information = 0.0, np.zeros(n_var), np.zeros((n_var, n_var))
    weighted = time_weight is not None
    if weighted:
        g_score, g_information, gg_information = (
            np.zeros(n_var),
            np.zeros((n_var, n_var)),
            np.zeros((n_var, n_var)),
        )
    for layout in layouts:
        x, risk = design[layout.rows], risk_score[layout.rows]
        shift = risk.max()
        w = np.exp(risk - shift)
        sums = _at_risk_sums(np.column_stack([w, w[:, None] * x]), layout)
        s0, s1 = sums[:, 0], sums[:, 1:]
        x_dying, w_dying = x[layout.dying], w[layout.dying]
        d0 = np.bincount(layout.death_time, w_dying, layout.n_times)
        d1 = layout.deaths_by_time @ (w_dying[:, None] * x_dying)
        k, fraction = layout.slot_time, layout.slot_fraction
        total = s0[k] - fraction * d0[k]
        mean = (s1[k] - fraction[:, None] * d1[k]) / total[:, None]
        loglik += risk[layout.dying].sum() - np.sum(np.log(total) + shift)
        score += x_dying.sum(axis=0) - mean.sum(axis=0)
        information += _slot_information(layout, np.ones(layout.n_times), x, w, total, mean)
        if weighted:
            g = np.zeros(layout.n_times)
            g[layout.death_time] = time_weight[layout.rows[layout.dying]]
            g_score += g[layout.death_time] @ x_dying - g[k] @ mean
            g_information += _slot_information(layout, g, x, w, total, mean)
            gg_information += _slot_information(layout, g**2, x, w, total, mean)
    if not weighted:
        return _EfronSums(loglik, score, information)
    return _EfronSums(loglik, score, information, g_score, g_information, gg_information)


def _newton_step(information: np.ndarray, score: np.ndarray) -> np.ndarray:
    """information^-1 score; a least-squares step where the information is singular."""
    try:
        return np.linalg.solve(information, score)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(information, score, rcond=None)[0]


def _newton(evaluate, beta: np.ndarray, tolerance: float, max_iterations: int):
    """coxph's iteration: Newton steps, halved while the log-likelihood falls.

    Stops when the log-likelihood changes by at most `tolerance` (relative), or when no step
    can raise it any more. Returns beta, log-likelihood, score, information, converged.
    """
    loglik, score, information = evaluate(beta)
    if beta.size == 0:
        return beta, loglik, score, information, True
    for _ in range(max_iterations):
        step = _newton_step(information, score)
        for _halving in range(60):
            candidate = beta + step
            new = evaluate(candidate)
            if np.isfinite(new[0]) and new[0] >= loglik:
                break
            step = step / 2
        else:
            return beta, loglik, score, information, True
        change = abs(new[0] - loglik)
        beta, (loglik, score, information) = candidate, new
        if change <= tolerance * max(abs(loglik), 1e-300):
            return beta, loglik, score, information, True
    return beta, loglik, score, information, False


def _runs_to_infinity(beta: np.ndarray, score: np.ndarray, information: np.ndarray):
    """coxph.fit's test: the next Newton step is still large next to the coefficient."""
    step = np.abs(_newton_step(information, score))
    return (step > _COXPH_EPS) & (step > _COXPH_TOLER_INF * np.abs(beta))


@dataclass
class _Estimate:
    """Estimates of the estimable columns, and the diverging ones with their direction."""

    fitted: object
    estimate: np.ndarray  # +-inf for a diverging column
    variance: np.ndarray  # over the finite columns, in order
    log_likelihood: float
    risk_score: np.ndarray


def _coxph_estimate(data: _CoxData) -> _Estimate:
    """coxph's answer computed here: Newton from 0, then the limit of any diverging terms.

    coxph flags a coefficient as possibly infinite when its next Newton step is still large.
    The direction of that step (restricted to the flagged terms) is where the likelihood keeps
    rising: the coefficients are moved ever further along it, everything orthogonal to it is
    refitted (so contrasts between flagged terms stay free), until the refitted part stops
    moving. That limit is reported: the flagged terms at +-inf, the others with standard errors
    from the information of the refitted part. A direction that starts to diverge once the
    first ones are at their limit joins them. coxph's stopping point agrees with the limit to
    its tolerance.
    """
    n_var = data.design.shape[1]
    no_offset = np.zeros(len(data.stop))
    beta, _, score, information, converged = _newton(
        data.objective(np.eye(n_var), no_offset), np.zeros(n_var), _COXPH_EPS, _COXPH_MAX_ITERATIONS
    )
    flagged = _runs_to_infinity(beta, score, information)
    if not converged and not flagged.any():
        raise ConvergenceError(
            f"The Cox model did not converge in {_COXPH_MAX_ITERATIONS} Newton steps and no "
            "coefficient runs to infinity, so the toolkit has no estimate it can report."
        )
    directions = np.zeros((n_var, 0))
    if flagged.any():
        directions = _unit(np.where(flagged, _newton_step(information, score), 0.0))[:, None]
    previous = None
    for doubling in range(_LIMIT_DOUBLINGS + 1):
        basis = _orthogonal_complement(directions)
        distance = 2.0**doubling * max(np.max(np.abs(beta)), 1.0)
        fixed_part = directions @ (directions.T @ beta) + distance * directions.sum(axis=1)
        evaluate = data.objective(basis, _linear_predictor(data.design, fixed_part))
        gamma, loglik, score, information, _ = _newton(
            evaluate, basis.T @ beta, 1e-14, _COXPH_MAX_ITERATIONS
        )
        current = basis @ gamma + fixed_part
        if _runs_to_infinity(gamma, score, information).any():
            # A further direction diverges once the first ones are at their limit.
            new = basis @ _newton_step(information, score)
            new = np.where(np.abs(new) > 1e-6 * np.max(np.abs(new)), new, 0.0)
            directions = np.column_stack([directions, _unit(new)])
            beta, previous = current, None
            continue
        finite_part = basis @ gamma
        settled = previous is not None and np.all(
            np.abs(finite_part - previous) <= _LIMIT_TOLERANCE * (1 + np.abs(finite_part))
        )
        if directions.shape[1] == 0 or settled:
            try:
                variance = basis @ np.linalg.inv(information) @ basis.T
            except np.linalg.LinAlgError as error:
                raise ConvergenceError(
                    "The Cox information matrix is singular at the estimate, so the model has "
                    "no standard errors the toolkit can report."
                ) from error
            heading = directions.sum(axis=1)
            diverging = np.abs(heading) > 0
            estimate = current.copy()
            estimate[diverging] = np.sign(heading[diverging]) * np.inf
            finite = ~diverging
            risk_score = _linear_predictor(data.design, current)
            return _Estimate(None, estimate, variance[np.ix_(finite, finite)], loglik, risk_score)
        previous = finite_part
        beta = current
    raise ConvergenceError(
        "A Cox coefficient runs to infinity and the other estimates keep changing as it grows, "
        "so they have no limit the toolkit can report."
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _orthogonal_complement(directions: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the coefficients orthogonal to every diverging direction."""
    n_var = directions.shape[0]
    if directions.shape[1] == 0:
        return np.eye(n_var)
    left, singular, _ = np.linalg.svd(directions, full_matrices=True)
    rank = int(np.sum(singular > 1e-12))
    return left[:, rank:]


def _estimate(data: _CoxData, names: list[str]) -> _Estimate:
    """Unpenalized estimates as coxph computes them: Newton steps from 0, halved while the
    log-likelihood falls, stopped at coxph's tolerance, then a few more steps to the maximum.

    coxph's test for an infinite coefficient (the next Newton step is still large) decides
    whether the answer stands; if a coefficient runs to infinity, or the iteration fails, the
    estimate is the limit computed by `_coxph_estimate` and the diverging terms are marked.
    """
    n_var = data.design.shape[1]
    if n_var > 0:
        beta, loglik, score, information, converged = _newton(
            data.newton_objective, np.zeros(n_var), _COXPH_EPS, _COXPH_MAX_ITERATIONS
        )
        if (
            converged
            and np.isfinite(loglik)
            and np.all(np.isfinite(information))
            and not _runs_to_infinity(beta, score, information).any()
        ):
            beta, loglik, information = _polish(data, beta, loglik, score, information)
            try:
                variance = np.linalg.inv(information)
            except np.linalg.LinAlgError:
                variance = None
            if variance is not None and np.all(np.isfinite(variance)):
                fitted = CoxFit(
                    params_=pd.Series(beta, index=names),
                    variance_matrix_=pd.DataFrame(variance, index=names, columns=names),
                    log_likelihood_=loglik,
                )
                risk_score = _linear_predictor(data.design, beta)
                return _Estimate(fitted, beta, variance, loglik, risk_score)
    result = _coxph_estimate(data)
    finite = np.isfinite(result.estimate)
    finite_names = [name for name, ok in zip(names, finite, strict=True) if ok]
    result.fitted = CoxFit(
        params_=pd.Series(result.estimate, index=names),
        variance_matrix_=pd.DataFrame(result.variance, index=finite_names, columns=finite_names),
        log_likelihood_=result.log_likelihood,
    )
    return result


def _polish(data: _CoxData, beta, loglik, score, information, steps: int = 3):
    """Newton steps past coxph's stopping rule, while they still move beta, so the estimate is
    the maximum to rounding (coxph stops within ~1e-8 of it)."""
    for _ in range(steps):
        step = _newton_step(information, score)
        if np.max(np.abs(step)) <= _POLISH_STEP * max(1.0, np.max(np.abs(beta))):
            break
        candidate = beta + step
        new_loglik, new_score, new_information = data.newton_objective(candidate)
        if not (np.isfinite(new_loglik) and new_loglik >= loglik - _POLISH_STEP * abs(loglik)):
            break
        beta, loglik, score, information = candidate, new_loglik, new_score, new_information
    return beta, loglik, information


def _variance(fitter, names: list[str]) -> np.ndarray:
    """lifelines' covariance in `names` order (CoxTimeVaryingFitter's has no labels)."""
    labels = fitter.params_.index
    matrix = pd.DataFrame(fitter.variance_matrix_.to_numpy(), index=labels, columns=labels)
    return matrix.loc[names, names].to_numpy()


def _penalized_estimate(
    data: _CoxData, names: list[str], penalizer: float, lifelines_fit: Callable[[], object]
) -> _Estimate:
    """lifelines' ridge-penalized fit, only because the caller asked for it."""
    # lifelines is imported only here (about a second of start-up): unpenalized fits, the
    # fit stage's, never need it.
    from lifelines.exceptions import ConvergenceError as LifelinesConvergenceError
    from lifelines.exceptions import ConvergenceWarning as LifelinesConvergenceWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", LifelinesConvergenceWarning)
            fitter = lifelines_fit()
    except (LifelinesConvergenceError, LifelinesConvergenceWarning, np.linalg.LinAlgError) as error:
        raise ConvergenceError(
            f"The Cox model with the requested ridge penalty {penalizer} did not converge."
        ) from error
    estimate = fitter.params_[names].to_numpy()
    return _Estimate(
        fitter,
        estimate,
        _variance(fitter, names),
        float(fitter.log_likelihood_),
        _linear_predictor(data.design, estimate),
    )


def _column_reasons(
    design: pd.DataFrame, events: np.ndarray, estimate: np.ndarray, aliased: list[str]
) -> tuple[dict[str, str], dict[str, float]]:
    """Why each term without an estimate has none (one sentence), and diverging terms' limits."""
    reasons, limits = {}, {}
    for name in aliased:
        reasons[name] = aliased_reason(name, " (or of the strata)")
    for name, value in zip(design.columns, estimate, strict=True):
        if not np.isinf(value):
            continue
        limits[name] = float(value)
        direction = "minus" if value < 0 else "plus"
        column = design[name].to_numpy(float)
        is_dummy = np.isin(column, (0.0, 1.0)).all()
        if is_dummy and events[column == 1].sum() == 0:
            covariate, _, level = name.partition("[")
            group = f"{covariate} = {level[:-1]}" if level else f"{name} = 1"
            why = f"no one with {group} had the event"
        else:
            why = "it separates who has the event first from who does not"
        reasons[name] = (
            f"{name} is not estimable: {why}, so its coefficient runs to {direction} infinity "
            "(R's coxph warns that the coefficient may be infinite); the other estimates are "
            "their limits as it does."
        )
    return reasons, limits


def _risk_sets(
    stop: np.ndarray, event: np.ndarray, strata: np.ndarray, start: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row indices at risk and rows dying at each distinct event time, stratum by stratum."""
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        for time in np.unique(stop[rows][event[rows] == 1]):
            at_risk = rows[(start[rows] < time) & (stop[rows] >= time)]
            dying = rows[(stop[rows] == time) & (event[rows] == 1)]
            yield at_risk, dying


def _efron_pieces(design, risk_score, stop, event, strata, start):
    """Per-subject score residuals and per-event-time score and information (Efron ties).

    Written by hand because lifelines does not expose them per event time, and its score
    residuals under Efron ties differ from coxph's (robust SEs off by ~2e-4 relative).
    """
    weights = np.exp(risk_score - risk_score.max())
    residuals = np.zeros_like(design)
    scores, informations, dying_rows = [], [], []
    for at_risk, dying in _risk_sets(stop, event, strata, start):
        deaths = len(dying)
        x = design[at_risk]
        is_dying = np.isin(at_risk, dying)
        score = design[dying].sum(axis=0)
        information = np.zeros((design.shape[1], design.shape[1]))
        mean_of_means = np.zeros(design.shape[1])
        for r in range(deaths):
            # Efron: the tied deaths keep a fraction 1 - r/d of their weight in the r-th term.
            share = np.where(is_dying, 1 - r / deaths, 1.0) * weights[at_risk]
            total = share.sum()
            mean = share @ x / total
            centred = x - mean
            score -= mean
            mean_of_means += mean / deaths
            information += (centred * share[:, None]).T @ centred / total
            residuals[at_risk] -= (share / total)[:, None] * centred
        residuals[dying] += design[dying] - mean_of_means
        scores.append(score)
        informations.append(information)
        dying_rows.append(dying[0])
    return residuals, np.array(scores), np.array(informations), np.array(dying_rows)


def _left_km_transform(durations: np.ndarray, events: np.ndarray) -> np.ndarray:
    """1 - KM(t-) of the pooled sample at each subject's time (cox.zph transform="km")."""
    times, survival = kaplan_meier_steps(durations, events.astype(bool))
    before = np.searchsorted(times, durations, side="left") - 1
    return 1.0 - np.where(before >= 0, survival[np.maximum(before, 0)], 1.0)


def _zph_table(
    design: np.ndarray,
    risk_score: np.ndarray,
    durations: np.ndarray,
    events: np.ndarray,
    strata: np.ndarray,
    terms: dict[str, tuple[list[int], int]],
) -> pd.DataFrame:
    """cox.zph: score test for adding x * g(t) at (beta-hat, 0), per term and GLOBAL.

    `design` holds the columns with a finite estimate; `terms` maps each term to its finite
    columns and its degrees of freedom. As cox.zph, an aliased column is left out of the test
    and its dof; a column whose coefficient runs to infinity counts in the dof but adds nothing
    to the statistic in the limit (R's stopping point adds ~1e-7), so the statistic of a term
    with only such columns is 0.
    """
    transformed = _left_km_transform(durations, events)
    centred_time = transformed - transformed[events == 1].mean()
    risk_sets = _stratum_risk_sets(durations, events, strata, np.full(len(durations), -np.inf))
    sums = _efron_sums(risk_sets, design, risk_score, time_weight=centred_time)
    n_var = design.shape[1]
    score = np.concatenate([np.zeros(n_var), sums.weighted_score])
    information = np.block(
        [
            [sums.information, sums.weighted_information],
            [sums.weighted_information, sums.squared_weighted_information],
        ]
    )
    rows = []
    total_dof = sum(dof for _, dof in terms.values())
    for name, (columns, dof) in [*terms.items(), ("GLOBAL", (list(range(n_var)), total_dof))]:
        if not columns:
            rows.append({"term": name, "statistic": 0.0, "dof": dof, "p_value": 1.0})
            continue
        keep = np.concatenate([np.arange(n_var), np.asarray(columns, dtype=int) + n_var])
        part = score[keep]
        try:
            statistic = float(part @ np.linalg.solve(information[np.ix_(keep, keep)], part))
        except np.linalg.LinAlgError as error:
            raise NotEstimableError(
                "The proportional-hazards test cannot be computed: its information matrix is "
                "singular (for example, every event happened at one time), so the data say "
                "nothing about a change of effect over time (R's cox.zph stops too)."
            ) from error
        rows.append(
            {
                "term": name,
                "statistic": statistic,
                "dof": dof,
                "p_value": float(CHI_SQUARE.sf(statistic, dof)),
            }
        )
    return pd.DataFrame(rows)


def _linear_predictor(design: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """X beta summed column by column, so identical rows get bit-identical scores.

    A BLAS matrix product may round identical rows differently (alignment-dependent SIMD),
    which would turn concordance ties into spurious concordant/discordant pairs.
    """
    score = np.zeros(design.shape[0])
    for column, coefficient in zip(design.T, estimate, strict=True):
        score += column * coefficient
    return score


def _prefix_counts_below(ranks: np.ndarray, prefix: np.ndarray, thresholds: np.ndarray):
    """For each query q: how many of ranks[:prefix[q]] are < thresholds[q] (integers >= 0).

    A wavelet tree walked with numpy, one level per bit from the highest: each level splits
    every node stably into the elements whose bit is 0 and those whose bit is 1; a query whose
    threshold has the bit set counts the 0s of its prefix and follows the 1s, else follows the
    0s. O((n + queries) log n), all array operations.
    """
    n = len(ranks)
    bits = max(int(max(ranks.max(initial=0), thresholds.max(initial=0))).bit_length(), 1)
    values = ranks.astype(np.int64)
    position = np.arange(n)
    element_start = np.zeros(n, dtype=np.int64)
    element_size = np.full(n, n, dtype=np.int64)
    query_start = np.zeros(len(prefix), dtype=np.int64)
    query_size = np.full(len(prefix), n, dtype=np.int64)
    in_prefix = prefix.astype(np.int64)
    counts = np.zeros(len(prefix), dtype=np.int64)
    for bit in reversed(range(bits)):
        is_one = ((values >> bit) & 1).astype(bool)
        zeros_before = np.concatenate([[0], np.cumsum(~is_one)])
        prefix_zeros = zeros_before[query_start + in_prefix] - zeros_before[query_start]
        node_zeros = zeros_before[query_start + query_size] - zeros_before[query_start]
        threshold_one = ((thresholds >> bit) & 1).astype(bool)
        counts += np.where(threshold_one, prefix_zeros, 0)
        query_start = np.where(threshold_one, query_start + node_zeros, query_start)
        query_size = np.where(threshold_one, query_size - node_zeros, node_zeros)
        in_prefix = np.where(threshold_one, in_prefix - prefix_zeros, prefix_zeros)
        zeros_in_node = zeros_before[element_start + element_size] - zeros_before[element_start]
        zeros_ahead = zeros_before[position] - zeros_before[element_start]
        new_position = np.where(
            is_one,
            element_start + zeros_in_node + (position - element_start - zeros_ahead),
            element_start + zeros_ahead,
        )
        new_start = np.where(is_one, element_start + zeros_in_node, element_start)
        new_size = np.where(is_one, element_size - zeros_in_node, zeros_in_node)
        values[new_position] = values.copy()
        element_start[new_position] = new_start
        element_size[new_position] = new_size
    return counts


def concordance_index(
    risk_score: np.ndarray,
    stop: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray,
    start: np.ndarray,
) -> float:
    """Harrell's C as survival::concordance: within strata, over each event time's risk set.

    A higher risk score should die first; risk-score ties count 1/2; event-time ties are not
    comparable, a subject censored at an event time is. Written by hand because lifelines'
    concordance_index has no strata and no start/stop risk sets. O(n log n): the rows at risk
    at an event time t, less those dying at t, are the rows with stop > t (or censored at t)
    less those with start >= t, and each is a prefix of the rows in one sort order.
    """
    concordant = tied = comparable = 0
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        stops, starts, dead = stop[rows], start[rows], event[rows] == 1
        if not dead.any():
            continue
        ranks = np.unique(risk_score[rows], return_inverse=True)[1].astype(np.int64)
        death_times, death_ranks = stops[dead], ranks[dead]
        # Rows by stop descending, censored before events at the same time.
        by_stop = np.lexsort((dead, -stops))
        censored_stops = np.sort(stops[~dead])
        in_prefix = (
            len(rows)
            - np.searchsorted(np.sort(stops), death_times, side="right")
            + np.searchsorted(censored_stops, death_times, side="right")
            - np.searchsorted(censored_stops, death_times, side="left")
        )
        queries = (
            np.concatenate([in_prefix, in_prefix]),
            np.concatenate([death_ranks, death_ranks + 1]),
        )
        counts = _prefix_counts_below(ranks[by_stop], *queries)
        others = in_prefix
        if np.isfinite(starts).any():
            # Rows entering at or after t are not yet at risk.
            by_start = np.argsort(-starts, kind="stable")
            not_entered = len(rows) - np.searchsorted(np.sort(starts), death_times, side="left")
            queries = (
                np.concatenate([not_entered, not_entered]),
                np.concatenate([death_ranks, death_ranks + 1]),
            )
            counts = counts - _prefix_counts_below(ranks[by_start], *queries)
            others = others - not_entered
        below, not_above = np.split(counts, 2)
        concordant += int(below.sum())
        tied += int((not_above - below).sum())
        comparable += int(others.sum())
    return float((concordant + tied / 2) / comparable) if comparable else np.nan


def _dropped_note(dropped: int, used_columns: list[str], kept: int) -> str:
    return (
        f"{dropped} row(s) were left out because a value was missing in one of "
        f"{', '.join(used_columns)}; the model describes the remaining {kept} row(s)."
    )


def _fit(
    used: pd.DataFrame,
    covariates: list[str],
    data: _CoxData,
    baseline: np.ndarray,
    penalizer: float,
    lifelines_fit: Callable[[list[str], float], object],
    notes: list[str],
    reference_levels: dict | None,
):
    """Design columns, estimates and the tidy table shared by both Cox fits."""
    design = design_matrix(used, covariates, reference_levels)
    aliased = aliased_columns(design, baseline)
    estimable = design.drop(columns=aliased)
    names = list(estimable.columns)
    data.design = estimable.to_numpy(float)
    if penalizer:
        fitted = _penalized_estimate(
            data, names, penalizer, lambda: lifelines_fit(names, penalizer)
        )
        notes.append(
            f"A ridge penalty of {penalizer} (lifelines' penalizer) was applied because it was "
            "asked for; it shrinks every coefficient towards 0, so estimates, standard errors and "
            "p-values are not those of an unpenalized coxph fit."
        )
    else:
        fitted = _estimate(data, names)
    reasons, limits = _column_reasons(estimable, data.event, fitted.estimate, aliased)
    finite = np.isfinite(fitted.estimate)
    finite_names = [name for name, ok in zip(names, finite, strict=True) if ok]
    at = design.columns.get_indexer(finite_names)
    estimate = np.full(design.shape[1], np.nan)
    std_error = np.full(design.shape[1], np.nan)
    estimate[at] = fitted.estimate[finite]
    std_error[at] = np.sqrt(np.diag(fitted.variance))
    estimate = pd.Series(estimate, index=design.columns)
    std_error = pd.Series(std_error, index=design.columns)
    for name in reasons:
        notes.append(reasons[name])
    return design, names, finite_names, fitted, estimate, std_error, reasons, limits


def _finish(table: pd.DataFrame, reasons: dict, limits: dict) -> pd.DataFrame:
    return with_estimability(with_hazard_ratios(table), reasons, limits)


def fit_cox(
    df: pd.DataFrame,
    duration: str,
    event: str,
    covariates: list[str],
    strata: str | list[str] | None = None,
    cluster: str | None = None,
    penalizer: float = 0.0,
    reference_levels: dict | None = None,
) -> CoxResult:
    """Cox proportional hazards fit (Efron ties) with R coxph's estimates and tests.

    With `cluster`, SEs, z, p and CIs use the grouped-dfbeta sandwich as coxph(cluster=);
    the log-likelihood and concordance are the ordinary ones. Rows missing any used column
    are dropped, and the result says how many. A term the data cannot determine is marked
    not estimable with the reason (`estimable`, `reason` columns), as coxph's NA: an aliased
    column has no estimate; a coefficient running to +-infinity (a level with no events)
    shows that limit, and the other terms are their limits. No penalty is added unless asked
    for with `penalizer` (lifelines' ridge penalty). A factor is coded against its entry in
    `reference_levels` (coxph after relevel), else its first sorted level.
    """
    strata_columns = [strata] if isinstance(strata, str) else list(strata or [])
    extra = [cluster] if cluster is not None else []
    used_columns = [duration, event, *covariates, *strata_columns, *extra]
    used, dropped = complete_rows(df, used_columns)
    check_event_indicator(used, event)
    events = used[event].to_numpy(float)
    if events.sum() == 0:
        raise NotEstimableError(
            f"Column {event!r} has no events, so a Cox model has nothing to estimate "
            "(R's coxph reports every coefficient as NA)."
        )
    notes: list[str] = []
    if dropped:
        notes.append(_dropped_note(dropped, used_columns, len(used)))
    strata_codes = (
        used.groupby(strata_columns, sort=True, observed=True).ngroup().to_numpy()
        if strata_columns
        else np.zeros(len(used), dtype=int)
    )
    durations = used[duration].to_numpy(float)
    data = _CoxData(
        design=np.zeros((len(used), 0)),
        stop=durations,
        event=events,
        strata=strata_codes,
        start=np.full(len(used), -np.inf),
    )
    baseline = (strata_codes[:, None] == np.unique(strata_codes)[None, :]).astype(float)

    def lifelines_fit(names: list[str], penalty: float) -> object:
        from lifelines import CoxPHFitter

        # Strata go in as integer codes: lifelines groups on them, and a categorical column
        # would make pandas warn about its unused categories.
        frame = pd.DataFrame(data.design, columns=names, index=used.index).assign(
            **{_DURATION: durations, _EVENT: events}
        )
        if strata_columns:
            frame[_STRATUM] = strata_codes
        return CoxPHFitter(penalizer=penalty, alpha=1 - CONVENTIONS.confidence_level).fit(
            frame,
            _DURATION,
            _EVENT,
            strata=[_STRATUM] if strata_columns else None,
            fit_options=_FIT_OPTIONS,
        )

    design, names, finite_names, fitted, estimate, std_error, reasons, limits = _fit(
        used, covariates, data, baseline, penalizer, lifelines_fit, notes, reference_levels
    )
    finite_columns = [names.index(name) for name in finite_names]
    x = data.design[:, finite_columns]
    if cluster is not None and finite_names:
        residuals, *_ = _efron_pieces(
            x, fitted.risk_score, durations, events, strata_codes, data.start
        )
        dfbeta = residuals @ fitted.variance
        by_cluster = pd.DataFrame(dfbeta).groupby(used[cluster].to_numpy()).sum().to_numpy()
        std_error[finite_names] = np.sqrt(np.diag(by_cluster.T @ by_cluster))
    terms = _terms(covariates, design)
    zph_columns = {
        name: (
            [finite_names.index(c) for c in columns if c in finite_names],
            len([c for c in columns if c not in reasons or c in limits]),
        )
        for name, columns in terms.items()
        if any(c not in reasons or c in limits for c in columns)
    }
    risk_score = fitted.risk_score
    result = CoxResult(
        fitted=fitted.fitted,
        coefficients=_finish(wald_table(design.columns, estimate, std_error), reasons, limits),
        concordance=concordance_index(risk_score, durations, events, strata_codes, data.start),
        log_likelihood=fitted.log_likelihood,
        n=len(used),
        events=int(events.sum()),
        terms=terms,
        _ph_test=lambda: _zph_table(x, risk_score, durations, events, strata_codes, zph_columns),
    )
    for message in notes:
        result.note(message)
    return result


def fit_cox_time_varying(
    df: pd.DataFrame,
    id: str,
    start: str,
    stop: str,
    event: str,
    covariates: list[str],
    penalizer: float = 0.0,
    reference_levels: dict | None = None,
) -> CoxResult:
    """Cox fit on (start, stop] intervals, as coxph(Surv(start, stop, event)).

    `n` counts intervals (rows), as coxph does; concordance uses each event time's risk set of
    intervals. Rows missing any used column are dropped, and the result says how many. Terms
    the data cannot determine are marked as in `fit_cox`; no penalty unless asked for; factors
    coded against `reference_levels` as in `fit_cox`.
    """
    used_columns = [stop, event, start, id, *covariates]
    used, dropped = complete_rows(df, used_columns)
    check_event_indicator(used, event)
    if (used[stop] <= used[start]).any():
        raise DataError("every interval needs stop > start", column=stop)
    events = used[event].to_numpy(float)
    if events.sum() == 0:
        raise NotEstimableError(
            f"Column {event!r} has no events, so a Cox model has nothing to estimate "
            "(R's coxph reports every coefficient as NA)."
        )
    notes: list[str] = []
    if dropped:
        notes.append(_dropped_note(dropped, used_columns, len(used)))
    data = _CoxData(
        design=np.zeros((len(used), 0)),
        stop=used[stop].to_numpy(float),
        event=events,
        strata=np.zeros(len(used), dtype=int),
        start=used[start].to_numpy(float),
    )

    def lifelines_fit(names: list[str], penalty: float) -> object:
        from lifelines import CoxTimeVaryingFitter

        frame = pd.DataFrame(data.design, columns=names, index=used.index).assign(
            **{_START: data.start, _STOP: data.stop, _EVENT: events, _ID: used[id].to_numpy()}
        )
        return CoxTimeVaryingFitter(penalizer=penalty, alpha=1 - CONVENTIONS.confidence_level).fit(
            frame,
            event_col=_EVENT,
            start_col=_START,
            stop_col=_STOP,
            id_col=_ID,
            fit_options=_FIT_OPTIONS,
        )

    design, _, _, fitted, estimate, std_error, reasons, limits = _fit(
        used,
        covariates,
        data,
        np.ones((len(used), 1)),
        penalizer,
        lifelines_fit,
        notes,
        reference_levels,
    )
    result = CoxResult(
        fitted=fitted.fitted,
        coefficients=_finish(wald_table(design.columns, estimate, std_error), reasons, limits),
        concordance=concordance_index(
            fitted.risk_score, data.stop, events, data.strata, data.start
        ),
        log_likelihood=fitted.log_likelihood,
        n=len(used),
        events=int(events.sum()),
        terms=_terms(covariates, design),
    )
    for message in notes:
        result.note(message)
    return result
