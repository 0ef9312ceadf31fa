"""The synthetic cohort: participants, their latent milestones, diary/session/visit logs, truth.

The truth has the domain's two milestones, each a proportional-hazards process in each week's
realised adherence and mean diary sitting hours (exactly as the derive stage computes them) and
the baseline factors: the *first functional change* (strength up, secondary pain clearly down)
and, considerably later, *full recovery*. A time-varying Cox model on derived weekly intervals
can recover either set of generating coefficients (up to the interval censoring of periodic
clinic visits).

The study's design facts that the analysis also states (follow-up, the prescription, the
chronic cut-off) come in as a `StudyDesign`, built from params.yaml; the generating model's own
constants are below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import ParameterError
from analysis.schema import (
    CANONICAL_TABLES,
    DAYS_PER_WEEK,
    EXERCISE_PHASE,
    PAIN_SITES,
    PHASES,
    SEVERITY_LEVELS,
    SEX_LEVELS,
    UNDERLYING_CONDITIONS,
    Assessments,
    Diary,
    Participants,
    Sessions,
    column_names,
)

TABLES = tuple(CANONICAL_TABLES)

SITES = ("site_A", "site_B", "site_C", "site_D", "site_E")
SITE_SHARES = (0.33, 0.27, 0.21, 0.16, 0.03)
SEVERITY_SHARES = (0.40, 0.38, 0.22)
CONDITION_SHARES = (0.60, 0.17, 0.10, 0.13)
CHRONIC_SHARE = 0.55
FEMALE_SHARE = 0.56
ENROLMENT_FIRST = np.datetime64("2024-01-01")
ENROLMENT_LAST = np.datetime64("2025-06-30")
WITHDRAWAL_REASONS = ("moved away", "lost interest", "time constraints", "other")
WITHDRAWAL_REASON_SHARES = (0.2, 0.35, 0.3, 0.15)

# Symptom months are drawn this far away from the chronic cut-off (StudyDesign) on either side,
# so "chronic" cannot depend on >= versus >; recent cases have had symptoms at least this long.
CUT_OFF_MARGIN_MONTHS = 0.1
RECENT_MONTHS_MIN = 0.5

# Full recovery: log hazard ratios keyed by the covariate names of the derived analysis frames.
HAZARD_COEFFICIENTS = {
    "weekly_adherence": 2.0,
    "weekly_sitting_hours": -0.12,
    "severity[moderate]": -0.55,
    "severity[severe]": -1.0,
    "chronic": -0.8,
    "underlying_condition[disc]": -0.7,
    "underlying_condition[nerve_entrapment]": -1.0,
    "underlying_condition[other]": -0.35,
}
# Baseline cumulative hazard H0(t) = sum over terms of (t / scale_days) ** shape, t in days
# since enrolment: a gradual early term, and a steep late one that brings most of the slow
# cases home in the second half-year. Calibrated (tests/test_calibration.py) so that mild,
# recent, adherent people without an underlying condition recover fully at a median of about
# 11.5 weeks, while over the cohort a tenth recover by about 7.5 weeks and some 30 % take
# longer than 26 weeks. Under proportional hazards with the effects above, a cohort tenth at
# 6 weeks would need a near-constant hazard from enrolment, putting the fastest of that group
# at two weeks: the text's "about 6 weeks" is met within the timeline's tolerance instead.
RECOVERY_BASELINE = {
    "terms": ({"scale_days": 238.0, "shape": 1.25}, {"scale_days": 161.0, "shape": 6.0})
}
# First functional change: its own proportional-hazards process, with the recovery's baseline
# times this multiple (calibrated to a median of about 7 weeks for mild, recent, adherent
# people). Every effect is at most as strong as for full recovery, and the multiple outweighs
# the largest difference (see min_first_change_log_hazard_ratio), so with the shared threshold
# the first change never comes after full recovery.
FIRST_CHANGE_BASELINE_MULTIPLE = 2.25
# Measures that improve with progress use cumulative hazard / threshold ** (1 / this): about
# linear in days at steady exposures while the early term dominates.
PROGRESS_SHAPE = 1.25
FIRST_CHANGE_COEFFICIENTS = {
    "weekly_adherence": 1.5,
    "weekly_sitting_hours": -0.08,
    "severity[moderate]": -0.4,
    "severity[severe]": -0.8,
    "chronic": -0.6,
    "underlying_condition[disc]": -0.5,
    "underlying_condition[nerve_entrapment]": -0.7,
    "underlying_condition[other]": -0.25,
}
MILESTONE_THRESHOLD = (
    "one Exp(1) threshold per person, shared by both milestones: a milestone's day is the first "
    "whole day its cumulative hazard reaches it (a person who changes early also recovers early)"
)
ADHERENCE_MODEL = {
    "person_logit_mean": 1.5,
    "person_logit_sd": 1.5,
    "weekly_ar1": 0.6,
    "weekly_sd": 0.7,
    "logit_change_per_week": -0.04,
    "logit_shift_phases_2_3": 0.0,
}
SITTING_MODEL = {
    "person_mean_hours": 8.3,
    "person_sd_hours": 1.8,
    "person_range_hours": [3.0, 14.0],
    "weekly_ar1": 0.7,
    "weekly_sd_hours": 0.8,
    "daily_sd_hours": 0.9,
    "daily_range_hours": [1.0, 18.0],
}
WITHDRAWAL_MODEL = {
    "weekly_probability_full_adherence": 0.0022,
    "log_rate_per_unit_non_adherence": 2.2,
    "adherence_used": "previous week's realised adherence (person's propensity in week 0)",
}
# Loss to follow-up needs room between its first day and its margin before the end.
MIN_FOLLOW_UP_WEEKS = 8
LOSS_MODEL = {"share": 0.05, "first_day": 14, "days_before_end_of_follow_up": 35}
VISIT_SCHEDULE = {"every_days": 14, "jitter_days": 2, "missed_share": 0.10, "day_0_visit": True}
PHASE_THRESHOLDS = {
    "phase_2": {"min_accumulated_training": 0.25},
    "phase_3": {"min_accumulated_training": 0.6},
    "accumulated_training": "recovery cumulative hazard so far / log(2), the median threshold",
    "at_recovery": "phase 3 is recorded at every visit on or after the true recovery day",
    "effective_from": "the start of the week after the visit that assigns it",
}
# Secondary pain: eases along the way to the first functional change (to a share of its
# starting level on that day), then fades to nothing over `fade_days`; it has faded out in any
# case `gone_days_before_recovery` days before full recovery, whose definition asks for low
# pain over the two weeks before the visit.
PAIN_MODEL = {"share_left_at_first_change": 0.5, "fade_days": 14, "gone_days_before_recovery": 21}
# Hip abduction strength as a share of the person's target: creeps up before the first
# functional change, steps up on that day (the glutes fire), then climbs to the target by full
# recovery. The visit's measurement error is multiplicative.
STRENGTH_MODEL = {
    "share_at_start": 0.55,
    "gain_before_first_change": 0.05,
    "share_after_first_change": 0.72,
    "measurement_sd": 0.03,
}

EXERCISE_NAMES = tuple(EXERCISE_PHASE)
# Starting load for a typical participant (kg); None = bodyweight exercise.
START_LOAD_KG = {
    "glute_bridge": None,
    "clam_shell": None,
    "side_lying_leg_lift": None,
    "weighted_hip_thrust": 30.0,
    "step_up": 6.0,
    "cable_kickback": 7.5,
    "squat": 25.0,
    "deadlift": 35.0,
    "lunge": 8.0,
    "single_leg_deadlift": 8.0,
    "lateral_bound": None,
}
EXERCISES_PER_SESSION = (2, 3)
EXERCISES_PER_SESSION_SHARES = (0.25, 0.75)
LOAD_GAIN_PER_WEEK = {1: 0.0, 2: 0.04, 3: 0.02}
SETS_RANGE = {1: (2, 3), 2: (3, 4), 3: (3, 3)}
REPS_RANGE = {1: (12, 25), 2: (8, 12), 3: (8, 12)}
TYPICAL_STRENGTH_N = {"female": 190.0, "male": 250.0}


@dataclass(frozen=True)
class StudyDesign:
    """The design facts the simulated study shares with the analysis (params.yaml).

    `prescribed_sessions_per_week` and `chronic_after_months` are the derive block's own
    values (derive.adherence.prescribed_sessions_per_week, derive.chronic_after_months), so the
    study is generated under the definitions it is analysed with; `follow_up_weeks` is the
    simulate block's.
    """

    follow_up_weeks: int
    prescribed_sessions_per_week: Mapping[int, int]
    chronic_after_months: float

    def __post_init__(self) -> None:
        if self.follow_up_weeks < MIN_FOLLOW_UP_WEEKS:
            raise ParameterError(
                f"follow_up_weeks must be at least {MIN_FOLLOW_UP_WEEKS}, got "
                f"{self.follow_up_weeks}"
            )
        rates = self.prescribed_sessions_per_week
        if set(rates) != set(PHASES) or not all(
            isinstance(rate, int) and 1 <= rate <= DAYS_PER_WEEK for rate in rates.values()
        ):
            raise ParameterError(
                "derive.adherence.prescribed_sessions_per_week must give each of phases "
                f"{', '.join(map(str, PHASES))} a whole number of sessions from 1 to "
                f"{DAYS_PER_WEEK} (the simulator schedules at most one a day), got {dict(rates)}"
            )
        if not self.chronic_after_months - CUT_OFF_MARGIN_MONTHS > RECENT_MONTHS_MIN:
            raise ParameterError(
                "derive.chronic_after_months must exceed "
                f"{RECENT_MONTHS_MIN + CUT_OFF_MARGIN_MONTHS} (the shortest simulated symptom "
                f"duration and its margin), got {self.chronic_after_months}"
            )


def study_design(derive: dict, follow_up_weeks: int) -> StudyDesign:
    """The simulated study's design from params.yaml's derive block and its follow-up."""
    return StudyDesign(
        follow_up_weeks=int(follow_up_weeks),
        prescribed_sessions_per_week=dict(derive["adherence"]["prescribed_sessions_per_week"]),
        chronic_after_months=float(derive["chronic_after_months"]),
    )


@dataclass
class Cohort:
    """Latent and observed arrays of one simulated cohort (participants x days)."""

    baseline: dict[str, np.ndarray]
    enrol_day: np.ndarray
    diary_end: np.ndarray
    exit_day: np.ndarray
    exit_reason: np.ndarray
    recovery_day: np.ndarray
    first_change_day: np.ndarray
    overall_adherence: np.ndarray
    sitting: np.ndarray
    breaks: np.ndarray
    pain: np.ndarray
    session_done: np.ndarray
    phase: np.ndarray
    recovery_fraction: np.ndarray
    phase_start_day: np.ndarray
    visit_day: np.ndarray
    visit_attended: np.ndarray
    visit_measures: dict[str, np.ndarray]
    withdrawal_reason: np.ndarray


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _format_numbers(values: np.ndarray, decimals: int, missing: np.ndarray | None = None):
    """Numbers as fixed-decimal strings ("" where missing), by lookup over the value range."""
    scaled = np.rint(np.asarray(values, dtype=float) * 10**decimals)
    if missing is None:
        missing = np.isnan(scaled)
    if missing.all():
        return np.full(scaled.shape, "", dtype=object)
    codes = np.where(missing, 0, scaled).astype(np.int64)
    low, high = codes[~missing].min(), codes[~missing].max()
    lookup = np.array(
        [f"{code / 10**decimals:.{decimals}f}" for code in range(low, high + 1)], dtype=object
    )
    text = lookup[np.clip(codes - low, 0, high - low)]
    text[missing] = ""
    return text


def format_dates(epoch_days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as ISO dates, by lookup over the date range."""
    if len(epoch_days) == 0:
        return np.array([], dtype=object)
    low, high = int(epoch_days.min()), int(epoch_days.max())
    lookup = np.datetime_as_string(np.arange(low, high + 1).astype("datetime64[D]")).astype(object)
    return lookup[epoch_days - low]


