"""The `fit` stage: every model configured in params.yaml, run on the derived frames.

Each model family is one small function returning named tidy tables; `run_models` collects
them with the headline metrics and every note or warning a model raised, so a report can say
what was done. A model that fails is recorded as failed, and the others still run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.errors import GaRehabError
from analysis.mixed import (
    FITTED_VS_OBSERVED_COLUMNS,
    TimeBasis,
    fit_mixed,
    fitted_vs_observed,
    largest_gap,
)
from analysis.schema import EVENT_RECOVERED, Recovery, WeeklyIntervals, WeeklyTrajectories
from analysis.survival import (
    cumulative_incidence,
    fit_aft,
    fit_cox,
    fit_cox_time_varying,
    fit_fine_gray,
    kaplan_meier,
    logrank_test,
    rmst_difference,
    turnbull,
)

DURATION = Recovery.time_to_recovery_days
EVENT = Recovery.recovered
MODEL_NOTE_COLUMNS = ("model", "kind", "message")


@dataclass
class FitOutputs:
    """Tidy tables by name (written as reports/models/<name>.csv), metrics, and model notes."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    timeline_model: dict | None = None  # TimelineModel.to_dict(), for `ga-rehab timeline`

    def notes_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.notes, columns=list(MODEL_NOTE_COLUMNS))


def with_group(recovery: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Rows with a known comparison group (people with no adherence data cannot be grouped)."""
    return recovery[recovery[params["group"]].notna()]


def in_group_order(table: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Rows in the configured group order (low, moderate, high), not alphabetical."""
    rank = {group: position for position, group in enumerate(params["group_order"])}
    return table.sort_values("group", key=lambda groups: groups.map(rank)).reset_index(drop=True)


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
    rmst = rmst_difference(grouped, DURATION, EVENT, group, params["rmst_horizon_days"])
    outputs.tables["rmst_groups"] = in_group_order(rmst.per_group, params)
    outputs.tables["rmst_difference"] = rmst.tidy()
    outputs.metrics["km_median_days"] = {
        str(row.group): _finite(row.median) for row in km.medians.itertuples()
    }
    outputs.metrics["km_median_days_overall"] = _finite(overall.medians["median"].iloc[0])
    outputs.metrics["logrank_p_value"] = _finite(logrank.p_value)


def cox_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, params: dict, outputs: FitOutputs
) -> None:
    """Cox on baseline covariates (with its PH checks) and the time-varying weekly model."""
    cox = fit_cox(recovery, DURATION, EVENT, params["cox_covariates"])
    outputs.tables["cox"] = cox.tidy()
    outputs.tables["cox_ph_test"] = cox.proportional_hazards_test()
    outputs.metrics["cox_concordance"] = _finite(cox.concordance)
    outputs.metrics["cox_hazard_ratios"] = _hazard_ratios(cox.tidy())
    _record_notes(outputs, "cox", cox.notes)

    baseline = [c for c in params["time_varying_covariates"] if c not in intervals.columns]
    frame = intervals.merge(
        recovery[[Recovery.participant_id, *baseline]],
        on=WeeklyIntervals.participant_id,
        how="left",
    )
    frame = frame.assign(**{WeeklyIntervals.event: frame[WeeklyIntervals.event].astype(int)})
    time_varying = fit_cox_time_varying(
        frame,
        WeeklyIntervals.participant_id,
        "start",
        "stop",
        WeeklyIntervals.event,
        params["time_varying_covariates"],
    )
    outputs.tables["cox_time_varying"] = time_varying.tidy()
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


def interval_censored_frame(recovery: pd.DataFrame) -> pd.DataFrame:
    """People with any information on recovery; (0, inf) intervals tell nothing."""
    upper = recovery[Recovery.interval_upper_days]
    informative = upper.notna() | (recovery[Recovery.interval_lower_days] > 0)
    return recovery[informative]


