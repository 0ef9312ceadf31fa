"""The `fit` stage: every model configured in params.yaml, run on the derived frames.

Each model family is one small function returning named tidy tables; `run_models` collects
them with the headline metrics and every note or warning a model raised, so a report can say
what was done. A model that fails is recorded as failed, and the others still run.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

# interval_censored_frame lives in derive (timeline needs it too); it is also fit's name for it.
from analysis.derive import interval_censored_frame, milestone_intervals, regroup_adherence
from analysis.errors import ParameterError
from analysis.mixed import (
    FITTED_VS_OBSERVED_COLUMNS,
    TimeBasis,
    fit_mixed,
    fitted_vs_observed,
    largest_gap,
    r_term_name,
)
from analysis.model_tables import (
    ADHERENCE_GROUPING_TABLE_PREFIX,
    GROUPING_DEFINITION,
    GROUPING_SENSITIVITY,
    MILESTONE_QUOTE_COLUMNS,
    SITE_COLUMN,
    SITE_TABLE_PREFIX,
    SUPPRESSED_GROUPS,
)
from analysis.privacy import (
    check_min_cell_size,
    groups_to_suppress,
    site_groups_left_out,
    site_plan,
    sites_with_report,
)
from analysis.results import (
    FAILED,
    HAZARD_RATIO_COLUMNS,
    REFERENCE_COLUMN,
    TIDY_COLUMNS,
    run_collecting_notes,
    with_reference_rows,
)
from analysis.schema import (
    DAYS_PER_WEEK,
    EVENT_RECOVERED,
    MILESTONES,
    Recovery,
    WeeklyIntervals,
    WeeklyTrajectories,
)
from analysis.survival import (
    cumulative_incidence,
    fit_aft,
    fit_cox,
    fit_cox_time_varying,
    fit_fine_gray,
    fit_interval_cox,
    gray_test,
    kaplan_meier,
    logrank_test,
    median_difference,
    rmst_difference,
    turnbull,
)
from analysis.survival.aft import AftResult, compare_by_aic
from analysis.survival.design import complete_rows, design_matrix, factor_levels, is_categorical
from analysis.survival.interval import TurnbullResult, turnbull_each
from analysis.timeline import (
    calibration_diagnostics,
    compare_with_quoted_ranges,
    range_verdict,
    timeline_table,
    turnbull_quantiles,
)

DURATION = Recovery.time_to_recovery_days
EVENT = Recovery.recovered
MODEL_NOTE_COLUMNS = ("model", "kind", "message")
# One row per regression: whether it was fitted and whether every term is estimable, with the
# reason in one sentence when not; the report shows a model only where `estimable` is true.
MODEL_STATUS_COLUMNS = ("model", "status", "estimable", "events", "parameters", "reason")
STATUS_FITTED = "fitted"
STATUS_PARTLY_ESTIMABLE = "fitted, some terms not estimable"
STATUS_NOT_FITTED = "not fitted"
STATUS_FAILED = FAILED
# Columns of primary_effects.csv and primary_lag_sensitivity.csv beyond the tidy ones.
PRIMARY_EXTRA_COLUMNS = ("unit", "conf_method")
# Appended to every regression table (with REFERENCE_COLUMN): the people and the events the
# model describes (gtsummary's N and events), the same on every row of one model.
MODEL_COUNT_COLUMNS = ("n", "events")
REFERENCE_UNIT = "reference level"
LANDMARK_COUNT_COLUMNS = (
    "landmark_weeks",
    "people",
    "outcome_before_landmark",
    "no_adherence",
    "kept",
)


@dataclass
class FitOutputs:
    """Tidy tables by name (written as data/models/<name>.csv), metrics, and model notes."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    timeline_model: dict | None = None  # TimelineModel.to_dict(), for `ga-rehab timeline`
    # The AFT candidates by distribution, fitted once per run (see `aft_candidates`).
    aft_fits: dict[str, AftResult] | None = None
    status: list[dict] = field(default_factory=list)

    def notes_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.notes, columns=list(MODEL_NOTE_COLUMNS))

    def status_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.status, columns=list(MODEL_STATUS_COLUMNS))


def information_count(
    frame: pd.DataFrame, outcome_columns: list[str], covariates: list[str], is_event: pd.Series
) -> tuple[int, int]:
    """Events and estimated parameters (design columns) among the rows a regression would use."""
    used, _ = complete_rows(frame, [*outcome_columns, *covariates])
    # design_matrix's columns, counted without building them: a numeric covariate is one, a
    # factor one per level but its reference.
    parameters = sum(
        len(factor_levels(used[name])) - 1 if is_categorical(used[name]) else 1
        for name in covariates
    )
    return int(is_event.loc[used.index].sum()), parameters


def reference_levels_in(
    frame: pd.DataFrame, outcome_columns: list[str], covariates: list[str], params: dict
) -> dict:
    """Each factor covariate's reference level as its model codes it, on the rows it uses.

    fit.reference_levels where it names the factor, else the first level in sorted order.
    """
    used, _ = complete_rows(frame, [*outcome_columns, *covariates])
    return {
        name: factor_levels(used[name], params["reference_levels"].get(name))[0]
        for name in covariates
        if is_categorical(used[name])
    }


def regression_table(tidy: pd.DataFrame, references: dict, n: int, events: int) -> pd.DataFrame:
    """A model's tidy table as a regression table reads: a row per factor's reference level
    (REFERENCE_COLUMN), and the model's people and events (MODEL_COUNT_COLUMNS)."""
    return with_reference_rows(tidy, references).assign(n=int(n), events=int(events))


def too_little_information(label: str, events: int, parameters: int, params: dict) -> str | None:
    """The one-sentence reason not to fit a regression, or None when events suffice.

    The threshold is fit.min_events_per_parameter (events per estimated parameter).
    """
    threshold = params["min_events_per_parameter"]
    if parameters and events >= threshold * parameters:
        return None
    if events == 0:
        return f"The {label} was not fitted because there are no events to model."
    return (
        f"The {label} was not fitted: {events} events for {parameters} parameters is "
        f"{events / max(parameters, 1):.1f} events per parameter, below the {threshold} this "
        "study requires (fit.min_events_per_parameter), so its estimates would not be reliable."
    )


def fit_regression(
    outputs: FitOutputs,
    model: str,
    label: str,
    counts: tuple[int, int],
    params: dict,
    fit: Callable,
):
    """Fit one regression if the events per parameter allow it; record its status either way.

    Returns the result, or None when it was not fitted (too little information) or failed; the
    status table says which, with the reason in one sentence.
    """
    events, parameters = counts
    reason = too_little_information(label, events, parameters, params)
    if reason is not None:
        outputs.notes.append((model, STATUS_NOT_FITTED, reason))
        _add_status(outputs, model, STATUS_NOT_FITTED, events, parameters, reason)
        return None
    failures = len([n for n in outputs.notes if n[1] == STATUS_FAILED])
    result = _run(outputs, model, fit)
    if result is None:
        failed = [n for n in outputs.notes if n[1] == STATUS_FAILED][failures:]
        reason = (
            f"The {label} could not be fitted: {failed[-1][2]}"
            if failed
            else f"The {label} returned no result."
        )
        _add_status(outputs, model, STATUS_FAILED, events, parameters, reason)
        return None
    table = result.tidy()
    unestimable = table.loc[~table["estimable"], "term"].tolist() if "estimable" in table else []
    if unestimable:
        reason = (
            f"In the {label}, {', '.join(unestimable)} could not be estimated from these data "
            "(each term's reason is in its row); the other terms are estimated."
        )
        _add_status(outputs, model, STATUS_PARTLY_ESTIMABLE, events, parameters, reason)
    else:
        _add_status(outputs, model, STATUS_FITTED, events, parameters, "")
    return result


