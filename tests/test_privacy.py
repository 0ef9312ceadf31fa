"""Privacy of rendered reports: no identifier or calendar date leaves, small cells are hidden.

Uses the shared rendered study of test_report.py: a simulated study in which one participant was
renamed to a canary id in every raw file before clean/derive/fit/report. A report shows no
calendar date at all, not even when it was rendered.
"""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from analysis.privacy import flow_counts, table_one_counts
from analysis.report.inputs import ReportData
from analysis.tables import FLOW_CHAIN, find_identifiers_or_dates
from tests.test_privacy_rules import linear_recovery, shown_counts, subtraction_attack
from tests.test_report import CANARY_ID, build_rendered_study

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Columns of report CSVs that count people.
COUNT_COLUMNS = ("n", "n_risk", "events", "n_in_profile", "recovered", "withdrawn", "censored")
MIN_CELL_SIZE = 5


@pytest.fixture(scope="session")
def rendered_study(tmp_path_factory):
    return build_rendered_study(tmp_path_factory.getbasetemp() / "rendered_study")


def outputs_text(path) -> str:
    """Every output of an executed notebook as text (what a reader of the .ipynb can see)."""
    notebook = nbformat.read(path, as_version=4)
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            for mime, value in output.get("data", {}).items():
                if not mime.startswith("image/"):
                    parts.append(str(value))
    return "\n".join(parts)


def test_the_canary_was_planted_and_analysed(rendered_study):
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    assert CANARY_ID in set(recovery["participant_id"])
    assert CANARY_ID in (rendered_study.data / "raw" / "participants.csv").read_text()


def test_canary_identifier_appears_in_no_report_output(rendered_study):
    files = [
        *rendered_study.html_files,
        *rendered_study.csv_files,
        *rendered_study.executed_notebooks,
    ]
    assert len(rendered_study.html_files) >= 4 and rendered_study.csv_files
    for path in files:
        text = path.read_text()
        for needle in (CANARY_ID, "CANARY", rendered_study.canary_original_id):
            assert needle.lower() not in text.lower(), f"{needle} in {path.name}"


def test_no_participant_id_or_date_in_any_csv(rendered_study):
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    identifiers = recovery["participant_id"].tolist()
    for path in rendered_study.csv_files:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert find_identifiers_or_dates(table, identifiers) == [], path.name
        assert not ISO_DATE.search(path.read_text()), path.name


def test_no_calendar_date_in_html_or_notebook_outputs(rendered_study):
    for path in rendered_study.html_files:
        visible = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text())
        assert not ISO_DATE.search(visible), f"{path.name}: {ISO_DATE.search(visible)}"
        assert find_identifiers_or_dates(visible) == [], path.name
    for path in rendered_study.executed_notebooks:
        assert not ISO_DATE.search(outputs_text(path)), path.name


def test_no_count_below_the_threshold_is_shown(rendered_study):
    for path in rendered_study.csv_files:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in set(COUNT_COLUMNS) & set(table.columns):
            counts = pd.to_numeric(table[column], errors="coerce")
            small = counts[(counts > 0) & (counts < MIN_CELL_SIZE)]
            assert small.empty, f"{path.name}:{column} shows {small.tolist()}"


def test_no_small_count_is_quoted_in_text(rendered_study):
    quoted = re.compile(rf"\bn\s*=\s*([1-{MIN_CELL_SIZE - 1}])\b")
    for path in [*rendered_study.csv_files, *rendered_study.html_files]:
        match = quoted.search(path.read_text())
        assert match is None, f"{path.name}: {match.group(0) if match else ''}"


def test_a_small_site_triggers_suppression(rendered_study):
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    sizes = recovery.groupby(["site", "adherence_group"]).size()
    small = sizes[sizes < MIN_CELL_SIZE]
    assert not small.empty, "the simulated study has no small site-group"
    site, group = small.index[0]
    if (recovery["site"] == site).sum() < MIN_CELL_SIZE:
        assert not rendered_study.site_report(site).exists()
        return
    files = rendered_study.site_report(site, "_files")
    outcomes = pd.read_csv(files / "outcomes_by_group.csv", dtype=str)
    row = outcomes[outcomes["group"] == group].iloc[0]
    assert row["n"] == f"<{MIN_CELL_SIZE}" and row["suppressed"] == "True"
    # The small group is left out of every curve and model of the site report (all of them
    # are left out when every group of the site is small).
    for name in ("km_curves", "km_at_risk", "km_medians", "cumulative_incidence"):
        if (files / f"{name}.csv").exists():
            table = pd.read_csv(files / f"{name}.csv", dtype=str)
            assert group not in set(table["group"]), name
    html = rendered_study.site_report(site).read_text()
    assert re.search(rf"Group\(s\) [^<]*\b{group}\b[^<]* had fewer than {MIN_CELL_SIZE}", html)
    # The whole-study Table 1 hides the site's small cells too.
    table_one = pd.read_csv(
        rendered_study.reports / "study_report_files" / "table_one.csv", dtype=str
    )
    assert (table_one == f"<{MIN_CELL_SIZE}").any().any()


