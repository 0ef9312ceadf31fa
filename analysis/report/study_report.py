"""Helpers of the study report (notebooks/study_report.ipynb, whole study or one site): the
primary analysis, milestones, cohort flow, trajectories and the methods table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.plots import weekly_means
from analysis.privacy import (
    CATEGORICAL_SUFFIX,
    PublishedTables,
    ReportCounts,
    enough_people,
    format_count,
    groups_to_suppress,
    mark,
    mask_small_counts_in_text,
    plan_report,
    publish_report,
    site_plan,
    suppress_small_cells,
    table_one_site_cells,
)
from analysis.report.comparison import (
    exact_outcome_counts,
    medians_for_report,
    without_groups,
)
from analysis.report.inputs import ReportInputs
from analysis.report.shared import profile_estimates_for_report, profile_estimates_text
from analysis.schema import (
    EVENT_TYPES,
    MILESTONES,
    Recovery,
    WeeklyTrajectories,
)
from analysis.tables import (
    DIFFERENCE_HEADER,
    FLOW_CHAIN,
    FLOW_OUTCOME_SUMS,
    OUTCOME_LABELS,
    TABLE_ONE_LABELS,
    RegressionTable,
    cohort_flow,
    exact_table_one,
    format_interval,
    format_tidy,
    level_label,
    merged_regression_table,
    readable_term,
)
from analysis.timeline import VERDICT_RULE

PRIMARY_HEADLINE_TERMS = ("weekly_adherence", "weekly_sitting_hours")


PRIMARY_COLUMNS = ("term", "unit", "hazard ratio (95% CI)", "interval", "p_value")


def primary_effects_for_report(effects: pd.DataFrame) -> pd.DataFrame:
    """The primary model's hazard ratios in clinical units, headline terms first."""
    order = {term: rank for rank, term in enumerate(PRIMARY_HEADLINE_TERMS)}
    ranked = effects.assign(
        _rank=effects["term"].map(order).fillna(len(order)), interval=effects["conf_method"]
    ).sort_values("_rank", kind="stable")
    return format_tidy(ranked.drop(columns="_rank"), columns=list(PRIMARY_COLUMNS))


