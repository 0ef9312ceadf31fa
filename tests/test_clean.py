"""Cleaning rules on small hand-made tables: every fix counted, every rejection quarantined."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.clean import (
    SOURCE_ROW,
    TEXT_DTYPE,
    _Ledger,
    clean_study,
    clean_table,
    column_specs,
    match_exercise_names,
    parse_dates,
    read_number_texts,
)
from analysis.errors import DataError
from analysis.schema import (
    CANONICAL_TABLES,
    EXERCISE_PHASE,
    Assessments,
    Diary,
    Participants,
    Quarantine,
    Sessions,
    column_names,
)
from analysis.testing import raw_diary as diary
from analysis.testing import raw_participant as participant
from analysis.testing import raw_session as session
from analysis.testing import raw_table as raw
from analysis.testing import raw_visit as visit

AS_OF = date(2026, 11, 25)
FILES = {table: f"{table}.csv" for table in CANONICAL_TABLES}


def clean_all(params, participants=None, diaries=(), sessions=(), visits=()):
    tables = {
        "participants": raw("participants", participants or [participant()]),
        "diary": raw("diary", list(diaries)),
        "sessions": raw("sessions", list(sessions)),
        "assessments": raw("assessments", list(visits)),
    }
    return clean_study(tables, FILES, params["clean"], AS_OF)


def assert_balanced(report: dict) -> None:
    for counts in report["tables"].values():
        assert counts["input_rows"] == (
            counts["kept"] + counts["quarantined"] + counts["merged_duplicates"]
        )


def test_clean_rows_pass_unchanged(params):
    result = clean_all(params, diaries=[diary()], sessions=[session()], visits=[visit()])
    assert result.quarantine.empty
    kept = result.tables["diary"].iloc[0]
    assert kept[Diary.sitting_hours] == 8.5 and bool(kept[Diary.session_done]) is True
    assert all(not counts["fixes_by_rule"] for counts in result.report["tables"].values())


def test_units_formats_flags_case_and_whitespace_are_fixed_and_counted(params):
    # One date per column settles no day/month order, so this export declares it.
    declared = params | {"clean": params["clean"] | {"date_order": "day_first"}}
    result = clean_all(
        declared,
        participants=[
            participant(
                " p001 ",
                severity="Mild ",
                underlying_condition=" Disc",
                enrolled_on="06/01/2025",
                baseline_sitting_hours="480",
            )
        ],
        diaries=[
            diary("P001", "07/01/2025", sitting_hours="420 min", session_done="Y"),
            diary("p001", "2025/01/08", sitting_hours="540", session_done="0"),
            diary("P001", "9 Jan 2025", sitting_hours="6,5", session_done="TRUE"),
        ],
        sessions=[
            session(exercise="Glute Bridge", load_kg="22 lb"),
            session(exercise="hip thrust (weighted)", phase="2.0"),
        ],
    )
    assert result.quarantine.empty
    people = result.tables["participants"].iloc[0]
    assert people[Participants.participant_id] == "P001"
    assert people[Participants.severity] == "mild"
    assert people[Participants.underlying_condition] == "disc"
    assert people[Participants.enrolled_on] == pd.Timestamp("2025-01-06")
    assert people[Participants.baseline_sitting_hours] == 8.0
    days = result.tables["diary"].sort_values(Diary.date)
    assert days[Diary.sitting_hours].tolist() == [7.0, 9.0, 6.5]
    assert days[Diary.session_done].tolist() == [True, False, True]
    exercises = result.tables["sessions"]
    assert exercises[Sessions.exercise].tolist() == ["glute_bridge", "weighted_hip_thrust"]
    assert exercises[Sessions.load_kg].iloc[0] == pytest.approx(22 * 0.45359237)
    fixes = result.report["tables"]["diary"]["fixes_by_rule"]
    assert fixes == {
        "date_format": 3,
        "decimal_comma": 1,
        "flag_spelling": 3,
        "normalise_id_case": 1,
        "sitting_minutes_to_hours": 1,
        "unit_min_to_canonical": 1,
    }
    assert result.report["tables"]["sessions"]["fixes_by_rule"]["unit_lb_to_canonical"] == 1


def test_out_of_range_values_are_quarantined_and_the_row_kept(params):
    result = clean_all(params, diaries=[diary(pain_hip="11", sitting_hours="30")])
    kept = result.tables["diary"].iloc[0]
    assert pd.isna(kept[Diary.pain_hip]) and pd.isna(kept[Diary.sitting_hours])
    assert kept[Diary.pain_low_back] == 4
    entries = result.quarantine.sort_values(Quarantine.column)
    assert entries[Quarantine.column].tolist() == ["pain_hip", "sitting_hours"]
    assert entries[Quarantine.value].tolist() == ["11", "30"]
    assert set(entries[Quarantine.scope]) == {"value"}
    assert set(entries[Quarantine.source_row]) == {2}


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (diary("P999"), "unknown_participant"),
        (diary(""), "missing_required"),
        (diary(day=""), "missing_required"),
        (diary(day="2025-01-01"), "date_before_enrolment"),
        (diary(day="2032-03-01"), "future_date"),
        (diary(day="31/31/2025"), "unparseable_date"),
    ],
)
def test_rows_that_cannot_be_placed_go_to_quarantine_with_their_row(params, row, rule):
    result = clean_all(params, diaries=[diary(day="2025-01-10"), row])
    assert len(result.tables["diary"]) == 1
    entry = result.quarantine.iloc[0]
    assert (entry[Quarantine.rule], entry[Quarantine.source_row], entry[Quarantine.scope]) == (
        rule,
        3,
        "row",
    )
    assert entry[Quarantine.source_file] == "diary.csv"
    assert_balanced(result.report)


def test_duplicates_merge_and_conflicts_are_quarantined(params):
    result = clean_all(
        params,
        diaries=[diary(), diary(), diary(day="2025-01-09"), diary(day="2025-01-09", pain_hip="7")],
    )
    counts = result.report["tables"]["diary"]
    assert (counts["kept"], counts["merged_duplicates"], counts["quarantined"]) == (1, 1, 2)
    assert set(result.quarantine[Quarantine.rule]) == {"conflicting_duplicate"}
    assert_balanced(result.report)


def test_a_quarantined_participant_takes_their_rows_along_with_the_reason(params):
    result = clean_all(params, participants=[participant(severity="unknown")], diaries=[diary()])
    rules = result.quarantine.groupby(Quarantine.table)[Quarantine.rule].first().to_dict()
    assert rules == {"participants": "unknown_category", "diary": "participant_quarantined"}


def test_exercise_variants_and_typos_match_the_catalogue(params):
    names = pd.Series(
        [
            "Glute Bridge",
            "glute-bridges",
            "clamshell",
            "Side lying leg lift",
            "single leg deadlift",
            "lunges",
            "glute brdige",
            "Step Up",
            "yoga",
        ]
    )
    mapping = match_exercise_names(names, params["clean"]["exercise_name_min_similarity"])
    assert mapping == {
        "Glute Bridge": "glute_bridge",
        "glute-bridges": "glute_bridge",
        "clamshell": "clam_shell",
        "Side lying leg lift": "side_lying_leg_lift",
        "single leg deadlift": "single_leg_deadlift",
        "lunges": "lunge",
        "glute brdige": "glute_bridge",
        "Step Up": "step_up",
        "yoga": None,
    }
    assert all(name in EXERCISE_PHASE for name in mapping.values() if name)


def test_cleaning_clean_output_again_changes_nothing(params, tmp_path):
    from analysis.io import read_table_file

    first = clean_all(
        params,
        participants=[participant(enrolled_on="06/01/2025"), participant("P002", bmi="")],
        diaries=[diary(sitting_hours="420 min"), diary("P002", pain_hip="12")],
        sessions=[session(exercise="Glute Bridge", load_kg="22 lb")],
        visits=[visit(trendelenburg_positive="yes")],
    )
    again_raw = {}
    for table, frame in first.tables.items():
        path = tmp_path / f"{table}.parquet"
        frame.to_parquet(path)
        again_raw[table] = read_table_file(path)
    second = clean_study(again_raw, FILES, params["clean"], AS_OF)
    assert second.quarantine.empty
    for table, frame in first.tables.items():
        pd.testing.assert_frame_equal(second.tables[table], frame)
        assert not second.report["tables"][table]["fixes_by_rule"]


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(st.fixed_dictionaries({name: TEXT for name in column_names(Diary)}), max_size=6)
)
def test_random_diary_text_cleans_without_loss(params, cells):
    """Whatever text arrives, cleaning either keeps or quarantines every row (never raises)."""
    try:
        result = clean_all(params, diaries=cells)
    except DataError:
        return
    assert_balanced(result.report)


def test_clean_table_needs_no_participants_for_the_participants_table(params):
    result = clean_table(
        "participants",
        raw("participants", [participant()]),
        source_file="p.csv",
        params=params["clean"],
        as_of=AS_OF,
    )
    assert len(result.kept) == 1


def test_impossible_calendar_dates_are_not_rolled_over(params):
    """31 February is no date: it must not become 3 March."""
    result = clean_all(params, diaries=[diary(day="2025-02-30"), diary(day="30/02/2025")])
    assert result.tables["diary"].empty
    assert set(result.quarantine[Quarantine.rule]) == {"unparseable_date"}


# --- exports as they really come: dates, numbers, sentinels ----------------------------------


def diary_days(params, days: list[str], **overrides):
    """Clean one participant's diary written with the given date texts."""
    return clean_all(
        params,
        participants=[participant(enrolled_on="2024-01-01")],
        diaries=[diary(day=day, **overrides) for day in days],
    )


