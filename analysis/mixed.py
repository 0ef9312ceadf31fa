"""Linear mixed-effects models over any tidy frame: lme4's lmer, with lmerTest's Satterthwaite df.

One grouping factor, q correlated random effects per group (a random intercept, or an intercept
and slopes). The engine is lme4's: the (RE)ML deviance profiled over the fixed effects and the
residual variance, as a function of theta, the lower-triangular relative covariance factor
(random-effects covariance = sigma^2 Lambda Lambda', Lambda filled column by column from theta).
Each group enters only through its cross-products Z'Z, Z'X, Z'y (and y'y overall), computed once;
one evaluation of the deviance and of its exact gradient is a batch of q x q Cholesky factors over
the groups and a symmetric rank-k update of X'X (lme4's RZX). L-BFGS-B (theta's diagonal >= 0, as
lme4's bounds) finds the optimum and Newton steps on a Hessian of the analytic gradient polish it
(with many groups, a subset's optimum is the start and quasi-Newton steps replace L-BFGS-B); a
fit is reported only where the gradient is ~0 and the Hessian positive (semi)definite, else the
optimiser restarts from other start values.

Term names follow R's ``model.matrix``, so a tidy table reads like ``summary(lmer(...))``:
``Intercept`` becomes ``(Intercept)``, a treatment dummy ``Sex[T.Male]`` becomes ``SexMale``
(``flag[T.True]`` becomes ``flagTRUE``), and interactions keep R's ``a:b``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import FormulaicError
from scipy import linalg, optimize, sparse
from threadpoolctl import threadpool_limits

from analysis.conventions import CONVENTIONS
from analysis.distributions import STUDENT_T
from analysis.errors import (
    ConvergenceError,
    ConvergenceWarning,
    DataError,
    ModelWarning,
    ParameterError,
)
from analysis.results import TIDY_COLUMNS, ModelResult, z_critical
from analysis.survival.design import factor_levels, is_categorical

INTERCEPT_TERM = "(Intercept)"
RESIDUAL_GROUP = "Residual"
SD_COR_COLUMNS = ("group", "term1", "term2", "variance", "sd_cor")
# The fixed-effects table: TIDY_COLUMNS (statistic is the t value, p_value and the interval use
# Student's t on these degrees of freedom) plus lmerTest's Satterthwaite df.
FIXED_EFFECTS_COLUMNS = (*TIDY_COLUMNS, "df")
FITTED_VS_OBSERVED_COLUMNS = (
    "n",
    "observed_mean",
    "observed_conf_low",
    "observed_conf_high",
    "fitted_mean",
    "fitted_mean_with_random_effects",
    "gap",
    "within_interval",
)
TIME_BASES = ("linear", "piecewise_linear", "natural_spline")

# See _least_squares: X'X's smallest eigenvalue above this share of its largest means full rank
# by lstsq's rule; the normal equations then get this many steps of iterative refinement.
WELL_CONDITIONED_GRAM = 1e-13
GRAM_REFINEMENTS = 3
# lme4's isSingular(): a diagonal element of the relative covariance factor theta below 1e-4.
SINGULAR_TOLERANCE = 1e-4
# A variance parameter is "on the boundary" for the convergence checks when its theta diagonal is
# this close to 0 (L-BFGS-B stops exactly on the bound; this only absorbs round-off).
BOUNDARY_TOLERANCE = 1e-8
# At an accepted optimum a Newton step would lower the deviance by less than this (half the
# squared scaled gradient; lme4 accepts a scaled gradient up to 2e-3, i.e. ~2e-6 here) and
# move theta by less than STEP_TOLERANCE relative to its largest element. The Newton polish
# brings well-posed fits to ~1e-12.
NEWTON_DECREMENT_TOLERANCE = 1e-6
STEP_TOLERANCE = 1e-4
# A theta diagonal on its bound whose gradient exceeds this pushes outward: an active bound.
ACTIVE_BOUND_GRADIENT = 1e-6
# Largest slope of the deviance (per unit of theta) along a direction of ~zero curvature.
FLAT_DIRECTION_GRADIENT = 1e-4
# An eigenvalue of the Hessian of the profiled deviance below this (relative to the largest) is
# "zero": allowed on the boundary (a singular fit), a failed optimum in the interior.
CURVATURE_TOLERANCE = 1e-8
# lmerTest's tolerance for a zero eigenvalue of the Hessian w.r.t. (theta, sigma).
SATTERTHWAITE_EIGEN_TOLERANCE = 1e-8
# Relative step of the central differences of the analytic gradient that give Hessians.
HESSIAN_STEP = 1e-4
# Start values of theta's diagonal (off-diagonals 0): lme4's start (1) first, then the others
# in order when a fit fails the optimum checks. The best deviance over all tried is kept.
START_DIAGONALS: tuple[float, ...] = (1.0, 0.1, 10.0, 0.01)
# L-BFGS-B gets close; the Newton steps finish (see _newton_polish). It stops once an
# iteration lowers the deviance by less than ftol relative (1e-5 on a deviance of 1e5): a
# tighter ftol sits below the rounding of the deviance on large data, where L-BFGS-B's line
# searches then fail over and over (half of all evaluations at 10,000 people).
OPTIMIZER_OPTIONS = {"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-6}
NEWTON_STEPS = 5
# At most this many BFGS-updated steps from a start near the optimum (see _quasi_newton_steps).
QUASI_NEWTON_STEPS = 20
# Relative rounding error allowed in comparing two deviances (sums over ~1e6 rows lose
# ~1e-12 of the deviance; a Newton step must also lower the gradient).
DEVIANCE_ROUNDING = 1e-10
# Above SUBSET_MIN_GROUPS groups the optimiser starts from the optimum for about SUBSET_GROUPS
# of them (see _subset_optimum): a fifth of the data or less, at a fraction of the cost.
SUBSET_MIN_GROUPS = 25_000
SUBSET_GROUPS = 5_000
# Rows per block in copying the design to row-major order (~1 MB with 36 columns).
DESIGN_BLOCK_ROWS = 4096
# Times the optimiser may step off a saddle point on theta's bound (see _minimise_from).
SADDLE_ESCAPES = 3


def r_term_name(formula_name: str) -> str:
    """R's model.matrix name for a formula column name ("Sex[T.Male]" -> "SexMale")."""
    if formula_name == "Intercept":
        return INTERCEPT_TERM

    def level(match: re.Match) -> str:
        return {"True": "TRUE", "False": "FALSE"}.get(match[1], match[1])

    return re.sub(r"\[(?:T\.)?([^\]]*)\]", level, formula_name)


@dataclass(frozen=True)
class GroupedCrossProducts:
    """Per-group Z'Z, Z'X, Z'y and the totals X'X, X'y, y'y: all the deviance needs.

    y enters through its residual from ordinary least squares (X `ols_coefficients` removed):
    beta shifts by `ols_coefficients` and the residuals stay the same, but y'y stays small, so
    y'V^-1 y loses no digits to cancellation when the response has a large mean.
    """

    # Group by group: numpy's stacked matmul applies a q x q matrix per group, and the stacked
    # Z'X, (m q, p) rows, is one matrix for the products with p x p ones.
    ztz: np.ndarray  # (m, q, q)
    ztx: np.ndarray  # (m, q, p)
    zty: np.ndarray  # (m, q)
    xtx: np.ndarray  # (p, p)
    xty: np.ndarray  # (p,)
    yty: float
    ols_coefficients: np.ndarray  # (p,)
    n_observations: int

    @property
    def n_fixed(self) -> int:
        return self.xtx.shape[0]

    @property
    def n_random(self) -> int:
        return self.ztz.shape[1]

    @property
    def n_groups(self) -> int:
        return self.ztz.shape[0]


