"""Time simulate, clean and derive on large simulated studies; print rows/s and peak memory.

    uv run --frozen python benchmarks/pipeline.py --participants 1000 20000 100000 \
        --workdir /tmp/bench

Each stage runs in a fresh process (so peak RSS is that stage's own, imports included), next
to a plain `pandas.read_csv(engine="pyarrow")` of the same raw files as the yardstick for
cleaning. Seconds are wall-clock; "cpu s" are the process's CPU seconds (all threads, user +
system), steadier than the wall clock on a machine other processes share (the load average is
printed with each size). Targets (issue 15): clean at most 3x the plain read; clean and derive
each within 4 GB at 100,000 participants.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# CPU seconds (user + system, every thread) beside the wall-clock seconds: on a shared machine
# the wall clock moves with the other processes' load, the CPU seconds much less.
STAGE_SCRIPT = """
import resource, sys, time, json
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start, start_cpu = time.perf_counter(), cpu()
from analysis.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": cpu() - start_cpu,
                      "peak_mb": peak}), file=sys.stderr)
"""
READ_SCRIPT = """
import json, sys, time, resource
import pandas as pd
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start, start_cpu = time.perf_counter(), cpu()
rows = sum(len(pd.read_csv(p, engine="pyarrow")) for p in sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": cpu() - start_cpu,
                  "peak_mb": peak, "rows": rows}), file=sys.stderr)
"""


def run_stage(args: list[str]) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, *args], capture_output=True, text=True, check=True
    )
    return json.loads(process.stderr.strip().splitlines()[-1])


def plain_read(raw: Path) -> dict:
    files = [str(raw / f"{t}.csv") for t in ("participants", "diary", "sessions", "assessments")]
    process = subprocess.run(
        [sys.executable, "-c", READ_SCRIPT, *files], capture_output=True, text=True, check=True
    )
    return json.loads(process.stderr.strip().splitlines()[-1])


def benchmark(participants: int, workdir: Path, mess_rate: float, reuse_raw: bool) -> dict:
    raw, interim, processed = (
        workdir / str(participants) / d for d in ("raw", "interim", "processed")
    )
    simulate = None
    if not (reuse_raw and raw.is_dir()):
        simulate = run_stage(
            [
                "simulate",
                "--out",
                str(raw),
                "--participants",
                str(participants),
                "--mess-rate",
                str(mess_rate),
                "--params",
                str(PARAMS),
            ]
        )
    load_before = os.getloadavg()[0]
    read = plain_read(raw)
    clean = run_stage(["clean", "--raw", str(raw), "--out", str(interim), "--params", str(PARAMS)])
    derive = run_stage(
        ["derive", "--clean", str(interim), "--out", str(processed), "--params", str(PARAMS)]
    )
    rows = read["rows"]
    return {
        "participants": participants,
        "raw_rows": rows,
        "simulate": simulate,
        "plain_read": read,
        "clean": clean,
        "derive": derive,
        "clean_over_read": clean["seconds"] / read["seconds"],
        "load_average": (load_before, os.getloadavg()[0]),
        "clean_plus_derive_seconds": clean["seconds"] + derive["seconds"],
    }


CLEAN_OVER_READ_TARGET = 3.0
PEAK_MB_TARGET = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--mess-rate", type=float, default=0.02)
    parser.add_argument(
        "--reuse-raw",
        action="store_true",
        help="clean the raw study an earlier run left in the workdir (simulate not rerun)",
    )
    options = parser.parse_args()
    print(
        f"{'participants':>12} {'rows':>10} {'stage':>10} {'seconds':>8} {'cpu s':>8} "
        f"{'rows/s':>12} {'peak MB':>8}"
    )
    for n in options.participants:
        result = benchmark(n, options.workdir, options.mess_rate, options.reuse_raw)
        for stage in ("simulate", "plain_read", "clean", "derive"):
            figures = result[stage]
            if figures is None:
                continue
            print(
                f"{n:>12} {result['raw_rows']:>10} {stage:>10} {figures['seconds']:>8.2f} "
                f"{figures['cpu_seconds']:>8.2f} "
                f"{result['raw_rows'] / figures['seconds']:>12,.0f} {figures['peak_mb']:>8.0f}"
            )
        peak = max(result["clean"]["peak_mb"], result["derive"]["peak_mb"])
        print(
            f"{n:>12} clean / plain read = {result['clean_over_read']:.2f}x "
            f"(target <= {CLEAN_OVER_READ_TARGET:g}x: "
            f"{'met' if result['clean_over_read'] <= CLEAN_OVER_READ_TARGET else 'missed'}); "
            f"clean + derive = {result['clean_plus_derive_seconds']:.1f} s, "
            f"peak {peak:,.0f} MB (target < {PEAK_MB_TARGET} MB: "
            f"{'met' if peak < PEAK_MB_TARGET else 'missed'}); "
            f"clean / plain read in CPU seconds = "
            f"{result['clean']['cpu_seconds'] / result['plain_read']['cpu_seconds']:.2f}x; "
            f"load average {result['load_average'][0]:.2f} before the read, "
            f"{result['load_average'][1]:.2f} after derive"
        )


if __name__ == "__main__":
    main()
