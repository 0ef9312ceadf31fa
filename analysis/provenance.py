"""Provenance of a report: input file hashes, parameters, package versions, git state, seeds.

Everything here is deterministic for the same inputs and parameters except `rendered_at`, the
one value allowed to differ between two renders; reports show it on a line of its own, labelled
with RENDERED_AT_LABEL, so privacy checks can tell it from a participant's calendar date.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

UNKNOWN = "unknown"
RENDERED_AT_LABEL = "Report rendered at (UTC):"
REPORTED_PACKAGES = (
    "pandas",
    "numpy",
    "scipy",
    "statsmodels",
    "lifelines",
    "matplotlib",
    "seaborn",
    "tableone",
    "papermill",
    "nbconvert",
    "ga-rehab",
)
# Seeds that decide any random number in the study: (params block, key).
SEED_KEYS = (("simulate", "seed"), ("timeline", "seed"))
_CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(inputs: Mapping[str, Path | str | None]) -> pd.DataFrame:
    """One row per input file (stage, file, bytes, sha256); a folder counts every file in it.

    Paths are shown relative to the stage's folder so the table does not depend on where the
    study lives; hidden files and folders (e.g. .gitkeep, .ipynb_checkpoints) are left out.
    A missing input is listed with sha256 "missing" rather than silently skipped.
    """
    rows = []
    for stage, location in inputs.items():
        if location is None:
            continue
        location = Path(location)
        if location.is_file():
            files, base = [location], location.parent
        elif location.is_dir():
            files = sorted(
                path
                for path in location.rglob("*")
                if path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(location).parts)
            )
            base = location
        else:
            rows.append({"stage": stage, "file": location.name, "bytes": 0, "sha256": "missing"})
            continue
        rows += [
            {
                "stage": stage,
                "file": path.relative_to(base).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": sha256_of(path),
            }
            for path in files
        ]
    return pd.DataFrame(rows, columns=["stage", "file", "bytes", "sha256"])


def package_versions(packages: tuple[str, ...] = REPORTED_PACKAGES) -> pd.DataFrame:
    """Installed version of each package (and of Python), "not installed" when absent."""
    rows = [{"package": "python", "version": platform.python_version()}]
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows)


def _git(repo: Path, *arguments: str) -> str | None:
    """Output of a read-only git command in `repo`, or None when git or the repo is absent."""
    try:
        # --no-optional-locks: `status` must not refresh (write) the index of the user's repo.
        completed = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), *arguments],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout


def git_state(repo: Path | str | None) -> dict[str, str]:
    """The commit checked out in `repo` and whether its tracked or untracked files differ.

    git runs with `-C repo`, never in the working directory; no git, no repository or no
    commit yet gives "unknown" for both.
    """
    if repo is None:
        return {"git_commit": UNKNOWN, "git_dirty": UNKNOWN}
    commit = _git(Path(repo), "rev-parse", "HEAD")
    status = _git(Path(repo), "status", "--porcelain") if commit else None
    return {
        "git_commit": commit.strip() if commit else UNKNOWN,
        "git_dirty": UNKNOWN if status is None else ("yes" if status.strip() else "no"),
    }


def random_seeds(study_params: Mapping) -> dict[str, str]:
    """The seeds declared in params.yaml, e.g. {"simulate.seed": "20261125"}."""
    seeds = {}
    for block, key in SEED_KEYS:
        value = (study_params.get(block) or {}).get(key)
        seeds[f"{block}.{key}"] = UNKNOWN if value is None else str(value)
    return seeds


@dataclass
class Provenance:
    """What a report was made from; `rendered_at` is the only field that varies between runs."""

    files: pd.DataFrame
    parameters: pd.DataFrame
    packages: pd.DataFrame
    environment: pd.DataFrame
    rendered_at: str = field(default="")

    def tables(self) -> dict[str, pd.DataFrame]:
        """The deterministic tables by name (for CSVs beside the report)."""
        return {
            "provenance_files": self.files,
            "provenance_parameters": self.parameters,
            "provenance_packages": self.packages,
            "provenance_environment": self.environment,
        }

    def rendered_at_line(self) -> str:
        """The labelled timestamp, one line (the single date a report may show)."""
        return f"{RENDERED_AT_LABEL} {self.rendered_at}"


def parameters_table(parameters: Mapping) -> pd.DataFrame:
    """Parameters as (parameter, value) rows, values written as Python literals."""
    return pd.DataFrame(
        [{"parameter": name, "value": repr(value)} for name, value in parameters.items()],
        columns=["parameter", "value"],
    )


def collect_provenance(
    inputs: Mapping[str, Path | str | None],
    parameters: Mapping,
    study_params: Mapping,
    repo: Path | str | None,
    now: datetime | None = None,
) -> Provenance:
    """Hashes of `inputs` (stage -> file or folder), parameters, versions, git state and seeds."""
    environment = {**git_state(repo), **random_seeds(study_params)}
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return Provenance(
        files=file_digests(inputs),
        parameters=parameters_table(parameters),
        packages=package_versions(),
        environment=pd.DataFrame(
            [{"item": name, "value": value} for name, value in environment.items()]
        ),
        rendered_at=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
