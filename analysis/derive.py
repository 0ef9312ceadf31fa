"""Outcome definitions: recovery, censoring, adherence and sitting exposures, weekly frames.

All times are days since enrolment (day 0 = the enrolment date), so no calendar date leaves
this module. Two milestones are derived, the first functional change and full recovery; each is
only ever observed at a clinic visit: the event is known to lie in (previous visit, visit where
it is first seen], and both bounds are kept for interval-censored models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import ParameterError
from analysis.schema import (
    CENSOR_END,
    CENSOR_LOST,
    CENSOR_WITHDRAWN,
    DAYS_PER_WEEK,
    EVENT_CENSORED,
    MILESTONE_FIRST_CHANGE,
    MILESTONE_FULL_RECOVERY,
    MILESTONES,
    PAIN_SITES,
    Assessments,
    Diary,
    Milestone,
    Participants,
    Recovery,
    Sessions,
    WeeklyIntervals,
    WeeklyTrajectories,
    check_typed_frame,
    column_names,
)

# The clean tables' columns derive reads, where it needs fewer than all (the sessions log
# only says on which days a participant exercised).
INPUT_COLUMNS = {
    "diary": [
        Diary.participant_id,
        Diary.date,
        Diary.sitting_hours,
        *PAIN_SITES,
        Diary.session_done,
    ],
    "sessions": [Sessions.participant_id, Sessions.date],
    "assessments": [
        Assessments.participant_id,
        Assessments.date,
        Assessments.hip_abduction_n,
        Assessments.phase_assigned,
        Assessments.clinician_recovered,
    ],
}
# Read as codes into their distinct values (see io.read_stage_frames): millions of rows, few ids.
INPUT_CODED_COLUMNS = (Participants.participant_id,)
DAY = "day"
# (participant code, day) packs into one integer as code * KEY_DAYS + day.
KEY_DAYS = 100_000
WEEK = "week"
PID_CODE = "participant_code"
BASELINE_COLUMNS = (
    Participants.site,
    Participants.age_years,
    Participants.sex,
    Participants.bmi,
    Participants.severity,
    Participants.symptom_months,
    Participants.underlying_condition,
    Participants.baseline_sitting_hours,
)


@dataclass
class DerivedFrames:
    """The three analysis frames `derive` writes."""

    recovery: pd.DataFrame
    weekly_intervals: pd.DataFrame
    weekly_trajectories: pd.DataFrame


def _day_key(frame: pd.DataFrame, day: str = DAY) -> np.ndarray:
    """One integer per row, ordered as (participant code, `day`): a day or week in follow-up
    is below KEY_DAYS."""
    return frame[PID_CODE].to_numpy(np.int64) * KEY_DAYS + frame[day].to_numpy(np.int64)


def _secondary_pain_before_visits(
    diary: pd.DataFrame, visits: pd.DataFrame, window_days: int
) -> pd.DataFrame:
    """Mean pain per site over the `window_days` days before each visit (visit day excluded).

    A site with no diary value in the window has an unknown (NaN) mean, which fails the
    recovery definition: recovery must be shown, not assumed.
    """
    means = pd.DataFrame(index=visits.index, columns=list(PAIN_SITES), dtype=float)
    if diary.empty or visits.empty:
        return means
    # Sorted by participant and day through an order of positions: the diary is not copied.
    key = _day_key(diary)
    order = np.argsort(key, kind="stable")
    key = key[order]
    visit_key = _day_key(visits)
    first = np.searchsorted(key, visit_key - window_days, side="left")
    last = np.searchsorted(key, visit_key, side="left")
    for site in PAIN_SITES:
        values = diary[site].to_numpy(float)[order]
        present = ~np.isnan(values)
        cum_sum = np.concatenate([[0.0], np.cumsum(np.where(present, values, 0.0))])
        cum_n = np.concatenate([[0], np.cumsum(present)])
        count = cum_n[last] - cum_n[first]
        with np.errstate(invalid="ignore", divide="ignore"):
            means[site] = np.where(count > 0, (cum_sum[last] - cum_sum[first]) / count, np.nan)
    return means


def recovery_visits(visits: pd.DataFrame, diary: pd.DataFrame, definition: dict) -> pd.Series:
    """True at each visit where the configured recovery definition holds."""
    pain = _secondary_pain_before_visits(diary, visits, definition["pain_window_days"])
    holds = visits[Assessments.phase_assigned] >= definition["min_phase"]
    for site in PAIN_SITES:
        holds &= pain[site] <= definition["max_secondary_pain"]
    if definition["require_clinician"]:
        holds &= visits[Assessments.clinician_recovered].fillna(False).astype(bool)
    return holds


def _mean_secondary_pain(per_site: pd.DataFrame) -> pd.Series:
    """Mean over the pain sites with a value (NaN when none has one)."""
    return per_site[list(PAIN_SITES)].mean(axis=1, skipna=True)


def first_change_visits(visits: pd.DataFrame, diary: pd.DataFrame, definition: dict) -> pd.Series:
    """True at each visit where the first functional change shows: hip abduction up by the
    configured share on the baseline visit, and secondary pain clearly down on the first days
    of the diary (or as good as absent).

    Without a baseline strength or pain (no early visit, no early diary) the change cannot be
    shown, and the visit is False: a change must be shown, not assumed.
    """
    ordered = visits.sort_values([PID_CODE, DAY])
    early = ordered[
        (ordered[DAY] <= definition["baseline_visit_max_day"])
        & ordered[Assessments.hip_abduction_n].notna()
    ]
    baseline_strength = early.groupby(PID_CODE)[Assessments.hip_abduction_n].first()
    baseline_day = early.groupby(PID_CODE)[DAY].first()
    first_days = diary[diary[DAY] < definition["baseline_pain_days"]]
    baseline_pain = _mean_secondary_pain(first_days.groupby(PID_CODE)[list(PAIN_SITES)].mean())
    pain_now = _mean_secondary_pain(
        _secondary_pain_before_visits(diary, visits, definition["pain_window_days"])
    )
    strength_then = visits[PID_CODE].map(baseline_strength)
    pain_then = visits[PID_CODE].map(baseline_pain)
    stronger = visits[Assessments.hip_abduction_n] >= (
        (1 + definition["min_strength_gain"]) * strength_then
    )
    less_pain = (pain_now <= (1 - definition["min_pain_reduction"]) * pain_then) | (
        pain_now <= definition["pain_absent_at"]
    )
    after_baseline = visits[DAY] > visits[PID_CODE].map(baseline_day)
    return (stronger & less_pain & pain_then.notna() & after_baseline).fillna(False).astype(bool)


def _band(values: pd.Series, cutoffs: list[float], labels: list[str]) -> pd.Series:
    """Left-closed bands: [-inf, c1), [c1, c2), ..., [ck, inf)."""
    bins = [-np.inf, *cutoffs, np.inf]
    return pd.cut(values, bins=bins, labels=labels, right=False).astype(object)


def regroup_adherence(
    recovery: pd.DataFrame,
    cutoffs: list[float],
    labels: list[str],
    column: str = Recovery.adherence_group,
) -> pd.DataFrame:
    """A copy with `column` recomputed from overall adherence with other cut-offs:
    [-inf, c1) -> labels[0], ... (left-closed, as derive bands them); people with no adherence
    data stay ungrouped. For the fit stage's cut-off sensitivity and the adherence report.
    """
    cutoffs, labels = [float(c) for c in cutoffs], [str(label) for label in labels]
    if len(labels) != len(cutoffs) + 1:
        raise ParameterError(
            f"{len(cutoffs)} adherence cut-off(s) need {len(cutoffs) + 1} labels, got {len(labels)}"
        )
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:], strict=False)):
        raise ParameterError(f"adherence cut-offs must increase: {cutoffs}")
    if len(set(labels)) != len(labels):
        raise ParameterError(f"adherence group labels must differ: {labels}")
    bands = _band(recovery[Recovery.overall_adherence], cutoffs, labels)
    return recovery.assign(**{column: bands.where(bands.notna(), None)})


def _weekly_grid(days_in_study: pd.Series) -> pd.DataFrame:
    """One row per participant-week covering days 0 .. days_in_study - 1, with its day count."""
    lengths = days_in_study.clip(lower=0).to_numpy(np.int64)
    weeks = -(-lengths // DAYS_PER_WEEK)
    codes = np.repeat(days_in_study.index.to_numpy(np.int64), weeks)
    offsets = np.repeat(np.cumsum(weeks) - weeks, weeks)
    week = np.arange(weeks.sum(), dtype=np.int64) - offsets
    days = np.minimum(DAYS_PER_WEEK, np.repeat(lengths, weeks) - week * DAYS_PER_WEEK)
    return pd.DataFrame({PID_CODE: codes, WEEK: week, "days": days})


def _phase_by_week(grid: pd.DataFrame, visits: pd.DataFrame) -> np.ndarray:
    """Phase prescribed each week: assigned at the last visit before the week began (phase 1
    before any visit), since a new prescription starts with the following week."""
    ordered = visits.sort_values([PID_CODE, DAY])
    visit_key = _day_key(ordered)
    week_start = grid[WEEK].to_numpy(np.int64) * DAYS_PER_WEEK
    last_day_before = grid[PID_CODE].to_numpy(np.int64) * KEY_DAYS + week_start - 1
    position = np.searchsorted(visit_key, last_day_before, side="right") - 1
    valid = position >= 0
    same_person = np.zeros(len(grid), dtype=bool)
    same_person[valid] = (
        ordered[PID_CODE].to_numpy()[position[valid]] == grid[PID_CODE].to_numpy()[valid]
    )
    phases = np.ones(len(grid), dtype=np.int64)
    phases[same_person] = ordered[Assessments.phase_assigned].to_numpy(np.int64)[
        position[same_person]
    ]
    return phases


def weekly_exposures(
    diary: pd.DataFrame,
    sessions: pd.DataFrame,
    visits: pd.DataFrame,
    days_in_study: pd.Series,
    prescribed_per_week: dict,
) -> pd.DataFrame:
    """Per participant-week: sessions done, prescribed, adherence, mean sitting, phase.

    A day counts as a done session when the diary says so or the sessions log has an exercise
    that day. A partial last week has a prorated prescription. Adherence is capped at 1
    (extra sessions do not bank). `days_in_study` is indexed by participant code in ascending
    order, as `derive_tables` builds it (the grid's rows are found by sorted keys).
    """
    grid = _weekly_grid(days_in_study)
    grid["phase"] = _phase_by_week(grid, visits)
    per_week = {int(phase): float(n) for phase, n in prescribed_per_week.items()}
    grid["sessions_prescribed"] = grid["phase"].map(per_week) * grid["days"] / DAYS_PER_WEEK
    # Rows are placed in the grid (sorted by participant and week) by their integer key: no
    # frame of every diary and session row is built.
    grid_key = _day_key(grid, day=WEEK)

    def grid_rows(day_keys: np.ndarray) -> np.ndarray:
        """The grid row of each (participant, day) key: its (participant, week) key's place."""
        codes, days = np.divmod(day_keys, KEY_DAYS)
        return np.searchsorted(grid_key, codes * KEY_DAYS + days // DAYS_PER_WEEK)

    def in_study_days(frame: pd.DataFrame) -> np.ndarray:
        return (frame[DAY] < frame[PID_CODE].map(days_in_study)).to_numpy()

    diary_in_study = in_study_days(diary)
    session_done = diary[Diary.session_done].fillna(False).astype(bool).to_numpy()
    # A day counts once, however many exercises the log and the diary hold for it.
    done_keys = pd.unique(
        np.concatenate(
            [
                _day_key(diary)[session_done & diary_in_study],
                _day_key(sessions)[in_study_days(sessions)],
            ]
        )
    )
    grid["sessions_done"] = np.bincount(grid_rows(done_keys), minlength=len(grid)).astype(float)
    sitting = diary[Diary.sitting_hours][diary_in_study]
    sitting_rows = grid_rows(_day_key(diary)[diary_in_study])
    grid["weekly_sitting_hours"] = sitting.groupby(sitting_rows).mean().reindex(grid.index)
    grid["weekly_adherence"] = (grid["sessions_done"] / grid["sessions_prescribed"]).clip(upper=1.0)
    return grid


def _last_contact_day(frames: list[pd.DataFrame], codes: pd.Index) -> pd.Series:
    """Each participant's last day in any of `frames` (the latest of each frame's last days)."""
    last_days = pd.concat([frame.groupby(PID_CODE)[DAY].max() for frame in frames])
    return last_days.groupby(level=PID_CODE).max().reindex(codes)


def _milestone_outcome(
    milestone: Milestone,
    visits: pd.DataFrame,
    seen_here: np.ndarray,
    withdrawn_day: pd.Series,
    last_contact: pd.Series,
    lost_before: int,
) -> pd.DataFrame:
    """One milestone's outcome columns per participant: seen at the first visit where it holds
    (lower bound: the visit before), else censored by withdrawal (a competing event, at its
    day), loss (no contact for long enough before the end) or the end of follow-up (at the last
    visit)."""
    codes = last_contact.index
    seen_day = visits.loc[seen_here, [PID_CODE, DAY]].groupby(PID_CODE)[DAY].min().reindex(codes)
    visit_seen_day = visits[PID_CODE].map(seen_day)
    before = visits[visit_seen_day.isna() | (visits[DAY] < visit_seen_day)]
    last_negative_visit = before.groupby(PID_CODE)[DAY].max().reindex(codes)

    event = seen_day.notna() & ~(withdrawn_day < seen_day)
    withdrawn = ~event & withdrawn_day.notna()
    lost = ~event & ~withdrawn & (last_contact.fillna(-1) < lost_before)
    censor_reason = pd.Series(pd.NA, index=codes, dtype=object)
    censor_reason[withdrawn] = CENSOR_WITHDRAWN
    censor_reason[lost] = CENSOR_LOST
    censor_reason[~event & ~withdrawn & ~lost] = CENSOR_END
    event_type = censor_reason.where(censor_reason == CENSOR_WITHDRAWN, EVENT_CENSORED)
    event_type[event] = milestone.event_name

    lower = last_negative_visit.fillna(0.0)
    time = lower.copy()
    time[event] = seen_day[event]
    time[withdrawn] = withdrawn_day[withdrawn].clip(lower=0)
    return pd.DataFrame(
        {
            milestone.event: event,
            milestone.time: time.astype(float),
            milestone.lower: lower.astype(float),
            milestone.upper: seen_day.where(event).astype(float),
            milestone.censor_reason: censor_reason,
            milestone.event_type: event_type,
        }
    )


def derive_recovery(
    participants: pd.DataFrame,
    diary: pd.DataFrame,
    sessions: pd.DataFrame,
    assessments: pd.DataFrame,
    params: dict,
) -> DerivedFrames:
    """Build the recovery, weekly-interval and weekly-trajectory frames from clean tables."""
    tables = {
        "participants": participants,
        "diary": diary,
        "sessions": sessions,
        "assessments": assessments,
    }
    return derive_tables(tables, params)


def derive_tables(tables: dict[str, pd.DataFrame], params: dict) -> DerivedFrames:
    """`derive_recovery` on the clean tables by name, taking each out of `tables` once its
    rows within follow-up are copied: a large study's tables are not held twice."""
    follow_up = params["follow_up_days"]
    people = tables.pop("participants").reset_index(drop=True)
    code_of = pd.Series(people.index, index=people[Participants.participant_id])
    enrolled = people.set_index(Participants.participant_id)[Participants.enrolled_on]

    def in_window(name: str) -> pd.DataFrame:
        """The rows within follow-up of table `name` (taken out of `tables`), with participant
        code and day in place of id and date, and only the columns derive reads.

        Each distinct id is looked up once (millions of rows hold some thousands of ids); a
        table read with its ids as codes (categorical) is not factorised again.
        """
        frame = tables.pop(name)
        id_column = frame[Diary.participant_id].astype("category")
        id_codes, ids = id_column.cat.codes.to_numpy(), id_column.cat.categories
        del id_column
        # A last slot for rows without an id (code -1): no participant, no enrolment date.
        code_by_id = np.append(pd.Series(ids).map(code_of).to_numpy(dtype=float), np.nan)
        enrolled_by_id = np.append(
            pd.Series(ids).map(enrolled).to_numpy(dtype="datetime64[ns]"), np.datetime64("NaT")
        )
        codes = code_by_id[id_codes]
        days = pd.Series(frame[Diary.date].to_numpy() - enrolled_by_id[id_codes]).dt.days
        inside = ~np.isnan(codes) & days.between(0, follow_up).to_numpy()
        measured = [c for c in INPUT_COLUMNS[name] if c not in (Diary.participant_id, Diary.date)]
        kept = frame.loc[inside, measured]
        kept[PID_CODE] = codes[inside].astype(np.int64)
        kept[DAY] = days.to_numpy()[inside].astype(np.int64)
        return kept

    diary, sessions, visits = in_window("diary"), in_window("sessions"), in_window("assessments")
    withdrawn_day = (people[Participants.withdrawn_on] - people[Participants.enrolled_on]).dt.days
    # Visits after a withdrawal do not count: the participant had left the study.
    visits = visits[~(visits[DAY] > visits[PID_CODE].map(withdrawn_day))]
    visits = visits.sort_values([PID_CODE, DAY]).reset_index(drop=True)
    recovered_here = recovery_visits(visits, diary, params["recovery"]).to_numpy()
    # Full recovery includes the functional change: it is seen at the latest with recovery.
    changed_here = (
        recovered_here | first_change_visits(visits, diary, params["first_change"]).to_numpy()
    )
    last_contact = _last_contact_day([diary, sessions, visits], people.index)
    lost_before = follow_up - params["lost_after_days_without_contact"]
    seen_here = {MILESTONE_FULL_RECOVERY: recovered_here, MILESTONE_FIRST_CHANGE: changed_here}
    outcomes = pd.concat(
        [
            _milestone_outcome(
                MILESTONES[name], visits, seen, withdrawn_day, last_contact, lost_before
            )
            for name, seen in seen_here.items()
        ],
        axis=1,
    )
    time = outcomes[Recovery.time_to_recovery_days]
    recovered = outcomes[Recovery.recovered]

    # Exposures cover every day with data (a week's adherence uses the whole week, also past
    # the event day within it); the models then use the weeks up to each person's exit time.
    days_in_study = np.maximum(last_contact.fillna(-1) + 1, time).astype(np.int64)
    weekly = weekly_exposures(
        diary,
        sessions,
        visits,
        days_in_study,
        params["adherence"]["prescribed_sessions_per_week"],
    )
    totals = weekly.groupby(PID_CODE)[["sessions_done", "sessions_prescribed"]].sum()
    overall_adherence = (totals["sessions_done"] / totals["sessions_prescribed"]).clip(upper=1.0)
    overall_adherence = overall_adherence.reindex(people.index)
    has_activity = pd.Series(
        people.index.isin(diary[PID_CODE]) | people.index.isin(sessions[PID_CODE]),
        index=people.index,
    )
    del sessions
    overall_adherence = overall_adherence.where(has_activity)
    mean_sitting = diary.groupby(PID_CODE)[Diary.sitting_hours].mean().reindex(people.index)

    adherence_cfg, sitting_cfg = params["adherence"], params["sitting"]
    recovery = people[[Participants.participant_id, *BASELINE_COLUMNS]].copy()
    recovery[Recovery.chronic] = (
        people[Participants.symptom_months] >= params["chronic_after_months"]
    )
    recovery = recovery.join(outcomes)
    recovery[Recovery.overall_adherence] = overall_adherence
    recovery[Recovery.adherence_group] = _band(
        overall_adherence, adherence_cfg["group_cutoffs"], adherence_cfg["group_labels"]
    )
    recovery[Recovery.mean_sitting_hours] = mean_sitting
    recovery[Recovery.sitting_band] = _band(
        mean_sitting, sitting_cfg["band_cutoffs"], sitting_cfg["band_labels"]
    )
    recovery = Recovery.validate(recovery[column_names(Recovery)])

    intervals = weekly_intervals(weekly, time, recovered, people[Participants.participant_id])
    trajectories = weekly_trajectories(diary, visits, weekly, recovery)
    return DerivedFrames(recovery, intervals, trajectories)


def weekly_intervals(
    weekly: pd.DataFrame, exit_time: pd.Series, event: pd.Series, participant_ids: pd.Series
) -> pd.DataFrame:
    """Start/stop rows (lifelines' convention): one per week at risk, the event on the last.

    `exit_time` and `event` are indexed by participant code, so a benchmark can pass true
    recovery days instead of the visit-detected ones.
    """
    rows = weekly[[PID_CODE, WEEK, "weekly_adherence", "weekly_sitting_hours", "phase"]].copy()
    rows["start"] = (rows[WEEK] * DAYS_PER_WEEK).astype(float)
    rows["stop"] = np.minimum(rows["start"] + DAYS_PER_WEEK, rows[PID_CODE].map(exit_time))
    rows = rows[rows["stop"] > rows["start"]]
    last = rows["stop"] == rows[PID_CODE].map(exit_time)
    rows["event"] = last & rows[PID_CODE].map(event).astype(bool)
    rows[WeeklyIntervals.participant_id] = rows[PID_CODE].map(participant_ids)
    return WeeklyIntervals.validate(rows[column_names(WeeklyIntervals)].reset_index(drop=True))


def milestone_intervals(
    intervals: pd.DataFrame, recovery: pd.DataFrame, milestone: str
) -> pd.DataFrame:
    """The weekly start/stop rows followed up to a milestone (a key of schema.MILESTONES).

    The derived rows run to each person's full-recovery exit time, which is never before the
    first functional change's (the change is seen at the latest with recovery, and censoring
    is shared), so the rows are cut at the milestone's time and the event put on the last.
    The rows keep the derived (validated) columns' types, so they are checked without pandera's
    coercion, whose first use imports `hypothesis` (~0.6 s of the fit command).
    """
    columns = MILESTONES[milestone]
    outcome = recovery.set_index(Recovery.participant_id)
    exit_time = intervals[WeeklyIntervals.participant_id].map(outcome[columns.time])
    event = intervals[WeeklyIntervals.participant_id].map(outcome[columns.event]).astype(bool)
    rows = intervals[intervals["start"] < exit_time].copy()
    exit_time, event = exit_time[rows.index], event[rows.index]
    rows["stop"] = np.minimum(rows["stop"], exit_time)
    rows[WeeklyIntervals.event] = (rows["stop"] == exit_time) & event
    return check_typed_frame(WeeklyIntervals, rows.reset_index(drop=True))


def interval_censored_frame(recovery: pd.DataFrame) -> pd.DataFrame:
    """People with any information on recovery; (0, inf) intervals tell nothing."""
    upper = recovery[Recovery.interval_upper_days]
    informative = upper.notna() | (recovery[Recovery.interval_lower_days] > 0)
    return recovery[informative]


def weekly_trajectories(
    diary: pd.DataFrame,
    visits: pd.DataFrame,
    weekly: pd.DataFrame,
    recovery: pd.DataFrame,
) -> pd.DataFrame:
    """Participant x week: mean pain per site, strength at visits that week, exposures.

    Pain and strength follow every week with data up to the end of follow-up; exposures stop
    at each person's event or censoring time.
    """
    # Grouped by key arrays, not a copy of the diary with a week column.
    diary_week = (diary[DAY] // DAYS_PER_WEEK).rename(WEEK)
    pain = diary.groupby([diary[PID_CODE], diary_week])[list(PAIN_SITES)].mean()
    visits = visits.assign(**{WEEK: visits[DAY] // DAYS_PER_WEEK})
    strength = visits.groupby([PID_CODE, WEEK])[Assessments.hip_abduction_n].mean()
    exposures = weekly.set_index([PID_CODE, WEEK])[["weekly_adherence", "weekly_sitting_hours"]]
    frame = pain.join(strength, how="outer").join(exposures, how="outer").reset_index()
    frame[WeeklyTrajectories.participant_id] = frame[PID_CODE].map(
        recovery[Recovery.participant_id]
    )
    frame[WeeklyTrajectories.adherence_group] = frame[PID_CODE].map(
        recovery[Recovery.adherence_group]
    )
    return WeeklyTrajectories.validate(
        frame[column_names(WeeklyTrajectories)]
        .sort_values([WeeklyTrajectories.participant_id, WEEK])
        .reset_index(drop=True)
    )
