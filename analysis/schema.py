"""Canonical tables as pandera models: the one place that names columns and their rules.

Code refers to a column as ``Participants.severity`` (pandera returns the column name), never
as a string literal scattered around the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype
from pandera.engines.pandas_engine import NpString
from pandera.errors import SchemaError
from pandera.typing import Series

# Text in the canonical tables lives in Arrow memory: millions of ids, dates and labels are
# then checked and written without a detour through Python objects.
Text = Annotated[pd.StringDtype, "pyarrow", pd.NA]

SEVERITY_LEVELS = ("mild", "moderate", "severe")
UNDERLYING_CONDITIONS = ("none", "disc", "nerve_entrapment", "other")
SEX_LEVELS = ("female", "male")
PHASES = (1, 2, 3)
PAIN_SITES = ("pain_low_back", "pain_hip", "pain_knee")
DAYS_PER_WEEK = 7

# The domain's exercise catalogue: canonical name -> programme phase it belongs to.
EXERCISE_PHASE = {
    "glute_bridge": 1,
    "clam_shell": 1,
    "side_lying_leg_lift": 1,
    "weighted_hip_thrust": 2,
    "step_up": 2,
    "cable_kickback": 2,
    "squat": 2,
    "deadlift": 2,
    "lunge": 3,
    "single_leg_deadlift": 3,
    "lateral_bound": 3,
}

# Why a participant's follow-up ended without recovery (competing event = withdrawn).
CENSOR_WITHDRAWN = "withdrawn"
CENSOR_LOST = "lost_to_follow_up"
CENSOR_END = "end_of_follow_up"
CENSOR_REASONS = (CENSOR_WITHDRAWN, CENSOR_LOST, CENSOR_END)
EVENT_RECOVERED = "recovered"
EVENT_CENSORED = "censored"
EVENT_TYPES = (EVENT_RECOVERED, CENSOR_WITHDRAWN, EVENT_CENSORED)
# The domain's earlier milestone: strength up and secondary pain clearly down.
EVENT_FIRST_CHANGE = "first_change"
FIRST_CHANGE_EVENT_TYPES = (EVENT_FIRST_CHANGE, CENSOR_WITHDRAWN, EVENT_CENSORED)


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = True


class Participants(_Strict):
    participant_id: Series[Text] = pa.Field(unique=True, str_length={"min_value": 1})
    site: Series[Text]
    enrolled_on: Series[pd.Timestamp]
    age_years: Series[float] = pa.Field(ge=16, le=100, nullable=True)
    sex: Series[Text] = pa.Field(isin=SEX_LEVELS, nullable=True)
    bmi: Series[float] = pa.Field(ge=12, le=70, nullable=True)
    severity: Series[Text] = pa.Field(isin=SEVERITY_LEVELS)
    symptom_months: Series[float] = pa.Field(ge=0, le=600, nullable=True)
    underlying_condition: Series[Text] = pa.Field(isin=UNDERLYING_CONDITIONS)
    baseline_sitting_hours: Series[float] = pa.Field(ge=0, le=24, nullable=True)
    withdrawn_on: Series[pd.Timestamp] = pa.Field(nullable=True)
    withdrawal_reason: Series[Text] = pa.Field(nullable=True)


class Diary(_Strict):
    participant_id: Series[Text]
    date: Series[pd.Timestamp]
    sitting_hours: Series[float] = pa.Field(ge=0, le=24, nullable=True)
    sitting_breaks: Series[float] = pa.Field(ge=0, le=200, nullable=True)
    pain_low_back: Series[float] = pa.Field(ge=0, le=10, nullable=True)
    pain_hip: Series[float] = pa.Field(ge=0, le=10, nullable=True)
    pain_knee: Series[float] = pa.Field(ge=0, le=10, nullable=True)
    session_done: Series[pd.BooleanDtype] = pa.Field(nullable=True)


class Sessions(_Strict):
    participant_id: Series[Text]
    date: Series[pd.Timestamp]
    phase: Series[int] = pa.Field(isin=PHASES)
    exercise: Series[Text] = pa.Field(isin=tuple(EXERCISE_PHASE))
    sets: Series[float] = pa.Field(ge=1, le=20, nullable=True)
    reps: Series[float] = pa.Field(ge=1, le=200, nullable=True)
    load_kg: Series[float] = pa.Field(ge=0, le=400, nullable=True)
    form_quality: Series[float] = pa.Field(ge=1, le=5, nullable=True)


class Assessments(_Strict):
    participant_id: Series[Text]
    date: Series[pd.Timestamp]
    activation_score: Series[float] = pa.Field(ge=0, le=10, nullable=True)
    hip_abduction_n: Series[float] = pa.Field(ge=0, le=1000, nullable=True)
    single_leg_balance_s: Series[float] = pa.Field(ge=0, le=300, nullable=True)
    trendelenburg_positive: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    phase_assigned: Series[int] = pa.Field(isin=PHASES)
    clinician_recovered: Series[pd.BooleanDtype] = pa.Field(nullable=True)


CANONICAL_TABLES: dict[str, type[_Strict]] = {
    "participants": Participants,
    "diary": Diary,
    "sessions": Sessions,
    "assessments": Assessments,
}


# A quarantined "row" is kept out of the clean table whole; a quarantined "value" was set to
# missing in a row that is otherwise kept. Either way the original text is kept here.
QUARANTINE_SCOPES = ("row", "value")


class Quarantine(_Strict):
    table: Series[str]
    source_file: Series[str]
    source_row: Series[int] = pa.Field(ge=2)
    column: Series[str] = pa.Field(nullable=True)
    value: Series[str] = pa.Field(nullable=True)
    rule: Series[str]
    reason: Series[str]
    scope: Series[str] = pa.Field(isin=QUARANTINE_SCOPES)


# Columns that identify one record: duplicates are judged on these.
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "participants": (Participants.participant_id,),
    "diary": (Diary.participant_id, Diary.date),
    "sessions": (Sessions.participant_id, Sessions.date, Sessions.exercise),
    "assessments": (Assessments.participant_id, Assessments.date),
}


class Recovery(pa.DataFrameModel):
    """One row per participant: the time-to-event analysis frame, one set of outcome columns
    per milestone (full recovery keeps the historical names; see MILESTONES)."""

    participant_id: Series[str] = pa.Field(unique=True)
    site: Series[str]
    age_years: Series[float] = pa.Field(nullable=True)
    sex: Series[str] = pa.Field(nullable=True)
    bmi: Series[float] = pa.Field(nullable=True)
    severity: Series[str] = pa.Field(isin=SEVERITY_LEVELS)
    symptom_months: Series[float] = pa.Field(nullable=True)
    chronic: Series[bool]
    underlying_condition: Series[str] = pa.Field(isin=UNDERLYING_CONDITIONS)
    baseline_sitting_hours: Series[float] = pa.Field(nullable=True)
    recovered: Series[bool]
    time_to_recovery_days: Series[float] = pa.Field(ge=0)
    interval_lower_days: Series[float] = pa.Field(ge=0)
    interval_upper_days: Series[float] = pa.Field(ge=0, nullable=True)
    censor_reason: Series[str] = pa.Field(isin=CENSOR_REASONS, nullable=True)
    event_type: Series[str] = pa.Field(isin=EVENT_TYPES)
    first_change: Series[bool]
    time_to_first_change_days: Series[float] = pa.Field(ge=0)
    first_change_lower_days: Series[float] = pa.Field(ge=0)
    first_change_upper_days: Series[float] = pa.Field(ge=0, nullable=True)
    first_change_censor_reason: Series[str] = pa.Field(isin=CENSOR_REASONS, nullable=True)
    first_change_event_type: Series[str] = pa.Field(isin=FIRST_CHANGE_EVENT_TYPES)
    overall_adherence: Series[float] = pa.Field(ge=0, nullable=True)
    adherence_group: Series[str] = pa.Field(nullable=True)
    mean_sitting_hours: Series[float] = pa.Field(ge=0, le=24, nullable=True)
    sitting_band: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True


@dataclass(frozen=True)
class Milestone:
    """The Recovery columns that hold one milestone's outcome (interval-censored at visits)."""

    label: str
    event: str
    time: str
    lower: str
    upper: str
    censor_reason: str
    event_type: str
    event_name: str


