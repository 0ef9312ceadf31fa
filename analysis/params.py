"""params.yaml as typed, validated blocks: one model per stage's block, read once by the CLI.

Every key of every block is declared here, with what it allows; none has a default (the one
default of every tunable is its value in params.yaml). A value the toolkit cannot use, a missing
key and an unknown key (a typo) all stop the command with one line naming the file, the dotted
key, the value and what is allowed, e.g.
`params.yaml: report.min_cell_size = 'ten' is not allowed: a whole number >= 3`.

The stages receive their blocks as plain mappings (`StudyParams.stage_params`), the report's
notebooks receive them through papermill: nothing after the CLI opens params.yaml again.
"""

from __future__ import annotations

import ast
import datetime
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from analysis import io
from analysis.clean import DATE_ORDERS
from analysis.errors import ParameterError
from analysis.privacy import SMALLEST_MIN_CELL_SIZE

# --- value types --------------------------------------------------------------------------------


class InvalidValue(ValueError):
    """A value a validator refuses; `allowed` says what would do, `key` narrows the place."""

    def __init__(self, allowed: str, *, key: str | None = None, value: Any = None) -> None:
        super().__init__(allowed)
        self.allowed, self.key, self.value = allowed, key, value


def _increasing(values: list) -> list:
    if any(later <= earlier for earlier, later in zip(values, values[1:], strict=False)):
        raise InvalidValue("numbers in increasing order")
    return values


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise InvalidValue("names that differ from each other")
    return values


def _iso_date(value: Any) -> Any:
    """YAML reads 2025-03-01 as a date and "2025-03-01" as text: both are the same date."""
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            raise InvalidValue("a date written YYYY-MM-DD, or null") from None
    return value


# A number keeps the type YAML gave it (28 stays 28, 2.0 stays 2.0): outputs print it as written.
Number = int | float
NonNegative = Annotated[Number, Field(ge=0)]
Positive = Annotated[Number, Field(gt=0)]
Share = Annotated[Number, Field(ge=0, le=1)]
Probability = Annotated[float, Field(gt=0, lt=1)]
WholeNonNegative = Annotated[int, Field(ge=0)]
WholePositive = Annotated[int, Field(ge=1)]
Names = Annotated[list[str], AfterValidator(_distinct)]
Cutoffs = Annotated[list[Number], Field(min_length=1), AfterValidator(_increasing)]
WeekRange = Annotated[list[NonNegative | None], Field(min_length=2, max_length=2)]


