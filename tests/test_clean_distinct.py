"""Cleaning on distinct values: the same result as a pass over every row, a real schema check.

Columns are parsed once per distinct text and spread back over the rows through codes; raw
tables are held as codes; duplicates are keyed on integer codes; the stage-boundary check
tests the typed frame without pandera's coercion. Each is checked here against the plain,
row-by-row way of doing the same thing.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.errors import SchemaError, SchemaErrors

from analysis.clean import (
    SOURCE_ROW,
    TEXT_DTYPE,
    _Ledger,
    _occurs_more_than_once,
    _parse_column,
    _parse_texts,
    _record_codes,
    _TypedColumn,
    clean_study,
    column_specs,
)
from analysis.io import coded_text
from analysis.schema import CANONICAL_TABLES, Diary, Participants, Sessions, check_typed_frame
from analysis.simulate import simulate_study
from analysis.testing import with_source_rows
from tests.conftest import PROJECT_ROOT

# Messy texts per column, each meant to hit several rules (fixes, value and row rejections).
MESSY_TEXTS = {
    ("diary", Diary.sitting_hours): [
        "8",
        " 8",
        "8.5",
        "480",
        "2 h",
        "90 min",
        "999",
        "abc",
        "",
        "NA",
        "30",
        "1,234",
        None,
    ],
    ("diary", Diary.date): [
        "2025-01-07",
        "07/01/2025",
        "13/01/2025",
        "2025-01-07 08:30",
        "1900-01-01",
        "7 Jan 2025",
        "bad",
        "",
        "01/02/2025",
        None,
    ],
    ("diary", Diary.session_done): ["yes", "Y", "true", "0", "maybe", "", " no "],
    ("participants", Participants.sex): ["F", "female", "Male", " m ", "x", ""],
    ("participants", Participants.participant_id): ["p001", " P001", "P002", "", "n/a"],
    ("sessions", Sessions.exercise): [
        "glute bridge",
        "Glute_Bridges",
        "squatt",
        "unknown move",
        "",
        "Hip thrust (weighted)",
    ],
    ("sessions", Sessions.load_kg): ["10", "10 kg", "22 lbs", "5,5", "-3", "", "1.5"],
}


def _ledger_state(ledger: _Ledger) -> tuple:
    return (
        ledger.quarantine_frame(),
        dict(ledger.fixes),
        dict(ledger.row_rules),
        dict(ledger.value_rules),
        ledger.rejected.tolist(),
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), column=st.sampled_from(sorted(MESSY_TEXTS, key=str)))
def test_parsing_distinct_texts_equals_parsing_every_row(params, data, column):
    table, name = column
    texts = data.draw(st.lists(st.sampled_from(MESSY_TEXTS[column]), min_size=1, max_size=40))
    spec = next(s for s in column_specs(CANONICAL_TABLES[table]) if s.name == name)
    frame = pd.DataFrame({SOURCE_ROW: range(2, len(texts) + 2)})
    cells = pd.Series(texts, dtype=object)
    by_row, by_distinct = _Ledger(table, "x.csv", frame), _Ledger(table, "x.csv", frame)

    expected = _parse_texts(cells, spec, by_row, params["clean"], ".")
    typed = _parse_column(cells, spec, by_distinct, params["clean"], ".")

    pd.testing.assert_series_equal(typed.rows(cells.index), expected)
    expected_state, state = _ledger_state(by_row), _ledger_state(by_distinct)
    pd.testing.assert_frame_equal(state[0], expected_state[0])
    assert state[1:] == expected_state[1:]


def test_cleaning_coded_raw_tables_equals_cleaning_text(params, simulated_design):
    """The reader hands cleaning categoricals; the result must be that of the plain text."""
    simulated = simulate_study(30, seed=5, design=simulated_design, mess_rate=0.5)
    text = {table: with_source_rows(frame) for table, frame in simulated.tables.items()}
    coded = {table: coded_text(frame.copy()) for table, frame in text.items()}
    for frame in coded.values():
        for column in frame.columns.drop(SOURCE_ROW):
            # A category no row holds (Arrow's dictionaries keep the header's text) is no
            # evidence: were it read, "7,5" would prove decimal commas, 01/13 month-first dates.
            frame[column] = frame[column].cat.add_categories(["7,5", "01/13/2025"])
    assert all(
        isinstance(frame[column].dtype, pd.CategoricalDtype)
        for frame in coded.values()
        for column in frame.columns
        if column != SOURCE_ROW
    )
    files = {table: f"{table}.csv" for table in text}
    expected = clean_study(text, files, params["clean"], simulated.export_date)
    result = clean_study(coded, files, params["clean"], simulated.export_date)
    assert expected.quarantine[SOURCE_ROW].size > 0  # the mess reached the quarantine
    for table, frame in expected.tables.items():
        pd.testing.assert_frame_equal(result.tables[table], frame)
    pd.testing.assert_frame_equal(result.quarantine, expected.quarantine)
    assert result.report == expected.report

    handed_over, events = {}, []

    def hand_over(table, frame):
        handed_over[table] = frame
        events.append(table)

    streamed = clean_study(
        coded,
        files,
        params["clean"],
        simulated.export_date,
        hand_over=hand_over,
        before_kept=lambda: events.append("before kept"),
    )
    assert streamed.tables == {}
    assert list(handed_over) == list(expected.tables)
    # Each table's kept rows are taken after the one before was handed over and waited for.
    assert events == [step for table in expected.tables for step in ("before kept", table)]
    for table, frame in expected.tables.items():
        pd.testing.assert_frame_equal(handed_over[table], frame)
    assert streamed.report == expected.report
    assert list(coded) == list(text)  # the caller's raw tables are left alone by default

    # The CLI's way: raw tables freed one by one, the caller's dict emptied, the same result.
    released_raw = dict(coded)
    released = clean_study(
        released_raw, files, params["clean"], simulated.export_date, release_raw=True
    )
    assert released_raw == {}
    for table, frame in expected.tables.items():
        pd.testing.assert_frame_equal(released.tables[table], frame)
    pd.testing.assert_frame_equal(released.quarantine, expected.quarantine)
    assert released.report == expected.report


@given(
    columns=st.integers(1, 3).flatmap(
        lambda width: st.lists(st.tuples(*[st.integers(0, 4)] * width), min_size=1, max_size=60)
    )
)
def test_record_codes_repeat_exactly_where_the_rows_do(columns):
    frame = pd.DataFrame(columns)
    codes = _record_codes([frame[column].to_numpy() for column in frame.columns])
    np.testing.assert_array_equal(
        pd.Series(codes).duplicated(keep=False).to_numpy(),
        frame.duplicated(keep=False).to_numpy(),
    )
    np.testing.assert_array_equal(
        _occurs_more_than_once(codes), frame.duplicated(keep=False).to_numpy()
    )


@given(
    rows=st.lists(st.tuples(*[st.sampled_from([0, 1, 2**40, 2**62])] * 3), min_size=1, max_size=40)
)
def test_record_codes_of_widely_spread_codes_do_not_overflow(rows):
    """Code ranges whose product passes 2**63 are re-coded before they are multiplied."""
    frame = pd.DataFrame(rows).astype(np.int64)
    codes = _record_codes(frame[column].to_numpy() for column in frame.columns)
    np.testing.assert_array_equal(
        _occurs_more_than_once(codes), frame.duplicated(keep=False).to_numpy()
    )


@given(
    texts=st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=1, max_size=8),
    data=st.data(),
)
def test_typed_text_columns_are_taken_as_pandas_takes_them(texts, data):
    """Arrow takes the kept rows' texts; the result is pandas' own take, Arrow type included."""
    distinct = pd.Series(texts, dtype=TEXT_DTYPE)
    codes = np.array(
        data.draw(st.lists(st.integers(0, len(texts) - 1), max_size=20)), dtype=np.int32
    )
    positions = np.array(
        data.draw(st.lists(st.integers(0, len(codes) - 1), max_size=20)) if len(codes) else [],
        dtype=np.int64,
    )
    taken = _TypedColumn(distinct, codes).at(positions)
    expected = pd.Series(distinct.array.take(codes[positions]), copy=False)
    pd.testing.assert_series_equal(taken, expected)
    assert pa.array(taken.array).type == pa.array(expected.array).type


def test_value_codes_follow_the_values_order():
    """Keys of rows in value order ascend, so sorting them is nearly linear."""
    distinct = pd.Series(["P2", None, "P10", "P1"], dtype=TEXT_DTYPE)
    column = _TypedColumn(distinct, np.array([3, 0, 2, 1, 0], dtype=np.int32))
    # Rows P1, P2, P10, missing, P2: codes in the texts' order, missing last.
    assert column.value_codes(np.arange(5)).tolist() == [0, 2, 1, 3, 2]


def _valid_sessions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            Sessions.participant_id: pd.array(["P1", "P1", "P2"], dtype=TEXT_DTYPE),
            Sessions.date: pd.to_datetime(["2025-01-07", "2025-01-08", "2025-01-07"]),
            Sessions.phase: [1.0, 2.0, 3.0],
            Sessions.exercise: pd.array(["squat", "lunge", "step_up"], dtype=TEXT_DTYPE),
            Sessions.sets: [3.0, np.nan, 20.0],
            Sessions.reps: [10.0, 12.0, np.nan],
            Sessions.load_kg: [0.0, 40.0, np.nan],
            Sessions.form_quality: [1.0, 5.0, 3.0],
        }
    )


def _with(column: str, values) -> pd.DataFrame:
    frame = _valid_sessions()
    frame[column] = values
    return frame


BROKEN_SESSIONS = {
    "out of range": lambda: _with(Sessions.sets, [3.0, 21.0, 1.0]),
    "below range": lambda: _with(Sessions.load_kg, [0.0, -0.5, np.nan]),
    "out of range beside a missing value": lambda: _with(Sessions.sets, [np.nan, 21.0, 1.0]),
    "unknown level": lambda: _with(Sessions.phase, [1.0, 4.0, 2.0]),
    "unknown name": lambda: _with(
        Sessions.exercise, pd.array(["squat", "plank", "lunge"], dtype=TEXT_DTYPE)
    ),
    "missing required": lambda: _with(
        Sessions.participant_id, pd.array(["P1", None, "P2"], dtype=TEXT_DTYPE)
    ),
    "wrong dtype": lambda: _with(Sessions.participant_id, ["P1", "P1", "P2"]),
    "fractional level": lambda: _with(Sessions.phase, [1.0, 2.5, 3.0]),
    "extra column": lambda: _valid_sessions().assign(note="x"),
    "column order": lambda: _valid_sessions().iloc[:, ::-1],
}


def test_the_schema_check_passes_a_valid_frame_and_casts_whole_number_levels():
    checked = check_typed_frame(Sessions, _valid_sessions())
    assert checked[Sessions.phase].dtype == np.int64
    pd.testing.assert_frame_equal(checked, Sessions.validate(_valid_sessions()))


@pytest.mark.parametrize("broken", sorted(BROKEN_SESSIONS))
def test_the_schema_check_refuses_what_pandera_refuses(broken):
    frame = BROKEN_SESSIONS[broken]()
    with pytest.raises(SchemaError):
        check_typed_frame(Sessions, frame.copy())
    if broken not in ("wrong dtype", "fractional level", "column order"):
        # pandera (coercing, as the models say) refuses the same frames; the three others it
        # would coerce or reorder, where the check of an already typed frame is stricter.
        with pytest.raises((SchemaError, SchemaErrors)):
            Sessions.validate(frame.copy())


def test_a_repeated_participant_id_is_refused(params):
    people = clean_study(
        {
            "participants": pd.DataFrame(
                {
                    **{
                        name: ["x"] for name in CANONICAL_TABLES["participants"].to_schema().columns
                    },
                    Participants.participant_id: ["P1"],
                    Participants.enrolled_on: ["2025-01-06"],
                    Participants.sex: ["female"],
                    Participants.severity: ["mild"],
                    Participants.underlying_condition: ["none"],
                    Participants.age_years: ["40"],
                    Participants.bmi: ["24"],
                    Participants.symptom_months: ["3"],
                    Participants.baseline_sitting_hours: ["8"],
                    Participants.withdrawn_on: [""],
                    SOURCE_ROW: [2],
                }
            ),
            **{
                table: pd.DataFrame(
                    {
                        **{name: [] for name in CANONICAL_TABLES[table].to_schema().columns},
                        SOURCE_ROW: [],
                    }
                )
                for table in ("diary", "sessions", "assessments")
            },
        },
        {table: table for table in CANONICAL_TABLES},
        params["clean"],
        pd.Timestamp("2026-01-01").date(),
    ).tables["participants"]
    assert len(people) == 1
    check_typed_frame(Participants, people.copy())
    with pytest.raises(SchemaError, match="participant_id: repeated values"):
        check_typed_frame(Participants, pd.concat([people, people], ignore_index=True))
    empty_id = people.copy()
    empty_id[Participants.participant_id] = pd.array([""], dtype=TEXT_DTYPE)
    with pytest.raises(SchemaError, match="participant_id: str_length"):
        check_typed_frame(Participants, empty_id)


def test_cleaning_does_not_import_hypothesis():
    """pandera imports hypothesis (a dev dependency, ~1 s) when its validation backend loads."""
    script = (
        "import sys\n"
        "import yaml\n"
        "from analysis.simulate import simulate_study, study_design\n"
        "from analysis.clean import clean_study\n"
        "from analysis.testing import with_source_rows\n"
        "params = yaml.safe_load(open(sys.argv[1]))\n"
        "design = study_design(params['derive'], params['simulate']['follow_up_weeks'])\n"
        "study = simulate_study(5, seed=1, design=design, mess_rate=0.2)\n"
        "raw = {t: with_source_rows(f) for t, f in study.tables.items()}\n"
        "clean_study(raw, {t: t for t in raw}, params['clean'], study.export_date)\n"
        "print('hypothesis' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(PROJECT_ROOT / "params.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
