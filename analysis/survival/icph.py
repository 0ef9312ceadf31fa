"""Proportional hazards for interval-censored times with time-varying covariates.

Each person is known to recover in (lower, upper] (two clinic visits) or, with no upper bound,
to be still unrecovered at `lower`. Their covariates change at start/stop rows (weekly
exposures), and the baseline hazard is piecewise constant between `cuts`, so the cumulative
hazard over a covariate path is a sum over (row x piece) segments of
exp(x'beta) * hazard_of_piece * length. A person contributes

    S(lower | path) - S(upper | path)   (recovered between two visits),
    S(lower | path)                      (not recovered by the last visit),
    S(t | path) * h(t | path)            (seen on its exact day, lower == upper == t),

and the likelihood is maximised by Newton's method with the analytic gradient and Hessian,
the baseline pieces on the log scale. Follow-up starts at each person's first row, so a path
that starts late (a landmark) gives the likelihood conditional on no recovery before it.
No Python or R package fits this model (icenReg has no time-varying covariates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, sparse

from analysis.conventions import CONVENTIONS
from analysis.distributions import CHI_SQUARE
from analysis.errors import ConvergenceError, DataError
from analysis.results import ModelResult, wald_table, with_hazard_ratios
from analysis.survival.design import design_matrix

# Newton stops when the expected gain (half the Newton decrement) is below this: the
# log-likelihood is then within ~1e-12 of its maximum and estimates within ~1e-7 of theirs.
_TOLERANCE = 1e-12
_MAX_ITERATIONS = 200
# Largest change of any log hazard or coefficient in one Newton step.
_MAX_STEP = 2.0
# A column whose share of variance left after the earlier columns is below this is aliased.
_ALIASING_TOLERANCE = 1e-9
# Profile bounds are searched out to this many Wald half-widths before they count as unbounded.
_PROFILE_SEARCH_WIDTHS = 20.0
# Secant steps on the signed root before falling back to bracketing, and the root's tolerance
# (1e-9 on the root is ~4e-9 on the likelihood-ratio statistic).
_PROFILE_SECANT_STEPS = 12
_PROFILE_ROOT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class _Segments:
    """The likelihood's data: one row per (covariate row x baseline piece) segment.

    `before_lower` segments make up H(lower); the others H(upper) - H(lower) of an
    interval-censored person (`person` indexes those people). Exact events add
    log hazard at their time: `exact_per_piece` events per piece, `exact_design_sum` the sum
    of their covariate rows.
    """

    piece: np.ndarray
    exposure: np.ndarray
    design: np.ndarray
    before_lower: np.ndarray
    person: np.ndarray
    n_interval_people: int
    n_pieces: int
    exact_per_piece: np.ndarray
    exact_design_sum: np.ndarray
    # Sparse 0/1 matrices summing segments by piece, and between-bound segments by person.
    piece_sum: sparse.csr_matrix
    person_sum: sparse.csr_matrix


@dataclass(kw_only=True)
class IntervalCoxResult(ModelResult):
    """A fitted interval-censored PH model: tidy log-hazard ratios, baseline pieces, counts.

    `conf_method` names the interval of each term ("profile likelihood" for the `profile`
    terms, "Wald" otherwise); `baseline` holds each piece's hazard per time unit.
    """

    log_likelihood: float
    n: int
    events: int
    exact_events: int
    right_censored: int
    baseline: pd.DataFrame
    conf_method: dict[str, str]
    covariance: pd.DataFrame = field(repr=False)
    iterations: int = 0


def _check_bounds(lower: np.ndarray, upper: np.ndarray, ids: np.ndarray) -> None:
    bad = ~(lower >= 0) | (upper < lower)
    if bad.any():
        raise DataError(
            "each person needs 0 <= lower <= upper (upper missing = right-censored)",
            column=f"id {ids[bad][0]!r}",
        )


def _aliased_columns(columns: list[np.ndarray], names: list[str]) -> list[str]:
    """Columns that are linear combinations of the earlier ones (R's NA coefficients).

    Sequential, as R's pivoting QR: a column is aliased when almost none of its sum of squares
    is left after projecting it on the columns kept before it (baseline pieces come first).
    """
    matrix = np.column_stack(columns)
    gram = matrix.T @ matrix
    kept: list[int] = []
    aliased = []
    for j, name in enumerate(names):
        total = gram[j, j]
        left = total
        if kept and total > 0:
            block = gram[np.ix_(kept, kept)]
            cross = gram[kept, j]
            left = total - cross @ np.linalg.solve(block, cross)
        if total == 0 or left < _ALIASING_TOLERANCE * total:
            aliased.append(name)
        else:
            kept.append(j)
    return aliased


def _segments(
    person_code: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    design: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    cuts: np.ndarray,
) -> _Segments:
    """Split each row at its person's lower bound and at the piece cuts; classify the parts.

    Rows are sorted by person and start; `lower`/`upper` are per person (upper inf =
    right-censored). Rows beyond the end each person needs are dropped.
    """
    end = np.where(np.isfinite(upper), upper, lower)[person_code]
    keep = start < end
    person_code, start, design = person_code[keep], start[keep], design[keep]
    stop = np.minimum(stop[keep], end[keep])
    # Split at the lower bound: one part before it, one after (either may be empty).
    row_lower = lower[person_code]
    pieces_start = np.concatenate([start, np.maximum(start, row_lower)])
    pieces_stop = np.concatenate([np.minimum(stop, row_lower), stop])
    before = np.concatenate([np.ones(len(start), bool), np.zeros(len(start), bool)])
    owner = np.concatenate([person_code, person_code])
    row = np.concatenate([np.arange(len(start)), np.arange(len(start))])
    nonempty = pieces_stop > pieces_start
    pieces_start, pieces_stop = pieces_start[nonempty], pieces_stop[nonempty]
    before, owner, row = before[nonempty], owner[nonempty], row[nonempty]
    # Split at the cuts: piece k is [cuts[k], cuts[k+1]), the last one open-ended.
    first = np.searchsorted(cuts, pieces_start, side="right") - 1
    last = np.searchsorted(cuts, pieces_stop, side="left") - 1
    count = last - first + 1
    repeat = np.repeat(np.arange(len(first)), count)
    piece = first[repeat] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    bounds = np.append(cuts, np.inf)
    seg_start = np.maximum(pieces_start[repeat], bounds[piece])
    seg_stop = np.minimum(pieces_stop[repeat], bounds[piece + 1])
    exposure = seg_stop - seg_start
    before, owner, row = before[repeat], owner[repeat], row[repeat]

    exact = np.isfinite(upper) & (upper == lower)
    # An exact event's hazard is the one in force just before its time: the segment ending there.
    is_event_segment = exact[owner] & (seg_stop == upper[owner])
    n_pieces = len(cuts)
    exact_per_piece = np.bincount(piece[is_event_segment], minlength=n_pieces).astype(float)
    exact_design_sum = design[row[is_event_segment]].sum(axis=0)
    interval = np.isfinite(upper) & (upper > lower)
    interval_index = np.cumsum(interval) - 1
    person = np.where(before, -1, interval_index[owner])
    n_interval_people = int(interval.sum())
    between = np.flatnonzero(~before)
    return _Segments(
        piece=piece,
        exposure=exposure,
        design=design[row],
        before_lower=before,
        person=person,
        n_interval_people=n_interval_people,
        n_pieces=n_pieces,
        exact_per_piece=exact_per_piece,
        exact_design_sum=exact_design_sum,
        piece_sum=_indicator(piece, np.arange(len(piece)), n_pieces, len(piece)),
        person_sum=_indicator(
            person[between], np.arange(len(between)), n_interval_people, len(between)
        ),
    )


def _indicator(rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int):
    return sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(n_rows, n_columns))


def _log_likelihood(
    theta: np.ndarray, data: _Segments, derivatives: bool = True
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """Log-likelihood, gradient and Hessian in (log piece hazards, beta).

    With D the hazard accumulated between the bounds, log(1 - exp(-D)) has derivatives
    e^-D / (1 - e^-D) and -e^-D / (1 - e^-D)^2 in D; everything else is linear in the
    segments' hazards w = length * exp(alpha_piece + x'beta).
    """
    k = data.n_pieces
    alpha, beta = theta[:k], theta[k:]
    weight = data.exposure * np.exp(alpha[data.piece] + data.design @ beta)
    between = ~data.before_lower
    accumulated = np.bincount(
        data.person[between], weight[between], minlength=data.n_interval_people
    )
    exact_part = data.exact_per_piece @ alpha + data.exact_design_sum @ beta
    value = -weight[data.before_lower].sum() + np.log(-np.expm1(-accumulated)).sum() + exact_part
    if not derivatives:
        return float(value), None, None
    surviving = np.exp(-accumulated)
    recovered = -np.expm1(-accumulated)
    first = surviving / recovered
    second = -surviving / recovered**2
    factor = -weight
    factor[between] = first[data.person[between]] * weight[between]
    n_var = data.design.shape[1]
    weighted_design = data.design * factor[:, None]
    per_piece = data.piece_sum @ factor
    gradient = np.concatenate([per_piece, weighted_design.sum(axis=0)])
    gradient[:k] += data.exact_per_piece
    gradient[k:] += data.exact_design_sum
    hessian = np.zeros((k + n_var, k + n_var))
    hessian[np.arange(k), np.arange(k)] = per_piece
    cross = data.piece_sum @ weighted_design
    hessian[:k, k:] = cross
    hessian[k:, :k] = cross.T
    hessian[k:, k:] = weighted_design.T @ data.design
    # The curvature of log(1 - exp(-D)) along each interval person's gradient of D.
    w_between = weight[between]
    piece_weights = np.zeros((len(w_between), k))
    piece_weights[np.arange(len(w_between)), data.piece[between]] = w_between
    gradient_of_d = data.person_sum @ np.hstack(
        [piece_weights, data.design[between] * w_between[:, None]]
    )
    hessian += gradient_of_d.T @ (second[:, None] * gradient_of_d)
    return float(value), gradient, hessian


def _maximise(
    theta: np.ndarray, data: _Segments, free: np.ndarray, names: list[str]
) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Newton's method over the `free` coordinates, step halving, Levenberg if not concave.

    The log-likelihood is not concave everywhere (log(1 - exp(-D)) of a sum of exponentials),
    so where -H is not positive definite a multiple of the identity is added to it until it
    is: this only shapes the path; the stopping rule uses the exact Hessian.
    """
    theta = theta.copy()
    value, gradient, hessian = _log_likelihood(theta, data)
    for iteration in range(1, _MAX_ITERATIONS + 1):
        g = gradient[free]
        information = -hessian[np.ix_(free, free)]
        damping = 0.0
        while True:
            try:
                factor = np.linalg.cholesky(information + damping * np.eye(len(g)))
                break
            except np.linalg.LinAlgError:
                damping = max(2 * damping, 1e-6 * float(np.abs(np.diag(information)).max()))
        step = np.linalg.solve(factor.T, np.linalg.solve(factor, g))
        expected_gain = 0.5 * float(g @ step)
        if damping == 0.0 and expected_gain < _TOLERANCE:
            return theta, value, hessian, iteration
        # Far from the maximum a Newton step can leap to where exp() overflows: cap its size.
        length = min(1.0, _MAX_STEP / max(float(np.abs(step).max()), 1e-300))
        while True:
            candidate = theta.copy()
            candidate[free] += length * step
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                new_value, _, _ = _log_likelihood(candidate, data, derivatives=False)
            if np.isfinite(new_value) and new_value >= value - 1e-12 * abs(value):
                break
            length /= 2
            if length < 1e-10:
                raise ConvergenceError(
                    "Newton steps no longer raise the log-likelihood of the interval-censored "
                    "PH model"
                )
        theta = candidate
        value, gradient, hessian = _log_likelihood(theta, data)
    largest = names[int(np.argmax(np.abs(step)))] if len(step) else "?"
    raise ConvergenceError(
        f"interval-censored PH fit did not converge in {_MAX_ITERATIONS} iterations; "
        f"{largest!r} keeps moving (an effect or piece hazard running off to infinity: "
        "separation, or a piece with no recoveries)"
    )


