"""A synthetic study with known truth: the cohort (`cohort`), the injected mess (`mess`), the
whole study and its exports (`study`; the REDCap writer is analysis.redcap.writer).

Pure, no file I/O: the CLI writes what these return.
"""

from analysis.simulate.cohort import (
    FIRST_CHANGE_COEFFICIENTS,
    HAZARD_COEFFICIENTS,
    MIN_FOLLOW_UP_WEEKS,
    SITES,
    TABLES,
    StudyDesign,
    min_first_change_log_hazard_ratio,
    study_design,
)
from analysis.simulate.mess import (
    DEFECT_COLUMNS,
    DEFECT_KINDS,
    EXERCISE_VARIANTS,
)
from analysis.simulate.study import (
    MAX_MESS_RATE,
    SimulatedStudy,
    simulate_study,
    to_redcap,
)

__all__ = [
    "DEFECT_COLUMNS",
    "DEFECT_KINDS",
    "EXERCISE_VARIANTS",
    "FIRST_CHANGE_COEFFICIENTS",
    "HAZARD_COEFFICIENTS",
    "MAX_MESS_RATE",
    "MIN_FOLLOW_UP_WEEKS",
    "SITES",
    "TABLES",
    "SimulatedStudy",
    "StudyDesign",
    "min_first_change_log_hazard_ratio",
    "simulate_study",
    "study_design",
    "to_redcap",
]
