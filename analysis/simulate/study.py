"""A whole synthetic study: the cohort's tables, its truth, the injected mess, its exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from analysis.errors import DataError, ParameterError
from analysis.redcap.writer import redcap_export
from analysis.schema import DAYS_PER_WEEK
from analysis.simulate.cohort import (
    ENROLMENT_LAST,
    StudyDesign,
    cohort_tables,
    cohort_truth,
    participant_ids,
    simulate_cohort,
)
from analysis.simulate.mess import inject_mess

MAX_MESS_RATE = 0.5


@dataclass
class SimulatedStudy:
    """Raw tables as written to CSV (all strings), the generating truth and the defect ledger."""

    tables: dict[str, pd.DataFrame]
    truth: dict
    injected_defects: pd.DataFrame
    # The day the study's data were exported: a fact of the study (its last possible data day),
    # so cleaning the same export on any day gives the same result.
    export_date: date


def simulate_study(
    participants: int, seed: int, design: StudyDesign, mess_rate: float = 0.0
) -> SimulatedStudy:
    """A synthetic study: raw string tables, the generating truth and the injected defects."""
    if participants < 1:
        raise ParameterError(f"participants must be at least 1, got {participants}")
    if not 0.0 <= mess_rate <= MAX_MESS_RATE:
        raise ParameterError(f"mess_rate must lie in [0, {MAX_MESS_RATE}], got {mess_rate}")
    cohort_seed, table_seed, mess_seed = np.random.SeedSequence(seed).spawn(3)
    cohort = simulate_cohort(participants, design, np.random.default_rng(cohort_seed))
    ids = participant_ids(participants)
    clean = cohort_tables(cohort, ids, np.random.default_rng(table_seed))
    truth = cohort_truth(cohort, ids, seed, mess_rate, design)
    tables, defects = inject_mess(clean, mess_rate, np.random.default_rng(mess_seed))
    return SimulatedStudy(
        tables=tables,
        truth=truth,
        injected_defects=defects,
        export_date=study_export_date(design.follow_up_weeks),
    )


def study_export_date(follow_up_weeks: int) -> date:
    """The export date: the day after the last enrolled person's follow-up can end."""
    last_day = ENROLMENT_LAST + np.timedelta64(follow_up_weeks * DAYS_PER_WEEK + 1, "D")
    return date.fromisoformat(str(last_day))


def to_redcap(study: SimulatedStudy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A clean study as a REDCap flat export with repeating instruments, and its dictionary."""
    if len(study.injected_defects):
        raise DataError("a REDCap export needs canonical values", hint="simulate with mess_rate=0")
    return redcap_export(study.tables)
