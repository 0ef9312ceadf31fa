"""Time fit_mixed against lme4's lmer on the same data, interleaved (ours, lmer, ours, lmer, ...).

    uv run --frozen python benchmarks/mixed_vs_lmer.py --people 1000 10000 100000 --repeats 3

For each size a sleepstudy-like data set is simulated (numpy default_rng(seed)): `--days`
visits per person (0, 1, ...), a random intercept (SD 25) and slope (SD 6, correlation 0.1)
per person, residual SD 25, and 10 % of the rows missing at random so that the design is
unbalanced. The same frame goes to CSV; each repeat times fit_mixed in this process, then
lmer(Reaction ~ Days + (Days | Subject)) in a fresh Rscript that reads the CSV first (reading
not timed; the R call is timed with system.time). Both REML. Medians over the repeats are
printed with the ratio ours / lmer (target: at most 0.5), and the agreement of the two fits
(fixed effects, logLik). Ours includes building the design from the formula and lmerTest's
Satterthwaite df, which lmer does not compute.

With `--study-trajectories PATH` (a derive stage's weekly_trajectories.parquet) the four
outcomes of params.yaml's fit.mixed block are also fitted as the fit stage does
(analysis.fit.mixed_models), on the study's participants resampled with replacement to each
size: the time of the whole mixed-model family at that size.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import fit as fit_stage
from analysis.mixed import fit_mixed
from analysis.schema import WeeklyTrajectories

REPO = Path(__file__).resolve().parents[1]
RATIO_TARGET = 0.5
R_TIMING = """
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1], colClasses = c(Subject = "character"))
elapsed <- system.time(
  fit <- lmer(Reaction ~ Days + (Days | Subject), data, REML = TRUE)
)[["elapsed"]]
cat(sprintf("%.17g", c(elapsed, fixef(fit), as.numeric(logLik(fit)))), sep = "\\n")
"""


def simulate_sleepstudy_like(people: int, days: int, seed: int) -> pd.DataFrame:
    """Reaction ~ Days with a correlated random intercept and slope per subject."""
    rng = np.random.default_rng(seed)
    sd_intercept, sd_slope, correlation, sd_residual = 25.0, 6.0, 0.1, 25.0
    covariance = np.array(
        [
            [sd_intercept**2, correlation * sd_intercept * sd_slope],
            [correlation * sd_intercept * sd_slope, sd_slope**2],
        ]
    )
    effects = rng.multivariate_normal([0.0, 0.0], covariance, size=people)
    subject = np.repeat(np.arange(people), days)
    day = np.tile(np.arange(days, dtype=float), people)
    reaction = (
        250.0
        + 10.0 * day
        + effects[subject, 0]
        + effects[subject, 1] * day
        + rng.normal(0.0, sd_residual, people * days)
    )
    frame = pd.DataFrame(
        {"Reaction": reaction, "Days": day, "Subject": [f"S{i:06d}" for i in subject]}
    )
    return frame[rng.random(len(frame)) >= 0.1].reset_index(drop=True)


def time_ours(frame: pd.DataFrame) -> tuple[float, np.ndarray, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_mixed(frame, "Reaction ~ Days", "Subject", "~Days", reml=True)
    elapsed = time.perf_counter() - start
    return elapsed, result.tidy()["estimate"].to_numpy(), result.log_likelihood


def time_lmer(csv: Path, script: Path) -> tuple[float, np.ndarray, float]:
    output = subprocess.run(
        ["Rscript", str(script), str(csv)], check=True, capture_output=True, text=True
    ).stdout.split()
    values = [float(value) for value in output]
    return values[0], np.array(values[1:3]), values[3]


def resampled_trajectories(trajectories: pd.DataFrame, people: int, seed: int) -> pd.DataFrame:
    """The study's participants drawn with replacement to `people`, each draw a new person."""
    rng = np.random.default_rng(seed)
    participant = WeeklyTrajectories.participant_id
    ids = trajectories[participant].unique()
    drawn = rng.choice(ids, size=people, replace=True)
    by_person = trajectories.groupby(participant, sort=False).indices
    rows = np.concatenate([by_person[person] for person in drawn])
    counts = [len(by_person[person]) for person in drawn]
    frame = trajectories.iloc[rows].reset_index(drop=True)
    frame[participant] = np.repeat([f"R{i:07d}" for i in range(people)], counts)
    return frame


def time_study_family(trajectories: pd.DataFrame, people: int, seed: int) -> float:
    fit_params = yaml.safe_load((REPO / "params.yaml").read_text())["fit"]
    frame = resampled_trajectories(trajectories, people, seed)
    outputs = fit_stage.FitOutputs()
    start = time.perf_counter()
    fit_stage.mixed_models(frame, fit_params, outputs)
    elapsed = time.perf_counter() - start
    failed = [note for note in outputs.notes if note[1] == "failed"]
    if failed:
        raise SystemExit(f"a fit failed: {failed}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--study-trajectories", type=Path, default=None)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        script = Path(workdir) / "lmer_timing.R"
        script.write_text(R_TIMING)
        for people in args.people:
            frame = simulate_sleepstudy_like(people, args.days, args.seed)
            csv = Path(workdir) / f"sleepstudy_like_{people}.csv"
            frame.to_csv(csv, index=False)
            ours, lmer = [], []
            for _ in range(args.repeats):
                ours_seconds, ours_beta, ours_loglik = time_ours(frame)
                lmer_seconds, lmer_beta, lmer_loglik = time_lmer(csv, script)
                ours.append(ours_seconds)
                lmer.append(lmer_seconds)
            ratio = statistics.median(ours) / statistics.median(lmer)
            rows.append(
                {
                    "people": people,
                    "rows": len(frame),
                    "ours_s": statistics.median(ours),
                    "lmer_s": statistics.median(lmer),
                    "ratio": ratio,
                    "target_met": ratio <= RATIO_TARGET,
                    "max_rel_diff_fixef": float(np.max(np.abs(ours_beta / lmer_beta - 1))),
                    "rel_diff_loglik": abs(ours_loglik / lmer_loglik - 1),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print("\nfit_mixed vs lmer (medians of interleaved repeats):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))

    if args.study_trajectories is not None:
        trajectories = pd.read_parquet(args.study_trajectories)
        print("\nfit stage's mixed-model family (four outcomes), resampled study:")
        for people in args.people:
            seconds = [
                time_study_family(trajectories, people, args.seed) for _ in range(args.repeats)
            ]
            print(f"{people:>8} people: median {statistics.median(seconds):.2f} s", flush=True)


if __name__ == "__main__":
    main()