def _profile_interval(
    theta_hat: np.ndarray,
    value_hat: float,
    index: int,
    half_width: float,
    data: _Segments,
    names: list[str],
) -> tuple[float, float]:
    """Where 2 (max loglik - profile loglik) reaches the chi-square(1) quantile, each side.

    The signed root sqrt(2 (max - profile)) is close to linear in the parameter, so secant
    steps from the Wald bound find it in a few profile fits; where they do not (a bent or
    flat profile), the root is bracketed and found by Brent's method.
    """
    threshold = float(CHI_SQUARE.ppf(CONVENTIONS.confidence_level, 1))
    target = np.sqrt(threshold)
    free = np.arange(len(theta_hat)) != index
    estimate = theta_hat[index]
    warm = {1.0: theta_hat.copy(), -1.0: theta_hat.copy()}

    def drop(fixed: float, side: float) -> float:
        start = warm[side].copy()
        start[index] = fixed
        theta, value, _, _ = _maximise(start, data, free, names)
        warm[side] = theta
        return max(2 * (value_hat - value), 0.0)

    def by_secant(side: float) -> float | None:
        previous, previous_root = 0.0, 0.0
        distance = half_width
        for _ in range(_PROFILE_SECANT_STEPS):
            root = np.sqrt(drop(estimate + side * distance, side))
            if abs(root - target) < _PROFILE_ROOT_TOLERANCE:
                return estimate + side * distance
            slope = (root - previous_root) / (distance - previous)
            if slope <= 0:
                return None
            previous, previous_root = distance, root
            distance = distance + (target - root) / slope
            if not 0 < distance < _PROFILE_SEARCH_WIDTHS * half_width:
                return None
        return None

    def by_bracket(side: float) -> float:
        warm[side] = theta_hat.copy()
        inner, outer = estimate, estimate + side * half_width
        while drop(outer, side) < threshold:
            inner, outer = outer, estimate + 2 * (outer - estimate)
            if abs(outer - estimate) > _PROFILE_SEARCH_WIDTHS * half_width:
                return side * np.inf
        warm[side] = theta_hat.copy()
        return optimize.brentq(
            lambda v: drop(v, side) - threshold, inner, outer, xtol=_PROFILE_ROOT_TOLERANCE
        )

    bounds = []
    for side in (-1.0, 1.0):
        bound = by_secant(side)
        bounds.append(by_bracket(side) if bound is None else bound)
    return bounds[0], bounds[1]


