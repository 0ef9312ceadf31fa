"""Parametric accelerated-failure-time models (survreg's Weibull, log-normal, log-logistic).

The likelihood is written here on survreg's scale, log T = X beta + scale * W, because lifelines
parameterises the same models differently (rho/lambda, alpha/beta) and reports neither survreg's
Log(scale) row nor interval bounds with survreg's Surv(type="interval2") meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, special

from analysis.errors import ConvergenceError, DataError
from analysis.results import ModelResult, wald_table, with_estimability
from analysis.survival.design import (
    aliased_positions,
    aliased_reason,
    factor_levels,
    is_categorical,
)

Distribution = Literal["weibull", "lognormal", "loglogistic"]
INTERCEPT = "(Intercept)"
LOG_SCALE = "Log(scale)"
_GRADIENT_TOLERANCE = 1e-7
# Newton-Raphson stops once a step raises the log-likelihood by at most this (relative) or moves
# no parameter by more than this; a step is halved at most _MAX_HALVINGS times.
_SETTLED = 1e-13
_MAX_NEWTON_STEPS = 100
_MAX_HALVINGS = 40
_MAX_DAMPINGS = 12
# A coefficient moving log time by more than this across its covariate's range is checked for
# divergence: doubling it must lower the log-likelihood by more than _FLAT_LIKELIHOOD.
_DIVERGING_EFFECT = 5.0
_FLAT_LIKELIHOOD = 1e-4


@dataclass(frozen=True)
class _ErrorDistribution:
    """The standardised error W of log T: log density, log cdf, log survival and quantiles."""

    name: str

    def log_pdf(self, z: np.ndarray) -> np.ndarray:
        if self.name == "weibull":  # minimum extreme value
            return z - np.exp(z)
        if self.name == "lognormal":
            return -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
        return -z - 2 * np.logaddexp(0, -z)

    def log_pdf_slope(self, z: np.ndarray) -> np.ndarray:
        """d log f(z) / dz."""
        if self.name == "weibull":
            return 1 - np.exp(z)
        if self.name == "lognormal":
            return -z
        return -np.tanh(z / 2)

    def log_pdf_curvature(self, z: np.ndarray) -> np.ndarray:
        """d^2 log f(z) / dz^2."""
        if self.name == "weibull":
            return -np.exp(z)
        if self.name == "lognormal":
            return -np.ones_like(z)
        return -0.5 / np.cosh(z / 2) ** 2

    def log_cdf(self, z: np.ndarray) -> np.ndarray:
        if self.name == "weibull":
            return np.log(-np.expm1(-np.exp(z)))
        if self.name == "lognormal":
            return special.log_ndtr(z)
        return -np.logaddexp(0, -z)

    def log_sf(self, z: np.ndarray) -> np.ndarray:
        if self.name == "weibull":
            return -np.exp(z)
        if self.name == "lognormal":
            return special.log_ndtr(-z)
        return -np.logaddexp(0, z)

    def quantile(self, probability: np.ndarray) -> np.ndarray:
        if self.name == "weibull":
            return np.log(-np.log1p(-probability))
        if self.name == "lognormal":
            return special.ndtri(probability)
        return np.log(probability / (1 - probability))


@dataclass
class _CensoredLogTimes:
    """Log-time bounds by censoring kind; NaN where a bound does not apply."""

    exact: np.ndarray  # log t for observed events
    right: np.ndarray  # log lower bound, event after it
    left: np.ndarray  # log upper bound, event at or before it
    interval_lower: np.ndarray
    interval_upper: np.ndarray

    @property
    def kinds(self) -> dict[str, np.ndarray]:
        return {
            "exact": ~np.isnan(self.exact),
            "right": ~np.isnan(self.right),
            "left": ~np.isnan(self.left),
            "interval": ~np.isnan(self.interval_lower),
        }

    def centre(self) -> np.ndarray:
        """One representative log time per row, for starting values only."""
        midpoint = (self.interval_lower + self.interval_upper) / 2
        return np.fmax(np.fmax(self.exact, self.right), np.fmax(self.left, midpoint))


@dataclass
class _Derivatives:
    """Log-likelihood with its gradient and (optionally) Hessian in (beta, log scale)."""

    value: float
    gradient: np.ndarray
    hessian: np.ndarray | None


@dataclass
class _Likelihood:
    """survreg's log-likelihood (on the time scale) in (beta, log scale), analytically.

    Per row, with z = (log t - eta) / scale: an exact time adds log f(z) - log scale - log t; a
    censored row adds log P, P = F(z_upper) - F(z_lower) (a missing side is +-infinity). The
    derivatives in eta and log scale follow from dz/d eta = -1/scale and dz/d log scale = -z.
    """

    design: np.ndarray
    times: _CensoredLogTimes
    error: _ErrorDistribution

    def __post_init__(self) -> None:
        # The rows of each censoring kind present and their log-time bounds, found once: the
        # likelihood is evaluated about ten times per fit.
        times = self.times
        bounds = {
            "exact": (times.exact,),
            "right": (times.right,),
            "left": (times.left,),
            "interval": (times.interval_lower, times.interval_upper),
        }
        self.kinds = {kind: rows for kind, rows in times.kinds.items() if rows.any()}
        self.bounds = {
            kind: tuple(values[rows] for values in bounds[kind])
            for kind, rows in self.kinds.items()
        }

    def value_and_gradient(self, parameters: np.ndarray) -> tuple[float, np.ndarray]:
        result = self.derivatives(parameters, with_hessian=False)
        return result.value, result.gradient

    def derivatives(self, parameters: np.ndarray, with_hessian: bool = True) -> _Derivatives:
        # A trial step far off may overflow: its value is then not finite and it is halved.
        with np.errstate(all="ignore"):
            return self._derivatives(parameters, with_hessian)

    def _derivatives(self, parameters: np.ndarray, with_hessian: bool) -> _Derivatives:
        beta, log_scale = parameters[:-1], parameters[-1]
        scale = np.exp(log_scale)
        linear = self.design @ beta
        n_rows = len(linear)
        loglik = 0.0
        d_eta = np.zeros(n_rows)  # d loglik / d eta, per row
        d_eta_eta = np.zeros(n_rows)
        d_eta_scale = np.zeros(n_rows)  # d^2 loglik / d eta d log scale
        d_scale = d_scale_scale = 0.0
        error, kinds = self.error, self.kinds
        if "exact" in kinds:
            rows, (log_time,) = kinds["exact"], self.bounds["exact"]
            z = (log_time - linear[rows]) / scale
            # -log t is the Jacobian from log time to time, included by survreg.
            loglik += np.sum(error.log_pdf(z) - log_scale - log_time)
            slope, curvature = error.log_pdf_slope(z), error.log_pdf_curvature(z)
            d_eta[rows] = -slope / scale
            d_scale += np.sum(-z * slope - 1)
            d_eta_eta[rows] = curvature / scale**2
            d_eta_scale[rows] = (curvature * z + slope) / scale
            d_scale_scale += np.sum(curvature * z**2 + slope * z)
        for kind, (upper, lower, log_mass) in self._censored_rows(linear, scale).items():
            rows = kinds[kind]
            loglik += np.sum(log_mass)
            # f(z) / P at each finite bound; 0 (and z = 0) on a missing side.
            share_upper = np.exp(error.log_pdf(upper) - log_mass) if kind != "right" else 0.0
            share_lower = np.exp(error.log_pdf(lower) - log_mass) if kind != "left" else 0.0
            upper = upper if kind != "right" else 0.0
            lower = lower if kind != "left" else 0.0
            row_eta = -(share_upper - share_lower) / scale
            row_scale = -(share_upper * upper - share_lower * lower)
            d_eta[rows] = row_eta
            d_scale += np.sum(row_scale)
            slope_upper = share_upper * error.log_pdf_slope(upper)
            slope_lower = share_lower * error.log_pdf_slope(lower)
            # Second derivatives of P, divided by P, less the squared first derivatives.
            d_eta_eta[rows] = (slope_upper - slope_lower) / scale**2 - row_eta**2
            d_eta_scale[rows] = (
                slope_upper * upper - slope_lower * lower + share_upper - share_lower
            ) / scale - row_eta * row_scale
            d_scale_scale += np.sum(
                upper * (slope_upper * upper + share_upper)
                - lower * (slope_lower * lower + share_lower)
                - row_scale**2
            )
        gradient = np.append(self.design.T @ d_eta, d_scale)
        if not with_hessian:
            return _Derivatives(float(loglik), gradient, None)
        size = len(parameters)
        hessian = np.empty((size, size))
        block = (self.design * d_eta_eta[:, None]).T @ self.design
        # A BLAS product need not round x'Dx symmetrically.
        hessian[:-1, :-1] = (block + block.T) / 2
        hessian[:-1, -1] = hessian[-1, :-1] = self.design.T @ d_eta_scale
        hessian[-1, -1] = d_scale_scale
        return _Derivatives(float(loglik), gradient, hessian)

    def _censored_rows(self, linear: np.ndarray, scale: float) -> dict:
        """Per censoring kind present: z at the upper and lower bound, and log P."""
        error, kinds, bounds = self.error, self.kinds, self.bounds
        pieces = {}
        if "right" in kinds:
            z = (bounds["right"][0] - linear[kinds["right"]]) / scale
            pieces["right"] = (None, z, error.log_sf(z))
        if "left" in kinds:
            z = (bounds["left"][0] - linear[kinds["left"]]) / scale
            pieces["left"] = (z, None, error.log_cdf(z))
        if "interval" in kinds:
            rows = kinds["interval"]
            z_lower = (bounds["interval"][0] - linear[rows]) / scale
            z_upper = (bounds["interval"][1] - linear[rows]) / scale
            pieces["interval"] = (z_upper, z_lower, self._log_interval_mass(z_lower, z_upper))
        return pieces

    def _log_interval_mass(self, z_lower: np.ndarray, z_upper: np.ndarray) -> np.ndarray:
        """log(F(z_upper) - F(z_lower)), from whichever tail keeps the difference accurate."""
        error = self.error
        upper_tail = z_lower > 0
        log_mass = np.empty_like(z_lower)
        low, high = z_lower[upper_tail], z_upper[upper_tail]
        log_mass[upper_tail] = error.log_sf(low) + np.log1p(
            -np.exp(error.log_sf(high) - error.log_sf(low))
        )
        low, high = z_lower[~upper_tail], z_upper[~upper_tail]
        log_mass[~upper_tail] = error.log_cdf(high) + np.log1p(
            -np.exp(error.log_cdf(low) - error.log_cdf(high))
        )
        return log_mass


@dataclass
class AftFit:
    """What Newton-Raphson found: parameters (beta..., log scale), covariance, iterations."""

    parameters: pd.Series
    covariance: pd.DataFrame
    optimizer: optimize.OptimizeResult


@dataclass
class AftResult(ModelResult):
    """A survreg-style AFT fit: log-time coefficients, survreg's scale, log-likelihood, AIC."""

    distribution: str = "weibull"
    scale: float = np.nan
    log_likelihood: float = np.nan
    aic: float = np.nan
    n_observations: int = 0
    covariates: list[str] = field(default_factory=list)
    factor_levels: dict[str, list] = field(default_factory=dict)

    @property
    def params(self) -> pd.Series:
        """Coefficients on the log-time scale, Intercept first (survreg's coef())."""
        return self.fitted.parameters.drop(LOG_SCALE)

    def predict_quantiles(
        self, frame: pd.DataFrame, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    ) -> pd.DataFrame:
        """Predicted time quantiles per row, one column each (R's predict(type="quantile"))."""
        design = _prediction_design(frame, self.covariates, self.factor_levels)
        design = design.reindex(columns=self.params.index[1:], fill_value=0.0)
        linear = self.params.iloc[0] + design.to_numpy(float) @ self.params.iloc[1:].to_numpy()
        error = _ErrorDistribution(self.distribution)
        offsets = error.quantile(np.asarray(quantiles, dtype=float))
        times = np.exp(linear[:, None] + self.scale * offsets[None, :])
        return pd.DataFrame(times, index=frame.index, columns=list(quantiles))


