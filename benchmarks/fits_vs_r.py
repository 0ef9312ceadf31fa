"""Time each model fit against the same fit in R on the same data; time `ga-rehab fit` itself.

    uv run --frozen python benchmarks/fits_vs_r.py --participants 1000 10000 --workdir /tmp/fits

For each study size a study is simulated, cleaned and derived with the CLI, and every model
family of the fit stage is run on the frames the fit stage builds (analysis.fit's helpers). The
same frames go to CSV; benchmarks/fits_vs_r.R loads them once and then serves timings of the
matching survival / cmprsk / lme4 call, so R and Python runs alternate (A B A B ...) and share
the machine's load. Each run is a batch of calls lasting at least --min-batch seconds (R's
clock and ours both time the batch from inside the process, reading the data excluded); the
table gives the medians of --repeats batches per call and their ratio, flagged above 3x R.
Fits the stage runs without an R counterpart are timed on our side and listed with the reason.
Then the whole `ga-rehab fit` command is timed on the default study of params.yaml (target:
under 20 s), with the time of each family of analysis.fit.run_models.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analysis import fit as fit_stage
from analysis import io
from analysis.mixed import fit_mixed
from analysis.schema import EVENT_RECOVERED, Recovery, WeeklyIntervals, WeeklyTrajectories
from analysis.survival import (
    cumulative_incidence,
    fit_aft,
    fit_cox,
    fit_cox_time_varying,
    fit_fine_gray,
    kaplan_meier,
    logrank_test,
    rmst_difference,
    turnbull,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
R_SCRIPT = Path(__file__).resolve().with_suffix(".R")
CLI = "import sys; from analysis.cli import app; app(sys.argv[1:])"
RATIO_TARGET = 3.0
# Fit-stage families (params.yaml fit.families) with no R call timed here, and why.
WITHOUT_R = {
    "primary": "interval-censored piecewise-exponential PH with weekly time-varying covariates "
    "(analysis.survival.icph): no R package fits it (icenReg's ic_sp has no time-varying "
    "covariates); timed on our side only",
    "milestones": "Kaplan-Meier, the primary model and Turnbull on the second milestone: the same "
    "calls as the kaplan_meier, primary and turnbull rows",
    "landmark": "Kaplan-Meier, log-rank and Cox on the landmark frames (fewer rows): the same "
    "calls as the kaplan_meier, logrank and cox rows",
    "timeline": "the toolkit's calibrated ranges (AFT fits, bootstrap and cross-validation): its "
    "fits are the aft_* rows; the rest has no R counterpart",
}
STAGE_TARGET_SECONDS = 20.0
CENSORED = "censored"
DURATION = Recovery.time_to_recovery_days
EVENT = Recovery.recovered
LOWER = Recovery.interval_lower_days
UPPER = Recovery.interval_upper_days


def ga_rehab(*args: str) -> float:
    """Run one CLI command in a fresh interpreter; wall-clock seconds, start-up included."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CLI, *args], check=True, stdout=subprocess.DEVNULL, cwd=REPO
    )
    return time.perf_counter() - start


def derive_study(
    folder: Path, participants: int, seed: int, mess_rate: float, follow_up_weeks: int
) -> Path:
    """simulate -> clean -> derive into `folder`; returns the folder of derived frames."""
    raw, interim, processed = (folder / name for name in ("raw", "interim", "processed"))
    ga_rehab(
        "simulate",
        "--out",
        str(raw),
        "--participants",
        str(participants),
        "--seed",
        str(seed),
        "--mess-rate",
        str(mess_rate),
        "--follow-up-weeks",
        str(follow_up_weeks),
        "--params",
        str(PARAMS),
    )
    ga_rehab("clean", "--raw", str(raw), "--out", str(interim), "--params", str(PARAMS))
    ga_rehab("derive", "--clean", str(interim), "--out", str(processed), "--params", str(PARAMS))
    return processed


