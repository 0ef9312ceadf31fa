"""Time the suppression planner on cross-tables with totals of growing size; count what it hides.

    uv run --frozen python benchmarks/privacy_planner.py --sizes 3x3 6x4 10x5 15x6 --seed 7

Each table has row totals, column totals and a grand total (the shape of Table 1's site rows by
adherence group); counts are drawn so that about one cell in six is below k. For each size:
seconds to plan, sensitive cells, complementary cells, the share of counts >= k hidden, and
whether the planner's own exact check finds any sensitive cell a reader could recover.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.privacy import PublishedCounts, Total, plan_suppression, protection_holes


def cross_table(values: np.ndarray) -> PublishedCounts:
    cells, totals = {}, []
    n_rows, n_columns = values.shape
    for i in range(n_rows):
        for j in range(n_columns):
            cells[(i, j)] = int(values[i, j])
        cells[(i, "total")] = int(values[i].sum())
        totals.append(Total((i, "total"), tuple((i, j) for j in range(n_columns))))
    for j in [*range(n_columns), "total"]:
        cells[("total", j)] = sum(cells[(i, j)] for i in range(n_rows))
        totals.append(Total(("total", j), tuple((i, j) for i in range(n_rows))))
    return PublishedCounts(cells, tuple(totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["3x3", "6x4", "10x5", "15x6"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-cell-size", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    k = args.min_cell_size
    print("size   seconds  sensitive  complementary  hidden>=k  recoverable")
    for size in args.sizes:
        n_rows, n_columns = (int(part) for part in size.split("x"))
        small = rng.uniform(size=(n_rows, n_columns)) < 1 / 6
        values = np.where(
            small, rng.integers(1, k, (n_rows, n_columns)), rng.poisson(25, (n_rows, n_columns))
        )
        counts = cross_table(values)
        start = time.perf_counter()
        plan = plan_suppression(counts, k)
        seconds = time.perf_counter() - start
        large = [key for key, value in counts.cells.items() if value >= k]
        share = len(plan.complementary) / len(large)
        holes = protection_holes(counts, plan)
        print(
            f"{size:6} {seconds:7.2f}  {len(plan.sensitive):9d}  {len(plan.complementary):13d}"
            f"  {share:9.1%}  {len(holes):11d}"
        )


if __name__ == "__main__":
    main()
