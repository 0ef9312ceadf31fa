"""Readers (CSV, XLSX, parquet, mapping files) and atomic writers."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import io
from analysis.clean import SOURCE_ROW
from analysis.errors import DataError
from analysis.io import (
    EXPORT_INFO_FILE,
    BackgroundParquetWrites,
    read_raw_study,
    read_table_file,
    write_atomic,
    write_csv,
    write_parquet,
)
from analysis.schema import CANONICAL_TABLES, Diary, Participants, column_names
from analysis.testing import raw_diary, raw_participant

# test_cli reads this study back and checks its bmi.
PARTICIPANT = raw_participant(bmi="24")
DIARY = raw_diary()


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
        (b" \r\n\t\n", "the file is empty"),
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


# --- exports as they really come ------------------------------------------------------------


def write_rows(path: Path, header: list[str], rows: list[list[str]], **options) -> None:
    text = "\n".join(",".join(cells) for cells in [header, *rows]) + "\n"
    path.write_bytes(text.encode(options.get("encoding", "utf-8")))


def header_variant(name: str, draw) -> str:
    """The same column name as a person might type it: case, outer spaces, space for _."""
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    spaced = cased.replace("_", draw(st.sampled_from(["_", " ", "-", "  "])))
    return draw(st.sampled_from(["", " ", "  "])) + spaced + draw(st.sampled_from(["", " "]))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_column_is_found_whatever_its_case_and_spacing(tmp_path, data):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    header = [header_variant(name, data.draw) for name in PARTICIPANT]
    values = {**PARTICIPANT, "withdrawn_on": "2025-03-01", "withdrawal_reason": "moved"}
    pd.DataFrame([list(values.values())], columns=header).to_csv(
        raw / "participants.csv", index=False
    )
    people = read_raw_study(raw).tables["participants"].iloc[0]
    for name, value in values.items():
        assert people[name] == value, name


def test_two_columns_that_read_as_one_are_refused(tmp_path):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    frame = pd.DataFrame([PARTICIPANT]).assign(BMI="30")
    frame.to_csv(raw / "participants.csv", index=False)
    with pytest.raises(DataError, match=r"column 'bmi'.*'bmi', 'BMI' all read as 'bmi'"):
        read_raw_study(raw)


def test_a_repeated_header_name_is_refused_with_its_name(tmp_path):
    path = tmp_path / "diary.csv"
    path.write_text("participant_id,pain_hip,pain_hip\nP1,3,4\n")
    with pytest.raises(DataError, match=r"row 1, column 'pain_hip': the header names"):
        read_table_file(path)


def test_byte_order_mark_and_leading_zeros_keep_ids_as_text(tmp_path):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    text = pd.DataFrame([PARTICIPANT | {"participant_id": "00017"}]).to_csv(index=False)
    (raw / "participants.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    people = read_raw_study(raw).tables["participants"]
    assert people[Participants.participant_id].tolist() == ["00017"]


@pytest.mark.parametrize("coded", [False, True])
def test_source_row_counts_blank_lines_like_a_spreadsheet(tmp_path, coded):
    path = tmp_path / "diary.csv"
    path.write_text("participant_id,pain_hip\nP1,1\n\nP2,2\n,\nP3,3\n  , \n , 4\n")
    frame = read_table_file(path, coded=coded)
    # Only delimiters and spaces: a blank row; an empty id beside a value is data.
    assert frame["participant_id"].astype(str).str.strip().tolist() == ["P1", "P2", "P3", ""]
    assert frame[SOURCE_ROW].tolist() == [2, 4, 6, 8]


def test_large_file_with_multi_line_quoted_notes_is_read(tmp_path):
    path = tmp_path / "participants.csv"
    note = '"Reports pain, ""sharp"" at times.\nSecond line of the note.\n' + "x" * 200_000 + '"'
    rows = [f"P{i},{note if i % 50 == 0 else 'plain'}" for i in range(400)]
    path.write_text("participant_id,notes\n" + "\n".join(rows) + "\nP400,last\n")
    assert path.stat().st_size > 1 << 20
    frame = read_table_file(path)
    assert len(frame) == 401
    assert frame["notes"].iloc[0].startswith('Reports pain, "sharp"')
    assert frame[SOURCE_ROW].iloc[-1] == 402  # one spreadsheet row per record


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_other_delimiters_are_read(tmp_path, delimiter):
    path = tmp_path / "diary.csv"
    path.write_text(f"participant_id{delimiter}sitting_hours\nP1{delimiter}7,5\n")
    assert read_table_file(path)["sitting_hours"].tolist() == ["7,5"]


def test_windows_1252_needs_its_encoding_declared_and_then_reads(tmp_path):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    rows = [PARTICIPANT | {"participant_id": f"P{i}"} for i in range(3)]
    rows[2]["site"] = "Hôpital Saint-Éloi – Nord"
    text = pd.DataFrame(rows).to_csv(index=False)
    (raw / "participants.csv").write_bytes(text.encode("cp1252"))
    with pytest.raises(DataError) as error:
        read_raw_study(raw)
    message = str(error.value)
    assert "row 4" in message and "0xf4" in message and "encoding: cp1252" in message
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {"tables": {"participants": {"file": "participants.csv", "encoding": "cp1252"}}}
        )
    )
    people = read_raw_study(raw, mapping).tables["participants"]
    assert people["site"].iloc[2] == "Hôpital Saint-Éloi – Nord"


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["5'10\" tall"], ["5'10\" tall"]),
        (['said "no" twice'], ['said "no" twice']),
        # Text after a closing quote: read as a spreadsheet shows it.
        (['"quoted" then text'], ["quoted then text"]),
        (['"quoted" then text', "5'10\""], ["quoted then text", "5'10\""]),
    ],
)
def test_a_stray_quote_is_read_as_a_spreadsheet_reads_it(tmp_path, cells, expected):
    path = tmp_path / "participants.csv"
    rows = "".join(f"P{i},{cell}\n" for i, cell in enumerate(cells))
    path.write_text(f"participant_id,notes\nPa,fine\n{rows}Pz,fine\n")
    assert read_table_file(path)["notes"].tolist() == ["fine", *expected, "fine"]


@pytest.mark.parametrize("tail", ['"never closes\n', '"never closes', 'a "stray\nP4,"open'])
def test_a_quote_left_open_at_the_end_is_a_truncated_file_with_its_row(tmp_path, tail):
    path = tmp_path / "participants.csv"
    path.write_text(f"participant_id,notes\nP1,fine\nP2,fine\nP3,{tail}")
    with pytest.raises(DataError, match=r"row \d: malformed CSV.*truncated"):
        read_table_file(path)


@pytest.mark.parametrize("name", ["../elsewhere/participants.csv", "/etc/passwd", "link.csv"])
def test_mapping_files_outside_the_raw_folder_are_refused(tmp_path, name):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "participants.csv").write_text("participant_id\nX\n")
    (raw / "link.csv").symlink_to(tmp_path / "elsewhere" / "participants.csv")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"tables": {"participants": {"file": name}}}))
    with pytest.raises(DataError, match="outside the raw data folder"):
        read_raw_study(raw, mapping)


def test_a_mapped_column_missing_from_the_file_is_named(tmp_path):
    raw = tmp_path / "raw"
    write_canonical_study(raw)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {"tables": {"participants": {"file": "participants.csv", "columns": {"bmi": "BMI_kg"}}}}
        )
    )
    with pytest.raises(DataError, match=r"column 'BMI_kg'.*mapped to bmi, is not in the file"):
        read_raw_study(raw, mapping)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    notes=st.lists(
        st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40), max_size=6
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"]),
)
def test_any_text_in_any_declared_encoding_round_trips(tmp_path, notes, encoding):
    ids = [f"P{i}" for i in range(len(notes))]
    try:
        payload = pd.DataFrame({"participant_id": ids, "notes": notes}).to_csv(index=False)
        payload = payload.encode(encoding)
    except UnicodeEncodeError:
        return  # the text has characters this encoding cannot hold
    path = tmp_path / "participants.csv"
    path.write_bytes(payload)
    declared = encoding if encoding in ("cp1252", "latin-1") else None
    frame = read_table_file(path, encoding=declared)
    assert frame["participant_id"].tolist() == ids
    assert frame["notes"].tolist() == notes


def test_xlsx_rows_keep_their_sheet_numbers_and_ids_stay_text(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in (["Participant ID", "pain_hip"], ["00017", 3], [None, None], ["P2", 4]):
        sheet.append(row)
    book.save(tmp_path / "diary.xlsx")
    frame = read_table_file(tmp_path / "diary.xlsx")
    assert frame["Participant ID"].tolist() == ["00017", "P2"]
    assert frame["pain_hip"].tolist() == ["3", "4"]
    assert frame[SOURCE_ROW].tolist() == [2, 4]
    sheet["C1"] = "pain_hip"
    book.save(tmp_path / "twice.xlsx")
    with pytest.raises(DataError, match="column 'pain_hip': the header names this column twice"):
        read_table_file(tmp_path / "twice.xlsx")


@pytest.mark.parametrize(
    ("strengths", "expected"),
    [
        (["1.000", "750"], [None, 750.0]),  # ";" file, no proof: 1.000 could be either
        (["1.000", "120,5"], [1000.0, 120.5]),  # the column proves the decimal comma
        (["1.5", "120"], [1.5, 120.0]),  # the column proves the decimal point
    ],
)
def test_a_semicolon_file_proves_no_decimal_point(tmp_path, params, strengths, expected):
    from analysis.clean import clean_study

    raw = tmp_path / "raw"
    write_canonical_study(raw)
    frame = pd.DataFrame(
        [
            dict(
                participant_id="P001",
                date=f"2025-01-{10 + i}",
                activation_score="4",
                hip_abduction_n=value,
                single_leg_balance_s="12",
                trendelenburg_positive="true",
                phase_assigned="1",
                clinician_recovered="false",
            )
            for i, value in enumerate(strengths)
        ]
    )
    frame.to_csv(raw / "assessments.csv", index=False, sep=";")
    study = read_raw_study(raw)
    result = clean_study(study.tables, study.files, params["clean"], date(2026, 1, 1))
    kept = result.tables["assessments"]["hip_abduction_n"].tolist()
    assert [None if pd.isna(v) else v for v in kept] == expected
    ambiguous = result.quarantine["rule"].eq("ambiguous_number").sum()
    assert ambiguous == expected.count(None)


def test_background_parquet_writes_give_the_same_files(tmp_path):
    frame = pd.DataFrame({"id": pd.array(["P1", None], dtype="string[pyarrow]"), "x": [1.5, 2.0]})
    frames = {"a": frame, "b": frame.iloc[::-1].reset_index(drop=True)}
    for name, each in frames.items():
        write_parquet(each, tmp_path / f"direct_{name}.parquet")
    with BackgroundParquetWrites() as writes:
        for name, each in frames.items():
            writes.write(each, tmp_path / f"{name}.parquet")
    for name in frames:
        written = (tmp_path / f"{name}.parquet").read_bytes()
        assert written == (tmp_path / f"direct_{name}.parquet").read_bytes()


def test_background_parquet_writes_run_one_at_a_time(tmp_path, monkeypatch):
    """A write starts only when the one before is done, and `wait` returns only then."""
    events = []
    writing = threading.Lock()

    def slow_write(frame, path):
        assert writing.acquire(blocking=False), "two writes at once"
        events.append(f"start {path.name}")
        time.sleep(0.05)
        events.append(f"end {path.name}")
        writing.release()

    monkeypatch.setattr(io, "write_parquet", slow_write)
    frame = pd.DataFrame({"x": [1.0]})
    with BackgroundParquetWrites() as writes:
        writes.write(frame, tmp_path / "a.parquet")
        writes.write(frame, tmp_path / "b.parquet")
        writes.wait()
        events.append("waited")
        writes.write(frame, tmp_path / "c.parquet")
    events.append("left")
    assert events == [
        "start a.parquet",
        "end a.parquet",
        "start b.parquet",
        "end b.parquet",
        "waited",
        "start c.parquet",
        "end c.parquet",
        "left",
    ]


def test_a_failed_background_write_is_raised(tmp_path):
    (tmp_path / "a_file").write_text("")
    frame = pd.DataFrame({"x": [1.0]})
    with pytest.raises(OSError), BackgroundParquetWrites() as writes:
        writes.write(frame, tmp_path / "a_file" / "t.parquet")  # its folder is a file
    with BackgroundParquetWrites() as writes:
        writes.write(frame, tmp_path / "a_file" / "t.parquet")
        with pytest.raises(OSError):
            writes.wait()


@pytest.mark.parametrize("size", [0, 5, (1 << 22) - 1, 1 << 22, (1 << 22) + 7])
def test_quotes_are_counted_across_slices(size):
    """Counted a slice at a time; a quote either side of a slice boundary counts once."""
    payload = bytearray(b"x" * size)
    for position in (0, size // 2, (1 << 22) - 1, 1 << 22, size - 1):
        if 0 <= position < size:
            payload[position] = ord('"')
    assert io._byte_count(bytes(payload), ord('"')) == bytes(payload).count(b'"')
