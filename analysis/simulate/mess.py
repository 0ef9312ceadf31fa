"""The mess a real study export has, injected into clean simulated tables and recorded.

Each defect kind has a writer that changes one cell (or duplicates one row) in the forms a
study team really writes; every defect is one row of injected_defects.csv (DEFECT_COLUMNS) so
the cleaning stage can be scored against it. A new cleaning rule comes with its injector here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.schema import (
    PAIN_SITES,
    Assessments,
    Diary,
    Participants,
    Sessions,
)
from analysis.simulate.cohort import TABLES, format_dates, participant_ids

DEFECT_COLUMNS = ("table", "source_row", "column", "kind", "truth_row")

# Spellings a study team really writes; the cleaner is tested against these.
EXERCISE_VARIANTS = {
    "glute_bridge": ("Glute Bridge", "glute-bridges", "glute bridges"),
    "clam_shell": ("clamshell", "Clam Shells", "clam-shell"),
    "side_lying_leg_lift": ("Side lying leg lift", "side-lying leg lifts"),
    "weighted_hip_thrust": ("hip thrust (weighted)", "Weighted Hip Thrust", "weighted hip thrusts"),
    "step_up": ("Step Up", "step-ups", "stepup"),
    "cable_kickback": ("Cable Kickback", "cable kickbacks", "cable kick-back"),
    "squat": ("squats", "Squats"),
    "deadlift": ("Deadlift", "dead lift", "deadlifts"),
    "lunge": ("lunges", "Lunges"),
    "single_leg_deadlift": ("single leg deadlift", "Single-Leg Deadlift"),
    "lateral_bound": ("Lateral Bound", "lateral bounds", "lateral-bound"),
}
EXERCISE_TYPO_SHARE = 0.3
TRUE_SPELLINGS = ("yes", "Y", "1", "TRUE", "True")
FALSE_SPELLINGS = ("no", "N", "0", "FALSE", "False")
MESSY_DATE_FORMATS = ("%d/%m/%Y", "%Y/%m/%d", "%d.%m.%Y", "day_month_name")
FUTURE_YEARS = (2031, 2035)

DEFECT_KINDS = (
    "duplicate_row",
    "date_format",
    "sitting_minutes",
    "load_lb",
    "exercise_variant",
    "out_of_range",
    "date_before_enrolment",
    "future_date",
    "missing_required",
    "missing_value",
    "unknown_participant",
    "whitespace_case",
    "flag_spelling",
)
TABLE_DEFECT_KINDS = {
    "participants": (
        "duplicate_row",
        "date_format",
        "out_of_range",
        "missing_value",
        "whitespace_case",
    ),
    "diary": (
        "duplicate_row",
        "date_format",
        "sitting_minutes",
        "out_of_range",
        "date_before_enrolment",
        "future_date",
        "missing_required",
        "missing_value",
        "unknown_participant",
        "whitespace_case",
        "flag_spelling",
    ),
    "sessions": (
        "duplicate_row",
        "date_format",
        "load_lb",
        "exercise_variant",
        "out_of_range",
        "date_before_enrolment",
        "future_date",
        "missing_required",
        "missing_value",
        "unknown_participant",
        "whitespace_case",
    ),
    "assessments": (
        "duplicate_row",
        "date_format",
        "out_of_range",
        "date_before_enrolment",
        "future_date",
        "missing_required",
        "missing_value",
        "unknown_participant",
        "whitespace_case",
        "flag_spelling",
    ),
}
OPTIONAL_NUMBERS = {
    "participants": (
        Participants.age_years,
        Participants.bmi,
        Participants.symptom_months,
        Participants.baseline_sitting_hours,
    ),
    "diary": (Diary.sitting_hours, Diary.sitting_breaks, *PAIN_SITES),
    "sessions": (Sessions.sets, Sessions.reps, Sessions.load_kg, Sessions.form_quality),
    "assessments": (
        Assessments.activation_score,
        Assessments.hip_abduction_n,
        Assessments.single_leg_balance_s,
    ),
}
CASE_PRONE_COLUMNS = {
    "participants": (
        Participants.participant_id,
        Participants.sex,
        Participants.severity,
        Participants.underlying_condition,
    ),
    "diary": (Diary.participant_id,),
    "sessions": (Sessions.participant_id, Sessions.exercise),
    "assessments": (Assessments.participant_id,),
}
FLAG_COLUMNS = {
    "diary": (Diary.session_done,),
    "assessments": (Assessments.trendelenburg_positive, Assessments.clinician_recovered),
}


@dataclass
class _MessContext:
    """What the defect writers need to know about the study."""

    table: str
    enrolment_day: dict[str, int]
    participants: int
    rng: np.random.Generator


def _date_column(table: str) -> str:
    return Participants.enrolled_on if table == "participants" else Diary.date


def _iso_to_epoch_days(values: np.ndarray) -> np.ndarray:
    return np.asarray(values.astype("datetime64[D]").astype(np.int64))


def _write_messy_date(epoch_day: int, rng: np.random.Generator) -> str:
    """A day-first or year-first date in one of the non-ISO formats the cleaner accepts."""
    date = pd.Timestamp(np.datetime64(int(epoch_day), "D"))
    style = MESSY_DATE_FORMATS[rng.integers(len(MESSY_DATE_FORMATS))]
    if style == "day_month_name":
        return f"{date.day} {date.strftime('%b %Y')}"
    return date.strftime(style)


def _swap_adjacent_letters(name: str, rng: np.random.Generator) -> str:
    """A one-typo spelling: two different adjacent letters swapped."""
    spaced = name.replace("_", " ")
    positions = [
        index
        for index in range(len(spaced) - 1)
        if spaced[index].isalpha() and spaced[index + 1].isalpha()
        if spaced[index] != spaced[index + 1]
    ]
    index = positions[rng.integers(len(positions))]
    return spaced[:index] + spaced[index + 1] + spaced[index] + spaced[index + 2 :]


def _exercise_variant(name: str, rng: np.random.Generator) -> str:
    if len(name) >= 6 and rng.random() < EXERCISE_TYPO_SHARE:
        return _swap_adjacent_letters(name, rng)
    variants = EXERCISE_VARIANTS[name]
    return variants[rng.integers(len(variants))]


def _whitespace_case(value: str, rng: np.random.Generator) -> str:
    """Stray spaces and changed case, never equal to the original."""
    styles = (str.lower, str.upper, str.title)
    text = styles[rng.integers(len(styles))](value)
    padding = (" ", "", "  ")
    text = padding[rng.integers(3)] + text + padding[rng.integers(3)]
    return text if text != value else f" {text} "


def _pick_columns(
    values: dict[str, np.ndarray], rows: np.ndarray, columns: tuple[str, ...], rng
) -> np.ndarray:
    """One column per row, chosen among the given columns that hold a value in that row."""
    filled = np.column_stack([values[column][rows] != "" for column in columns])
    keys = np.where(filled, rng.random(filled.shape), -1.0)
    return np.asarray(columns, dtype=object)[keys.argmax(axis=1)]


def _apply_duplicate_row(values, rows, context) -> np.ndarray:
    return np.full(len(rows), "", dtype=object)


def _apply_date_format(values, rows, context) -> np.ndarray:
    column = _date_column(context.table)
    days = _iso_to_epoch_days(values[column][rows])
    values[column][rows] = [_write_messy_date(day, context.rng) for day in days]
    return np.full(len(rows), column, dtype=object)


def _apply_sitting_minutes(values, rows, context) -> np.ndarray:
    column = Diary.sitting_hours
    minutes = np.rint(values[column][rows].astype(float) * 60).astype(int)
    unit = np.where(context.rng.random(len(rows)) < 0.5, "", " min")
    values[column][rows] = [f"{value}{suffix}" for value, suffix in zip(minutes, unit, strict=True)]
    return np.full(len(rows), column, dtype=object)


def _apply_load_lb(values, rows, context) -> np.ndarray:
    column = Sessions.load_kg
    pounds = values[column][rows].astype(float) * 2.20462
    unit = np.where(context.rng.random(len(rows)) < 0.5, " lb", "lbs")
    values[column][rows] = [
        f"{value:.1f}{suffix}" for value, suffix in zip(pounds, unit, strict=True)
    ]
    return np.full(len(rows), column, dtype=object)


def _apply_exercise_variant(values, rows, context) -> np.ndarray:
    column = Sessions.exercise
    values[column][rows] = [_exercise_variant(name, context.rng) for name in values[column][rows]]
    return np.full(len(rows), column, dtype=object)


def _out_of_range_value(column: str, rng: np.random.Generator) -> str:
    if column in PAIN_SITES:
        return str(rng.choice([-1, *range(11, 16)]))
    if column == Diary.sitting_hours:
        return f"{rng.uniform(25.0, 40.0):.1f}"
    if column == Sessions.form_quality:
        return str(rng.choice([0, 6, 7, 8, 9]))
    if column == Participants.age_years:
        return "150"
    if column == Participants.bmi:
        return str(rng.choice([5, 120]))
    return f"{rng.uniform(11.0, 20.0):.1f}"


OUT_OF_RANGE_COLUMNS = {
    "participants": (Participants.age_years, Participants.bmi),
    "diary": (Diary.sitting_hours, *PAIN_SITES),
    "sessions": (Sessions.form_quality,),
    "assessments": (Assessments.activation_score,),
}


def _apply_out_of_range(values, rows, context) -> np.ndarray:
    columns = _pick_columns(values, rows, OUT_OF_RANGE_COLUMNS[context.table], context.rng)
    for row, column in zip(rows, columns, strict=True):
        values[column][row] = _out_of_range_value(column, context.rng)
    return columns


def _apply_date_before_enrolment(values, rows, context) -> np.ndarray:
    enrolled = np.array(
        [context.enrolment_day[participant] for participant in values[Diary.participant_id][rows]]
    )
    earlier = enrolled - context.rng.integers(1, 61, len(rows))
    values[Diary.date][rows] = format_dates(earlier)
    return np.full(len(rows), Diary.date, dtype=object)


def _apply_future_date(values, rows, context) -> np.ndarray:
    first = np.datetime64(f"{FUTURE_YEARS[0]}-01-01").astype(np.int64)
    last = np.datetime64(f"{FUTURE_YEARS[1]}-12-31").astype(np.int64)
    column = _date_column(context.table)
    values[column][rows] = format_dates(context.rng.integers(first, last + 1, len(rows)))
    return np.full(len(rows), column, dtype=object)


def _apply_missing_required(values, rows, context) -> np.ndarray:
    columns = _pick_columns(values, rows, (Diary.participant_id, Diary.date), context.rng)
    for row, column in zip(rows, columns, strict=True):
        values[column][row] = ""
    return columns


def _apply_missing_value(values, rows, context) -> np.ndarray:
    columns = _pick_columns(values, rows, OPTIONAL_NUMBERS[context.table], context.rng)
    for row, column in zip(rows, columns, strict=True):
        values[column][row] = ""
    return columns


def _apply_unknown_participant(values, rows, context) -> np.ndarray:
    width = len(participant_ids(context.participants)[-1]) - 1
    numbers = context.rng.integers(
        context.participants + 1, max(10**width, context.participants + 2), len(rows)
    )
    column = Diary.participant_id
    values[column][rows] = [f"P{number:0{width}d}" for number in numbers]
    return np.full(len(rows), column, dtype=object)


def _apply_whitespace_case(values, rows, context) -> np.ndarray:
    columns = _pick_columns(values, rows, CASE_PRONE_COLUMNS[context.table], context.rng)
    for row, column in zip(rows, columns, strict=True):
        values[column][row] = _whitespace_case(values[column][row], context.rng)
    return columns


def _apply_flag_spelling(values, rows, context) -> np.ndarray:
    columns = _pick_columns(values, rows, FLAG_COLUMNS[context.table], context.rng)
    for row, column in zip(rows, columns, strict=True):
        spellings = TRUE_SPELLINGS if values[column][row] == "true" else FALSE_SPELLINGS
        values[column][row] = spellings[context.rng.integers(len(spellings))]
    return columns


DEFECT_WRITERS = {
    "duplicate_row": _apply_duplicate_row,
    "date_format": _apply_date_format,
    "sitting_minutes": _apply_sitting_minutes,
    "load_lb": _apply_load_lb,
    "exercise_variant": _apply_exercise_variant,
    "out_of_range": _apply_out_of_range,
    "date_before_enrolment": _apply_date_before_enrolment,
    "future_date": _apply_future_date,
    "missing_required": _apply_missing_required,
    "missing_value": _apply_missing_value,
    "unknown_participant": _apply_unknown_participant,
    "whitespace_case": _apply_whitespace_case,
    "flag_spelling": _apply_flag_spelling,
}


def _eligible(kind: str, values: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows where a defect of this kind would really change a cell."""
    if kind == "load_lb":
        return values[Sessions.load_kg][rows] != ""
    return np.ones(len(rows), dtype=bool)


