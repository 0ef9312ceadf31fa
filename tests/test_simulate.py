"""The synthetic study: determinism, canonical clean tables, calibration to truth, mess, and the
design it shares with derive (params.yaml)."""

from __future__ import annotations

import json
import re
from copy import deepcopy
from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from analysis.cli import app
from analysis.errors import DataError, ParameterError
from analysis.schema import (
    CANONICAL_TABLES,
    DAYS_PER_WEEK,
    EXERCISE_PHASE,
    PAIN_SITES,
    RECORD_KEYS,
    Assessments,
    Diary,
    Participants,
    Sessions,
    column_names,
)
from analysis.simulate import (
    DEFECT_COLUMNS,
    DEFECT_KINDS,
    EXERCISE_VARIANTS,
    SITES,
    TABLES,
    simulate_study,
    to_redcap,
)
from analysis.simulate.cohort import CUT_OFF_MARGIN_MONTHS, LOSS_MODEL, PAIN_MODEL

SEED = 20261125
MESS_RATE = 0.05


@pytest.fixture(scope="module")
def clean_study(simulated_design):
    return simulate_study(1500, SEED, simulated_design)


@pytest.fixture(scope="module")
def calibration_study(simulated_design):
    return simulate_study(4000, SEED + 1, simulated_design)


@pytest.fixture(scope="module")
def messy_pair(simulated_design):
    return (
        simulate_study(400, SEED + 2, simulated_design),
        simulate_study(400, SEED + 2, simulated_design, mess_rate=MESS_RATE),
    )


def _truth_frame(study) -> pd.DataFrame:
    truth = pd.DataFrame(study.truth["participants"])
    return truth.merge(study.tables["participants"], on=Participants.participant_id)


def _parse(frame: pd.DataFrame, model) -> pd.DataFrame:
    """The simple typed reading of a clean string table that the pandera model validates."""
    typed = {}
    for name, column in model.to_schema().columns.items():
        values = frame[name].replace("", None)
        kind = str(column.dtype)
        if kind.startswith("datetime"):
            typed[name] = pd.to_datetime(values, format="%Y-%m-%d")
        elif kind in ("float64", "int64"):
            typed[name] = pd.to_numeric(values)
        elif kind == "boolean":
            typed[name] = values.map({"true": True, "false": False}).astype("boolean")
        else:
            typed[name] = values
    return pd.DataFrame(typed)


def _days_since_enrolment(table: pd.DataFrame, participants: pd.DataFrame) -> np.ndarray:
    enrolled = pd.to_datetime(
        participants.set_index(Participants.participant_id)[Participants.enrolled_on]
    )
    dates = pd.to_datetime(table[Diary.date], format="%Y-%m-%d")
    return (dates - table[Diary.participant_id].map(enrolled)).dt.days.to_numpy()


def _recovery_definition_holds(study, recovery_params: dict) -> pd.DataFrame:
    """Each clinic visit with its day and whether the study's recovery definition holds there."""
    participants = study.tables["participants"]
    diary = study.tables["diary"]
    visits = study.tables["assessments"].copy()
    visits["day"] = _days_since_enrolment(visits, participants)
    window = recovery_params["pain_window_days"]
    # Diary days run 0, 1, ... without gaps, so a day's row is the participant's first row + day.
    first_row = diary.groupby(Diary.participant_id, sort=False).cumcount().eq(0)
    first_row_of = pd.Series(
        np.flatnonzero(first_row), index=diary.loc[first_row, Diary.participant_id]
    )
    diary_days = diary.groupby(Diary.participant_id, sort=False).size()
    start = visits[Assessments.participant_id].map(first_row_of).to_numpy()
    low = start + np.maximum(visits["day"].to_numpy() - window, 0)
    high = start + np.minimum(
        visits["day"].to_numpy(), visits[Assessments.participant_id].map(diary_days)
    )
    pain_ok = high > low
    for site in PAIN_SITES:
        cumulative = np.concatenate([[0.0], np.cumsum(diary[site].astype(float).to_numpy())])
        mean = (cumulative[high] - cumulative[low]) / np.maximum(high - low, 1)
        pain_ok &= mean <= recovery_params["max_secondary_pain"]
    visits["holds"] = (
        pain_ok
        & (visits[Assessments.phase_assigned].astype(int) >= recovery_params["min_phase"])
        & (visits[Assessments.clinician_recovered] == "true")
    )
    return visits