def fit_interval_cox(
    df: pd.DataFrame,
    id: str,
    start: str,
    stop: str,
    lower: str,
    upper: str,
    covariates: list[str],
    cuts: list[float],
    profile: list[str] | tuple[str, ...] = (),
    reference_levels: dict[str, str] | None = None,
) -> IntervalCoxResult:
    """PH fit for times known to lie in (lower, upper], covariates on start/stop rows.

    `df` has one row per (id, start, stop] with the covariates in force over it; `lower` and
    `upper` are per-person columns repeated on each row (upper missing = right-censored;
    lower == upper = an exact time). Each person's rows must be contiguous and run from their
    entry (<= lower) to upper (to lower if right-censored). The baseline hazard is constant
    between `cuts` (the first must be 0, the last piece is open-ended). Terms in `profile` get
    profile-likelihood intervals, the others Wald. A person with a missing covariate on a row
    the likelihood uses is dropped, and the result says how many. Aliased terms are "not
    estimable" (NaN row, note), as coxph's NA.
    """
    reference_levels = dict(reference_levels or {})
    used_columns = [id, start, stop, lower, *covariates]
    missing = [name for name in [*used_columns, upper] if name not in df.columns]
    if missing:
        raise DataError(f"column(s) not in the frame: {', '.join(missing)}", column=missing[0])
    cuts_array = np.asarray(cuts, dtype=float)
    if len(cuts_array) == 0 or cuts_array[0] != 0 or np.any(np.diff(cuts_array) <= 0):
        raise DataError("piece cuts must start at 0 and increase", hint=f"got {list(cuts)}")
    frame = df.sort_values([id, start], kind="stable")
    bounds_per_person = frame.groupby(id, sort=False)[[lower, upper]].nunique(dropna=False)
    if (bounds_per_person > 1).any(axis=None):
        raise DataError("lower and upper must be constant within each id", column=lower)
    people = frame.groupby(id, sort=False)[[lower, upper]].first()
    lower_all = people[lower].to_numpy(float)
    upper_all = people[upper].to_numpy(float)
    upper_all = np.where(np.isnan(upper_all), np.inf, upper_all)
    _check_bounds(lower_all, upper_all, people.index.to_numpy())
    code = pd.Series(np.arange(len(people)), index=people.index)
    person_code = frame[id].map(code).to_numpy()
    start_values = frame[start].to_numpy(float)
    stop_values = frame[stop].to_numpy(float)
    if np.any(stop_values <= start_values):
        raise DataError("every row needs stop > start", column=stop)

    # Only rows up to each person's end enter the likelihood; covariates must be known there.
    end = np.where(np.isfinite(upper_all), upper_all, lower_all)[person_code]
    needed = start_values < end
    incomplete = needed & frame[covariates].isna().any(axis=1).to_numpy()
    dropped_people = np.unique(person_code[incomplete])
    notes = []
    if len(dropped_people):
        notes.append(
            f"{len(dropped_people)} of {len(people)} people dropped: a covariate is missing on a "
            f"row their likelihood uses ({', '.join(covariates)})"
        )
    keep_person = np.ones(len(people), bool)
    keep_person[dropped_people] = False
    rows = keep_person[person_code] & needed
    first_start = pd.Series(start_values).groupby(person_code).transform("min").to_numpy()
    previous_stop = (
        pd.Series(stop_values).groupby(person_code).shift().to_numpy()
    )  # NaN on each person's first row
    gap = ~np.isnan(previous_stop) & (previous_stop != start_values)
    if np.any(gap & rows):
        bad = people.index[person_code[gap & rows][0]]
        raise DataError(
            "rows of a person must be contiguous (stop = next start)", column=f"id {bad!r}"
        )
    last_stop = pd.Series(stop_values).groupby(person_code).transform("max").to_numpy()
    short = keep_person[person_code] & ((last_stop < end) | (first_start > lower_all[person_code]))
    if short.any():
        bad = people.index[person_code[short][0]]
        raise DataError(
            "a person's rows must run from entry (<= lower) to upper (lower if right-censored)",
            column=f"id {bad!r}",
        )
    if np.any(keep_person & np.isfinite(upper_all) & (upper_all == lower_all) & (upper_all <= 0)):
        raise DataError("an exact event time must be after entry", column=upper)

    used = frame.loc[rows]
    design_frame = design_matrix(used, covariates, reference_levels)
    names = list(design_frame.columns)
    kept_codes = np.flatnonzero(keep_person)
    recode = np.full(len(people), -1)
    recode[kept_codes] = np.arange(len(kept_codes))
    lower_kept, upper_kept = lower_all[kept_codes], upper_all[kept_codes]
    events = int(np.isfinite(upper_kept).sum())
    if events == 0:
        raise DataError("no recoveries: the interval-censored PH model has nothing to fit")

    data = _segments(
        recode[person_code[rows]],
        start_values[rows],
        stop_values[rows],
        design_frame.to_numpy(float),
        lower_kept,
        upper_kept,
        cuts_array,
    )
    piece_names = [
        f"baseline[{a:g}, {b:g})"
        for a, b in zip(cuts_array, [*cuts_array[1:], np.inf], strict=True)
    ]
    # A piece no recovery interval touches has its hazard's MLE at 0 (log hazard -inf).
    informative = (
        np.bincount(data.piece[~data.before_lower], minlength=data.n_pieces) + data.exact_per_piece
    )
    exposed = np.bincount(data.piece, data.exposure, minlength=data.n_pieces)
    for name, info, time in zip(piece_names, informative, exposed, strict=True):
        if info == 0 or time == 0:
            raise DataError(
                f"baseline piece {name} has no recovery interval overlapping it, so its hazard "
                "cannot be estimated",
                hint="merge it with a neighbour (fewer cuts)",
            )

    piece_columns = [(data.piece == k).astype(float) for k in range(data.n_pieces)]
    aliased = _aliased_columns([*piece_columns, *data.design.T], [*piece_names, *names])
    aliased_pieces = [name for name in aliased if name in piece_names]
    if aliased_pieces:
        raise DataError(f"baseline pieces {aliased_pieces} are not identifiable")
    estimable = [name for name in names if name not in aliased]
    if aliased:
        data = _segments(
            recode[person_code[rows]],
            start_values[rows],
            stop_values[rows],
            design_frame[estimable].to_numpy(float),
            lower_kept,
            upper_kept,
            cuts_array,
        )
        notes.extend(
            f"{name} not estimable: a linear combination of the other terms and the baseline "
            "pieces (aliased; coxph reports NA)"
            for name in aliased
        )

    all_names = [*piece_names, *estimable]
    rate = events / data.exposure.sum()
    theta0 = np.concatenate([np.full(data.n_pieces, np.log(rate)), np.zeros(len(estimable))])
    free = np.ones(len(theta0), bool)
    theta, value, hessian, iterations = _maximise(theta0, data, free, all_names)
    try:
        covariance = np.linalg.inv(-hessian)
        np.linalg.cholesky(-hessian)
    except np.linalg.LinAlgError as error:
        raise ConvergenceError(
            "observed information of the interval-censored PH model is singular"
        ) from error
    std_error = np.sqrt(np.diag(covariance))
    k = data.n_pieces
    table = wald_table(estimable, theta[k:], std_error[k:])
    conf_method = {name: "Wald" for name in estimable}
    for name in profile:
        if name not in estimable:
            raise DataError(f"profile term {name!r} is not an estimable term", hint=str(names))
        position = k + estimable.index(name)
        half_width = float(table.loc[estimable.index(name), "conf_high"] - theta[position])
        low, high = _profile_interval(theta, value, position, half_width, data, all_names)
        table.loc[table["term"] == name, ["conf_low", "conf_high"]] = [low, high]
        conf_method[name] = "profile likelihood"
    if aliased:
        table = table.set_index("term").reindex(names).rename_axis("term").reset_index()
        conf_method.update({name: "not estimable" for name in aliased})
    baseline = pd.DataFrame(
        {
            "piece_start": cuts_array,
            "piece_stop": [*cuts_array[1:], np.inf],
            "log_hazard": theta[:k],
            "std_error": std_error[:k],
            "hazard": np.exp(theta[:k]),
        }
    )
    result = IntervalCoxResult(
        fitted={"theta": theta, "names": all_names},
        coefficients=with_hazard_ratios(table),
        log_likelihood=value,
        n=len(kept_codes),
        events=events,
        exact_events=int(np.sum(np.isfinite(upper_kept) & (upper_kept == lower_kept))),
        right_censored=int(np.sum(~np.isfinite(upper_kept))),
        baseline=baseline,
        conf_method=conf_method,
        covariance=pd.DataFrame(covariance, index=all_names, columns=all_names),
        iterations=iterations,
    )
    for message in notes:
        result.note(message)
    return result