def _inject_table(
    clean: pd.DataFrame, mess_rate: float, context: _MessContext
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One table with defects in round(mess_rate * rows) distinct rows, and their ledger."""
    rng = context.rng
    values = {column: clean[column].to_numpy(dtype=object, copy=True) for column in clean}
    defect_count = int(round(mess_rate * len(clean)))
    rows = np.sort(rng.choice(len(clean), size=defect_count, replace=False))
    kinds = TABLE_DEFECT_KINDS[context.table]
    eligible = np.column_stack([_eligible(kind, values, rows) for kind in kinds])
    chosen = np.where(eligible, rng.random(eligible.shape), -1.0).argmax(axis=1)
    columns = np.empty(len(rows), dtype=object)
    for index, kind in enumerate(kinds):
        mine = chosen == index
        if mine.any():
            columns[mine] = DEFECT_WRITERS[kind](values, rows[mine], context)

    duplicated = np.zeros(len(clean), dtype=np.int64)
    is_duplicate = np.asarray(kinds, dtype=object)[chosen] == "duplicate_row"
    duplicated[rows[is_duplicate]] = 1
    messy_order = np.repeat(np.arange(len(clean)), 1 + duplicated)
    messy = pd.DataFrame({column: values[column][messy_order] for column in clean})
    position = np.arange(len(clean)) + np.cumsum(duplicated) - duplicated
    # A copy sits right after its original; a spreadsheet shows the header as row 1.
    source_row = position[rows] + is_duplicate + 2
    defects = pd.DataFrame(
        {
            "table": context.table,
            "source_row": source_row.astype(np.int64),
            "column": columns.astype(object),
            "kind": np.asarray(kinds, dtype=object)[chosen],
            "truth_row": pd.array(rows, dtype="Int64"),
        },
        columns=list(DEFECT_COLUMNS),
    )
    return messy, defects


def inject_mess(
    clean: dict[str, pd.DataFrame], mess_rate: float, rng: np.random.Generator
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Copies of the clean tables with defects in a share of rows, and one ledger row per defect."""
    enrolled = clean["participants"]
    enrolment_day = dict(
        zip(
            enrolled[Participants.participant_id],
            _iso_to_epoch_days(enrolled[Participants.enrolled_on].to_numpy()).tolist(),
            strict=True,
        )
    )
    messy, ledgers = {}, []
    for table in TABLES:
        context = _MessContext(table, enrolment_day, len(enrolled), rng)
        messy[table], ledger = _inject_table(clean[table], mess_rate, context)
        ledgers.append(ledger)
    defects = pd.concat(ledgers, ignore_index=True)
    defects["truth_row"] = defects["truth_row"].astype("Int64")
    return messy, defects