@dataclass(frozen=True)
class ProfiledDeviance:
    """The profiled deviance at one theta, with what the gradient and the estimates need."""

    deviance: float
    gradient_d: np.ndarray  # d deviance / d D, D = Lambda Lambda' (symmetric q x q)
    beta: np.ndarray  # GLS estimate for the OLS-residualised response
    penalized_rss: float  # r = e' W^-1 e, W = I + Z D Z'
    xtwx: np.ndarray  # C = X' W^-1 X
    ztwz_sum: np.ndarray  # sum over groups of Z'W^-1 Z
    shrink: np.ndarray  # (m, q, q): I - Z_i'Z_i K_i, which maps Z_i'(.) to Z_i'W_i^-1(.)
    ztwe: np.ndarray  # (m, q): Z_i' W_i^-1 e_i at beta
    reml_correction: np.ndarray  # sum_i B_i' C^-1 B_i with B_i = X_i' W_i^-1 Z_i


@dataclass(frozen=True)
class ProfiledFit:
    """The engine's state at the optimum (the result's `.fitted`): theta and the design."""

    theta: np.ndarray
    deviance: float
    gradient: np.ndarray
    hessian: np.ndarray
    reml: bool
    cross_products: GroupedCrossProducts
    fixed_spec: object  # formulaic ModelSpecs of the two designs, for predict()
    random_spec: object
    evaluations: int
    starts_tried: int
    saddle_escapes: int


@cache
def theta_slots(q: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) in Lambda of each theta element: lme4's lower triangle, column by column."""
    rows, columns = np.tril_indices(q)
    order = np.lexsort((rows, columns))
    return rows[order], columns[order]


def theta_to_lambda(theta: np.ndarray, q: int) -> np.ndarray:
    """lme4's Lambda: the lower triangle filled column by column from theta."""
    factor = np.zeros((q, q))
    factor[theta_slots(q)] = theta
    return factor


def theta_diagonal_index(q: int) -> np.ndarray:
    """Positions in theta of Lambda's diagonal (lme4's lower bounds of 0)."""
    rows, columns = theta_slots(q)
    return np.flatnonzero(rows == columns)


