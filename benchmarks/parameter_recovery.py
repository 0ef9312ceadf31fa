"""Coverage of the 95 % CIs of the time-varying analyses over many simulated studies.

    uv run --frozen python benchmarks/parameter_recovery.py --seeds 100 --participants 3000

For each seed: simulate, clean, derive, then fit the configured time-varying Cox model twice,
on the true recovery days (`truth.json`) and on the days the clinic visits detect, and the
primary model (interval-censored PH, `fit.primary` in params.yaml) on what the visits show:
recovery between the last visit without it and the first with it. Prints the share of CIs
covering each true effect (expect 93-97 %) and the mean estimate, so the report can say how
much the naive visit-day analysis is biased and that the primary one is not.

Studies can run in parallel processes, each saving its rows (`--save`), and be summarised
together afterwards (`--summarise a.csv b.csv`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml

from analysis.fit import fit_primary, primary_frame, time_varying_frame
from analysis.schema import SEVERITY_LEVELS, UNDERLYING_CONDITIONS, WeeklyIntervals
from analysis.survival import fit_cox_time_varying
from analysis.validation import (
    coverage,
    simulate_clean_derive,
    true_day_intervals,
    truth_in_model_coding,
)

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
FACTORS = {"severity": SEVERITY_LEVELS, "underlying_condition": UNDERLYING_CONDITIONS}
ANALYSES = ("cox, true days", "cox, visit days", "primary, visit intervals")


def one_study(seed: int, participants: int, params: dict) -> pd.DataFrame:
    pipeline = simulate_clean_derive(participants, seed, params)
    simulated, derived = pipeline.simulated, pipeline.derived
    generating = simulated.truth["generating_parameters"]
    truth = truth_in_model_coding(generating, FACTORS)
    true_days = pd.DataFrame(simulated.truth["participants"]).set_index("participant_id")[
        "true_recovery_day"
    ]
    covariates = params["fit"]["time_varying_covariates"]
    results = []
    for analysis, intervals in zip(
        ANALYSES[:2],
        (true_day_intervals(derived.weekly_intervals, true_days), derived.weekly_intervals),
        strict=True,
    ):
        frame = time_varying_frame(intervals, derived.recovery, covariates)
        started = time.perf_counter()
        fitted = fit_cox_time_varying(
            frame,
            WeeklyIntervals.participant_id,
            "start",
            "stop",
            WeeklyIntervals.event,
            covariates,
        )
        seconds = time.perf_counter() - started
        results.append(
            coverage(fitted.tidy(), truth).assign(analysis=analysis, seed=seed, seconds=seconds)
        )
    # The primary model codes factors against the simulator's own references (mild, none).
    spec = params["fit"]["primary"]
    started = time.perf_counter()
    primary = fit_primary(
        primary_frame(derived.weekly_intervals, derived.recovery, spec),
        spec,
        params["fit"]["reference_levels"],
    )
    seconds = time.perf_counter() - started
    natural_truth = {
        term: value
        for term, value in generating.items()
        if term in set(primary.tidy()["term"].str.replace("[True]", "", regex=False))
    }
    results.append(
        coverage(primary.tidy(), natural_truth).assign(
            analysis=ANALYSES[2], seed=seed, seconds=seconds
        )
    )
    return pd.concat(results, ignore_index=True)


def summarise(table: pd.DataFrame) -> str:
    summary = table.groupby(["analysis", "term"], sort=False).agg(
        truth=("truth", "first"),
        mean_estimate=("estimate", "mean"),
        coverage=("covered", "mean"),
        studies=("seed", "nunique"),
    )
    overall = table.groupby("analysis", sort=False).agg(
        coverage=("covered", "mean"), mean_fit_seconds=("seconds", "mean")
    )
    return f"{summary.round(3).to_string()}\n\n{overall.round(3).to_string()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--participants", type=int, default=3000)
    parser.add_argument("--save", type=Path, help="Write the per-study rows to this CSV.")
    parser.add_argument(
        "--summarise", type=Path, nargs="+", help="Summarise saved rows instead of simulating."
    )
    options = parser.parse_args()
    if options.summarise:
        print(summarise(pd.concat(map(pd.read_csv, options.summarise), ignore_index=True)))
        return
    params = yaml.safe_load(PARAMS.read_text())
    started = time.perf_counter()
    runs = []
    for seed in range(options.first_seed, options.first_seed + options.seeds):
        runs.append(one_study(seed, options.participants, params))
        if options.save:
            pd.concat(runs, ignore_index=True).to_csv(options.save, index=False)
    table = pd.concat(runs, ignore_index=True)
    print(summarise(table))
    print(
        f"\n{options.seeds} studies of {options.participants} people, "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
