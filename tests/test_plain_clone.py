"""A user's clone has no ../shared: the tests that read it skip there, and fail only under CI.

The suite runs beside ../shared in CI, so without this test a fixture that errors on a plain
clone (as 51 tests once did) would go unnoticed. It re-runs, in a subprocess, every test that
reads ../shared (the `shared` marker, set in conftest.py) with the shared folder hidden.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SHARED_FIXTURE_NAMES

TESTS = PROJECT_ROOT / "tests"


def files_using_shared() -> list[str]:
    """Test modules that request a shared fixture (collecting only these keeps the run short)."""
    return sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in TESTS.glob("test_*.py")
        if any(name in path.read_text() for name in SHARED_FIXTURE_NAMES)
    )


def run_shared_tests(shared_dir: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["GA_REHAB_SHARED_DIR"] = str(shared_dir)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "shared", "-rs"]
        + files_using_shared(),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_without_shared_every_shared_test_skips_with_its_reason(tmp_path):
    done = run_shared_tests(tmp_path / "no-shared-here", ci=False)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\d+ skipped", summary) and "passed" not in summary, summary
    assert "error" not in summary and "failed" not in summary, summary
    assert "a plain clone has no ../shared" in done.stdout


@pytest.mark.slow
def test_without_shared_under_ci_the_shared_tests_fail(tmp_path):
    done = run_shared_tests(tmp_path / "no-shared-here", ci=True)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "CI runs beside ../shared" in done.stdout


def test_only_conftest_knows_where_shared_is():
    """Every test reaches ../shared through conftest's fixtures, so the marker finds them all."""
    for path in TESTS.glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        for needle in ("../shared", "SHARED_DIR", "SHARED_FIXTURES", "PROJECT_ROOT.parent"):
            assert needle not in text, f"{path.name} uses {needle}: use a conftest fixture"
