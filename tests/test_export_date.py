"""The export date is a fact of the export: stated by it or configured, never the run day."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace

import pytest
import yaml

from analysis.cli import run_clean, run_simulate
from analysis.errors import DataError
from analysis.io import (
    EXPORT_INFO_FILE,
    read_raw_study,
    resolve_export_date,
    stated_export_dates,
)
from analysis.params import CleanParams
from analysis.simulate import simulate_study

PARAMS_FILE = "params.yaml"


def test_the_simulator_states_an_export_date_after_every_data_day(
    tmp_path, params, simulated_design
):
    study = simulate_study(60, seed=3, design=replace(simulated_design, follow_up_weeks=20))
    for frame, column in (
        (study.tables["diary"], "date"),
        (study.tables["assessments"], "date"),
        (study.tables["participants"], "enrolled_on"),
    ):
        assert frame[column].max() < study.export_date.isoformat()
    run_simulate(tmp_path, 60, 3, 0.0, 20, "csv", params["derive"])
    stated = json.loads((tmp_path / EXPORT_INFO_FILE).read_text())
    assert stated == {"export_date": study.export_date.isoformat()}


def test_the_same_export_cleans_to_the_same_bytes_on_any_day(tmp_path, params):
    """Nothing in clean reads the clock: the date used is the one the export states."""
    run_simulate(tmp_path / "raw", 40, 5, 0.05, 12, "csv", params["derive"])
    params_file = tmp_path / PARAMS_FILE
    params_file.write_text(yaml.safe_dump(params))
    clean = CleanParams.model_validate(params["clean"])
    report = run_clean(tmp_path / "raw", tmp_path / "clean", None, clean, params_file)
    stated = json.loads((tmp_path / "raw" / EXPORT_INFO_FILE).read_text())["export_date"]
    assert report["as_of"] == stated
    assert stated in (tmp_path / "clean" / "cleaning_report.md").read_text()


def test_no_stated_export_date_is_a_one_line_error_saying_where_to_state_it(tmp_path, params):
    run_simulate(tmp_path / "raw", 10, 5, 0.0, 12, "csv", params["derive"])
    (tmp_path / "raw" / EXPORT_INFO_FILE).unlink()
    with pytest.raises(DataError, match="export date is not stated") as error:
        clean = CleanParams.model_validate(params["clean"])
        run_clean(tmp_path / "raw", tmp_path / "clean", None, clean, tmp_path / "p.yaml")
    assert "\n" not in str(error.value)
    assert "clean.export_date" in str(error.value) and "mapping file" in str(error.value)
    assert not (tmp_path / "clean").exists()


def test_configured_date_is_used_when_the_export_states_none(tmp_path, params):
    run_simulate(tmp_path / "raw", 10, 5, 0.0, 12, "csv", params["derive"])
    (tmp_path / "raw" / EXPORT_INFO_FILE).unlink()
    clean_params = CleanParams.model_validate({**params["clean"], "export_date": "2030-01-31"})
    report = run_clean(tmp_path / "raw", tmp_path / "clean", None, clean_params, tmp_path / "p")
    assert report["as_of"] == "2030-01-31"


def test_mapping_states_the_export_date(tmp_path, params):
    run_simulate(tmp_path / "raw", 10, 5, 0.0, 12, "csv", params["derive"])
    (tmp_path / "raw" / EXPORT_INFO_FILE).unlink()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("export_date: 2031-02-03\n")
    assert read_raw_study(tmp_path / "raw", mapping).stated_export_dates == {
        str(mapping): datetime.date(2031, 2, 3)
    }


def test_two_different_stated_dates_are_refused_with_both_named():
    stated = {"mapping.yaml": datetime.date(2025, 1, 1), "export.json": datetime.date(2025, 2, 1)}
    with pytest.raises(DataError, match="stated differently") as error:
        resolve_export_date(stated, None, PARAMS_FILE)
    assert "mapping.yaml: 2025-01-01" in str(error.value)
    assert "export.json: 2025-02-01" in str(error.value)
    same = {"export.json": datetime.date(2025, 2, 1)}
    assert resolve_export_date(same, datetime.date(2025, 2, 1), PARAMS_FILE) == datetime.date(
        2025, 2, 1
    )


@pytest.mark.parametrize("bad", ["31/12/2025", "2025-02-30", "soon"])
def test_an_export_date_that_is_not_iso_is_refused(tmp_path, bad):
    (tmp_path / EXPORT_INFO_FILE).write_text(json.dumps({"export_date": bad}))
    with pytest.raises(DataError, match="not a YYYY-MM-DD date") as error:
        stated_export_dates(tmp_path, None, None)
    assert EXPORT_INFO_FILE in str(error.value)