def test_same_seed_gives_identical_bytes_and_another_seed_differs(simulated_design):
    first = simulate_study(300, SEED, simulated_design, mess_rate=MESS_RATE)
    again = simulate_study(300, SEED, simulated_design, mess_rate=MESS_RATE)
    other = simulate_study(300, SEED + 99, simulated_design, mess_rate=MESS_RATE)
    for table in TABLES:
        pd.testing.assert_frame_equal(first.tables[table], again.tables[table])
        assert first.tables[table].to_csv(index=False, lineterminator="\n") == again.tables[
            table
        ].to_csv(index=False, lineterminator="\n")
        assert not first.tables[table].equals(other.tables[table])
    pd.testing.assert_frame_equal(first.injected_defects, again.injected_defects)
    assert json.dumps(first.truth, sort_keys=True) == json.dumps(again.truth, sort_keys=True)


def test_mess_leaves_the_underlying_clean_rows_unchanged(messy_pair):
    clean, messy = messy_pair
    assert clean.truth["participants"] == messy.truth["participants"]
    for table in TABLES:
        defects = messy.injected_defects[messy.injected_defects["table"] == table]
        copies = defects.loc[defects["kind"] == "duplicate_row", "source_row"] - 2
        originals = messy.tables[table].drop(index=copies).reset_index(drop=True)
        untouched = ~np.isin(np.arange(len(originals)), defects["truth_row"].to_numpy(dtype=int))
        pd.testing.assert_frame_equal(
            originals[untouched].reset_index(drop=True),
            clean.tables[table][untouched].reset_index(drop=True),
        )


def test_tables_are_strings_in_schema_order(clean_study):
    for table, model in CANONICAL_TABLES.items():
        frame = clean_study.tables[table]
        assert list(frame.columns) == column_names(model)
        assert all(frame[column].dtype == object for column in frame)
        assert frame.map(lambda value: isinstance(value, str)).all().all()
    assert list(clean_study.injected_defects.columns) == list(DEFECT_COLUMNS)
    json.dumps(clean_study.truth, sort_keys=True, indent=2)


def test_clean_study_has_no_defects_and_validates_against_the_schema(clean_study):
    assert clean_study.injected_defects.empty
    for table, model in CANONICAL_TABLES.items():
        model.validate(_parse(clean_study.tables[table], model))
        keys = list(RECORD_KEYS[table])
        assert not clean_study.tables[table].duplicated(keys).any()


def test_clean_values_are_written_in_the_canonical_forms(clean_study):
    participants, diary, sessions, assessments = (clean_study.tables[t] for t in TABLES)
    assert participants[Participants.participant_id].str.fullmatch(r"P\d{5}").all()
    assert set(participants[Participants.site]) == set(SITES)
    assert 0.01 < participants[Participants.site].eq("site_E").mean() < 0.06
    enrolled = pd.to_datetime(participants[Participants.enrolled_on])
    assert enrolled.min() >= pd.Timestamp("2024-01-01")
    assert enrolled.max() <= pd.Timestamp("2025-06-30")
    withdrawn = participants[Participants.withdrawn_on] != ""
    assert (withdrawn == (participants[Participants.withdrawal_reason] != "")).all()
    assert participants[Participants.age_years].astype(int).between(18, 75).all()
    one_decimal = r"\d+\.\d"
    assert diary[Diary.sitting_hours].str.fullmatch(one_decimal).all()
    assert diary[list(PAIN_SITES)].apply(lambda column: column.str.fullmatch(r"\d+")).all().all()
    assert set(diary[Diary.session_done]) == {"true", "false"}
    loads = sessions[Sessions.load_kg]
    assert loads[loads != ""].str.fullmatch(one_decimal).all()
    bodyweight = sessions[Sessions.exercise].isin(["glute_bridge", "clam_shell", "lateral_bound"])
    assert (loads[bodyweight] == "").all()
    for column in (Assessments.hip_abduction_n, Assessments.single_leg_balance_s):
        assert assessments[column].str.fullmatch(one_decimal).all()
    phase_of_exercise = sessions[Sessions.exercise].map(EXERCISE_PHASE).astype(str)
    assert (phase_of_exercise == sessions[Sessions.phase]).all()
    exercises_per_session = sessions.groupby([Sessions.participant_id, Sessions.date]).size()
    assert exercises_per_session.between(2, 3).all()
    session_days = set(zip(sessions[Sessions.participant_id], sessions[Sessions.date], strict=True))
    done_days = diary[diary[Diary.session_done] == "true"]
    assert set(zip(done_days[Diary.participant_id], done_days[Diary.date], strict=True)) == (
        session_days
    )