def _lambda_gradient(gradient_d: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """d deviance / d theta from G = d deviance / d D: theta's slots of 2 G Lambda."""
    return (2.0 * gradient_d @ factor)[theta_slots(factor.shape[0])]


def _per_group_cholesky(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower Cholesky factors (m, q, q) and log-determinants (m,) of SPD matrices (m, q, q).

    Column by column as vector operations over the groups (q^3 / 6 of them, no LAPACK call per
    group). Only used on I + Lambda' Z_i'Z_i Lambda, whose eigenvalues are all >= 1.
    """
    q = matrices.shape[1]
    lower = np.zeros_like(matrices)
    for j in range(q):
        pivot = np.sqrt(matrices[:, j, j] - sum(lower[:, j, k] ** 2 for k in range(j)))
        lower[:, j, j] = pivot
        for i in range(j + 1, q):
            lower[:, i, j] = (
                matrices[:, i, j] - sum(lower[:, i, k] * lower[:, j, k] for k in range(j))
            ) / pivot
    logdet = 2.0 * sum(np.log(lower[:, j, j]) for j in range(q))
    return lower, logdet


def _per_group_forward_solve(lower: np.ndarray, right: np.ndarray) -> np.ndarray:
    """L_i^-1 R in every group for lower factors (m, q, q) and a constant R (q, r): (m, q, r)."""
    q = lower.shape[1]
    solution = np.empty((lower.shape[0], q, right.shape[1]))
    for i in range(q):
        solution[:, i] = (
            right[i] - sum(lower[:, i, k, None] * solution[:, k] for k in range(i))
        ) / lower[:, i, i, None]
    return solution


def profiled_deviance(
    theta: np.ndarray, cross: GroupedCrossProducts, reml: bool
) -> ProfiledDeviance:
    """lme4's profiled deviance (REML criterion or -2 logLik) at theta, and its gradient in D.

    With A_i = I + Lambda' Z_i'Z_i Lambda = L_i L_i' (per-group Cholesky) and M_i = L_i^-1
    Lambda', W_i^-1 = I - Z_i M_i'M_i Z_i' (W_i = I + Z_i D Z_i'), so every quadratic form
    reduces to the group's cross-products: X'W^-1 X = X'X - V'V with V_i = M_i Z_i'X_i stacked
    (one symmetric rank-k update, as lme4's RZX), and likewise X'W^-1 y and y'W^-1 y.
    ML: sum log det A_i + n (1 + log(2 pi r / n)); REML adds log det(X'W^-1 X) and uses n - p.
    The REML gradient needs sum_i B_i' C^-1 B_i (B_i = X_i'W_i^-1 Z_i): one product of the
    stacked Z'X with C^-1, then q x q per group.
    """
    q, p, n = cross.n_random, cross.n_fixed, cross.n_observations
    factor = theta_to_lambda(theta, q)
    identity = np.eye(q)
    penalized = factor.T @ cross.ztz @ factor + identity
    lower, logdet_penalized = _per_group_cholesky(penalized)
    whitening = _per_group_forward_solve(lower, factor.T)  # M_i, (m, q, q)
    whitened_ztx = np.matmul(whitening, cross.ztx).reshape(-1, p)  # V, (m q, p)
    whitened_zty = np.matmul(whitening, cross.zty[:, :, None]).ravel()
    xtwx = cross.xtx - whitened_ztx.T @ whitened_ztx
    xtwy = cross.xty - whitened_zty @ whitened_ztx
    ytwy = cross.yty - float(whitened_zty @ whitened_zty)
    try:
        xtwx_cholesky = np.linalg.cholesky(xtwx)
    except np.linalg.LinAlgError:
        return _infinite_deviance(q, p)
    beta = _cholesky_solve(xtwx_cholesky, xtwy)
    penalized_rss = float(ytwy - beta @ xtwy)
    dof = n - p if reml else n
    if not penalized_rss > 0:
        return _infinite_deviance(q, p)
    deviance = logdet_penalized.sum() + dof * (1.0 + np.log(2.0 * np.pi * penalized_rss / dof))
    # K_i = M_i'M_i = Lambda A_i^-1 Lambda'; I - S_i K_i maps Z_i'(.) to Z_i'W_i^-1(.).
    shrink = identity - cross.ztz @ (whitening.transpose(0, 2, 1) @ whitening)
    ztwz_sum = (shrink @ cross.ztz).sum(axis=0)
    residual_zty = cross.zty - (cross.ztx.reshape(-1, p) @ beta).reshape(-1, q)
    ztwe = np.matmul(shrink, residual_zty[:, :, None])[:, :, 0]  # (m, q)
    gradient_d = ztwz_sum - (dof / penalized_rss) * (ztwe.T @ ztwe)
    reml_correction = np.zeros((q, q))
    if reml:
        deviance += 2.0 * np.log(np.diag(xtwx_cholesky)).sum()
        reml_correction = _sum_of_quadratic_forms(cross, shrink, xtwx_cholesky)
        gradient_d = gradient_d - reml_correction
    return ProfiledDeviance(
        deviance=float(deviance),
        gradient_d=gradient_d,
        beta=beta,
        penalized_rss=penalized_rss,
        xtwx=xtwx,
        ztwz_sum=ztwz_sum,
        shrink=shrink,
        ztwe=ztwe,
        reml_correction=reml_correction,
    )


def _cholesky_solve(lower: np.ndarray, right: np.ndarray) -> np.ndarray:
    return linalg.cho_solve((lower, True), right)


def _sum_of_quadratic_forms(
    cross: GroupedCrossProducts, shrink: np.ndarray, xtwx_cholesky: np.ndarray
) -> np.ndarray:
    """sum_i B_i' C^-1 B_i over groups, B_i' = (I - S_i K_i) Z_i'X_i, C from its Cholesky factor.

    H_i = Z_i'X_i C^-1 X_i'Z_i (q x q per group) from one product of the stacked Z'X with C^-1;
    the sum is then sum_i T_i H_i T_i' with T_i = I - S_i K_i.
    """
    p = cross.n_fixed
    xtwx_inverse = _cholesky_solve(xtwx_cholesky, np.eye(p))
    projected = (cross.ztx.reshape(-1, p) @ xtwx_inverse).reshape(cross.ztx.shape)
    quadratic = np.matmul(projected, cross.ztx.transpose(0, 2, 1))  # H_i, (m, q, q)
    return (shrink @ quadratic @ shrink.transpose(0, 2, 1)).sum(axis=0)


def _infinite_deviance(q: int, p: int) -> ProfiledDeviance:
    empty = np.full((q, q), np.nan)
    return ProfiledDeviance(
        deviance=np.inf,
        gradient_d=empty,
        beta=np.full(p, np.nan),
        penalized_rss=np.nan,
        xtwx=np.full((p, p), np.nan),
        ztwz_sum=empty,
        shrink=np.empty((0, q, q)),
        ztwe=np.empty((0, q)),
        reml_correction=empty,
    )


def deviance_and_gradient(
    theta: np.ndarray, cross: GroupedCrossProducts, reml: bool
) -> tuple[float, np.ndarray]:
    """The profiled deviance and its exact gradient in theta (inf and 0 where undefined)."""
    state = profiled_deviance(theta, cross, reml)
    if not np.isfinite(state.deviance):
        return np.inf, np.zeros_like(theta)
    factor = theta_to_lambda(theta, cross.n_random)
    return state.deviance, _lambda_gradient(state.gradient_d, factor)


def _central_difference_hessian(gradient, point: np.ndarray) -> np.ndarray:
    """Hessian from central differences of an analytic gradient (symmetrised).

    The error is O(h^2) with h = HESSIAN_STEP relative: ~1e-8 relative, well inside what the
    optimum checks and Satterthwaite's df (compared with lmerTest to 1e-4) need.
    """
    k = len(point)
    hessian = np.zeros((k, k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = HESSIAN_STEP * max(abs(point[j]), 1.0)
        hessian[:, j] = (gradient(point + step) - gradient(point - step)) / (2 * step[j])
    return (hessian + hessian.T) / 2


@dataclass(frozen=True)
class StartEstimate:
    """A start near the optimum (e.g. a subset's optimum) and an estimate of the Hessian there."""

    theta: np.ndarray
    hessian: np.ndarray


@dataclass(frozen=True)
class OptimumCheck:
    """Whether theta is a minimum of the profiled deviance (KKT with theta's lower bounds)."""

    accepted: bool
    on_boundary: bool
    reason: str


def check_optimum(
    theta: np.ndarray, gradient: np.ndarray, hessian: np.ndarray, q: int
) -> OptimumCheck:
    """A minimum of the profiled deviance: stationary, and no direction of descent.

    A theta diagonal at 0 whose gradient pushes outward is an active bound and leaves the
    check (a KKT point); one with zero gradient (the deviance is even in the last column's
    diagonal) stays in. Over the other parameters the Hessian must be positive definite, or
    positive semidefinite on the boundary (a singular fit); a negative eigenvalue is a saddle.
    Stationarity is judged without units, as lme4's scaled gradient: the Newton step would
    lower the deviance by less than NEWTON_DECREMENT_TOLERANCE and move theta by less than
    STEP_TOLERANCE. (A raw gradient of 1e-3 can be an optimum on the scale of one data set's
    theta and far from one on another's.)
    """
    diagonal = theta_diagonal_index(q)
    at_bound = np.zeros(len(theta), dtype=bool)
    at_bound[diagonal] = theta[diagonal] <= BOUNDARY_TOLERANCE
    on_boundary = bool(at_bound.any())
    free = ~(at_bound & (gradient > ACTIVE_BOUND_GRADIENT))
    if not free.any():
        return OptimumCheck(True, on_boundary, "")
    free_hessian = hessian[np.ix_(free, free)]
    eigenvalues = np.linalg.eigvalsh(free_hessian)
    scale = max(np.abs(eigenvalues).max(), 1.0)
    if eigenvalues.min() < -CURVATURE_TOLERANCE * scale:
        return OptimumCheck(False, on_boundary, "the Hessian has a negative eigenvalue")
    if eigenvalues.min() <= CURVATURE_TOLERANCE * scale and not on_boundary:
        return OptimumCheck(False, False, "the Hessian is singular inside the parameter space")
    # Along directions of ~zero curvature (a singular fit leaves some: with a variance at 0,
    # rotations of the factor's other columns hardly change D) only the slope can be judged.
    eigenvalues, vectors = np.linalg.eigh(free_hessian)
    curved = eigenvalues > CURVATURE_TOLERANCE * scale
    projected = vectors.T @ gradient[free]
    step = vectors[:, curved] @ (projected[curved] / eigenvalues[curved])
    decrement = float(projected[curved] @ (projected[curved] / eigenvalues[curved])) / 2
    if (
        decrement > NEWTON_DECREMENT_TOLERANCE
        or np.abs(step).max(initial=0.0) > STEP_TOLERANCE * max(np.abs(theta).max(), 1.0)
        or np.abs(projected[~curved]).max(initial=0.0) > FLAT_DIRECTION_GRADIENT
    ):
        return OptimumCheck(False, on_boundary, "the gradient is not zero")
    return OptimumCheck(True, on_boundary, "")


def _minimise_from(
    start: np.ndarray,
    cross: GroupedCrossProducts,
    reml: bool,
    bounds,
    start_hessian: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """L-BFGS-B on the analytic gradient, stepping off boundary saddles, then Newton steps.

    With `start_hessian` (a start already near the optimum, and an estimate of the Hessian
    there) quasi-Newton and then Newton steps come first, and L-BFGS-B continues from where
    they stop only if that is not a checked minimum.

    A theta diagonal that L-BFGS-B projects onto its bound of 0 has gradient exactly 0 there
    when the deviance is even in it (the last column of Lambda), so the optimiser cannot leave
    even where the deviance falls on moving away: a saddle, not a minimum. There the search
    continues from a step along the Hessian's direction of negative curvature (at most
    SADDLE_ESCAPES times). Returns theta, the Newton steps' Hessian (see _newton_polish), and
    the number of deviance evaluations and of escapes.
    """
    counter = {"evaluations": 0}
    # The steps, the polish and the checks ask again for points already evaluated.
    evaluated: dict[bytes, tuple[float, np.ndarray]] = {}

    def objective(theta):
        key = np.asarray(theta, dtype=float).tobytes()
        if key not in evaluated:
            counter["evaluations"] += 1
            evaluated[key] = deviance_and_gradient(theta, cross, reml)
        deviance, gradient = evaluated[key]
        return deviance, gradient.copy()

    q = cross.n_random
    if start_hessian is not None:
        theta = _quasi_newton_steps(start, objective, q, start_hessian)
        theta, hessian = _newton_polish(theta, objective, q)
        if hessian is not None:
            deviance, gradient = objective(theta)
            if np.isfinite(deviance) and check_optimum(theta, gradient, hessian, q).accepted:
                return theta, hessian, counter["evaluations"], 0
        start = theta
    theta, escapes = start, 0
    while True:
        with np.errstate(all="ignore"):
            solution = optimize.minimize(
                objective,
                theta,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options=OPTIMIZER_OPTIONS,
            )
        theta = np.asarray(solution.x, dtype=float)
        if escapes == SADDLE_ESCAPES:
            break
        escaped = _step_off_boundary_saddle(theta, objective, cross.n_random)
        if escaped is None:
            break
        theta, escapes = escaped, escapes + 1
    theta, hessian = _newton_polish(theta, objective, cross.n_random)
    return theta, hessian, counter["evaluations"], escapes


def _step_off_boundary_saddle(theta: np.ndarray, objective, q: int) -> np.ndarray | None:
    """A point of lower deviance along negative curvature, if theta is a saddle on the bound."""
    diagonal = theta_diagonal_index(q)
    if not np.any(theta[diagonal] <= BOUNDARY_TOLERANCE):
        return None
    deviance, _ = objective(theta)
    if not np.isfinite(deviance):
        return None
    hessian = _central_difference_hessian(lambda t: objective(t)[1], theta)
    eigenvalues, vectors = np.linalg.eigh(hessian)
    if eigenvalues[0] >= -CURVATURE_TOLERANCE * max(np.abs(eigenvalues).max(), 1.0):
        return None
    direction = vectors[:, 0]
    at_bound = diagonal[theta[diagonal] <= BOUNDARY_TOLERANCE]
    if np.any(direction[at_bound] < 0):
        direction = -direction
    for length in (1.0, 0.1, 0.01, 0.001):
        candidate = theta + length * max(np.abs(theta).max(), 1.0) * direction
        candidate[diagonal] = np.maximum(candidate[diagonal], 0.0)
        if objective(candidate)[0] < deviance:
            return candidate
    return None


def _quasi_newton_steps(theta: np.ndarray, objective, q: int, hessian: np.ndarray) -> np.ndarray:
    """Newton steps on an estimated Hessian, BFGS-updated after each, while they help.

    The estimate (a subset's Hessian scaled to all groups) is off by the subset's sampling
    error, so steps on it alone would shrink the gradient only by a constant factor each; the
    updates make the convergence superlinear. Each step is kept only if it lowers the deviance
    (up to rounding) and the gradient; the steps stop once the Newton decrement is below
    NEWTON_DECREMENT_TOLERANCE. _newton_polish then finishes on a Hessian computed there.
    """
    diagonal = theta_diagonal_index(q)
    interior = np.ones(len(theta), dtype=bool)
    interior[diagonal] = theta[diagonal] > BOUNDARY_TOLERANCE
    deviance, gradient = objective(theta)
    sub = hessian[np.ix_(interior, interior)]
    if not np.isfinite(deviance) or not interior.any() or np.linalg.eigvalsh(sub).min() <= 0:
        return theta
    for _ in range(QUASI_NEWTON_STEPS):
        step = -np.linalg.solve(sub, gradient[interior])
        if -(step @ gradient[interior]) / 2 < NEWTON_DECREMENT_TOLERANCE:
            break
        candidate = theta.copy()
        candidate[interior] += step
        if np.any(candidate[diagonal] < 0):
            break
        candidate_deviance, candidate_gradient = objective(candidate)
        if not _step_helps(deviance, gradient, candidate_deviance, candidate_gradient, interior):
            break
        change = candidate_gradient[interior] - gradient[interior]
        curvature = step @ change
        if curvature > 0:
            projected = sub @ step
            sub = sub - np.outer(projected, projected) / (step @ projected)
            sub = sub + np.outer(change, change) / curvature
        theta, deviance, gradient = candidate, candidate_deviance, candidate_gradient
    return theta


def _newton_polish(theta: np.ndarray, objective, q: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Newton steps on one Hessian over the interior parameters, each kept only if it helps.

    L-BFGS-B is stopped early (OPTIMIZER_OPTIONS), with a gradient of ~1e-4; each Newton step
    roughly squares the remaining error. Returns theta and the Hessian the steps used (computed
    where they started, less than STEP_TOLERANCE away), or None where none was computed.
    """
    diagonal = theta_diagonal_index(q)
    interior = np.ones(len(theta), dtype=bool)
    interior[diagonal] = theta[diagonal] > BOUNDARY_TOLERANCE
    deviance, gradient = objective(theta)
    if not np.isfinite(deviance) or not interior.any():
        return theta, None
    hessian = _central_difference_hessian(lambda t: objective(t)[1], theta)
    sub = hessian[np.ix_(interior, interior)]
    if np.linalg.eigvalsh(sub).min() <= 0:
        return theta, hessian
    for _ in range(NEWTON_STEPS):
        if np.abs(gradient[interior]).max() < 1e-10:
            break
        candidate = theta.copy()
        candidate[interior] -= np.linalg.solve(sub, gradient[interior])
        if np.any(candidate[diagonal] < 0):
            break
        candidate_deviance, candidate_gradient = objective(candidate)
        if not _step_helps(deviance, gradient, candidate_deviance, candidate_gradient, interior):
            break
        theta, deviance, gradient = candidate, candidate_deviance, candidate_gradient
    return theta, hessian


def _step_helps(deviance, gradient, candidate_deviance, candidate_gradient, interior) -> bool:
    """A step is kept when the deviance does not rise and the gradient shrinks.

    Near the optimum a step changes the deviance by less than its rounding error on a large
    data set (~1e-13 relative), so a step is judged by the gradient it leaves.
    """
    rounding = DEVIANCE_ROUNDING * max(abs(deviance), 1.0)
    return bool(
        candidate_deviance <= deviance + rounding
        and np.abs(candidate_gradient[interior]).max() < np.abs(gradient[interior]).max()
    )


def optimise_theta(
    cross: GroupedCrossProducts, reml: bool, near_start: StartEstimate | None = None
) -> tuple[ProfiledFit, list[str]]:
    """Minimise the profiled deviance from lme4's start; if that fails the checks, from all others.

    The first start whose end point passes `check_optimum` is kept; when it is not the first,
    every start in START_DIAGONALS is tried and the lowest deviance among those that pass is
    kept, with a note saying so. ConvergenceError when none passes: reporting it would report a
    non-optimum. `near_start` (a theta near the optimum, e.g. a subset's optimum) replaces
    lme4's start as the first, with (quasi-)Newton steps first (see _minimise_from).
    """
    q = cross.n_random
    n_theta = q * (q + 1) // 2
    diagonal = theta_diagonal_index(q)
    bounds = [(0.0, None) if j in diagonal else (None, None) for j in range(n_theta)]
    starts = []
    if near_start is not None:
        starts.append(("the optimum of a subset of the groups", near_start.theta))
    for start_diagonal in START_DIAGONALS:
        start = np.zeros(n_theta)
        start[diagonal] = start_diagonal
        starts.append((f"theta diagonal {start_diagonal:g}", start))
    accepted, failures, evaluations, saddle_escapes = [], [], 0, 0
    for attempt, (label, start) in enumerate(starts, start=1):
        start_hessian = near_start.hessian if near_start is not None and attempt == 1 else None
        theta, hessian, used, escapes = _minimise_from(start, cross, reml, bounds, start_hessian)
        evaluations += used
        saddle_escapes += escapes
        deviance, gradient = deviance_and_gradient(theta, cross, reml)
        if not np.isfinite(deviance):
            failures.append(f"from the start with {label} the deviance was not finite")
            continue
        if hessian is None:
            hessian = _central_difference_hessian(
                lambda t: deviance_and_gradient(t, cross, reml)[1], theta
            )
        check = check_optimum(theta, gradient, hessian, q)
        if not check.accepted:
            failures.append(
                f"from the start with {label} it stopped where "
                f"{check.reason} (deviance {deviance:.6f}), which is not a minimum"
            )
            continue
        accepted.append(
            ProfiledFit(
                theta=theta,
                deviance=deviance,
                gradient=gradient,
                hessian=hessian,
                reml=reml,
                cross_products=cross,
                fixed_spec=None,
                random_spec=None,
                evaluations=evaluations,
                starts_tried=attempt,
                saddle_escapes=saddle_escapes,
            )
        )
        if attempt == 1:
            break
    if not accepted:
        raise ConvergenceError(
            "the mixed model did not reach an optimum of the (RE)ML criterion from any start "
            f"({'; '.join(failures)}); simplify the random effects or check the data"
        )
    best = min(accepted, key=lambda fit: fit.deviance)
    notes = []
    if failures:
        notes.append(
            f"The optimiser was restarted: {'; '.join(failures)}. The reported fit has "
            f"the lowest deviance ({best.deviance:.6f}) of the {len(accepted)} of "
            f"{len(starts)} starts that reached a checked optimum."
        )
    return best, notes


def is_singular(theta: np.ndarray, q: int) -> bool:
    """lme4's isSingular: a diagonal element of theta within SINGULAR_TOLERANCE of 0."""
    return bool(np.any(np.abs(theta[theta_diagonal_index(q)]) < SINGULAR_TOLERANCE))


def varpar_deviance_gradient(
    varpar: np.ndarray,
    cross: GroupedCrossProducts,
    reml: bool,
    known: ProfiledDeviance | None = None,
) -> np.ndarray:
    """Gradient of lmerTest's devfun_vp: the deviance at (theta, sigma), not profiled over sigma.

    devfun_vp = log det(I + Lambda'Z'Z Lambda) + r(theta) / sigma^2 + n log(2 pi sigma^2)
    (+ log det(X'W^-1 X) - p log(2 pi sigma^2) for REML), r the penalised RSS at beta(theta).
    `known` is the profiled deviance at this theta, when already computed.
    """
    theta, sigma = varpar[:-1], varpar[-1]
    q, p, n = cross.n_random, cross.n_fixed, cross.n_observations
    state = known if known is not None else profiled_deviance(theta, cross, reml)
    gradient_d = state.ztwz_sum - (state.ztwe.T @ state.ztwe) / sigma**2
    gradient_d = gradient_d - state.reml_correction
    dof = n - p if reml else n
    d_sigma = -2.0 * state.penalized_rss / sigma**3 + 2.0 * dof / sigma
    return np.append(_lambda_gradient(gradient_d, theta_to_lambda(theta, q)), d_sigma)


def fixed_effects_covariance_jacobian(
    varpar: np.ndarray, cross: GroupedCrossProducts, state: ProfiledDeviance
) -> np.ndarray:
    """d vcov(beta) / d (theta, sigma), analytic (lmerTest's numerical Jac_list), (k, p, p).

    vcov(beta) = sigma^2 C^-1 with C = X'W^-1 X; dC = -sum_i B_i dD B_i', dD = dL L' + L dL'.
    `state` is the profiled deviance at varpar's theta.
    """
    theta, sigma = varpar[:-1], varpar[-1]
    q = cross.n_random
    covariance = np.linalg.inv(state.xtwx)
    factor = theta_to_lambda(theta, q)
    ztwx = np.matmul(state.shrink, cross.ztx)  # (m, q, p): Z_i'W_i^-1 X_i
    products = [[ztwx[:, i].T @ ztwx[:, j] for j in range(q)] for i in range(q)]
    jacobian = []
    for row, column in zip(*theta_slots(q), strict=True):
        unit = np.zeros((q, q))
        unit[row, column] = 1.0
        d_relative = unit @ factor.T + factor @ unit.T
        d_xtwx = -sum(
            (d_relative[i, j] * products[i][j] for i in range(q) for j in range(q)),
            np.zeros_like(covariance),
        )
        jacobian.append(-(sigma**2) * covariance @ d_xtwx @ covariance)
    jacobian.append(2.0 * sigma * covariance)
    return np.stack(jacobian)


def satterthwaite_df(
    theta: np.ndarray,
    sigma: float,
    cross: GroupedCrossProducts,
    reml: bool,
    state: ProfiledDeviance,
) -> tuple[np.ndarray, np.ndarray]:
    """lmerTest's Satterthwaite df for each fixed effect, and the eigenvalues of its Hessian.

    df_j = 2 V_jj^2 / (g' A g), g_k = d V_jj / d varpar_k, A = 2 H^+ with H the Hessian of the
    deviance w.r.t. varpar = (theta, sigma) and H^+ its pseudo-inverse over eigenvalues above
    lmerTest's tolerance (as lmerTest, which computes H and g numerically). `state` is the
    profiled deviance at theta.
    """
    varpar = np.append(theta, sigma)

    def gradient(point: np.ndarray) -> np.ndarray:
        # The steps in sigma leave theta, and so the profiled state, where it is.
        known = state if np.array_equal(point[:-1], theta) else None
        return varpar_deviance_gradient(point, cross, reml, known)

    hessian = _central_difference_hessian(gradient, varpar)
    eigenvalues, vectors = np.linalg.eigh(hessian)
    positive = eigenvalues > SATTERTHWAITE_EIGEN_TOLERANCE
    pseudo_inverse = (vectors[:, positive] / eigenvalues[positive]) @ vectors[:, positive].T
    varpar_covariance = 2.0 * pseudo_inverse
    jacobian = fixed_effects_covariance_jacobian(varpar, cross, state)
    variance = sigma**2 * np.diag(np.linalg.inv(state.xtwx))
    gradients = np.diagonal(jacobian, axis1=1, axis2=2)  # (k, p)
    denominator = np.einsum("kp,kl,lp->p", gradients, varpar_covariance, gradients)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * variance**2 / denominator, eigenvalues


@dataclass(kw_only=True)
class MixedResult(ModelResult):
    """A fitted linear mixed model: fixed effects in `.tidy()`, variance components beside it.

    `.tidy()` has one row per fixed effect (FIXED_EFFECTS_COLUMNS). std_error is
    sqrt(diag(sigma^2 (X' V^-1 X)^-1)) at the (RE)ML estimates, as lme4's vcov(); statistic is
    the t value; df is lmerTest's Satterthwaite degrees of freedom, and p_value and
    conf_low/conf_high use Student's t on those df (as summary() and confint of lmerTest's
    contest1D). Satterthwaite's df are an approximation: with few groups they are the better
    guide, and a singular fit makes them unreliable.
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
    theta: np.ndarray
    fixed_effects_covariance: pd.DataFrame
    random_effects_covariance: pd.DataFrame
    random_effects: pd.DataFrame

    def note(self, message: str, category: type[Warning] = ModelWarning) -> None:
        """Record a caveat on the result and warn about it by name (ConvergenceWarning or other)."""
        self.notes.append(message)
        # Past note, _fit_mixed and fit_mixed: the warning points at the caller's line.
        warnings.warn(message, category, stacklevel=4)

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

    def predict(
        self, frame: pd.DataFrame | None = None, include_random_effects: bool = False
    ) -> pd.Series:
        """Fitted values X beta (random effects at 0), for the fit's rows or new ones.

        These are the mean trajectory for a typical member of the population, not any one
        group's trajectory; with `include_random_effects`, X beta + Z b (b the BLUPs; 0 for a
        group not in the fit), as lme4's predict(fit, re.form = NULL). Rows of `frame` with
        missing covariates get NaN.
        """
        beta = self.coefficients["estimate"].to_numpy()
        if frame is None:
            fitted = self._training_design @ beta
            if include_random_effects:
                fitted = fitted + np.einsum(
                    "ij,ij->i", self._training_random_design, self._training_blups
                )
            return pd.Series(fitted, index=self._training_index, name="fitted")
        columns = [c for c in self.fitted.fixed_spec.required_variables if c in frame.columns]
        if include_random_effects:
            columns += [c for c in self.fitted.random_spec.required_variables if c in frame]
            columns.append(self.group)
        complete = frame[columns].notna().all(axis=1)
        rows = frame.loc[complete]
        design = model_matrix(self.fitted.fixed_spec, rows, na_action="ignore")
        fitted = np.asarray(design, dtype=float) @ beta
        if include_random_effects:
            random_design = np.asarray(
                model_matrix(self.fitted.random_spec, rows, na_action="ignore"), dtype=float
            )
            blups = self.random_effects.reindex(rows[self.group]).fillna(0.0).to_numpy()
            fitted = fitted + np.einsum("ij,ij->i", random_design, blups)
        predicted = pd.Series(fitted, index=rows.index)
        return predicted.reindex(frame.index).rename("fitted")

    _training_design: np.ndarray | None = None
    _training_random_design: np.ndarray | None = None
    _training_blups: np.ndarray | None = None
    _training_index: pd.Index | None = None
    _training_response: np.ndarray | None = None


def fit_mixed(
    frame: pd.DataFrame,
    formula: str,
    group: str,
    re_formula: str = "1",
    reml: bool = True,
    reference_levels: dict | None = None,
) -> MixedResult:
    """Fit lmer(formula + (re_formula | group)): correlated random effects within one grouping.

    `re_formula` is "1" (or "~1") for a random intercept, "~week" (or "week", "1 + week") for a
    correlated random intercept and slope. Rows missing any used column are dropped with a note.
    A factor is coded against its entry in `reference_levels` (R's relevel), else its first
    sorted level; a reference that does not occur is a DataError.
    A singular fit (lme4's isSingular on theta) is kept with a ConvergenceWarning note; a fit
    that reaches no optimum raises ConvergenceError, an unfittable design DataError.
    """
    # A fit is many small matrix operations; BLAS threads only add hand-offs there (L-BFGS-B
    # ran 20-40x slower with OpenBLAS threads on a busy 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_mixed(frame, formula, group, re_formula, reml, reference_levels or {})


def _with_reference_levels(data: pd.DataFrame, reference_levels: dict) -> pd.DataFrame:
    """Factors named in `reference_levels` as categories with the reference first, so the
    formula's treatment coding compares every other level with it."""
    coded = {
        name: pd.Categorical(data[name], categories=factor_levels(data[name], reference))
        for name, reference in reference_levels.items()
        if name in data and is_categorical(data[name])
    }
    return data.assign(**coded) if coded else data


def _fit_mixed(
    frame: pd.DataFrame,
    formula: str,
    group: str,
    re_formula: str,
    reml: bool,
    reference_levels: dict,
) -> MixedResult:
    if group not in frame.columns:
        raise DataError("grouping column not in the frame", column=group)
    fixed_formula = _parsed(formula)
    random_formula = _parsed(_random_effects_formula(re_formula))
    named = set().union(*(f.required_variables for f in (fixed_formula, random_formula)))
    absent = sorted(str(name) for name in named if name not in frame.columns)
    if absent:
        raise DataError(f"the model formulas name columns not in the frame: {', '.join(absent)}")
    used_columns = _used_columns(frame, [fixed_formula, random_formula], group)
    complete = frame[used_columns].notna().all(axis=1)
    data = frame.loc[complete]
    if data.empty:
        raise DataError(f"no complete rows in columns {', '.join(used_columns)}")
    used_references = {
        name: level
        for name, level in reference_levels.items()
        if name in used_columns and name != group
    }
    data = _with_reference_levels(data, used_references)

    matrices = model_matrix(fixed_formula, data, na_action="ignore")
    response = np.asarray(matrices.lhs, dtype=float).ravel()
    fixed_design = _row_major(matrices.rhs)
    random_design_frame = model_matrix(random_formula, data, na_action="ignore")
    random_design = np.asarray(random_design_frame, dtype=float)
    fixed_names = [r_term_name(name) for name in matrices.rhs.columns]
    random_names = [r_term_name(name) for name in random_design_frame.columns]
    codes, levels = pd.factorize(data[group], sort=True)
    ols = _check_identifiable(fixed_design, random_design, response, len(levels), group)
    cross = grouped_cross_products(fixed_design, random_design, response, codes, ols)
    near_start = _subset_optimum(fixed_design, random_design, response, codes, ols, reml)
    fit, restart_notes = optimise_theta(cross, reml, near_start)
    fit = replace(
        fit, fixed_spec=matrices.rhs.model_spec, random_spec=random_design_frame.model_spec
    )
    q, p, n = cross.n_random, cross.n_fixed, cross.n_observations
    state = profiled_deviance(fit.theta, cross, reml)
    residual_variance = state.penalized_rss / (n - p if reml else n)
    sigma = float(np.sqrt(residual_variance))
    factor = theta_to_lambda(fit.theta, q)
    relative_covariance = factor @ factor.T
    fixed_covariance = residual_variance * np.linalg.inv(state.xtwx)
    beta = state.beta + cross.ols_coefficients
    df, varpar_eigenvalues = satterthwaite_df(fit.theta, sigma, cross, reml, state)
    blups = state.ztwe @ relative_covariance

    result = MixedResult(
        fitted=fit,
        coefficients=_tidy_fixed_effects(fixed_names, beta, np.sqrt(np.diag(fixed_covariance)), df),
        group=group,
        reml=reml,
        optimizer="L-BFGS-B + Newton",
        converged=True,
        singular=is_singular(fit.theta, q),
        log_likelihood=-fit.deviance / 2.0,
        residual_variance=residual_variance,
        n_observations=n,
        n_groups=len(levels),
        theta=fit.theta,
        fixed_effects_covariance=pd.DataFrame(
            fixed_covariance, index=fixed_names, columns=fixed_names
        ),
        random_effects_covariance=pd.DataFrame(
            residual_variance * relative_covariance, index=random_names, columns=random_names
        ),
        random_effects=pd.DataFrame(
            blups, index=pd.Index(levels, name=group), columns=random_names
        ),
        _training_design=fixed_design,
        _training_random_design=random_design,
        _training_blups=blups[codes],
        _training_index=data.index,
        _training_response=response,
    )
    dropped = int((~complete).sum())
    if dropped:
        with_missing = [column for column in used_columns if frame[column].isna().any()]
        result.note(
            f"{dropped} of {len(frame)} rows dropped for missing values in "
            f"{', '.join(with_missing)}"
        )
    for message in restart_notes:
        result.note(message, ConvergenceWarning)
    if result.singular:
        result.note(
            "Singular fit: a diagonal element of the relative covariance factor theta is below "
            f"{SINGULAR_TOLERANCE:g} (lme4's isSingular), so a random-effect variance is 0 or a "
            "correlation is +/-1; simplify re_formula. Satterthwaite df are unreliable here.",
            ConvergenceWarning,
        )
    elif np.any(varpar_eigenvalues < -SATTERTHWAITE_EIGEN_TOLERANCE):
        result.note(
            "The Hessian of the deviance in (theta, sigma) has a negative eigenvalue, so the "
            "Satterthwaite df use only its positive part and are unreliable.",
            ConvergenceWarning,
        )
    return result


def _row_major(columns: pd.DataFrame) -> np.ndarray:
    """The frame's columns as one row-major float array, DESIGN_BLOCK_ROWS rows at a time.

    The cross-products' sparse products read the design by rows. pandas' own conversion
    interleaves the columns into a column-major copy, and numpy's transposing copy of that
    strides through memory: seconds at a million rows, where cache-sized blocks take a pass.
    """
    values = [columns.iloc[:, j].to_numpy(dtype=float) for j in range(columns.shape[1])]
    array = np.empty((len(columns), len(values)))
    for start in range(0, len(array), DESIGN_BLOCK_ROWS):
        block = array[start : start + DESIGN_BLOCK_ROWS]
        for j, column in enumerate(values):
            block[:, j] = column[start : start + DESIGN_BLOCK_ROWS]
    return array


def _subset_optimum(
    fixed_design: np.ndarray,
    random_design: np.ndarray,
    response: np.ndarray,
    codes: np.ndarray,
    ols_coefficients: np.ndarray,
    reml: bool,
) -> StartEstimate | None:
    """With many groups, theta at the optimum for every k-th group (about SUBSET_GROUPS of them),
    with the Hessian there scaled to all groups.

    Within sampling error of the full optimum, it lets Newton steps on all the data replace most
    of L-BFGS-B's evaluations there; it is only a start (the full fit is checked as any other).
    None with fewer groups, or when the subset reaches no optimum (e.g. it misses a level of a
    factor): then the full fit starts from lme4's start.
    """
    n_groups = int(codes.max()) + 1
    if n_groups < SUBSET_MIN_GROUPS:
        return None
    step = n_groups // SUBSET_GROUPS
    kept = codes % step == 0
    subset = grouped_cross_products(
        fixed_design[kept],
        random_design[kept],
        response[kept],
        codes[kept] // step,
        ols_coefficients,
    )
    try:
        fit, _ = optimise_theta(subset, reml)
    except ConvergenceError:
        return None
    # The deviance is a sum over groups: its Hessian grows with their number.
    return StartEstimate(fit.theta, fit.hessian * (n_groups / subset.n_groups))


def grouped_cross_products(
    fixed_design: np.ndarray,
    random_design: np.ndarray,
    response: np.ndarray,
    codes: np.ndarray,
    ols_coefficients: np.ndarray,
) -> GroupedCrossProducts:
    """Z_i'Z_i, Z_i'X_i, Z_i'y_i per group (codes 0..m-1) and the overall totals.

    Column a of Z as a sparse m x n matrix (row i holds group i's entries) times X, Z and y:
    one pass over the rows per random effect, no sort, no (n, q, p) temporary.
    """
    residual = response - fixed_design @ ols_coefficients
    n_groups = int(codes.max()) + 1
    n_rows = len(response)
    q, p = random_design.shape[1], fixed_design.shape[1]
    ztz = np.empty((n_groups, q, q))
    ztx = np.empty((n_groups, q, p))
    zty = np.empty((n_groups, q))
    for i in range(q):
        # One entry per column (row of the data): built in place, no sort.
        weighted_indicator = sparse.csc_matrix(
            (random_design[:, i], codes, np.arange(n_rows + 1)), shape=(n_groups, n_rows)
        )
        ztx[:, i] = weighted_indicator @ fixed_design
        ztz[:, i] = weighted_indicator @ random_design
        zty[:, i] = weighted_indicator @ residual
    return GroupedCrossProducts(
        ztz=ztz,
        ztx=ztx,
        zty=zty,
        xtx=fixed_design.T @ fixed_design,
        xty=fixed_design.T @ residual,
        yty=float(residual @ residual),
        ols_coefficients=ols_coefficients,
        n_observations=n_rows,
    )


def _random_effects_formula(re_formula: str) -> str:
    """Accept "1", "~1", "week", "~week", "1 + week"; a one-sided formula for the Z columns."""
    body = re_formula.strip().removeprefix("~").strip()
    if not body:
        raise ParameterError(f"empty random-effects formula {re_formula!r}")
    return f"~ {body}"


def _parsed(formula: str) -> Formula:
    """The formula parsed, or ParameterError saying where its syntax fails."""
    try:
        return Formula(formula)
    except FormulaicError:
        raise ParameterError(
            f"the formula {formula!r} cannot be read; write it as R would, e.g. "
            "'pain ~ week * group' (fixed effects) or '~week' (random effects)"
        ) from None


def _used_columns(frame: pd.DataFrame, formulas: list[Formula], group: str) -> list[str]:
    """The frame's columns the formulas name, plus the group, in the frame's order."""
    names = {group}
    for formula in formulas:
        names |= {str(variable) for variable in formula.required_variables}
    return [column for column in frame.columns if column in names]


def _check_identifiable(
    fixed_design: np.ndarray,
    random_design: np.ndarray,
    response: np.ndarray,
    n_levels: int,
    group: str,
) -> np.ndarray:
    """lme4's checks before fitting (each a stop() in lmerControl's defaults), plus two of ours.

    Returns the ordinary least-squares coefficients, which grouped_cross_products reuses.

    lme4 drops aliased fixed-effect columns with a message; here a rank-deficient design is an
    error instead, since silently dropping a term changes what the remaining ones mean.
    """
    n_observations = len(response)
    n_random_effects = n_levels * random_design.shape[1]
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
    coefficients, rank_deficient = _least_squares(fixed_design, response)
    if rank_deficient:
        raise DataError(
            "the fixed-effects design is rank deficient",
            hint="lme4 would drop aliased columns; remove or merge the redundant terms",
        )
    # With y in the column space of X the (RE)ML criterion is infinite at every theta.
    residual = response - fixed_design @ coefficients
    if np.linalg.norm(residual) <= 1e-10 * max(np.linalg.norm(response), 1.0):
        raise ConvergenceError(
            "the fixed effects reproduce the response exactly, so there is no residual variance "
            "to estimate and the (RE)ML criterion is not finite"
        )
    return coefficients


def _least_squares(design: np.ndarray, response: np.ndarray) -> tuple[np.ndarray, bool]:
    """OLS coefficients, and whether the design is rank deficient by numpy.linalg.lstsq's rule.

    lstsq's SVD of a million-row design takes seconds; the Gram matrix X'X is one product.
    Its computed eigenvalues are within ~p x machine epsilon (< 1e-14 here) of the largest, so
    a smallest one above WELL_CONDITIONED_GRAM (1e-13) of the largest puts X's smallest singular
    value above 3e-7 of its largest, above lstsq's cut (machine epsilon x rows) for up to 1e9
    rows: full rank by lstsq's rule. Each step of refinement of the normal equations then
    shrinks the error by cond(X'X) x epsilon (< 2e-3), so GRAM_REFINEMENTS steps give lstsq's
    coefficients to ~1e-11. Below that threshold lstsq itself decides.
    """
    gram = design.T @ design
    eigenvalues = np.linalg.eigvalsh(gram)
    if eigenvalues[0] > WELL_CONDITIONED_GRAM * eigenvalues[-1]:
        cholesky = np.linalg.cholesky(gram)
        coefficients = _cholesky_solve(cholesky, design.T @ response)
        for _ in range(GRAM_REFINEMENTS):
            residual = response - design @ coefficients
            coefficients += _cholesky_solve(cholesky, design.T @ residual)
        return coefficients, False
    coefficients, _, rank, _ = np.linalg.lstsq(design, response, rcond=None)
    return coefficients, bool(rank < design.shape[1])


def _tidy_fixed_effects(
    names: list[str], estimate: np.ndarray, std_error: np.ndarray, df: np.ndarray
) -> pd.DataFrame:
    """FIXED_EFFECTS_COLUMNS: t statistic, Satterthwaite df, t-based p-value and interval."""
    statistic = estimate / std_error
    quantile = STUDENT_T.ppf(0.5 + CONVENTIONS.confidence_level / 2, df)
    return pd.DataFrame(
        {
            "term": names,
            "estimate": estimate,
            "std_error": std_error,
            "statistic": statistic,
            "p_value": 2 * STUDENT_T.sf(np.abs(statistic), df),
            "conf_low": estimate - quantile * std_error,
            "conf_high": estimate + quantile * std_error,
            "df": df,
        }
    )[list(FIXED_EFFECTS_COLUMNS)]


@dataclass(frozen=True)
class TimeBasis:
    """Columns that let a mean trajectory bend over time, with the knots fixed once.

    "linear": the time itself. "piecewise_linear": time plus (time - k)+ per knot k, so each
    coefficient is the change of slope at its knot. "natural_spline": a natural cubic spline
    (ESL eq. 5.4-5.5: cubic between the knots, linear beyond the boundary knots), the same
    space as R's splines::ns(time, knots, Boundary.knots) in another basis, so fitted values
    agree with R's and single coefficients are not interpretable. Each nonlinear column is
    scaled to end, at the upper boundary knot, where the time itself ends (see `columns`).
    """

    variable: str
    kind: str
    knots: tuple[float, ...] = ()
    boundary: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TIME_BASES:
            raise ParameterError(
                f"unknown time basis {self.kind!r}; use one of {', '.join(TIME_BASES)}"
            )
        if list(self.knots) != sorted(set(self.knots)):
            raise ParameterError(f"time knots {list(self.knots)} must be increasing")
        if self.kind == "natural_spline":
            if self.boundary is None or not self.boundary[0] < self.knots[0]:
                raise ParameterError("a natural spline needs boundary knots around its knots")
            if not self.knots[-1] < self.boundary[1]:
                raise ParameterError(
                    f"the last knot {self.knots[-1]:g} must be below the upper boundary knot "
                    f"{self.boundary[1]:g} (the end of follow-up)"
                )

    @property
    def names(self) -> list[str]:
        if self.kind == "piecewise_linear":
            return [self.variable, *(f"{self.variable}_after_{k:g}" for k in self.knots)]
        if self.kind == "natural_spline":
            return [
                self.variable,
                *(f"{self.variable}_ns{j}" for j in range(1, len(self.knots) + 1)),
            ]
        return [self.variable]

    def columns(self, values: pd.Series) -> pd.DataFrame:
        """The basis evaluated at `values` (missing stays missing), one column per name."""
        x = values.to_numpy(dtype=float)
        columns = [x]
        if self.kind == "piecewise_linear":
            columns += [np.maximum(x - knot, 0.0) for knot in self.knots]
        elif self.kind == "natural_spline":
            lower, upper = self.boundary
            all_knots = [lower, *self.knots, upper]

            def truncated_cubic_difference(knot: float) -> np.ndarray:
                return (np.maximum(x - knot, 0.0) ** 3 - np.maximum(x - upper, 0.0) ** 3) / (
                    upper - knot
                )

            last = truncated_cubic_difference(all_knots[-2])
            # Each column rises from 0 to (upper - knot)^2 - (upper - last knot)^2 at the upper
            # boundary; scaled to end at upper - lower, as the time itself does, so that its
            # coefficient and random-effect SD are of the size of the time's.
            columns += [
                (truncated_cubic_difference(knot) - last)
                * (upper - lower)
                / ((upper - knot) ** 2 - (upper - all_knots[-2]) ** 2)
                for knot in all_knots[:-2]
            ]
        return pd.DataFrame(dict(zip(self.names, columns, strict=True)), index=values.index)

    def in_formula(self, formula: str) -> str:
        """`formula` with the time variable replaced by the sum of the basis columns."""
        if self.kind == "linear":
            return formula
        pattern = rf"(?<![\w.]){re.escape(self.variable)}(?![\w.])"
        return re.sub(pattern, f"({' + '.join(self.names)})", formula)


def fitted_vs_observed(
    result: MixedResult, frame: pd.DataFrame, outcome: str, by: list[str]
) -> pd.DataFrame:
    """Observed mean (95% normal CI) and the fitted means per cell of `by` (e.g. week x group).

    Both fitted means average over the cell's rows with an observed outcome, so they describe
    the same rows as the observed mean: `fitted_mean` is X beta (the population curve, random
    effects at 0) and `fitted_mean_with_random_effects` adds each person's BLUPs. With dropout
    that depends on the outcome (here: people leave when they recover), the people still
    followed in late weeks are not a random sample, so the population curve may leave the
    observed interval while the model with each person's effects still fits the rows;
    gap = fitted_mean_with_random_effects - observed mean, and within_interval is about it.

    `frame` is the frame `result` was fitted on: the rows are the fit's own (its design and
    BLUPs are reused, not rebuilt from the formula), and ParameterError says so otherwise.
    """
    rows = frame[[*by, outcome]].reindex(result._training_index)
    if not np.array_equal(rows[outcome].to_numpy(dtype=float), result._training_response):
        raise ParameterError(
            f"fitted_vs_observed needs the frame the model was fitted on; its {outcome!r} "
            "differs from the fitted response"
        )
    used = rows.assign(
        _population=result.predict().to_numpy(),
        _conditional=result.predict(include_random_effects=True).to_numpy(),
    )
    cells = used.groupby(by, observed=True)
    table = cells[outcome].agg(n="count", observed_mean="mean", observed_sd="std")
    table["fitted_mean"] = cells["_population"].mean()
    table["fitted_mean_with_random_effects"] = cells["_conditional"].mean()
    half_width = z_critical() * table["observed_sd"] / np.sqrt(table["n"])
    table["observed_conf_low"] = table["observed_mean"] - half_width
    table["observed_conf_high"] = table["observed_mean"] + half_width
    fitted = table["fitted_mean_with_random_effects"]
    table["gap"] = fitted - table["observed_mean"]
    table["within_interval"] = (fitted >= table["observed_conf_low"]) & (
        fitted <= table["observed_conf_high"]
    )
    return table.reset_index()[[*by, *FITTED_VS_OBSERVED_COLUMNS]]


def largest_gap(table: pd.DataFrame, min_n: int) -> pd.Series | None:
    """The row of a fitted_vs_observed table with the largest |gap| among cells of >= min_n."""
    eligible = table[table["n"] >= min_n]
    if eligible.empty:
        return None
    return eligible.loc[eligible["gap"].abs().idxmax()]
