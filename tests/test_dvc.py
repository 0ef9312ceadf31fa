"""The DVC pipeline, reproduced in a temporary copy of the repository.

The copy has what a fresh clone has (tracked files, no DVC cache, no data), so `dvc repro`
runs every stage; it must write exactly the committed dvc.lock and data/metrics.json: the
same study gives the same bytes on any machine and any day.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

STAGES = ("simulate", "clean", "derive", "fit", "report")


def run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory):
    """A fresh clone-like copy (tracked files only), reproduced once with the shipped params."""
    copy = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    run(["git", "init", "-q"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "copy"], copy, env)
    dvc = [sys.executable, "-m", "dvc"]
    first = run([*dvc, "repro"], copy, env)
    return copy, env, dvc, first


@pytest.mark.slow
def test_repro_from_a_fresh_copy_runs_every_stage(pipeline_copy):
    copy, _, _, first = pipeline_copy
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first
    assert (copy / "reports" / "study_report.html").is_file()
    metrics = json.loads((copy / "data" / "metrics.json").read_text())
    assert (
        metrics["participants"]
        == yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["simulate"]["participants"]
    )


@pytest.mark.slow
def test_repro_from_a_fresh_copy_writes_the_committed_lock_and_metrics(pipeline_copy):
    """Every hash in dvc.lock (data, models, reports) and every metric, byte for byte."""
    copy, _, _, _ = pipeline_copy
    for name in ("dvc.lock", "data/metrics.json"):
        reproduced, committed = (root / name for root in (copy, PROJECT_ROOT))
        assert reproduced.read_text() == committed.read_text(), (
            f"{name} differs from the committed one: run `dvc repro` and commit {name}"
        )


@pytest.mark.slow
def test_a_report_parameter_reruns_only_the_report(pipeline_copy):
    copy, env, dvc, _ = pipeline_copy
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-q", "--allow-empty", "-m", "reproduced"], copy, env)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["report"]["figure_dpi"] = 90
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = run([*dvc, "repro"], copy, env)
    assert "Running stage 'report'" in second
    for stage in STAGES[:-1]:
        assert f"Stage '{stage}' didn't change, skipping" in second
    diff = run([*dvc, "params", "diff"], copy, env)
    assert "report.figure_dpi" in diff and "100" in diff and "90" in diff
    shown = run([*dvc, "metrics", "show"], copy, env)
    assert "cox_concordance" in shown
