"""Calibrated recovery-time ranges per patient profile, checked against the ranges clinicians quote.

The ranges come from the interval-censored AFT model with the lowest AIC (survreg's Weibull,
log-normal or log-logistic; the fit stage's fits, passed in, not refitted here): each profile's
predicted 10th/50th/90th percentile of the weeks to recovery, with participant-bootstrap CIs,
beside the observed (Turnbull) median where a profile has enough people.
`calibration_diagnostics` checks the model out of sample with the survival layer's generic checks
(`analysis.survival.validation`: concordance, calibration of recovery probabilities, integrated
Brier score) plus the coverage of the 10-90 band, and `TimelineModel` is the small JSON-safe form
of the chosen fit that the CLI turns into a sentence a clinician can quote.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.conventions import CONVENTIONS
from analysis.derive import interval_censored_frame
from analysis.distributions import LOGISTIC, MINIMUM_EXTREME_VALUE, NORMAL
from analysis.errors import ConvergenceError, DataError, ModelWarning, ParameterError
from analysis.results import ModelResult, run_collecting_notes
from analysis.schema import DAYS_PER_WEEK, SEVERITY_LEVELS, UNDERLYING_CONDITIONS, Recovery
from analysis.survival import turnbull
from analysis.survival.aft import INTERCEPT, AftEstimate, AftRefits, AftResult, compare_by_aic
from analysis.survival.design import is_categorical
from analysis.survival.interval import turnbull_replicates
from analysis.survival.nonparametric import kaplan_meier_steps, step_function_at
from analysis.survival.validation import (
    calibration_by_groups,
    censoring_survival,
    cross_validated,
    harrell_c,
    integrated_brier_score,
    ipcw_brier_scores,
)

DAYS_PER_MONTH = 365.25 / 12
LOWER = Recovery.interval_lower_days
UPPER = Recovery.interval_upper_days
MEDIAN = 0.5
TIMELINE_MODEL_FORMAT = 1
AGREE, DISAGREE, INCONCLUSIVE, UNDETERMINED = "agree", "disagree", "inconclusive", "undetermined"
VERDICTS = (AGREE, DISAGREE, INCONCLUSIVE, UNDETERMINED)
# The one rule by which every quoted range is checked against the data (said in the reports).
VERDICT_RULE = (
    "agree: the whole 95% confidence interval of the estimate lies inside the quoted range; "
    "disagree: the whole interval lies outside it; inconclusive: the interval reaches across an "
    "end of the range, so the data fit both the quote and its contrary; undetermined: no estimate"
)
COMPARISON_COLUMNS = (
    "claim",
    "quoted",
    "observed",
    "verdict",
    "detail",
    # Claim (a), in weeks: the model's predicted median and the observed (Turnbull) median of
    # the profile's people, each with its 95% CI, for the reports to set beside the milestones'.
    "profile",
    "people",
    "estimate_weeks",
    "conf_low_weeks",
    "conf_high_weeks",
    "observed_weeks",
    "observed_conf_low_weeks",
    "observed_conf_high_weeks",
)
SUMMARY_COLUMNS = ("metric", "value", "detail")
CALIBRATION_COLUMNS = ("week", "group", "n", "predicted", "observed")
# Column stems of the per-grid-time survival predictions inside the cross-validation.
MODEL_SURVIVAL = "model_survival_"
NULL_SURVIVAL = "null_survival_"

# The standardised error W of log T = X beta + scale * W: survreg's "weibull" is the minimum
# extreme-value (Gumbel, left-skewed) error.
ERROR_DISTRIBUTIONS = {
    "weibull": MINIMUM_EXTREME_VALUE,
    "lognormal": NORMAL,
    "loglogistic": LOGISTIC,
}
# Levels of the canonical profile dimensions that are not configured in params.yaml.
CANONICAL_LEVELS = {
    Recovery.severity: list(SEVERITY_LEVELS),
    Recovery.underlying_condition: list(UNDERLYING_CONDITIONS),
    Recovery.chronic: [False, True],
}
CONDITION_PHRASES = {
    "disc": "a disc problem",
    "nerve_entrapment": "nerve entrapment",
    "other": "another underlying condition",
}
REFERENCE_CONDITION = "none"
# Probability-integral-transform bounds are widened to multiples of this for Turnbull's EM.
PIT_GRID_STEP = 0.05
# A curve value within this of a probability level counts as reaching it (as survfit's median).


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def quantile_label(quantile: float) -> str:
    """Column stem of a predicted quantile: 0.5 -> "median", 0.1 -> "p10", 0.9 -> "p90"."""
    return "median" if math.isclose(quantile, MEDIAN) else f"p{quantile * 100:g}"


def _with_notes(
    fit: Callable[[], Any], failures: tuple[type[Exception], ...] = ()
) -> tuple[Any, list[str]]:
    """Run `fit` through the toolkit's warning collector, keeping the notes' sentences.

    Errors in `failures` leave the result None with a note; any other error propagates.
    """
    result, notes = run_collecting_notes("timeline", fit, failures)
    return result, [message for _, _, message in notes]


def _typical_value(column: pd.Series) -> Any:
    """The median of a numeric column, the commonest value (first in sorted order at ties) else."""
    present = column.dropna()
    if present.empty:
        return None
    if not is_categorical(present):
        return float(present.median())
    counts = present.value_counts()
    commonest = counts[counts == counts.max()].index
    return sorted(commonest, key=str)[0]


def _json_safe(value: Any) -> Any:
    """numpy scalars and containers as plain Python, for json.dumps."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if np.isfinite(value) else None
    return value


