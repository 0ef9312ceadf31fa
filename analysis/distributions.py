"""The few distribution functions the models use, from scipy.special, as scipy.stats gives them.

Importing scipy.stats costs ~0.3-0.4 s of every command's start-up (it pulls in integrate,
interpolate, spatial and more) for functions scipy.special provides: the normal, t and
chi-square tails and quantiles, and the AFT error distributions. Each method here does what
scipy.stats' `rv_continuous` does for the standard distribution (location 0, scale 1): the same
special function on the values inside the support, 0 or 1 at and beyond its ends, NaN for a
missing value or an invalid parameter, a scalar for scalar input. The numbers are scipy.stats'
bit for bit (tests/test_distributions.py compares them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special


def _valid_parameters(parameters: tuple[np.ndarray, ...]) -> np.ndarray:
    """rv_continuous' default check: every shape parameter positive (NaN is not)."""
    valid = np.asarray(True)
    for parameter in parameters:
        valid = np.logical_and(valid, parameter > 0)
    return valid


def _as_output(output: np.ndarray):
    return output[()] if output.ndim == 0 else output


@dataclass(frozen=True)
class StandardDistribution:
    """A continuous distribution with location 0 and scale 1; the cores take the values inside
    the support (and any shape parameters) and return the function there."""

    cdf_core: Callable
    sf_core: Callable
    ppf_core: Callable
    support: tuple[float, float] = (-np.inf, np.inf)

    def _tail(self, core: Callable, x, parameters: tuple, one_beyond_upper: bool):
        x = np.asarray(x)
        x = np.asarray(x, dtype=np.promote_types(x.dtype, np.float64))
        parameters = tuple(np.asarray(parameter) for parameter in parameters)
        lower, upper = self.support
        valid = _valid_parameters(parameters)
        inside = valid & (lower < x) & (x < upper)
        output = np.zeros(np.shape(inside), x.dtype)
        output[np.broadcast_to(~valid | np.isnan(x), output.shape)] = np.nan
        beyond = (x >= upper) if one_beyond_upper else (x <= lower)
        output[np.broadcast_to(valid & beyond, output.shape)] = 1.0
        if inside.any():
            output[inside] = core(
                *(np.broadcast_to(value, output.shape)[inside] for value in (x, *parameters))
            )
        return _as_output(output)

    def cdf(self, x, *parameters):
        """P(X <= x)."""
        return self._tail(self.cdf_core, x, parameters, one_beyond_upper=True)

    def sf(self, x, *parameters):
        """P(X > x)."""
        return self._tail(self.sf_core, x, parameters, one_beyond_upper=False)

    def ppf(self, q, *parameters):
        """The quantile function (inverse of the cdf); the support's ends at q = 0 and 1."""
        q = np.asarray(q)
        parameters = tuple(np.asarray(parameter) for parameter in parameters)
        valid = _valid_parameters(parameters)
        inside = valid & (q > 0) & (q < 1)
        output = np.full(np.shape(inside), np.nan)
        lower, upper = self.support
        output[np.broadcast_to(valid & (q == 0), output.shape)] = lower
        output[np.broadcast_to(valid & (q == 1), output.shape)] = upper
        if inside.any():
            # + 0.0 as scipy's shift by the location 0 does: a quantile of -0.0 becomes 0.0.
            output[inside] = (
                self.ppf_core(
                    *(np.broadcast_to(value, output.shape)[inside] for value in (q, *parameters))
                )
                + 0.0
            )
        return _as_output(output)


NORMAL = StandardDistribution(
    cdf_core=special.ndtr,
    sf_core=lambda x: special.ndtr(-x),
    ppf_core=special.ndtri,
)
# Student's t; the shape parameter is the degrees of freedom.
STUDENT_T = StandardDistribution(
    cdf_core=lambda x, df: special.stdtr(df, x),
    sf_core=lambda x, df: special.stdtr(df, -x),
    ppf_core=lambda q, df: special.stdtrit(df, q),
)
CHI_SQUARE = StandardDistribution(
    cdf_core=lambda x, df: special.chdtr(df, x),
    sf_core=lambda x, df: special.chdtrc(df, x),
    ppf_core=lambda q, df: 2 * special.gammaincinv(df / 2, q),
    support=(0.0, np.inf),
)
# The minimum extreme-value (left-skewed Gumbel) distribution: survreg's Weibull error.
MINIMUM_EXTREME_VALUE = StandardDistribution(
    cdf_core=lambda x: -special.expm1(-np.exp(x)),
    sf_core=lambda x: np.exp(-np.exp(x)),
    ppf_core=lambda q: np.log(-special.log1p(-q)),
)
LOGISTIC = StandardDistribution(
    cdf_core=special.expit,
    sf_core=lambda x: special.expit(-x),
    ppf_core=special.logit,
)