def _add_status(
    outputs: FitOutputs, model: str, status: str, events: int, parameters: int, reason: str
) -> None:
    outputs.status.append(
        {
            "model": model,
            "status": status,
            "estimable": status == STATUS_FITTED,
            "events": events,
            "parameters": parameters,
            "reason": reason,
        }
    )


def with_group(recovery: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Rows with a known comparison group (people with no adherence data cannot be grouped)."""
    return recovery[recovery[params["group"]].notna()]


def in_group_order(table: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Rows in the configured group order (low, moderate, high), not alphabetical."""
    rank = {group: position for position, group in enumerate(params["group_order"])}
    return table.sort_values("group", key=lambda groups: groups.map(rank)).reset_index(drop=True)


def comparison_reference(grouped: pd.DataFrame, params: dict):
    """The group the differences are against: reference_levels' (the lowest adherence group),
    else the first of group_order present."""
    present = set(grouped[params["group"]])
    preferred = [params["reference_levels"].get(params["group"]), *params["group_order"]]
    return next((level for level in preferred if level in present), None)


def km_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Kaplan-Meier by group (withdrawal censored), log-rank (plain and stratified), RMST."""
    grouped = with_group(recovery, params)
    group = params["group"]
    km = kaplan_meier(grouped, DURATION, EVENT, group=group)
    overall = kaplan_meier(recovery, DURATION, EVENT)
    outputs.tables["km_medians"] = pd.concat(
        [in_group_order(km.medians, params), overall.medians], ignore_index=True
    )
    outputs.tables["km_curves"] = km.curves
    outputs.tables["km_curves_overall"] = overall.curves
    outputs.tables["km_at_risk"] = km.at_risk(params["km_times_days"])
    outputs.tables["km_survival_at"] = km.survival_at(params["km_times_days"])
    logrank = logrank_test(grouped, DURATION, EVENT, group)
    stratified = logrank_test(grouped, DURATION, EVENT, group, strata=params["stratify_logrank_by"])
    outputs.tables["logrank"] = pd.concat(
        [
            logrank.tidy().assign(strata="none"),
            stratified.tidy().assign(strata=params["stratify_logrank_by"]),
        ],
        ignore_index=True,
    )
    outputs.tables["logrank_groups"] = logrank.groups
    reference = comparison_reference(grouped, params)
    rmst = rmst_difference(
        grouped, DURATION, EVENT, group, params["rmst_horizon_days"], reference=reference
    )
    outputs.tables["rmst_groups"] = in_group_order(rmst.per_group, params)
    outputs.tables["rmst_difference"] = rmst.tidy()
    bootstrap = params["median_difference"]
    medians = median_difference(
        grouped,
        DURATION,
        EVENT,
        group,
        bootstrap["bootstrap_samples"],
        bootstrap["seed"],
        reference=reference,
    )
    outputs.tables["km_median_difference"] = medians.tidy()
    outputs.metrics["km_median_days"] = {
        str(row.group): _finite(row.median) for row in km.medians.itertuples()
    }
    outputs.metrics["km_median_days_overall"] = _finite(overall.medians["median"].iloc[0])
    outputs.metrics["logrank_p_value"] = _finite(logrank.p_value)


def baseline_cox_model(frame: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Cox on baseline covariates with its PH checks, if the events per parameter allow it."""
    covariates = params["cox_covariates"]
    counts = information_count(frame, [DURATION, EVENT], covariates, frame[EVENT] == 1)

    def fit():
        cox = fit_cox(
            frame, DURATION, EVENT, covariates, reference_levels=params["reference_levels"]
        )
        references = reference_levels_in(frame, [DURATION, EVENT], covariates, params)
        outputs.tables["cox"] = regression_table(cox.tidy(), references, cox.n, cox.events)
        outputs.tables["cox_ph_test"] = cox.proportional_hazards_test()
        return cox

    cox = fit_regression(outputs, "cox", "Cox model", counts, params, fit)
    if cox is None:
        return
    outputs.metrics["cox_concordance"] = _finite(cox.concordance)
    outputs.metrics["cox_hazard_ratios"] = _hazard_ratios(cox.tidy())
    _record_notes(outputs, "cox", cox.notes)


def unadjusted_cox_models(frame: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Cox on each of fit.cox_covariates alone (gtsummary's unadjusted column), as cox_unadjusted.

    Each model uses everyone with that covariate (not only those with every covariate), and
    goes through the events-per-parameter rule on its own.
    """
    tables = []
    for covariate in params["cox_covariates"]:
        model = f"cox_unadjusted_{covariate}"
        counts = information_count(frame, [DURATION, EVENT], [covariate], frame[EVENT] == 1)
        cox = fit_regression(
            outputs,
            model,
            f"unadjusted Cox model of {covariate}",
            counts,
            params,
            lambda covariate=covariate: fit_cox(
                frame, DURATION, EVENT, [covariate], reference_levels=params["reference_levels"]
            ),
        )
        if cox is None:
            continue
        references = reference_levels_in(frame, [DURATION, EVENT], [covariate], params)
        tables.append(regression_table(cox.tidy(), references, cox.n, cox.events))
        _record_notes(outputs, model, cox.notes)
    if tables:
        outputs.tables["cox_unadjusted"] = pd.concat(tables, ignore_index=True)


def cox_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, params: dict, outputs: FitOutputs
) -> None:
    """Cox on baseline covariates (with its PH checks), each covariate alone, and the
    time-varying weekly model."""
    baseline_cox_model(recovery, params, outputs)
    unadjusted_cox_models(recovery, params, outputs)
    covariates = params["time_varying_covariates"]
    frame = time_varying_frame(intervals, recovery, covariates)
    event = WeeklyIntervals.event
    counts = information_count(frame, ["start", "stop", event], covariates, frame[event] == 1)
    time_varying = fit_regression(
        outputs,
        "cox_time_varying",
        "time-varying Cox model",
        counts,
        params,
        lambda: fit_cox_time_varying(
            frame,
            WeeklyIntervals.participant_id,
            "start",
            "stop",
            event,
            covariates,
            reference_levels=params["reference_levels"],
        ),
    )
    if time_varying is None:
        return
    outcome = [WeeklyIntervals.participant_id, "start", "stop", event]
    used, _ = complete_rows(frame, [*outcome, *covariates])
    outputs.tables["cox_time_varying"] = regression_table(
        time_varying.tidy(),
        reference_levels_in(frame, outcome, covariates, params),
        used[WeeklyIntervals.participant_id].nunique(),
        time_varying.events,
    )
    outputs.metrics["cox_time_varying_hazard_ratios"] = _hazard_ratios(time_varying.tidy())
    _record_notes(outputs, "cox_time_varying", time_varying.notes)


def time_varying_frame(
    intervals: pd.DataFrame, recovery: pd.DataFrame, covariates: list[str]
) -> pd.DataFrame:
    """Weekly start/stop rows joined to the baseline covariates the model also adjusts for."""
    baseline = [c for c in covariates if c not in intervals.columns]
    frame = intervals.merge(
        recovery[[Recovery.participant_id, *baseline]],
        on=WeeklyIntervals.participant_id,
        how="left",
    )
    return frame.assign(**{WeeklyIntervals.event: frame[WeeklyIntervals.event].astype(int)})


def aft_candidates(
    recovery: pd.DataFrame, params: dict, outputs: FitOutputs
) -> dict[str, AftResult]:
    """Each of fit.aft_distributions fitted once per run (interval-censored), by distribution.

    The aft and timeline families share these fits; each goes through `fit_regression`, so a
    distribution not fitted (too few events, or a failure) is absent and has a status row.
    """
    if outputs.aft_fits is not None:
        return outputs.aft_fits
    frame = interval_censored_frame(recovery)
    covariates = params["aft_covariates"]
    counts = information_count(
        frame,
        [Recovery.interval_lower_days],
        covariates,
        frame[Recovery.interval_upper_days].notna(),
    )
    fits = {}
    for distribution in params["aft_distributions"]:
        fitted = fit_regression(
            outputs,
            f"aft_{distribution}",
            f"{distribution} AFT model",
            counts,
            params,
            lambda d=distribution: fit_aft(
                frame,
                covariates,
                distribution=d,
                lower=Recovery.interval_lower_days,
                upper=Recovery.interval_upper_days,
                reference_levels=params["reference_levels"],
            ),
        )
        if fitted is not None:
            fits[distribution] = fitted
    outputs.aft_fits = fits
    return fits


def aft_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """The interval-censored AFT family, the best by AIC flagged."""
    fits = aft_candidates(recovery, params, outputs)
    if not fits:
        return
    table = compare_by_aic(fits)
    outputs.tables["aft_models"] = table
    frame = interval_censored_frame(recovery)
    used, _ = complete_rows(frame, [Recovery.interval_lower_days, *params["aft_covariates"]])
    references = reference_levels_in(
        frame, [Recovery.interval_lower_days], params["aft_covariates"], params
    )
    events = int(used[Recovery.interval_upper_days].notna().sum())
    outputs.tables["aft_coefficients"] = pd.concat(
        [
            regression_table(fit.tidy(), references, fit.n_observations, events).assign(
                distribution=distribution
            )
            for distribution, fit in fits.items()
        ],
        ignore_index=True,
    )
    best = table.loc[table["best_by_aic"], "distribution"]
    outputs.metrics["aft_best_distribution"] = best.iloc[0]


def turnbull_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """The honest nonparametric curve for recovery known only between two visits."""
    frame = interval_censored_frame(recovery)
    overall = turnbull(frame, Recovery.interval_lower_days, Recovery.interval_upper_days)
    grouped = turnbull(
        with_group(frame, params),
        Recovery.interval_lower_days,
        Recovery.interval_upper_days,
        group=params["group"],
    )
    outputs.tables["turnbull_curves"] = pd.concat(
        [overall.curves, grouped.curves], ignore_index=True
    )
    outputs.tables["turnbull_survival_at"] = pd.concat(
        [
            overall.survival_at(params["km_times_days"]),
            grouped.survival_at(params["km_times_days"]),
        ],
        ignore_index=True,
    )


def competing_risk_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Cumulative incidence of recovery and withdrawal with Gray's test, and Fine-Gray for
    recovery."""
    cumulative_incidence_model(recovery, params, outputs)
    covariates = params["fine_gray_covariates"]
    counts = information_count(
        recovery,
        [DURATION, Recovery.event_type],
        covariates,
        recovery[Recovery.event_type] == EVENT_RECOVERED,
    )
    fine_gray = fit_regression(
        outputs,
        "fine_gray",
        "Fine-Gray model",
        counts,
        params,
        lambda: fit_fine_gray(
            recovery,
            DURATION,
            Recovery.event_type,
            EVENT_RECOVERED,
            covariates,
            reference_levels=params["reference_levels"],
        ),
    )
    if fine_gray is None:
        return
    outcome = [DURATION, Recovery.event_type]
    used, _ = complete_rows(recovery, [*outcome, *covariates])
    outputs.tables["fine_gray"] = regression_table(
        fine_gray.tidy(),
        reference_levels_in(recovery, outcome, covariates, params),
        fine_gray.n_observations,
        (used[Recovery.event_type] == EVENT_RECOVERED).sum(),
    )
    outputs.metrics["fine_gray_subdistribution_hazard_ratios"] = _hazard_ratios(fine_gray.tidy())
    _record_notes(outputs, "fine_gray", fine_gray.notes)
    unadjusted_fine_gray_models(recovery, params, outputs)


def unadjusted_fine_gray_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Fine-Gray on each of fit.fine_gray_covariates alone (gtsummary's unadjusted column), as
    fine_gray_unadjusted.

    Each model uses everyone with that covariate and goes through the events-per-parameter rule
    on its own; withdrawal competes as in the adjusted model.
    """
    outcome = [DURATION, Recovery.event_type]
    is_event = recovery[Recovery.event_type] == EVENT_RECOVERED
    tables = []
    for covariate in params["fine_gray_covariates"]:
        model = f"fine_gray_unadjusted_{covariate}"
        fitted = fit_regression(
            outputs,
            model,
            f"unadjusted Fine-Gray model of {covariate}",
            information_count(recovery, outcome, [covariate], is_event),
            params,
            lambda covariate=covariate: fit_fine_gray(
                recovery,
                DURATION,
                Recovery.event_type,
                EVENT_RECOVERED,
                [covariate],
                reference_levels=params["reference_levels"],
            ),
        )
        if fitted is None:
            continue
        used, _ = complete_rows(recovery, [*outcome, covariate])
        tables.append(
            regression_table(
                fitted.tidy(),
                reference_levels_in(recovery, outcome, [covariate], params),
                fitted.n_observations,
                (used[Recovery.event_type] == EVENT_RECOVERED).sum(),
            )
        )
        _record_notes(outputs, model, fitted.notes)
    if tables:
        outputs.tables["fine_gray_unadjusted"] = pd.concat(tables, ignore_index=True)


def mixed_models(trajectories: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Trajectories of pain per site and of strength over weeks, by group, per participant.

    Time enters the fixed effects through the configured basis (a natural cubic spline by
    default) over the whole follow-up, unless `max_week` is set. The fitted means are set
    against the observed means per week and group (mixed_fitted_vs_observed), and the largest
    gap among cells of >= fitted_vs_observed_min_n people is a metric (mixed_largest_gap).
    """
    spec = params["mixed"]
    week = WeeklyTrajectories.week
    frame, basis = mixed_frame(trajectories, params)
    weeks = range(int(frame[week].min()), int(frame[week].max()) + 1)
    grid = pd.MultiIndex.from_product(
        [weeks, params["group_order"]], names=[week, params["group"]]
    ).to_frame(index=False)
    grid = pd.concat([grid, basis.columns(grid[week]).drop(columns=week)], axis=1)
    fixed, components, predictions, comparisons = [], [], [], []
    for outcome in spec["outcomes"]:
        fitted = _run(
            outputs,
            f"mixed_{outcome}",
            lambda o=outcome: fit_mixed(
                frame,
                f"{o} ~ {basis.in_formula(spec['fixed'])}",
                WeeklyTrajectories.participant_id,
                re_formula=spec["random"],
                reml=spec["reml"],
                reference_levels=params["reference_levels"],
            ),
        )
        if fitted is None:
            continue
        fixed.append(mixed_fixed_effects_table(fitted, params).assign(outcome=outcome))
        components.append(fitted.random_effects_sd_cor.assign(outcome=outcome))
        predictions.append(
            grid[[week, params["group"]]].assign(
                outcome=outcome, fitted=fitted.predict(grid).to_numpy()
            )
        )
        comparison = fitted_vs_observed(fitted, frame, outcome, [week, params["group"]])
        comparisons.append(
            comparison.rename(columns={params["group"]: "group"}).assign(outcome=outcome)
        )
    if fixed:
        outputs.tables["mixed_fixed_effects"] = pd.concat(fixed, ignore_index=True)
        outputs.tables["mixed_variance_components"] = pd.concat(components, ignore_index=True)
        outputs.tables["mixed_predictions"] = pd.concat(predictions, ignore_index=True)
        table = pd.concat(comparisons, ignore_index=True)
        table = table[["outcome", week, "group", *FITTED_VS_OBSERVED_COLUMNS]]
        outputs.tables["mixed_fitted_vs_observed"] = table
        outputs.metrics["mixed_largest_gap"] = mixed_largest_gaps(
            table, spec["fitted_vs_observed_min_n"]
        )


def mixed_fixed_effects_table(fitted, params: dict) -> pd.DataFrame:
    """A mixed model's fixed effects as a regression table: terms named as the other models
    name them (`factor[level]`, `week:factor[level]`, not R's `factorlevel`), a reference row
    before each factor's levels (also within an interaction with time), and the people (`n`)
    and weekly observations (`observations`) the model describes."""
    r_names = fitted.fitted.fixed_spec.column_names
    named = {r_term_name(name): name.replace("[T.", "[") for name in r_names if "[" in name}
    tidy = fitted.tidy().assign(term=lambda t: t["term"].map(lambda term: named.get(term, term)))
    references = {}
    for term in tidy["term"]:
        prefix = str(term).split("[")[0]
        factor = prefix.split(":")[-1]
        if "[" in str(term) and factor in params["reference_levels"]:
            references[prefix] = params["reference_levels"][factor]
    return with_reference_rows(tidy, references).assign(
        n=fitted.n_groups, observations=fitted.n_observations
    )


def mixed_frame(trajectories: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, TimeBasis]:
    """The rows the mixed models fit (known group; weeks up to max_week if set), with the
    time basis's columns added, and that basis (its `in_formula` rewrites `fit.mixed.fixed`).
    """
    spec = params["mixed"]
    week = WeeklyTrajectories.week
    frame = trajectories[trajectories[params["group"]].notna()]
    if spec.get("max_week") is not None:
        frame = frame[frame[week] <= spec["max_week"]]
    basis = mixed_time_basis(frame[week], spec)
    return pd.concat([frame, basis.columns(frame[week]).drop(columns=week)], axis=1), basis


def mixed_time_basis(weeks: pd.Series, spec: dict) -> TimeBasis:
    """The configured time basis; a natural spline's boundary knots are the weeks observed."""
    return TimeBasis(
        variable=WeeklyTrajectories.week,
        kind=spec["time_basis"],
        knots=tuple(spec.get("time_knots") or ()),
        boundary=(float(weeks.min()), float(weeks.max())),
    )


def mixed_largest_gaps(table: pd.DataFrame, min_n: int) -> dict:
    """Per outcome, the week x group cell of >= min_n people where fitted and observed differ most.

    JSON-ready: week, group, n, gap (fitted - observed mean) and whether the fitted mean lies
    inside the observed mean's 95 % interval; null where no cell has min_n people.
    """
    gaps = {}
    for outcome, rows in table.groupby("outcome", sort=False):
        row = largest_gap(rows, min_n)
        gaps[outcome] = (
            None
            if row is None
            else {
                "week": int(row[WeeklyTrajectories.week]),
                "group": str(row["group"]),
                "n": int(row["n"]),
                "gap": _finite(row["gap"]),
                "within_interval": bool(row["within_interval"]),
                "all_within_interval": bool(rows.loc[rows["n"] >= min_n, "within_interval"].all()),
            }
        )
    return gaps


def timeline_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Calibrated recovery ranges per profile (from the run's AFT fits), the quoted ranges
    checked, and out-of-sample calibration."""
    fits = aft_candidates(recovery, params["fit"], outputs)
    timeline = timeline_table(recovery, fits, params["timeline"], params["derive"])
    outputs.tables["timeline"] = timeline.tidy()
    outputs.tables["timeline_model_comparison"] = timeline.model_comparison
    comparison = compare_with_quoted_ranges(timeline, recovery, params["timeline"])
    outputs.tables["timeline_quoted_ranges"] = comparison
    calibration = calibration_diagnostics(
        recovery, params["timeline"], params["fit"], seed=params["timeline"]["seed"]
    )
    outputs.tables["calibration_summary"] = calibration.summary
    outputs.tables["calibration_table"] = calibration.calibration_table
    outputs.timeline_model = timeline.timeline_model.to_dict()
    outputs.metrics["timeline_quoted_range_verdicts"] = dict(
        zip(comparison["claim"], comparison["verdict"], strict=True)
    )
    outputs.metrics["calibration"] = {
        row.metric: _finite(row.value) for row in calibration.summary.itertuples()
    }
    _record_notes(outputs, "timeline", timeline.notes)


PRIMARY_BOUNDS = (Recovery.interval_lower_days, Recovery.interval_upper_days)


def primary_frame(
    intervals: pd.DataFrame,
    recovery: pd.DataFrame,
    spec: dict,
    lag_weeks: int = 0,
    bounds: tuple[str, str] = PRIMARY_BOUNDS,
) -> pd.DataFrame:
    """Weekly start/stop rows with each person's outcome bounds and baseline covariates.

    `bounds` names the (lower, upper] columns of `recovery` (a milestone's visit interval).
    With `lag_weeks` > 0 the `lagged` covariates of week w - lag enter week w's hazard; in a
    person's first `lag` weeks, before any lagged week exists, their first week's value
    stands in (so no week and no early recovery is dropped).
    """
    covariates = spec["covariates"]
    baseline = [c for c in covariates if c not in intervals.columns]
    frame = intervals.merge(
        recovery[[Recovery.participant_id, *bounds, *baseline]],
        on=WeeklyIntervals.participant_id,
        how="inner",
    ).sort_values([WeeklyIntervals.participant_id, "start"], kind="stable")
    if lag_weeks:
        person = frame.groupby(WeeklyIntervals.participant_id, sort=False)
        before_any_lagged_week = (person.cumcount() < lag_weeks).to_numpy()
        for name in spec["lagged"]:
            lagged = person[name].shift(lag_weeks)
            first_week = person[name].transform("first")
            frame[name] = lagged.where(~before_any_lagged_week, first_week)
    return frame.reset_index(drop=True)


def fit_primary(
    frame: pd.DataFrame,
    spec: dict,
    reference_levels: dict,
    bounds: tuple[str, str] = PRIMARY_BOUNDS,
):
    """The primary model on a frame from `primary_frame` (cuts in weeks -> days); factors coded
    against `reference_levels` (fit.reference_levels)."""
    return fit_interval_cox(
        frame,
        WeeklyIntervals.participant_id,
        "start",
        "stop",
        *bounds,
        spec["covariates"],
        cuts=[DAYS_PER_WEEK * week for week in spec["piece_cuts_weeks"]],
        profile=spec["profile_terms"],
        reference_levels=reference_levels,
    )


def in_clinical_units(
    tidy: pd.DataFrame, result_conf_method: dict, spec: dict, references: dict
) -> pd.DataFrame:
    """Log hazard ratios per the unit a clinician reads (e.g. per 10 points of adherence).

    Estimates, SEs and CI bounds scale by the unit; z and p do not change. Factor levels
    read "vs <reference>" (`references`: factor -> the level the model codes it against).
    """
    units = spec["units"]
    scale = tidy["term"].map(lambda term: units.get(term, {}).get("per", 1.0)).astype(float)
    table = tidy[list(TIDY_COLUMNS)].copy()
    for column in ("estimate", "std_error", "conf_low", "conf_high"):
        table[column] = table[column] * scale

    def unit(term: str) -> str:
        if term in units:
            return units[term]["label"]
        factor, _, level = term.partition("[")
        if level == "True]":
            return f"{factor} vs not {factor}"
        reference = references.get(factor)
        if level and reference is not None:
            return f"{level.rstrip(']')} vs {reference}"
        return "per unit"

    table["unit"] = table["term"].map(unit)
    table["conf_method"] = table["term"].map(result_conf_method)
    table = table.assign(
        hazard_ratio=np.exp(table["estimate"]),
        hr_conf_low=np.exp(table["conf_low"]),
        hr_conf_high=np.exp(table["conf_high"]),
    )
    return table[[*TIDY_COLUMNS, *PRIMARY_EXTRA_COLUMNS, *HAZARD_RATIO_COLUMNS]]


def primary_table(
    fitted, frame: pd.DataFrame, spec: dict, params: dict, bounds=PRIMARY_BOUNDS
) -> pd.DataFrame:
    """A primary-model fit's effects in clinical units as a regression table: reference rows
    (unit "reference level") and the model's people and events."""
    outcome = [WeeklyIntervals.participant_id, "start", "stop", bounds[0]]
    references = reference_levels_in(frame, outcome, spec["covariates"], params)
    table = in_clinical_units(fitted.tidy(), fitted.conf_method, spec, references)
    table = regression_table(table, references, fitted.n, fitted.events)
    table.loc[table[REFERENCE_COLUMN], "unit"] = REFERENCE_UNIT
    table.loc[table[REFERENCE_COLUMN], "conf_method"] = ""
    return table


def primary_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, params: dict, outputs: FitOutputs
) -> None:
    """Interval-censored PH with weekly adherence and sitting, its lag sensitivity table, and
    each covariate alone (primary_unadjusted)."""
    spec = params["primary"]
    frame = primary_frame(intervals, recovery, spec)
    fitted = fit_primary(frame, spec, params["reference_levels"])
    table = primary_table(fitted, frame, spec, params)
    outputs.tables["primary_effects"] = table
    outputs.tables["primary_baseline_hazard"] = fitted.baseline
    outputs.metrics["primary_hazard_ratios"] = {
        f"{row.term} ({row.unit})": _finite(row.hazard_ratio)
        for row in table[~table[REFERENCE_COLUMN]].itertuples()
    }
    _record_notes(outputs, "primary", fitted.notes)
    sensitivity = [table.assign(lag_weeks=0)]
    for lag in spec["lag_weeks"]:
        if lag == 0:
            continue
        lagged_frame = primary_frame(intervals, recovery, spec, lag)
        lagged = _run(
            outputs,
            f"primary_lag_{lag}",
            lambda lagged_frame=lagged_frame: fit_primary(
                lagged_frame, spec, params["reference_levels"]
            ),
        )
        if lagged is not None:
            sensitivity.append(
                primary_table(lagged, lagged_frame, spec, params).assign(lag_weeks=lag)
            )
    lag_table = pd.concat(sensitivity, ignore_index=True)
    outputs.tables["primary_lag_sensitivity"] = lag_table[
        ["lag_weeks", *[c for c in lag_table.columns if c != "lag_weeks"]]
    ]
    unadjusted_primary_models(recovery, intervals, params, outputs)


def primary_information_count(
    frame: pd.DataFrame, covariates: list[str], bounds: tuple[str, str] = PRIMARY_BOUNDS
) -> tuple[int, int]:
    """Events (people whose recovery interval is closed) and design columns of a primary fit."""
    outcome = [WeeklyIntervals.participant_id, "start", "stop", bounds[0]]
    used, _ = complete_rows(frame, [*outcome, *covariates])
    people = used.groupby(WeeklyIntervals.participant_id)[bounds[1]].first()
    return int(people.notna().sum()), design_matrix(used, covariates).shape[1]


def unadjusted_primary_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, params: dict, outputs: FitOutputs
) -> None:
    """The primary model with each of its covariates alone (gtsummary's unadjusted column).

    Same baseline pieces and interval methods as the adjusted model; each model uses everyone
    with that covariate and goes through the events-per-parameter rule on its own.
    """
    spec = params["primary"]
    tables = []
    for covariate in spec["covariates"]:
        single = {
            **spec,
            "covariates": [covariate],
            "profile_terms": [term for term in spec["profile_terms"] if term == covariate],
        }
        frame = primary_frame(intervals, recovery, single)
        model = f"primary_unadjusted_{covariate}"
        fitted = fit_regression(
            outputs,
            model,
            f"unadjusted primary model of {covariate}",
            primary_information_count(frame, [covariate]),
            params,
            lambda frame=frame, single=single: fit_primary(
                frame, single, params["reference_levels"]
            ),
        )
        if fitted is None:
            continue
        tables.append(primary_table(fitted, frame, single, params))
        _record_notes(outputs, model, fitted.notes)
    if tables:
        outputs.tables["primary_unadjusted"] = pd.concat(tables, ignore_index=True)


def profile_rows(recovery: pd.DataFrame, profile: dict) -> pd.Series:
    """People matching every `column: level` of a profile (an empty profile is everyone)."""
    chosen = pd.Series(True, index=recovery.index)
    for column, level in profile.items():
        chosen &= recovery[column] == level
    return chosen


def milestone_models(
    recovery: pd.DataFrame,
    intervals: pd.DataFrame,
    params: dict,
    outputs: FitOutputs,
    bootstrap: dict,
) -> None:
    """Both milestones (first functional change, full recovery): Kaplan-Meier medians by group,
    the primary model, and the domain's quoted ranges against the interval-censored estimates.

    Quoted ranges are checked on Turnbull quantiles (the interval between visits, not the visit
    day, which is about a week late) and their bootstrap CIs (`bootstrap`: the timeline
    block's bootstrap_samples and seed); see `milestone_quoted_ranges`.
    """
    spec = params["milestones"]
    grouped = with_group(recovery, params)
    medians, effects = [], []
    for name, columns in MILESTONES.items():
        km = kaplan_meier(grouped, columns.time, columns.event, group=params["group"])
        overall = kaplan_meier(grouped, columns.time, columns.event)
        medians.append(
            pd.concat(
                [in_group_order(km.medians, params), overall.medians], ignore_index=True
            ).assign(milestone=name)
        )
        followed = milestone_intervals(intervals, recovery, name)
        # A milestone may have its own baseline pieces: first changes end earlier in follow-up.
        cuts = spec["piece_cuts_weeks"].get(name, params["primary"]["piece_cuts_weeks"])
        model = {**params["primary"], "piece_cuts_weeks": cuts}
        bounds = (columns.lower, columns.upper)
        frame = primary_frame(followed, recovery, model, bounds=bounds)
        fitted = _run(
            outputs,
            f"milestone_primary_{name}",
            lambda frame=frame, model=model, bounds=bounds: fit_primary(
                frame, model, params["reference_levels"], bounds=bounds
            ),
        )
        if fitted is not None:
            effects.append(
                primary_table(fitted, frame, model, params, bounds).assign(milestone=name)
            )
    outputs.tables["milestone_quoted_ranges"] = milestone_quoted_ranges(
        grouped, spec["quoted"], bootstrap
    )
    outputs.tables["milestone_km_medians"] = pd.concat(medians, ignore_index=True)
    if effects:
        outputs.tables["milestone_primary_effects"] = pd.concat(effects, ignore_index=True)
    outputs.metrics["milestone_quoted_ranges"] = {
        f"{row.milestone}: {row.claim}": row.verdict
        for row in outputs.tables["milestone_quoted_ranges"].itertuples()
    }


def profile_text(profile: dict) -> str:
    """A claim's people in words of the table: "severity=mild, chronic=False" or everyone."""
    return ", ".join(f"{name}={level}" for name, level in profile.items()) or "everyone"


def milestone_quoted_ranges(grouped: pd.DataFrame, claims: list[dict], bootstrap: dict):
    """Each quoted range (fit.milestones.quoted) against the Turnbull quantile of the people the
    claim is about, with its 95% percentile-bootstrap CI, and a verdict by
    timeline.VERDICT_RULE (the CI inside the range: agree; outside: disagree; across an end:
    inconclusive). Claims about the same milestone and people share one bootstrap
    (`bootstrap`: timeline.bootstrap_samples and timeline.seed)."""
    rng = np.random.default_rng(bootstrap["seed"])
    estimates = {}
    for claim in claims:
        key = (claim["milestone"], profile_text(claim["profile"]))
        estimates.setdefault(key, (claim["profile"], []))[1].append(claim["quantile"])
    intervals = {}
    for (milestone, text), (profile, quantiles) in estimates.items():
        columns = MILESTONES[milestone]
        people = grouped[profile_rows(grouped, profile)]
        intervals[(milestone, text)] = (
            len(people),
            turnbull_quantiles(
                people,
                columns.lower,
                columns.upper,
                quantiles,
                int(bootstrap["bootstrap_samples"]),
                rng,
            ),
        )
    quotes = []
    for claim in claims:
        key = (claim["milestone"], profile_text(claim["profile"]))
        people, found = intervals[key]
        estimate, conf_low, conf_high = found[claim["quantile"]].weeks()
        low, high = claim["range_weeks"]
        high = np.inf if high is None else high
        quotes.append(
            {
                "milestone": claim["milestone"],
                "claim": claim["text"],
                "profile": key[1],
                "people": people,
                "quantile": claim["quantile"],
                "estimate_weeks": estimate,
                "conf_low_weeks": conf_low,
                "conf_high_weeks": conf_high,
                "quoted_low_weeks": low,
                "quoted_high_weeks": high,
                "verdict": range_verdict(conf_low, conf_high, low, high),
            }
        )
    return pd.DataFrame(quotes, columns=list(MILESTONE_QUOTE_COLUMNS))


@dataclass
class LandmarkFrame:
    """People still in follow-up at the landmark, time restarted there, and who was left out."""

    frame: pd.DataFrame
    counts: dict


def landmark_adherence(
    recovery: pd.DataFrame,
    intervals: pd.DataFrame,
    landmark_weeks: int,
    cutoffs: list[float],
    labels: list[str],
) -> LandmarkFrame:
    """Adherence over the first `landmark_weeks` weeks and follow-up from the landmark on.

    Landmark adherence is the mean weekly adherence over weeks 0 .. k-1 (each week counts
    once), grouped by `cutoffs` into `labels` ([c_i, c_i+1) bands). People whose outcome
    (recovery or censoring) came on or before the landmark day are excluded, so no one's group
    depends on weeks after their outcome; times and interval bounds are counted from the
    landmark (a lower bound before it becomes 0).
    """
    landmark_day = DAYS_PER_WEEK * landmark_weeks
    early = intervals[intervals["start"] < landmark_day]
    adherence = early.groupby(WeeklyIntervals.participant_id)[
        WeeklyIntervals.weekly_adherence
    ].mean()
    after = recovery[recovery[DURATION] > landmark_day]
    frame = after.assign(
        landmark_adherence=after[Recovery.participant_id].map(adherence).to_numpy()
    )
    no_adherence = int(frame["landmark_adherence"].isna().sum())
    frame = frame[frame["landmark_adherence"].notna()]
    bins = [-np.inf, *cutoffs, np.inf]
    frame = frame.assign(
        landmark_group=pd.cut(
            frame["landmark_adherence"], bins=bins, labels=labels, right=False
        ).astype(object),
        **{
            DURATION: frame[DURATION] - landmark_day,
            Recovery.interval_lower_days: (frame[Recovery.interval_lower_days] - landmark_day).clip(
                lower=0
            ),
            Recovery.interval_upper_days: frame[Recovery.interval_upper_days] - landmark_day,
        },
    )
    counts = {
        "landmark_weeks": landmark_weeks,
        "people": len(recovery),
        "outcome_before_landmark": len(recovery) - len(after),
        "no_adherence": no_adherence,
        "kept": len(frame),
    }
    return LandmarkFrame(frame.reset_index(drop=True), counts)


def landmark_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, params: dict, outputs: FitOutputs
) -> None:
    """Kaplan-Meier, log-rank and Cox on adherence over the first k weeks, from week k on."""
    spec = params["landmark"]
    counts, groups, cox = [], [], []
    for weeks in spec["weeks"]:
        landmark = landmark_adherence(
            recovery, intervals, weeks, spec["group_cutoffs"], spec["group_labels"]
        )
        counts.append(landmark.counts)
        frame = landmark.frame
        km = kaplan_meier(frame, DURATION, EVENT, group="landmark_group")
        logrank = logrank_test(frame, DURATION, EVENT, "landmark_group")
        medians = km.medians.assign(
            landmark_weeks=weeks,
            # Back on the enrolment time scale, so the median reads as weeks since enrolment.
            median_days_since_enrolment=km.medians["median"] + DAYS_PER_WEEK * weeks,
            logrank_p_value=logrank.p_value,
        )
        groups.append(medians)
        fitted = fit_cox(
            frame,
            DURATION,
            EVENT,
            spec["cox_covariates"],
            reference_levels=params["reference_levels"],
        )
        references = reference_levels_in(frame, [DURATION, EVENT], spec["cox_covariates"], params)
        cox.append(
            regression_table(fitted.tidy(), references, fitted.n, fitted.events).assign(
                landmark_weeks=weeks
            )
        )
        _record_notes(outputs, f"landmark_cox_{weeks}", fitted.notes)
    outputs.tables["landmark_counts"] = pd.DataFrame(counts, columns=list(LANDMARK_COUNT_COLUMNS))
    outputs.tables["landmark_cox"] = pd.concat(cox, ignore_index=True)
    order = {label: position for position, label in enumerate(spec["group_labels"])}
    outputs.tables["landmark_groups"] = (
        pd.concat(groups, ignore_index=True)
        .sort_values(
            ["landmark_weeks", "group"], key=lambda c: c.map(order) if c.name == "group" else c
        )
        .reset_index(drop=True)
    )


def run_models(
    recovery: pd.DataFrame,
    intervals: pd.DataFrame,
    trajectories: pd.DataFrame,
    params: dict,
    only: list[str] | None = None,
    processes: int = 1,
) -> FitOutputs:
    """All configured model families (or just those in `only`); each failure is recorded.

    `params` is the whole params.yaml: the `fit` block, plus `timeline` and `derive` for the
    calibrated recovery ranges. Family names are `fit.families` in params.yaml. With
    `processes=2` (and fork available) the SECOND_PROCESS_FAMILIES are fitted in a forked
    process beside the others; the outputs are the same as one process gives.
    """
    fit_params = params["fit"]
    min_cell_size = check_min_cell_size(params["report"]["min_cell_size"])
    families: dict[str, Callable[[FitOutputs], None]] = {
        "kaplan_meier": lambda out: km_models(recovery, fit_params, out),
        "primary": lambda out: primary_models(recovery, intervals, fit_params, out),
        "landmark": lambda out: landmark_models(recovery, intervals, fit_params, out),
        "milestones": lambda out: milestone_models(
            recovery, intervals, fit_params, out, params["timeline"]
        ),
        "cox": lambda out: cox_models(recovery, intervals, fit_params, out),
        "turnbull": lambda out: turnbull_models(recovery, fit_params, out),
        "competing_risks": lambda out: competing_risk_models(recovery, fit_params, out),
        "mixed": lambda out: mixed_models(trajectories, fit_params, out),
        "aft": lambda out: aft_models(recovery, fit_params, out),
        "timeline": lambda out: timeline_models(recovery, params, out),
        "site_comparison": lambda out: site_comparison_models(
            recovery, intervals, fit_params, min_cell_size, out
        ),
        "adherence_grouping": lambda out: adherence_grouping_models(
            recovery, fit_params, min_cell_size, out
        ),
    }
    configured = fit_params["families"]
    unknown = sorted(set(configured) - set(families)) or sorted(set(only or []) - set(configured))
    if unknown:
        raise ParameterError(
            f"unknown model famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"fit.families lists {', '.join(configured)}"
        )
    chosen = [name for name in configured if only is None or name in only]
    second = [name for name in chosen if name in SECOND_PROCESS_FAMILIES]
    if processes < 2 or len(second) in (0, len(chosen)) or not _can_fork():
        second = []
    # The stage's linear algebra is small (at most tens of columns): BLAS threads only wait on
    # each other, and with two processes they would share the two cores with them.
    with threadpool_limits(limits=1, user_api="blas"):
        fitted = _fit_in_two_processes(families, chosen, second) if second else None
        if fitted is None:
            fitted = _fit_families(families, chosen)
    outputs = FitOutputs()
    outputs.metrics["participants"] = len(recovery)
    outputs.metrics["recovered"] = int(recovery[EVENT].sum())
    outputs.metrics["withdrawn"] = int((recovery[Recovery.event_type] == "withdrawn").sum())
    # Each family's outputs in the configured order, as one process fitting them in turn.
    for name in chosen:
        part = fitted[name]
        outputs.tables.update(part.tables)
        outputs.metrics.update(part.metrics)
        outputs.notes.extend(part.notes)
        outputs.status.extend(part.status)
        if part.timeline_model is not None:
            outputs.timeline_model = part.timeline_model
    outputs.tables["model_notes"] = outputs.notes_frame()
    outputs.tables["model_status"] = outputs.status_frame()
    return outputs


# The families a second process fits when `run_models(processes=2)`: about half of the stage's
# time (the timeline's bootstrap and calibration, the per-site comparisons; the milestones'
# bootstrapped claims stay in the first), and independent of the other families (the timeline
# reuses the aft family's fits, so the two go together).
SECOND_PROCESS_FAMILIES = ("aft", "timeline", "site_comparison")


def _fit_families(
    families: dict[str, Callable[[FitOutputs], None]], names: list[str]
) -> dict[str, FitOutputs]:
    """Each family's tables, metrics, notes and status on their own, fitted in turn.

    Families share nothing but the AFT candidates (fitted once, by the first family that needs
    them), which are handed on.
    """
    fitted, aft_fits = {}, None
    for name in names:
        part = FitOutputs(aft_fits=aft_fits)
        _run(part, name, lambda part=part, name=name: families[name](part))
        aft_fits = part.aft_fits
        fitted[name] = part
    return fitted


def _fit_in_two_processes(
    families: dict[str, Callable[[FitOutputs], None]], names: list[str], second: list[str]
) -> dict[str, FitOutputs] | None:
    """`_fit_families` with `second` fitted in a forked process meanwhile; None when either
    side raised (the caller then fits everything in one process, so the error is the one a
    single process meets first, in the configured order)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_fitted, args=(sender, families, second), daemon=True)
    child.start()
    sender.close()
    try:
        try:
            fitted = _fit_families(families, [name for name in names if name not in second])
        except Exception:  # noqa: BLE001 - fitted again in one process, which raises it in order
            child.terminate()
            return None
        try:
            received = receiver.recv()
        except EOFError:  # the process ended without an answer
            return None
        if received is None:
            return None
        return {**fitted, **received}
    finally:
        receiver.close()
        child.join()


def _send_fitted(
    sender, families: dict[str, Callable[[FitOutputs], None]], names: list[str]
) -> None:
    """In the forked process: `_fit_families`, sent back without the AFT fit objects (not
    needed back); None if they raised or cannot be sent."""
    try:
        fitted = _fit_families(families, names)
        for part in fitted.values():
            part.aft_fits = None
        sender.send(fitted)
    except Exception:  # noqa: BLE001 - the parent fits them again and meets the error itself
        sender.send(None)
    finally:
        sender.close()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _run(outputs: FitOutputs, model: str, fit: Callable):
    """Run one fit through the toolkit's warning collector; its notes go to the outputs."""
    result, notes = run_collecting_notes(model, fit)
    outputs.notes.extend(notes)
    return result


def _record_notes(outputs: FitOutputs, model: str, notes: list[str]) -> None:
    """Notes a result carries are already warnings caught by `_run`; keep them only once."""
    known = {(m, message) for m, _, message in outputs.notes}
    outputs.notes.extend((model, "note", n) for n in notes if (model, n) not in known)


def _hazard_ratios(tidy: pd.DataFrame) -> dict:
    """Hazard ratio per term; null for a term not estimable (its limit 0 is not a finding)."""
    estimable = tidy["estimable"] if "estimable" in tidy else pd.Series(True, index=tidy.index)
    return {
        row.term: _finite(row.hazard_ratio) if ok else None
        for row, ok in zip(tidy.itertuples(), estimable, strict=True)
    }


def _finite(value) -> float | None:
    """JSON-safe number: NaN/inf (e.g. a median not reached) become null."""
    value = float(value)
    return value if np.isfinite(value) else None


# --- the comparisons a site report and the adherence report show ------------------------------


def cox_covariates_for_groups(params: dict, group: str) -> list[str]:
    """fit.cox_covariates with the group in place of overall adherence (which defines it)."""
    others = [c for c in params["cox_covariates"] if c not in (Recovery.overall_adherence, group)]
    return [group, *others]


def cumulative_incidence_model(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """Aalen-Johansen cumulative incidence of recovery and withdrawal by group, and Gray's test
    of equal incidence across the groups (as cmprsk::cuminc) where there are two or more."""
    grouped = with_group(recovery, params)
    outputs.tables["cumulative_incidence"] = cumulative_incidence(
        grouped, DURATION, Recovery.event_type, group=params["group"]
    ).table
    if grouped[params["group"]].nunique() > 1:
        outputs.tables["gray_test"] = gray_test(
            grouped, DURATION, Recovery.event_type, params["group"]
        ).tidy()


def whole_cohort_curves(
    recovery: pd.DataFrame,
    outputs: FitOutputs,
    turnbull_fit: Callable[[], TurnbullResult] | None,
) -> None:
    """Kaplan-Meier and Turnbull curves of everyone (group "all"), for the Turnbull figure.
    `turnbull_fit`: the Turnbull fit of the rows (`whole_cohort_turnbull_fits`), None when no
    row is informative."""
    outputs.tables["km_curves_overall"] = kaplan_meier(recovery, DURATION, EVENT).curves
    if turnbull_fit is not None:
        outputs.tables["turnbull_curves"] = turnbull_fit().curves


def whole_cohort_turnbull_fits(frames: list[pd.DataFrame]) -> list:
    """`whole_cohort_curves`' Turnbull fit of each frame, their EMs side by side (None for a
    frame without informative rows)."""
    informative = [interval_censored_frame(frame) for frame in frames]
    fits = iter(
        turnbull_each(
            [rows for rows in informative if not rows.empty],
            Recovery.interval_lower_days,
            Recovery.interval_upper_days,
        )
    )
    return [None if rows.empty else next(fits) for rows in informative]


def compared_rows(
    recovery: pd.DataFrame, group: str, min_cell_size: int, left_out: Sequence | None = None
) -> tuple[list, pd.DataFrame]:
    """`group_comparison`'s groups left out and the rows it compares."""
    if left_out is None:
        suppressed = groups_to_suppress(recovery, group, min_cell_size)
        return suppressed, recovery[~recovery[group].isin(suppressed)]
    suppressed = sorted(left_out, key=str)
    return suppressed, recovery[recovery[group].notna() & ~recovery[group].isin(suppressed)]


def group_comparison(
    recovery: pd.DataFrame,
    params: dict,
    min_cell_size: int,
    intervals: pd.DataFrame | None = None,
    left_out: Sequence | None = None,
    turnbull_fit: Callable[[], TurnbullResult] | None = None,
) -> FitOutputs:
    """Kaplan-Meier, log-rank, RMST, Cox and cumulative incidence by params["group"], with the
    whole-study tables' names, for a subset (a site) or a regrouping.

    Groups with fewer than min_cell_size people (or, given, the `left_out` groups) are left out
    before fitting, so no estimate rests on them (table `suppressed_groups`). The time-varying
    Cox model is fitted only when `intervals` is given. With `left_out` (a site report, which
    leaves those people out of every count) the curves of everyone in the groups compared are
    added as group "all" (`turnbull_fit`, needed then: their Turnbull fit from
    `whole_cohort_turnbull_fits`). Fine-Gray, the primary and the mixed models are whole-study
    models and are not fitted here.
    """
    group = params["group"]
    suppressed, frame = compared_rows(recovery, group, min_cell_size, left_out)
    outputs = FitOutputs()
    _run(outputs, "kaplan_meier", lambda: km_models(frame, params, outputs))
    if left_out is not None:
        _run(outputs, "turnbull", lambda: whole_cohort_curves(frame, outputs, turnbull_fit))
    if intervals is not None:
        kept = intervals[
            intervals[WeeklyIntervals.participant_id].isin(frame[Recovery.participant_id])
        ]
        _run(outputs, "cox", lambda: cox_models(frame, kept, params, outputs))
    else:
        _run(outputs, "cox", lambda: baseline_cox_model(frame, params, outputs))
    _run(
        outputs, "cumulative_incidence", lambda: cumulative_incidence_model(frame, params, outputs)
    )
    # A note raised both as a warning and recorded on the result is kept once.
    notes = outputs.notes_frame().drop_duplicates(subset=["model", "message"])
    outputs.tables["model_notes"] = notes.reset_index(drop=True)
    outputs.tables["model_status"] = outputs.status_frame()
    outputs.tables[SUPPRESSED_GROUPS] = pd.DataFrame({"group": suppressed}, dtype=object)
    return outputs


def site_comparison_models(
    recovery: pd.DataFrame,
    intervals: pd.DataFrame,
    params: dict,
    min_cell_size: int,
    outputs: FitOutputs,
) -> None:
    """The study report's group comparison fitted per site, for the site reports.

    The sites that get a report and the groups each leaves out are the site plan's
    (`privacy.plan_site_groups`, shared with the reports); each table is the whole-study table
    of that name with a `site` column first, written as site_<name>.
    """
    counts, plan = site_plan(recovery, Recovery.site, params["group"], min_cell_size)
    sites = sites_with_report(plan, counts)
    people = [recovery[recovery[Recovery.site].astype(str) == site] for site in sites]
    left_out = [site_groups_left_out(plan, counts, site) for site in sites]
    # The sites' whole-cohort Turnbull curves, fitted side by side.
    turnbull_fits = whole_cohort_turnbull_fits(
        [
            compared_rows(rows, params["group"], min_cell_size, groups)[1]
            for rows, groups in zip(people, left_out, strict=True)
        ]
    )
    parts: dict[str, list[pd.DataFrame]] = {}
    for site, rows, groups, turnbull_fit in zip(
        sites, people, left_out, turnbull_fits, strict=True
    ):
        compared = group_comparison(
            rows, params, min_cell_size, intervals, left_out=groups, turnbull_fit=turnbull_fit
        )
        for name, table in compared.tables.items():
            parts.setdefault(name, []).append(table.assign(**{SITE_COLUMN: site}))
    for name, tables in parts.items():
        table = pd.concat(tables, ignore_index=True)
        outputs.tables[f"{SITE_TABLE_PREFIX}{name}"] = table[
            [SITE_COLUMN, *[c for c in table.columns if c != SITE_COLUMN]]
        ]


def adherence_grouping_models(
    recovery: pd.DataFrame, params: dict, min_cell_size: int, outputs: FitOutputs
) -> None:
    """The group comparison under the trial team's grouping of overall adherence
    (fit.adherence_grouping), with the groups in the Cox model in place of overall adherence.

    Whole study only. Tables: adherence_grouping_<name>, plus adherence_grouping_definition
    (each group's [lower, upper) range of overall adherence).
    """
    spec = params["adherence_grouping"]
    group = params["group"]
    labels = [str(label) for label in spec["labels"]]
    regrouped = regroup_adherence(recovery, spec["cutoffs"], labels, group)
    grouping = {
        **params,
        "group_order": labels,
        "cox_covariates": cox_covariates_for_groups(params, group),
    }
    compared = group_comparison(regrouped, grouping, min_cell_size)
    for name, table in compared.tables.items():
        outputs.tables[f"{ADHERENCE_GROUPING_TABLE_PREFIX}{name}"] = table
    bounds = [np.nan, *[float(c) for c in spec["cutoffs"]], np.nan]
    outputs.tables[f"{ADHERENCE_GROUPING_TABLE_PREFIX}{GROUPING_DEFINITION}"] = pd.DataFrame(
        {"group": labels, "lower": bounds[:-1], "upper": bounds[1:]}
    )
    outputs.tables[f"{ADHERENCE_GROUPING_TABLE_PREFIX}{GROUPING_SENSITIVITY}"] = cutoff_sensitivity(
        recovery, params, min_cell_size
    )


def shifted_cutoffs(cutoffs: list[float], labels: list[str], shifts: list[float]) -> list:
    """(description, cut-offs) for the grouping as set and each cut-off moved on its own by each
    shift, where the cut-offs stay increasing and inside (0, 1)."""
    groupings = [("as set", list(cutoffs))]
    for position, cutoff in enumerate(cutoffs):
        for shift in shifts:
            moved = list(cutoffs)
            moved[position] = round(cutoff + shift, 10)
            if 0 < moved[position] < 1 and all(
                a < b for a, b in zip(moved, moved[1:], strict=False)
            ):
                boundary = f"{labels[position]}/{labels[position + 1]}"
                groupings.append((f"{boundary} cut-off {shift:+g}", moved))
    return groupings


def cutoff_sensitivity(recovery: pd.DataFrame, params: dict, min_cell_size: int) -> pd.DataFrame:
    """How the comparison of the trial team's groups moves with its cut-offs
    (fit.adherence_grouping.sensitivity_shifts): for the grouping as set and each cut-off moved
    on its own, each group's size, Kaplan-Meier median (days, 95% CI) and hazard ratio of
    recovery against the first group (Cox with the groups only, Efron ties). Groups with fewer
    than min_cell_size people are left out before fitting (their estimates are missing)."""
    spec = params["adherence_grouping"]
    group = params["group"]
    labels = [str(label) for label in spec["labels"]]
    cutoffs = [float(c) for c in spec["cutoffs"]]
    rows = []
    for shifted, moved in shifted_cutoffs(cutoffs, labels, spec["sensitivity_shifts"]):
        regrouped = with_group(regroup_adherence(recovery, moved, labels, group), params)
        sizes = regrouped[group].value_counts()
        kept = regrouped[regrouped[group].map(sizes) >= min_cell_size]
        medians = kaplan_meier(kept, DURATION, EVENT, group).medians.set_index("group")
        ratios = pd.DataFrame(columns=["term", "estimate", "conf_low", "conf_high"])
        if labels[0] in set(kept[group]) and kept[group].nunique() > 1:
            cox = fit_cox(kept, DURATION, EVENT, [group], reference_levels={group: labels[0]})
            ratios = cox.tidy()
        by_term = ratios.set_index("term")
        for level in labels:
            median = medians.loc[level] if level in medians.index else None
            ratio = (
                by_term.loc[f"{group}[{level}]"] if f"{group}[{level}]" in by_term.index else None
            )
            if level == labels[0] and median is not None:
                hazard_ratio = (1.0, np.nan, np.nan)  # the reference group
            elif ratio is None:
                hazard_ratio = (np.nan, np.nan, np.nan)
            else:
                hazard_ratio = np.exp(ratio[["estimate", "conf_low", "conf_high"]].to_numpy(float))
            if median is None:
                median = pd.Series({"median": np.nan, "conf_low": np.nan, "conf_high": np.nan})
            rows.append(
                {
                    "grouping": shifted,
                    "cutoffs": ", ".join(f"{c:g}" for c in moved),
                    "group": level,
                    "n": int(sizes.get(level, 0)),
                    "median": median["median"],
                    "median_conf_low": median["conf_low"],
                    "median_conf_high": median["conf_high"],
                    **dict(zip(HAZARD_RATIO_COLUMNS, hazard_ratio, strict=True)),
                }
            )
    return pd.DataFrame(rows)