def fit_aft(
    df: pd.DataFrame,
    covariates: list[str],
    distribution: Distribution = "weibull",
    duration: str | None = None,
    event: str | None = None,
    lower: str | None = None,
    upper: str | None = None,
    reference_levels: dict | None = None,
) -> AftResult:
    """Fit survreg's AFT model to right-censored (duration, event) or interval-censored data.

    Interval bounds follow Surv(type="interval2"): (lower, upper], upper missing or infinite =
    right-censored at lower, lower == upper = exact event, lower missing or 0 = left-censored at
    upper. Standard errors are Wald, from the observed information in (beta, log scale). A
    factor is coded against its entry in `reference_levels`, else its first sorted level.
    """
    estimate = AftRefits(
        df, covariates, distribution, duration, event, lower, upper, reference_levels
    ).fit()
    names = estimate.names
    parameters = pd.Series(estimate.estimates, index=names)
    result = AftResult(
        fitted=AftFit(
            parameters,
            pd.DataFrame(estimate.covariance, index=names, columns=names),
            estimate.optimum,
        ),
        coefficients=_tidy_table(
            parameters,
            np.sqrt(np.diag(estimate.covariance)),
            estimate.terms,
            estimate.reasons,
            estimate.limits,
        ),
        distribution=distribution,
        scale=estimate.scale,
        log_likelihood=estimate.log_likelihood,
        aic=estimate.aic,
        n_observations=estimate.n_observations,
        covariates=list(covariates),
        factor_levels=estimate.factor_levels,
    )
    for message in estimate.notes:
        result.note(message)
    return result