class Block(BaseModel):
    """A params.yaml block: every key declared, none defaulted, no key unknown, types exact."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # (cut-offs key, labels key) of a grouping the block declares: one label more than cut-offs.
    grouping: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _one_label_per_group(self) -> Block:
        if self.grouping is not None:
            cutoffs_key, labels_key = self.grouping
            cutoffs, labels = getattr(self, cutoffs_key), getattr(self, labels_key)
            if len(labels) != len(cutoffs) + 1:
                raise InvalidValue(
                    f"{len(cutoffs) + 1} labels, one more than the cut-offs in {cutoffs_key}",
                    key=labels_key,
                    value=labels,
                )
        return self


# --- simulate -------------------------------------------------------------------------------------


class SimulateParams(Block):
    participants: WholePositive
    seed: WholeNonNegative
    mess_rate: Share
    follow_up_weeks: WholePositive


# --- clean ----------------------------------------------------------------------------------------


class CleanParams(Block):
    export_date: Annotated[datetime.date | None, BeforeValidator(_iso_date)]
    days_before_enrolment_allowed: WholeNonNegative
    # Hours in a day: a unit-less value below 24 is hours, so the minutes threshold lies above.
    sitting_minutes_threshold: Annotated[Number, Field(gt=24)]
    exercise_name_min_similarity: Annotated[Number, Field(gt=0, le=1)]
    date_formats: Annotated[list[str], Field(min_length=1)]
    date_order: Literal[DATE_ORDERS]
    missing_sentinels: list[Number]
    missing_date_sentinels: list[str]


# --- derive ---------------------------------------------------------------------------------------

Phase = Annotated[int, Field(ge=1, le=3)]
Pain = Annotated[Number, Field(ge=0, le=10)]


class RecoveryDefinition(Block):
    min_phase: Phase
    pain_window_days: WholePositive
    max_secondary_pain: Pain
    require_clinician: bool


class FirstChangeDefinition(Block):
    baseline_visit_max_day: WholeNonNegative
    min_strength_gain: NonNegative
    baseline_pain_days: WholePositive
    pain_window_days: WholePositive
    min_pain_reduction: Share
    pain_absent_at: Pain


class AdherenceDefinition(Block):
    prescribed_sessions_per_week: dict[Phase, WholePositive]
    group_cutoffs: Cutoffs
    group_labels: Names

    grouping = ("group_cutoffs", "group_labels")


class SittingBands(Block):
    band_cutoffs: Cutoffs
    band_labels: Names

    grouping = ("band_cutoffs", "band_labels")


class DeriveParams(Block):
    follow_up_days: WholePositive
    recovery: RecoveryDefinition
    first_change: FirstChangeDefinition
    lost_after_days_without_contact: WholePositive
    adherence: AdherenceDefinition
    sitting: SittingBands
    chronic_after_months: NonNegative


# --- fit ------------------------------------------------------------------------------------------

WeekCuts = Annotated[list[NonNegative], Field(min_length=1), AfterValidator(_increasing)]


class QuotedMilestoneRange(Block):
    milestone: str
    text: str
    profile: dict[str, str | bool]
    quantile: Probability
    range_weeks: WeekRange


class MilestonesSpec(Block):
    piece_cuts_weeks: dict[str, WeekCuts]
    quoted: list[QuotedMilestoneRange]


class EffectUnit(Block):
    per: Positive
    label: str


class PrimaryModelSpec(Block):
    covariates: Names
    piece_cuts_weeks: WeekCuts
    profile_terms: Names
    lagged: Names
    lag_weeks: list[WholeNonNegative]
    units: dict[str, EffectUnit]


class LandmarkSpec(Block):
    weeks: list[WholePositive]
    group_cutoffs: Cutoffs
    group_labels: Names
    cox_covariates: Names

    grouping = ("group_cutoffs", "group_labels")


class GroupingSpec(Block):
    cutoffs: Cutoffs
    labels: Names
    sensitivity_shifts: list[Annotated[float, Field(gt=-1, lt=1)]]

    grouping = ("cutoffs", "labels")


class BootstrapSpec(Block):
    bootstrap_samples: WholePositive
    seed: WholeNonNegative


class MixedModelSpec(Block):
    outcomes: Names
    fixed: str
    random: str
    reml: bool
    time_basis: str  # the mixed-model layer names the bases it knows (mixed.TIME_BASES)
    time_knots: WeekCuts
    max_week: Positive | None
    fitted_vs_observed_min_n: WholePositive


class FitParams(Block):
    families: Annotated[Names, Field(min_length=1)]  # fit.run_models names the families it knows
    milestones: MilestonesSpec
    primary: PrimaryModelSpec
    landmark: LandmarkSpec
    # A factor's reference level as a clinician reads it (chronic: false is "recent").
    reference_levels: dict[str, str | bool]
    adherence_grouping: GroupingSpec
    group: str
    group_order: Names
    km_times_days: Annotated[list[WholeNonNegative], AfterValidator(_increasing)]
    rmst_horizon_days: Positive
    median_difference: BootstrapSpec
    stratify_logrank_by: str
    min_events_per_parameter: Positive
    cox_covariates: Names
    time_varying_covariates: Names
    aft_distributions: Annotated[Names, Field(min_length=1)]
    aft_covariates: Names
    fine_gray_covariates: Names
    mixed: MixedModelSpec


# --- timeline -------------------------------------------------------------------------------------


class QuotedTimelineRanges(Block):
    mild_recent_adherent_median_weeks: WeekRange
    cohort_span_weeks: WeekRange


class TimelineParams(Block):
    profile_dimensions: Names
    bootstrap_samples: WholePositive
    seed: WholeNonNegative
    min_profile_size_for_observed: WholePositive
    quantiles: Annotated[list[Probability], Field(min_length=1), AfterValidator(_increasing)]
    calibration_folds: Annotated[int, Field(ge=2)]
    calibration_weeks: Annotated[list[Positive], AfterValidator(_increasing)]
    calibration_groups: WholePositive
    brier_weeks: Annotated[
        list[NonNegative], Field(min_length=2, max_length=2), AfterValidator(_increasing)
    ]
    representative_values: dict[str, str]
    quoted_ranges: QuotedTimelineRanges
    span_tolerance_weeks: NonNegative


# --- report ---------------------------------------------------------------------------------------


class ReportParams(Block):
    min_cell_size: Annotated[int, Field(ge=SMALLEST_MIN_CELL_SIZE)]
    figure_dpi: WholePositive
    site: str | None
    site_reports: bool
    jobs: WholePositive | None
    timeout_seconds: WholePositive


# --- the whole file -------------------------------------------------------------------------------

# The blocks each stage reads: the CLI hands a stage exactly these, and dvc.yaml declares them
# as the stage's params (tests/test_dvc_deps.py checks). The report shows the seeds (simulate).
STAGE_BLOCKS: dict[str, tuple[str, ...]] = {
    # The simulated study follows derive's prescription and chronic cut-off.
    "simulate": ("simulate", "derive"),
    "clean": ("clean",),
    "derive": ("derive",),
    # The site and adherence-grouping comparisons leave out groups below report.min_cell_size.
    "fit": ("fit", "timeline", "derive", "report"),
    "report": ("report", "fit", "derive", "timeline", "simulate"),
}


class StudyParams(Block):
    """Every block of params.yaml, validated."""

    simulate: SimulateParams
    clean: CleanParams
    derive: DeriveParams
    fit: FitParams
    timeline: TimelineParams
    report: ReportParams

    def stage_params(self, stage: str) -> dict[str, dict]:
        """The blocks `stage` reads, as plain mappings keyed by block name."""
        return {block: getattr(self, block).model_dump() for block in STAGE_BLOCKS[stage]}

    def with_report(self, **changes: Any) -> StudyParams:
        """These report values instead of the file's, validated like the file's."""
        return validated_params(
            {**self.model_dump(), "report": {**self.report.model_dump(), **changes}},
            source="--param",
        )


def read_params(path: Path) -> StudyParams:
    """params.yaml read (once) and validated, or a one-line ParameterError."""
    return validated_params(io.read_yaml(path, "params"), source=str(path))


def validated_params(content: Mapping, source: str) -> StudyParams:
    try:
        return StudyParams.model_validate(content)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        # A value a union refuses is one problem, reported once per member: count places.
        places = {tuple(_resolve(tuple(problem["loc"]))[0]) for problem in problems}
        more = f" (and {len(places) - 1} more problem(s))" if len(places) > 1 else ""
        raise ParameterError(f"{source}: {_problem_text(problems[0])}{more}") from None


# --- command-line overrides -----------------------------------------------------------------------


def parse_param_overrides(items: Iterable[str]) -> dict:
    """`["min_cell_size=10", "site=site_A", "jobs=2"]` -> typed dict.

    Values are read as Python literals (numbers, lists, None, True); YAML's true/false/null are
    accepted too, and anything else stays text. They are checked against the report block
    (`StudyParams.with_report`) like the file's values.
    """
    overrides = {}
    for item in items:
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise ParameterError(f"--param {item!r}: expected key=value with a name as the key")
        overrides[key] = _literal(text.strip())
    return overrides


def _literal(text: str):
    yaml_words = {"true": True, "false": False, "null": None, "none": None, "~": None}
    if text.lower() in yaml_words:
        return yaml_words[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# --- notebooks ------------------------------------------------------------------------------------


def require_report_parameters(
    parameters: Mapping[str, Any], may_be_none: Iterable[str] = ()
) -> None:
    """A report notebook's parameters, which only `ga-rehab report` gives: none may be None.

    The notebooks' parameters cells hold None placeholders, not defaults, so a notebook run by
    hand stops here instead of using values that could disagree with params.yaml.
    """
    missing = [
        name for name, value in parameters.items() if value is None and name not in may_be_none
    ]
    if missing:
        raise ParameterError(
            f"report parameter(s) not given: {', '.join(missing)}; render the notebook with "
            "`ga-rehab report` (it passes every value from params.yaml), or pass each with "
            "papermill -p NAME VALUE"
        )


# --- one-line errors ------------------------------------------------------------------------------


def _problem_text(problem: Mapping) -> str:
    loc = tuple(problem["loc"])
    keys, annotation, metadata = _resolve(loc)
    value = problem.get("input")
    cause = (problem.get("ctx") or {}).get("error")
    dotted = ".".join(keys)
    if problem["type"] == "extra_forbidden":
        parent_keys, parent, _ = _resolve(loc[:-1])
        model = _model_of(parent)
        known = ", ".join(model.model_fields) if model is not None else ""
        where = ".".join(parent_keys) or "the file"
        return f"{dotted} = {value!r} is not allowed: not a key of {where} (known: {known})"
    if isinstance(cause, InvalidValue):
        if cause.key is not None:
            keys, value = [*keys, cause.key], cause.value
            dotted = ".".join(keys)
        allowed = cause.allowed
    else:
        allowed = _describe(annotation, metadata)
    if problem["type"] == "missing":
        return f"{dotted} is missing: {allowed}"
    if loc[-1:] == ("[key]",):
        return f"{dotted} is not allowed as a key: {allowed}"
    return f"{dotted} = {value!r} is not allowed: {allowed}"


def _resolve(loc: tuple) -> tuple[list[str], Any, list]:
    """The keys of a pydantic error location, and the annotation and constraints found there.

    Locations also name union members ("int", "float") and mark a mapping's key ("[key]"):
    those are not keys of the file.
    """
    keys: list[str] = []
    annotation: Any = StudyParams
    metadata: list = []
    for position, part in enumerate(loc):
        base, _ = _unwrap(annotation)
        model, origin = _model_of(base), typing.get_origin(base)
        if model is not None and isinstance(part, str):
            keys.append(part)
            field = model.model_fields.get(part)
            annotation, metadata = (field.annotation, list(field.metadata)) if field else (None, [])
        elif origin is list and isinstance(part, int):
            keys.append(str(part))
            annotation, metadata = typing.get_args(base)[0], []
        elif origin is dict and part != "[key]":
            keys.append(str(part))
            is_key = loc[position + 1 : position + 2] == ("[key]",)
            annotation, metadata = typing.get_args(base)[0 if is_key else 1], []
    return keys, annotation, metadata


def _unwrap(annotation: Any) -> tuple[Any, list]:
    """`Annotated[X, constraints]` -> (X, constraints), repeatedly."""
    metadata: list = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata.extend(getattr(item, "metadata", None) or [item])
    return annotation, metadata


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation, _ = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _describe(annotation: Any, metadata: Iterable = ()) -> str:
    """What a declared type and its constraints allow, in words."""
    annotation, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    bounds = " and ".join(
        f"{symbol} {getattr(item, name)}"
        for item in metadata
        for kind, name, symbol in (
            (annotated_types.Ge, "ge", ">="),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "<="),
            (annotated_types.Lt, "lt", "<"),
        )
        if isinstance(item, kind)
    )
    shortest = max(
        (item.min_length for item in metadata if isinstance(item, annotated_types.MinLen)),
        default=0,
    )
    longest = min(
        (item.max_length for item in metadata if isinstance(item, annotated_types.MaxLen)),
        default=None,
    )
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [member for member in arguments if member is not type(None)]
        number = set(members) == {int, float}
        text = "a number" if number else " or ".join(_describe(member) for member in members)
        if bounds:
            text = f"{text} {bounds}"
        return f"{text}, or null" if type(None) in arguments else text
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in arguments)
    if origin is list:
        size = (
            f"a list of {shortest}"
            if shortest == longest
            else "a non-empty list of"
            if shortest
            else "a list of"
        )
        return f"{size} values, each {_describe(arguments[0])}"
    if origin is dict:
        return f"a mapping of {_describe(arguments[0])} to {_describe(arguments[1])}"
    model = _model_of(annotation)
    if model is not None:
        return "a mapping with the keys " + ", ".join(model.model_fields)
    words = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
        datetime.date: "a date written YYYY-MM-DD",
    }
    text = words.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{text} {bounds}" if bounds else text