def test_month_first_column_is_read_month_first_never_swapped(params):
    # 01/13/2024 can only be month first: the whole column is read so, 01/05/2024 is 5 January.
    result = diary_days(params, ["01/13/2024", "01/05/2024", "02/03/2024"])
    assert result.quarantine.empty
    assert sorted(result.tables["diary"][Diary.date].dt.strftime("%Y-%m-%d")) == [
        "2024-01-05",
        "2024-01-13",
        "2024-02-03",
    ]
    assert result.report["tables"]["diary"]["fixes_by_rule"]["date_order_month_first"] == 3


def test_day_first_column_is_read_day_first(params):
    result = diary_days(params, ["13/01/2024", "01/05/2024"])
    assert sorted(result.tables["diary"][Diary.date].dt.strftime("%Y-%m-%d")) == [
        "2024-01-13",
        "2024-05-01",
    ]


@pytest.mark.parametrize(
    ("days", "kept"),
    [
        (["01/05/2024", "02/03/2024", "04/04/2024"], ["2024-04-04"]),  # no evidence
        (["13/01/2024", "01/14/2024", "03/04/2024"], ["2024-01-13", "2024-01-14"]),  # both
    ],
)
def test_dates_the_column_leaves_ambiguous_are_quarantined(params, days, kept):
    result = diary_days(params, days)
    assert sorted(result.tables["diary"][Diary.date].dt.strftime("%Y-%m-%d")) == kept
    rules = set(result.quarantine[Quarantine.rule])
    assert rules == {"ambiguous_date"}