MILESTONE_FULL_RECOVERY = "full_recovery"
MILESTONE_FIRST_CHANGE = "first_change"
MILESTONES = {
    MILESTONE_FIRST_CHANGE: Milestone(
        label="first functional change",
        event=Recovery.first_change,
        time=Recovery.time_to_first_change_days,
        lower=Recovery.first_change_lower_days,
        upper=Recovery.first_change_upper_days,
        censor_reason=Recovery.first_change_censor_reason,
        event_type=Recovery.first_change_event_type,
        event_name=EVENT_FIRST_CHANGE,
    ),
    MILESTONE_FULL_RECOVERY: Milestone(
        label="full recovery",
        event=Recovery.recovered,
        time=Recovery.time_to_recovery_days,
        lower=Recovery.interval_lower_days,
        upper=Recovery.interval_upper_days,
        censor_reason=Recovery.censor_reason,
        event_type=Recovery.event_type,
        event_name=EVENT_RECOVERED,
    ),
}


class WeeklyIntervals(pa.DataFrameModel):
    """Start/stop rows (days since enrolment) for time-varying models, lifelines' convention."""

    participant_id: Series[str]
    start: Series[float] = pa.Field(ge=0)
    stop: Series[float] = pa.Field(gt=0)
    event: Series[bool]
    weekly_adherence: Series[float] = pa.Field(ge=0, nullable=True)
    weekly_sitting_hours: Series[float] = pa.Field(ge=0, le=24, nullable=True)
    phase: Series[int] = pa.Field(isin=PHASES)

    class Config:
        coerce = True