def test_withdrawal_is_common_among_low_adherers_and_loss_is_rare(calibration_study):
    truth = _truth_frame(calibration_study)
    withdrawn = truth["withdrawn_day"].notna()
    assert 0.10 <= withdrawn.mean() <= 0.15
    low_adherence = truth["overall_adherence"] < 0.5
    assert withdrawn[low_adherence].mean() > 2 * withdrawn[~low_adherence].mean()
    assert 0.005 <= truth["lost_day"].notna().mean() <= 0.05
    assert (truth[Participants.withdrawn_on] != "").equals(withdrawn)


def test_truth_days_agree_with_the_tables(clean_study, simulated_design):
    truth = _truth_frame(clean_study)
    diary = clean_study.tables["diary"]
    last_day = (
        pd.Series(
            _days_since_enrolment(diary, clean_study.tables["participants"]),
            index=diary[Diary.participant_id],
        )
        .groupby(level=0)
        .max()
    )
    last_day = truth[Participants.participant_id].map(last_day)
    withdrawn = truth["withdrawn_day"].notna()
    assert (last_day[withdrawn] == truth.loc[withdrawn, "withdrawn_day"] - 1).all()
    lost = truth["lost_day"].notna()
    assert (last_day[lost] == truth.loc[lost, "lost_day"] - 1).all()
    assert (last_day <= simulated_design.follow_up_weeks * DAYS_PER_WEEK - 1).all()
    recovered = truth["true_recovery_day"].notna()
    assert (truth.loc[recovered, "true_recovery_day"] >= 1).all()


def test_recovery_definition_first_holds_at_the_first_visit_on_or_after_truth(clean_study, params):
    visits = _recovery_definition_holds(clean_study, params["derive"]["recovery"])
    truth = pd.DataFrame(clean_study.truth["participants"]).set_index("participant_id")
    visits["true_day"] = visits[Assessments.participant_id].map(truth["true_recovery_day"])
    assert not (visits["holds"] & ~(visits["day"] >= visits["true_day"])).any()
    after = visits[visits["day"] >= visits["true_day"]]
    first_after = after.groupby(Assessments.participant_id).head(1)
    assert len(first_after) > 0.7 * len(truth)
    assert first_after["holds"].mean() >= 0.99
    clinician = visits[Assessments.clinician_recovered] == "true"
    assert (clinician == (visits["day"] >= visits["true_day"])).all()


def test_every_defect_kind_is_injected_at_the_requested_rate(messy_pair):
    clean, messy = messy_pair
    defects = messy.injected_defects
    assert set(defects["kind"]) == set(DEFECT_KINDS)
    for table in TABLES:
        mine = defects[defects["table"] == table]
        assert len(mine) == round(MESS_RATE * len(clean.tables[table]))
        assert mine["truth_row"].is_unique
        copies = (mine["kind"] == "duplicate_row").sum()
        assert len(messy.tables[table]) == len(clean.tables[table]) + copies
    assert defects["source_row"].min() >= 2


