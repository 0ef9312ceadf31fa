"""Shared fixtures: paths to the repository's params and to the shared third-party fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from analysis.simulate import StudyDesign, study_design

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The third-party exports beside the project (../shared), which a plain clone does not have.
# GA_REHAB_SHARED_DIR points elsewhere (the plain-clone test uses it to hide them).
SHARED_DIR = Path(os.environ.get("GA_REHAB_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
SHARED_FIXTURES = SHARED_DIR / "fixtures"


def shared_or_skip(path: Path) -> Path:
    """`path` under ../shared; skipped with the reason where absent, failed under CI=true."""
    if path.exists():
        return path
    reason = f"shared fixtures not found at {path} (a plain clone has no ../shared)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI runs beside ../shared")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def params() -> dict:
    """The project's params.yaml as a dict (tests use the shipped defaults)."""
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def simulated_design(params) -> StudyDesign:
    """The simulated study's design as params.yaml ships it (derive block, simulate follow-up)."""
    return study_design(params["derive"], params["simulate"]["follow_up_weeks"])


@pytest.fixture(scope="session")
def redcap_fixtures() -> Path:
    """The real REDCap exports in ../shared/fixtures/redcap, read in place."""
    return shared_or_skip(SHARED_FIXTURES / "redcap")


SHARED_FIXTURE_NAMES = ("redcap_fixtures",)


def pytest_collection_modifyitems(items):
    """Tests that read ../shared get the `shared` marker (test_plain_clone.py runs them alone)."""
    for item in items:
        if set(SHARED_FIXTURE_NAMES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)
