"""Linear mixed-effects models over any tidy frame (lme4's lmer, fitted with statsmodels MixedLM).

statsmodels does the fitting (REML or ML, correlated random intercepts and slopes within one
grouping factor). What it lacks for parity with lme4 is written here: fixed-effect standard
errors from (X' V^-1 X)^-1 at the estimates, lme4's singular-fit check, the VarCorr table, R's
term names, and a fallback over optimizers with every statsmodels warning turned into a note.

Term names follow R's ``model.matrix``, so a tidy table reads like ``summary(lmer(...))``:
statsmodels' ``Intercept`` becomes ``(Intercept)``, a treatment dummy ``Sex[T.Male]`` becomes
``SexMale`` (``flag[T.True]`` becomes ``flagTRUE``), and interactions keep R's ``a:b``.
"""

from __future__ import annotations

import io
import re
import tokenize
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from analysis.errors import (
    ConvergenceError,
    ConvergenceWarning,
    DataError,
    ModelWarning,
    ParameterError,
)
from analysis.results import ModelResult, wald_table

INTERCEPT_TERM = "(Intercept)"
RESIDUAL_GROUP = "Residual"
SD_COR_COLUMNS = ("group", "term1", "term2", "variance", "sd_cor")

# lme4's isSingular(): a diagonal element of the relative covariance factor theta below 1e-4.
SINGULAR_TOLERANCE = 1e-4

# Tried in order, each from statsmodels' default start, until one converges with a finite
# log-likelihood. bfgs fails outright on some random-slope fits (Orthodont) where cg and the
# derivative-free methods succeed.
OPTIMIZER_ATTEMPTS: tuple[tuple[str, dict], ...] = (
    ("lbfgs", {"maxiter": 1000}),
    ("cg", {"gtol": 1e-8, "maxiter": 1000}),
    ("powell", {"ftol": 1e-12, "maxiter": 3000}),
    ("nm", {"ftol": 1e-12, "maxiter": 3000}),
)
# The (RE)ML surface is flat in the variance parameters: at statsmodels' default gradient
# tolerance the variances are only good to ~1e-4, at 1e-8 they agree with lme4 to ~1e-6. A
# converged fit is therefore polished with bfgs at gtol 1e-8 from where it stopped; starting
# there costs a few iterations, where a cold start at 1e-8 can run to maxiter (10x slower).
POLISH = ("bfgs", {"gtol": 1e-8, "maxiter": 40})

# statsmodels messages that fit_mixed replaces with its own checks: retries are what
# OPTIMIZER_ATTEMPTS does anyway, and the "boundary" test (a variance below 0.01 in the data's
# units) depends on the scale of the response, unlike lme4's isSingular on theta.
_SUPERSEDED_STATSMODELS_MESSAGES = (
    "Retrying MixedLM optimization",
    "MixedLM optimization failed",
    "Maximum Likelihood optimization failed",
    "Gradient optimization failed",
    "The MLE may be on the boundary",
    "random effects covariance",
    "Random effects covariance",
)


def r_term_name(statsmodels_name: str) -> str:
    """R's model.matrix name for a statsmodels/patsy column name ("Sex[T.Male]" -> "SexMale")."""
    if statsmodels_name == "Intercept":
        return INTERCEPT_TERM

    def level(match: re.Match) -> str:
        return {"True": "TRUE", "False": "FALSE"}.get(match[1], match[1])

    return re.sub(r"\[(?:T\.)?([^\]]*)\]", level, statsmodels_name)


