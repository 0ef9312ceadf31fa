"""Checks of the pipeline against a simulated study's truth (parameter recovery, coverage)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.clean import StudyCleanResult, clean_study
from analysis.derive import DerivedFrames, derive_recovery
from analysis.schema import WeeklyIntervals
from analysis.simulate import SimulatedStudy, simulate_study, study_design
from analysis.testing import with_source_rows


@dataclass
class SimulatedPipeline:
    """A simulated study (with its truth), its cleaning and its derived frames."""

    simulated: SimulatedStudy
    cleaned: StudyCleanResult
    derived: DerivedFrames


def simulate_clean_derive(
    participants: int, seed: int, params: dict, mess_rate: float = 0.0
) -> SimulatedPipeline:
    """Simulate a study and run it through clean and derive in memory, as the CLI would."""
    design = study_design(params["derive"], params["simulate"]["follow_up_weeks"])
    simulated = simulate_study(participants, seed=seed, design=design, mess_rate=mess_rate)
    raw = {table: with_source_rows(frame) for table, frame in simulated.tables.items()}
    files = {table: f"{table}.csv" for table in raw}
    cleaned = clean_study(raw, files, params["clean"], simulated.export_date)
    tables = cleaned.tables
    derived = derive_recovery(
        tables["participants"],
        tables["diary"],
        tables["sessions"],
        tables["assessments"],
        params["derive"],
    )
    return SimulatedPipeline(simulated, cleaned, derived)


def true_day_intervals(intervals: pd.DataFrame, truth_days: pd.Series) -> pd.DataFrame:
    """The weekly start/stop rows as they would be had recovery been seen on its true day.

    `truth_days` maps participant id -> true recovery day (NaN if none). A person whose true
    day falls within their derived follow-up has the event on that day; otherwise the derived
    censoring stands. Covariates are the same weekly exposures either way.
    """
    last_stop = intervals.groupby(WeeklyIntervals.participant_id)["stop"].transform("max")
    true_day = intervals[WeeklyIntervals.participant_id].map(truth_days)
    seen = true_day.notna() & (true_day <= last_stop)
    exit_time = true_day.where(seen, last_stop)
    rows = intervals[intervals["start"] < exit_time].copy()
    exit_time = exit_time[rows.index]
    rows["stop"] = np.minimum(rows["stop"], exit_time)
    rows[WeeklyIntervals.event] = (rows["stop"] == exit_time) & seen[rows.index]
    return rows.reset_index(drop=True)


def truth_in_model_coding(
    true_coefficients: dict[str, float],
    factor_levels: dict[str, tuple],
    reference_levels: dict | None = None,
) -> dict[str, float]:
    """Re-express true factor effects against the model's reference level.

    The simulator states effects against a natural reference (severity mild, condition none);
    a model codes a factor against its entry in `reference_levels` (the fit stage passes
    fit.reference_levels), else against its first sorted level, so there
    `underlying_condition[x]` is estimated relative to "disc". A level the truth does not name
    has effect 0.
    """
    reference_levels = reference_levels or {}
    coded = {term: value for term, value in true_coefficients.items() if "[" not in term}
    for factor, levels in factor_levels.items():
        effect = {level: true_coefficients.get(f"{factor}[{level}]", 0.0) for level in levels}
        reference = reference_levels.get(factor, sorted(levels)[0])
        for level in sorted(levels):
            if level != reference:
                coded[f"{factor}[{level}]"] = effect[level] - effect[reference]
    return coded


def coverage(tidy: pd.DataFrame, true_coefficients: dict[str, float]) -> pd.DataFrame:
    """Per true coefficient the model estimates: estimate, CI, and whether the CI covers it.

    Terms are matched by name; a boolean covariate's dummy `chronic[True]` is the truth's
    `chronic`.
    """
    table = tidy.assign(term=tidy["term"].str.replace("[True]", "", regex=False))
    table = table.set_index("term")
    rows = []
    for term, truth in true_coefficients.items():
        if term not in table.index:
            continue
        fitted = table.loc[term]
        rows.append(
            {
                "term": term,
                "truth": truth,
                "estimate": fitted["estimate"],
                "conf_low": fitted["conf_low"],
                "conf_high": fitted["conf_high"],
                "covered": bool(fitted["conf_low"] <= truth <= fitted["conf_high"]),
            }
        )
    return pd.DataFrame(rows)
