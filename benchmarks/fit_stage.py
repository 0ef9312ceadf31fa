"""`ga-rehab fit` on the default study: the whole command's seconds, and each family's.

    uv run --frozen ga-rehab run        # once: the default study's data/processed
    uv run --frozen python benchmarks/fit_stage.py --processed data/processed --repeats 5

The command (`uv run --frozen ga-rehab fit ...`, a fresh process each time, into a scratch
folder) runs once to warm the disk cache, then --repeats times: median wall and CPU seconds
(CPU summed over the process and its children, so the fit's second process counts). The
same command confined to one process (every family in turn; the command fits some families
in a second process where a core is idle) alternates with it, and with --baseline DIR (a
folder holding another version's `analysis` package, for example
`git archive <commit> analysis | tar -x -C DIR`) that version's command too (A B C A B C), so
all meet the same load; their outputs are compared byte for byte. Then the start-up imports
of the command are timed in a fresh interpreter, and each family of run_models once in this
process (after one warm-up run of them all, so no family pays a first-use import), with the
process that fits it when there are two cores.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from analysis import fit as fit_stage
from analysis import io
from analysis.params import read_params

REPO = Path(__file__).resolve().parents[1]
ONE_PROCESS = "one process"
IMPORTS = "import time; t = time.perf_counter(); import analysis.cli, analysis.fit; "
IMPORTS += "print(time.perf_counter() - t)"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit_command(processed: Path, out: Path, version: Path | str | None) -> list[str]:
    """The fit command of this checkout (None), of this checkout in one process (ONE_PROCESS:
    the command sees one CPU, so it fits every family in turn), or of the `analysis` package
    under a folder."""
    if version is None:
        start = ["uv", "run", "--frozen", "ga-rehab"]
    else:
        code = (
            "import os; os.cpu_count = lambda: 1; "
            if version == ONE_PROCESS
            else f"import sys; sys.path.insert(0, {str(version)!r}); "
        )
        code += "import sys; from analysis.cli import app; app(sys.argv[1:])"
        start = ["uv", "run", "--frozen", "python", "-c", code]
    return [
        *start,
        "fit",
        "--processed",
        str(processed),
        "--models",
        str(out / "models"),
        "--metrics",
        str(out / "metrics.json"),
        "--params",
        str(REPO / "params.yaml"),
    ]


def time_command(command: list[str]) -> tuple[float, float]:
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start, children_cpu() - cpu


def same_outputs(first: Path, second: Path) -> bool:
    """Every model table and the metrics file byte for byte."""
    models = filecmp.dircmp(first / "models", second / "models")
    names = sorted(p.name for p in (first / "models").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(
        first / "models", second / "models", names, shallow=False
    )
    return (
        not (models.left_only or models.right_only or mismatch or errors)
        and (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    )


def time_families(processed: Path) -> list[tuple[str, str, float, float]]:
    """Each family once in this process: (family, process, wall s, CPU s)."""
    params = read_params(REPO / "params.yaml").stage_params("fit")
    frames = io.read_stage_frames(processed, io.DERIVED_FRAMES, "derive")
    arguments = (frames["recovery"], frames["weekly_intervals"], frames["weekly_trajectories"])
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_stage.run_models(*arguments, params)
        for family in params["fit"]["families"]:
            cpu, start = time.process_time(), time.perf_counter()
            fit_stage.run_models(*arguments, params, only=[family])
            where = "second" if family in fit_stage.SECOND_PROCESS_FAMILIES else "first"
            rows.append((family, where, time.perf_counter() - start, time.process_time() - cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processed", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="Folder with another `analysis` package.")
    options = parser.parse_args()
    processed = options.processed.resolve()
    versions = {"this checkout, one process": ONE_PROCESS, "this checkout": None}
    if options.baseline is not None:
        versions = {f"baseline {options.baseline}": options.baseline.resolve(), **versions}
    load = os.getloadavg()
    print(
        f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; load average {load[0]:.1f} at the start"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / str(i) for i, name in enumerate(versions)}
        for name, baseline in versions.items():
            time_command(fit_command(processed, folders[name], baseline))
        times = {name: [] for name in versions}
        for _ in range(options.repeats):
            for name, baseline in versions.items():
                times[name].append(time_command(fit_command(processed, folders[name], baseline)))
        print(f"\n`ga-rehab fit`, median of {options.repeats} (wall s, CPU s):")
        for name, runs in times.items():
            wall = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            spread = ", ".join(f"{run[0]:.2f}" for run in runs)
            print(f"  {name:<40} {wall:6.2f} {cpu:6.2f}   (walls: {spread})")
        first, *others = folders.values()
        identical = all(same_outputs(first, other) for other in others)
        print(f"  outputs identical: {'yes' if identical else 'NO'}")
    imports = subprocess.run(
        [sys.executable, "-c", IMPORTS], cwd=REPO, check=True, capture_output=True, text=True
    )
    print(f"\nstart-up imports (analysis.cli, analysis.fit): {float(imports.stdout):.2f} s")
    print("\nfamilies of run_models, once each in one process (timeline includes the AFT fits):")
    print(f"  {'family':<20} {'process':>8} {'wall s':>8} {'CPU s':>8}")
    for family, where, wall, cpu in time_families(processed):
        print(f"  {family:<20} {where:>8} {wall:8.2f} {cpu:8.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
