"""The ga-rehab command: stages write their contract files; failures are one line, non-zero."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis import io
from analysis.cli import app
from analysis.model_tables import MODEL_TABLES
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
            "--params",
            PARAMS,
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


# --- stage outputs: whole, one writer, full disks, shared folders ---------------------------


def clean_into(runner, tmp_path, out_name="interim"):
    return invoke(
        runner, "clean", "--raw", tmp_path / "raw", "--out", tmp_path / out_name, "--params", PARAMS
    )


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def hidden_leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


def full_disk_after(calls: int):
    """A writer that works `calls` times, then fails as a full disk does."""
    count = {"n": 0}

    def check() -> None:
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return check


def test_a_full_disk_is_one_line_and_the_previous_output_stays_whole(runner, tmp_path, monkeypatch):
    write_canonical_study(tmp_path / "raw")
    assert clean_into(runner, tmp_path).exit_code == 0
    before = folder_bytes(tmp_path / "interim")
    rows = pd.read_csv(tmp_path / "raw" / "diary.csv")
    pd.concat([rows, rows.assign(date="2025-01-09")]).to_csv(
        tmp_path / "raw" / "diary.csv", index=False
    )
    check = full_disk_after(1)
    original = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        check()
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    result = clean_into(runner, tmp_path)
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert "\n" not in message and "No space left on device" in message
    assert "previous output is unchanged" in message and "free disk space" in message
    assert folder_bytes(tmp_path / "interim") == before
    assert hidden_leftovers(tmp_path) == []


def test_a_second_writer_is_refused_and_told_who_holds_the_folder(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    assert clean_into(runner, tmp_path).exit_code == 0
    before = folder_bytes(tmp_path / "interim")
    with io.output_lock(tmp_path / ".interim.lock", "clean"):
        result = clean_into(runner, tmp_path)
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "`clean`" in message
    assert folder_bytes(tmp_path / "interim") == before
    assert clean_into(runner, tmp_path).exit_code == 0  # released


def test_leftovers_of_a_killed_writer_are_cleared_and_the_swap_recovered(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    assert clean_into(runner, tmp_path).exit_code == 0
    # Killed between the two renames of a swap: the old output retired, a staging folder half
    # written, the lock file left (its OS lock died with the process).
    os.replace(tmp_path / "interim", tmp_path / ".interim.old-dead")
    (tmp_path / ".interim.staging-dead").mkdir()
    (tmp_path / ".interim.staging-dead" / "diary.parquet").write_bytes(b"half")
    (tmp_path / ".interim.lock").write_text("`clean`, pid 1 on elsewhere")
    assert clean_into(runner, tmp_path).exit_code == 0
    assert {p.name for p in (tmp_path / "interim").iterdir()} == CLEAN_OUTPUTS
    assert hidden_leftovers(tmp_path) == []


def test_outputs_follow_the_umask(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    previous = os.umask(0o022)
    try:
        assert clean_into(runner, tmp_path).exit_code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "interim").stat().st_mode) == 0o755
    for path in (tmp_path / "interim").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_fit_and_report_outputs_are_staged_whole(runner, tmp_path, monkeypatch):
    from analysis import fit as fit_module
    from analysis.report import render as report_module

    processed, models, metrics = tmp_path / "processed", tmp_path / "models", tmp_path / "m.json"
    write_canonical_study(tmp_path / "raw")
    assert clean_into(runner, tmp_path).exit_code == 0
    invoke(
        runner, "derive", "--clean", tmp_path / "interim", "--out", processed, "--params", PARAMS
    )
    recovery = pd.read_parquet(processed / "recovery.parquet")
    pd.concat([recovery.assign(participant_id=f"P{i}") for i in range(3)]).assign(
        recovered=True
    ).to_parquet(processed / "recovery.parquet")
    outputs = fit_module.FitOutputs()
    # Two tables as the fit-to-report contract declares them (the writer checks).
    outputs.tables = {
        name: pd.DataFrame({column: [1] for column in MODEL_TABLES[name]})
        for name in ("km_at_risk", "km_medians")
    }
    outputs.metrics = {"participants": 3}
    monkeypatch.setattr(fit_module, "run_models", lambda *args, **kwargs: outputs)
    fit_args = ("fit", "--processed", processed, "--models", models, "--metrics", metrics)
    assert invoke(runner, *fit_args, "--params", PARAMS).exit_code == 0
    assert {p.name for p in models.iterdir()} == {"km_at_risk.csv", "km_medians.csv"}
    before = folder_bytes(models), metrics.read_bytes()
    check = full_disk_after(1)
    original = pd.DataFrame.to_csv

    def to_csv(self, *args, **kwargs):
        check()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    outputs.metrics = {"participants": 99}
    result = invoke(runner, *fit_args, "--params", PARAMS)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert (folder_bytes(models), metrics.read_bytes()) == before
    monkeypatch.setattr(pd.DataFrame, "to_csv", original)

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "study_report.html").write_text("old")

    def render_all(*, reports, **kwargs):
        (reports / "study_report.html").write_text("new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report_module, "render_all", render_all)
    result = invoke(runner, "report", "--data", tmp_path, "--reports", reports, "--params", PARAMS)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert (reports / "study_report.html").read_text() == "old"
    assert hidden_leftovers(reports) == []


def test_fit_on_a_one_person_study_says_what_to_do(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    assert clean_into(runner, tmp_path).exit_code == 0
    processed = tmp_path / "processed"
    invoke(
        runner, "derive", "--clean", tmp_path / "interim", "--out", processed, "--params", PARAMS
    )
    result = invoke(
        runner,
        "fit",
        "--processed",
        processed,
        "--models",
        tmp_path / "models",
        "--metrics",
        tmp_path / "metrics.json",
        "--params",
        PARAMS,
    )
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert message.startswith("error: nothing to fit: the study has 1 participant(s)")
    assert "cleaning report" in message and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "min_cell_size=ten",
            "error: --param: report.min_cell_size = 'ten' is not allowed: a whole number >= 3",
        ),
        ("min_cell_size=0", "report.min_cell_size = 0 is not allowed: a whole number >= 3"),
        ("site_reports=maybe", "report.site_reports = 'maybe' is not allowed: true or false"),
        ("min_cel_size=3", "report.min_cel_size = 3 is not allowed: not a key of report"),
    ],
)
def test_report_parameters_of_the_wrong_type_are_one_line(runner, tmp_path, override, expected):
    result = invoke(
        runner,
        "report",
        "--data",
        tmp_path,
        "--reports",
        tmp_path / "reports",
        "--notebooks",
        PROJECT_ROOT / "notebooks",
        "--params",
        PARAMS,
        "--param",
        override,
    )
    assert result.exit_code == 1
    assert expected in " ".join(result.output.split())


def test_columns_no_table_reads_are_named_in_the_cleaning_report(runner, tmp_path):
    write_canonical_study(tmp_path / "raw")
    people = pd.read_csv(tmp_path / "raw" / "participants.csv", dtype=str)
    people = people.rename(columns={"withdrawn_on": "Withdrawal Date", "bmi": " BMI "})
    people.to_csv(tmp_path / "raw" / "participants.csv", index=False)
    result = clean_into(runner, tmp_path)
    assert result.exit_code == 0, result.output
    assert "participants: columns not used: Withdrawal Date" in " ".join(result.output.split())
    report = json.loads((tmp_path / "interim" / "cleaning_report.json").read_text())
    assert report["ignored_columns"]["participants"] == ["Withdrawal Date"]
    assert "`Withdrawal Date`" in (tmp_path / "interim" / "cleaning_report.md").read_text()
    kept = pd.read_parquet(tmp_path / "interim" / "participants.parquet")
    assert kept["bmi"].tolist() == [24.0]  # ' BMI ' is bmi


def test_the_fit_stage_writes_under_data_and_reports_holds_only_what_is_shared(
    runner, tmp_path, monkeypatch
):
    """The fit stage's tables (numbers at risk down to 1) and metrics go beside the data; the
    report stage reads them there; `reports/` gets only the reports."""
    from analysis import cli

    calls = {}

    def record(name, result=None):
        def stand_in(*args, **kwargs):
            calls[name] = [*args, *kwargs.values()]
            return result

        return stand_in

    for stage in ("run_simulate", "run_clean", "run_fit", "run_report"):
        monkeypatch.setattr(cli, stage, record(stage, []))
    monkeypatch.setattr(cli, "run_derive", record("run_derive", SimpleNamespace(recovery=None)))
    for printer in ("print_cleaning_summary", "print_cohort_summary", "print_fit_summary"):
        monkeypatch.setattr(cli, printer, lambda *args: None)
    monkeypatch.chdir(tmp_path)
    data, reports = Path("study"), Path("shared")
    result = invoke(runner, "run", "--data", data, "--reports", reports, "--params", PARAMS)
    assert result.exit_code == 0, result.output
    assert calls["run_fit"][1:3] == [data / "models", data / "metrics.json"]
    assert calls["run_report"][2:4] == [data / "models", reports]
    assert invoke(runner, "fit", "--processed", "p", "--params", PARAMS).exit_code == 0
    assert calls["run_fit"][1:3] == [Path("data/models"), Path("data/metrics.json")]
    assert invoke(runner, "report", "--data", data, "--params", PARAMS).exit_code == 0
    assert calls["run_report"][2:4] == [data / "models", Path("reports")]
    models = Path("elsewhere")
    assert invoke(runner, "report", "--models", models, "--params", PARAMS).exit_code == 0
    assert calls["run_report"][2] == models
