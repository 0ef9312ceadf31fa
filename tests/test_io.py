"""Readers (CSV, XLSX, parquet, mapping files) and atomic writers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.clean import SOURCE_ROW
from analysis.errors import DataError
from analysis.io import EXPORT_INFO_FILE, read_raw_study, read_table_file, write_atomic, write_csv
from analysis.schema import CANONICAL_TABLES, Diary, Participants, column_names

PARTICIPANT = dict(
    participant_id="P001",
    site="site_A",
    enrolled_on="2025-01-06",
    age_years="40",
    sex="female",
    bmi="24",
    severity="mild",
    symptom_months="3",
    underlying_condition="none",
    baseline_sitting_hours="8",
    withdrawn_on="",
    withdrawal_reason="",
)
DIARY = dict(
    participant_id="P001",
    date="2025-01-07",
    sitting_hours="8",
    sitting_breaks="3",
    pain_low_back="4",
    pain_hip="3",
    pain_knee="1",
    session_done="true",
)


def write_canonical_study(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    pd.DataFrame([PARTICIPANT]).to_csv(folder / "participants.csv", index=False)
    pd.DataFrame([DIARY, DIARY | {"date": "2025-01-08"}]).to_csv(folder / "diary.csv", index=False)
    for table in ("sessions", "assessments"):
        pd.DataFrame(columns=column_names(CANONICAL_TABLES[table])).to_csv(
            folder / f"{table}.csv", index=False
        )
    (folder / EXPORT_INFO_FILE).write_text('{"export_date": "2025-06-30"}')


def test_csv_cells_stay_text_and_rows_count_like_a_spreadsheet(tmp_path):
    path = tmp_path / "diary.csv"
    path.write_text("participant_id,pain_hip\n007,03\nP2,NA\n")
    frame = read_table_file(path)
    assert frame["participant_id"].tolist() == ["007", "P2"]
    assert frame["pain_hip"].tolist() == ["03", "NA"]
    assert frame[SOURCE_ROW].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x00\x01\x02PK\x03\x04" * 10, "not a text CSV"),
        (b"a,b,c\n1,2,3\n4,5\n", "row 3"),
        (b'a,b\n1,"unterminated\n', "malformed CSV"),
    ],
)
def test_broken_csv_gets_a_one_line_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "diary.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_table_file(path)
    text = str(error.value)
    assert message in text and "diary.csv" in text and "\n" not in text


def test_missing_file_and_missing_required_column(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_table_file(tmp_path / "nope.csv")
    write_canonical_study(tmp_path / "raw")
    pd.DataFrame([{k: v for k, v in DIARY.items() if k != "date"}]).to_csv(
        tmp_path / "raw" / "diary.csv", index=False
    )
    with pytest.raises(DataError, match=r"diary.csv, row 1, column 'date': required column"):
        read_raw_study(tmp_path / "raw")


def test_mapping_reads_xlsx_and_parquet_with_other_names_and_units(tmp_path):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    baseline = pd.DataFrame([PARTICIPANT]).rename(
        columns={"participant_id": "Subject ID", "baseline_sitting_hours": "Sitting per day"}
    )
    baseline["Sitting per day"] = 480
    baseline["enrolled_on"] = pd.Timestamp("2025-01-06")
    baseline.to_excel(raw / "baseline.xlsx", sheet_name="Baseline", index=False)
    log = pd.DataFrame([DIARY]).rename(columns={"sitting_hours": "sitting_min"})
    log["sitting_min"] = "420"
    log.to_parquet(raw / "log.parquet")
    mapping = {
        "tables": {
            "participants": {
                "file": "baseline.xlsx",
                "sheet": "Baseline",
                "columns": {
                    "participant_id": "Subject ID",
                    "baseline_sitting_hours": "Sitting per day",
                },
                "units": {"baseline_sitting_hours": "minutes"},
            },
            "diary": {
                "file": "log.parquet",
                "columns": {"sitting_hours": "sitting_min"},
                "units": {"sitting_hours": "minutes"},
            },
        }
    }
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    study = read_raw_study(raw, tmp_path / "mapping.yaml")
    tables, files = study.tables, study.files
    assert files["participants"] == "baseline.xlsx"
    people = tables["participants"].iloc[0]
    assert people[Participants.participant_id] == "P001"
    assert people[Participants.enrolled_on] == "2025-01-06"
    assert people[Participants.baseline_sitting_hours] == "480 min"
    assert tables["diary"][Diary.sitting_hours].tolist() == ["420 min"]


def test_example_mapping_in_docs_is_valid_yaml_naming_every_table():
    docs = Path(__file__).resolve().parents[1] / "docs"
    mapping = yaml.safe_load((docs / "example-mapping.yaml").read_text())
    assert set(mapping["tables"]) == set(CANONICAL_TABLES)
    redcap = yaml.safe_load((docs / "example-redcap-mapping.yaml").read_text())["redcap"]
    assert set(redcap["tables"]) == set(CANONICAL_TABLES)


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.csv"

    def fail(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []
    write_csv(pd.DataFrame({"a": [1]}), target)
    assert target.read_text() == "a\n1\n"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_either_read_or_raise_our_error(tmp_path, content):
    path = tmp_path / "random.csv"
    path.write_bytes(content)
    try:
        frame = read_table_file(path)
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert SOURCE_ROW in frame.columns