def analysis_frame(recovery: pd.DataFrame, covariates: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """People with some information on recovery and every AFT covariate present.

    Dropping people with a missing covariate (e.g. no diary, so no adherence) assumes they are
    missing at random given the rest; the count is returned as a note.
    """
    missing = [name for name in [*covariates, LOWER, UPPER] if name not in recovery]
    if missing:
        raise DataError("column not in the recovery frame", column=missing[0])
    informative = interval_censored_frame(recovery)
    complete = informative[covariates].notna().all(axis=1)
    notes = []
    if (~complete).any():
        notes.append(
            f"{int((~complete).sum())} people without every AFT covariate "
            f"({', '.join(covariates)}) left out of the timeline model"
        )
    frame = informative.loc[complete]
    if frame.empty:
        raise DataError("no participant has recovery information and every AFT covariate")
    return frame, notes


def _fit_candidates(
    refits: dict[str, AftRefits], rows: np.ndarray
) -> tuple[dict[str, AftEstimate], list[str]]:
    """Each AFT distribution fitted to these rows of the frame `refits` code (a cross-validation
    fold's training people), with notes.

    The whole-data fits are the fit stage's (`fit.aft_candidates`); this refits a training fold.
    """
    fits, notes = {}, []
    for distribution, refit in refits.items():
        fitted, messages = _with_notes(
            lambda refit=refit: refit.fit(rows), failures=(ConvergenceError,)
        )
        if fitted is not None:
            messages.extend(fitted.notes)
            fits[distribution] = fitted
        notes.extend(f"{distribution} AFT: {message}" for message in messages)
    return fits, notes


def _best_distribution(comparison: pd.DataFrame) -> str:
    return str(comparison.loc[comparison["best_by_aic"], "distribution"].iloc[0])


def _check_quantiles(quantiles: Iterable[float]) -> tuple[float, ...]:
    values = tuple(sorted(float(q) for q in quantiles))
    if (
        not values
        or any(not 0 < q < 1 for q in values)
        or not any(math.isclose(q, MEDIAN) for q in values)
    ):
        raise ParameterError(f"timeline.quantiles must lie in (0, 1) and include 0.5: {values}")
    return values


# --------------------------------------------------------------------------------------------
# The serialisable model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineModel:
    """A fitted AFT model reduced to what prediction needs, JSON-safe via to_dict/from_dict.

    Predictions are of the time to the (unobserved) recovery itself, not to the visit that
    detected it; they carry no uncertainty of the fit (see the timeline table's bootstrap CIs).
    """

    distribution: str
    coefficients: dict[str, float]
    scale: float
    covariates: list[str]
    factor_levels: dict[str, list]
    typical_values: dict[str, Any] = field(default_factory=dict)
    representative_values: dict[str, dict[str, float]] = field(default_factory=dict)
    numeric_ranges: dict[str, list[float]] = field(default_factory=dict)
    band: tuple[float, float] = (0.1, 0.9)
    chronic_after_months: float = 6.0
    n_observations: int = 0

    @classmethod
    def from_aft(
        cls,
        result: AftResult | AftEstimate,
        frame: pd.DataFrame | None = None,
        representative_values: dict[str, dict[str, float]] | None = None,
        band: tuple[float, float] = (0.1, 0.9),
        chronic_after_months: float = 6.0,
    ) -> TimelineModel:
        """From an AFT fit; `frame` (the data it was fitted on) supplies typical values/ranges."""
        typical, ranges = {}, {}
        if frame is not None:
            for name in result.covariates:
                typical[name] = _typical_value(frame[name])
                if name not in result.factor_levels:
                    ranges[name] = [float(frame[name].min()), float(frame[name].max())]
        return cls(
            distribution=result.distribution,
            coefficients={str(k): float(v) for k, v in result.params.items()},
            scale=float(result.scale),
            covariates=list(result.covariates),
            factor_levels={k: list(v) for k, v in result.factor_levels.items()},
            typical_values=typical,
            representative_values=representative_values or {},
            numeric_ranges=ranges,
            band=(float(band[0]), float(band[1])),
            chronic_after_months=float(chronic_after_months),
            n_observations=int(result.n_observations),
        )

    # ---- prediction on frames ---------------------------------------------------------------

    def linear_predictor(
        self, frame: pd.DataFrame, coded: dict[str, tuple[list, np.ndarray]] | None = None
    ) -> np.ndarray:
        """X beta on the log-day scale per row; NaN where a value is missing or a level unknown.

        A level unseen in the fit, or one whose term was aliased (dropped), has no coefficient:
        those rows are NaN rather than silently predicted as the reference level. `coded` maps a
        factor to (levels, each row's code among them, -1 for none): a caller predicting one
        frame from many models (the bootstrap) codes the frame once.
        """
        coded = coded or {}
        linear = np.full(len(frame), self.coefficients.get(INTERCEPT, 0.0))
        for name in self.covariates:
            if name not in frame:
                raise DataError("covariate not in the frame", column=name)
            column = frame[name]
            if name not in self.factor_levels:
                linear = linear + self.coefficients.get(name, np.nan) * column.to_numpy(float)
                continue
            levels = self.factor_levels[name]
            # Each row's level code (-1: missing or not a fitted level, so NaN).
            row_levels, codes = coded.get(name) or (
                levels,
                pd.Categorical(column, categories=levels).codes,
            )
            effect = [self._level_effect(name, level) for level in row_levels]
            linear = linear + np.array([*effect, np.nan])[codes]
        return linear

    def _level_effect(self, factor: str, level: Any) -> float:
        """What a level adds to the linear predictor: 0 at the reference, its coefficient (NaN
        if aliased), NaN for a level the fit did not see."""
        levels = self.factor_levels[factor]
        if level not in levels:
            return np.nan
        if level == levels[0]:
            return 0.0
        return self.coefficients.get(f"{factor}[{level}]", np.nan)

    def quantile_days(
        self,
        frame: pd.DataFrame,
        quantiles: Iterable[float] = (0.1, 0.5, 0.9),
        coded: dict[str, tuple[list, np.ndarray]] | None = None,
    ) -> pd.DataFrame:
        """Predicted quantiles of the days to recovery, one column per quantile (`coded` as for
        `linear_predictor`)."""
        quantiles = list(quantiles)
        offsets = ERROR_DISTRIBUTIONS[self.distribution].ppf(np.asarray(quantiles, float))
        linear = self.linear_predictor(frame, coded)
        times = np.exp(linear[:, None] + self.scale * offsets[None, :])
        return pd.DataFrame(times, index=frame.index, columns=quantiles)

    def probability_recovered_by(self, frame: pd.DataFrame, days: Iterable[float]) -> pd.DataFrame:
        """P(T <= t) per row (rows) and time in days (columns)."""
        days = np.asarray(list(days), dtype=float)
        linear = self.linear_predictor(frame)
        standardised = (np.log(days)[None, :] - linear[:, None]) / self.scale
        return pd.DataFrame(
            ERROR_DISTRIBUTIONS[self.distribution].cdf(standardised),
            index=frame.index,
            columns=days,
        )

    def probability_recovered_by_row(self, frame: pd.DataFrame, days: pd.Series) -> np.ndarray:
        """P(T <= days_i) for row i: 0 at or before day 0, NaN where days_i is missing/infinite."""
        days = np.asarray(days, dtype=float)
        positive = days > 0
        linear = self.linear_predictor(frame)
        with np.errstate(divide="ignore", invalid="ignore"):
            standardised = (np.log(np.where(positive, days, 1.0)) - linear) / self.scale
        probability = ERROR_DISTRIBUTIONS[self.distribution].cdf(standardised)
        probability = np.where(positive, probability, 0.0)
        return np.where(np.isfinite(days), probability, np.nan)

    # ---- one person -------------------------------------------------------------------------

    def _chronic_threshold(self, chronic_after_months: float | None) -> float:
        """The symptom months that make a case chronic: as in the fitted data unless given."""
        if chronic_after_months is None:
            return self.chronic_after_months
        _check_number(
            chronic_after_months,
            0.0,
            600.0,
            "chronic_after_months",
            "months, e.g. 6",
            open_low=True,
        )
        return float(chronic_after_months)

    def person_frame(
        self,
        severity: str,
        adherence: float,
        sitting_hours: float,
        symptom_months: float | None = None,
        underlying_condition: str = REFERENCE_CONDITION,
        chronic_after_months: float | None = None,
    ) -> pd.DataFrame:
        """One validated row of covariates; covariates not asked for take their typical value."""
        severity_levels = self.factor_levels.get(Recovery.severity, list(SEVERITY_LEVELS))
        if severity not in severity_levels:
            raise DataError(
                f"unknown severity {severity!r}",
                column=Recovery.severity,
                hint=f"one of {', '.join(map(str, severity_levels))}",
            )
        condition_levels = self.factor_levels.get(
            Recovery.underlying_condition, list(UNDERLYING_CONDITIONS)
        )
        if underlying_condition not in condition_levels:
            raise DataError(
                f"unknown underlying condition {underlying_condition!r}",
                column=Recovery.underlying_condition,
                hint=f"one of {', '.join(map(str, condition_levels))}",
            )
        _check_number(
            adherence,
            0.0,
            1.0,
            Recovery.overall_adherence,
            "adherence is a share of prescribed sessions, e.g. 0.9 for 90 %",
        )
        _check_number(
            sitting_hours, 0.0, 24.0, Recovery.mean_sitting_hours, "mean daily sitting hours, 0-24"
        )
        threshold = self._chronic_threshold(chronic_after_months)
        if symptom_months is None:
            chronic = self.typical_values.get(Recovery.chronic, False)
        else:
            _check_number(
                symptom_months,
                0.0,
                600.0,
                Recovery.symptom_months,
                "months since the symptoms began",
            )
            chronic = bool(float(symptom_months) >= threshold)
        given = {
            Recovery.severity: severity,
            Recovery.overall_adherence: float(adherence),
            Recovery.mean_sitting_hours: float(sitting_hours),
            Recovery.chronic: bool(chronic),
            Recovery.underlying_condition: underlying_condition,
            Recovery.symptom_months: symptom_months,
        }
        row = {}
        for name in self.covariates:
            value = given.get(name)
            row[name] = self.typical_values.get(name) if value is None else value
            if row[name] is None:
                raise DataError(f"no value for the model covariate {name!r}", column=name)
        frame = pd.DataFrame([row])
        if Recovery.chronic in frame:
            frame[Recovery.chronic] = frame[Recovery.chronic].astype(bool)
        if np.isnan(self.linear_predictor(frame)[0]):
            raise DataError(
                "the model has no estimate for this combination (a level was too rare in the "
                "data it was fitted on)"
            )
        return frame

    def predict_weeks(
        self,
        severity: str,
        adherence: float,
        sitting_hours: float,
        symptom_months: float | None = None,
        underlying_condition: str = REFERENCE_CONDITION,
        chronic_after_months: float | None = None,
    ) -> tuple[float, float, float]:
        """(lower band, median, upper band) weeks to recovery for one person (10th/50th/90th).

        A model estimate for a typical person with these values: it says nothing about the
        uncertainty of the fit, and inputs outside the study's range are extrapolations.
        """
        person = self.person_frame(
            severity,
            adherence,
            sitting_hours,
            symptom_months,
            underlying_condition,
            chronic_after_months,
        )
        low, median, high = self.quantile_days(person, (self.band[0], MEDIAN, self.band[1])).iloc[0]
        return (low / DAYS_PER_WEEK, median / DAYS_PER_WEEK, high / DAYS_PER_WEEK)

    def describe_range(
        self,
        severity: str,
        adherence: float,
        sitting_hours: float,
        symptom_months: float | None = None,
        underlying_condition: str = REFERENCE_CONDITION,
        chronic_after_months: float | None = None,
    ) -> str:
        """One person's calibrated range in words a clinician can quote (weeks, rounded)."""
        low, median, high = self.predict_weeks(
            severity,
            adherence,
            sitting_hours,
            symptom_months,
            underlying_condition,
            chronic_after_months,
        )
        threshold = self._chronic_threshold(chronic_after_months)
        if symptom_months is None:
            typical_chronic = bool(self.typical_values.get(Recovery.chronic, False))
            stage = "chronic" if typical_chronic else "recent"
            subject = f"A {severity} case of unknown duration (taken as {stage}, the commonest)"
        else:
            stage = "chronic" if float(symptom_months) >= threshold else "recent"
            subject = f"A {severity}, {stage} case ({float(symptom_months):g} months)"
        adherence_text = f"{adherence * 100:.0f} % adherence"
        if underlying_condition in CONDITION_PHRASES:
            subject += f" with {CONDITION_PHRASES[underlying_condition]} and {adherence_text}"
        else:
            subject += f" with {adherence_text}"
        subject += f" sitting {round(sitting_hours, 1):g} h a day"
        share = self.band[1] - self.band[0]
        in_ten = share * 10
        people = (
            f"{in_ten:.0f} in 10 people"
            if math.isclose(in_ten, round(in_ten))
            else f"{share * 100:.0f} % of people"
        )
        text = (
            f"{subject}: typically recovers in about {_weeks_text(median)}; {people} like this "
            f"recover between {_round_weeks(low)} and {_weeks_text(high)}"
        )
        if high >= 26:
            text += f" (about {high * DAYS_PER_WEEK / DAYS_PER_MONTH:.0f} months)"
        text += "."
        outside = [
            label
            for name, label, value in (
                (Recovery.overall_adherence, "adherence", adherence),
                (Recovery.mean_sitting_hours, "sitting hours", sitting_hours),
            )
            if name in self.numeric_ranges
            and not self.numeric_ranges[name][0] <= value <= self.numeric_ranges[name][1]
        ]
        if outside:
            text += f" ({' and '.join(outside).capitalize()} outside the range seen in the study:"
            text += " an extrapolation.)"
        return text

    # ---- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-safe dict (json.dumps works on it as it is)."""
        return _json_safe(
            {
                "format": TIMELINE_MODEL_FORMAT,
                "distribution": self.distribution,
                "coefficients": self.coefficients,
                "scale": self.scale,
                "covariates": self.covariates,
                "factor_levels": self.factor_levels,
                "typical_values": self.typical_values,
                "representative_values": self.representative_values,
                "numeric_ranges": self.numeric_ranges,
                "band": list(self.band),
                "chronic_after_months": self.chronic_after_months,
                "n_observations": self.n_observations,
            }
        )

    @classmethod
    def from_dict(cls, data: dict) -> TimelineModel:
        """Rebuild from `to_dict()` output (e.g. JSON written by the fit stage)."""
        required = ("distribution", "coefficients", "scale", "covariates", "factor_levels")
        missing = [key for key in required if key not in data]
        if missing:
            raise DataError(f"timeline model is missing {', '.join(missing)}")
        if data.get("format", TIMELINE_MODEL_FORMAT) != TIMELINE_MODEL_FORMAT:
            raise DataError(f"unsupported timeline model format {data.get('format')!r}")
        if data["distribution"] not in ERROR_DISTRIBUTIONS:
            raise DataError(f"unknown AFT distribution {data['distribution']!r}")
        return cls(
            distribution=data["distribution"],
            coefficients={k: float(v) for k, v in data["coefficients"].items()},
            scale=float(data["scale"]),
            covariates=list(data["covariates"]),
            factor_levels={k: list(v) for k, v in data["factor_levels"].items()},
            typical_values=dict(data.get("typical_values", {})),
            representative_values={
                k: dict(v) for k, v in data.get("representative_values", {}).items()
            },
            numeric_ranges={k: list(v) for k, v in data.get("numeric_ranges", {}).items()},
            band=tuple(data.get("band", (0.1, 0.9))),
            chronic_after_months=float(data.get("chronic_after_months", 6.0)),
            n_observations=int(data.get("n_observations", 0)),
        )


def _check_number(
    value: Any, low: float, high: float, column: str, hint: str, open_low: bool = False
) -> None:
    """A finite number within [low, high] (or (low, high]), else a DataError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"not a number: {value!r}", column=column, hint=hint) from None
    below = number <= low if open_low else number < low
    if not np.isfinite(number) or below or number > high:
        interval = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise DataError(f"{number:g} is outside {interval}", column=column, hint=hint)


def _round_weeks(weeks: float) -> str:
    return f"{max(round(weeks), 1):d}"


def _weeks_text(weeks: float) -> str:
    rounded = max(round(weeks), 1)
    return f"{rounded:d} week" + ("" if rounded == 1 else "s")


# --------------------------------------------------------------------------------------------
# The timeline table
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TimelineResult(ModelResult):
    """Predicted and observed weeks to recovery per profile; `.fitted` maps distribution -> fit.

    `.model` is the fit with the lowest AIC, `.timeline_model` its serialisable form,
    `.bootstrap` the per-replicate predictions (weeks) behind the CIs.
    """

    distribution: str
    model_comparison: pd.DataFrame
    timeline_model: TimelineModel
    bootstrap: pd.DataFrame
    dimensions: list[str]
    dimension_levels: dict[str, list]
    typical_levels: dict[str, Any]
    quantiles: tuple[float, ...]
    bootstrap_samples: int

    @property
    def model(self) -> AftResult:
        return self.fitted[self.distribution]

    @property
    def table(self) -> pd.DataFrame:
        return self.coefficients

    def profile_index(self, **levels: Any) -> int:
        """Row label of the profile with these levels; unnamed dimensions at their typical level."""
        unknown = set(levels) - set(self.dimensions)
        if unknown:
            raise DataError(f"not a profile dimension: {sorted(unknown)}")
        wanted = {**self.typical_levels, **levels}
        rows = self.coefficients
        match = np.ones(len(rows), dtype=bool)
        for name in self.dimensions:
            match &= (rows[name] == wanted[name]).to_numpy()
        if not match.any():
            raise DataError(f"no profile with {wanted}")
        return int(rows.index[np.flatnonzero(match)[0]])

    def profile_levels(self, index: int) -> dict[str, Any]:
        return {name: self.coefficients.loc[index, name] for name in self.dimensions}


def _dimension_levels(dimension: str, frame: pd.DataFrame, params_derive: dict) -> list:
    """Levels of one profile dimension: configured or canonical, else those in the data."""
    if dimension == Recovery.adherence_group:
        return list(params_derive["adherence"]["group_labels"])
    if dimension == Recovery.sitting_band:
        return list(params_derive["sitting"]["band_labels"])
    if dimension in CANONICAL_LEVELS:
        return list(CANONICAL_LEVELS[dimension])
    if dimension not in frame:
        raise DataError("profile dimension not in the recovery frame", column=dimension)
    return sorted(frame[dimension].dropna().unique(), key=str)


def representative_values(
    frame: pd.DataFrame, covariate_dimensions: dict[str, str]
) -> dict[str, dict[Any, float]]:
    """Per numeric covariate, its median among the people in each level of its profile dimension.

    The median over everyone in the group/band (not within the full profile, whose cells are
    small), so a profile stands for a typical member of its group, not a cut-off.
    """
    values = {}
    for covariate, dimension in covariate_dimensions.items():
        present = frame[[covariate, dimension]].dropna()
        values[covariate] = present.groupby(dimension)[covariate].median().to_dict()
    return values


def _profile_grid(
    dimensions: list[str],
    levels: dict[str, list],
    covariates: list[str],
    representative: dict[str, dict],
    covariate_dimensions: dict[str, str],
    typical: dict[str, Any],
) -> tuple[pd.DataFrame, pd.Series]:
    """Every combination of dimension levels, with the covariate values that stand for it.

    Returns the grid and, per row, why no prediction is possible (empty where one is).
    """
    grid = pd.MultiIndex.from_product([levels[d] for d in dimensions], names=dimensions)
    profiles = grid.to_frame(index=False)
    if Recovery.chronic in profiles:
        profiles[Recovery.chronic] = profiles[Recovery.chronic].astype(bool)
    reason = pd.Series("", index=profiles.index, dtype=object)
    for covariate in covariates:
        if covariate in dimensions:
            continue
        dimension = covariate_dimensions.get(covariate)
        if dimension in dimensions:
            medians = representative.get(covariate, {})
            profiles[covariate] = profiles[dimension].map(medians).astype(float)
            no_one = profiles[covariate].isna()
            reason[no_one] = [
                f"no one with {dimension}={level} to take a typical {covariate} from"
                for level in profiles.loc[no_one, dimension]
            ]
        else:
            profiles[covariate] = typical.get(covariate)
    return profiles, reason


def _bootstrap_quantiles(
    frame: pd.DataFrame,
    profiles: pd.DataFrame,
    model: AftResult,
    quantiles: tuple[float, ...],
    samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[str]]:
    """Predicted days per (replicate, profile, quantile) from refits of `model` (its
    distribution, covariates and reference levels) on resampled participants.

    A replicate that fails to converge is NaN throughout; a level absent from (or aliased in) a
    replicate makes that level's profiles NaN there. Returns the array and notes on both.
    """
    predictions = np.full((samples, len(profiles), len(quantiles)), np.nan)
    references = {name: levels[0] for name, levels in model.factor_levels.items()}
    failed, with_notes = 0, {}
    # Each replicate is fit_aft on the resampled rows; the frame is coded once for all of them.
    refits = AftRefits(
        frame,
        model.covariates,
        distribution=model.distribution,
        lower=LOWER,
        upper=UPPER,
        reference_levels=references,
    )
    # The profiles' factor levels coded once against every level the frame holds.
    coded = {
        name: (levels, pd.Categorical(profiles[name], categories=levels).codes)
        for name, (levels, _) in refits.factors.items()
    }
    for replicate in range(samples):
        resampled = rng.integers(0, len(frame), len(frame))
        fitted, messages = _with_notes(
            lambda rows=resampled: refits.fit(rows), failures=(ConvergenceError, DataError)
        )
        if fitted is None:
            failed += 1
            continue
        for message in [*messages, *fitted.notes]:
            with_notes[message] = with_notes.get(message, 0) + 1
        refitted = TimelineModel.from_aft(fitted)
        predictions[replicate] = refitted.quantile_days(profiles, quantiles, coded).to_numpy()
    notes = []
    if failed:
        notes.append(f"{failed} of {samples} bootstrap refits failed and were left out")
    notes.extend(
        f"{count} of {samples} bootstrap refits: {message}" for message, count in with_notes.items()
    )
    return predictions, notes


def _observed_medians(
    frame: pd.DataFrame,
    profiles: pd.DataFrame,
    dimensions: list[str],
    min_size: int,
) -> tuple[pd.Series, pd.Series, pd.Series, list[str]]:
    """People per profile and the Turnbull median (weeks) where a profile has >= min_size people.

    Turnbull's NPMLE puts each innermost interval's mass at its midpoint (as survfit), so the
    median is exact only up to the visit spacing; it is missing when the curve stays above 0.5.
    """
    key = profiles[dimensions].reset_index().rename(columns={"index": "profile"})
    people = frame[dimensions].merge(key, on=dimensions, how="left")
    people.index = frame.index
    counts = people["profile"].value_counts().reindex(profiles.index, fill_value=0)
    median = pd.Series(np.nan, index=profiles.index)
    note = pd.Series("", index=profiles.index, dtype=object)
    notes = []
    for profile in profiles.index:
        n = int(counts[profile])
        if n < min_size:
            note[profile] = f"fewer than {min_size} people in the profile (n={n})"
            continue
        members = frame.loc[people.index[people["profile"] == profile]]
        curve, messages = _with_notes(lambda data=members: turnbull(data, LOWER, UPPER))
        notes.extend(f"observed median of profile {profile}: {m}" for m in messages)
        fit = next(iter(curve.fitted.values()))
        days = fit.quantile(MEDIAN)
        if np.isnan(days):
            last = fit.times[-1] if fit.times.size else 0.0
            note[profile] = f"median not reached: Turnbull curve above 0.5 up to day {last:g}"
        else:
            median[profile] = days / DAYS_PER_WEEK
            note[profile] = f"Turnbull NPMLE median of {n} people"
    return counts, median, note, notes


def timeline_table(
    recovery: pd.DataFrame,
    fits: dict[str, AftResult],
    params_timeline: dict,
    params_derive: dict,
) -> TimelineResult:
    """Predicted 10th/50th/90th percentile weeks to recovery per patient profile, with CIs.

    `fits` are the interval-censored AFT fits of `recovery` by distribution (the fit stage's,
    `fit.aft_candidates`); the model is the one with the lowest AIC. CIs are percentile
    intervals over refits of that distribution on participants resampled with replacement (the
    distribution choice itself is not re-made per replicate, so the CIs ignore model-selection
    uncertainty). A profile's numeric covariates are
    the medians within its adherence group / sitting band; predictions for profile cells with no
    people are model extrapolations (n_in_profile says so). The observed median is the Turnbull
    NPMLE's of the profile's people (interval-censored like the model, unlike Kaplan-Meier on
    visit days), only where the profile has min_profile_size_for_observed people.
    """
    comparison = compare_by_aic(fits)
    best = _best_distribution(comparison)
    covariates = list(fits[best].covariates)
    dimensions = list(params_timeline["profile_dimensions"])
    quantiles = _check_quantiles(params_timeline["quantiles"])
    samples = int(params_timeline["bootstrap_samples"])
    if samples < 0:
        raise ParameterError("timeline.bootstrap_samples must be >= 0")
    covariate_dimensions = dict(params_timeline["representative_values"])
    frame, notes = analysis_frame(recovery, covariates)
    missing_dimensions = [d for d in dimensions if d not in frame]
    if missing_dimensions:
        raise DataError("profile dimension not in the recovery frame", column=missing_dimensions[0])
    if fits[best].n_observations != len(frame):
        raise DataError(
            f"the AFT fits describe {fits[best].n_observations} people, but {len(frame)} in "
            "this recovery frame have recovery information and every covariate: they were "
            "fitted on other data"
        )
    levels = {d: _dimension_levels(d, frame, params_derive) for d in dimensions}
    typical = {name: _typical_value(frame[name]) for name in {*dimensions, *covariates}}
    representative = representative_values(frame, covariate_dimensions)
    profiles, unpredictable = _profile_grid(
        dimensions, levels, covariates, representative, covariate_dimensions, typical
    )
    band = (quantiles[0], quantiles[-1])
    model = TimelineModel.from_aft(
        fits[best], frame, representative, band, params_derive["chronic_after_months"]
    )
    point = model.quantile_days(profiles, quantiles) / DAYS_PER_WEEK

    rng = np.random.default_rng(params_timeline["seed"])
    replicates, bootstrap_notes = _bootstrap_quantiles(
        frame, profiles, fits[best], quantiles, samples, rng
    )
    notes.extend(bootstrap_notes)
    replicates = replicates / DAYS_PER_WEEK
    alpha = 1 - CONVENTIONS.confidence_level

    counts, observed, observed_note, observed_notes = _observed_medians(
        frame, profiles, dimensions, int(params_timeline["min_profile_size_for_observed"])
    )
    notes.extend(observed_notes)

    table = profiles[dimensions].copy()
    for name in covariate_dimensions:
        if name in profiles:
            table[f"typical_{name}"] = profiles[name]
    table["n_in_profile"] = counts.to_numpy()
    for position, quantile in enumerate(quantiles):
        label = quantile_label(quantile)
        values = replicates[:, :, position]
        usable = np.isfinite(values).any(axis=0) if samples else np.zeros(len(table), bool)
        with warnings.catch_warnings():
            # All-NaN columns (no usable replicate) are expected and reported as NaN.
            warnings.simplefilter("ignore", RuntimeWarning)
            low = np.nanquantile(values, alpha / 2, axis=0) if samples else np.nan
            high = np.nanquantile(values, 1 - alpha / 2, axis=0) if samples else np.nan
        table[f"predicted_{label}_weeks"] = point[quantile].to_numpy()
        table[f"{label}_conf_low"] = np.where(usable, low, np.nan)
        table[f"{label}_conf_high"] = np.where(usable, high, np.nan)
    table["bootstrap_replicates"] = np.isfinite(replicates[:, :, 0]).sum(axis=0)
    table["observed_median_weeks"] = observed.to_numpy()
    table["observed_note"] = observed_note.to_numpy()
    table["predicted_note"] = unpredictable.to_numpy()
    no_estimate = table[f"predicted_{quantile_label(MEDIAN)}_weeks"].isna() & (unpredictable == "")
    table.loc[no_estimate, "predicted_note"] = "a level of this profile has no model estimate"
    extrapolated = (table["n_in_profile"] == 0) & (table["predicted_note"] == "")
    table.loc[extrapolated, "predicted_note"] = "no one in the data has this profile: extrapolated"
    table["distribution"] = best

    bootstrap = pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(samples), len(profiles) * len(quantiles)),
            "profile": np.tile(np.repeat(profiles.index, len(quantiles)), samples),
            "quantile": np.tile(quantiles, samples * len(profiles)),
            "weeks": replicates.reshape(-1),
        }
    )
    result = TimelineResult(
        fitted=fits,
        coefficients=table,
        distribution=best,
        model_comparison=comparison,
        timeline_model=model,
        bootstrap=bootstrap,
        dimensions=dimensions,
        dimension_levels=levels,
        typical_levels={d: typical[d] for d in dimensions},
        quantiles=quantiles,
        bootstrap_samples=samples,
    )
    for message in notes:
        result.note(message)
    return result


# --------------------------------------------------------------------------------------------
# The clinicians' quoted ranges
# --------------------------------------------------------------------------------------------


def range_verdict(conf_low: float, conf_high: float, low: float, high: float = np.inf) -> str:
    """A quoted range [low, high] against an estimate's 95% CI, by VERDICT_RULE."""
    if np.isnan(conf_low) or np.isnan(conf_high):
        return UNDETERMINED
    if low <= conf_low and conf_high <= high:
        return AGREE
    if conf_high < low or conf_low > high:
        return DISAGREE
    return INCONCLUSIVE


def combined_verdict(verdicts: Iterable[str]) -> str:
    """A claim made of several parts: disagree if one part does, agree if all do."""
    verdicts = list(verdicts)
    for verdict in (UNDETERMINED, DISAGREE, INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return AGREE


@dataclass(frozen=True)
class QuantileInterval:
    """A quantile of the time to an event (days) with its percentile-bootstrap 95% CI; +inf
    where the curve does not reach the quantile (it lies beyond the curve's end)."""

    estimate: float
    conf_low: float
    conf_high: float
    replicates: int

    def weeks(self) -> tuple[float, float, float]:
        return tuple(
            value / DAYS_PER_WEEK for value in (self.estimate, self.conf_low, self.conf_high)
        )

    def text(self) -> str:
        """ "7.1 weeks (95% CI 5.9 to 9.9)"; "beyond follow-up" for an open end."""
        if np.isinf(self.conf_low) and np.isinf(self.estimate):
            return "beyond the end of follow-up (so is its 95% CI)"
        estimate, low, high = (
            "beyond follow-up" if np.isinf(value) else f"{value:.1f}" for value in self.weeks()
        )
        unit = "" if np.isinf(self.estimate) else " weeks"
        return f"{estimate}{unit} ({CONVENTIONS.confidence_level:.0%} CI {low} to {high})"


def _turnbull_quantiles_days(frame: pd.DataFrame, lower: str, upper: str, quantiles) -> np.ndarray:
    """Turnbull quantiles (days); +inf where the curve stays above the level (NaN: no rows)."""
    if frame.empty:
        return np.full(len(quantiles), np.nan)
    fit = next(iter(turnbull(frame, lower, upper).fitted.values()))
    days = np.array([fit.quantile(q) for q in quantiles])
    return np.where(np.isnan(days), np.inf, days)


def turnbull_quantiles(
    frame: pd.DataFrame,
    lower: str,
    upper: str,
    quantiles: Iterable[float],
    samples: int,
    rng: np.random.Generator,
) -> dict[float, QuantileInterval]:
    """Turnbull quantiles of the time to the event with percentile-bootstrap 95% CIs (people
    resampled with replacement, `samples` times).

    The NPMLE has no valid standard error (survfit's are not), so the interval is the
    bootstrap's. Caveat: the NPMLE puts its mass on innermost intervals (at their midpoints,
    as survfit), about a visit gap apart, so a quantile moves in such steps and its interval
    does too; where the curve is flat near the level the interval spans several steps. The
    plain bootstrap is not proven consistent for the interval-censored NPMLE (it converges at
    n^(1/3) for current-status data), so read the interval as approximate.
    """
    quantiles = list(quantiles)
    estimate = _turnbull_quantiles_days(frame, lower, upper, quantiles)
    low, high = frame[lower].to_numpy(float), frame[upper].to_numpy(float)
    picks = [rng.integers(0, len(frame), len(frame)) for _ in range(samples if len(frame) else 0)]
    replicates = np.empty((len(picks), len(quantiles)))
    for replicate, fit in zip(replicates, turnbull_replicates(low, high, picks), strict=True):
        if not fit.converged:
            warnings.warn(
                f"a bootstrap replicate's Turnbull estimate stopped after {fit.iterations} "
                "iterations without converging",
                ModelWarning,
                stacklevel=2,
            )
        replicate[:] = [fit.quantile(q) for q in quantiles]
    replicates = np.where(np.isnan(replicates), np.inf, replicates)
    alpha = 1 - CONVENTIONS.confidence_level
    result = {}
    for position, quantile in enumerate(quantiles):
        values = replicates[:, position]
        low, high = (
            np.quantile(values, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
            if values.size
            else (np.nan, np.nan)
        )
        result[quantile] = QuantileInterval(
            float(estimate[position]), float(low), float(high), int(values.size)
        )
    return result


def _ci_text(row: pd.Series, label: str = "median") -> str:
    value = row[f"predicted_{label}_weeks"]
    low, high = row[f"{label}_conf_low"], row[f"{label}_conf_high"]
    level = f"{CONVENTIONS.confidence_level:.0%}"
    return f"{value:.1f} weeks ({level} CI {low:.1f} to {high:.1f})"


def _profile_text(timeline: TimelineResult, index: int) -> str:
    row = timeline.table.loc[index]
    parts = [f"{name}={row[name]}" for name in timeline.dimensions]
    typical = [
        f"{column}={row[column]:.2f}" for column in row.index if column.startswith("typical_")
    ]
    return ", ".join(parts + typical)


def _median_difference(timeline: TimelineResult, higher: int, lower: int) -> tuple[float, float]:
    """The 95% percentile CI, over bootstrap replicates, of one profile's predicted median
    minus another's (weeks); NaN without replicates."""
    boot = timeline.bootstrap
    medians = boot[np.isclose(boot["quantile"], MEDIAN)].pivot(
        index="replicate", columns="profile", values="weeks"
    )
    if medians.empty:
        return np.nan, np.nan
    pair = medians[[higher, lower]].dropna()
    if pair.empty:
        return np.nan, np.nan
    alpha = 1 - CONVENTIONS.confidence_level
    low, high = np.quantile(pair[higher] - pair[lower], [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _profile_people(timeline: TimelineResult, recovery: pd.DataFrame, index: int) -> pd.DataFrame:
    """The people of one profile, as the timeline counts them (n_in_profile)."""
    frame, _ = analysis_frame(recovery, list(timeline.model.covariates))
    levels = timeline.profile_levels(index)
    chosen = np.ones(len(frame), dtype=bool)
    for name, level in levels.items():
        chosen &= (frame[name] == level).to_numpy()
    return frame[chosen]


def compare_with_quoted_ranges(
    timeline: TimelineResult, recovery: pd.DataFrame, params_timeline: dict
) -> pd.DataFrame:
    """One row per recovery-time claim of the domain text, with the data's numbers, their 95%
    CIs and a verdict by VERDICT_RULE (the CI inside, outside or across the quoted range).

    (a) First functional changes come within the quoted 6-8 weeks for mild, recent,
    high-adherence cases; full recovery "takes considerably longer": the model (of full
    recovery) predicts such a profile's median beyond the quoted range's upper end, checked on
    its bootstrap CI; the observed Turnbull median of the profile's people is set beside it.
    (b) The whole cohort's Turnbull 10th percentile within `span_tolerance_weeks` of the quoted
    lower end and its 90th percentile at or beyond the upper end (bootstrap CIs). (c), (d) Each
    predicted median above the reference level's: the CI of the difference above 0 (bootstrap
    replicates), other dimensions at their commonest level. CIs are percentile bootstrap
    intervals over `timeline.bootstrap_samples` resamples of people (seed timeline.seed).
    """
    quoted = params_timeline["quoted_ranges"]
    table = timeline.table
    rng = np.random.default_rng(params_timeline["seed"])
    samples = timeline.bootstrap_samples
    rows = []
    label = quantile_label(MEDIAN)

    # (a) mild, recent, high-adherence cases: full recovery beyond their first changes' range
    low_quote, high_quote = (float(v) for v in quoted["mild_recent_adherent_median_weeks"])
    top_adherence = timeline.dimension_levels[Recovery.adherence_group][-1]
    index = timeline.profile_index(
        severity="mild",
        chronic=False,
        adherence_group=top_adherence,
        underlying_condition=REFERENCE_CONDITION,
    )
    row = table.loc[index]
    ci_low, ci_high = row[f"{label}_conf_low"], row[f"{label}_conf_high"]
    people = _profile_people(timeline, recovery, index)
    observed = turnbull_quantiles(people, LOWER, UPPER, [MEDIAN], samples, rng)[MEDIAN]
    rows.append(
        {
            "claim": "mild, recent, high-adherence cases see first functional changes within "
            f"{low_quote:g}-{high_quote:g} weeks; their full recovery takes considerably longer",
            "quoted": f"full recovery beyond {high_quote:g} weeks (median)",
            "observed": f"predicted median of full recovery {_ci_text(row)}; observed Turnbull "
            f"median of the {len(people)} people in the profile {observed.text()}",
            "verdict": range_verdict(ci_low, ci_high, high_quote),
            "detail": (
                f"profile {_profile_text(timeline, index)}; the timeline model is of full "
                f"recovery, so the claim checked is that its predicted median lies beyond "
                f"{high_quote:g} weeks (the end of the range quoted for first changes), on the "
                "bootstrap CI; the observed median is not the verdict's: it describes the few "
                "people of the profile, the model a typical member"
            ),
            "profile": _profile_text(timeline, index),
            "people": len(people),
            "estimate_weeks": row[f"predicted_{label}_weeks"],
            "conf_low_weeks": ci_low,
            "conf_high_weeks": ci_high,
            **dict(
                zip(
                    ("observed_weeks", "observed_conf_low_weeks", "observed_conf_high_weeks"),
                    observed.weeks(),
                    strict=True,
                )
            ),
        }
    )

    # (b) the cohort spans about 6 weeks to 6 months and beyond
    span_low, span_high = (float(v) for v in quoted["cohort_span_weeks"])
    tolerance = float(params_timeline["span_tolerance_weeks"])
    cohort = interval_censored_frame(recovery)
    (p10, p90), messages = _with_notes(
        lambda: tuple(turnbull_quantiles(cohort, LOWER, UPPER, [0.1, 0.9], samples, rng).values())
    )
    messages = list(dict.fromkeys(messages))  # once, not once per bootstrap replicate
    p10_weeks, p90_weeks = p10.weeks(), p90.weeks()
    verdict = combined_verdict(
        [
            range_verdict(*p10_weeks[1:], span_low - tolerance, span_low + tolerance),
            range_verdict(*p90_weeks[1:], span_high),
        ]
    )
    rows.append(
        {
            "claim": "the timeline ranges from about 6 weeks to 6 months or more",
            "quoted": f"{span_low:g}-{span_high:g} weeks and beyond",
            "observed": f"Turnbull 10th percentile {p10.text()}, 90th percentile {p90.text()} "
            f"(n={len(cohort)})",
            "verdict": verdict,
            "detail": (
                f"whole cohort with recovery information, Turnbull NPMLE; agree when the 10th "
                f"percentile's CI lies within {tolerance:g} weeks of {span_low:g} weeks and the "
                f"90th percentile's at or beyond {span_high:g} weeks"
                + (f"; {'; '.join(messages)}" if messages else "")
            ),
            "people": len(cohort),
            "estimate_weeks": p10_weeks[0],
            "conf_low_weeks": p10_weeks[1],
            "conf_high_weeks": p10_weeks[2],
        }
    )

    # (c) severe towards the upper end; (d) disc and nerve entrapment towards the upper end
    for claim, dimension, higher_levels, reference in (
        ("severe cases take longer than mild ones", Recovery.severity, ["severe"], "mild"),
        (
            "disc problems and nerve entrapment take longer than no underlying condition",
            Recovery.underlying_condition,
            ["disc", "nerve_entrapment"],
            REFERENCE_CONDITION,
        ),
    ):
        reference_index = timeline.profile_index(**{dimension: reference})
        reference_row = table.loc[reference_index]
        comparisons, observed_texts, details, verdicts = [], [], [], []
        for level in higher_levels:
            level_index = timeline.profile_index(**{dimension: level})
            level_row = table.loc[level_index]
            low, high = _median_difference(timeline, level_index, reference_index)
            difference = (
                level_row[f"predicted_{label}_weeks"] - reference_row[f"predicted_{label}_weeks"]
            )
            verdicts.append(range_verdict(low, high, 0.0))
            observed_texts.append(f"{level} {_ci_text(level_row)}")
            details.append(
                f"{level} minus {reference}: {difference:.1f} weeks "
                f"({CONVENTIONS.confidence_level:.0%} CI {low:.1f} to {high:.1f})"
            )
            comparisons.append(level)
        observed_texts.append(f"{reference} {_ci_text(reference_row)}")
        others = {
            name: value for name, value in timeline.typical_levels.items() if name != dimension
        }
        rows.append(
            {
                "claim": claim,
                "quoted": f"{' and '.join(comparisons)} towards the upper end of the range",
                "observed": "predicted medians: " + "; ".join(observed_texts),
                "verdict": combined_verdict(verdicts),
                "detail": (
                    f"agree when the CI of each predicted median minus {reference}'s lies above "
                    f"0; other dimensions at their commonest level "
                    f"({', '.join(f'{k}={v}' for k, v in others.items())}); " + "; ".join(details)
                ),
            }
        )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


# --------------------------------------------------------------------------------------------
# Out-of-sample calibration
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CalibrationResult(ModelResult):
    """Cross-validated checks of the timeline model; `.fitted` holds each fold's chosen fit.

    `.summary` (= `.tidy()`) has one row per metric, `.calibration_table` predicted vs observed
    recovery probability by group of predicted risk, `.predictions` the out-of-fold predictions.
    """

    calibration_table: pd.DataFrame
    predictions: pd.DataFrame
    brier_curve: pd.DataFrame


def _coarsen_outwards(
    lower: pd.Series, upper: pd.Series, band: tuple[float, float]
) -> pd.DataFrame:
    """Widen PIT intervals to a grid (lower down, upper up) that contains the band's edges.

    Turnbull's EM on thousands of distinct continuous bounds needs tens of thousands of steps;
    on a grid it converges in hundreds, and widening only discards information, so the NPMLE
    stays honest. The band edges are grid points, so its coverage is not split by the grid.
    """
    grid = np.union1d(np.arange(0.0, 1.0 + 1e-12, PIT_GRID_STEP), np.asarray(band))
    low = grid[np.clip(np.searchsorted(grid, lower.to_numpy(float) + 1e-12, "right") - 1, 0, None)]
    high_values = upper.to_numpy(float)
    position = np.searchsorted(grid, np.nan_to_num(high_values, nan=1.0) - 1e-12, "left")
    high = grid[np.clip(position, 0, len(grid) - 1)]
    # An upper bound at F = 1 says nothing beyond the lower bound: right-censored.
    high = np.where(np.isnan(high_values) | (high >= 1.0), np.nan, high)
    return pd.DataFrame({"pit_lower": low, "pit_upper": high})


def _band_coverage(predictions: pd.DataFrame, band: tuple[float, float]) -> tuple[dict, list[str]]:
    """Coverage of the predicted band, two ways that respect interval and right censoring.

    Turnbull on the probability integral transform: under the model each person's
    U = F(T | x) is uniform, and the bounds (lower, upper] map to (F(lower), F(upper)], so the
    NPMLE of U's distribution gives P(band_low < U <= band_high), the band's coverage; it assumes
    censoring independent of U. "Determined" counts only people whose interval lies wholly inside
    or wholly outside their band (biased upwards when late recoverers are censored early).
    """
    pit = _coarsen_outwards(predictions["pit_lower"], predictions["pit_upper"], band)
    curve, messages = _with_notes(lambda: turnbull(pit, "pit_lower", "pit_upper"))
    fit = next(iter(curve.fitted.values()))
    survival = step_function_at(fit.times, fit.survival, np.asarray(band))
    turnbull_coverage = float(survival[0] - survival[1])

    low, high = predictions["band_low_days"], predictions["band_high_days"]
    lower, upper = predictions[LOWER], predictions[UPPER].fillna(np.inf)
    inside = (lower >= low) & (upper <= high)
    outside = (upper <= low) | (lower >= high)
    determined = int((inside | outside).sum())
    return {
        "turnbull": turnbull_coverage,
        "determined": float(inside.sum() / determined) if determined else np.nan,
        "n_determined": determined,
        "n_inside": int(inside.sum()),
    }, messages


def calibration_diagnostics(
    recovery: pd.DataFrame, params_timeline: dict, params_fit: dict, seed: int | None = None
) -> CalibrationResult:
    """K-fold cross-validated concordance, calibration, Brier score and band coverage.

    In each fold the AFT distribution is re-chosen by AIC on the training people, so selection
    is inside the validation. Concordance and Brier use the right-censored outcome (the day of
    the visit that detected recovery), which is later than the recovery the model predicts by up
    to one visit interval; observed probabilities and coverage use the interval bounds
    (Turnbull), which is the like-for-like comparison. Brier weights (IPCW) assume censoring
    independent of the covariates.
    """
    covariates = list(params_fit["aft_covariates"])
    quantiles = _check_quantiles(params_timeline["quantiles"])
    band = (quantiles[0], quantiles[-1])
    folds = int(params_timeline["calibration_folds"])
    if folds < 2:
        raise ParameterError("timeline.calibration_folds must be at least 2")
    weeks = np.asarray(params_timeline["calibration_weeks"], dtype=float)
    groups = int(params_timeline["calibration_groups"])
    brier_first, brier_last = (float(w) for w in params_timeline["brier_weeks"])
    grid = np.arange(brier_first, brier_last + 1e-9, 1.0) * DAYS_PER_WEEK
    rng = np.random.default_rng(params_timeline["seed"] if seed is None else seed)

    frame, notes = analysis_frame(recovery, covariates)
    frame = frame.reset_index(drop=True)
    if len(frame) < folds * 10:
        raise DataError(f"{len(frame)} people are too few for {folds}-fold cross-validation")
    duration, event = Recovery.time_to_recovery_days, Recovery.recovered
    # Predicted S(t) of the model and of the training folds' Kaplan-Meier at each grid time.
    model_columns = [f"{MODEL_SURVIVAL}{position}" for position in range(len(grid))]
    null_columns = [f"{NULL_SURVIVAL}{position}" for position in range(len(grid))]
    fold_fits = []
    # Every distribution's refits of the folds, the frame coded once for all of them.
    refits = {
        distribution: AftRefits(
            frame,
            covariates,
            distribution=distribution,
            lower=LOWER,
            upper=UPPER,
            reference_levels=params_fit["reference_levels"],
        )
        for distribution in params_fit["aft_distributions"]
    }

    def fit_predict(fold: int, train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
        """The fold's AIC-best AFT fit on `train`; its predictions for `test` (and the null's)."""
        fits, fit_notes = _fit_candidates(refits, frame.index.get_indexer(train.index))
        notes.extend(f"fold {fold}: {message}" for message in fit_notes)
        best = _best_distribution(compare_by_aic(fits))
        fold_fits.append(fits[best])
        model = TimelineModel.from_aft(fits[best])
        predictable = np.isfinite(model.linear_predictor(test))
        if not predictable.all():
            # A level absent from the training folds has no coefficient: such people cannot be
            # predicted out of sample, so they leave the evaluation (and are counted).
            notes.append(
                f"fold {fold}: {int((~predictable).sum())} held-out people with a level "
                "unseen in training left out"
            )
            test = test[predictable]
        predicted = model.quantile_days(test, (band[0], MEDIAN, band[1]))
        part = pd.DataFrame(
            {
                "distribution": best,
                "band_low_days": predicted[band[0]],
                "median_days": predicted[MEDIAN],
                "band_high_days": predicted[band[1]],
                LOWER: test[LOWER],
                UPPER: test[UPPER],
            },
            index=test.index,
        )
        # The probability integral transform of each person's bounds, for the coverage check.
        part["pit_lower"] = model.probability_recovered_by_row(test, test[LOWER])
        part["pit_upper"] = model.probability_recovered_by_row(test, test[UPPER])
        by_week = model.probability_recovered_by(test, weeks * DAYS_PER_WEEK)
        for week, column in zip(weeks, by_week.columns, strict=True):
            part[f"predicted_recovered_by_week_{week:g}"] = by_week[column].to_numpy()
        model_survival = 1 - model.probability_recovered_by(test, grid).to_numpy()
        train_times, train_survival = kaplan_meier_steps(
            train[duration].to_numpy(float), train[event].astype(bool).to_numpy()
        )
        null_survival = step_function_at(train_times, train_survival, grid)
        curves = pd.DataFrame(
            np.hstack([model_survival, np.tile(null_survival, (len(test), 1))]),
            index=test.index,
            columns=[*model_columns, *null_columns],
        )
        return pd.concat([part, curves], axis=1)

    rng = np.random.default_rng(params_timeline["seed"] if seed is None else seed)
    pooled = cross_validated(frame, folds, rng, fit_predict)
    # Everything below is over the pooled held-out people, in the order of `pooled`.
    model_survival = pooled[model_columns].to_numpy()
    null_survival = pooled[null_columns].to_numpy()
    predictions = pooled.drop(columns=[*model_columns, *null_columns])
    # (i) Harrell's C: a shorter predicted median should recover first.
    held_out = frame.loc[predictions.index, [duration, event]].assign(
        risk=-np.log(predictions["median_days"].to_numpy())
    )
    concordance = harrell_c(held_out, "risk", duration, event)
    fold_concordance = [
        harrell_c(rows, "risk", duration, event)
        for _, rows in held_out.groupby(predictions["fold"], sort=True)
    ]

    # (ii) calibration of P(recovered by t) by groups of predicted probability.
    calibration_parts = []
    for week in weeks:
        table, group_notes = calibration_by_groups(
            predictions,
            f"predicted_recovered_by_week_{week:g}",
            LOWER,
            UPPER,
            week * DAYS_PER_WEEK,
            groups,
        )
        notes.extend(f"calibration week {week:g} {message}" for message in group_notes)
        calibration_parts.append(table.assign(week=week))
    calibration = pd.concat(calibration_parts, ignore_index=True)[list(CALIBRATION_COLUMNS)]
    weighted_error = float(
        np.average(
            (calibration["predicted"] - calibration["observed"]).abs(), weights=calibration["n"]
        )
    )

    # (iii) IPCW integrated Brier score, model vs the covariate-free Kaplan-Meier; the
    # censoring curve G is from everyone in the cross-validation.
    censoring = censoring_survival(frame, duration, event)
    model_brier = ipcw_brier_scores(held_out, model_survival, duration, event, grid, censoring)
    null_brier = ipcw_brier_scores(held_out, null_survival, duration, event, grid, censoring)
    model_ibs = integrated_brier_score(grid, model_brier)
    null_ibs = integrated_brier_score(grid, null_brier)
    brier_curve = pd.DataFrame(
        {"week": grid / DAYS_PER_WEEK, "model": model_brier, "null_kaplan_meier": null_brier}
    )

    # (iv) coverage of the predicted band.
    coverage, coverage_messages = _band_coverage(predictions, band)
    notes.extend(f"band coverage: {m}" for m in coverage_messages)
    nominal = band[1] - band[0]
    band_name = f"{quantile_label(band[0])}-{quantile_label(band[1])}"

    window = f"weeks {brier_first:g}-{brier_last:g}"
    summary = pd.DataFrame(
        [
            (
                "concordance",
                concordance,
                f"Harrell's C of the out-of-fold predicted median against the right-censored visit "
                f"day of recovery, {folds} folds pooled (per fold {min(fold_concordance):.3f}-"
                f"{max(fold_concordance):.3f}); 0.5 = no better than chance",
            ),
            (
                "integrated_brier_model",
                model_ibs,
                f"IPCW (Graf) Brier score averaged over {window}, out-of-fold AFT predictions",
            ),
            (
                "integrated_brier_null",
                null_ibs,
                f"the same for the training folds' Kaplan-Meier curve (no covariates), {window}",
            ),
            (
                "brier_skill",
                1 - model_ibs / null_ibs if null_ibs > 0 else np.nan,
                "1 - model / null integrated Brier score; > 0 means the covariates help",
            ),
            (
                "calibration_mean_abs_error",
                weighted_error,
                f"mean |predicted - observed| P(recovered by week) over {groups} groups of "
                f"predicted probability at weeks {', '.join(f'{w:g}' for w in weeks)}, "
                "weighted by n; observed = 1 - Turnbull",
            ),
            (
                "band_coverage",
                coverage["turnbull"],
                f"share of held-out people recovering inside their predicted {band_name} band "
                f"(nominal {nominal:.0%}), Turnbull NPMLE of the interval-censored "
                "probability integral transform",
            ),
            (
                "band_coverage_determined",
                coverage["determined"],
                f"the share among the {coverage['n_determined']} people whose interval lies "
                f"wholly inside ({coverage['n_inside']}) or wholly outside their band; biased "
                "upwards when late recoverers are censored",
            ),
            ("people", float(len(predictions)), f"people in the cross-validation, {folds} folds"),
        ],
        columns=list(SUMMARY_COLUMNS),
    )
    # Back in the order of the people, for the caller.
    predictions = (
        predictions.assign(participant_id=frame.loc[predictions.index, Recovery.participant_id])
        .sort_index()
        .reset_index(drop=True)
    )
    predictions = predictions[["fold", *[c for c in predictions.columns if c != "fold"]]]
    result = CalibrationResult(
        fitted=fold_fits,
        coefficients=summary,
        calibration_table=calibration,
        predictions=predictions,
        brier_curve=brier_curve,
    )
    for message in notes:
        result.note(message)
    return result