@dataclass(kw_only=True)
class MixedResult(ModelResult):
    """A fitted linear mixed model: fixed effects in `.tidy()`, variance components beside it.

    `.tidy()` has one row per fixed effect. std_error is sqrt(diag((X' V^-1 X)^-1)) at the
    (RE)ML estimates, V = Z G Z' + sigma^2 I per group, as lme4's vcov(); statistic is the
    Wald t (estimate / std_error); p_value and conf_low/conf_high use the normal approximation
    (lme4 prints no p-values; with few groups this is anti-conservative, and
    lmerTest's Satterthwaite degrees of freedom would give larger p-values).
    """

    group: str
    reml: bool
    optimizer: str
    converged: bool
    singular: bool
    log_likelihood: float
    residual_variance: float
    n_observations: int
    n_groups: int
    fixed_effects_covariance: pd.DataFrame
    random_effects_covariance: pd.DataFrame
    random_effects: pd.DataFrame

    def note(self, message: str, category: type[Warning] = ModelWarning) -> None:
        """Record a caveat on the result and warn about it by name (ConvergenceWarning or other)."""
        self.notes.append(message)
        warnings.warn(message, category, stacklevel=3)

    @property
    def n_parameters(self) -> int:
        """Fixed effects, random-effect (co)variances and the residual variance, as lme4's df."""
        n_random = len(self.random_effects_covariance)
        return len(self.coefficients) + n_random * (n_random + 1) // 2 + 1

    @property
    def aic(self) -> float:
        """-2 logLik + 2 df, as R's AIC(fit); for a REML fit this uses the REML criterion.

        REML AICs are comparable only between models with the same fixed effects.
        """
        return -2.0 * self.log_likelihood + 2.0 * self.n_parameters

    @property
    def random_effects_sd_cor(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr(fit)): variances and SDs, then covariances and correlations.

        Columns group, term1, term2, variance, sd_cor; term2 is missing on variance rows, and the
        last row is the residual (group "Residual").
        """
        covariance = self.random_effects_covariance.to_numpy()
        terms = list(self.random_effects_covariance.index)
        sds = np.sqrt(np.diag(covariance))
        rows = [(self.group, term, None, covariance[i, i], sds[i]) for i, term in enumerate(terms)]
        for j in range(len(terms)):
            for i in range(j + 1, len(terms)):
                with np.errstate(invalid="ignore", divide="ignore"):
                    correlation = covariance[i, j] / (sds[i] * sds[j])
                rows.append((self.group, terms[j], terms[i], covariance[i, j], correlation))
        rows.append(
            (RESIDUAL_GROUP, None, None, self.residual_variance, np.sqrt(self.residual_variance))
        )
        return pd.DataFrame(rows, columns=list(SD_COR_COLUMNS))

    def predict(self, frame: pd.DataFrame | None = None) -> pd.Series:
        """Population-level fitted values X beta (random effects at 0), for the fit's or new rows.

        These are the mean trajectory for a typical member of the population, not any one
        group's trajectory; rows of `frame` with missing covariates get NaN.
        """
        if frame is None:
            exog = self.fitted.model.exog
            index = self.fitted.model.data.row_labels
            return pd.Series(exog @ self.fitted.fe_params.to_numpy(), index=index, name="fitted")
        predicted = self.fitted.predict(exog=frame)
        return pd.Series(predicted, name="fitted").reindex(frame.index)


def fit_mixed(
    frame: pd.DataFrame,
    formula: str,
    group: str,
    re_formula: str = "1",
    reml: bool = True,
) -> MixedResult:
    """Fit lmer(formula + (re_formula | group)): correlated random effects within one grouping.

    `re_formula` is "1" (or "~1") for a random intercept, "~week" (or "week") for a correlated
    random intercept and slope. Rows missing any used column are dropped with a note. A fit
    that does not converge, or whose random-effects covariance is singular (lme4's isSingular),
    is kept with a ConvergenceWarning note; ConvergenceError if no optimizer gives a finite fit.
    """
    if group not in frame.columns:
        raise DataError("grouping column not in the frame", column=group)
    random_formula = _statsmodels_re_formula(re_formula)
    used_columns = _used_columns(frame, [formula, random_formula], group)
    complete = frame[used_columns].notna().all(axis=1)
    data = frame.loc[complete]
    if data.empty:
        raise DataError(f"no complete rows in columns {', '.join(used_columns)}")

    model = smf.mixedlm(formula, data, groups=group, re_formula=random_formula)
    _check_identifiable(model, group)
    fitted, fit_messages = _fit_with_fallbacks(model, reml)

    fixed_names = [r_term_name(name) for name in model.exog_names]
    random_names = [
        INTERCEPT_TERM if name == group else r_term_name(name) for name in model.data.exog_re_names
    ]
    cov_re = np.asarray(fitted.cov_re, dtype=float)
    scale = float(fitted.scale)
    fixed_covariance = _fixed_effects_covariance(model, cov_re, scale)
    singular = _is_singular(np.asarray(fitted.cov_re_unscaled, dtype=float))
    blups = pd.DataFrame(
        [np.asarray(effects, dtype=float) for effects in fitted.random_effects.values()],
        index=pd.Index(list(fitted.random_effects.keys()), name=group),
        columns=random_names,
    )

    result = MixedResult(
        fitted=fitted,
        coefficients=_tidy_fixed_effects(fixed_names, fitted.fe_params, fixed_covariance),
        group=group,
        reml=reml,
        optimizer=fit_messages["method"],
        converged=bool(fitted.converged),
        singular=singular,
        log_likelihood=float(fitted.llf),
        residual_variance=scale,
        n_observations=int(model.nobs),
        n_groups=len(model.group_labels),
        fixed_effects_covariance=pd.DataFrame(
            fixed_covariance, index=fixed_names, columns=fixed_names
        ),
        random_effects_covariance=pd.DataFrame(cov_re, index=random_names, columns=random_names),
        random_effects=blups,
    )
    dropped = int((~complete).sum())
    if dropped:
        result.note(
            f"{dropped} of {len(frame)} rows dropped for missing values in "
            f"{', '.join(used_columns)}"
        )
    if not result.converged:
        result.note(
            f"no optimizer converged ({', '.join(fit_messages['tried'])}); estimates are from "
            f"{result.optimizer}, the highest log-likelihood reached, and are unreliable",
            ConvergenceWarning,
        )
    if singular:
        result.note(
            "singular fit: the random-effects covariance is on the boundary (a variance is 0 or "
            "a correlation is +/-1, as lme4's isSingular); simplify re_formula",
            ConvergenceWarning,
        )
    for message in fit_messages["kept"]:
        # On the boundary the variance parameters' Hessian cannot be negative definite; the
        # singular-fit note already says so.
        if singular and "Hessian" in message:
            continue
        result.note(f"statsmodels: {message}", ConvergenceWarning)
    return result


def _statsmodels_re_formula(re_formula: str) -> str:
    """Accept "1", "~1", "week", "~week"; statsmodels wants "1" or a one-sided "~..." formula."""
    body = re_formula.strip().removeprefix("~").strip()
    if not body:
        raise ParameterError(f"empty random-effects formula {re_formula!r}")
    return "1" if body == "1" else f"~{body}"


def _used_columns(frame: pd.DataFrame, formulas: list[str], group: str) -> list[str]:
    """The frame's columns a formula names (bare or quoted, as in Q("name")), plus the group."""
    names = {group}
    for formula in formulas:
        for token in tokenize.generate_tokens(io.StringIO(formula).readline):
            if token.type == tokenize.NAME:
                names.add(token.string)
            elif token.type == tokenize.STRING:
                names.add(token.string[1:-1])
    return [column for column in frame.columns if column in names]


def _check_identifiable(model, group: str) -> None:
    """lme4's checks before fitting (each a stop() in lmerControl's defaults), plus two of ours.

    lme4 drops aliased fixed-effect columns with a message; here a rank-deficient design is an
    error instead, since silently dropping a term changes what the remaining ones mean.
    """
    n_levels, n_observations = len(model.group_labels), int(model.nobs)
    n_random_effects = n_levels * model.k_re
    if n_levels < 2:
        raise DataError("grouping factors must have > 1 sampled level", column=group)
    if n_levels >= n_observations:
        raise DataError(
            "number of levels of each grouping factor must be < number of observations "
            f"({n_levels} levels, {n_observations} observations)",
            column=group,
        )
    if n_observations <= n_random_effects:
        raise DataError(
            f"number of observations (={n_observations}) <= number of random effects "
            f"(={n_random_effects}); the random-effects parameters and the residual variance "
            "are probably unidentifiable",
            column=group,
            hint="use a random intercept only (re_formula='1') or more observations per group",
        )
    if np.linalg.matrix_rank(model.exog) < model.exog.shape[1]:
        raise DataError(
            "the fixed-effects design is rank deficient",
            hint="lme4 would drop aliased columns; remove or merge the redundant terms",
        )
    # With y in the column space of X the (RE)ML criterion is infinite at every start, so no
    # optimizer can help (and the derivative-free ones would spin for their whole budget).
    coefficients = np.linalg.lstsq(model.exog, model.endog, rcond=None)[0]
    residual = model.endog - model.exog @ coefficients
    if np.linalg.norm(residual) <= 1e-10 * max(np.linalg.norm(model.endog), 1.0):
        raise ConvergenceError(
            "the fixed effects reproduce the response exactly, so there is no residual variance "
            "to estimate and the (RE)ML criterion is not finite"
        )


def _fit_with_fallbacks(model, reml: bool):
    """Try OPTIMIZER_ATTEMPTS until one converges; else keep the best finite fit or raise."""
    best = None
    tried = []
    for method, options in OPTIMIZER_ATTEMPTS:
        tried.append(method)
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            try:
                fitted = model.fit(reml=reml, method=[method], **options)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError, ZeroDivisionError):
                continue
            finite = _is_finite_fit(fitted)
        if not finite:
            continue
        messages = [str(warning.message) for warning in caught]
        if best is None or fitted.llf > best[0].llf:
            best = (fitted, method, messages)
        if fitted.converged:
            best = (_polished(model, reml, fitted), method, messages)
            break
    if best is None:
        raise ConvergenceError(
            f"no optimizer gave a finite mixed-model fit (tried {', '.join(tried)}); "
            "check for too few groups or observations, or a constant response"
        )
    fitted, method, messages = best
    kept = [
        message
        for message in dict.fromkeys(messages)
        if not any(part in message for part in _SUPERSEDED_STATSMODELS_MESSAGES)
        and "encountered in" not in message
    ]
    return fitted, {"method": method, "tried": tried, "kept": kept}