def visit_day_sensitivity(
    primary: pd.DataFrame, visit_day: pd.DataFrame, units: Mapping
) -> pd.DataFrame:
    """Headline effects of the primary model beside the visit-day time-varying Cox model, both
    per the primary model's clinical unit (the Cox model's log-HR scaled by the same unit)."""
    rows = []
    for term in PRIMARY_HEADLINE_TERMS:
        if term not in set(primary["term"]) or term not in set(visit_day["term"]):
            continue
        per = float(units[term]["per"])
        naive = visit_day.set_index("term").loc[term]
        main = primary.set_index("term").loc[term]
        rows.append(
            {
                "term": term,
                "unit": units[term]["label"],
                "primary: interval-censored PH": format_interval(
                    main["hazard_ratio"], main["hr_conf_low"], main["hr_conf_high"]
                ),
                "sensitivity: Cox on the visit day": format_interval(
                    *np.exp(per * naive[["estimate", "conf_low", "conf_high"]].to_numpy(float))
                ),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["term"] = table["term"].map(readable_term)
    return table


VISIT_DAY_BIAS_TEXT = (
    "The visit-day Cox model is a sensitivity analysis, biased towards no effect: recovery is "
    "seen only at the next clinic visit, about two weeks after it happened, so the weeks in "
    "between count as weeks at risk with their adherence and sitting. Over 100 simulated "
    "studies it estimated the adherence log hazard ratio at 1.25 against a true 2.0, while the "
    "primary model's intervals covered the truth in 93-97 % of studies (docs/performance.md)."
)


def _follow_up_span(max_week) -> str:
    return "the whole follow-up" if max_week is None else f"weeks 0-{max_week}"


def lag_sensitivity_for_report(lags: pd.DataFrame) -> pd.DataFrame:
    """The headline effects of the primary model when exposures enter 0, 1, 2 weeks late."""
    headline = lags[lags["term"].isin(PRIMARY_HEADLINE_TERMS)]
    return format_tidy(
        headline, columns=["lag_weeks", "term", "unit", "hazard ratio (95% CI)", "p_value"]
    )


def milestone_effects_table(
    effects: pd.DataFrame, units: Mapping, min_cell_size: int
) -> RegressionTable:
    """The primary model per milestone side by side (first functional change, full recovery),
    each with its people and events, as the other regression tables read."""
    models = [
        (MILESTONES[name].label.capitalize(), rows.drop(columns="milestone"))
        for name, rows in effects.groupby("milestone", sort=False)
    ]
    return merged_regression_table(models, units, min_cell_size=min_cell_size)


def landmark_cox_table(
    landmark_cox: pd.DataFrame, units: Mapping, min_cell_size: int
) -> RegressionTable:
    """The landmark Cox models side by side, one per landmark week, each with the people still
    followed at its landmark and their recoveries."""
    models = [
        (f"Landmark at week {weeks:g}", rows.drop(columns="landmark_weeks"))
        for weeks, rows in landmark_cox.groupby("landmark_weeks", sort=True)
    ]
    table = merged_regression_table(models, units, min_cell_size=min_cell_size)
    table.notes.append(
        "Each model: people still followed at the landmark week, time counted from it; "
        "adherence is the mean weekly adherence before the landmark."
    )
    return table


def mixed_effects_table(fixed_effects: pd.DataFrame, min_cell_size: int) -> RegressionTable:
    """The mixed models' fixed effects side by side, one model per outcome (its unit in the
    header) with its people and weekly observations; levels against the reference group."""
    models = [
        (OUTCOME_LABELS.get(outcome, readable_term(outcome)), rows.drop(columns="outcome"))
        for outcome, rows in fixed_effects.groupby("outcome", sort=False)
    ]
    table = merged_regression_table(
        models,
        estimate_header=DIFFERENCE_HEADER,
        exponentiate=False,
        min_cell_size=min_cell_size,
    )
    table.notes.append(
        "Week enters as a straight line plus natural-spline basis columns: read those "
        "coefficients together, as the fitted lines in the figure, not one by one. p-values from "
        "t on Satterthwaite degrees of freedom (as lmerTest)."
    )
    return table


def milestone_medians_for_report(medians: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Kaplan-Meier medians of both milestones (days and weeks), small groups suppressed."""
    shown = medians_for_report(medians, min_cell_size)
    return shown[["milestone", *[c for c in shown.columns if c != "milestone"]]]


# A site coded as "site_B" or "site B": its title drops the repeated word's underscore.
_CODED_SITE = re.compile(r"site[_ ](\S+)", re.IGNORECASE)


def site_label(site: str) -> str:
    """A site as a title names it: "site_B" -> "Site B"; any other name exactly as recorded
    (two sites must never read the same)."""
    coded = _CODED_SITE.fullmatch(str(site))
    return f"Site {coded.group(1)}" if coded else str(site)


def study_report_title(site: str | None) -> str:
    """The report's heading (Markdown)."""
    scope = "whole study" if site is None else site_label(site)
    return f"# Gluteal-amnesia rehabilitation cohort: study report, {scope}"


# The study report's section headings (the notebook's Markdown cells), by role: the STROBE
# table refers to them, and the HTML export numbers them and links the references.
SECTIONS = {
    "findings": "Key findings",
    "primary": "Main answer: adherence and sitting (primary analysis)",
    "milestones": "Two milestones: first functional change and full recovery",
    "flow": "Cohort flow",
    "table_one": "Table 1: participants by adherence group",
    "km": "Time to recovery by adherence group",
    "turnbull": "Interval-censored estimate (Turnbull) beside Kaplan-Meier",
    "cox": "Cox proportional hazards",
    "visit_day": "Sensitivity: time-varying Cox on the visit day",
    "landmark": "Landmark analysis: adherence over the first weeks",
    "competing": "Competing risks: recovery and withdrawal",
    "trajectories": "Pain and strength over the weeks",
    "methods": "Methods",
    "notes": "Model notes",
    "strobe": "Reporting checklist: STROBE items 13-17",
    "provenance": "Provenance",
}


def section_reference(role: str) -> str:
    """A reference to a section that the HTML export turns into its number and a link."""
    return f"§[{SECTIONS[role]}]"


STROBE_ITEMS = (
    (
        13,
        "Participants",
        "numbers at each stage (enrolled, analysed, how follow-up ended), flow diagram",
        ("flow",),
    ),
    (
        14,
        "Descriptive data",
        "characteristics of participants by adherence group, missing data per variable, "
        "follow-up time",
        ("table_one",),
    ),
    (
        15,
        "Outcome data",
        "recoveries, withdrawals and censoring by group; time to recovery over follow-up",
        ("flow", "km"),
    ),
    (
        16,
        "Main results",
        "adjusted estimates with 95% CIs (primary model, Cox) beside the unadjusted ones; "
        "category boundaries (adherence groups, sitting bands)",
        ("findings", "primary", "cox", "methods"),
    ),
    (
        17,
        "Other analyses",
        "sensitivity analyses (visit-day Cox, exposure lags, Turnbull, landmark, competing "
        "risks), milestones, trajectories; the adherence cut-offs in adherence_groups.html",
        ("milestones", "turnbull", "visit_day", "landmark", "competing", "trajectories"),
    ),
)


def strobe_table() -> pd.DataFrame:
    """Where this report covers STROBE items 13-17 (sections referenced by number)."""
    return pd.DataFrame(
        [
            {
                "STROBE item": item,
                "topic": topic,
                "what is reported": what,
                "where": "; ".join(section_reference(role) for role in roles),
            }
            for item, topic, what, roles in STROBE_ITEMS
        ]
    )


def count_tables(
    study: ReportInputs, scope: ReportInputs, group: str, group_order: Sequence, min_cell_size: int
) -> PublishedTables:
    """The report's outcomes by group, Table 1 and (whole study) cohort flow, planned at once
    (`privacy.plan_report`) so that no hidden count follows from the others by subtraction.

    The whole-study Table 1 also hides, in its site rows, what the site plan hides (the site
    reports leave those groups out): `study` is the whole study, `scope` the report's people.
    """
    params = {"min_cell_size": min_cell_size, "group_order": group_order}
    flat, groups = exact_table_one(scope.recovery, group, params)
    whole_study = scope.site is None
    decided = set()
    if whole_study:
        _, plan = site_plan(study.recovery, Recovery.site, group, min_cell_size)
        decided = table_one_site_cells(plan, TABLE_ONE_LABELS[Recovery.site] + CATEGORICAL_SUFFIX)
    tables = ReportCounts(
        outcomes=exact_outcome_counts(scope.recovery, group, group_order),
        outcome_parts=EVENT_TYPES,
        table_one=flat,
        table_one_groups=tuple(groups),
        flow=cohort_flow(scope.cleaning_report, scope.recovery, group) if whole_study else None,
        flow_chain=FLOW_CHAIN,
        flow_sums=FLOW_OUTCOME_SUMS,
    )
    return publish_report(tables, plan_report(tables, min_cell_size, decided))


def groups_shown(recovery: pd.DataFrame, group: str, min_cell_size: int) -> list:
    """Groups with at least min_cell_size people (the ones a figure may draw)."""
    hidden = set(groups_to_suppress(recovery, group, min_cell_size))
    return sorted(
        (level for level in recovery[group].dropna().unique() if level not in hidden), key=str
    )


def mixed_predictions_for_report(
    models: Mapping[str, pd.DataFrame], group: str, min_n: int
) -> pd.DataFrame:
    """The mixed models' fitted lines, each group's up to its last week of the first run of
    weeks in which at least `min_n` of its people were observed (mixed_fitted_vs_observed's
    n); or an empty frame of that shape where none were fitted.

    People leave follow-up as they recover, so a group's last weeks hold a handful of people,
    and its line there (week enters as a spline, by group) follows them, not the group: on the
    default study the high-adherence line for low-back pain climbed from 0.5 to 6 after week
    28, where fewer than 20 people were left.
    """
    columns = [WeeklyTrajectories.week, group, "outcome", "fitted"]
    if "mixed_predictions" not in models:
        return pd.DataFrame(columns=columns)
    predictions = models["mixed_predictions"]
    counts = models["mixed_fitted_vs_observed"].rename(columns={"group": group})
    keys = ["outcome", group]
    counts = counts.sort_values([*keys, WeeklyTrajectories.week])
    # Weeks before a group's first week with fewer than min_n observed people.
    enough = counts["n"].ge(min_n).astype(int).groupby([counts[key] for key in keys]).cummin()
    last_week = counts[enough.astype(bool)].groupby(keys)[WeeklyTrajectories.week].max()
    shown = predictions.merge(last_week.rename("last_week").reset_index(), on=keys)
    return shown[shown[WeeklyTrajectories.week] <= shown["last_week"]][columns].reset_index(
        drop=True
    )


def mixed_fit_summary(fitted_vs_observed: pd.DataFrame, min_n: int) -> pd.DataFrame:
    """Per outcome: cells (week x group) of >= min_n people, how many have the fitted mean
    (with each person's random effects) inside the observed mean's 95 % CI, the largest gap."""
    busy = fitted_vs_observed[fitted_vs_observed["n"] >= min_n]
    rows = []
    for outcome, cells in busy.groupby("outcome", sort=False):
        largest = cells.loc[cells["gap"].abs().idxmax()]
        rows.append(
            {
                "outcome": outcome,
                "cells": len(cells),
                "inside observed 95% CI": int(cells["within_interval"].sum()),
                "largest gap (fitted - observed)": float(largest["gap"]),
                "at week": int(largest["week"]),
            }
        )
    return pd.DataFrame(rows)


def trajectory_means(
    trajectories: pd.DataFrame,
    outcomes: Sequence[str],
    group: str,
    min_cell_size: int,
    max_week: int | None = None,
) -> pd.DataFrame:
    """Observed weekly mean (95% CI half-width) per group and outcome; means of < k hidden."""

    frame = trajectories
    if max_week is not None:
        frame = frame[frame[WeeklyTrajectories.week] <= max_week]
    parts = [
        weekly_means(frame, outcome, group).assign(outcome=outcome)
        for outcome in outcomes
        if outcome in frame
    ]
    if not parts:
        return pd.DataFrame(columns=["outcome", "group", "week", "n", "mean", "half_width"])
    table = pd.concat(parts, ignore_index=True).rename(columns={group: "group"})
    table = table[["outcome", "group", "week", "n", "mean", "std", "half_width"]]
    return suppress_small_cells(
        table, ["n"], min_cell_size, estimate_columns=["mean", "std", "half_width"]
    )


def model_specifications(study_params: Mapping) -> pd.DataFrame:
    """One row per model or definition (what, specification) from params.yaml, for the methods."""
    fit = study_params.get("fit", {})
    derive = study_params.get("derive", {})
    recovery = derive.get("recovery", {})
    adherence = derive.get("adherence", {})
    sitting = derive.get("sitting", {})
    mixed = fit.get("mixed", {})
    timeline = study_params.get("timeline", {})
    report = study_params.get("report", {})

    def listed(values) -> str:
        return ", ".join(str(v) for v in values or [])

    rows = [
        (
            "Recovery",
            f"first clinic visit with phase >= {recovery.get('min_phase')}, mean "
            f"secondary pain over the prior {recovery.get('pain_window_days')} days <= "
            f"{recovery.get('max_secondary_pain')} on every site"
            + (", clinician agrees" if recovery.get("require_clinician") else "")
            + "; known to lie between the previous visit and this one",
        ),
        (
            "Follow-up",
            f"{derive.get('follow_up_days')} days from enrolment; lost to follow-up "
            f"after {derive.get('lost_after_days_without_contact')} days without contact; "
            "withdrawal is a competing event (censored in Kaplan-Meier and Cox)",
        ),
        (
            "Adherence groups",
            f"overall completed/prescribed sessions, cut-offs "
            f"{listed(adherence.get('group_cutoffs'))} -> {listed(adherence.get('group_labels'))}; "
            f"prescribed per week by phase {adherence.get('prescribed_sessions_per_week')}",
        ),
        (
            "Sitting bands",
            f"mean daily hours, cut-offs {listed(sitting.get('band_cutoffs'))} -> "
            f"{listed(sitting.get('band_labels'))}",
        ),
        ("Chronic", f"symptoms for more than {derive.get('chronic_after_months')} months"),
        (
            "Kaplan-Meier",
            f"time to recovery by {fit.get('group')}; numbers at risk at days "
            f"{listed(fit.get('km_times_days'))}",
        ),
        (
            "Log-rank",
            f"by {fit.get('group')}, unstratified and stratified by "
            f"{fit.get('stratify_logrank_by')}",
        ),
        (
            "RMST",
            f"restricted mean time to recovery up to day {fit.get('rmst_horizon_days')}, "
            "difference against the first group in the table",
        ),
        (
            "Cox",
            f"baseline covariates: {listed(fit.get('cox_covariates'))}; proportional "
            "hazards checked with scaled Schoenfeld residuals (KM time transform)",
        ),
        (
            "Time-varying Cox",
            f"weekly start/stop intervals; covariates: "
            f"{listed(fit.get('time_varying_covariates'))}",
        ),
        (
            "Landmark",
            f"adherence over the weeks before each landmark (weeks "
            f"{listed(fit.get('landmark', {}).get('weeks'))}), follow-up from the landmark on "
            "for the people still followed then; Cox with "
            f"{listed(fit.get('landmark', {}).get('cox_covariates'))}",
        ),
        (
            "Turnbull",
            "NPMLE of time to recovery from the interval (previous visit, recovery visit]",
        ),
        (
            "Competing risks",
            f"Aalen-Johansen cumulative incidence of recovery and withdrawal; "
            f"Fine-Gray for recovery with {listed(fit.get('fine_gray_covariates'))}",
        ),
        (
            "Interval-censored AFT",
            f"{listed(fit.get('aft_distributions'))} with "
            f"{listed(fit.get('aft_covariates'))}; lowest AIC chosen",
        ),
        (
            "Mixed models",
            f"{listed(mixed.get('outcomes'))} ~ {mixed.get('fixed')}, random "
            f"{mixed.get('random')} per participant, REML={mixed.get('reml')}; week as a "
            f"{mixed.get('time_basis')} with knots at weeks {listed(mixed.get('time_knots'))}, "
            f"{_follow_up_span(mixed.get('max_week'))}; "
            "Satterthwaite degrees of freedom for the fixed effects (as lmerTest)",
        ),
        (
            "Recovery timeline",
            f"profiles over {listed(timeline.get('profile_dimensions'))}; "
            f"quantiles {listed(timeline.get('quantiles'))}; {timeline.get('bootstrap_samples')} "
            f"bootstrap samples; {timeline.get('calibration_folds')}-fold calibration at weeks "
            f"{listed(timeline.get('calibration_weeks'))}",
        ),
        (
            "Small cells",
            f"counts of 1 to {report['min_cell_size'] - 1} shown as <{report['min_cell_size']} "
            f"(fewer than {report['min_cell_size']}), further counts hidden where subtraction "
            "would give them back; estimates resting on them blanked, such groups not drawn; "
            "a site report leaves out the groups of the study's site plan",
        ),
    ]
    return pd.DataFrame(rows, columns=["item", "specification"])


# --- key findings: sentences written from the fit stage's tables (nothing is fitted here) -----

DAYS_PER_WEEK = 7

INTERVAL_CENSORING_LIMITATION = (
    "Recovery is detected only at clinic visits, so each time is known only to lie between two "
    "visits (interval-censored); the primary model uses that interval, while the Kaplan-Meier "
    "medians date recovery on the detecting visit and so run late by up to one visit gap."
)


def fewer_than(min_cell_size: int) -> str:
    """How prose names a hidden count: "fewer than 5" (never the "<5" of a table cell)."""
    return f"fewer than {min_cell_size}"


def count_text(value, min_cell_size: int) -> str:
    """A count for prose, through the privacy rule: "fewer than 5" when it is sensitive."""
    shown = format_count(value, min_cell_size)
    return fewer_than(min_cell_size) if shown == mark(min_cell_size) else shown


def _hr_text(hazard_ratio, low, high, unit: str) -> str:
    return f"{hazard_ratio:.2f} (95% CI {low:.2f} to {high:.2f}) {unit}".rstrip()


def _limit_weeks(days) -> str:
    """A CI limit in weeks; a missing one is a median not reached in the resamples."""
    return "not estimable" if pd.isna(days) else _weeks(days)


def _weeks(days) -> str:
    return f"{float(days) / DAYS_PER_WEEK:.1f}"


def headline_effect_sentences(primary_effects: pd.DataFrame, min_cell_size: int) -> list[str]:
    """Adherence and sitting from the primary model, in the clinical unit the table carries."""
    names = {
        "weekly_adherence": "More weekly adherence",
        "weekly_sitting_hours": "More daily sitting",
    }
    rows = primary_effects.set_index("term")
    sentences = []
    for term in PRIMARY_HEADLINE_TERMS:
        if term not in rows.index:
            continue
        row = rows.loc[term]
        direction = "faster" if row["hazard_ratio"] > 1 else "slower"
        sentences.append(
            f"{names[term]} means {direction} recovery: hazard ratio of recovery "
            f"{_hr_text(row['hazard_ratio'], row['hr_conf_low'], row['hr_conf_high'], row['unit'])}"
            f" (primary interval-censored model: {count_text(row['n'], min_cell_size)} people, "
            f"{count_text(row['events'], min_cell_size)} recoveries)."
        )
    return sentences


def factor_effect_sentences(primary_effects: pd.DataFrame) -> list[str]:
    """Each baseline factor's hazard ratios against its reference level (the `reference` row)."""
    factors = primary_effects[primary_effects["term"].str.contains(r"\[", regex=True)]
    variable = factors["term"].str.extract(r"^(.*)\[(.*)\]$")
    sentences = []
    for name in dict.fromkeys(variable[0]):
        rows = factors[variable[0] == name]
        is_reference = rows["reference"].astype(str).str.lower() == "true"
        if not is_reference.any():
            continue
        # Each level against the reference, in the tables' words ("chronic vs recent").
        reference = variable.loc[rows.index[is_reference], 1].iloc[0]
        others = [
            f"{level_label(name, level)} vs {level_label(name, reference)} "
            f"{_hr_text(row.hazard_ratio, row.hr_conf_low, row.hr_conf_high, '')}"
            for (_, row), level in zip(
                rows[~is_reference].iterrows(),
                variable.loc[rows.index[~is_reference], 1],
                strict=True,
            )
        ]
        sentences.append(
            f"{readable_term(name)}, hazard ratio of recovery against the reference level: "
            f"{'; '.join(others)}."
        )
    return sentences


def median_sentences(
    km_medians: pd.DataFrame,
    median_difference: pd.DataFrame | None,
    rmst_difference: pd.DataFrame | None,
    rmst_groups: pd.DataFrame | None,
    min_cell_size: int,
) -> list[str]:
    """Median weeks to recovery per group (Kaplan-Meier, 95% CI), the differences of medians
    against the reference group (bootstrap 95% CI) and the RMST differences."""
    parts = []
    for row in km_medians[km_medians["group"].astype(str) != "all"].itertuples():
        if not enough_people(pd.Series([row.n]), min_cell_size).iloc[0]:
            parts.append(f"{row.group} not shown ({fewer_than(min_cell_size)} people)")
        elif pd.isna(row.median):
            parts.append(f"{row.group} not reached")
        else:
            low = "not estimable" if pd.isna(row.conf_low) else _weeks(row.conf_low)
            high = "not reached" if pd.isna(row.conf_high) else _weeks(row.conf_high)
            parts.append(f"{row.group} {_weeks(row.median)} weeks (95% CI {low} to {high})")
    if not parts:
        return []
    sentences = [
        "Median weeks to recovery by adherence group (Kaplan-Meier, recovery dated on the "
        f"detecting visit): {'; '.join(parts)}."
    ]
    small = set(km_medians.loc[km_medians["n"] < min_cell_size, "group"].astype(str))
    if median_difference is not None:
        median_difference = without_groups(median_difference, small)
    if rmst_difference is not None:
        rmst_difference = without_groups(rmst_difference, small)
    if median_difference is not None and not median_difference.empty:
        differences = "; ".join(
            f"{row.term.replace(' - ', ' minus ')} "
            + (
                "not estimable (a median is not reached)"
                if pd.isna(row.estimate)
                else f"{_weeks(row.estimate)} weeks (95% CI {_limit_weeks(row.conf_low)} to "
                f"{_limit_weeks(row.conf_high)})"
            )
            for row in median_difference.itertuples()
        )
        sentences.append(
            f"Difference in median weeks to recovery (bootstrap 95% CI): {differences}."
        )
    if rmst_difference is not None and rmst_groups is not None and not rmst_difference.empty:
        horizon = f"{float(rmst_groups['horizon'].iloc[0]) / DAYS_PER_WEEK:g}"
        differences = "; ".join(
            f"{row.term.replace(' - ', ' minus ')} {_weeks(row.estimate)} weeks "
            f"(95% CI {_weeks(row.conf_low)} to "
            f"{_weeks(row.conf_high)})"
            for row in rmst_difference.itertuples()
        )
        sentences.append(
            f"Difference in restricted mean time to recovery up to week {horizon} (RMST): "
            f"{differences}."
        )
    return sentences


def _readable(text: str) -> str:
    """Level names as words ("nerve_entrapment" -> "nerve entrapment")."""
    return text.replace("_", " ")


def _agreement(verdict) -> str:
    return {
        "agree": "the data agree",
        "disagree": "the data disagree",
        "inconclusive": "inconclusive (the interval reaches across an end of the quoted range)",
        "undetermined": "undetermined (no estimate)",
    }.get(str(verdict), str(verdict))


def _weeks_interval(estimate: float, low: float, high: float) -> str:
    def weeks(value: float) -> str:
        return "beyond follow-up" if np.isinf(value) else f"{value:.1f}"

    return f"{weeks(estimate)} weeks (95% CI {weeks(low)} to {weeks(high)})"


def timeline_sentences(
    milestone_ranges: pd.DataFrame | None,
    timeline_ranges: pd.DataFrame | None,
    min_cell_size: int,
) -> list[str]:
    """The quoted ranges beside the data's estimates and their 95% CIs, each with its verdict
    (VERDICT_RULE, said once); a claim about fewer than min_cell_size people gets no estimate.
    Where the study and timeline reports give three estimates for one profile, they are set
    side by side."""
    sentences = []
    if timeline_ranges is not None:
        masked = mask_small_counts_in_text(timeline_ranges, min_cell_size)
        for row in masked.itertuples():
            observed = re.sub(
                re.escape(mark(min_cell_size)), fewer_than(min_cell_size), str(row.observed)
            )
            sentences.append(
                _readable(
                    f"Quoted: {row.claim} ({row.quoted}). Timeline model and data: {observed}: "
                    f"{_agreement(row.verdict)}."
                )
            )
    if milestone_ranges is not None:
        for row in milestone_ranges.itertuples():
            high = "" if np.isinf(row.quoted_high_weeks) else f"-{row.quoted_high_weeks:g}"
            quoted = f"{row.quoted_low_weeks:g}{high or '+'} weeks"
            if not enough_people(pd.Series([row.people]), min_cell_size).iloc[0]:
                sentences.append(
                    f"Quoted: {row.claim} ({quoted}). Not checked: it concerns "
                    f"{fewer_than(min_cell_size)} people."
                )
                continue
            sentences.append(
                f"Quoted: {row.claim} ({quoted}). Interval-censored (Turnbull) estimate "
                f"({row.milestone.replace('_', ' ')}, {row.quantile:g} quantile, "
                f"{count_text(row.people, min_cell_size)} people): "
                f"{_weeks_interval(row.estimate_weeks, row.conf_low_weeks, row.conf_high_weeks)}"
                f": {_agreement(row.verdict)}."
            )
    if milestone_ranges is not None and timeline_ranges is not None:
        side_by_side = profile_estimates_for_report(
            milestone_ranges, timeline_ranges, min_cell_size
        )
        shown = side_by_side[side_by_side["median weeks (95% CI)"] != ""]
        if len(shown) > 1:
            sentences.append(
                "One profile, full recovery, estimated three ways: "
                + "; ".join(
                    f"{row.estimate}, {row['median weeks (95% CI)']}" for _, row in shown.iterrows()
                )
                + f". {profile_estimates_text(milestone_ranges)}"
            )
    if sentences:
        sentences.insert(0, f"Each verdict rests on the estimate's 95% CI: {VERDICT_RULE}.")
    return sentences


def dropout_sentence(outcomes: pd.DataFrame, min_cell_size: int) -> str | None:
    """Withdrawals per adherence group from the (already suppressed) outcomes table; a hidden
    count is named as hidden, never printed."""
    if "withdrawn" not in outcomes or outcomes.empty:
        return None
    parts = []
    for row in outcomes.itertuples():
        withdrawn, total = row.withdrawn, row.n
        if withdrawn == mark(min_cell_size):
            parts.append(f"{row.group} {fewer_than(min_cell_size)}")
        elif isinstance(withdrawn, str) or isinstance(total, str):
            # A complementary cell: not small itself, hidden so a small one cannot be worked out.
            parts.append(f"{row.group} not shown (it would reveal a small count)")
        else:
            share = 100 * withdrawn / total if total else 0
            parts.append(
                f"{row.group} {count_text(withdrawn, min_cell_size)} of "
                f"{count_text(total, min_cell_size)} ({share:.0f}%)"
            )
    return (
        "Dropout differs between groups and may bias the comparison (withdrawal is censored in "
        f"Kaplan-Meier and Cox, a competing event in Fine-Gray): withdrew {'; '.join(parts)}."
    )


def key_findings(
    models: Mapping[str, pd.DataFrame], outcomes: pd.DataFrame, min_cell_size: int
) -> dict[str, list[str]]:
    """The key findings, by heading, written from the fit stage's tables only; a heading
    without the tables it needs is left out (a site report has no primary model)."""
    findings: dict[str, list[str]] = {}
    primary = models.get("primary_effects")
    if primary is not None:
        findings["Adherence and sitting"] = headline_effect_sentences(primary, min_cell_size)
        findings["Severity, duration and underlying condition"] = factor_effect_sentences(primary)
    if "km_medians" in models:
        findings["Time to recovery by adherence group"] = median_sentences(
            models["km_medians"],
            models.get("km_median_difference"),
            models.get("rmst_difference"),
            models.get("rmst_groups"),
            min_cell_size,
        )
    findings["Quoted timelines against the data"] = timeline_sentences(
        models.get("milestone_quoted_ranges"), models.get("timeline_quoted_ranges"), min_cell_size
    )
    dropout = dropout_sentence(outcomes, min_cell_size)
    findings["Main limitations"] = [
        *([dropout] if dropout else []),
        INTERVAL_CENSORING_LIMITATION,
    ]
    return {heading: sentences for heading, sentences in findings.items() if sentences}


def key_findings_markdown(
    models: Mapping[str, pd.DataFrame], outcomes: pd.DataFrame, min_cell_size: int
) -> str:
    """The key findings as Markdown: a bold lead per heading, one bullet per sentence."""
    lines = []
    for heading, sentences in key_findings(models, outcomes, min_cell_size).items():
        lines.append(f"**{heading}**\n")
        lines.extend(f"- {sentence}" for sentence in sentences)
        lines.append("")
    return "\n".join(lines)
