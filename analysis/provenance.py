"""Provenance of a report: input file hashes, parameters, package versions, code, seeds.

Everything here is deterministic for the same inputs, code and parameters: a report rendered
again from the same study, on any day and from any clone, has the same bytes. So there is no
render time (a calendar date, which reports never show) and no git state (the commit that
records a report's hash in dvc.lock cannot be named inside that report); the code is
identified by the SHA-256 of its source files instead.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

UNKNOWN = "unknown"
PACKAGE_DIR = Path(__file__).resolve().parent
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
    """Installed version of each package (and of Python), "not installed" when absent.

    Python is given as major.minor: the lock file fixes every package, and a patch release of
    the interpreter must not change a report's bytes.
    """
    major, minor, _ = platform.python_version_tuple()
    rows = [{"package": "python", "version": f"{major}.{minor}"}]
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows)


def code_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the toolkit's source files (relative path and bytes, in path order).

    It identifies the code that made a report as a commit would, but is the same for every
    clone and checkout of that code, so a re-rendered report keeps its bytes.
    """
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(sha256_of(path).encode())
    return digest.hexdigest()


def random_seeds(study_params: Mapping) -> dict[str, str]:
    """The seeds declared in params.yaml, e.g. {"simulate.seed": "20261125"}."""
    seeds = {}
    for block, key in SEED_KEYS:
        value = (study_params.get(block) or {}).get(key)
        seeds[f"{block}.{key}"] = UNKNOWN if value is None else str(value)
    return seeds


@dataclass
class Provenance:
    """What a report was made from: inputs, parameters, package versions, code and seeds."""

    files: pd.DataFrame
    parameters: pd.DataFrame
    packages: pd.DataFrame
    environment: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The deterministic tables by name (for CSVs beside the report)."""
        return {
            "provenance_files": self.files,
            "provenance_parameters": self.parameters,
            "provenance_packages": self.packages,
            "provenance_environment": self.environment,
        }


def parameters_table(parameters: Mapping) -> pd.DataFrame:
    """Parameters as (parameter, value) rows, values written as Python literals."""
    return pd.DataFrame(
        [{"parameter": name, "value": repr(value)} for name, value in parameters.items()],
        columns=["parameter", "value"],
    )


def collect_provenance(
    inputs: Mapping[str, Path | str | None], parameters: Mapping, study_params: Mapping
) -> Provenance:
    """Hashes of `inputs` (stage -> file or folder), parameters, versions, code and seeds."""
    environment = {"code_sha256": code_digest(), **random_seeds(study_params)}
    return Provenance(
        files=file_digests(inputs),
        parameters=parameters_table(parameters),
        packages=package_versions(),
        environment=pd.DataFrame(
            [{"item": name, "value": value} for name, value in environment.items()]
        ),
    )
