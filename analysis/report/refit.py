"""TEMPORARY: the refits still done in the report layer (moved to the fit stage next)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import GaRehabError, ParameterError
from analysis.fit import (
    FitOutputs,
    baseline_cox_model,
    cox_models,
    interval_censored_frame,
    km_models,
    with_group,
)
from analysis.plots import WHOLE_COHORT
from analysis.privacy import DEFAULT_MIN_CELL_SIZE
from analysis.report.shared import unique_notes
from analysis.schema import (
    Recovery,
    WeeklyIntervals,
)
from analysis.survival import cumulative_incidence, kaplan_meier, turnbull
from analysis.tables import (
    groups_to_suppress,
)


def regroup_adherence(
    recovery: pd.DataFrame,
    cutoffs: Sequence[float],
    labels: Sequence[str],
    column: str = Recovery.adherence_group,
) -> pd.DataFrame:
    """A copy with `column` recomputed from overall adherence: [-inf, c1) -> labels[0], ...

    Bands are left-closed as in derive; people with no adherence data stay ungrouped.
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
    bands = pd.cut(
        recovery[Recovery.overall_adherence],
        bins=[-np.inf, *cutoffs, np.inf],
        labels=labels,
        right=False,
    ).astype(object)
    return recovery.assign(**{column: bands.where(bands.notna(), None)})


def _collect(notes: list[tuple[str, str, str]], model: str, fit: Callable):
    """Run one fit; its warnings become notes and a toolkit error a "failed" note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit()
        except GaRehabError as error:
            notes.append((model, "failed", str(error)))
            result = None
    notes.extend((model, w.category.__name__, str(w.message)) for w in caught)
    return result


def group_comparison(
    recovery: pd.DataFrame,
    fit_params: Mapping,
    group: str | None = None,
    min_cell_size: int = DEFAULT_MIN_CELL_SIZE,
    intervals: pd.DataFrame | None = None,
    cox_covariates: Sequence[str] | None = None,
    turnbull_overall: bool = False,
) -> dict[str, pd.DataFrame]:
    """KM, log-rank, RMST, Cox and cumulative incidence by `group`, named as the fit stage's.

    For a subset (a site) or a regrouping. Groups with fewer than min_cell_size people are
    left out before fitting, so no estimate rests on them (listed in `suppressed_groups`).
    The time-varying Cox model is fitted only when `intervals` is given, the whole-cohort
    Turnbull curve only with `turnbull_overall`; Fine-Gray and the mixed models are
    whole-study models and are not refitted. `cox_covariates` replaces fit.cox_covariates
    (e.g. to put the group itself in the model).
    """

    params = dict(fit_params)
    group = group or params["group"]
    params["group"] = group
    if cox_covariates is not None:
        params["cox_covariates"] = list(cox_covariates)
    suppressed = groups_to_suppress(recovery, group, min_cell_size)
    frame = recovery[~recovery[group].isin(suppressed)]
    outputs = FitOutputs()
    _collect(outputs.notes, "kaplan_meier", lambda: km_models(frame, params, outputs))
    if turnbull_overall:
        # The whole-cohort curve describes everyone, small groups included (none is shown).
        _collect(outputs.notes, "turnbull", lambda: _turnbull_overall(recovery, outputs))
    if intervals is not None:
        ids = frame[Recovery.participant_id]
        kept = intervals[intervals[WeeklyIntervals.participant_id].isin(ids)]
        _collect(outputs.notes, "cox", lambda: cox_models(frame, kept, params, outputs))
    else:
        _collect(outputs.notes, "cox", lambda: baseline_cox_model(frame, params, outputs))
    _collect(
        outputs.notes,
        "cumulative_incidence",
        lambda: _cumulative_incidence_only(frame, params, outputs),
    )
    tables = dict(outputs.tables)
    tables["model_notes"] = unique_notes(outputs.notes_frame())
    tables["model_status"] = outputs.status_frame()
    tables["suppressed_groups"] = pd.DataFrame({"group": suppressed}, dtype=object)
    return tables


def _turnbull_overall(frame: pd.DataFrame, outputs) -> None:

    informative = interval_censored_frame(frame)
    if informative.empty:
        return
    result = turnbull(informative, Recovery.interval_lower_days, Recovery.interval_upper_days)
    outputs.tables["turnbull_curves"] = result.curves


def _cumulative_incidence_only(frame: pd.DataFrame, params: Mapping, outputs) -> None:

    outputs.tables["cumulative_incidence"] = cumulative_incidence(
        with_group(frame, params),
        Recovery.time_to_recovery_days,
        Recovery.event_type,
        group=params["group"],
    ).table


def cox_covariates_for_groups(fit_params: Mapping, group: str) -> list[str]:
    """fit.cox_covariates with the group in place of overall adherence (which defines it)."""
    others = [
        c for c in fit_params["cox_covariates"] if c not in (Recovery.overall_adherence, group)
    ]
    return [group, *others]


def overall_km_curves(recovery: pd.DataFrame) -> pd.DataFrame:
    """Kaplan-Meier curve of the whole cohort, group "all" (for the Turnbull comparison)."""

    with warnings.catch_warnings():
        # A dropped-row note here repeats the fit stage's, listed in the model notes.
        warnings.simplefilter("ignore", category=Warning)
        result = kaplan_meier(recovery, Recovery.time_to_recovery_days, Recovery.recovered)
    return result.curves.assign(group=WHOLE_COHORT)
