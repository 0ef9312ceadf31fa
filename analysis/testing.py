"""Reusable statistical assertions for tests (as scikit-survival's sksurv.testing), and the one
builder of raw study rows the tests and the in-memory pipeline start from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.clean import SOURCE_ROW
from analysis.schema import CANONICAL_TABLES, column_names


def assert_survival_curve(survival: pd.Series | np.ndarray) -> None:
    """A survival curve lies in [0, 1] and never increases."""
    values = np.asarray(survival, dtype=float)
    assert np.all((values >= 0) & (values <= 1)), "survival outside [0, 1]"
    assert np.all(np.diff(values) <= 1e-12), "survival increases"


def assert_ci_contains_estimate(
    frame: pd.DataFrame, estimate: str = "estimate", low: str = "conf_low", high: str = "conf_high"
) -> None:
    """Every confidence interval that is defined contains its estimate."""
    defined = frame[[estimate, low, high]].dropna()
    assert (defined[low] <= defined[estimate] + 1e-12).all(), "conf_low above estimate"
    assert (defined[estimate] <= defined[high] + 1e-12).all(), "conf_high below estimate"


def assert_close_to_reference(
    actual: pd.Series | np.ndarray, reference: pd.Series | np.ndarray, rtol: float
) -> None:
    """Values agree with an R reference to a relative tolerance, element by element."""
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(reference, float), rtol=rtol)


def with_source_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A raw table's `source_row` as a spreadsheet shows it: header row 1, data from row 2."""
    return frame.assign(**{SOURCE_ROW: np.arange(2, len(frame) + 2)})


def raw_table(table: str, rows: list[dict]) -> pd.DataFrame:
    """A raw table as a reader returns it: the canonical columns as text plus `source_row`."""
    frame = pd.DataFrame(rows, columns=column_names(CANONICAL_TABLES[table])).fillna("")
    return with_source_rows(frame)


def raw_participant(participant_id: str = "P001", **overrides: str) -> dict[str, str]:
    """One participants row as an export has it (every cell text); `overrides` replace cells."""
    row = dict(
        participant_id=participant_id,
        site="site_A",
        enrolled_on="2025-01-06",
        age_years="40",
        sex="female",
        bmi="24.5",
        severity="mild",
        symptom_months="3",
        underlying_condition="none",
        baseline_sitting_hours="8",
        withdrawn_on="",
        withdrawal_reason="",
    )
    return row | overrides


def raw_diary(participant_id: str = "P001", day: str = "2025-01-07", **overrides: str) -> dict:
    """One diary day as an export has it."""
    row = dict(
        participant_id=participant_id,
        date=day,
        sitting_hours="8.5",
        sitting_breaks="3",
        pain_low_back="4",
        pain_hip="3",
        pain_knee="1",
        session_done="true",
    )
    return row | overrides


def raw_session(
    participant_id: str = "P001",
    day: str = "2025-01-07",
    exercise: str = "glute_bridge",
    **overrides: str,
) -> dict:
    """One exercise performed, as an export has it."""
    row = dict(
        participant_id=participant_id,
        date=day,
        phase="1",
        exercise=exercise,
        sets="3",
        reps="15",
        load_kg="",
        form_quality="3",
    )
    return row | overrides


def raw_visit(participant_id: str = "P001", day: str = "2025-01-20", **overrides: str) -> dict:
    """One clinic visit, as an export has it."""
    row = dict(
        participant_id=participant_id,
        date=day,
        activation_score="4.5",
        hip_abduction_n="120.5",
        single_leg_balance_s="12",
        trendelenburg_positive="true",
        phase_assigned="1",
        clinician_recovered="false",
    )
    return row | overrides