def aft_models(recovery: pd.DataFrame, params: dict, outputs: FitOutputs) -> None:
    """The interval-censored AFT family, the best by AIC flagged."""
    frame = interval_censored_frame(recovery)
    fits, summaries, coefficients = {}, [], []
    for distribution in params["aft_distributions"]:
        fitted = _run(
            outputs,
            f"aft_{distribution}",
            lambda d=distribution: fit_aft(
                frame,
                params["aft_covariates"],
                distribution=d,
                lower=Recovery.interval_lower_days,
                upper=Recovery.interval_upper_days,
            ),
        )
        if fitted is None:
            continue
        fits[distribution] = fitted
        summaries.append(
            {
                "distribution": distribution,
                "n": fitted.n_observations,
                "log_likelihood": fitted.log_likelihood,
                "aic": fitted.aic,
                "scale": fitted.scale,
            }
        )
        coefficients.append(fitted.tidy().assign(distribution=distribution))
    if not fits:
        return
    table = pd.DataFrame(summaries)
    best = table.loc[table["aic"].idxmin(), "distribution"]
    outputs.tables["aft_models"] = table.assign(best_by_aic=table["distribution"] == best)
    outputs.tables["aft_coefficients"] = pd.concat(coefficients, ignore_index=True)
    outputs.metrics["aft_best_distribution"] = best


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
    """Cumulative incidence of recovery and withdrawal, and Fine-Gray for recovery."""
    cif = cumulative_incidence(
        with_group(recovery, params), DURATION, Recovery.event_type, group=params["group"]
    )
    outputs.tables["cumulative_incidence"] = cif.table
    fine_gray = fit_fine_gray(
        recovery, DURATION, Recovery.event_type, EVENT_RECOVERED, params["fine_gray_covariates"]
    )
    outputs.tables["fine_gray"] = fine_gray.tidy()
    outputs.metrics["fine_gray_subdistribution_hazard_ratios"] = _hazard_ratios(fine_gray.tidy())
    _record_notes(outputs, "fine_gray", fine_gray.notes)


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
            ),
        )
        if fitted is None:
            continue
        fixed.append(fitted.tidy().assign(outcome=outcome))
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
    """Calibrated recovery ranges per profile, the quoted ranges checked, calibration."""
    # Imported here: the timeline module builds on this module's analysis frames.
    from analysis.timeline import (
        calibration_diagnostics,
        compare_with_quoted_ranges,
        timeline_table,
    )

    timeline = timeline_table(recovery, params["timeline"], params["fit"], params["derive"])
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


def run_models(
    recovery: pd.DataFrame, intervals: pd.DataFrame, trajectories: pd.DataFrame, params: dict
) -> FitOutputs:
    """All configured models; each family's failure is recorded and the rest still run.

    `params` is the whole params.yaml: the `fit` block, plus `timeline` and `derive` for the
    calibrated recovery ranges.
    """
    fit_params = params["fit"]
    outputs = FitOutputs()
    outputs.metrics["participants"] = len(recovery)
    outputs.metrics["recovered"] = int(recovery[EVENT].sum())
    outputs.metrics["withdrawn"] = int((recovery[Recovery.event_type] == "withdrawn").sum())
    _run(outputs, "kaplan_meier", lambda: km_models(recovery, fit_params, outputs))
    _run(outputs, "cox", lambda: cox_models(recovery, intervals, fit_params, outputs))
    _run(outputs, "turnbull", lambda: turnbull_models(recovery, fit_params, outputs))
    _run(outputs, "competing_risks", lambda: competing_risk_models(recovery, fit_params, outputs))
    _run(outputs, "mixed", lambda: mixed_models(trajectories, fit_params, outputs))
    _run(outputs, "aft", lambda: aft_models(recovery, fit_params, outputs))
    _run(outputs, "timeline", lambda: timeline_models(recovery, params, outputs))
    outputs.tables["model_notes"] = outputs.notes_frame()
    return outputs


def _run(outputs: FitOutputs, model: str, fit: Callable):
    """Run one fit, turning its warnings into notes and a failure into a recorded note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit()
        except GaRehabError as error:
            outputs.notes.append((model, "failed", str(error)))
            result = None
    for warning in caught:
        outputs.notes.append((model, warning.category.__name__, str(warning.message)))
    return result


def _record_notes(outputs: FitOutputs, model: str, notes: list[str]) -> None:
    """Notes a result carries are already warnings caught by `_run`; keep them only once."""
    known = {(m, message) for m, _, message in outputs.notes}
    outputs.notes.extend((model, "note", n) for n in notes if (model, n) not in known)


def _hazard_ratios(tidy: pd.DataFrame) -> dict:
    return {row.term: _finite(row.hazard_ratio) for row in tidy.itertuples()}


def _finite(value) -> float | None:
    """JSON-safe number: NaN/inf (e.g. a median not reached) become null."""
    value = float(value)
    return value if np.isfinite(value) else None
