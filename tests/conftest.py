"""Shared fixtures: paths to the repository's params and to the shared third-party fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def params() -> dict:
    """The project's params.yaml as a dict (tests use the shipped defaults)."""
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def redcap_fixtures() -> Path:
    """The real REDCap exports in ../shared/fixtures/redcap, read in place."""
    path = SHARED_FIXTURES / "redcap"
    if not path.is_dir():
        pytest.fail(f"shared fixtures missing at {path}")
    return path