@dataclass
class AftEstimate:
    """One AFT fit's numbers before its summary table (what a bootstrap replicate needs).

    `names` are the fitted terms (aliased ones dropped) then Log(scale), `terms` every design
    term then Log(scale); a diverging coefficient's estimate is its limit, +-inf.
    """

    distribution: str
    covariates: list[str]
    factor_levels: dict[str, list]
    terms: list[str]
    names: list[str]
    optimum: optimize.OptimizeResult
    estimates: np.ndarray
    covariance: np.ndarray
    reasons: dict[str, str]
    limits: dict[str, float]
    n_observations: int
    notes: list[str]

    @property
    def params(self) -> pd.Series:
        """Coefficients on the log-time scale, Intercept first (survreg's coef())."""
        return pd.Series(self.estimates[:-1], index=self.names[:-1])

    @property
    def scale(self) -> float:
        return float(np.exp(self.optimum.x[-1]))

    @property
    def log_likelihood(self) -> float:
        return -self.optimum.fun

    @property
    def aic(self) -> float:
        return -2 * self.log_likelihood + 2 * len(self.names)


class AftRefits:
    """One AFT specification fitted to subsets of one frame's rows (bootstrap replicates, folds).

    The frame's columns are read and coded once; `fit(rows)` equals `fit_aft` on
    `df.iloc[rows]` number for number, with the same notes and errors, without building the
    frames and the summary table a refit does not need.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        covariates: list[str],
        distribution: Distribution = "weibull",
        duration: str | None = None,
        event: str | None = None,
        lower: str | None = None,
        upper: str | None = None,
        reference_levels: dict | None = None,
    ) -> None:
        if distribution not in ("weibull", "lognormal", "loglogistic"):
            raise DataError(f"unknown AFT distribution {distribution!r}")
        self.right_censored = duration is not None and event is not None
        if self.right_censored == (lower is not None and upper is not None):
            raise DataError("give either duration and event, or lower and upper")
        outcome_columns = [duration, event] if self.right_censored else [lower]
        required = list(covariates) + [c for c in outcome_columns if c is not None]
        missing = [name for name in required + ([upper] if upper else []) if name not in df]
        if missing:
            raise DataError("column not in the frame", column=missing[0])
        self.df = df
        self.covariates = list(covariates)
        self.distribution = distribution
        self.reference_levels = reference_levels or {}
        complete = df[self.covariates].notna().all(axis=1)
        if self.right_censored:
            complete &= df[[duration, event]].notna().all(axis=1)
        self.complete = complete.to_numpy()
        if self.right_censored:
            self.outcome = (duration, df[duration].to_numpy(float), df[event].to_numpy())
        else:
            self.outcome = (lower, df[lower].to_numpy(float), df[upper].to_numpy(float))
        # Per covariate: numeric values, or a factor's levels (sorted as design_matrix sorts
        # them) with each row's level code (-1 where missing).
        self.numeric: dict[str, np.ndarray] = {}
        self.factors: dict[str, tuple[list, np.ndarray]] = {}
        for name in self.covariates:
            column = df[name]
            if not is_categorical(column):
                self.numeric[name] = column.astype(float).to_numpy()
                continue
            levels = sorted(column[self.complete].unique(), key=str)
            self.factors[name] = (levels, pd.Categorical(column, categories=levels).codes)

    def fit(self, rows: np.ndarray | None = None) -> AftEstimate:
        """Fit to the rows at these positions (repeats allowed), or to every row."""
        rows = np.arange(len(self.df)) if rows is None else np.asarray(rows)
        notes: list[str] = []
        complete = self.complete[rows]
        if not complete.all():
            notes.append(
                f"{int((~complete).sum())} row(s) were left out because a value was missing in a "
                f"used column; the model describes the remaining {int(complete.sum())} row(s)."
            )
        used = rows[complete]
        column, first, second = self.outcome
        if self.right_censored:
            times = _right_censored_times(first[used], second[used], column)
        else:
            times = _interval_censored_times(first[used], second[used], column)
        if not (
            times.kinds["exact"].any() or times.kinds["left"].any() or times.kinds["interval"].any()
        ):
            raise ConvergenceError(
                "no events: every row is right-censored, the AFT model has no MLE"
            )

        design, columns, levels_by_factor = self._design(used)
        all_terms = [*columns, LOG_SCALE]
        aliased = aliased_positions(design, baseline=np.zeros((len(design), 0)))
        reasons = {
            columns[index]: aliased_reason(columns[index], r_function="R's survreg")
            for index in aliased
        }
        notes.extend(reasons.values())
        if aliased:
            kept = np.setdiff1d(np.arange(len(columns)), aliased)
            design = np.asfortranarray(design[:, kept])
            columns = [columns[index] for index in kept]

        likelihood = _Likelihood(design, times, _ErrorDistribution(self.distribution))
        optimum, fit_notes = _maximise(likelihood)
        notes.extend(fit_notes)
        names = [*columns, LOG_SCALE]
        diverging = _diverging_columns(likelihood, optimum.x, columns)
        for index in diverging:
            name = names[index]
            direction = "plus" if optimum.x[index] > 0 else "minus"
            reasons[name] = (
                f"{name} is not estimable: the likelihood keeps rising as its coefficient runs "
                f"to {direction} infinity (for example, no one with it had the event), so it "
                "has no finite estimate; the other estimates are their limits as it does."
            )
            notes.append(reasons[name])
        finite = np.setdiff1d(np.arange(len(names)), diverging)
        information = optimum.hess[np.ix_(finite, finite)]
        try:
            finite_covariance = np.linalg.inv(information)
        except np.linalg.LinAlgError as error:
            raise ConvergenceError("the information matrix is singular at the optimum") from error
        if not np.all(np.isfinite(finite_covariance)) or np.any(np.diag(finite_covariance) <= 0):
            raise ConvergenceError("the information matrix is not positive definite at the optimum")
        covariance = np.full((len(names), len(names)), np.nan)
        covariance[np.ix_(finite, finite)] = finite_covariance
        estimates = optimum.x.copy()
        estimates[diverging] = np.sign(estimates[diverging]) * np.inf
        return AftEstimate(
            distribution=self.distribution,
            covariates=list(self.covariates),
            factor_levels=levels_by_factor,
            terms=all_terms,
            names=names,
            optimum=optimum,
            estimates=estimates,
            covariance=covariance,
            reasons=reasons,
            limits={names[index]: float(estimates[index]) for index in diverging},
            n_observations=len(used),
            notes=notes,
        )

    def _design(self, used: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, list]]:
        """The intercept, numeric covariates and treatment dummies of the levels these rows hold
        (as design_matrix codes them), column-major like a DataFrame's values."""
        parts: list[np.ndarray] = [np.ones(len(used))]
        columns = [INTERCEPT]
        levels_by_factor: dict[str, list] = {}
        for name in self.covariates:
            if name in self.numeric:
                if name in self.reference_levels:
                    raise DataError("a reference level is only for a factor", column=name)
                parts.append(self.numeric[name][used])
                columns.append(name)
                continue
            all_levels, all_codes = self.factors[name]
            codes = all_codes[used]
            present = np.zeros(len(all_levels), dtype=bool)
            present[codes] = True
            levels = [all_levels[code] for code in np.flatnonzero(present)]
            reference = self.reference_levels.get(name)
            if reference is not None:
                if reference not in levels:
                    # factor_levels words the error (the reference does not occur here).
                    factor_levels(self.df[name].iloc[used], reference)
                levels = [reference, *[level for level in levels if level != reference]]
            levels_by_factor[name] = levels
            code_of = {level: code for code, level in enumerate(all_levels)}
            for level in levels[1:]:
                parts.append((codes == code_of[level]) * 1.0)
                columns.append(f"{name}[{level}]")
        design = np.empty((len(used), len(parts)), order="F")
        for position, values in enumerate(parts):
            design[:, position] = values
        return design, columns, levels_by_factor


