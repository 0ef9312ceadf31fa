"""Report tables: small-cell suppression, cohort flow, Table 1, tidy formatting, privacy guard."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.plots import plot_forest
from analysis.privacy import (
    SUPPRESSED_COLUMN,
    groups_to_suppress,
    smd_columns,
    suppress_small_cells,
)
from analysis.report.shared import show_table
from analysis.results import with_reference_rows
from analysis.tables import (
    CHARACTERISTIC,
    FOLLOW_UP_LABEL,
    OUTCOME_STAGES,
    STAGE_ANALYSED,
    STAGE_ENROLLED,
    STAGE_INCLUDED,
    STAGE_NO_GROUP,
    STAGE_PARTICIPANT_DUPLICATES,
    STAGE_PARTICIPANT_QUARANTINED,
    STAGE_RECORDS_QUARANTINED,
    TABLE_ONE_LEVEL,
    TABLE_ONE_NOTES,
    TABLE_ONE_VARIABLE,
    assert_no_identifiers,
    cohort_flow,
    exact_table_one,
    find_identifiers_or_dates,
    follow_up_row,
    forest_rows,
    format_interval,
    format_p_value,
    format_tidy,
    merged_regression_table,
    readable_term,
    regression_table,
    table_one,
    table_one_for_display,
)

CANARY_ID = "P0042"


def recovery_frame(group_sizes: dict[str, int], seed: int = 11) -> pd.DataFrame:
    """A small Recovery-shaped frame with the given number of people per adherence group."""
    rng = np.random.default_rng(seed)
    groups = [level for level, size in group_sizes.items() for _ in range(size)]
    n = len(groups)
    event_type = rng.choice(["recovered", "withdrawn", "censored"], n, p=[0.6, 0.1, 0.3])
    censor_reason = np.where(
        event_type == "censored",
        rng.choice(["lost_to_follow_up", "end_of_follow_up"], n),
        np.where(event_type == "withdrawn", "withdrawn", None),
    )
    return pd.DataFrame(
        {
            "participant_id": [f"P{i:04d}" for i in range(n)],
            "site": rng.choice(["north", "south"], n),
            "age_years": rng.normal(45, 12, n).round(),
            "sex": rng.choice(["female", "male"], n),
            "bmi": rng.normal(26, 4, n),
            "severity": rng.choice(["mild", "moderate", "severe"], n, p=[0.45, 0.45, 0.1]),
            "symptom_months": rng.gamma(2, 3, n),
            "chronic": rng.uniform(size=n) < 0.4,
            "underlying_condition": rng.choice(["none", "disc", "nerve_entrapment", "other"], n),
            "baseline_sitting_hours": rng.normal(8, 2, n),
            "recovered": event_type == "recovered",
            "time_to_recovery_days": rng.integers(7, 280, n).astype(float),
            "censor_reason": censor_reason,
            "event_type": event_type,
            "overall_adherence": rng.uniform(0, 1, n),
            "adherence_group": pd.Series(groups, dtype=object),
            "mean_sitting_hours": rng.normal(7.5, 2, n),
            "sitting_band": rng.choice(["low", "moderate", "high"], n),
        }
    )


# --- suppression ------------------------------------------------------------------------------


def test_suppression_marks_exactly_the_small_cells():
    table = pd.DataFrame(
        {
            "group": ["low", "moderate", "high", "empty"],
            "n": [12, 4, 30, 0],
            "events": [6, 2, 5, 0],
            "median": [70.0, 55.0, 40.0, np.nan],
        }
    )
    result = suppress_small_cells(table, ["n", "events"], min_cell_size=5)
    assert result["n"].tolist() == [12, "<5", 30, 0]
    assert result["events"].tolist() == [6, "<5", 5, 0]
    assert result[SUPPRESSED_COLUMN].tolist() == [False, True, False, False]
    assert pd.isna(result.loc[1, "median"])
    assert result.loc[[0, 2], "median"].tolist() == [70.0, 40.0]
    assert result["group"].tolist() == table["group"].tolist()
    assert table["n"].tolist() == [12, 4, 30, 0], "the input is not changed"


def test_suppression_can_hide_zero_and_blanks_only_named_estimates():
    table = pd.DataFrame({"n": [0, 8], "rate": [0.0, 0.5], "label_code": [1, 2]})
    result = suppress_small_cells(table, ["n"], 5, estimate_columns=["rate"], suppress_zero=True)
    assert result["n"].tolist() == ["<5", 8]
    assert pd.isna(result.loc[0, "rate"]) and result.loc[0, "label_code"] == 1


def test_suppression_needs_known_count_columns():
    with pytest.raises(DataError, match="nobody"):
        suppress_small_cells(pd.DataFrame({"n": [1]}), ["nobody"], 5)


def test_groups_to_suppress_lists_small_groups_only():
    recovery = recovery_frame({"low": 3, "moderate": 20, "high": 5})
    recovery.loc[0, "adherence_group"] = None  # the unknown group is not a level
    assert groups_to_suppress(recovery, "adherence_group", 5) == ["low"]
    assert groups_to_suppress(recovery, "adherence_group", 2) == []


# --- cohort flow ------------------------------------------------------------------------------


def cleaning_report(kept: int) -> dict:
    return {
        "as_of": "2025-06-30",
        "tables": {
            "participants": {
                "input_rows": kept + 9,
                "kept": kept,
                "quarantined": 7,
                "merged_duplicates": 2,
                "quarantined_rows_by_rule": {"invalid_id": 4, "future_enrolment": 3},
            },
            "diary": {
                "input_rows": 900,
                "kept": 880,
                "quarantined": 20,
                "merged_duplicates": 0,
                "quarantined_rows_by_rule": {"unknown_participant": 20},
            },
            "sessions": {
                "input_rows": 50,
                "kept": 50,
                "quarantined": 0,
                "merged_duplicates": 0,
                "quarantined_rows_by_rule": {},
            },
        },
    }


def test_cohort_flow_counts_add_up():
    recovery = recovery_frame({"low": 10, "moderate": 15, "high": 12})
    recovery.loc[:2, "adherence_group"] = None
    flow = cohort_flow(cleaning_report(len(recovery)), recovery)
    assert list(flow.columns) == ["stage", "n", "detail"]

    def total(*stages):
        return int(flow.loc[flow["stage"].isin(stages), "n"].sum())

    assert total(STAGE_ENROLLED) == len(recovery) + 9
    assert total(STAGE_ENROLLED) - total(
        STAGE_PARTICIPANT_QUARANTINED, STAGE_PARTICIPANT_DUPLICATES
    ) == total(STAGE_INCLUDED)
    assert total(STAGE_INCLUDED) - total(STAGE_NO_GROUP) == total(STAGE_ANALYSED) == 34
    assert total(*OUTCOME_STAGES) == total(STAGE_ANALYSED)
    analysed = recovery[recovery["adherence_group"].notna()]
    assert total("recovered") == analysed["recovered"].sum()
    assert total("withdrawn") == (analysed["event_type"] == "withdrawn").sum()
    quarantined = flow[flow["stage"] == STAGE_PARTICIPANT_QUARANTINED]
    assert dict(zip(quarantined["detail"], quarantined["n"], strict=True)) == {
        "invalid_id": 4,
        "future_enrolment": 3,
    }
    records = flow[flow["stage"] == STAGE_RECORDS_QUARANTINED]
    assert records["detail"].tolist() == ["diary: unknown_participant"]
    assert records["n"].tolist() == [20]


def test_cohort_flow_reports_participants_missing_from_the_analysis_frame():
    recovery = recovery_frame({"low": 6, "high": 6})
    flow = cohort_flow(cleaning_report(len(recovery) + 2), recovery)
    assert flow.loc[flow["stage"] == "not in the analysis frame", "n"].tolist() == [2]


# --- Table 1 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_one_result():
    recovery = recovery_frame({"low": 25, "moderate": 40, "high": 30})
    recovery.loc[recovery.index[:3], "severity"] = "severe"  # some categories surely small
    params = {"min_cell_size": 5, "group_order": ["low", "moderate", "high"]}
    return recovery, table_one(recovery, "adherence_group", params)


def test_table_one_has_smd_columns_and_group_columns_in_order(table_one_result):
    _, table = table_one_result
    assert smd_columns(table), "no SMD column"
    assert table.columns[:2].tolist() == [TABLE_ONE_VARIABLE, TABLE_ONE_LEVEL]
    group_positions = [table.columns.get_loc(level) for level in ("low", "moderate", "high")]
    assert group_positions == sorted(group_positions)
    assert not isinstance(table.columns, pd.MultiIndex)
    assert not isinstance(table.index, pd.MultiIndex)
    variables = set(table[TABLE_ONE_VARIABLE])
    assert "Age (years), mean (SD)" in variables
    assert "Severity, n (%)" in variables


def test_table_one_shows_no_identifiers_or_dates(table_one_result):
    recovery, table = table_one_result
    assert_no_identifiers(table, recovery["participant_id"])


def test_table_one_hides_small_categorical_counts(table_one_result):
    _, table = table_one_result
    categorical = table[table[TABLE_ONE_VARIABLE].str.endswith(", n (%)")]
    for column in ("Overall", "low", "moderate", "high"):
        for cell in categorical[column]:
            count = int(cell.split()[0]) if cell[:1].isdigit() else None
            assert count is None or count == 0 or count >= 5, (column, cell)
    assert (categorical[["low", "moderate", "high"]] == "<5").any().any()


def test_table_one_blanks_a_group_too_small_to_show():
    recovery = recovery_frame({"low": 3, "moderate": 30, "high": 30})
    table = table_one(recovery, "adherence_group", {"min_cell_size": 5})
    assert table["low"].tolist()[0] == "<5"
    assert set(table["low"].tolist()[1:]) == {""}
    assert all(set(table[name]) == {""} for name in smd_columns(table) if "low" in name)


# --- tidy formatting --------------------------------------------------------------------------


def test_p_values_and_intervals_read_as_in_papers():
    assert format_p_value(0.0004) == "<0.001"
    assert format_p_value(0.0123) == "0.012"
    assert format_p_value(np.nan) == ""
    assert format_interval(1.2345, 1.01, 1.5) == "1.23 (1.01 to 1.50)"
    assert format_interval(-0.5, -1.0, 0.2) == "-0.50 (-1.00 to 0.20)"


def test_readable_terms():
    assert readable_term("severity[moderate]") == "Severity: moderate"
    assert readable_term("overall_adherence") == "Overall adherence"
    assert readable_term("(Intercept)") == "Intercept"
    assert readable_term("week:adherence_group[T.low]") == "Week × adherence group: low"


def test_format_tidy_rounds_and_adds_hazard_ratio_text():
    tidy = pd.DataFrame(
        {
            "term": ["overall_adherence", "severity[severe]"],
            "estimate": [0.2070, -0.5],
            "std_error": [0.1, 0.2],
            "statistic": [2.07, -2.5],
            "p_value": [0.0386, 0.00001],
            "conf_low": [0.011, -0.892],
            "conf_high": [0.403, -0.108],
            "hazard_ratio": [1.23, 0.6065],
            "hr_conf_low": [1.011, 0.4098],
            "hr_conf_high": [1.4963, 0.8976],
        }
    )
    result = format_tidy(tidy, columns=["term", "hazard ratio (95% CI)", "p_value"])
    assert result.to_dict("list") == {
        "term": ["Overall adherence", "Severity: severe"],
        "hazard ratio (95% CI)": ["1.23 (1.01 to 1.50)", "0.61 (0.41 to 0.90)"],
        "p_value": ["0.039", "<0.001"],
    }
    assert format_tidy(tidy, digits=1)["estimate"].tolist() == ["0.2", "-0.5"]
    with pytest.raises(DataError):
        format_tidy(tidy, columns=["nope"])


# --- privacy guard ----------------------------------------------------------------------------


CLEAN = pd.DataFrame(
    {
        "group": ["low", "high"],
        "n": [12, 30],
        "hazard ratio (95% CI)": ["1.23 (1.01 to 1.50)"] * 2,
        "p_value": ["<0.001", "0.045"],
        "median_weeks": [8.5, 12.25],
    }
)


def test_guard_passes_a_clean_table():
    assert find_identifiers_or_dates(CLEAN, [CANARY_ID, "P0001"]) == []
    assert_no_identifiers(CLEAN, [CANARY_ID])
    assert_no_identifiers("<table><td>1.23 (1.01-1.50)</td><td>0.12-0.34</td></table>")


@pytest.mark.parametrize(
    "where",
    ["cell", "index", "column name"],
)
def test_guard_catches_a_canary_id_anywhere(where):
    table = CLEAN.copy()
    if where == "cell":
        table.loc[1, "group"] = f"only {CANARY_ID.lower()}"
    elif where == "index":
        table.index = ["a", CANARY_ID]
    else:
        table = table.rename(columns={"n": f"n ({CANARY_ID})"})
    findings = find_identifiers_or_dates(table, [CANARY_ID])
    assert findings and CANARY_ID.lower() in findings[0].lower()
    with pytest.raises(DataError, match="identifying"):
        assert_no_identifiers(table, [CANARY_ID])


def test_guard_does_not_match_an_id_inside_a_longer_one():
    assert find_identifiers_or_dates(pd.DataFrame({"x": ["P00421"]}), [CANARY_ID]) == []


@pytest.mark.parametrize(
    "date_text",
    [
        "2024-03-12",
        "12/03/2024",
        "03-12-2024",
        "12.03.2024",
        "2024/3/9",
        "12 Mar 2024",
        "March 12, 2024",
        "visit on 2024-03-12T10:00",
    ],
)
@pytest.mark.parametrize("where", ["cell", "index", "column name"])
def test_guard_catches_dates(date_text, where):
    table = CLEAN.copy()
    if where == "cell":
        table.loc[0, "group"] = date_text
    elif where == "index":
        table.index = [date_text, "b"]
    else:
        table = table.rename(columns={"group": date_text})
    assert any("date" in finding for finding in find_identifiers_or_dates(table))
    with pytest.raises(DataError):
        assert_no_identifiers(table)


def test_guard_catches_date_objects_and_identifier_columns():
    dated = CLEAN.assign(enrolled_on=pd.to_datetime(["2024-01-02", "2024-02-03"]))
    assert any("date column" in f for f in find_identifiers_or_dates(dated))
    with_ids = CLEAN.assign(participant_id=["x", "y"])
    assert any("identifier column" in f for f in find_identifiers_or_dates(with_ids))
    assert find_identifiers_or_dates(f"rendered text with {CANARY_ID}", [CANARY_ID])


def test_table_one_reads_the_shipped_params(params):
    recovery = recovery_frame({"high": 20, "low": 20})
    table = table_one(recovery, params["fit"]["group"], params)
    assert params["report"]["min_cell_size"] == 5
    assert table.columns.get_loc("low") < table.columns.get_loc("high")


# --- gtsummary-style tables ---------------------------------------------------------------------

PRIMARY_UNITS = {
    "weekly_adherence": {"per": 0.1, "label": "per 10 percentage points of weekly adherence"},
    "weekly_sitting_hours": {"per": 1.0, "label": "per hour of daily sitting"},
}


def cox_like(rows: list[tuple], n: int, events: int) -> pd.DataFrame:
    """A fit-stage regression table: (term, log-HR, low, high, p, reference) rows."""
    table = pd.DataFrame(
        rows, columns=["term", "estimate", "conf_low", "conf_high", "p_value", "reference"]
    )
    table["hazard_ratio"] = np.exp(table["estimate"])
    table["hr_conf_low"] = np.exp(table["conf_low"])
    table["hr_conf_high"] = np.exp(table["conf_high"])
    table["estimable"] = True
    table["reason"] = ""
    return table.assign(n=n, events=events)


ADJUSTED_ROWS = [
    ("overall_adherence", 2.147, 1.654, 2.640, 1e-17, False),
    ("severity[mild]", 0.0, np.nan, np.nan, np.nan, True),
    ("severity[moderate]", -0.451, -0.679, -0.223, 0.000109, False),
    ("chronic[False]", 0.0, np.nan, np.nan, np.nan, True),
    ("chronic[True]", -0.695, -0.903, -0.487, 0.0123, False),
    ("adherence_group[low]", 0.0, np.nan, np.nan, np.nan, True),
    ("adherence_group[high]", 0.5, 0.1, 0.9, 0.04, False),
]


def test_regression_table_reads_as_gtsummary():
    adjusted = cox_like(ADJUSTED_ROWS, n=500, events=408)
    # The unadjusted models lack a term the adjusted one has, in another order.
    unadjusted = cox_like([ADJUSTED_ROWS[i] for i in (3, 4, 0, 1, 2)], n=500, events=408).assign(
        estimate=lambda t: t["estimate"] / 2
    )
    unadjusted["hazard_ratio"] = np.exp(unadjusted["estimate"])
    table = regression_table(adjusted, unadjusted, units=PRIMARY_UNITS)
    frame = table.frame.set_index(CHARACTERISTIC)
    # A row per variable, its levels under it, the reference as its own row.
    assert list(frame.index) == [
        "Overall adherence, per 10 percentage points",
        "Severity",
        "\u2003mild",
        "\u2003moderate",
        "Symptom duration at enrolment",
        "\u2003recent",
        "\u2003chronic",
        "Adherence group",
        "\u2003low",
        "\u2003high",
    ]
    assert frame.loc["\u2003mild", "Adjusted HR (95% CI)"] == "—"
    assert frame.loc["\u2003low", "Adjusted HR (95% CI)"] == "—"
    # Per 10 percentage points: exp(0.1 x log-HR per 1 of the fraction).
    assert frame.iloc[0]["Adjusted HR (95% CI)"] == "1.24 (1.18 to 1.30)"
    assert frame.iloc[0]["Adjusted p-value"] == "<0.001"
    assert frame.loc["\u2003chronic", "Adjusted p-value"] == "0.012"
    # Aligned by term: the unadjusted chronic row is the unadjusted chronic estimate.
    assert frame.loc["\u2003chronic", "Unadjusted HR (95% CI)"].startswith(
        f"{np.exp(-0.695 / 2):.2f} ("
    )
    assert frame.loc["\u2003high", "Unadjusted HR (95% CI)"] == ""  # not in those models
    assert list(table.spanners) == [
        "Unadjusted (N = 500; 408 events)",
        "Adjusted (N = 500; 408 events)",
    ]
    shown = " ".join(table.frame.astype(str).to_numpy().ravel()) + " ".join(table.frame.columns)
    for raw in ("adherence_group", "Adherence grouplow", "Chronic: True", "p_value", "nan"):
        assert raw not in shown


def test_regression_table_states_n_per_row_when_models_differ_and_why_not_estimable():
    adjusted = cox_like(ADJUSTED_ROWS[:3], n=500, events=408)
    adjusted.loc[2, ["estimable", "reason", "hazard_ratio"]] = [False, "no events in level", np.nan]
    unadjusted = cox_like(ADJUSTED_ROWS[:3], n=500, events=408)
    unadjusted.loc[0, ["n", "events"]] = [498, 407]
    table = regression_table(adjusted, unadjusted)
    frame = table.frame.set_index(CHARACTERISTIC)
    assert frame.loc["\u2003moderate", "Adjusted HR (95% CI)"] == (
        "not estimable: no events in level"
    )
    assert "Unadjusted N" in table.spanners["Unadjusted"]
    assert frame.iloc[0]["Unadjusted N"] == 498
    assert frame.iloc[0]["Unadjusted events"] == 407


def test_the_reference_rows_follow_params_reference_levels(params):
    """The fit stage codes factors against fit.reference_levels; the table shows that level."""
    references = params["fit"]["reference_levels"]
    tidy = cox_like(
        [
            ("severity[moderate]", -0.4, -0.6, -0.2, 0.01, False),
            ("underlying_condition[disc]", -0.8, -1.0, -0.5, 0.001, False),
        ],
        n=100,
        events=80,
    ).drop(columns=["reference", "n", "events"])
    coded = with_reference_rows(tidy, references).assign(n=100, events=80)
    frame = regression_table(coded).frame
    reference_rows = frame[frame["Model HR (95% CI)"] == "—"][CHARACTERISTIC].str.strip()
    assert list(reference_rows) == [references["severity"], references["underlying_condition"]]


def test_one_interval_style_across_tables():
    adjusted = cox_like(ADJUSTED_ROWS, n=500, events=408)
    shown = regression_table(adjusted).frame["Model HR (95% CI)"]
    estimates = [text for text in shown if text and text != "—"]
    assert estimates and all(
        re.fullmatch(r"\d+\.\d\d \(\d+\.\d\d to \d+\.\d\d\)", t) for t in estimates
    )
    assert format_interval(-0.5, -1.0, -0.2) == "-0.50 (-1.00 to -0.20)"


def test_table_one_shows_skewed_variables_as_medians_and_missing_per_variable():
    recovery = recovery_frame({"low": 40, "high": 40})
    recovery["symptom_months"] = np.random.default_rng(3).lognormal(2, 1.2, len(recovery))
    recovery.loc[:4, "sex"] = None
    flat, _ = exact_table_one(recovery, "adherence_group", {"group_order": ["low", "high"]})
    variables = list(dict.fromkeys(flat[TABLE_ONE_VARIABLE]))
    assert "Symptom duration (months), median [Q1,Q3]" in variables
    assert "Age (years), mean (SD)" in variables
    first_rows = flat.drop_duplicates(TABLE_ONE_VARIABLE).set_index(TABLE_ONE_VARIABLE)
    assert first_rows.loc["Sex, n (%)", "Missing"] == 5
    assert first_rows.loc["Severity, n (%)", "Missing"] == 0
    assert first_rows.loc["Age (years), mean (SD)", "Missing"] == 0
    assert FOLLOW_UP_LABEL in variables
    adherence = flat[flat[TABLE_ONE_VARIABLE].str.startswith("Overall adherence (%")]
    mean = float(adherence["Overall"].iloc[0].split(" ")[0])
    assert mean == pytest.approx(100 * recovery["overall_adherence"].mean(), abs=0.05)
    chronic = flat[flat[TABLE_ONE_VARIABLE].str.startswith("Recent or chronic")]
    assert list(chronic[TABLE_ONE_LEVEL]) == ["recent", "chronic"]


def test_follow_up_is_reverse_kaplan_meier_by_hand():
    """Weeks 1-5, recovered at 1 and 3. Reverse KM (ending follow-up is the event): S = 1 at
    week 1 (a recovery, censored), 3/4 at week 2, 3/4 at 3, 3/4 x 1/2 = 0.375 at week 4, so the
    median is 4 weeks (R: survfit(Surv(c(1,2,3,4,5), c(0,1,0,1,1)) ~ 1) gives median 4);
    range 1 to 5 weeks."""
    frame = pd.DataFrame(
        {
            "time_to_recovery_days": [7.0, 14.0, 21.0, 28.0, 35.0],
            "recovered": [True, False, True, False, False],
            "adherence_group": ["low"] * 5,
        }
    )
    row = follow_up_row(frame, "adherence_group", ["Overall", "low"])
    assert row.loc[0, "Overall"] == "4.0 [1.0, 5.0]"
    assert row.loc[0, "low"] == "4.0 [1.0, 5.0]"


def test_show_table_is_self_contained_html():
    html = show_table(regression_table(cox_like(ADJUSTED_ROWS, 500, 408)), "Table 2. Cox").data
    assert "Model (N = 500; 408 events)" in html
    assert "Table 2. Cox" in html
    assert not re.search(r"<script|<link|src=|href=|@import|url\(", html)
    assert (
        html == show_table(regression_table(cox_like(ADJUSTED_ROWS, 500, 408)), "Table 2. Cox").data
    )


def test_table_one_for_display_puts_levels_under_their_variable():
    flat = pd.DataFrame(
        {
            "variable": ["n", "Age (years), mean (SD)", "Sex, n (%)", "Sex, n (%)"],
            "level": ["", "", "female", "male"],
            "Missing": ["", 0, 1, ""],
            "Overall": ["23", "44.0 (12.0)", "12 (54.5)", "10 (45.5)"],
            "SMD (low,high)": ["", "0.10", "0.34", ""],
        }
    )
    shown = table_one_for_display(flat)
    assert list(shown[CHARACTERISTIC]) == [
        "n",
        "Age (years), mean (SD)",
        "Sex, n (%)",
        "\u2003female",
        "\u2003male",
    ]
    sex = shown.set_index(CHARACTERISTIC).loc["Sex, n (%)"]
    assert (sex["Missing"], sex["Overall"], sex["SMD (low,high)"]) == (1, "", "0.34")
    assert shown.set_index(CHARACTERISTIC).loc["\u2003male", "Overall"] == "10 (45.5)"
    html = show_table(shown, "Table 1", TABLE_ONE_NOTES).data
    assert "reverse Kaplan-Meier" in html and "skewness" in html


def test_forest_rows_show_what_the_regression_table_shows():
    """The forest plot draws the table's numbers: per 10 points, levels against their
    reference, no reference rows (HR 1 by definition)."""
    rows = forest_rows(cox_like(ADJUSTED_ROWS, n=500, events=408), PRIMARY_UNITS)
    assert rows["term"].tolist() == [
        "Overall adherence, per 10 percentage points",
        "Severity: moderate vs mild",
        "Symptom duration at enrolment: chronic vs recent",
        "Adherence group: high vs low",
    ]
    assert rows.loc[0, "hazard_ratio"] == pytest.approx(np.exp(0.1 * 2.147))
    assert rows.loc[0, "hr_conf_high"] == pytest.approx(np.exp(0.1 * 2.640))
    assert rows.loc[1, "hazard_ratio"] == pytest.approx(np.exp(-0.451))
    ax = plot_forest(rows)
    assert [tick.get_text() for tick in ax.get_yticklabels()] == rows["term"].tolist()
    plt.close(ax.figure)


def _coefficients(rows: list[tuple], n: int, **counts) -> pd.DataFrame:
    """A fit-stage table without hazard ratios (AFT, mixed): (term, estimate, low, high, p,
    reference) rows."""
    table = pd.DataFrame(
        rows, columns=["term", "estimate", "conf_low", "conf_high", "p_value", "reference"]
    )
    return table.assign(n=n, **counts)


def test_models_side_by_side_as_time_ratios_per_clinical_step_without_intercept_or_scale():
    rows = [
        ("(Intercept)", 4.8, 4.6, 5.0, 0.0, False),
        ("overall_adherence", -0.61, -0.78, -0.44, 1e-12, False),
        ("severity[mild]", 0.0, np.nan, np.nan, np.nan, True),
        ("severity[severe]", 0.27, 0.18, 0.37, 2e-8, False),
        ("Log(scale)", -1.0, -1.08, -0.92, 0.0, False),
    ]
    table = merged_regression_table(
        [
            ("Weibull", _coefficients(rows, 492, events=408)),
            ("Log-normal", _coefficients(rows[:3], 490, events=407)),
        ],
        PRIMARY_UNITS,
        estimate_header="TR (95% CI)",
        min_cell_size=5,
    )
    frame = table.frame.set_index(CHARACTERISTIC)
    assert list(frame.index) == [
        "Overall adherence, per 10 percentage points",
        "Severity",
        "\u2003mild",
        "\u2003severe",
    ]
    # exp(0.1 x coefficient per 1 of the fraction); a level exp(coefficient).
    assert frame.iloc[0]["Weibull TR (95% CI)"] == format_interval(
        *np.exp(0.1 * np.array([-0.61, -0.78, -0.44]))
    )
    assert frame.loc["\u2003severe", "Weibull TR (95% CI)"] == format_interval(
        *np.exp([0.27, 0.18, 0.37])
    )
    assert frame.loc["\u2003severe", "Log-normal TR (95% CI)"] == ""
    assert list(table.spanners) == [
        "Weibull (N = 492; 408 events)",
        "Log-normal (N = 490; 407 events)",
    ]
    assert table.notes[0].startswith("TR = time ratio")


def test_a_linear_model_shows_differences_in_means_with_people_and_observations():
    rows = [
        ("week", -0.07, -0.12, -0.02, 0.005, False),
        ("week_ns2", 0.6, -1.6, 2.9, 0.58, False),
        ("adherence_group[low]", 0.0, np.nan, np.nan, np.nan, True),
        ("adherence_group[high]", 0.22, -0.24, 0.68, 0.35, False),
        ("week:adherence_group[low]", 0.0, np.nan, np.nan, np.nan, True),
        ("week:adherence_group[high]", -0.08, -0.14, -0.02, 0.0087, False),
    ]
    table = merged_regression_table(
        [("Hip pain (NRS 0-10)", _coefficients(rows, 500, observations=10288))],
        estimate_header="Beta (95% CI)",
        exponentiate=False,
    )
    frame = table.frame.set_index(CHARACTERISTIC)
    assert list(frame.index) == [
        "Week",
        "Week, natural-spline basis 2",
        "Adherence group",
        "\u2003low",
        "\u2003high",
        "Week × adherence group",
        "\u2003low",
        "\u2003high",
    ]
    assert frame.iloc[0]["Hip pain (NRS 0-10) Beta (95% CI)"] == "-0.07 (-0.12 to -0.02)"
    assert frame.iloc[-1]["Hip pain (NRS 0-10) p-value"] == "0.009"
    assert list(table.spanners) == ["Hip pain (NRS 0-10) (N = 500; 10288 observations)"]


def test_counts_in_regression_tables_go_through_the_privacy_rule():
    small = cox_like(ADJUSTED_ROWS[:3], n=40, events=3)
    assert list(regression_table(small, min_cell_size=5).spanners) == ["Model (N = 40; <5 events)"]
    per_row = cox_like(ADJUSTED_ROWS[:3], n=40, events=30)
    per_row.loc[0, ["n", "events"]] = [38, 4]
    table = regression_table(small.assign(events=30), per_row, min_cell_size=5)
    assert table.frame.iloc[0]["Unadjusted events"] == "<5"
    assert table.frame.iloc[0]["Unadjusted N"] == "38"


def test_show_table_labels_columns_under_a_model_whose_name_has_parentheses():
    rows = [("week", -0.07, -0.12, -0.02, 0.005, False)]
    table = merged_regression_table(
        [("Hip pain (NRS 0-10)", _coefficients(rows, 500, observations=10288))],
        estimate_header="Beta (95% CI)",
        exponentiate=False,
    )
    html = show_table(table, "Mixed").data
    assert "Hip pain (NRS 0-10) (N = 500; 10288 observations)" in html
    assert ">Beta (95% CI)<" in html and ">p-value<" in html
    assert "(NRS 0-10) Beta" not in html
