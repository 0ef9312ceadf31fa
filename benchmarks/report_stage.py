"""Time the report stage (per notebook), each stage's command and `ga-rehab run` on the default
study; print wall and CPU seconds.

    uv run --frozen python benchmarks/report_stage.py --workdir /tmp/report-bench --runs 3

Every command runs as the user runs it (a fresh `ga-rehab` process from the project folder,
with the project's params.yaml and notebooks), writing into the workdir. The first `ga-rehab
run` makes the inputs and is reported apart (cold caches); then each stage's command and the
whole `ga-rehab run` are run `--runs` times and the median is printed. CPU seconds are the
process's and its children's (the report kernels included), which move less with the machine's
load than wall seconds. Seconds per notebook are those `ga-rehab report` prints.

Python writes no bytecode cache when PYTHONDONTWRITEBYTECODE is set: every process then
compiles the sources it imports (seconds per process); the script says which case it measured.
Targets (issue 15): the report stage under 5 s, `ga-rehab run` under 15 s warm.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
STAGES = ("simulate", "clean", "derive", "fit", "report")
# A row of the "Reports" table `ga-rehab report` prints: name, file, seconds.
REPORT_ROW = re.compile(r"^\W*(\S+)\s+\W\s+(\S+\.html)\s+\W\s+([0-9.]+)\s+\W*$")


def timed_command(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (with every child process) and stdout of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(
        [str(Path(sys.executable).parent / "ga-rehab"), *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        # Wide enough that the report table is never wrapped.
        env={**os.environ, "COLUMNS": "200"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"ga-rehab {' '.join(args)} failed:\n{process.stdout}\n{process.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, process.stdout


def notebook_seconds(stdout: str) -> dict[str, float]:
    """Seconds per report from the table `ga-rehab report` / `run` prints."""
    rows = {}
    for line in stdout.splitlines():
        match = REPORT_ROW.match(line)
        if match:
            rows[match.group(1)] = float(match.group(3))
    return rows


def stage_args(stage: str, data: Path, reports: Path) -> list[str]:
    return {
        "simulate": ["simulate", "--out", str(data / "raw")],
        "clean": ["clean", "--raw", str(data / "raw"), "--out", str(data / "interim")],
        "derive": ["derive", "--clean", str(data / "interim"), "--out", str(data / "processed")],
        "fit": [
            "fit",
            "--processed",
            str(data / "processed"),
            "--models",
            str(data / "models"),
            "--metrics",
            str(data / "metrics.json"),
        ],
        "report": ["report", "--data", str(data), "--reports", str(reports)],
    }[stage]


def bytecode_cached() -> bool:
    """Whether the installed packages carry compiled bytecode (else every import compiles)."""
    origin = importlib.util.find_spec("matplotlib").origin
    return (Path(origin).parent / "__pycache__").is_dir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data, reports = args.workdir / "data", args.workdir / "reports"
    run_args = ["run", "--data", str(data), "--reports", str(reports)]
    print(
        f"bytecode cache: {'present' if bytecode_cached() else 'absent'}; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    wall, cpu, _ = timed_command(run_args)
    print(f"first `ga-rehab run` (makes the inputs): {wall:.1f} s wall, {cpu:.1f} s CPU")

    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in (*STAGES, "run")}
    per_notebook: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for stage in STAGES:
            wall, cpu, stdout = timed_command(stage_args(stage, data, reports))
            timings[stage].append((wall, cpu))
            if stage == "report":
                for name, seconds in notebook_seconds(stdout).items():
                    per_notebook.setdefault(name, []).append(seconds)
        timings["run"].append(timed_command(run_args)[:2])

    print(f"\nmedian of {args.runs} runs (load average after: {os.getloadavg()[0]:.1f})")
    print(f"{'command':<22} {'wall s':>8} {'CPU s':>8}")
    for name, values in timings.items():
        label = f"ga-rehab {name}"
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{label:<22} {wall:8.2f} {cpu:8.2f}")
    print(f"\n{'report (ga-rehab report)':<30} {'seconds':>8}")
    for name, values in per_notebook.items():
        print(f"{name:<30} {statistics.median(values):8.2f}")


if __name__ == "__main__":
    main()