def _right_censored_times(time: np.ndarray, event: np.ndarray, column: str) -> _CensoredLogTimes:
    if np.any(time <= 0):
        raise DataError("durations must be positive for an AFT model", column=column)
    observed = event.astype(bool)
    log_time = np.log(time)
    nan = np.full(len(time), np.nan)
    return _CensoredLogTimes(
        exact=np.where(observed, log_time, np.nan),
        right=np.where(observed, np.nan, log_time),
        left=nan,
        interval_lower=nan.copy(),
        interval_upper=nan.copy(),
    )


def _interval_censored_times(low: np.ndarray, high: np.ndarray, column: str) -> _CensoredLogTimes:
    open_above = np.isnan(high) | np.isposinf(high)
    open_below = np.isnan(low) | (low <= 0)
    if np.any(open_above & open_below):
        raise DataError(
            "a row has neither a positive lower nor a finite upper bound", column=column
        )
    if np.any(~open_above & ~open_below & (low > high)):
        raise DataError("lower bound above upper bound", column=column)
    exact = ~open_above & ~open_below & (low == high)
    interval = ~open_above & ~open_below & (low < high)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_low, log_high = np.log(low), np.log(high)
    return _CensoredLogTimes(
        exact=np.where(exact, log_low, np.nan),
        right=np.where(open_above, log_low, np.nan),
        left=np.where(open_below, log_high, np.nan),
        interval_lower=np.where(interval, log_low, np.nan),
        interval_upper=np.where(interval, log_high, np.nan),
    )