def _polished(model, reml: bool, fitted):
    """The converged fit refined at a tight gradient tolerance, if that is at least as good.

    The refinement starts at the optimum, so statsmodels may report it as not converged merely
    because the gradient cannot fall further in floating point; convergence is the first fit's.
    """
    method, options = POLISH
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            refined = model.fit(
                reml=reml, method=[method], start_params=fitted.params_object, **options
            )
        except (np.linalg.LinAlgError, ValueError, FloatingPointError, ZeroDivisionError):
            return fitted
    if not _is_finite_fit(refined) or refined.llf < fitted.llf:
        return fitted
    refined.converged = True
    return refined


def _is_finite_fit(fitted) -> bool:
    """A fit whose likelihood, fixed effects, variances and residual variance are all finite."""
    values = [
        float(fitted.llf),
        float(fitted.scale),
        *np.asarray(fitted.fe_params, dtype=float),
        *np.asarray(fitted.cov_re, dtype=float).ravel(),
    ]
    return bool(np.all(np.isfinite(values))) and float(fitted.scale) > 0


def _fixed_effects_covariance(model, cov_re: np.ndarray, scale: float) -> np.ndarray:
    """(sum_i X_i' V_i^-1 X_i)^-1 with V_i = Z_i G Z_i' + sigma^2 I: lme4's vcov() at the estimates.

    statsmodels' bse_fe inverts the full observed Hessian instead, which matches this on
    balanced designs but differs (by 5 % on sleepstudy with dropout) on unbalanced ones.
    """
    information = np.zeros((model.k_fe, model.k_fe))
    for label in model.group_labels:
        rows = model.row_indices[label]
        exog, exog_re = model.exog[rows], model.exog_re[rows]
        marginal_covariance = exog_re @ cov_re @ exog_re.T + scale * np.eye(len(rows))
        information += exog.T @ np.linalg.solve(marginal_covariance, exog)
    return np.linalg.inv(information)


def _is_singular(relative_covariance: np.ndarray) -> bool:
    """lme4's isSingular: a diagonal of theta = chol(G / sigma^2) below SINGULAR_TOLERANCE."""
    try:
        theta = np.linalg.cholesky(relative_covariance)
    except np.linalg.LinAlgError:
        return True
    return bool(np.any(np.diag(theta) < SINGULAR_TOLERANCE))


def _tidy_fixed_effects(
    names: list[str], estimates: pd.Series, covariance: np.ndarray
) -> pd.DataFrame:
    """TIDY_COLUMNS for the fixed effects: Wald statistic, normal p-value and Wald interval."""
    estimate = np.asarray(estimates, dtype=float)
    return wald_table(names, estimate, np.sqrt(np.diag(covariance)))
