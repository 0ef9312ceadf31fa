"""Cox proportional hazards models (lifelines, Efron ties) with R coxph's tidy output."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, CoxTimeVaryingFitter
from lifelines.exceptions import ConvergenceError as LifelinesConvergenceError
from lifelines.exceptions import ConvergenceWarning as LifelinesConvergenceWarning
from scipy import stats

from analysis.conventions import CONVENTIONS
from analysis.errors import ConvergenceError, DataError
from analysis.results import ModelResult, wald_table, with_hazard_ratios
from analysis.survival.design import check_event_indicator, complete_rows, design_matrix
from analysis.survival.nonparametric import kaplan_meier_steps

FALLBACK_PENALIZER = 0.01
# lifelines stops Newton-Raphson at a step norm of 1e-7; a tighter stop lets estimates agree
# with coxph (which iterates to a 1e-9 relative change in log-likelihood) to ~1e-8.
_FIT_OPTIONS = {"precision": 1e-10}
# Internal column names, so a user's covariate can never shadow the outcome columns.
_DURATION, _EVENT, _START, _STOP, _ID, _CLUSTER = (
    "__duration",
    "__event",
    "__start",
    "__stop",
    "__id",
    "__cluster",
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


def _tidy(estimate: np.ndarray, std_error: np.ndarray, names: list[str]) -> pd.DataFrame:
    return with_hazard_ratios(wald_table(names, estimate, std_error))


def _fit_with_fallback(fit: Callable[[float], object], notes: list[str]):
    """Fit unpenalized; on non-convergence or non-finite output refit with a small ridge penalty.

    lifelines reports separation / non-unique maxima as a ConvergenceWarning with finite but
    meaningless estimates, so that warning counts as failure too.
    """
    problem = None
    for penalizer in (0.0, FALLBACK_PENALIZER):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", LifelinesConvergenceWarning)
                fitter = fit(penalizer)
        except (LifelinesConvergenceError, np.linalg.LinAlgError) as error:
            problem = str(error).strip().splitlines()[0]
            continue
        for warning in caught:
            if not issubclass(warning.category, LifelinesConvergenceWarning):
                # Not ours to judge: pass any other warning on unchanged.
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        convergence = [w for w in caught if issubclass(w.category, LifelinesConvergenceWarning)]
        values = np.concatenate(
            [np.ravel(fitter.params_), np.ravel(fitter.standard_errors_), [fitter.log_likelihood_]]
        )
        if convergence or not np.all(np.isfinite(values)):
            problem = (
                str(convergence[0].message).strip().splitlines()[0]
                if convergence
                else "non-finite estimates"
            )
            continue
        if penalizer:
            notes.append(
                f"ridge penalizer {penalizer} added after the unpenalized fit failed "
                f"({problem}); estimates are shrunk towards 0 and may be unreliable"
            )
        return fitter
    raise ConvergenceError(f"Cox fit failed even with penalizer {FALLBACK_PENALIZER}: {problem}")


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


def _efron_event_time_pieces(design, risk_score, stop, event, strata):
    """Score and information contributed at each event time (Efron ties), right-censored data.

    Risk-set sums come from reverse cumulative sums over time-sorted rows, so the cost is
    O(n p^2) plus a step per tied death, instead of a pass over the risk set per event time.
    """
    weights = np.exp(risk_score - risk_score.max())
    n_var = design.shape[1]
    scores, informations, dying_rows = [], [], []
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        rows = rows[np.argsort(-stop[rows], kind="stable")]
        x, w = design[rows], weights[rows]
        # Running sums over rows with time >= each row's time (rows sorted by time, descending).
        s0 = np.cumsum(w)
        s1 = np.cumsum(w[:, None] * x, axis=0)
        s2 = np.cumsum(w[:, None, None] * x[:, :, None] * x[:, None, :], axis=0)
        times = stop[rows]
        dead = event[rows] == 1
        for time in np.unique(times[dead]):
            last_at_risk = np.searchsorted(-times, -time, side="right") - 1
            dying = np.flatnonzero((times == time) & dead)
            deaths = len(dying)
            d0, d1 = w[dying].sum(), w[dying] @ x[dying]
            d2 = (w[dying, None, None] * x[dying, :, None] * x[dying, None, :]).sum(axis=0)
            score = x[dying].sum(axis=0)
            information = np.zeros((n_var, n_var))
            for r in range(deaths):
                fraction = r / deaths
                total = s0[last_at_risk] - fraction * d0
                mean = (s1[last_at_risk] - fraction * d1) / total
                second = (s2[last_at_risk] - fraction * d2) / total
                score -= mean
                information += second - np.outer(mean, mean)
            scores.append(score)
            informations.append(information)
            dying_rows.append(rows[dying[0]])
    return np.array(scores), np.array(informations), np.array(dying_rows)


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
    terms: dict[str, list[int]],
) -> pd.DataFrame:
    """cox.zph: score test for adding x * g(t) at (beta-hat, 0), per term and GLOBAL."""
    transformed = _left_km_transform(durations, events)
    centred_time = transformed - transformed[events == 1].mean()
    scores, informations, dying_rows = _efron_event_time_pieces(
        design, risk_score, durations, events, strata
    )
    g = centred_time[dying_rows]
    n_var = design.shape[1]
    score = np.concatenate([np.zeros(n_var), (g[:, None] * scores).sum(axis=0)])
    information = np.block(
        [
            [informations.sum(axis=0), np.einsum("t,tij->ij", g, informations)],
            [np.einsum("t,tij->ij", g, informations), np.einsum("t,tij->ij", g**2, informations)],
        ]
    )
    rows = []
    for name, columns in [*terms.items(), ("GLOBAL", list(range(n_var)))]:
        keep = np.concatenate([np.arange(n_var), np.asarray(columns) + n_var])
        part = score[keep]
        statistic = float(part @ np.linalg.solve(information[np.ix_(keep, keep)], part))
        rows.append(
            {
                "term": name,
                "statistic": statistic,
                "dof": len(columns),
                "p_value": float(stats.chi2.sf(statistic, len(columns))),
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


def _concordance(
    risk_score: np.ndarray,
    stop: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray,
    start: np.ndarray,
) -> float:
    """Harrell's C as survival::concordance: within strata, over each event time's risk set.

    A higher risk score should die first; risk-score ties count 1/2; event-time ties are not
    comparable, a subject censored at an event time is. Written by hand because lifelines'
    concordance_index has no strata and no start/stop risk sets.
    """
    concordant = tied = comparable = 0.0
    for at_risk, dying in _risk_sets(stop, event, strata, start):
        others = np.sort(risk_score[np.setdiff1d(at_risk, dying)])
        below = np.searchsorted(others, risk_score[dying], side="left")
        not_above = np.searchsorted(others, risk_score[dying], side="right")
        concordant += below.sum()
        tied += (not_above - below).sum()
        comparable += len(others) * len(dying)
    return float((concordant + tied / 2) / comparable) if comparable else np.nan


def fit_cox(
    df: pd.DataFrame,
    duration: str,
    event: str,
    covariates: list[str],
    strata: str | list[str] | None = None,
    cluster: str | None = None,
) -> CoxResult:
    """Cox proportional hazards fit (Efron ties) with R coxph's estimates and tests.

    With `cluster`, SEs, z, p and CIs use the grouped-dfbeta sandwich as coxph(cluster=);
    the log-likelihood and concordance are the ordinary ones. Rows missing any used column
    are dropped, and the result says how many.
    """
    strata_columns = [strata] if isinstance(strata, str) else list(strata or [])
    extra = [cluster] if cluster is not None else []
    used_columns = [duration, event, *covariates, *strata_columns, *extra]
    used, dropped = complete_rows(df, used_columns)
    check_event_indicator(used, event)
    design = design_matrix(used, covariates)
    frame = design.assign(
        **{_DURATION: used[duration].astype(float), _EVENT: used[event].astype(float)}
    )
    for name in strata_columns:
        frame[name] = used[name]
    notes: list[str] = []
    if dropped:
        notes.append(f"{dropped} row(s) with a missing value in {', '.join(used_columns)} dropped")

    def fit(penalizer: float) -> CoxPHFitter:
        return CoxPHFitter(penalizer=penalizer, alpha=1 - CONVENTIONS.confidence_level).fit(
            frame,
            _DURATION,
            _EVENT,
            strata=strata_columns or None,
            fit_options=_FIT_OPTIONS,
        )

    fitter = _fit_with_fallback(fit, notes)
    names = list(design.columns)
    estimate = fitter.params_[names].to_numpy()
    x = design.to_numpy(float)
    risk_score = _linear_predictor(x, estimate)
    durations = frame[_DURATION].to_numpy()
    events = frame[_EVENT].to_numpy()
    strata_codes = (
        used.groupby(strata_columns, sort=True).ngroup().to_numpy()
        if strata_columns
        else np.zeros(len(used), dtype=int)
    )
    start = np.full(len(used), -np.inf)
    if cluster is None:
        std_error = fitter.standard_errors_[names].to_numpy()
    else:
        residuals, *_ = _efron_pieces(x, risk_score, durations, events, strata_codes, start)
        dfbeta = residuals @ fitter.variance_matrix_.loc[names, names].to_numpy()
        by_cluster = pd.DataFrame(dfbeta).groupby(used[cluster].to_numpy()).sum().to_numpy()
        std_error = np.sqrt(np.diag(by_cluster.T @ by_cluster))
    terms = _terms(covariates, design)
    term_columns = {name: [names.index(c) for c in columns] for name, columns in terms.items()}
    result = CoxResult(
        fitted=fitter,
        coefficients=_tidy(estimate, std_error, names),
        concordance=_concordance(risk_score, durations, events, strata_codes, start),
        log_likelihood=float(fitter.log_likelihood_),
        n=len(used),
        events=int(events.sum()),
        terms=terms,
        _ph_test=lambda: _zph_table(x, risk_score, durations, events, strata_codes, term_columns),
    )
    for message in notes:
        result.note(message)
    return result


def fit_cox_time_varying(
    df: pd.DataFrame, id: str, start: str, stop: str, event: str, covariates: list[str]
) -> CoxResult:
    """Cox fit on (start, stop] intervals, as coxph(Surv(start, stop, event)).

    `n` counts intervals (rows), as coxph does; concordance uses each event time's risk set of
    intervals. Rows missing any used column are dropped, and the result says how many.
    """
    used_columns = [stop, event, start, id, *covariates]
    used, dropped = complete_rows(df, used_columns)
    check_event_indicator(used, event)
    if (used[stop] <= used[start]).any():
        raise DataError("every interval needs stop > start", column=stop)
    design = design_matrix(used, covariates)
    frame = design.assign(
        **{
            _START: used[start].astype(float),
            _STOP: used[stop].astype(float),
            _EVENT: used[event].astype(float),
            _ID: used[id],
        }
    )
    notes: list[str] = []
    if dropped:
        notes.append(f"{dropped} row(s) with a missing value in {', '.join(used_columns)} dropped")

    def fit(penalizer: float) -> CoxTimeVaryingFitter:
        return CoxTimeVaryingFitter(
            penalizer=penalizer, alpha=1 - CONVENTIONS.confidence_level
        ).fit(
            frame,
            event_col=_EVENT,
            start_col=_START,
            stop_col=_STOP,
            id_col=_ID,
            fit_options=_FIT_OPTIONS,
        )

    fitter = _fit_with_fallback(fit, notes)
    names = list(design.columns)
    estimate = fitter.params_[names].to_numpy()
    risk_score = _linear_predictor(design.to_numpy(float), estimate)
    events = frame[_EVENT].to_numpy()
    result = CoxResult(
        fitted=fitter,
        coefficients=_tidy(estimate, fitter.standard_errors_[names].to_numpy(), names),
        concordance=_concordance(
            risk_score,
            frame[_STOP].to_numpy(),
            events,
            np.zeros(len(used), dtype=int),
            frame[_START].to_numpy(),
        ),
        log_likelihood=float(fitter.log_likelihood_),
        n=len(used),
        events=int(events.sum()),
        terms=_terms(covariates, design),
    )
    for message in notes:
        result.note(message)
    return result
