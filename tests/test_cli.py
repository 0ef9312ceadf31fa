"""The ga-rehab command: stages write their contract files; failures are one line, non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.cli import app
from tests.conftest import PROJECT_ROOT
from tests.test_io import write_canonical_study

PARAMS = PROJECT_ROOT / "params.yaml"
CLEAN_OUTPUTS = {
    "participants.parquet",
    "diary.parquet",
    "sessions.parquet",
    "assessments.parquet",
    "quarantine.parquet",
    "cleaning_report.json",
    "cleaning_report.md",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [*map(str, args)], catch_exceptions=False)


def test_clean_then_derive_write_the_contract_files(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    result = invoke(
        runner,
        "clean",
        "--raw",
        tmp_path / "raw",
        "--out",
        tmp_path / "interim",
        "--params",
        PARAMS,
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "interim").iterdir()} == CLEAN_OUTPUTS
    report = json.loads((tmp_path / "interim" / "cleaning_report.json").read_text())
    assert report["tables"]["diary"]["kept"] == 2
    result = invoke(
        runner,
        "derive",
        "--clean",
        tmp_path / "interim",
        "--out",
        tmp_path / "processed",
        "--params",
        PARAMS,
    )
    assert result.exit_code == 0, result.output
    recovery = pd.read_parquet(tmp_path / "processed" / "recovery.parquet")
    assert recovery["participant_id"].tolist() == ["P001"]


def test_bad_input_is_one_line_non_zero_and_leaves_no_outputs(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    (tmp_path / "raw" / "diary.csv").write_bytes(b"participant_id,date\nP001,2025-01-0")
    (tmp_path / "raw" / "sessions.csv").write_bytes(b"")
    result = invoke(
        runner,
        "clean",
        "--raw",
        tmp_path / "raw",
        "--out",
        tmp_path / "interim",
        "--params",
        PARAMS,
    )
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("error:") and "Traceback" not in message
    assert not (tmp_path / "interim").exists()


def test_missing_params_and_missing_stage_inputs_are_explained(runner, tmp_path):
    result = invoke(
        runner,
        "derive",
        "--clean",
        tmp_path / "nothing",
        "--out",
        tmp_path / "o",
        "--params",
        tmp_path / "missing.yaml",
    )
    assert result.exit_code == 1 and "params file not found" in result.output
    result = invoke(
        runner,
        "derive",
        "--clean",
        tmp_path / "nothing",
        "--out",
        tmp_path / "o",
        "--params",
        PARAMS,
    )
    assert result.exit_code == 1 and "run `ga-rehab clean` first" in result.output


def test_help_lists_every_stage(runner):
    result = invoke(runner, "--help")
    for command in ("simulate", "clean", "derive", "run"):
        assert command in result.output


def test_paths_come_from_options_not_the_working_directory():
    source = (Path(__file__).resolve().parents[1] / "analysis").rglob("*.py")
    for path in source:
        text = path.read_text()
        assert "Path.cwd(" not in text and "os.getcwd(" not in text, path


def test_a_redcap_export_cleans_like_the_same_study_in_csv(runner, tmp_path):
    """`simulate --format redcap` plus the documented mapping gives the CSV study's tables."""
    for output_format in ("csv", "redcap"):
        result = invoke(
            runner,
            "simulate",
            "--out",
            tmp_path / output_format,
            "--participants",
            "25",
            "--seed",
            "5",
            "--format",
            output_format,
        )
        assert result.exit_code == 0, result.output
    mapping = PROJECT_ROOT / "docs" / "example-redcap-mapping.yaml"
    for source, extra in (("csv", []), ("redcap", ["--mapping", mapping])):
        result = invoke(
            runner,
            "clean",
            "--raw",
            tmp_path / source,
            "--out",
            tmp_path / f"clean_{source}",
            "--params",
            PARAMS,
            *extra,
        )
        assert result.exit_code == 0, result.output
    for table in ("participants", "diary", "sessions", "assessments"):
        from_csv = pd.read_parquet(tmp_path / "clean_csv" / f"{table}.parquet")
        from_redcap = pd.read_parquet(tmp_path / "clean_redcap" / f"{table}.parquet")
        pd.testing.assert_frame_equal(from_redcap, from_csv, check_exact=False)