def test_declared_order_reads_ambiguous_dates_and_refuses_the_other_order(params):
    declared = params | {"clean": params["clean"] | {"date_order": "month_first"}}
    result = diary_days(declared, ["01/05/2024", "13/01/2024"])
    assert result.tables["diary"][Diary.date].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-05"]
    assert result.quarantine[Quarantine.rule].tolist() == ["unparseable_date"]


def test_a_time_of_day_is_dropped_from_a_date(params):
    result = diary_days(params, ["2024-02-01 08:30", "2024-02-02T17:05:00"])
    assert result.quarantine.empty
    assert result.tables["diary"][Diary.date].dt.day.tolist() == [1, 2]


def read_date_column(texts: list[str], formats: list[str], order: str = "evidence"):
    """One date column parsed alone: (dates, quarantine rules)."""
    frame = pd.DataFrame({SOURCE_ROW: range(2, len(texts) + 2)})
    ledger = _Ledger("diary", "diary.csv", frame)
    spec = next(s for s in column_specs(CANONICAL_TABLES["diary"]) if s.name == Diary.date)
    values = pd.Series(texts, dtype=TEXT_DTYPE)
    dates = parse_dates(values, spec, ledger, formats, order)
    rules = ledger.quarantine_frame()[Quarantine.rule].tolist()
    return dates, rules


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    days=st.lists(st.dates(date(1990, 1, 1), date(2030, 12, 31)), min_size=1, max_size=12),
    month_first=st.booleans(),
    separator=st.sampled_from(["/", ".", "-"]),
)
def test_any_day_month_order_is_read_right_or_quarantined(params, days, month_first, separator):
    pattern = separator.join(["%m", "%d", "%Y"] if month_first else ["%d", "%m", "%Y"])
    texts = [day.strftime(pattern) for day in days]
    formats = params["clean"]["date_formats"] + [separator.join(["%d", "%m", "%Y"])]
    dates, rules = read_date_column(texts, formats)
    for day, parsed in zip(days, dates, strict=True):
        assert pd.isna(parsed) or parsed.date() == day  # never a swapped date
    assert set(rules) <= {"ambiguous_date"}
    # Ambiguous only when no value in the column shows the order.
    proof = any(max(day.day, day.month) > 12 and day.day != day.month for day in days)
    assert not rules or not proof