def _starting_values(likelihood: _Likelihood) -> list[np.ndarray]:
    """Least squares on a representative log time, then intercept-only, as fallbacks in order."""
    centre = likelihood.times.centre()
    x = likelihood.design
    # Normal equations (a small system) rather than a least-squares solve over every row: this
    # is only where Newton starts.
    beta, *_ = np.linalg.lstsq(x.T @ x, x.T @ centre, rcond=None)
    spread = np.std(centre - x @ beta)
    least_squares = np.append(beta, np.log(spread if spread > 0 else 1.0))
    intercept_only = np.zeros(x.shape[1] + 1)
    intercept_only[0] = np.mean(centre)
    return [least_squares, intercept_only]


def _maximise(likelihood: _Likelihood) -> tuple[optimize.OptimizeResult, list[str]]:
    """Newton-Raphson with the analytic Hessian (as survreg) from least-squares starting values;
    from intercept-only values if that fails."""
    notes: list[str] = []
    for attempt, start in enumerate(_starting_values(likelihood)):
        optimum = _newton_raphson(likelihood, start)
        if optimum is None:
            continue
        gradient = optimum.jac
        if np.all(np.isfinite(optimum.x)) and np.max(np.abs(gradient)) < _GRADIENT_TOLERANCE * max(
            1.0, len(likelihood.design)
        ):
            if attempt:
                notes.append(
                    "The AFT fit converged only when started from the intercept-only fit; "
                    "the estimates are the likelihood's maximum, found from that start."
                )
            return optimum, notes
    raise ConvergenceError(
        "the AFT likelihood did not converge from least-squares or intercept-only starting values"
    )


