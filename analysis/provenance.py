"""Provenance of a report: input file hashes, parameters, package versions, code, seeds.

Everything here is deterministic for the same inputs, code and parameters: a report rendered
again from the same study, on any day and from any clone, has the same bytes. So there is no
render time (a calendar date, which reports never show) and no git state (the commit that
records a report's hash in dvc.lock cannot be named inside that report); the code is
identified by the SHA-256 of its source files instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
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
# What `ga-rehab simulate` writes beside the study's export: the generating truth and the
# defects it injected. They are not inputs of the analysis; their presence marks the study as
# the built-in synthetic one.
SIMULATOR_FILES = ("truth.json", "injected_defects.csv")
SYNTHETIC_STUDY = "built-in synthetic study"


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
    return _package_versions(packages).copy()


@functools.lru_cache(maxsize=4)
def _package_versions(packages: tuple[str, ...]) -> pd.DataFrame:
    # Once per process: a report kernel renders several reports, and reading the installed
    # packages' metadata takes a few hundredths of a second each time.
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
    inputs: pd.DataFrame | None = None

    def details_sentence(self) -> str:
        """Where the rest is: every input file's hash and the package versions, in CSVs."""
        return (
            f"The SHA-256 of each input file ({len(self.files)} files) and the versions of "
            f"{len(self.packages)} packages are in provenance_files.csv and "
            "provenance_packages.csv beside this report."
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        """The deterministic tables by name (for CSVs beside the report)."""
        return {
            "provenance_files": self.files,
            "provenance_parameters": self.parameters,
            "provenance_packages": self.packages,
            "provenance_environment": self.environment,
        }


def readable_value(value, project: Path | str | None = None) -> str:
    """A parameter as a person reads it: no quotes, "not set" for None, "yes"/"no", and a
    path relative to the project folder (given as seen from where the report ran)."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Path) or (
        isinstance(value, str)
        and project is not None
        and (value.startswith(str(project)) or os.path.isabs(value))
    ):
        return project_path(value, project)
    if isinstance(value, list | tuple):
        return ", ".join(readable_value(item, project) for item in value)
    return str(value)


def project_path(path: Path | str, project: Path | str | None) -> str:
    """`path` relative to the project folder, both as seen from the current folder."""
    if project is None:
        return Path(path).as_posix()
    relative = Path(os.path.relpath(os.path.normpath(path), os.path.normpath(project)))
    if relative.parts[:1] == ("..",):
        # Outside the project: where it lies on this machine is not the report's business.
        return f"{Path(*relative.parts[-2:]).as_posix()} (outside the project folder)"
    return relative.as_posix()


def parameters_table(parameters: Mapping, project: Path | str | None = None) -> pd.DataFrame:
    """Parameters as (parameter, value) rows, values readable (see `readable_value`)."""
    return pd.DataFrame(
        [
            {"parameter": name, "value": readable_value(value, project)}
            for name, value in parameters.items()
        ],
        columns=["parameter", "value"],
    )


def is_synthetic_study(raw: Path | str | None) -> bool:
    """Whether the raw folder holds the simulator's own files (the built-in synthetic study)."""
    return raw is not None and any((Path(raw) / name).is_file() for name in SIMULATOR_FILES)


def inputs_summary(
    files: pd.DataFrame, folders: Mapping, project: Path | str | None
) -> pd.DataFrame:
    """One row per input stage: its folder relative to the project, how many files, their
    total size and one SHA-256 over the files' names and hashes (the CSV lists each file)."""
    rows = []
    for stage, location in folders.items():
        if location is None:
            continue
        stage_files = files[files["stage"] == stage]
        digest = hashlib.sha256()
        for row in stage_files.itertuples():
            digest.update(f"{row.file}\0{row.sha256}\n".encode())
        rows.append(
            {
                "input": stage,
                "path": project_path(location, project),
                "files": len(stage_files),
                "megabytes": round(stage_files["bytes"].sum() / 1e6, 2),
                "sha256": digest.hexdigest(),
            }
        )
    return pd.DataFrame(rows, columns=["input", "path", "files", "megabytes", "sha256"])


def collect_provenance(
    inputs: Mapping[str, Path | str | None],
    parameters: Mapping,
    study_params: Mapping,
    project: Path | str | None = None,
) -> Provenance:
    """Hashes of `inputs` (stage -> file or folder), parameters, versions, code and seeds.

    `project` is the project folder as seen from where the report runs (".." from the
    notebooks): paths are shown relative to it. The simulator's own files are not inputs of the
    analysis: they are left out, and the study is named the built-in synthetic study once.
    """
    environment = {"code_sha256": code_digest(), **random_seeds(study_params)}
    files = file_digests(inputs)
    raw = inputs.get("raw")
    if is_synthetic_study(raw):
        simulator = (files["stage"] == "raw") & files["file"].isin(SIMULATOR_FILES)
        files = files[~simulator].reset_index(drop=True)
        environment = {"study": SYNTHETIC_STUDY, **environment}
    return Provenance(
        files=files,
        parameters=parameters_table(parameters, project),
        packages=package_versions(),
        environment=pd.DataFrame(
            [{"item": name, "value": value} for name, value in environment.items()]
        ),
        inputs=inputs_summary(files, inputs, project),
    )
