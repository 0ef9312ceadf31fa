"""The group-comparison sections the study report and the adherence report share: who is in
the comparison, how follow-up ended per group, Kaplan-Meier curves, numbers at risk, medians
and RMST, ready to save and show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import ReportError
from analysis.model_tables import SUPPRESSED_GROUPS
from analysis.plots import ordered_groups
from analysis.privacy import (
    OUTCOMES_LABEL,
    OUTCOMES_TABLE,
    OUTCOMES_TOTAL,
    SUPPRESSED_COLUMN,
    groups_to_suppress,
    suppress_small_cells,
    suppress_with_row_totals,
)
from analysis.schema import (
    DAYS_PER_WEEK,
    EVENT_TYPES,
    Recovery,
)
from analysis.tables import (
    STAGE_ANALYSED,
    format_interval,
    format_p_value,
)


def left_out_groups(
    models: Mapping[str, pd.DataFrame],
    recovery: pd.DataFrame,
    group: str,
    min_cell_size: int,
    planned: Sequence | None = None,
) -> list:
    """The groups a comparison leaves out: those with fewer than min_cell_size people, or, for a
    site, the `planned` ones (the site plan's, `ReportInputs.left_out`).

    Where the fit stage fitted the comparison on a subset or a regrouping, it left groups out
    with params.yaml's report.min_cell_size (table suppressed_groups): a report run with another
    threshold would show models resting on groups it hides, so it is a ReportError.
    """
    if planned is None:
        ours = groups_to_suppress(recovery, group, min_cell_size)
    else:
        ours = sorted(planned, key=str)
    fitted = models.get(SUPPRESSED_GROUPS)
    if fitted is not None and sorted(map(str, fitted["group"])) != sorted(map(str, ours)):
        listed = ", ".join(map(str, fitted["group"])) or "none"
        raise ReportError(
            f"the fit stage left out group(s) {listed} (report.min_cell_size in params.yaml), "
            f"but min_cell_size={min_cell_size} leaves out {', '.join(map(str, ours)) or 'none'}: "
            "fit and report with the same min_cell_size"
        )
    return ours


def cohort_sentence(
    recovery: pd.DataFrame,
    group: str,
    suppressed: Sequence,
    min_cell_size: int,
    group_order: Sequence | None = None,
    at_site: bool = False,
    flow: pd.DataFrame | None = None,
) -> str:
    """One sentence on who is in the report and which groups are hidden for small numbers.

    `at_site`: a site report, whose `recovery` holds only the groups it shows; it does not say
    how many people the left-out groups have (nor the site's size, which would say it).
    `flow`: the published cohort flow, whose number analysed the sentence repeats.
    """
    grouped = recovery[recovery[group].notna()]
    label = group.replace("_", " ")
    names = ", ".join(str(level) for level in ordered_groups(suppressed, group_order))
    times = "Times are days (or weeks) since each participant's enrolment."
    if at_site:
        text = f"{len(grouped)} participants in the {label}s shown. {times}"
        if len(suppressed):
            text += (
                f" Left out of this report, people and all: {label} {names}. At a site, a "
                f"group of fewer than {min_cell_size} participants is left out, and so is any "
                "group whose size would give such a number back when this report is read "
                "with the whole-study report and the other sites' reports."
            )
        return text
    known = len(grouped)
    if flow is not None:
        # The flow's count, which its plan may hide (a small group's size would follow).
        known = flow.loc[flow["stage"] == STAGE_ANALYSED, "n"].iloc[0]
    text = (
        f"{len(recovery)} participants; {known} with a known {label}. {times}"
        if isinstance(known, int | np.integer)
        else f"Participants and their {label}s: see the cohort flow. {times}"
    )
    if len(suppressed):
        text += (
            f" Group(s) {names} had fewer than {min_cell_size} participants: they are left out "
            "of every table, figure and model below."
        )
    return text


def exact_outcome_counts(recovery: pd.DataFrame, group: str, group_order: Sequence) -> pd.DataFrame:
    """People per group by how follow-up ended, exact (NOT for publishing: plan it first)."""
    frame = recovery[recovery[group].notna()]
    counts = pd.crosstab(frame[group], frame[Recovery.event_type]).reindex(
        columns=list(EVENT_TYPES), fill_value=0
    )
    order = [g for g in group_order if g in counts.index]
    counts = counts.reindex(order + sorted(set(counts.index) - set(order), key=str))
    counts.insert(0, OUTCOMES_TOTAL, counts.sum(axis=1))
    table = counts.reset_index().rename(columns={group: OUTCOMES_LABEL})
    table.columns.name = None
    return table


def outcome_counts(
    recovery: pd.DataFrame, group: str, group_order: Sequence, min_cell_size: int
) -> pd.DataFrame:
    """People per group by how follow-up ended, counts below min_cell_size hidden, for a report
    without a flow or Table 1 of the same people (the study report plans all three at once:
    `study_report.count_tables`)."""
    # A group's n is also its number at risk at time 0 in the risk table, and each column's
    # sum is in the whole-study report's flow: planned as known, or a hidden cell came back as
    # 35 - 23 - 7 = 5, then 112 - 103 - 5 = 4.
    return suppress_with_row_totals(
        exact_outcome_counts(recovery, group, group_order),
        min_cell_size,
        OUTCOMES_LABEL,
        OUTCOMES_TOTAL,
        list(EVENT_TYPES),
        table=OUTCOMES_TABLE,
        row_totals_shown_elsewhere=True,
        column_totals_shown_elsewhere=True,
    )


def wide_at_risk(at_risk: pd.DataFrame, group_order: Sequence) -> pd.DataFrame:
    """The risk table as groups x weeks, the KM axis's unit (the CSV keeps days, long form);
    blank after a group's rows end (fewer than min_cell_size at risk, `privacy.safe_at_risk`)."""
    wide = at_risk.pivot(index="group", columns="time", values="n_risk").astype("Int64")
    wide = wide.astype(object).where(wide.notna(), "")
    order = [g for g in group_order if g in wide.index]
    wide = wide.reindex(order + sorted(set(wide.index) - set(order), key=str))
    wide.columns = [f"week {time / DAYS_PER_WEEK:g}" for time in wide.columns]
    return wide.reset_index()


MEDIAN_TEXT = "median weeks (95% CI)"
MEDIAN_DISPLAY_COLUMNS = ["group", MEDIAN_TEXT]
# A group's people and recoveries are published once, in the outcomes by group, whose plan
# protects them: repeated beside the medians they gave hidden cells back (a site report showed
# "recovered: suppressed, withdrawn: <5, censored: 0" there and "n 10, events 8" here).
MEDIAN_COUNT_COLUMNS = ["n", "events"]

RMST_TEXT = "RMST weeks (95% CI)"
RMST_DISPLAY_COLUMNS = ["group", "up to week", RMST_TEXT]


def weeks_interval(days: float, low: float, high: float, missing: str = "not reached") -> str:
    """Days as "15.9 (14.1 to 18.0)" weeks; a missing limit reads `missing` ("not reached" for
    a median whose CI curve never crosses one half), a missing estimate "not reached"."""
    if pd.isna(days):
        return "not reached"
    return format_interval(
        days / DAYS_PER_WEEK, low / DAYS_PER_WEEK, high / DAYS_PER_WEEK, 1, missing=missing
    )


def medians_for_report(km_medians: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Median weeks to recovery per group with its 95% CI, "not reached" where it is not (the
    CSV keeps the days).

    Blank for a group of fewer than min_cell_size people or events; its n and events are not
    shown (MEDIAN_COUNT_COLUMNS: they are the outcomes table's counts).
    """
    table = km_medians.copy()
    table[MEDIAN_TEXT] = [
        weeks_interval(row.median, row.conf_low, row.conf_high) for row in table.itertuples()
    ]
    shown = suppress_small_cells(
        table,
        MEDIAN_COUNT_COLUMNS,
        min_cell_size,
        estimate_columns=["median", "conf_low", "conf_high"],
    )
    shown[MEDIAN_TEXT] = shown[MEDIAN_TEXT].where(~shown[SUPPRESSED_COLUMN], "")
    return shown.drop(columns=MEDIAN_COUNT_COLUMNS)


def rmst_groups_for_report(rmst_groups: pd.DataFrame) -> pd.DataFrame:
    """RMST per group with its CI in weeks (the CSV keeps the days)."""
    table = rmst_groups.copy()
    table["up to week"] = (table["horizon"] / DAYS_PER_WEEK).round(1)
    table[RMST_TEXT] = [
        weeks_interval(row.rmst, row.conf_low, row.conf_high) for row in table.itertuples()
    ]
    return table


def without_groups(differences: pd.DataFrame, groups: Iterable) -> pd.DataFrame:
    """The rows of a differences table ("level - reference" terms) not involving `groups`."""
    groups = {str(group) for group in groups}
    involved = differences["term"].map(lambda term: bool(set(term.split(" - ")) & groups))
    return differences[~involved].reset_index(drop=True)


def differences_for_report(
    median_difference: pd.DataFrame | None,
    rmst_difference: pd.DataFrame,
    left_out: Iterable = (),
) -> pd.DataFrame:
    """Each group against the reference: the difference of median weeks to recovery (bootstrap
    CI) and of restricted mean weeks (Wald CI and p-value), one row per comparison; none for
    a group `left_out` (fewer than min_cell_size people)."""
    none = pd.DataFrame(columns=["term"])
    medians = (none if median_difference is None else median_difference).set_index("term")
    rows = []
    for row in without_groups(rmst_difference, left_out).itertuples():
        if row.term in medians.index:
            median = medians.loc[row.term]
            median_text = weeks_interval(
                median["estimate"], median["conf_low"], median["conf_high"], "not estimable"
            )
        else:
            median_text = "not computed"
        rows.append(
            {
                "comparison": row.term.replace(" - ", " minus "),
                "difference in median weeks (95% CI)": median_text,
                "difference in RMST weeks (95% CI)": weeks_interval(
                    row.estimate, row.conf_low, row.conf_high
                ),
                "RMST p-value": format_p_value(row.p_value),
            }
        )
    return pd.DataFrame(rows)


def drop_groups(table: pd.DataFrame, groups: Iterable, column: str = "group") -> pd.DataFrame:
    """Rows of a table whose group is not among `groups` (suppressed groups)."""
    groups = set(groups)
    if not groups or column not in table:
        return table
    return table[~table[column].isin(groups)].reset_index(drop=True)