def _format_flags(values: np.ndarray) -> np.ndarray:
    return np.where(values, "true", "false").astype(object)


def _draw_baseline(
    n: int, chronic_after_months: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Baseline characteristics and the person-level latent traits."""
    female = rng.random(n) < FEMALE_SHARE
    chronic = rng.random(n) < CHRONIC_SHARE
    severity = rng.choice(len(SEVERITY_LEVELS), size=n, p=SEVERITY_SHARES)
    chronic_months = (chronic_after_months + CUT_OFF_MARGIN_MONTHS) + rng.lognormal(
        np.log(14.0), 0.9, n
    )
    recent_months = rng.uniform(RECENT_MONTHS_MIN, chronic_after_months - CUT_OFF_MARGIN_MONTHS, n)
    sitting_mean = np.clip(
        rng.normal(SITTING_MODEL["person_mean_hours"], SITTING_MODEL["person_sd_hours"], n),
        *SITTING_MODEL["person_range_hours"],
    )
    age = np.clip(np.rint(rng.normal(44.0, 13.0, n)), 18, 75)
    typical_strength = np.where(female, TYPICAL_STRENGTH_N["female"], TYPICAL_STRENGTH_N["male"])
    severity_pain = np.array([3.0, 4.5, 6.0])[severity]
    site_pain_scale = np.array([1.0, 0.8, 0.55])
    site_pain_free = rng.random((n, len(PAIN_SITES))) < np.array([0.1, 0.3, 0.5])
    pain_level = severity_pain[:, None] * site_pain_scale * rng.lognormal(0.0, 0.3, (n, 3))
    return {
        "female": female,
        "age": age,
        "bmi": np.round(np.clip(rng.lognormal(np.log(27.0), 0.17, n), 16.0, 50.0), 1),
        "site": rng.choice(len(SITES), size=n, p=SITE_SHARES),
        "severity": severity,
        "chronic": chronic,
        "symptom_months": np.round(
            np.minimum(np.where(chronic, chronic_months, recent_months), 240), 1
        ),
        "condition": rng.choice(len(UNDERLYING_CONDITIONS), size=n, p=CONDITION_SHARES),
        "sitting_mean": sitting_mean,
        "baseline_sitting": np.round(np.clip(sitting_mean + rng.normal(0, 0.8, n), 1, 18), 1),
        "adherence_logit": rng.normal(
            ADHERENCE_MODEL["person_logit_mean"], ADHERENCE_MODEL["person_logit_sd"], n
        ),
        "threshold": rng.exponential(1.0, n),
        "strength_target": typical_strength * rng.lognormal(0.0, 0.15, n),
        "balance_target": np.clip(rng.normal(34.0 - 0.2 * (age - 40), 6.0), 8.0, 60.0),
        "pain_level": np.where(site_pain_free, 0.0, np.minimum(pain_level, 9.0)),
        "breaks_per_hour": rng.uniform(0.4, 1.4, n),
        "load_scale": typical_strength / TYPICAL_STRENGTH_N["male"] * rng.lognormal(0, 0.15, n),
    }


def _static_log_hazard(baseline: dict[str, np.ndarray], coefficients: dict) -> np.ndarray:
    """The time-fixed part of a milestone's linear predictor."""
    severity = np.array([0.0, coefficients["severity[moderate]"], coefficients["severity[severe]"]])
    condition = np.array(
        [
            0.0,
            coefficients["underlying_condition[disc]"],
            coefficients["underlying_condition[nerve_entrapment]"],
            coefficients["underlying_condition[other]"],
        ]
    )
    return (
        severity[baseline["severity"]]
        + condition[baseline["condition"]]
        + coefficients["chronic"] * baseline["chronic"]
    )


def baseline_cumulative_hazard(days: np.ndarray, multiple: float = 1.0) -> np.ndarray:
    """A milestone's H0 at the given days since enrolment: the recovery baseline x `multiple`."""
    days = np.asarray(days, dtype=float)
    return multiple * sum(
        (days / term["scale_days"]) ** term["shape"] for term in RECOVERY_BASELINE["terms"]
    )


def _progress_fraction(progress: np.ndarray) -> np.ndarray:
    """Cumulative hazard / threshold on a time-like scale (the early term's shape)."""
    return progress ** (1 / PROGRESS_SHAPE)


class _Milestone:
    """One milestone's hazard process, walked forward a week at a time for the whole cohort."""

    def __init__(self, people: dict, coefficients: dict, baseline_multiple: float, days: int):
        n = len(people["severity"])
        self.static_log_hazard = _static_log_hazard(people, coefficients)
        self.coefficients = coefficients
        self.baseline_multiple = baseline_multiple
        self.cumulative_hazard = np.zeros(n)
        # Cumulative hazard / threshold at the start of each day, capped at 1 once reached.
        self.progress = np.empty((n, days))
        self.day = np.full(n, -1)

    def advance(self, first: int, stop: int, adherence, sitting, threshold) -> None:
        """Days first..stop-1 under this week's realised adherence and mean sitting hours."""
        log_hazard = (
            self.static_log_hazard
            + self.coefficients["weekly_adherence"] * adherence
            + self.coefficients["weekly_sitting_hours"] * sitting
        )
        baseline = baseline_cumulative_hazard(np.arange(first, stop + 1), self.baseline_multiple)
        at_day_end = self.cumulative_hazard[:, None] + np.exp(log_hazard)[:, None] * (
            baseline[1:] - baseline[0]
        )
        at_day_start = np.column_stack([self.cumulative_hazard, at_day_end[:, :-1]])
        self.progress[:, first:stop] = np.minimum(at_day_start / threshold[:, None], 1.0)
        reached = at_day_end >= threshold[:, None]
        newly = (self.day < 0) & reached[:, -1]
        self.day[newly] = first + 1 + reached[newly].argmax(axis=1)
        self.cumulative_hazard = at_day_end[:, -1]


def _pain_scale(first_change: _Milestone, recovery: _Milestone) -> np.ndarray:
    """Secondary pain as a share of its starting level, participants x days.

    It eases on the way to the first functional change, then fades out; it is gone in any case
    some days before full recovery, whose definition asks for low pain in the weeks before.
    Pain is an outcome here, never an exposure, so it may follow the true milestone days.
    """
    days = np.arange(first_change.progress.shape[1])
    left = PAIN_MODEL["share_left_at_first_change"]
    fade = PAIN_MODEL["fade_days"]
    before = 1 - (1 - left) * _progress_fraction(first_change.progress)
    since_change = days - np.where(first_change.day >= 0, first_change.day, days[-1] + 1)[:, None]
    after = left * np.clip(1 - since_change / fade, 0, None)
    scale = np.where(since_change >= 0, after, before)
    gone_on = (
        np.where(recovery.day >= 0, recovery.day, np.inf) - PAIN_MODEL["gone_days_before_recovery"]
    )
    return np.minimum(scale, np.clip((gone_on[:, None] - days) / fade, 0, 1))


def min_first_change_log_hazard_ratio() -> float:
    """The smallest log hazard ratio, first change over full recovery, over every covariate
    value the simulator can produce; >= 0 means the first change is never the later one.

    The baselines are proportional, so the ratio is the same on every day.
    """
    ranges = {
        "weekly_adherence": (0.0, 1.0),
        "weekly_sitting_hours": tuple(SITTING_MODEL["daily_range_hours"]),
    }
    ratio = np.log(FIRST_CHANGE_BASELINE_MULTIPLE)
    for term, effect in FIRST_CHANGE_COEFFICIENTS.items():
        difference = effect - HAZARD_COEFFICIENTS[term]
        low, high = ranges.get(term, (0.0, 1.0))
        ratio += min(difference * low, difference * high)
    return float(ratio)


def simulate_cohort(n: int, design: StudyDesign, rng: np.random.Generator) -> Cohort:
    """Walk the cohort forward week by week (vectorised over participants)."""
    days = design.follow_up_weeks * DAYS_PER_WEEK
    baseline = _draw_baseline(n, design.chronic_after_months, rng)
    enrol_span = int((ENROLMENT_LAST - ENROLMENT_FIRST).astype(int))
    enrol_day = int(ENROLMENT_FIRST.astype(int)) + rng.integers(0, enrol_span + 1, n)

    visits = days // VISIT_SCHEDULE["every_days"] + 1
    jitter = VISIT_SCHEDULE["jitter_days"]
    visit_day = VISIT_SCHEDULE["every_days"] * np.arange(visits) + rng.integers(
        -jitter, jitter + 1, (n, visits)
    )
    visit_day[:, 0] = 0
    scheduled_visit = (rng.random((n, visits)) >= VISIT_SCHEDULE["missed_share"]) & (
        visit_day < days
    )
    scheduled_visit[:, 0] = True
    visit_noise = {
        "activation": rng.normal(0.0, 0.7, (n, visits)),
        "strength": rng.normal(0.0, STRENGTH_MODEL["measurement_sd"], (n, visits)),
    }

    lost = rng.random(n) < LOSS_MODEL["share"]
    lost_day = rng.integers(
        LOSS_MODEL["first_day"], days - LOSS_MODEL["days_before_end_of_follow_up"], n
    )
    diary_end = np.where(lost, lost_day, days)
    exit_reason = np.where(lost, "lost", "end").astype(object)
    detection_day = np.full(n, -1)

    milestones = (
        _Milestone(baseline, HAZARD_COEFFICIENTS, 1.0, days),
        _Milestone(baseline, FIRST_CHANGE_COEFFICIENTS, FIRST_CHANGE_BASELINE_MULTIPLE, days),
    )
    recovery, first_change = milestones
    threshold = baseline["threshold"]
    phase_now = np.ones(n, dtype=np.int8)
    phase_assigned = np.ones(n, dtype=np.int8)
    phase_start_day = np.zeros((n, 4), dtype=np.int64)
    adherence_deviation = rng.normal(0.0, ADHERENCE_MODEL["weekly_sd"], n)
    sitting_deviation = rng.normal(0.0, SITTING_MODEL["weekly_sd_hours"], n)
    previous_adherence = _sigmoid(baseline["adherence_logit"])
    # Indexed by phase (1-3); index 0 is never used.
    prescribed_rate = np.array([0, *(design.prescribed_sessions_per_week[p] for p in PHASES)])

    sitting = np.empty((n, days), dtype=np.float32)
    session_done = np.zeros((n, days), dtype=bool)
    phase = np.empty((n, days), dtype=np.int8)
    activation = np.full((n, visits), np.nan)
    strength = np.full((n, visits), np.nan)
    visit_progress = np.full((n, visits), np.nan)
    visit_phase = np.zeros((n, visits), dtype=np.int8)
    attended = np.zeros((n, visits), dtype=bool)

    for week in range(design.follow_up_weeks):
        first, stop = DAYS_PER_WEEK * week, DAYS_PER_WEEK * (week + 1)
        if week:
            adherence_deviation = ADHERENCE_MODEL["weekly_ar1"] * adherence_deviation + np.sqrt(
                1 - ADHERENCE_MODEL["weekly_ar1"] ** 2
            ) * rng.normal(0.0, ADHERENCE_MODEL["weekly_sd"], n)
            sitting_deviation = SITTING_MODEL["weekly_ar1"] * sitting_deviation + np.sqrt(
                1 - SITTING_MODEL["weekly_ar1"] ** 2
            ) * rng.normal(0.0, SITTING_MODEL["weekly_sd_hours"], n)
        changed = phase_assigned != phase_now
        phase_start_day[changed, phase_assigned[changed]] = first
        phase_now = phase_assigned.copy()
        phase[:, first:stop] = phase_now[:, None]

        adherence_probability = _sigmoid(
            baseline["adherence_logit"]
            + adherence_deviation
            + ADHERENCE_MODEL["logit_change_per_week"] * week
            + ADHERENCE_MODEL["logit_shift_phases_2_3"] * (phase_now > 1)
        )
        # A phase prescribing fewer than daily sessions has them on days the participant picks.
        day_rank = rng.random((n, DAYS_PER_WEEK)).argsort(axis=1).argsort(axis=1)
        scheduled = day_rank < prescribed_rate[phase_now][:, None]
        done = scheduled & (rng.random((n, DAYS_PER_WEEK)) < adherence_probability[:, None])
        session_done[:, first:stop] = done
        weekly_adherence = done.sum(axis=1) / prescribed_rate[phase_now]

        daily_sitting = np.round(
            np.clip(
                (baseline["sitting_mean"] + sitting_deviation)[:, None]
                + rng.normal(0.0, SITTING_MODEL["daily_sd_hours"], (n, DAYS_PER_WEEK)),
                *SITTING_MODEL["daily_range_hours"],
            ),
            1,
        )
        sitting[:, first:stop] = daily_sitting
        weekly_sitting = daily_sitting.mean(axis=1)

        for milestone in milestones:
            milestone.advance(first, stop, weekly_adherence, weekly_sitting, threshold)
        in_study = diary_end > first
        withdrawal_probability = WITHDRAWAL_MODEL["weekly_probability_full_adherence"] * np.exp(
            WITHDRAWAL_MODEL["log_rate_per_unit_non_adherence"] * (1 - previous_adherence)
        )
        withdrawal_day = first + rng.integers(1, DAYS_PER_WEEK + 1, n)
        withdraws = (
            in_study & (rng.random(n) < withdrawal_probability) & (withdrawal_day < diary_end)
        )
        diary_end[withdraws] = withdrawal_day[withdraws]
        exit_reason[withdraws] = "withdrawn"
        previous_adherence = weekly_adherence

        for visit in range(visits):
            day = visit_day[:, visit]
            at_visit = (
                scheduled_visit[:, visit]
                & (day >= first)
                & (day < stop)
                & (day < diary_end)
                & (detection_day < 0)
            )
            if not at_visit.any():
                continue
            rows = np.flatnonzero(at_visit)
            visit_days = day[rows]
            progress_then = recovery.progress[rows, visit_days]
            first_change_then = first_change.progress[rows, visit_days]
            fraction = _progress_fraction(progress_then)
            first_fraction = _progress_fraction(first_change_then)
            activation[rows, visit] = np.clip(
                2.0
                + 4.0 * first_fraction
                + 3.0 * fraction
                + visit_noise["activation"][rows, visit],
                0.0,
                10.0,
            )
            changed = first_change_then >= 1.0
            strength[rows, visit] = np.where(
                changed,
                STRENGTH_MODEL["share_after_first_change"]
                + (1 - STRENGTH_MODEL["share_after_first_change"]) * fraction,
                STRENGTH_MODEL["share_at_start"]
                + STRENGTH_MODEL["gain_before_first_change"] * first_fraction,
            ) * (1 + visit_noise["strength"][rows, visit])
            # Phases follow the training accumulated so far (cumulative hazard against the
            # median threshold), never the person's hidden threshold: a prescription that knew
            # how close someone was to recovery would make adherence a marker of it.
            accumulated = progress_then * threshold[rows] / np.log(2.0)
            ready_for_3 = accumulated >= PHASE_THRESHOLDS["phase_3"]["min_accumulated_training"]
            ready_for_2 = accumulated >= PHASE_THRESHOLDS["phase_2"]["min_accumulated_training"]
            recovered_now = (recovery.day[rows] >= 0) & (visit_days >= recovery.day[rows])
            # A recovered person is functionally integrated: the clinician records phase 3.
            ready_for_3 |= recovered_now
            rule = np.where(ready_for_3, 3, np.where(ready_for_2, 2, 1))
            phase_assigned[rows] = np.maximum(phase_assigned[rows], rule)
            visit_phase[rows, visit] = phase_assigned[rows]
            visit_progress[rows, visit] = progress_then
            attended[rows, visit] = True
            detected = rows[recovered_now]
            detection_day[detected] = visit_days[recovered_now]
            # The diary runs to the end of the week of the visit that detects recovery, so that
            # week's adherence and sitting are observed whole, as they entered the hazard.
            diary_end[detected] = np.minimum(
                (visit_days[recovered_now] // DAYS_PER_WEEK + 1) * DAYS_PER_WEEK, days
            )
            exit_reason[detected] = "recovered"

    exit_day = np.where(exit_reason == "recovered", detection_day, diary_end)
    for milestone in milestones:
        milestone.day = np.where(
            (milestone.day >= 0) & (milestone.day <= exit_day), milestone.day, -1
        )
    in_study_days = np.arange(days) < diary_end[:, None]
    prescribed = (prescribed_rate[phase] / DAYS_PER_WEEK * in_study_days).sum(axis=1)
    overall_adherence = (session_done & in_study_days).sum(axis=1) / prescribed

    pain = np.clip(
        np.rint(
            baseline["pain_level"][:, :, None] * _pain_scale(first_change, recovery)[:, None, :]
            + rng.normal(0.0, 0.6, (n, len(PAIN_SITES), days))
        ),
        0,
        10,
    ).astype(np.int8)
    breaks = rng.poisson(sitting * baseline["breaks_per_hour"][:, None]).astype(np.int16)
    visit_fraction = _progress_fraction(visit_progress)
    balance = np.clip(
        baseline["balance_target"][:, None] * (0.45 + 0.55 * visit_fraction)
        + rng.normal(0.0, 3.0, (n, visits)),
        0.5,
        120.0,
    )
    trendelenburg = rng.random((n, visits)) < _sigmoid(2.5 - 6.0 * visit_fraction)
    reasons = rng.choice(len(WITHDRAWAL_REASONS), size=n, p=WITHDRAWAL_REASON_SHARES)
    return Cohort(
        baseline=baseline,
        enrol_day=enrol_day,
        diary_end=diary_end,
        exit_day=exit_day,
        exit_reason=exit_reason,
        recovery_day=recovery.day,
        first_change_day=first_change.day,
        overall_adherence=overall_adherence,
        sitting=sitting,
        breaks=breaks,
        pain=pain,
        session_done=session_done,
        phase=phase,
        recovery_fraction=_progress_fraction(recovery.progress),
        phase_start_day=phase_start_day,
        visit_day=visit_day,
        visit_attended=attended,
        visit_measures={
            "activation": activation,
            "strength": strength * baseline["strength_target"][:, None],
            "balance": balance,
            "trendelenburg": trendelenburg,
            "phase": visit_phase,
            "recovered": visit_progress >= 1.0,
        },
        withdrawal_reason=np.asarray(WITHDRAWAL_REASONS, dtype=object)[reasons],
    )


def participant_ids(n: int) -> np.ndarray:
    """Zero-padded ids P00001.. wide enough for n participants."""
    width = max(5, len(str(n)))
    return np.array([f"P{number:0{width}d}" for number in range(1, n + 1)], dtype=object)


def _participants_table(cohort: Cohort, ids: np.ndarray) -> pd.DataFrame:
    baseline = cohort.baseline
    withdrawn = cohort.exit_reason == "withdrawn"
    withdrawn_on = format_dates(cohort.enrol_day + cohort.exit_day)
    columns = {
        Participants.participant_id: ids,
        Participants.site: np.asarray(SITES, dtype=object)[baseline["site"]],
        Participants.enrolled_on: format_dates(cohort.enrol_day),
        Participants.age_years: _format_numbers(baseline["age"], 0),
        Participants.sex: np.where(baseline["female"], SEX_LEVELS[0], SEX_LEVELS[1]).astype(object),
        Participants.bmi: _format_numbers(baseline["bmi"], 1),
        Participants.severity: np.asarray(SEVERITY_LEVELS, dtype=object)[baseline["severity"]],
        Participants.symptom_months: _format_numbers(baseline["symptom_months"], 1),
        Participants.underlying_condition: np.asarray(UNDERLYING_CONDITIONS, dtype=object)[
            baseline["condition"]
        ],
        Participants.baseline_sitting_hours: _format_numbers(baseline["baseline_sitting"], 1),
        Participants.withdrawn_on: np.where(withdrawn, withdrawn_on, "").astype(object),
        Participants.withdrawal_reason: np.where(withdrawn, cohort.withdrawal_reason, "").astype(
            object
        ),
    }
    return pd.DataFrame(columns, columns=column_names(Participants))


def _diary_table(cohort: Cohort, ids: np.ndarray) -> pd.DataFrame:
    person, day = np.nonzero(np.arange(cohort.sitting.shape[1]) < cohort.diary_end[:, None])
    pain = cohort.pain[person, :, day]
    columns = {
        Diary.participant_id: ids[person],
        Diary.date: format_dates(cohort.enrol_day[person] + day),
        Diary.sitting_hours: _format_numbers(cohort.sitting[person, day], 1),
        Diary.sitting_breaks: _format_numbers(cohort.breaks[person, day], 0),
        **{site: _format_numbers(pain[:, index], 0) for index, site in enumerate(PAIN_SITES)},
        Diary.session_done: _format_flags(cohort.session_done[person, day]),
    }
    return pd.DataFrame(columns, columns=column_names(Diary))


def _sessions_table(cohort: Cohort, ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    in_study = np.arange(cohort.sitting.shape[1]) < cohort.diary_end[:, None]
    person, day = np.nonzero(cohort.session_done & in_study)
    phase = cohort.phase[person, day].astype(np.int64)
    exercises_done = rng.choice(
        EXERCISES_PER_SESSION, size=len(person), p=EXERCISES_PER_SESSION_SHARES
    )
    # Rank the catalogue at random per session; a session does its phase's top-ranked exercises.
    rank_keys = rng.random((len(person), len(EXERCISE_NAMES)))
    catalogue_phase = np.array([EXERCISE_PHASE[name] for name in EXERCISE_NAMES])
    rank_keys[catalogue_phase[None, :] != phase[:, None]] = np.inf
    order = rank_keys.argsort(axis=1)
    session = np.repeat(np.arange(len(person)), exercises_done)
    position = np.arange(len(session)) - np.repeat(
        np.cumsum(exercises_done) - exercises_done, exercises_done
    )
    exercise = order[session, position]
    person, day, phase = person[session], day[session], phase[session]

    sets_low = np.array([0, *(SETS_RANGE[p][0] for p in PHASES)])[phase]
    sets_high = np.array([0, *(SETS_RANGE[p][1] for p in PHASES)])[phase]
    reps_low = np.array([0, *(REPS_RANGE[p][0] for p in PHASES)])[phase]
    reps_high = np.array([0, *(REPS_RANGE[p][1] for p in PHASES)])[phase]
    start_load = np.array(
        [np.nan if START_LOAD_KG[name] is None else START_LOAD_KG[name] for name in EXERCISE_NAMES]
    )[exercise]
    weeks_in_phase = (day - cohort.phase_start_day[person, phase]) / DAYS_PER_WEEK
    load_gain = np.array([0, *(LOAD_GAIN_PER_WEEK[p] for p in PHASES)])[phase]
    load = (
        np.round(
            2
            * start_load
            * cohort.baseline["load_scale"][person]
            * (1 + load_gain * weeks_in_phase)
        )
        / 2
    )
    fraction = cohort.recovery_fraction[person, day]
    form = np.clip(np.rint(1.8 + 3.2 * fraction + rng.normal(0.0, 0.6, len(person))), 1, 5)
    columns = {
        Sessions.participant_id: ids[person],
        Sessions.date: format_dates(cohort.enrol_day[person] + day),
        Sessions.phase: _format_numbers(phase, 0),
        Sessions.exercise: np.asarray(EXERCISE_NAMES, dtype=object)[exercise],
        Sessions.sets: _format_numbers(rng.integers(sets_low, sets_high + 1), 0),
        Sessions.reps: _format_numbers(rng.integers(reps_low, reps_high + 1), 0),
        Sessions.load_kg: _format_numbers(load, 1),
        Sessions.form_quality: _format_numbers(form, 0),
    }
    return pd.DataFrame(columns, columns=column_names(Sessions))


def _assessments_table(cohort: Cohort, ids: np.ndarray) -> pd.DataFrame:
    person, visit = np.nonzero(cohort.visit_attended)
    measures = {name: values[person, visit] for name, values in cohort.visit_measures.items()}
    columns = {
        Assessments.participant_id: ids[person],
        Assessments.date: format_dates(cohort.enrol_day[person] + cohort.visit_day[person, visit]),
        Assessments.activation_score: _format_numbers(measures["activation"], 1),
        Assessments.hip_abduction_n: _format_numbers(measures["strength"], 1),
        Assessments.single_leg_balance_s: _format_numbers(measures["balance"], 1),
        Assessments.trendelenburg_positive: _format_flags(measures["trendelenburg"]),
        Assessments.phase_assigned: _format_numbers(measures["phase"], 0),
        Assessments.clinician_recovered: _format_flags(measures["recovered"]),
    }
    return pd.DataFrame(columns, columns=column_names(Assessments))


def _nullable_day(values: np.ndarray, present: np.ndarray) -> list[int | None]:
    return [int(value) if keep else None for value, keep in zip(values, present, strict=True)]


TRUTH_PARTICIPANT_FIELDS = (
    "participant_id",
    "true_first_change_day",
    "true_recovery_day",
    "withdrawn_day",
    "lost_day",
    "overall_adherence",
)


def _baseline_truth(multiple: float) -> dict:
    return {
        "form": "sum of weibull terms",
        "cumulative": (
            "H0(t) = multiple * sum over terms of (t / scale_days) ** shape, t in days since "
            "enrolment"
        ),
        "multiple": multiple,
        "terms": [dict(term) for term in RECOVERY_BASELINE["terms"]],
    }


def cohort_tables(cohort: Cohort, ids: np.ndarray, rng: np.random.Generator) -> dict:
    """The cohort's four raw tables, clean: canonical values written as strings."""
    return {
        "participants": _participants_table(cohort, ids),
        "diary": _diary_table(cohort, ids),
        "sessions": _sessions_table(cohort, ids, rng),
        "assessments": _assessments_table(cohort, ids),
    }


def cohort_truth(
    cohort: Cohort, ids: np.ndarray, seed: int, mess_rate: float, design: StudyDesign
) -> dict:
    """truth.json: the generating parameters and each participant's true days."""
    recovery = _nullable_day(cohort.recovery_day, cohort.recovery_day >= 0)
    first_change = _nullable_day(cohort.first_change_day, cohort.first_change_day >= 0)
    withdrawn = _nullable_day(cohort.exit_day, cohort.exit_reason == "withdrawn")
    lost = _nullable_day(cohort.exit_day, cohort.exit_reason == "lost")
    adherence = np.round(cohort.overall_adherence, 4).tolist()
    hazard_time_scale = (
        "day d lies in week d // 7; that week's realised adherence (sessions done / prescribed) "
        "and mean diary sitting hours enter the hazard"
    )
    return {
        "seed": int(seed),
        "participant_count": len(ids),
        "mess_rate": float(mess_rate),
        "follow_up_weeks": int(design.follow_up_weeks),
        # Full recovery's effects stay at the top level (the parameter-recovery checks read
        # them there); the first functional change has its own block in the same coding.
        "generating_parameters": {
            **HAZARD_COEFFICIENTS,
            "baseline_hazard": _baseline_truth(1.0),
            "first_functional_change": {
                **FIRST_CHANGE_COEFFICIENTS,
                "baseline_hazard": _baseline_truth(FIRST_CHANGE_BASELINE_MULTIPLE),
            },
            "hazard_time_scale": hazard_time_scale,
            "milestone_threshold": MILESTONE_THRESHOLD,
            "chronic_after_months": design.chronic_after_months,
            "prescribed_sessions_per_week": {
                str(phase): rate for phase, rate in design.prescribed_sessions_per_week.items()
            },
            "adherence": ADHERENCE_MODEL,
            "sitting": SITTING_MODEL,
            "withdrawal": WITHDRAWAL_MODEL,
            "loss_to_follow_up": LOSS_MODEL,
            "visit_schedule": VISIT_SCHEDULE,
            "phase_thresholds": PHASE_THRESHOLDS,
            "secondary_pain": PAIN_MODEL,
            "hip_abduction_strength": STRENGTH_MODEL,
            "site_shares": dict(zip(SITES, SITE_SHARES, strict=True)),
        },
        "participants": [
            dict(zip(TRUTH_PARTICIPANT_FIELDS, values, strict=True))
            for values in zip(ids, first_change, recovery, withdrawn, lost, adherence, strict=True)
        ],
    }
