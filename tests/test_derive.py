"""Outcome derivation on tiny hand-made cohorts whose every value is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandera.errors import SchemaError

from analysis.derive import (
    INPUT_CODED_COLUMNS,
    INPUT_COLUMNS,
    derive_recovery,
    derive_tables,
    milestone_intervals,
)
from analysis.io import CLEAN_TABLES, read_stage_frames, write_parquet
from analysis.schema import (
    CENSOR_END,
    CENSOR_LOST,
    CENSOR_WITHDRAWN,
    EVENT_FIRST_CHANGE,
    EVENT_RECOVERED,
    MILESTONE_FIRST_CHANGE,
    MILESTONE_FULL_RECOVERY,
    MILESTONES,
    Assessments,
    Diary,
    Participants,
    Recovery,
    Sessions,
    WeeklyIntervals,
    check_typed_frame,
    column_names,
)
from analysis.validation import simulate_clean_derive

ENROLLED = pd.Timestamp("2025-01-06")  # a Monday, so week 0 is days 0-6


def person(pid: str, **overrides) -> dict:
    row = {
        Participants.participant_id: pid,
        Participants.site: "site_A",
        Participants.enrolled_on: ENROLLED,
        Participants.age_years: 40.0,
        Participants.sex: "female",
        Participants.bmi: 24.0,
        Participants.severity: "mild",
        Participants.symptom_months: 2.0,
        Participants.underlying_condition: "none",
        Participants.baseline_sitting_hours: 8.0,
        Participants.withdrawn_on: pd.NaT,
        Participants.withdrawal_reason: None,
    }
    return row | overrides


def diary_days(pid: str, days: range, pain: float, sitting: float = 8.0, done=True) -> list[dict]:
    return [
        {
            Diary.participant_id: pid,
            Diary.date: ENROLLED + pd.Timedelta(days=day),
            Diary.sitting_hours: sitting,
            Diary.sitting_breaks: 3.0,
            Diary.pain_low_back: pain,
            Diary.pain_hip: pain,
            Diary.pain_knee: pain,
            Diary.session_done: done(day) if callable(done) else done,
        }
        for day in days
    ]


def visit(pid: str, day: int, phase: int, recovered: bool, strength: float = 100.0) -> dict:
    return {
        Assessments.participant_id: pid,
        Assessments.date: ENROLLED + pd.Timedelta(days=day),
        Assessments.activation_score: 5.0,
        Assessments.hip_abduction_n: strength,
        Assessments.single_leg_balance_s: 20.0,
        Assessments.trendelenburg_positive: False,
        Assessments.phase_assigned: phase,
        Assessments.clinician_recovered: recovered,
    }


def glute_bridge_session(pid: str, day: int) -> dict:
    return {
        Sessions.participant_id: pid,
        Sessions.date: ENROLLED + pd.Timedelta(days=day),
        Sessions.phase: 1,
        Sessions.exercise: "glute_bridge",
        Sessions.sets: 3.0,
        Sessions.reps: 15.0,
        Sessions.load_kg: np.nan,
        Sessions.form_quality: 3.0,
    }


def frame(rows: list[dict], model) -> pd.DataFrame:
    columns = column_names(model)
    out = pd.DataFrame(rows, columns=columns)
    return model.validate(out) if rows else out


@pytest.fixture
def cohort(params):
    """P1 recovers at visit 3; P2 withdraws before any visit; P3 has no diary; P4 misses visit
    2 and recovers at visit 3 (day 42); P5 is followed to the end without recovering; P6 stops
    all contact after day 30 (lost)."""
    participants = [
        person("P1"),
        person("P2", withdrawn_on=ENROLLED + pd.Timedelta(days=10), withdrawal_reason="moved"),
        person("P3"),
        person("P4", severity="severe"),
        person("P5", symptom_months=12.0),
        person("P6"),
    ]
    diary = (
        diary_days("P1", range(0, 28), pain=5.0, sitting=10.0)
        + diary_days("P1", range(28, 43), pain=1.0, sitting=6.0)
        + diary_days("P2", range(0, 10), pain=6.0, done=False)
        + diary_days("P4", range(0, 42), pain=1.0, done=lambda day: day % 2 == 0)
        + diary_days("P5", range(0, 281), pain=4.0)
        + diary_days("P6", range(0, 31), pain=4.0)
    )
    visits = [
        visit("P1", 14, 1, False),
        visit("P1", 28, 2, False),
        visit("P1", 42, 3, True),
        visit("P3", 14, 3, True),
        visit("P4", 14, 2, False),
        visit("P4", 42, 3, True),
        *[visit("P5", day, 3, False) for day in range(14, 281, 14)],
        visit("P6", 14, 1, False),
        visit("P6", 28, 1, False),
    ]
    sessions = [glute_bridge_session("P3", day=3)]
    return derive_recovery(
        frame(participants, Participants),
        frame(diary, Diary),
        frame(sessions, Sessions),
        frame(visits, Assessments),
        params["derive"],
    )


def row(frames, pid: str) -> pd.Series:
    recovery = frames.recovery
    return recovery.set_index(Recovery.participant_id).loc[pid]


def test_recovery_at_third_visit_keeps_both_interval_bounds(cohort):
    p1 = row(cohort, "P1")
    assert p1[Recovery.recovered]
    assert p1[Recovery.event_type] == EVENT_RECOVERED
    assert p1[Recovery.time_to_recovery_days] == 42
    assert p1[Recovery.interval_lower_days] == 28
    assert p1[Recovery.interval_upper_days] == 42
    assert pd.isna(p1[Recovery.censor_reason])


def test_withdrawal_before_first_visit_is_a_competing_event_at_its_day(cohort):
    p2 = row(cohort, "P2")
    assert not p2[Recovery.recovered]
    assert p2[Recovery.censor_reason] == CENSOR_WITHDRAWN
    assert p2[Recovery.event_type] == CENSOR_WITHDRAWN
    assert p2[Recovery.time_to_recovery_days] == 10
    assert p2[Recovery.interval_lower_days] == 0
    assert pd.isna(p2[Recovery.interval_upper_days])
    assert p2[Recovery.overall_adherence] == 0
    assert p2[Recovery.adherence_group] == "low"


def test_no_diary_means_recovery_cannot_be_shown(cohort):
    """Pain must be shown to be low: with no diary the definition never holds."""
    p3 = row(cohort, "P3")
    assert not p3[Recovery.recovered]
    assert p3[Recovery.censor_reason] == CENSOR_LOST
    assert p3[Recovery.time_to_recovery_days] == 14
    assert pd.isna(p3[Recovery.mean_sitting_hours])


def test_missed_visit_widens_the_interval(cohort):
    p4 = row(cohort, "P4")
    assert p4[Recovery.recovered]
    assert (p4[Recovery.interval_lower_days], p4[Recovery.interval_upper_days]) == (14, 42)
    # Sessions on even days. The visit on day 14 moves P4 to phase 2 (3 a week) from the week
    # after it, so weeks 0-2 are phase 1 (daily); then 3 of 3 done (capped at 1).
    weekly = cohort.weekly_intervals.query("participant_id == 'P4'")
    expected = [4 / 7, 3 / 7, 4 / 7, 1.0, 1.0, 1.0]
    assert weekly["weekly_adherence"].tolist() == pytest.approx(expected)
    assert weekly["phase"].tolist() == [1, 1, 1, 2, 2, 2]


def test_end_of_follow_up_and_loss(cohort, params):
    p5, p6 = row(cohort, "P5"), row(cohort, "P6")
    assert p5[Recovery.censor_reason] == CENSOR_END
    assert p5[Recovery.time_to_recovery_days] == params["derive"]["follow_up_days"]
    assert p5[Recovery.chronic]
    assert p6[Recovery.censor_reason] == CENSOR_LOST
    assert p6[Recovery.time_to_recovery_days] == 28


def test_weekly_intervals_follow_lifelines_start_stop_convention(cohort):
    p1 = cohort.weekly_intervals.query("participant_id == 'P1'")
    assert p1["start"].tolist() == [0, 7, 14, 21, 28, 35]
    assert p1["stop"].tolist() == [7, 14, 21, 28, 35, 42]
    assert p1["event"].tolist() == [False] * 5 + [True]
    assert p1["weekly_sitting_hours"].tolist() == [10.0] * 4 + [6.0] * 2
    assert p1["weekly_adherence"].tolist() == [1.0] * 6
    assert not cohort.weekly_intervals.query("participant_id == 'P2'")["event"].any()


def test_weekly_trajectories_hold_pain_and_strength(cohort):
    p1 = cohort.weekly_trajectories.query("participant_id == 'P1'").set_index("week")
    assert p1.loc[0, "pain_hip"] == 5.0
    assert p1.loc[5, "pain_hip"] == 1.0
    assert p1.loc[2, "hip_abduction_n"] == 100.0
    assert (p1["adherence_group"] == "high").all()


def test_one_row_per_participant_and_no_calendar_dates(cohort):
    recovery = cohort.recovery
    assert recovery[Recovery.participant_id].tolist() == ["P1", "P2", "P3", "P4", "P5", "P6"]
    for derived in (cohort.recovery, cohort.weekly_intervals, cohort.weekly_trajectories):
        assert not any(pd.api.types.is_datetime64_any_dtype(t) for t in derived.dtypes)


@pytest.fixture
def change_cohort(params):
    """First functional change (strength up 20 % on the day-0 visit, mean secondary pain down
    30 % on the first week's, or nearly absent):
    C1 gets stronger at visit 28 with pain down from day 14 (change at 28, after 14);
    C2 gets stronger at visit 14 but pain never eases (no change);
    C3 has no secondary pain at all and gets stronger at visit 28 (change at 28);
    C4 has no baseline visit (the change cannot be shown; censored at the last visit);
    C5 recovers fully at visit 28 without the strength gain (the change comes with recovery);
    C6 changes at visit 14 and withdraws on day 20 (the change stands)."""
    participants = [
        person("C1"),
        person("C2"),
        person("C3"),
        person("C4"),
        person("C5"),
        person("C6", withdrawn_on=ENROLLED + pd.Timedelta(days=20), withdrawal_reason="moved"),
    ]
    diary = (
        diary_days("C1", range(0, 14), pain=6.0)
        + diary_days("C1", range(14, 43), pain=3.0)
        + diary_days("C2", range(0, 43), pain=6.0)
        + diary_days("C3", range(0, 43), pain=0.0)
        + diary_days("C4", range(0, 43), pain=0.0)
        + diary_days("C5", range(0, 14), pain=6.0)
        + diary_days("C5", range(14, 43), pain=1.0)
        + diary_days("C6", range(0, 7), pain=6.0)
        + diary_days("C6", range(7, 20), pain=2.0)
    )
    visits = [
        visit("C1", 0, 1, False, strength=100.0),
        visit("C1", 14, 1, False, strength=110.0),
        visit("C1", 28, 2, False, strength=125.0),
        visit("C1", 42, 2, False, strength=130.0),
        *[visit("C2", day, 1, False, strength=100.0 + day) for day in (0, 14, 28, 42)],
        visit("C3", 0, 1, False, strength=100.0),
        visit("C3", 14, 1, False, strength=115.0),
        visit("C3", 28, 2, False, strength=121.0),
        visit("C4", 14, 1, False, strength=100.0),
        visit("C4", 28, 2, False, strength=140.0),
        visit("C5", 0, 1, False, strength=100.0),
        visit("C5", 14, 2, False, strength=105.0),
        visit("C5", 28, 3, True, strength=110.0),
        visit("C6", 0, 1, False, strength=100.0),
        visit("C6", 14, 1, False, strength=130.0),
    ]
    return derive_recovery(
        frame(participants, Participants),
        frame(diary, Diary),
        frame([glute_bridge_session("C3", day=3)], Sessions),
        frame(visits, Assessments),
        params["derive"],
    )


def milestone_row(frames, pid: str, milestone: str) -> tuple:
    columns = MILESTONES[milestone]
    values = row(frames, pid)
    return (
        bool(values[columns.event]),
        values[columns.time],
        values[columns.lower],
        None if pd.isna(values[columns.upper]) else values[columns.upper],
        values[columns.event_type],
    )


@pytest.mark.parametrize(
    ("pid", "expected"),
    [
        ("C1", (True, 28, 14, 28, EVENT_FIRST_CHANGE)),
        ("C2", (False, 42, 42, None, "censored")),
        ("C3", (True, 28, 14, 28, EVENT_FIRST_CHANGE)),
        ("C4", (False, 28, 28, None, "censored")),
        ("C5", (True, 28, 14, 28, EVENT_FIRST_CHANGE)),
        ("C6", (True, 14, 0, 14, EVENT_FIRST_CHANGE)),
    ],
)
def test_first_functional_change_needs_strength_up_and_pain_down(change_cohort, pid, expected):
    assert milestone_row(change_cohort, pid, MILESTONE_FIRST_CHANGE) == expected


def test_full_recovery_columns_are_unchanged_beside_the_first_change(change_cohort):
    assert milestone_row(change_cohort, "C5", MILESTONE_FULL_RECOVERY) == (
        True,
        28,
        14,
        28,
        EVENT_RECOVERED,
    )
    c6 = row(change_cohort, "C6")
    assert not c6[Recovery.recovered]
    assert c6[Recovery.censor_reason] == CENSOR_WITHDRAWN
    assert pd.isna(c6[Recovery.first_change_censor_reason])


def test_milestone_intervals_cut_the_weekly_rows_at_the_milestone(change_cohort):
    full = milestone_intervals(
        change_cohort.weekly_intervals, change_cohort.recovery, MILESTONE_FULL_RECOVERY
    )
    pd.testing.assert_frame_equal(full, change_cohort.weekly_intervals)
    first = milestone_intervals(
        change_cohort.weekly_intervals, change_cohort.recovery, MILESTONE_FIRST_CHANGE
    )
    c1 = first.query("participant_id == 'C1'")
    assert c1["start"].tolist() == [0, 7, 14, 21]
    assert c1["stop"].tolist() == [7, 14, 21, 28]
    assert c1["event"].tolist() == [False, False, False, True]
    c6 = first.query("participant_id == 'C6'")
    assert c6["stop"].tolist() == [7, 14]
    assert c6["event"].tolist() == [False, True]


def test_milestone_intervals_are_checked_against_the_schema_without_coercion(change_cohort):
    """Text ids in an object column pass as pandera's `str` passes them; anything pandera
    would have had to coerce or refuse is refused (pandera's SchemaError)."""
    intervals = change_cohort.weekly_intervals
    assert intervals[WeeklyIntervals.participant_id].dtype == object
    check_typed_frame(WeeklyIntervals, intervals.copy())
    numbered = intervals.astype({"participant_id": object})
    numbered.loc[0, WeeklyIntervals.participant_id] = 1
    with pytest.raises(SchemaError, match="participant_id: dtype"):
        check_typed_frame(WeeklyIntervals, numbered)
    arrow_text = intervals.astype({"participant_id": "string[pyarrow]"})
    with pytest.raises(SchemaError, match="participant_id: dtype"):
        check_typed_frame(WeeklyIntervals, arrow_text)
    negative = intervals.assign(start=-intervals["start"] - 1)
    with pytest.raises(SchemaError, match="start: greater_than_or_equal_to"):
        milestone_intervals(negative, change_cohort.recovery, MILESTONE_FULL_RECOVERY)
    missing = intervals.astype({"participant_id": object})
    missing.loc[0, WeeklyIntervals.participant_id] = None
    with pytest.raises(SchemaError, match="participant_id: missing values"):
        check_typed_frame(WeeklyIntervals, missing)


def test_a_day_counts_once_as_a_session_done(params):
    """Diary and log both saying so, or two exercises logged, make one session that day."""
    sessions = [
        glute_bridge_session("S1", day=0),
        glute_bridge_session("S1", day=0) | {Sessions.exercise: "clam_shell"},
        glute_bridge_session("S1", day=1),
        glute_bridge_session("S1", day=3),
    ]
    frames = derive_recovery(
        frame([person("S1")], Participants),
        frame(diary_days("S1", range(0, 3), pain=4.0, done=lambda day: day < 2), Diary),
        frame(sessions, Sessions),
        frame([visit("S1", 2, 1, False)], Assessments),
        params["derive"],
    )
    week = frames.weekly_intervals
    # Days 0 to 3 in the study (last contact: the session on day 3): days 0, 1, 3 done of a
    # daily phase-1 prescription prorated to 4 days.
    assert week[WeeklyIntervals.start].tolist() == [0.0]
    assert week["weekly_adherence"].tolist() == pytest.approx([3 / 4])


def test_derive_on_tables_read_as_codes_equals_derive_in_memory(params, tmp_path):
    """The CLI's way (ids read as categoricals, only the columns derive uses, each table
    released from the dict) gives exactly the frames of `derive_recovery` on the clean tables."""
    pipeline = simulate_clean_derive(40, 11, params, mess_rate=0.05)
    for name, table in pipeline.cleaned.tables.items():
        write_parquet(table, tmp_path / f"{name}.parquet")
    tables = read_stage_frames(tmp_path, CLEAN_TABLES, "clean", INPUT_COLUMNS, INPUT_CODED_COLUMNS)
    assert isinstance(tables["diary"][Diary.participant_id].dtype, pd.CategoricalDtype)
    derived = derive_tables(tables, params["derive"])
    assert tables == {}
    for name in ("recovery", "weekly_intervals", "weekly_trajectories"):
        pd.testing.assert_frame_equal(getattr(derived, name), getattr(pipeline.derived, name))
