"""analysis.distributions gives scipy.stats' numbers bit for bit, edge values included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.distributions import (
    CHI_SQUARE,
    LOGISTIC,
    MINIMUM_EXTREME_VALUE,
    NORMAL,
    STUDENT_T,
)

SPECIAL_VALUES = [np.nan, -np.inf, np.inf, 0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, 40.0, -40.0]
PROBABILITY_EDGES = [np.nan, 0.0, 1.0, -0.1, 1.1, 0.5, 1e-300, 1 - 1e-16, 0.025, 0.975]
WITHOUT_PARAMETERS = [
    (NORMAL, stats.norm),
    (MINIMUM_EXTREME_VALUE, stats.gumbel_l),
    (LOGISTIC, stats.logistic),
]
WITH_DEGREES_OF_FREEDOM = [(STUDENT_T, stats.t), (CHI_SQUARE, stats.chi2)]


def same_bits(ours, theirs) -> None:
    """Equal values, NaN included, -0.0 told from 0.0, and the same type (scalar or array)."""
    assert type(ours) is type(theirs)
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


def values(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.concatenate([SPECIAL_VALUES, rng.normal(0, 3, size), rng.standard_cauchy(size)])


def probabilities(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.concatenate(
        [PROBABILITY_EDGES, rng.uniform(0, 1, size), 10 ** -rng.uniform(0, 12, size)]
    )


@pytest.mark.parametrize(("ours", "theirs"), WITHOUT_PARAMETERS)
def test_standard_distributions_match_scipy_stats(ours, theirs):
    rng = np.random.default_rng(1)
    x, q = values(rng, 500), probabilities(rng, 500)
    with np.errstate(over="ignore"):
        for method in ("cdf", "sf"):
            same_bits(getattr(ours, method)(x), getattr(theirs, method)(x))
            same_bits(
                getattr(ours, method)(x.reshape(-1, 3)), getattr(theirs, method)(x.reshape(-1, 3))
            )
        same_bits(ours.ppf(q), theirs.ppf(q))
        for one in [*SPECIAL_VALUES, 3, np.float32(0.3)]:
            same_bits(ours.cdf(one), theirs.cdf(one))
            same_bits(ours.sf(one), theirs.sf(one))
        for one in PROBABILITY_EDGES:
            same_bits(ours.ppf(one), theirs.ppf(one))


@pytest.mark.parametrize(("ours", "theirs"), WITH_DEGREES_OF_FREEDOM)
def test_distributions_with_degrees_of_freedom_match_scipy_stats(ours, theirs):
    rng = np.random.default_rng(2)
    x, q = values(rng, 300), probabilities(rng, 300)
    degrees = [1, 2, 7, 0.5, 3.7, 1e6, np.inf, 0, -1, np.nan]
    for df in degrees:
        same_bits(ours.cdf(x, df), theirs.cdf(x, df))
        same_bits(ours.sf(np.abs(x), df), theirs.sf(np.abs(x), df))
        same_bits(ours.ppf(q, df), theirs.ppf(q, df))
        same_bits(ours.sf(x[20], df), theirs.sf(x[20], df))
        same_bits(ours.ppf(0.975, df), theirs.ppf(0.975, df))
    # One degree of freedom per value (Satterthwaite's, per term), and broadcasting.
    per_value = rng.choice(np.asarray(degrees, float), size=len(x))
    same_bits(ours.sf(x, per_value), theirs.sf(x, per_value))
    same_bits(ours.ppf(0.975, per_value), theirs.ppf(0.975, per_value))
    same_bits(
        ours.cdf(x[:, None], per_value[None, :5]), theirs.cdf(x[:, None], per_value[None, :5])
    )