def test_curves_stop_before_fewer_than_k_are_at_risk(rendered_study):
    for path in rendered_study.reports.glob("**/*_files/km_curves*.csv"):
        curves = pd.read_csv(path)
        assert not {"n_risk", "n_event", "n_censor"} & set(curves.columns), path
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    files = rendered_study.reports / "study_report_files"
    group = "adherence_group"
    for name, event in (("km_curves", None), ("cumulative_incidence", "recovered")):
        curves = pd.read_csv(files / f"{name}.csv")
        if event is not None:
            curves = curves[curves["event"] == event]
        for level, curve in curves.groupby("group"):
            people = recovery[recovery[group] == level]
            times = people["time_to_recovery_days"].to_numpy()
            event_times = times[(people["event_type"] == "recovered").to_numpy()]
            at_risk = [(times >= t).sum() for t in curve["time"]]
            assert min(at_risk) >= MIN_CELL_SIZE, (name, level)
            # Every published step rests on at least k events since the previous one.
            cumulative = [(event_times <= t).sum() for t in curve["time"]]
            assert all(step >= MIN_CELL_SIZE for step in np.diff([0, *cumulative])), (name, level)


def test_numeric_ids_are_looked_for_only_where_ids_appear():
    """REDCap numbers records 1, 2, 3: a count of 2 is not participant 2."""
    ids = ["1", "2", "3", "17"]
    counts = pd.DataFrame({"group": ["low", "high"], "n": [2, 17], "text": ["1 (50%)", "3 of 17"]})
    assert find_identifiers_or_dates(counts, ids) == []
    listed = pd.DataFrame({"n": [5]}, index=pd.Index(["17"], name="who"))
    assert find_identifiers_or_dates(listed, ids) == ["participant id '17' in index"]
    assert find_identifiers_or_dates("record 3 withdrew early", ids) == [
        "participant id 'record 3' in text"
    ]
    assert find_identifiers_or_dates(pd.DataFrame({"participant_id": [1]}), ids) == [
        "identifier column 'participant_id'"
    ]
    # Ids with letters are still found anywhere.
    assert find_identifiers_or_dates("seen: P-7 and more", ["P-7"]) != []


def test_report_data_accepts_counts_equal_to_numeric_ids(tmp_path):
    data = ReportData(tmp_path / "files", identifiers=[str(i) for i in range(1, 301)])
    flow = pd.DataFrame({"stage": ["enrolled", "analysed"], "n": [300, 12]})
    data.save("cohort_flow", flow)
    assert (tmp_path / "files" / "cohort_flow.csv").is_file()


def test_no_hidden_count_of_a_table_one_can_be_recovered(rendered_study):
    """The attacker: from each published Table 1 and how its counts add up (levels to n, groups
    to Overall, the missing level to Missing), recover hidden cells by linear algebra."""
    tables = list(rendered_study.reports.glob("**/table_one.csv"))
    assert tables
    for path in tables:
        shown = pd.read_csv(path, dtype=str, keep_default_na=False)
        groups = [
            name
            for name in shown.columns[2:]
            if name not in ("Missing", "Overall") and not name.startswith("SMD")
        ]
        # Hidden cells get a placeholder; the attack uses only the published ones. A blank
        # Missing cell is tableone's way of saying "see the missing level", not a hidden count.
        placeholder = shown.copy()
        for column in ["Overall", *groups]:
            placeholder[column] = shown[column].mask(~shown[column].str[:1].str.isdigit(), "0")
        is_mark = shown["Missing"].str.startswith("<") | (shown["Missing"] == "suppressed")
        placeholder["Missing"] = shown["Missing"].mask(is_mark, "0")
        counts = table_one_counts(placeholder, groups, MIN_CELL_SIZE)
        hidden = {key for key, text in shown_counts(shown, counts).items() if text is None}
        recovered = linear_recovery(counts, hidden)
        recovered.update(subtraction_attack(counts, hidden))
        leaks = {key: value for key, value in recovered.items() if 0 < value < MIN_CELL_SIZE}
        assert not leaks, f"{path.relative_to(rendered_study.reports)}: {leaks}"


def test_no_hidden_count_of_the_cohort_flow_can_be_recovered(rendered_study):
    """The attacker on the flow diagram: enrolled = removed + included, included = left out +
    analysed, analysed = the four outcomes (once, 504 - 500 = 4 gave a hidden count away)."""
    paths = list(rendered_study.reports.glob("**/cohort_flow.csv"))
    assert paths
    for path in paths:
        shown = pd.read_csv(path, dtype=str, keep_default_na=False)
        is_count = shown["n"].str.fullmatch(r"\d+")
        placeholder = shown.assign(n=shown["n"].where(is_count, "0").astype(int))
        counts = flow_counts(placeholder, FLOW_CHAIN)
        hidden = {key for key, visible in zip(counts.cells, is_count, strict=True) if not visible}
        recovered = linear_recovery(counts, hidden)
        recovered.update(subtraction_attack(counts, hidden))
        leaks = {key: value for key, value in recovered.items() if 0 < value < MIN_CELL_SIZE}
        assert not leaks, f"{path.relative_to(rendered_study.reports)}: {leaks}"
        assert not (is_count & (placeholder["n"] > 0) & (placeholder["n"] < MIN_CELL_SIZE)).any()