def read_frames(processed: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(
        pd.read_parquet(processed / f"{name}.parquet")
        for name in ("recovery", "weekly_intervals", "weekly_trajectories")
    )


def mixed_fixed(trajectories: pd.DataFrame, spec: dict) -> str:
    """fit.mixed.fixed with the time basis's columns, as analysis.fit.mixed_models writes it."""
    basis = fit_stage.mixed_time_basis(trajectories[WeeklyTrajectories.week], spec)
    return basis.in_formula(spec["fixed"])


def model_inputs(recovery, intervals, trajectories, fit_params: dict) -> dict[str, pd.DataFrame]:
    """Each model's input frame, built exactly as the fit stage builds it."""
    return {
        "recovery": recovery,
        "grouped": fit_stage.with_group(recovery, fit_params),
        "time_varying": fit_stage.time_varying_frame(
            intervals, recovery, fit_params["time_varying_covariates"]
        ),
        "interval": fit_stage.interval_censored_frame(recovery),
        "trajectories": fit_stage.mixed_frame(trajectories, fit_params)[0],
    }


def our_fits(inputs: dict[str, pd.DataFrame], fit_params: dict) -> dict[str, tuple[str, Callable]]:
    """Model name -> (input frame name, call), one per R call in fits_vs_r.R."""
    p = fit_params
    group, grouped, interval = p["group"], inputs["grouped"], inputs["interval"]
    with warnings.catch_warnings():
        # The dropped-rows note is the fit's business; the benchmark only needs the fit.
        warnings.simplefilter("ignore")
        cox = fit_cox(inputs["recovery"], DURATION, EVENT, p["cox_covariates"])
    mixed = p["mixed"]
    fits = {
        "kaplan_meier": ("grouped", lambda: kaplan_meier(grouped, DURATION, EVENT, group=group)),
        "logrank": ("grouped", lambda: logrank_test(grouped, DURATION, EVENT, group)),
        "logrank_stratified": (
            "grouped",
            lambda: logrank_test(grouped, DURATION, EVENT, group, strata=p["stratify_logrank_by"]),
        ),
        "rmst": (
            "grouped",
            lambda: rmst_difference(grouped, DURATION, EVENT, group, p["rmst_horizon_days"]),
        ),
        "cox": (
            "recovery",
            lambda: fit_cox(inputs["recovery"], DURATION, EVENT, p["cox_covariates"]),
        ),
        "cox_zph": ("recovery", cox.proportional_hazards_test),
        "cox_time_varying": (
            "time_varying",
            lambda: fit_cox_time_varying(
                inputs["time_varying"],
                WeeklyIntervals.participant_id,
                "start",
                "stop",
                WeeklyIntervals.event,
                p["time_varying_covariates"],
            ),
        ),
        "turnbull": ("interval", lambda: turnbull(interval, LOWER, UPPER)),
        "turnbull_by_group": (
            "interval",
            lambda: turnbull(fit_stage.with_group(interval, p), LOWER, UPPER, group=group),
        ),
        "cumulative_incidence": (
            "grouped",
            lambda: cumulative_incidence(grouped, DURATION, Recovery.event_type, group=group),
        ),
        "fine_gray": (
            "recovery",
            lambda: fit_fine_gray(
                inputs["recovery"],
                DURATION,
                Recovery.event_type,
                EVENT_RECOVERED,
                p["fine_gray_covariates"],
            ),
        ),
        "mixed": (
            "trajectories",
            lambda: fit_mixed(
                inputs["trajectories"],
                f"{mixed['outcomes'][0]} ~ {mixed_fixed(inputs['trajectories'], mixed)}",
                WeeklyTrajectories.participant_id,
                re_formula=mixed["random"],
                reml=mixed["reml"],
            ),
        ),
    }
    for distribution in p["aft_distributions"]:
        fits[f"aft_{distribution}"] = (
            "interval",
            lambda d=distribution: fit_aft(
                interval, p["aft_covariates"], distribution=d, lower=LOWER, upper=UPPER
            ),
        )
    return fits


def batch_seconds(call: Callable, loops: int) -> float:
    """Wall-clock seconds of `loops` calls in a row."""
    start = time.perf_counter()
    for _ in range(loops):
        call()
    return time.perf_counter() - start


class RSession:
    """fits_vs_r.R serving timings of its fits on the frames in `folder` (loaded once)."""

    def __init__(self, folder: Path):
        self.process = subprocess.Popen(
            ["Rscript", str(R_SCRIPT), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("fits_vs_r.R did not start")
        self.models = set(self._ask("models").split())

    def _ask(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def batch_seconds(self, model: str, loops: int) -> float:
        return float(self._ask(f"{model} {loops}"))

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


def loops_for(seconds_per_call: float, min_batch: float) -> int:
    return max(1, math.ceil(min_batch / max(seconds_per_call, 1e-6)))


def interleaved(
    call: Callable, r: RSession | None, model: str, options: argparse.Namespace
) -> tuple[float, float | None]:
    """Median seconds per call, ours and R's, from batches run alternately (R, ours, R, ...).

    Each side is warmed up and its batch length calibrated on one call first.
    """
    with warnings.catch_warnings():
        # Fallback notes (ModelWarning) are the fit's business, not the timing's.
        warnings.simplefilter("ignore")
        call()
        our_loops = loops_for(batch_seconds(call, 1), options.min_batch)
        in_r = r is not None and model in r.models
        if in_r:
            r_loops = loops_for(r.batch_seconds(model, 1), options.min_batch)
        ours, theirs = [], []
        for _ in range(options.repeats):
            if in_r:
                theirs.append(r.batch_seconds(model, r_loops) / r_loops)
            ours.append(batch_seconds(call, our_loops) / our_loops)
    return statistics.median(ours), statistics.median(theirs) if in_r else None


def write_r_inputs(folder: Path, inputs: dict[str, pd.DataFrame], fit_params: dict):
    """The frames as CSV under the column names fits_vs_r.R uses, and the model spec."""
    folder.mkdir(parents=True, exist_ok=True)
    recovery = inputs["recovery"].assign(
        duration=inputs["recovery"][DURATION], event=inputs["recovery"][EVENT].astype(int)
    )
    recovery.to_csv(folder / "recovery.csv", index=False)
    inputs["time_varying"].to_csv(folder / "time_varying.csv", index=False)
    interval = inputs["interval"].rename(columns={LOWER: "lower", UPPER: "upper"})
    interval.to_csv(folder / "interval.csv", index=False)
    inputs["trajectories"].to_csv(folder / "trajectories.csv", index=False)
    mixed = fit_params["mixed"]
    spec = {
        key: fit_params[key]
        for key in (
            "group",
            "stratify_logrank_by",
            "rmst_horizon_days",
            "cox_covariates",
            "time_varying_covariates",
            "aft_distributions",
            "aft_covariates",
            "fine_gray_covariates",
        )
    }
    spec |= {
        "censored": CENSORED,
        "event_of_interest": EVENT_RECOVERED,
        "participant_id": WeeklyTrajectories.participant_id,
        "mixed_outcome": mixed["outcomes"][0],
        "mixed_fixed": mixed_fixed(inputs["trajectories"], mixed),
        "mixed_random": mixed["random"],
        "mixed_reml": mixed["reml"],
    }
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))


def compare(
    participants: int, options: argparse.Namespace, params: dict, r_present: bool
) -> list[dict]:
    folder = options.workdir / str(participants)
    processed = folder / "processed"
    if not (options.reuse_frames and (processed / "recovery.parquet").is_file()):
        derive_study(
            folder,
            participants,
            options.seed,
            options.mess_rate,
            params["simulate"]["follow_up_weeks"],
        )
    fit_params = params["fit"]
    recovery, intervals, trajectories = read_frames(processed)
    inputs = model_inputs(recovery, intervals, trajectories, fit_params)
    fits = our_fits(inputs, fit_params)
    primary = fit_params["primary"]
    inputs["primary"] = fit_stage.primary_frame(intervals, recovery, primary)
    fits["primary"] = (
        "primary",
        lambda: fit_stage.fit_primary(inputs["primary"], primary, fit_params["reference_levels"]),
    )
    r = None
    if r_present:
        write_r_inputs(folder / "r", inputs, fit_params)
        r = RSession(folder / "r")
    rows = []
    try:
        for model, (frame, call) in fits.items():
            if options.only and model not in options.only:
                continue
            ours, theirs = interleaved(call, r, model, options)
            rows.append(
                {
                    "model": model,
                    "participants": participants,
                    "rows": len(inputs[frame]),
                    "ours_s": ours,
                    "r_s": theirs,
                    "ratio": ours / theirs if theirs else None,
                }
            )
            print(f"  {participants}: {model} timed", flush=True)
            if model in options.profile:
                profile(call, f"{model}, {participants} participants")
    finally:
        if r is not None:
            r.close()
    return rows


def profile(call: Callable, title: str) -> None:
    """cProfile one run; the functions with the most time of their own name the hot spot."""
    profiler = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiler.runcall(call)
    print(f"\n--- profile: {title} (top by own time) ---")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)


def time_fit_stage(options: argparse.Namespace, params: dict) -> tuple[float, dict[str, float]]:
    """`ga-rehab fit` end to end on the default study, and each family of run_models once."""
    sim = params["simulate"]
    folder = options.workdir / "default"
    processed = folder / "processed"
    if not (options.reuse_frames and (processed / "recovery.parquet").is_file()):
        derive_study(
            folder, sim["participants"], sim["seed"], sim["mess_rate"], sim["follow_up_weeks"]
        )
    whole = ga_rehab(
        "fit",
        "--processed",
        str(processed),
        "--models",
        str(folder / "models"),
        "--metrics",
        str(folder / "metrics.json"),
        "--params",
        str(PARAMS),
    )
    recovery, intervals, trajectories = read_frames(processed)
    fit_params = params["fit"]
    min_cell_size = params["report"]["min_cell_size"]
    outputs = fit_stage.FitOutputs()
    families = {
        "kaplan_meier": lambda: fit_stage.km_models(recovery, fit_params, outputs),
        "cox": lambda: fit_stage.cox_models(recovery, intervals, fit_params, outputs),
        "turnbull": lambda: fit_stage.turnbull_models(recovery, fit_params, outputs),
        "competing_risks": lambda: fit_stage.competing_risk_models(recovery, fit_params, outputs),
        "mixed": lambda: fit_stage.mixed_models(trajectories, fit_params, outputs),
        "aft": lambda: fit_stage.aft_models(recovery, fit_params, outputs),
        "timeline": lambda: fit_stage.timeline_models(recovery, params, outputs),
        "site_comparison": lambda: fit_stage.site_comparison_models(
            recovery, intervals, fit_params, min_cell_size, outputs
        ),
        "adherence_grouping": lambda: fit_stage.adherence_grouping_models(
            recovery, fit_params, min_cell_size, outputs
        ),
    }
    by_family = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for family, call in families.items():
            # Once each, in run_models' order: the stage itself runs each family once.
            start = time.perf_counter()
            call()
            by_family[family] = time.perf_counter() - start
    return whole, by_family


def print_comparison(rows: list[dict], options: argparse.Namespace) -> None:
    print(
        f"\n{platform.node()}, {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs; medians of {options.repeats} "
        f"alternating batches of >= {options.min_batch:g} s (seconds per call)"
    )
    print(
        f"{'model':<22} {'participants':>12} {'rows':>8} {'ours (s)':>10} {'R (s)':>10} "
        f"{'ratio':>8}"
    )
    for row in rows:
        r_s = f"{row['r_s']:>10.4f}" if row["r_s"] is not None else f"{'none':>10}"
        ratio = f"{row['ratio']:>7.1f}x" if row["ratio"] is not None else f"{'-':>8}"
        flag = f"  > {RATIO_TARGET:g}x R" if row["ratio"] and row["ratio"] > RATIO_TARGET else ""
        print(
            f"{row['model']:<22} {row['participants']:>12} {row['rows']:>8} "
            f"{row['ours_s']:>10.4f} {r_s} {ratio}{flag}"
        )
    print("\nFit-stage families without an R counterpart in this table:")
    for family, reason in WITHOUT_R.items():
        print(f"  {family}: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mess-rate", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5, help="Batches per side and fit.")
    parser.add_argument(
        "--min-batch", type=float, default=0.2, help="Seconds each timed batch lasts at least."
    )
    parser.add_argument(
        "--reuse-frames",
        action="store_true",
        help="Skip simulate/clean/derive where the work dir already has derived frames.",
    )
    parser.add_argument(
        "--profile", nargs="*", default=[], help="Models to cProfile (names as in the table)."
    )
    parser.add_argument("--only", nargs="*", default=[], help="Time just these fits.")
    parser.add_argument("--skip-stage", action="store_true", help="Skip timing `ga-rehab fit`.")
    options = parser.parse_args()
    params = io.read_yaml(PARAMS, "params")
    r_present = shutil.which("Rscript") is not None
    if not r_present:
        print("Rscript not found: timing our fits only")
    rows = [row for n in options.participants for row in compare(n, options, params, r_present)]
    print_comparison(rows, options)
    (options.workdir / "fits_vs_r.json").write_text(json.dumps(rows, indent=2))
    if options.skip_stage:
        return
    whole, by_family = time_fit_stage(options, params)
    met = "met" if whole < STAGE_TARGET_SECONDS else "MISSED"
    print(
        f"\n`ga-rehab fit`, default study ({params['simulate']['participants']} participants): "
        f"{whole:.1f} s end to end (target < {STAGE_TARGET_SECONDS:g} s: {met})"
    )
    for family, seconds in by_family.items():
        print(f"  {family:<16} {seconds:>7.2f} s")
    print(f"  {'sum of families':<16} {sum(by_family.values()):>7.2f} s")


if __name__ == "__main__":
    main()