def _ascent_step(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The Newton step; where the Hessian is not negative definite there (far from the
    maximum), a Levenberg-Marquardt step that still goes uphill."""
    damping = 0.0
    scale = max(float(np.max(np.abs(np.diag(hessian)))), 1.0)
    for _ in range(_MAX_DAMPINGS):
        try:
            step = np.linalg.solve(damping * scale * np.eye(len(gradient)) - hessian, gradient)
        except np.linalg.LinAlgError:
            step = None
        if step is not None and np.all(np.isfinite(step)) and gradient @ step > 0:
            return step
        damping = max(10 * damping, 1e-6)
    return gradient / scale


def _newton_raphson(likelihood: _Likelihood, start: np.ndarray) -> optimize.OptimizeResult | None:
    """Newton steps, halved while the log-likelihood falls, until a step no longer raises it
    by more than rounding; None if the iteration stalls or does not settle."""
    parameters = np.asarray(start, dtype=float)
    current = likelihood.derivatives(parameters)
    if not np.isfinite(current.value):
        return None
    for iteration in range(1, _MAX_NEWTON_STEPS + 1):
        step = _ascent_step(current.hessian, current.gradient)
        # A fall within rounding is accepted: at the maximum a step changes nothing else.
        floor = current.value - _SETTLED * abs(current.value)
        for _ in range(_MAX_HALVINGS):
            candidate = likelihood.derivatives(parameters + step)
            if np.isfinite(candidate.value) and candidate.value >= floor:
                break
            step = step / 2
        else:
            return None
        gain = candidate.value - current.value
        parameters, current = parameters + step, candidate
        if gain <= _SETTLED * abs(current.value) or np.max(np.abs(step)) <= _SETTLED:
            return optimize.OptimizeResult(
                x=parameters,
                fun=-current.value,
                jac=-current.gradient,
                hess=-current.hessian,
                nit=iteration,
                success=True,
                message="Newton-Raphson with the analytic Hessian",
            )
    return None


def _tidy_table(
    parameters: pd.Series,
    std_errors: np.ndarray,
    terms: list[str],
    reasons: dict[str, str],
    limits: dict[str, float],
) -> pd.DataFrame:
    """survreg's summary table (Value, Std. Error, z, p) with Wald limits, snake-cased.

    Aliased terms keep their row, marked not estimable, where survreg prints NA; a diverging
    term shows its limit (+-inf), marked not estimable.
    """
    std_errors = pd.Series(std_errors, index=parameters.index)
    table = wald_table(terms, parameters.reindex(terms), std_errors.reindex(terms))
    return with_estimability(table, reasons, limits)


def _diverging_columns(
    likelihood: _Likelihood, parameters: np.ndarray, columns: list[str]
) -> np.ndarray:
    """Covariate columns whose coefficient sits on a flat likelihood, running to infinity.

    At a finite maximum, doubling a coefficient lowers the likelihood; when no one in a level
    has the event (or a covariate separates events from censored rows) it barely moves, and
    the value is only where the optimiser stopped. survreg stops there too, without a warning.
    """
    log_likelihood = likelihood.value_and_gradient(parameters)[0]
    # Screened on the coefficient times the covariate's range (not its SD, which is small for
    # a rare level); the doubling test decides.
    across_range = np.ptp(likelihood.design, axis=0)
    diverging = []
    for index in np.flatnonzero(np.abs(parameters[:-1]) * across_range > _DIVERGING_EFFECT):
        if columns[index] == INTERCEPT:
            continue
        doubled = parameters.copy()
        doubled[index] *= 2
        if likelihood.value_and_gradient(doubled)[0] > log_likelihood - _FLAT_LIKELIHOOD:
            diverging.append(index)
    return np.asarray(diverging, dtype=int)


def _prediction_design(
    frame: pd.DataFrame, covariates: list[str], factor_levels: dict[str, list]
) -> pd.DataFrame:
    """Dummy-code a new frame against the levels seen in the fit (not the frame's own levels)."""
    parts = []
    for name in covariates:
        if name not in frame:
            raise DataError("covariate not in the frame", column=name)
        column = frame[name]
        if name not in factor_levels:
            parts.append(column.astype(float).rename(name))
            continue
        unknown = set(column.dropna().unique()) - set(factor_levels[name])
        if unknown:
            raise DataError(
                f"level(s) not seen in the fit: {sorted(unknown, key=str)}", column=name
            )
        for level in factor_levels[name][1:]:
            parts.append((column == level).astype(float).rename(f"{name}[{level}]"))
    if not parts:
        return pd.DataFrame(index=frame.index)
    return pd.concat(parts, axis=1)


def compare_by_aic(fits: dict[str, AftResult]) -> pd.DataFrame:
    """One row per fitted distribution (n, log-likelihood, AIC, scale), the lowest AIC flagged.

    AICs compare only fits to the same rows; a ConvergenceError when there is no fit to compare.
    """
    if not fits:
        raise ConvergenceError("no AFT distribution could be fitted")
    if len({fit.n_observations for fit in fits.values()}) > 1:
        raise DataError("AFT fits on different rows cannot be compared by AIC")
    table = pd.DataFrame(
        [
            {
                "distribution": distribution,
                "n": fit.n_observations,
                "log_likelihood": fit.log_likelihood,
                "aic": fit.aic,
                "scale": fit.scale,
            }
            for distribution, fit in fits.items()
        ]
    )
    best = table.loc[table["aic"].idxmin(), "distribution"]
    return table.assign(best_by_aic=table["distribution"] == best)