def test_recorded_defects_point_at_changed_cells(messy_pair):
    clean, messy = messy_pair
    for defect in messy.injected_defects.itertuples(index=False):
        raw = messy.tables[defect.table].iloc[defect.source_row - 2]
        truth = clean.tables[defect.table].iloc[defect.truth_row]
        if defect.kind == "duplicate_row":
            assert defect.column == ""
            assert raw.equals(truth)
            assert messy.tables[defect.table].iloc[defect.source_row - 3].equals(truth)
        else:
            assert raw[defect.column] != truth[defect.column]
            others = raw.index != defect.column
            assert raw[others].equals(truth[others])


def _defect_cells(messy_pair, kind: str) -> list[tuple[str, str, str]]:
    """(column, raw value, clean value) for every recorded defect of one kind."""
    clean, messy = messy_pair
    defects = messy.injected_defects
    return [
        (
            defect.column,
            messy.tables[defect.table].iloc[defect.source_row - 2][defect.column],
            clean.tables[defect.table].iloc[defect.truth_row][defect.column],
        )
        for defect in defects[defects["kind"] == kind].itertuples(index=False)
    ]


def test_defects_are_written_in_the_forms_the_cleaner_expects(messy_pair, params):
    formats = params["clean"]["date_formats"][1:]

    def parse_day_first(text: str) -> str:
        for date_format in formats:
            try:
                return datetime.strptime(text, date_format).strftime("%Y-%m-%d")
            except ValueError:
                continue
        raise AssertionError(f"unreadable date {text!r}")

    for _, raw, value in _defect_cells(messy_pair, "date_format"):
        assert parse_day_first(raw) == value
    for _, raw, value in _defect_cells(messy_pair, "sitting_minutes"):
        minutes = re.fullmatch(r"(\d+)( min)?", raw)
        assert minutes and int(minutes[1]) >= 60
        assert int(minutes[1]) / 60 == pytest.approx(float(value))
    for _, raw, value in _defect_cells(messy_pair, "load_lb"):
        pounds = re.fullmatch(r"(\d+\.\d)( lb|lbs)", raw)
        assert pounds and float(pounds[1]) / 2.20462 == pytest.approx(float(value), abs=0.05)
    for _, raw, value in _defect_cells(messy_pair, "exercise_variant"):
        assert raw not in EXERCISE_PHASE
        assert raw in EXERCISE_VARIANTS[value] or sorted(raw) == sorted(value.replace("_", " "))
    limits = {site: (0, 10) for site in PAIN_SITES} | {
        Diary.sitting_hours: (25, 40),
        Sessions.form_quality: (1, 5),
        Participants.age_years: (16, 100),
        Participants.bmi: (12, 70),
        Assessments.activation_score: (0, 10),
    }
    for column, raw, _ in _defect_cells(messy_pair, "out_of_range"):
        low, high = limits[column]
        if column == Diary.sitting_hours:
            assert low <= float(raw) <= high
        else:
            assert not low <= float(raw) <= high
    for _, raw, value in _defect_cells(messy_pair, "whitespace_case"):
        assert raw.strip().lower() == value.lower()
    truthy = {"yes", "y", "1", "true"}
    for _, raw, value in _defect_cells(messy_pair, "flag_spelling"):
        assert raw != value and (raw.lower() in truthy) == (value == "true")
    for kind in ("missing_required", "missing_value"):
        assert all(raw == "" for _, raw, _ in _defect_cells(messy_pair, kind))
    known = set(messy_pair[0].tables["participants"][Participants.participant_id])
    for _, raw, _ in _defect_cells(messy_pair, "unknown_participant"):
        assert re.fullmatch(r"P\d{5}", raw) and raw not in known
    for _, raw, _ in _defect_cells(messy_pair, "future_date"):
        assert 2031 <= int(raw[:4]) <= 2035


def test_dates_before_enrolment_lie_within_sixty_days_before_it(messy_pair):
    clean, messy = messy_pair
    enrolled = pd.to_datetime(
        clean.tables["participants"].set_index(Participants.participant_id)[
            Participants.enrolled_on
        ]
    )
    defects = messy.injected_defects
    for defect in defects[defects["kind"] == "date_before_enrolment"].itertuples(index=False):
        row = messy.tables[defect.table].iloc[defect.source_row - 2]
        days_before = (enrolled[row[Diary.participant_id]] - pd.Timestamp(row[Diary.date])).days
        assert 1 <= days_before <= 60


