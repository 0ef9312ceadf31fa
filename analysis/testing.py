"""Reusable statistical assertions for tests (as scikit-survival's sksurv.testing)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_survival_curve(survival: pd.Series | np.ndarray) -> None:
    """A survival curve lies in [0, 1] and never increases."""
    values = np.asarray(survival, dtype=float)
    assert np.all((values >= 0) & (values <= 1)), "survival outside [0, 1]"
    assert np.all(np.diff(values) <= 1e-12), "survival increases"


def assert_ci_contains_estimate(
    frame: pd.DataFrame, estimate: str = "estimate", low: str = "conf_low", high: str = "conf_high"
) -> None:
    """Every confidence interval that is defined contains its estimate."""
    defined = frame[[estimate, low, high]].dropna()
    assert (defined[low] <= defined[estimate] + 1e-12).all(), "conf_low above estimate"
    assert (defined[estimate] <= defined[high] + 1e-12).all(), "conf_high below estimate"


def assert_close_to_reference(
    actual: pd.Series | np.ndarray, reference: pd.Series | np.ndarray, rtol: float
) -> None:
    """Values agree with an R reference to a relative tolerance, element by element."""
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(reference, float), rtol=rtol)
