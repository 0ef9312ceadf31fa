"""Report tables: cohort flow, Table 1, tidy formatting, privacy guard.

Pure functions on DataFrames: each returns a new frame ready for HTML and never reads a file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import is_datetime64_any_dtype, is_numeric_dtype

from analysis.errors import DataError
from analysis.privacy import (
    SMD_PREFIX,
    TABLE_ONE_MISSING,
    TABLE_ONE_OVERALL,
    check_min_cell_size,
    format_count,
    suppress_table_one,
)
from analysis.results import HAZARD_RATIO_COLUMNS, REFERENCE_COLUMN
from analysis.schema import (
    CENSOR_END,
    CENSOR_LOST,
    CENSOR_WITHDRAWN,
    DAYS_PER_WEEK,
    EVENT_CENSORED,
    EVENT_RECOVERED,
    SEVERITY_LEVELS,
    SEX_LEVELS,
    UNDERLYING_CONDITIONS,
    Recovery,
    WeeklyTrajectories,
)
from analysis.survival import kaplan_meier

FLOW_COLUMNS = ("stage", "n", "detail")

# Stages of the cohort flow, in the order a CONSORT diagram reads them. The main stages are the
# boxes down the middle; the others say who left (or what was removed) between two main stages.
STAGE_ENROLLED = "enrolled"
STAGE_PARTICIPANT_QUARANTINED = "participant rows quarantined"
STAGE_PARTICIPANT_DUPLICATES = "duplicate participant rows merged"
STAGE_INCLUDED = "included after cleaning"
STAGE_RECORDS_QUARANTINED = "records quarantined"
STAGE_NOT_IN_ANALYSIS_FRAME = "not in the analysis frame"
STAGE_NO_GROUP = "no adherence group"
STAGE_ANALYSED = "analysed"
STAGE_RECOVERED = "recovered"
STAGE_WITHDRAWN = "withdrawn"
STAGE_LOST = "lost to follow-up"
STAGE_END_OF_FOLLOW_UP = "censored at end of follow-up"
MAIN_STAGES = (STAGE_ENROLLED, STAGE_INCLUDED, STAGE_ANALYSED)
OUTCOME_STAGES = (STAGE_RECOVERED, STAGE_WITHDRAWN, STAGE_LOST, STAGE_END_OF_FOLLOW_UP)
# How the stages add up, for the suppression planner (privacy.flow_counts): (total, parts, next).
FLOW_CHAIN = (
    (
        STAGE_ENROLLED,
        (STAGE_PARTICIPANT_QUARANTINED, STAGE_PARTICIPANT_DUPLICATES),
        STAGE_INCLUDED,
    ),
    (STAGE_INCLUDED, (STAGE_NOT_IN_ANALYSIS_FRAME, STAGE_NO_GROUP), STAGE_ANALYSED),
    (STAGE_ANALYSED, OUTCOME_STAGES, None),
)
# The flow stages whose counts are the sums over the groups of the outcomes-by-group columns
# (privacy.plan_report links them).
FLOW_OUTCOME_SUMS = {
    "n": (STAGE_ANALYSED,),
    EVENT_RECOVERED: (STAGE_RECOVERED,),
    CENSOR_WITHDRAWN: (STAGE_WITHDRAWN,),
    EVENT_CENSORED: (STAGE_LOST, STAGE_END_OF_FOLLOW_UP),
}

TABLE_ONE_CONTINUOUS = (
    Recovery.age_years,
    Recovery.bmi,
    Recovery.symptom_months,
    Recovery.baseline_sitting_hours,
    Recovery.mean_sitting_hours,
    Recovery.overall_adherence,
)
TABLE_ONE_CATEGORICAL = (
    Recovery.sex,
    Recovery.severity,
    Recovery.underlying_condition,
    Recovery.chronic,
    Recovery.site,
)
# Fractions (0-1) Table 1 shows as percentages.
TABLE_ONE_PERCENT = (Recovery.overall_adherence,)
# Readable row labels with units; tableone appends the summary kind (", mean (SD)", ", n (%)").
TABLE_ONE_LABELS = {
    Recovery.age_years: "Age (years)",
    Recovery.bmi: "BMI (kg/m²)",
    Recovery.symptom_months: "Symptom duration (months)",
    Recovery.baseline_sitting_hours: "Baseline sitting (hours/day)",
    Recovery.mean_sitting_hours: "Mean sitting during follow-up (hours/day)",
    Recovery.overall_adherence: "Overall adherence (% of prescribed sessions)",
    Recovery.sex: "Sex",
    Recovery.severity: "Severity",
    Recovery.underlying_condition: "Underlying condition",
    Recovery.chronic: "Recent or chronic (symptoms beyond the cut-off)",
    Recovery.site: "Site",
}
TABLE_ONE_LEVEL_ORDER = {
    Recovery.sex: list(SEX_LEVELS),
    Recovery.severity: list(SEVERITY_LEVELS),
    Recovery.underlying_condition: list(UNDERLYING_CONDITIONS),
    Recovery.chronic: [False, True],
}
TABLE_ONE_VARIABLE = "variable"
TABLE_ONE_LEVEL = "level"
# |sample skewness| above which Table 1 shows median [Q1, Q3] (a convention: skewness beyond 1
# is "highly skewed", Bulmer 1979).
SKEWNESS_LIMIT = 1.0
# What Table 1's summaries mean, under the table.
TABLE_ONE_NOTES = (
    f"Continuous variables: mean (SD), or median [Q1, Q3] where |skewness| > {SKEWNESS_LIMIT:g}; "
    "categorical: n (%). Missing: people with no value recorded.",
    "Follow-up: median by reverse Kaplan-Meier (the end of follow-up counted as the event, "
    "recovery as censoring), range of the observed follow-up.",
    "SMD: standardized mean difference between two groups.",
)
FOLLOW_UP_LABEL = "Follow-up (weeks), median (reverse Kaplan-Meier) [range]"
FOLLOW_UP_WEEKS = "follow_up_weeks"
FOLLOW_UP_ENDED = "follow_up_ended"

# Columns a tidy table may carry that name a row rather than hold a number.
LABEL_COLUMNS = ("term", "group", "outcome", "distribution", "strata", "event", "model")


# --- cohort flow ------------------------------------------------------------------------------


def cohort_flow(cleaning_report: dict, recovery: pd.DataFrame, group: str = "adherence_group"):
    """CONSORT-style counts (stage, n, detail) from the cleaning report and the analysis frame.

    enrolled - participant rows quarantined - duplicates merged = included; included - people
    not in the analysis frame - people with no adherence group = analysed; analysed = recovered
    + withdrawn + lost to follow-up + censored at end of follow-up. Records quarantined in the
    child tables are rows (diary days, sessions, visits), not people, and are listed apart.
    Counts are exact: plan them with the rest of the report (`privacy.plan_report`).
    """
    tables = cleaning_report["tables"]
    participants = tables["participants"]
    rows = [(STAGE_ENROLLED, participants["input_rows"], "participant rows in the export")]
    for rule, count in participants.get("quarantined_rows_by_rule", {}).items():
        rows.append((STAGE_PARTICIPANT_QUARANTINED, count, rule))
    if participants.get("merged_duplicates", 0):
        rows.append(
            (
                STAGE_PARTICIPANT_DUPLICATES,
                participants["merged_duplicates"],
                "repeated rows of one participant",
            )
        )
    rows.append((STAGE_INCLUDED, participants["kept"], "participants in the clean table"))
    for table, counts in tables.items():
        if table == "participants":
            continue
        for rule, count in counts.get("quarantined_rows_by_rule", {}).items():
            rows.append((STAGE_RECORDS_QUARANTINED, count, f"{table}: {rule}"))
    not_in_frame = participants["kept"] - len(recovery)
    if not_in_frame:
        rows.append(
            (
                STAGE_NOT_IN_ANALYSIS_FRAME,
                not_in_frame,
                "in the clean table but not in the derived frame",
            )
        )
    grouped = recovery[recovery[group].notna()]
    rows.append((STAGE_NO_GROUP, len(recovery) - len(grouped), "no adherence data to group by"))
    rows.append((STAGE_ANALYSED, len(grouped), "with a known adherence group"))
    event_type = grouped[Recovery.event_type]
    censored = grouped[event_type == "censored"][Recovery.censor_reason]
    rows += [
        (STAGE_RECOVERED, int((event_type == EVENT_RECOVERED).sum()), "of those analysed"),
        (STAGE_WITHDRAWN, int((event_type == CENSOR_WITHDRAWN).sum()), "competing event"),
        (STAGE_LOST, int((censored == CENSOR_LOST).sum()), "censored at last contact"),
        (
            STAGE_END_OF_FOLLOW_UP,
            int((censored != CENSOR_LOST).sum()),
            "not recovered by the end of follow-up",
        ),
    ]
    if (censored.notna() & ~censored.isin([CENSOR_LOST, CENSOR_END])).any():
        raise DataError(
            "censored rows with a censor reason other than lost or end of follow-up",
            column=Recovery.censor_reason,
        )
    flow = pd.DataFrame(rows, columns=list(FLOW_COLUMNS))
    flow["n"] = flow["n"].astype(int)
    return flow


# --- Table 1 ----------------------------------------------------------------------------------


def table_one(recovery: pd.DataFrame, group: str, params: dict) -> pd.DataFrame:
    """Table 1 by group with standardized mean differences (tableone), small cells suppressed.

    `params` gives min_cell_size (report block) and group_order (fit block): the whole
    params.yaml, either block, or both merged. Suppression is `privacy.suppress_table_one` on
    `exact_table_one`: counts below min_cell_size show as "<k", complementary cells as
    "suppressed" so that no hidden count follows from the totals, the Overall column or the
    SMDs; a group column with fewer than min_cell_size people is blanked with the SMDs against it.
    A report plans Table 1 with its other counts (`privacy.plan_report`).
    """
    params = {**params.get("fit", {}), **params.get("report", {}), **params}
    min_cell_size = check_min_cell_size(params.get("min_cell_size"))
    flat, groups = exact_table_one(recovery, group, params)
    return suppress_table_one(flat, groups, min_cell_size)


def exact_table_one(recovery: pd.DataFrame, group: str, params: dict):
    """Table 1 (flattened) with exact counts, and its group columns in order: NOT for publishing.

    For a report that plans suppression over several tables at once
    (`privacy.table_one_counts`, then `privacy.apply_table_one_plan`). People with no group are
    left out; `params` as for `table_one` (only group_order is read).
    """
    from tableone import TableOne  # imported here: tableone is slow to import

    # Accept the whole params.yaml as well as its blocks.
    params = {**params.get("fit", {}), **params.get("report", {}), **params}
    frame = recovery[recovery[group].notna()].copy()
    continuous = [name for name in TABLE_ONE_CONTINUOUS if name in frame]
    # One site (a site report) is the report's subject, not a characteristic.
    categorical = [
        name
        for name in TABLE_ONE_CATEGORICAL
        if name in frame and not (name == Recovery.site and frame[name].nunique() <= 1)
    ]
    # Fractions read as percentages (0.7 (0.2) says less than 70.0 (17.0)).
    for name in set(TABLE_ONE_PERCENT) & set(continuous):
        frame[name] = frame[name] * 100
    for name in categorical:
        # Levels as a clinician reads them (recent/chronic, nerve entrapment); the order below
        # is in the same words.
        if name in LEVEL_LABELS:
            frame[name] = frame[name].map(lambda level, name=name: _level_text(name, level))
    order = {
        name: [_level_text(name, level) for level in levels]
        for name, levels in TABLE_ONE_LEVEL_ORDER.items()
        if name in categorical
    }
    group_order = [level for level in params.get("group_order", []) if level in set(frame[group])]
    group_order += sorted(set(frame[group]) - set(group_order), key=str)
    order[group] = group_order
    order = {
        name: [level for level in levels if level in set(frame[name].dropna())]
        for name, levels in order.items()
    }
    skewed = skewed_variables(frame, continuous)
    table = TableOne(
        frame[[*continuous, *categorical, group]],
        columns=[*continuous, *categorical],
        categorical=categorical,
        continuous=continuous,
        groupby=group,
        pval=False,
        smd=True,
        order=order,
        nonnormal=skewed,
        rename={name: label for name, label in TABLE_ONE_LABELS.items() if name in frame},
        missing=True,
    ).tableone
    flat = _flatten_table_one(table)
    flat = _with_missing_per_variable(flat, frame, [*continuous, *categorical])
    columns = [name for name in flat.columns if name in {TABLE_ONE_OVERALL, *map(str, group_order)}]
    follow_up = follow_up_row(frame, group, columns)
    return pd.concat([flat, follow_up], ignore_index=True).fillna(""), [
        str(level) for level in group_order
    ]


def skewed_variables(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """The continuous variables Table 1 summarises as median [Q1, Q3] instead of mean (SD):
    sample skewness beyond SKEWNESS_LIMIT in either direction, where a mean and SD would
    describe people who are not there (symptom duration: a few long-standing cases)."""
    return [name for name in names if abs(frame[name].dropna().skew()) > SKEWNESS_LIMIT]


def _with_missing_per_variable(
    flat: pd.DataFrame, frame: pd.DataFrame, names: Sequence[str]
) -> pd.DataFrame:
    """The Missing column with a count on every variable's first row, categorical ones too
    (tableone leaves a categorical variable's blank); counted over everyone in the table."""
    result = flat.copy()
    labels = {TABLE_ONE_LABELS.get(name, name): name for name in names}
    first_rows = result.drop_duplicates(TABLE_ONE_VARIABLE)
    for index, shown in first_rows[TABLE_ONE_VARIABLE].items():
        name = labels.get(shown.rsplit(", ", 1)[0])
        if name is not None:
            result.at[index, TABLE_ONE_MISSING] = int(frame[name].isna().sum())
    return result


def follow_up_row(frame: pd.DataFrame, group: str, columns: Sequence[str]) -> pd.DataFrame:
    """Table 1's follow-up row: median follow-up by reverse Kaplan-Meier (the censoring is the
    event, recovery censors it) and the range of follow-up, in weeks, per column.

    A recovered person's follow-up ends at recovery: reverse Kaplan-Meier counts it as seen
    that long and still followed, so the median is the potential follow-up, not the time to
    recovery (Schemper and Smith 1996).
    """
    reverse = frame.assign(
        **{FOLLOW_UP_ENDED: ~frame[Recovery.recovered].astype(bool)},
        **{FOLLOW_UP_WEEKS: frame[Recovery.time_to_recovery_days] / DAYS_PER_WEEK},
    )
    row = {TABLE_ONE_VARIABLE: FOLLOW_UP_LABEL, TABLE_ONE_LEVEL: "", TABLE_ONE_MISSING: ""}
    for column in columns:
        people = reverse if column == TABLE_ONE_OVERALL else reverse[reverse[group] == column]
        weeks = people[FOLLOW_UP_WEEKS].dropna()
        if weeks.empty:
            continue
        median = kaplan_meier(people, FOLLOW_UP_WEEKS, FOLLOW_UP_ENDED).medians["median"].iloc[0]
        shown_median = "not reached" if pd.isna(median) else f"{median:.1f}"
        row[column] = f"{shown_median} [{weeks.min():.1f}, {weeks.max():.1f}]"
    return pd.DataFrame([row])


def _level_text(name: str, level):
    """A Table 1 level in the words of LEVEL_LABELS (missing stays missing)."""
    return level if pd.isna(level) or name not in LEVEL_LABELS else level_label(name, level)


def _flatten_table_one(table: pd.DataFrame) -> pd.DataFrame:
    """tableone's (variable, level) x (grouped-by, column) frame as plain columns."""
    flat = table.copy()
    flat.columns = [column[-1] if isinstance(column, tuple) else column for column in flat.columns]
    index = flat.index.to_frame(index=False)
    flat = flat.reset_index(drop=True)
    flat.insert(0, TABLE_ONE_LEVEL, index.iloc[:, 1].astype(str).to_numpy())
    flat.insert(0, TABLE_ONE_VARIABLE, index.iloc[:, 0].astype(str).to_numpy())
    flat.columns = [str(name) for name in flat.columns]
    return flat


# --- tidy model tables ------------------------------------------------------------------------


def format_p_value(p_value: float, digits: int = 3) -> str:
    """A p-value for a report: "<0.001" below the last shown digit, otherwise rounded."""
    if p_value is None or pd.isna(p_value):
        return ""
    floor = 10.0**-digits
    return f"<{floor:.{digits}f}" if p_value < floor else f"{p_value:.{digits}f}"


# One interval style for every estimate in every report: " to " reads the same for negative
# limits ("-0.50 (-1.00 to 0.20)") where a dash would not.
INTERVAL_SEPARATOR = " to "


def format_interval(
    estimate: float, low: float, high: float, digits: int = 2, missing: str = "NA"
) -> str:
    """ "1.23 (1.01 to 1.50)": the report's one interval style (INTERVAL_SEPARATOR); a limit
    that is not there reads `missing`."""
    if pd.isna(estimate):
        return ""
    limits = [(missing if pd.isna(value) else f"{value:.{digits}f}") for value in (low, high)]
    return f"{estimate:.{digits}f} ({limits[0]}{INTERVAL_SEPARATOR}{limits[1]})"


def readable_term(term: str) -> str:
    """A model term for people: "severity[moderate]" -> "Severity: moderate"."""
    if term == "(Intercept)":
        return "Intercept"
    parts = []
    for piece in str(term).split(":"):
        match = re.fullmatch(r"(.+?)\[(?:T\.)?(.+)\]", piece)
        name, level = (match.group(1), match.group(2)) if match else (piece, None)
        name = name.replace("_", " ")
        parts.append(f"{name}: {level}" if level is not None else name)
    text = " × ".join(parts)
    return text[:1].upper() + text[1:]


def format_tidy(
    tidy: pd.DataFrame,
    columns: Sequence[str] | None = None,
    digits: int = 2,
    p_digits: int = 3,
) -> pd.DataFrame:
    """A report-ready copy of a tidy model table: readable terms, rounded numbers, p as text.

    Adds "estimate (95% CI)" and, for hazard-ratio tables, "hazard ratio (95% CI)" as text;
    `columns` picks and orders the output columns (after those are added).
    """
    table = tidy.copy()
    if "term" in table:
        table["term"] = table["term"].map(readable_term)
    if {"estimate", "conf_low", "conf_high"} <= set(table.columns):
        table["estimate (95% CI)"] = [
            format_interval(*values, digits=digits)
            for values in table[["estimate", "conf_low", "conf_high"]].to_numpy(float)
        ]
    if {"hazard_ratio", "hr_conf_low", "hr_conf_high"} <= set(table.columns):
        table["hazard ratio (95% CI)"] = [
            format_interval(*values, digits=digits)
            for values in table[["hazard_ratio", "hr_conf_low", "hr_conf_high"]].to_numpy(float)
        ]
    for name in table.columns:
        if name == "p_value" or name.endswith("p_value"):
            table[name] = table[name].map(lambda p: format_p_value(p, p_digits))
        elif is_numeric_dtype(table[name]) and not pd.api.types.is_bool_dtype(table[name]):
            if pd.api.types.is_integer_dtype(table[name]):
                continue
            table[name] = table[name].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    if columns is not None:
        unknown = [name for name in columns if name not in table]
        if unknown:
            raise DataError(f"column(s) not in the table: {', '.join(unknown)}", column=unknown[0])
        table = table[list(columns)]
    return table.reset_index(drop=True)


# --- privacy guard ----------------------------------------------------------------------------

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_YEAR = r"(?:1[89]|20)\d{2}"
DATE_PATTERNS = (
    # 2024-03-12, 2024/03/12, 2024.03.12, optionally with a time
    re.compile(rf"(?<![\d.]){_YEAR}([-/.])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])(?!\d)"),
    # 12/03/2024, 03-12-2024, 12.03.2024 (day or month first)
    re.compile(rf"(?<![\d.])\d{{1,2}}([-/.])\d{{1,2}}\1{_YEAR}(?![\d.]\d)"),
    # 12 Mar 2024, 12-Mar-2024
    re.compile(rf"(?<!\d)\d{{1,2}}[ -]{_MONTHS}[ -]{_YEAR}(?!\d)", re.IGNORECASE),
    # March 12, 2024
    re.compile(rf"(?<![a-z]){_MONTHS} \d{{1,2}},? {_YEAR}(?!\d)", re.IGNORECASE),
)
IDENTIFIER_COLUMNS = (Recovery.participant_id,)


# Words that introduce an id in free text ("participant 12", "record #3", "ID: 7").
ID_CONTEXT = r"(?:participant|patient|subject|record|person|case|id)s?\b\s*(?:id\b)?\s*[:#]?\s*"
NUMBER_TEXT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


@functools.lru_cache(maxsize=4)
def _identifier_matchers(identifiers: tuple) -> tuple[re.Pattern | None, frozenset[str]]:
    """The id pattern and the numeric ids, built once per set of ids: a report checks every
    table it saves against the same few hundred ids."""
    return _identifier_pattern(identifiers), frozenset(_numeric_ids(identifiers))


def _identifier_pattern(identifiers: Iterable) -> re.Pattern | None:
    """Ids where ids can appear: any id with a letter anywhere in a text, but an id that is
    only digits (REDCap numbers records 1, 2, 3) only after a word such as "participant":
    a count or a day that happens to equal a numeric id is not that person."""
    names = {str(value).strip() for value in identifiers if pd.notna(value)} - {""}
    worded = sorted((n for n in names if not NUMBER_TEXT.match(n)), key=len, reverse=True)
    numeric = sorted((n for n in names if NUMBER_TEXT.match(n)), key=len, reverse=True)
    alternatives = []
    if worded:
        alternatives.append(
            rf"(?<![A-Za-z0-9])(?:{'|'.join(map(re.escape, worded))})(?![A-Za-z0-9])"
        )
    if numeric:
        alternatives.append(
            rf"(?<![A-Za-z0-9]){ID_CONTEXT}(?:{'|'.join(map(re.escape, numeric))})(?![\d.])"
        )
    if not alternatives:
        return None
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _numeric_ids(identifiers: Iterable) -> set[str]:
    return {
        str(v).strip() for v in identifiers if pd.notna(v) and NUMBER_TEXT.match(str(v).strip())
    }


# Cells a spreadsheet would run as a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table for a CSV a person opens in Excel: a text cell (or column name) starting with
    = + - @ tab or CR gets a leading apostrophe, so it shows as text and never runs. Numbers,
    and text that is just a number (-0.5), are left as they are."""

    def safe(value):
        formula = isinstance(value, str) and value.startswith(FORMULA_STARTS)
        return "'" + value if formula and not NUMBER_TEXT.match(value.strip()) else value

    safe_table = table.rename(columns=lambda name: safe(name) if isinstance(name, str) else name)
    for name in safe_table.columns[
        [not pd.api.types.is_numeric_dtype(dtype) for dtype in safe_table.dtypes]
    ]:
        safe_table[name] = safe_table[name].map(safe, na_action="ignore")
    return safe_table


def _labelled_texts(frame_or_text) -> list[tuple[str, str]]:
    """(where, text) for every cell, index value and column name; a string is one text."""
    if isinstance(frame_or_text, str):
        return [("text", frame_or_text)]
    frame = frame_or_text
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    texts = [("column name", str(name)) for name in frame.columns]
    texts += [("column name", str(name)) for name in frame.columns.names if name is not None]
    texts += [("index name", str(name)) for name in frame.index.names if name is not None]
    if not isinstance(frame.index, pd.RangeIndex):  # a row number is no one's id
        texts += [("index", str(value)) for value in frame.index]
    for name in frame.columns:
        values = frame[name]
        texts += [(f"cell in column {name!r}", str(value)) for value in values.dropna().unique()]
    return texts


def find_identifiers_or_dates(frame_or_text, identifiers: Iterable = ()) -> list[str]:
    """Every participant id, calendar date or identifying column in a frame or text, described.

    Looks in cells, index values and names, and column names; a datetime column or a date
    object in a cell counts even before it is written out as text.
    """
    findings: list[str] = []
    pattern, numeric_ids = _identifier_matchers(tuple(identifiers))
    if isinstance(frame_or_text, pd.Series):
        frame_or_text = frame_or_text.to_frame()
    if isinstance(frame_or_text, pd.DataFrame):
        frame = frame_or_text
        for name in frame.columns:
            if str(name) in IDENTIFIER_COLUMNS:
                findings.append(f"identifier column {name!r}")
            if is_datetime64_any_dtype(frame[name]):
                findings.append(f"date column {name!r}")
        if is_datetime64_any_dtype(frame.index):
            findings.append("date index")
    for where, text in _labelled_texts(frame_or_text):
        if pattern is not None and (match := pattern.search(text)):
            findings.append(f"participant id {match.group(0)!r} in {where}")
        elif where.startswith("index") and text.strip() in numeric_ids:
            findings.append(f"participant id {text.strip()!r} in {where}")
        for date_pattern in DATE_PATTERNS:
            if match := date_pattern.search(text):
                findings.append(f"date {match.group(0)!r} in {where}")
                break
    return findings


def assert_no_identifiers(frame_or_text, identifiers: Iterable = ()) -> None:
    """Raise DataError if a report table (or its text) shows a participant id or a date."""
    findings = find_identifiers_or_dates(frame_or_text, identifiers)
    if findings:
        shown = "; ".join(findings[:5]) + (
            f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        )
        raise DataError(
            f"identifying content in a report table: {shown}",
            hint="drop identifiers and dates before a table leaves the analysis",
        )


# --- regression tables (gtsummary's tbl_regression / tbl_merge) -------------------------------


@dataclass(frozen=True)
class TermLabel:
    """How a model variable reads in a table: its name and, for a number, the unit of one step.

    `scale` is how many `unit`s one unit of the variable as the model codes it is (adherence is
    a fraction 0-1: 100 percentage points); `clinical_unit` names the fit.primary.units entry
    whose `per` gives the step a clinician reads (its `per` is in the model's coding).
    """

    name: str
    unit: tuple[str, str] | None = None  # (one, many): ("hour", "hours")
    scale: float = 1.0
    clinical_unit: str | None = None


_PERCENTAGE_POINTS = ("percentage point", "percentage points")
_HOURS = ("hour", "hours")
# Every regression variable's label in one place (Table 1 has TABLE_ONE_LABELS).
TERM_LABELS: dict[str, TermLabel] = {
    "weekly_adherence": TermLabel("Weekly adherence", _PERCENTAGE_POINTS, 100, "weekly_adherence"),
    "weekly_sitting_hours": TermLabel("Daily sitting", _HOURS, 1, "weekly_sitting_hours"),
    Recovery.overall_adherence: TermLabel(
        "Overall adherence", _PERCENTAGE_POINTS, 100, "weekly_adherence"
    ),
    "landmark_adherence": TermLabel(
        "Adherence before the landmark", _PERCENTAGE_POINTS, 100, "weekly_adherence"
    ),
    Recovery.mean_sitting_hours: TermLabel("Mean daily sitting", _HOURS, 1, "weekly_sitting_hours"),
    Recovery.baseline_sitting_hours: TermLabel(
        "Baseline daily sitting", _HOURS, 1, "weekly_sitting_hours"
    ),
    Recovery.age_years: TermLabel("Age", ("year", "years")),
    Recovery.bmi: TermLabel("BMI", ("kg/m²", "kg/m²")),
    Recovery.symptom_months: TermLabel("Symptom duration", ("month", "months")),
    Recovery.severity: TermLabel("Severity"),
    Recovery.chronic: TermLabel("Symptom duration at enrolment"),
    Recovery.underlying_condition: TermLabel("Underlying condition"),
    Recovery.adherence_group: TermLabel("Adherence group"),
    Recovery.sitting_band: TermLabel("Sitting band"),
    Recovery.sex: TermLabel("Sex"),
    Recovery.site: TermLabel("Site"),
    WeeklyTrajectories.week: TermLabel("Week"),  # weeks since enrolment
}
# Outcomes of the mixed models as a column header reads them, with their unit.
OUTCOME_LABELS = {
    WeeklyTrajectories.pain_low_back: "Low-back pain (NRS 0-10)",
    WeeklyTrajectories.pain_hip: "Hip pain (NRS 0-10)",
    WeeklyTrajectories.pain_knee: "Knee pain (NRS 0-10)",
    WeeklyTrajectories.hip_abduction_n: "Hip abduction strength (N)",
}
# Levels as a clinician reads them, where the coded level does not.
LEVEL_LABELS: dict[str, dict[str, str]] = {
    Recovery.chronic: {"False": "recent", "True": "chronic"},
    Recovery.underlying_condition: {"none": "none", "nerve_entrapment": "nerve entrapment"},
}
REFERENCE_MARK = "—"  # gtsummary's mark on a reference level's row
ESTIMATE_HEADER = "HR (95% CI)"
SUBDISTRIBUTION_HEADER = "SHR (95% CI)"  # Fine-Gray
TIME_RATIO_HEADER = "TR (95% CI)"  # accelerated failure time
DIFFERENCE_HEADER = "Beta (95% CI)"  # a linear (mixed) model's coefficient
ESTIMATE_NAMES = {
    "HR": "hazard ratio",
    "SHR": "subdistribution hazard ratio",
    "TR": "time ratio, the factor by which the time to recovery is multiplied (above 1: slower)",
    "Beta": "difference in the outcome's mean, in its unit, against the reference level or per "
    "unit of the term",
}
P_HEADER = "p-value"
CHARACTERISTIC = "Characteristic"
LEVEL_INDENT = "\u2003"  # an em space: the levels sit under their variable's row
UNADJUSTED = "Unadjusted"
ADJUSTED = "Adjusted"


@dataclass
class RegressionTable:
    """A regression table as shown: `frame` (one row per variable, its levels under it), the
    model each column belongs to (`spanners`: header -> columns) and the notes under it."""

    frame: pd.DataFrame
    spanners: dict[str, list[str]]
    notes: list[str]


def _term_parts(term: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"(.+?)\[(?:T\.)?(.+)\]", str(term))
    return (match.group(1), match.group(2)) if match else (str(term), None)


def _step_text(label: TermLabel, per: float) -> str:
    step = per * label.scale
    one, many = label.unit
    return f"per {one}" if step == 1 else f"per {step:g} {many}"


# A natural-spline basis column of a variable (mixed.TimeBasis names them <variable>_ns<k>).
_SPLINE_BASIS = re.compile(r"(.+)_ns(\d+)")


def term_label(variable: str, units: Mapping | None = None) -> str:
    """A variable's row label: "Weekly adherence, per 10 percentage points"; an interaction
    "Week × Adherence group"; a spline basis column "Week, natural-spline basis 3"."""
    if ":" in variable:
        parts = [
            TERM_LABELS[part].name if part in TERM_LABELS else term_label(part)
            for part in variable.split(":")
        ]
        return " × ".join([parts[0], *[part[:1].lower() + part[1:] for part in parts[1:]]])
    spline = _SPLINE_BASIS.fullmatch(variable)
    if spline is not None and spline.group(1) in TERM_LABELS:
        return f"{TERM_LABELS[spline.group(1)].name}, natural-spline basis {spline.group(2)}"
    label = TERM_LABELS.get(variable)
    if label is None:
        return readable_term(variable)
    if label.unit is None:
        return label.name
    per = _per(variable, units)
    return f"{label.name}, {_step_text(label, per)}"


def _per(variable: str, units: Mapping | None) -> float:
    label = TERM_LABELS.get(variable)
    if label is None or label.clinical_unit is None or not units:
        return 1.0
    return float(units.get(label.clinical_unit, {}).get("per", 1.0))


def level_label(variable: str, level: str) -> str:
    return LEVEL_LABELS.get(variable, {}).get(str(level), str(level).replace("_", " "))


def _in_clinical_units(tidy: pd.DataFrame, units: Mapping | None) -> pd.DataFrame:
    """Hazard ratios per the clinical step of each numeric term. The primary model's tables are
    already per that step (their `unit` column says so) and are left as they are."""
    if "unit" in tidy:
        return tidy
    table = tidy.copy()
    for index, term in table["term"].items():
        per = _per(str(term), units)
        if per != 1.0 and _term_parts(term)[1] is None:
            log_hr = table.loc[index, ["estimate", "conf_low", "conf_high"]].to_numpy(float)
            table.loc[index, ["hazard_ratio", "hr_conf_low", "hr_conf_high"]] = np.exp(per * log_hr)
    return table


def forest_rows(tidy: pd.DataFrame, units: Mapping | None = None) -> pd.DataFrame:
    """The rows a forest plot draws, labelled and scaled as the regression tables show them:
    numeric terms per their clinical step ("Weekly adherence, per 10 percentage points"),
    factor levels against their reference ("Severity: moderate vs mild"); the reference rows
    themselves are left out (a hazard ratio of 1 by definition, said in each level's label)."""
    table = _in_clinical_units(tidy, units)
    is_reference = (
        table[REFERENCE_COLUMN].astype(str).str.lower() == "true"
        if REFERENCE_COLUMN in table
        else pd.Series(False, index=table.index)
    )
    references = {
        _term_parts(term)[0]: _term_parts(term)[1] for term in table.loc[is_reference, "term"]
    }

    def label(term: str) -> str:
        variable, level = _term_parts(term)
        if level is None:
            return term_label(variable, units)
        shown = f"{term_label(variable)}: {level_label(variable, level)}"
        reference = references.get(variable)
        return shown if reference is None else f"{shown} vs {level_label(variable, reference)}"

    kept = table[~is_reference]
    return kept.assign(term=kept["term"].map(label)).reset_index(drop=True)


# Columns of a model table that hold the estimate as shown, per kind of estimate.
SHOWN_ESTIMATE = ("shown_estimate", "shown_conf_low", "shown_conf_high")
# Terms a regression table leaves out, as gtsummary does by default: the intercept, and an AFT
# model's log scale (a nuisance parameter); both stay in the fit stage's CSVs.
HIDDEN_TERMS = ("(Intercept)", "Log(scale)")
# The count beside N in a model's header, per kind of model.
COUNT_WORDS = {"events": "events", "observations": "observations"}


def _shown_estimates(tidy: pd.DataFrame, units: Mapping | None, exponentiate: bool):
    """SHOWN_ESTIMATE columns: hazard ratios as the table has them (per clinical step), or
    exp(coefficient) (a time ratio), or the coefficient itself (a difference in means), each
    numeric term per its clinical step."""
    if "hazard_ratio" in tidy:
        table = _in_clinical_units(tidy, units)
        return table.assign(
            **dict(zip(SHOWN_ESTIMATE, table[list(HAZARD_RATIO_COLUMNS)].T.to_numpy(), strict=True))
        )
    per = np.array(
        [
            1.0 if _term_parts(term)[1] is not None else _per(str(term), units)
            for term in tidy["term"]
        ]
    )
    values = tidy[["estimate", "conf_low", "conf_high"]].to_numpy(float) * per[:, None]
    if exponentiate:
        values = np.exp(values)
    table = tidy.copy()
    for index, name in enumerate(SHOWN_ESTIMATE):
        table[name] = values[:, index]
    return table


def _cells(row: Mapping) -> tuple[str, str]:
    """(estimate (95% CI), p) of one tidy row: the reference mark, the reason a term is not
    estimable, or the numbers."""
    if bool(row.get(REFERENCE_COLUMN, False)):
        return REFERENCE_MARK, ""
    estimable = row.get("estimable", True)
    if (isinstance(estimable, bool | np.bool_) and not estimable) or pd.isna(
        row.get(SHOWN_ESTIMATE[0])
    ):
        reason = row.get("reason")
        text = str(reason) if isinstance(reason, str) and reason else "not estimable"
        return f"not estimable: {text}", ""
    return (
        format_interval(*(row[name] for name in SHOWN_ESTIMATE)),
        format_p_value(row.get("p_value")),
    )


def _count_column(tidy: pd.DataFrame) -> str | None:
    """The column counting what the model describes beside its people: events or observations."""
    return next((name for name in COUNT_WORDS if name in tidy), None)


def _model_header(
    name: str, tidy: pd.DataFrame, min_cell_size: int | None
) -> tuple[str, str | None]:
    """The model's header with its N and events (or observations) when one number holds for
    every row, and the count column to give per row instead (as for one-covariate-at-a-time
    models), else None. Counts go through the privacy rule (`privacy.format_count`)."""
    counted = _count_column(tidy)
    if "n" not in tidy or counted is None:
        return name, None
    if tidy["n"].nunique() == 1 and tidy[counted].nunique() == 1:
        n = format_count(int(tidy["n"].dropna().iloc[0]), min_cell_size)
        count = format_count(int(tidy[counted].dropna().iloc[0]), min_cell_size)
        return f"{name} (N = {n}; {count} {COUNT_WORDS[counted]})", None
    return name, counted


def _shown_count(value, min_cell_size: int | None):
    return int(value) if min_cell_size is None else format_count(int(value), min_cell_size)


def regression_table(
    adjusted: pd.DataFrame,
    unadjusted: pd.DataFrame | None = None,
    units: Mapping | None = None,
    estimate_header: str = ESTIMATE_HEADER,
    min_cell_size: int | None = None,
) -> RegressionTable:
    """A fit stage regression table (or an adjusted and an unadjusted one side by side, aligned
    by term) as gtsummary shows it: a row per variable with its levels under it, the reference
    level marked "—", human labels with the clinical unit of each numeric term (`units`:
    params fit.primary.units), HR (95% CI), p as "<0.001" or 3 digits, N and events per model
    (through the privacy rule when `min_cell_size` is given).

    A term one model lacks is blank in that model's columns; a term not estimable shows why.
    """
    models = [(ADJUSTED if unadjusted is not None else "Model", adjusted)]
    if unadjusted is not None:
        models.insert(0, (UNADJUSTED, unadjusted))
    table = merged_regression_table(models, units, estimate_header, min_cell_size=min_cell_size)
    if unadjusted is not None:
        table.notes.append(
            "Unadjusted: one covariate at a time; adjusted: all covariates in one model."
        )
    return table


def merged_regression_table(
    models: Sequence[tuple[str, pd.DataFrame]],
    units: Mapping | None = None,
    estimate_header: str = ESTIMATE_HEADER,
    exponentiate: bool = True,
    min_cell_size: int | None = None,
) -> RegressionTable:
    """Several fit stage model tables side by side (gtsummary's tbl_merge), one spanner per
    model naming it with its N and events (or observations), rows aligned by term.

    Hazard-ratio tables show their hazard ratios; other tables exp(coefficient) when
    `exponentiate` (an AFT's time ratio) or the coefficient (a mixed model's difference in
    means); numeric terms per their clinical step (`units`). The intercept and an AFT's log
    scale are left out (HIDDEN_TERMS), as gtsummary does.
    """
    models = [
        (name, _shown_estimates(tidy[~tidy["term"].isin(HIDDEN_TERMS)], units, exponentiate))
        for name, tidy in models
    ]
    # The last model's order, then any term only the earlier models have.
    terms = list(
        dict.fromkeys(term for _, tidy in models[::-1] for term in tidy["term"].astype(str))
    )
    # Keep each variable's levels together, in the order the variables first appear.
    variables = list(dict.fromkeys(_term_parts(term)[0] for term in terms))
    ordered = [term for v in variables for term in terms if _term_parts(term)[0] == v]
    rows: list[dict] = []
    spanners: dict[str, list[str]] = {}
    columns_of = []
    for name, tidy in models:
        header, per_row = _model_header(name, tidy, min_cell_size)
        columns = [f"{name} {estimate_header}", f"{name} {P_HEADER}"]
        if per_row:
            columns = [f"{name} N", f"{name} {COUNT_WORDS[per_row]}", *columns]
        spanners[header] = columns
        columns_of.append((tidy.set_index(tidy["term"].astype(str)), columns, per_row))
    seen_variables = set()
    for term in ordered:
        variable, level = _term_parts(term)
        if level is not None and variable not in seen_variables:
            rows.append({CHARACTERISTIC: term_label(variable, units)})
        seen_variables.add(variable)
        row = {
            CHARACTERISTIC: LEVEL_INDENT + level_label(variable, level)
            if level is not None
            else term_label(variable, units)
        }
        for tidy, columns, per_row in columns_of:
            if term not in tidy.index:
                continue
            record = tidy.loc[term]
            if isinstance(record, pd.DataFrame):
                raise DataError(f"term {term!r} appears twice in one model table", column="term")
            estimate, p_value = _cells(record.to_dict())
            row[columns[-2]], row[columns[-1]] = estimate, p_value
            if per_row:
                row[columns[0]] = _shown_count(record["n"], min_cell_size)
                row[columns[1]] = _shown_count(record[per_row], min_cell_size)
        rows.append(row)
    all_columns = [CHARACTERISTIC, *[c for _, columns, _ in columns_of for c in columns]]
    frame = pd.DataFrame(rows, columns=all_columns)
    for name in all_columns[1:]:
        if frame[name].dtype == object:
            frame[name] = frame[name].fillna("")
    abbreviation = estimate_header.split(" ")[0]
    notes = [
        f"{abbreviation} = {ESTIMATE_NAMES.get(abbreviation, abbreviation)}; "
        f"CI = confidence interval; {REFERENCE_MARK} = reference level."
    ]
    return RegressionTable(frame, spanners, notes)


def table_one_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """A (suppressed) flattened Table 1 as gtsummary lays it out: one row per variable with its
    summary kind, a categorical variable's levels indented under it, Missing on the variable's
    row. The CSV keeps the flat form (variable, level, ...)."""
    values = [c for c in table.columns if c not in (TABLE_ONE_VARIABLE, TABLE_ONE_LEVEL)]
    rows = []
    for variable, block in table.groupby(TABLE_ONE_VARIABLE, sort=False):
        levels = [level for level in block[TABLE_ONE_LEVEL] if str(level) != ""]
        if not levels:
            rows.append({CHARACTERISTIC: variable, **block.iloc[0][values].to_dict()})
            continue
        first = block.iloc[0]
        header = {CHARACTERISTIC: variable, **dict.fromkeys(values, "")}
        header.update(
            {c: first[c] for c in values if c == TABLE_ONE_MISSING or c.startswith(SMD_PREFIX)}
        )
        rows.append(header)
        for _, row in block.iterrows():
            shown = {
                c: row[c] for c in values if c != TABLE_ONE_MISSING and not c.startswith(SMD_PREFIX)
            }
            rows.append({CHARACTERISTIC: LEVEL_INDENT + str(row[TABLE_ONE_LEVEL]), **shown})
    return pd.DataFrame(rows, columns=[CHARACTERISTIC, *values]).fillna("")