def test_redcap_export_refuses_a_messy_study(simulated_design):
    with pytest.raises(DataError):
        to_redcap(simulate_study(50, SEED, simulated_design, mess_rate=MESS_RATE))


# --- the design it shares with derive ---------------------------------------------------------


def test_sessions_follow_the_prescription_the_design_gives(simulated_design):
    """Each phase's weekly sessions are capped by, and reach, the prescription it is given."""
    prescription = {1: 7, 2: 5, 3: 2}
    design = replace(simulated_design, prescribed_sessions_per_week=prescription)
    study = simulate_study(300, SEED + 4, design)
    sessions = study.tables["sessions"].drop_duplicates([Sessions.participant_id, Sessions.date])
    sessions = sessions.assign(
        week=_days_since_enrolment(sessions, study.tables["participants"]) // DAYS_PER_WEEK
    )
    per_week = sessions.groupby([Sessions.participant_id, "week", Sessions.phase]).size()
    most_per_week = per_week.groupby(level=Sessions.phase).max()
    assert {int(phase): count for phase, count in most_per_week.items()} == prescription
    recorded = study.truth["generating_parameters"]["prescribed_sessions_per_week"]
    assert recorded == {str(phase): rate for phase, rate in prescription.items()}


def test_symptom_months_keep_clear_of_the_chronic_cut_off_the_design_gives(simulated_design):
    cut_off = 12.0
    study = simulate_study(2000, SEED + 5, replace(simulated_design, chronic_after_months=cut_off))
    months = study.tables["participants"][Participants.symptom_months].astype(float)
    margin = CUT_OFF_MARGIN_MONTHS
    assert not months.between(cut_off - margin, cut_off + margin, inclusive="neither").any()
    assert (months < cut_off).any() and (months > cut_off).any()
    assert study.truth["generating_parameters"]["chronic_after_months"] == cut_off


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"follow_up_weeks": 4}, "follow_up_weeks must be at least 8, got 4"),
        ({"prescribed_sessions_per_week": {1: 7, 2: 8, 3: 3}}, "got {1: 7, 2: 8, 3: 3}"),
        ({"prescribed_sessions_per_week": {1: 7, 2: 3}}, "each of phases 1, 2, 3"),
        ({"chronic_after_months": 0.5}, "chronic_after_months must exceed 0.6"),
    ],
)
def test_a_design_the_simulator_cannot_follow_is_refused(simulated_design, change, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        replace(simulated_design, **change)


def test_the_shipped_design_is_the_one_derive_analyses(params, simulated_design):
    """params.yaml's study is followed as long as derive looks, and the simulator's margins fit
    derive's definitions (a lost participant is classed lost, pain is gone before recovery)."""
    derive = params["derive"]
    assert simulated_design.follow_up_weeks * DAYS_PER_WEEK == derive["follow_up_days"]
    assert LOSS_MODEL["days_before_end_of_follow_up"] > derive["lost_after_days_without_contact"]
    assert PAIN_MODEL["gone_days_before_recovery"] >= derive["recovery"]["pain_window_days"]


def test_the_simulate_command_takes_the_design_from_the_derive_block(tmp_path, params):
    changed = deepcopy(params)
    changed["derive"]["chronic_after_months"] = 9
    changed["derive"]["adherence"]["prescribed_sessions_per_week"] = {1: 7, 2: 4, 3: 2}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(changed))
    out = tmp_path / "raw"
    arguments = ["simulate", "--out", out, "--participants", 10, "--params", params_file]
    result = CliRunner().invoke(app, list(map(str, arguments)), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    generating = json.loads((out / "truth.json").read_text())["generating_parameters"]
    assert generating["chronic_after_months"] == 9.0
    assert generating["prescribed_sessions_per_week"] == {"1": 7, "2": 4, "3": 2}