@pytest.mark.parametrize(
    ("column", "texts", "expected"),
    [
        # A thousands separator is never a decimal comma.
        (Assessments.hip_abduction_n, ["1,000", "250", "800"], [1000.0, 250.0, 800.0]),
        (Assessments.hip_abduction_n, ["1,000.0", "250.25", "300"], [1000.0, 250.25, 300.0]),
        # The column proves a decimal comma: 1.000 and 100,000 follow it.
        (Assessments.hip_abduction_n, ["120,5", "1.000", "100,000"], [120.5, 1000.0, 100.0]),
        (Assessments.activation_score, ["4,5", "3", "2,25"], [4.5, 3.0, 2.25]),
        (Assessments.hip_abduction_n, ["1e2", "+150", "99.5 N"], [100.0, 150.0, 99.5]),
    ],
)
def test_the_column_decides_the_decimal_mark(params, column, texts, expected):
    visits = [visit(day=f"2025-01-{20 + i}", **{column: t}) for i, t in enumerate(texts)]
    result = clean_all(params, visits=visits)
    assert result.quarantine.empty
    assert result.tables["assessments"][column].tolist() == pytest.approx(expected)


def test_a_column_with_both_marks_quarantines_what_reads_either_way(params):
    texts = ["120,5", "130.5", "1,000", "140"]
    visits = [visit(day=f"2025-01-{20 + i}", hip_abduction_n=t) for i, t in enumerate(texts)]
    result = clean_all(params, visits=visits)
    strength = result.tables["assessments"][Assessments.hip_abduction_n].tolist()
    assert strength[:2] == [120.5, 130.5] and pd.isna(strength[2]) and strength[3] == 140
    assert result.quarantine[Quarantine.rule].tolist() == ["ambiguous_number"]


