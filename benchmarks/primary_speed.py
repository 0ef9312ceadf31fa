"""Time the primary model (interval-censored PH with weekly covariates) as the fit stage runs it.

    uv run --frozen python benchmarks/primary_speed.py --participants 500 10000

For each size: simulate (seed and mess rate from params.yaml), clean and derive in memory, then
time `fit_primary` on the derived frames exactly as `ga-rehab fit` calls it (profile-likelihood
intervals for the headline terms included; one warm-up, best of `--repeats`). Also times the
frame building and one fit without profile intervals, so the cost of each part is visible.
Targets (issue 11): under 2 s for the default study, under 20 s at 10,000 people.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import yaml

from analysis.fit import fit_primary, primary_frame
from analysis.validation import simulate_clean_derive

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def best_of(repeats: int, run) -> float:
    run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[500, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    params = yaml.safe_load(PARAMS.read_text())
    spec = params["fit"]["primary"]
    references = params["fit"]["reference_levels"]
    simulate = params["simulate"]
    print("| participants | person-weeks | build frame (s) | fit, Wald only (s) | fit (s) |")
    print("|---:|---:|---:|---:|---:|")
    for participants in options.participants:
        derived = simulate_clean_derive(
            participants,
            simulate["seed"],
            params,
            date(2026, 11, 25),
            mess_rate=simulate["mess_rate"],
        ).derived
        frame = primary_frame(derived.weekly_intervals, derived.recovery, spec)
        build = best_of(
            options.repeats,
            lambda d=derived: primary_frame(d.weekly_intervals, d.recovery, spec),
        )
        wald = best_of(
            options.repeats,
            lambda f=frame: fit_primary(f, {**spec, "profile_terms": []}, references),
        )
        full = best_of(options.repeats, lambda f=frame: fit_primary(f, spec, references))
        print(
            f"| {participants:,} | {len(frame):,} | {build:.3f} | {wald:.3f} | {full:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