class WeeklyTrajectories(pa.DataFrameModel):
    """Participant x week (week 0 = first week after enrolment)."""

    participant_id: Series[str]
    week: Series[int] = pa.Field(ge=0)
    pain_low_back: Series[float] = pa.Field(nullable=True)
    pain_hip: Series[float] = pa.Field(nullable=True)
    pain_knee: Series[float] = pa.Field(nullable=True)
    hip_abduction_n: Series[float] = pa.Field(nullable=True)
    weekly_adherence: Series[float] = pa.Field(nullable=True)
    weekly_sitting_hours: Series[float] = pa.Field(nullable=True)
    adherence_group: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True


def column_names(model: type[pa.DataFrameModel]) -> list[str]:
    """The columns of a canonical table, in contract order."""
    return list(model.to_schema().columns)


def _failing_values(values: pd.Series, failing) -> list:
    """A few distinct values where `failing` holds (a missing result counts as passing)."""
    flags = np.asarray(
        failing.to_numpy(dtype=bool, na_value=False) if isinstance(failing, pd.Series) else failing,
        dtype=bool,
    )
    if not flags.any():
        return []  # the usual case: no subset of millions of rows to build
    return values[flags].drop_duplicates().head(5).tolist()


def _failing_check(check_name: str, statistics: dict, values: pd.Series) -> list:
    """The values (a few) that fail one built-in pandera check, tested without pandera.

    A missing value fails none (whether it may be missing is checked apart): comparisons with
    it are false or missing, so no copy of the column without them is needed.
    """
    if check_name == "greater_than_or_equal_to":
        return _failing_values(values, values < statistics["min_value"])
    if check_name == "less_than_or_equal_to":
        return _failing_values(values, values > statistics["max_value"])
    if check_name == "greater_than":
        return _failing_values(values, values <= statistics["min_value"])
    if check_name == "isin":
        # Over the distinct values: millions of rows hold a handful of levels.
        distinct = pd.Series(values.unique()).dropna()
        return _failing_values(distinct, ~distinct.isin(statistics["allowed_values"]))
    if check_name == "str_length":
        lengths = values.str.len()
        too_short = lengths < (statistics["min_value"] or 0)
        too_long = lengths > statistics["max_value"] if statistics["max_value"] else False
        return _failing_values(values, too_short | too_long)
    raise NotImplementedError(f"no vectorised test for the pandera check {check_name!r}")


def _has_model_dtype(values: pd.Series, column: pa.Column) -> bool:
    """The column holds the model's dtype. A `str` column (numpy has no dtype for texts of any
    length, so pandas keeps them in object columns) is an object column of texts and missing
    values only: the test pandera makes of it."""
    if isinstance(column.dtype, NpString):
        return values.dtype == object and infer_dtype(values, skipna=True) in ("string", "empty")
    return values.dtype == column.dtype.type


def check_typed_frame(model: type[pa.DataFrameModel], frame: pd.DataFrame) -> pd.DataFrame:
    """A frame checked against its model with vectorised tests; pandera coercion not needed.

    The stage-boundary check for frames whose columns the caller has already typed (the
    cleaning parsers): column names and order, each column's dtype (only whole-number columns
    read as floats are cast, in place, as pandera's coercion would), missing values where the model
    allows none, uniqueness, and every check the model declares (ranges, levels, text length).
    A check it cannot test is an error, never skipped. Raises pandera's SchemaError naming the
    column, the check and a few failing values.
    """
    schema = model.to_schema()
    problems = []
    if list(frame.columns) != list(schema.columns):
        problems.append(f"columns {list(frame.columns)} are not {list(schema.columns)}")
    else:
        for name, column in schema.columns.items():
            values = frame[name]
            to_int = str(column.dtype).startswith("int") and values.dtype.kind == "f"
            if to_int and (values % 1 == 0).all():
                frame[name] = values.astype(column.dtype.type)  # in place: no frame copy
        for name, column in schema.columns.items():
            values = frame[name]
            if not _has_model_dtype(values, column):
                problems.append(f"{name}: dtype {values.dtype!r}, expected {column.dtype}")
                continue
            if not column.nullable and values.isna().any():
                problems.append(f"{name}: missing values")
            if column.unique and values.duplicated().any():
                problems.append(
                    f"{name}: repeated values {_failing_values(values, values.duplicated())}"
                )
            for check in column.checks:
                failing = _failing_check(check.name, check.statistics, values)
                if failing:
                    problems.append(f"{name}: {check.name} {check.statistics} fails for {failing}")
    if problems:
        raise SchemaError(schema, frame, f"{model.__name__}: " + "; ".join(problems))
    return frame