def test_explicit_units_are_never_reread_as_minutes_and_sentinels_are_missing(params):
    result = diary_days(
        params,
        ["2024-02-01", "2024-02-02", "2024-02-03", "2024-02-04", "2024-02-05"],
    )
    hours = ["72 h", "999", "-99", "600", "1,020 min"]
    result = clean_all(
        params,
        participants=[participant(enrolled_on="2024-01-01")],
        diaries=[diary(day=f"2024-02-0{i + 1}", sitting_hours=h) for i, h in enumerate(hours)],
    )
    kept = result.tables["diary"].sort_values(Diary.date)[Diary.sitting_hours].tolist()
    assert pd.isna(kept[0]) and pd.isna(kept[1]) and pd.isna(kept[2])
    assert kept[3:] == pytest.approx([10.0, 17.0])
    rules = result.quarantine.set_index(Quarantine.value)[Quarantine.rule].to_dict()
    assert rules == {
        "72 h": "out_of_range",
        "999": "missing_sentinel",
        "-99": "missing_sentinel",
    }


def test_sentinels_come_from_params(params):
    custom = params | {"clean": params["clean"] | {"missing_sentinels": [-1]}}
    result = clean_all(custom, diaries=[diary(pain_hip="-1", pain_knee="999")])
    entries = result.quarantine.set_index(Quarantine.column)[Quarantine.rule].to_dict()
    assert entries == {"pain_hip": "missing_sentinel", "pain_knee": "out_of_range"}


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    amounts=st.lists(st.integers(0, 24 * 60), min_size=1, max_size=6),
    spelling=st.sampled_from(["{} min", "{}min", "{} MINUTES", "{} mins"]),
)
def test_minutes_with_a_unit_are_hours_whatever_their_size(params, amounts, spelling):
    texts = [spelling.format(amount) for amount in amounts]
    result = clean_all(
        params,
        participants=[participant(enrolled_on="2024-01-01")],
        diaries=[diary(day=f"2024-03-{i + 1:02d}", sitting_hours=t) for i, t in enumerate(texts)],
    )
    kept = result.tables["diary"].sort_values(Diary.date)[Diary.sitting_hours]
    expected = [amount / 60 for amount in amounts]
    assert kept.tolist() == pytest.approx(expected)


def test_placeholder_dates_are_missing_with_a_record(params):
    result = clean_all(
        params,
        participants=[
            participant(),
            participant("P002", enrolled_on="1900-01-01"),
            participant("P003", withdrawn_on="1899-12-30"),
        ],
    )
    kept = result.tables["participants"].set_index(Participants.participant_id)
    assert list(kept.index) == ["P001", "P003"] and pd.isna(kept.loc["P003", "withdrawn_on"])
    assert result.quarantine[Quarantine.rule].tolist() == ["missing_sentinel"] * 2


def written(value: float, decimals: int, mark: str, grouped: bool) -> str:
    """`value` as a person's locale writes it: decimal `mark`, the other mark grouping."""
    text = f"{value:,.{decimals}f}" if grouped else f"{value:.{decimals}f}"
    return text.translate(str.maketrans({",": ".", ".": ","})) if mark == "," else text


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.integers(0, 10**7), min_size=1, max_size=8),
    decimals=st.lists(st.integers(0, 3), min_size=8, max_size=8),
    mark=st.sampled_from([".", ","]),
    grouped=st.booleans(),
)
def test_numbers_are_read_by_the_column_s_own_mark_or_quarantined(values, decimals, mark, grouped):
    numbers = [value / 100 for value in values]
    texts = [written(n, d, mark, grouped) for n, d in zip(numbers, decimals, strict=False)]
    reading = read_number_texts(pd.Series(texts, dtype=TEXT_DTYPE))
    proven = any(
        d and not (d == 3 and 1 <= int(n) < 1000) or (grouped and int(n) >= 10**6)
        for n, d in zip(numbers, decimals, strict=False)
    )
    for number, text, read in zip(numbers, texts, reading.numbers, strict=True):
        if pd.isna(read):
            continue  # left unread (ambiguous) is allowed; a wrong number is not
        if mark == "," and not proven and ("," in text or "." in text):
            continue  # no evidence for the comma: read the default way, tested elsewhere
        decimals_written = len(text.split(mark)[1]) if mark in text else 0
        assert read == pytest.approx(round(number, decimals_written), abs=1e-9), (texts, text)
