"""The shared design helpers: dummy coding and R's aliasing rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.survival.design import aliased_columns


def _aliased_by_rank_of_each_prefix(design: pd.DataFrame, baseline: np.ndarray) -> list[str]:
    """The rule stated directly: a column is aliased if numpy's matrix_rank of the baseline,
    the kept columns and it is no larger than without it."""
    kept, aliased = [], []
    rank = np.linalg.matrix_rank(baseline) if baseline.shape[1] else 0
    for name in design.columns:
        candidate = np.column_stack([baseline, design[[*kept, name]].to_numpy(float)])
        if np.linalg.matrix_rank(candidate) > rank:
            kept.append(name)
            rank += 1
        else:
            aliased.append(name)
    return aliased


def test_aliased_columns_follow_the_rank_rule_on_tall_and_degenerate_designs():
    """Blocked QR (more than one block of rows), constants, exact and near-exact linear
    combinations, strata baselines and an empty baseline."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(2, 1500))
        design = rng.integers(0, 2, (n, int(rng.integers(1, 6)))).astype(float)
        if trial % 3 == 0:
            design[:, -1] = design[:, 0] + 2 * design[:, -1 % design.shape[1]]
        if trial % 4 == 0:
            design = np.column_stack([design, rng.normal(size=n), np.full(n, 3.0)])
        if trial % 5 == 0:
            design = np.column_stack([design, design[:, 0] * 1e-9])
        frame = pd.DataFrame(design, columns=[f"x{i}" for i in range(design.shape[1])])
        baseline = [
            np.ones((n, 1)),
            np.zeros((n, 0)),
            (rng.integers(0, 3, n)[:, None] == np.arange(3)).astype(float),
        ][trial % 3]
        assert aliased_columns(frame, baseline) == _aliased_by_rank_of_each_prefix(frame, baseline)
