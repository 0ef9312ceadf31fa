"""Report tables: small-cell suppression, cohort flow, Table 1, tidy formatting, privacy guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.privacy import (
    SUPPRESSED_COLUMN,
    groups_to_suppress,
    smd_columns,
    suppress_small_cells,
)
from analysis.tables import (
    OUTCOME_STAGES,
    STAGE_ANALYSED,
    STAGE_ENROLLED,
    STAGE_INCLUDED,
    STAGE_NO_GROUP,
    STAGE_PARTICIPANT_DUPLICATES,
    STAGE_PARTICIPANT_QUARANTINED,
    STAGE_RECORDS_QUARANTINED,
    TABLE_ONE_LEVEL,
    TABLE_ONE_VARIABLE,
    assert_no_identifiers,
    cohort_flow,
    find_identifiers_or_dates,
    format_interval,
    format_p_value,
    format_tidy,
    readable_term,
    table_one,
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
