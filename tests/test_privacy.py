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
from bs4 import BeautifulSoup

from analysis.privacy import (
    PublishedCounts,
    ReportCounts,
    Total,
    flow_counts,
    plan_report,
    publish_report,
    same_count,
    small_counts_shown,
    table_one_counts,
)
from analysis.report import inputs
from analysis.report.comparison import exact_outcome_counts
from analysis.report.inputs import ReportData
from analysis.schema import EVENT_TYPES
from analysis.tables import (
    FLOW_CHAIN,
    FLOW_OUTCOME_SUMS,
    cohort_flow,
    csv_safe,
    exact_table_one,
    find_identifiers_or_dates,
)
from tests.test_privacy_rules import linear_recovery, shown_counts, subtraction_attack
from tests.test_report import CANARY_ID, TINY_SITES, build_rendered_study
from tests.test_tables import recovery_frame

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
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
                # A figure's SVG is text too (its metadata, the texts it draws as comments).
                if not mime.startswith("image/") or mime == "image/svg+xml":
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
        visible = re.sub(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+", "", path.read_text())
        assert not ISO_DATE.search(visible), f"{path.name}: {ISO_DATE.search(visible)}"
        assert find_identifiers_or_dates(visible) == [], path.name
    for path in rendered_study.executed_notebooks:
        assert not ISO_DATE.search(outputs_text(path)), path.name


def html_tables(html: str) -> list[pd.DataFrame]:
    """Every table of a rendered page as text: the last header row names the columns."""
    tables = []
    for table in BeautifulSoup(html, "html.parser").find_all("table"):
        rows = [
            [cell.get_text(" ", strip=True) for cell in row.find_all(["th", "td"])]
            for row in table.find_all("tr")
        ]
        headers = [row for row in rows if row] and rows[0]
        body = [row for row in rows[1:] if len(row) == len(headers)]
        if headers:
            columns = [f"{name}" if name else f"column {i}" for i, name in enumerate(headers)]
            tables.append(pd.DataFrame(body, columns=pd.Index(columns).astype(str)))
    return tables


def published_tables(reports) -> dict[str, pd.DataFrame]:
    """Every table under reports/: each CSV, each HTML table, each table a notebook output
    shows (keyed "<file>" or "<file> table <i>")."""
    tables = {}
    for path in sorted(reports.rglob("*.csv")):
        tables[str(path.relative_to(reports))] = pd.read_csv(path, dtype=str, keep_default_na=False)
    for path in sorted(reports.rglob("*.html")):
        for i, table in enumerate(html_tables(path.read_text())):
            tables[f"{path.relative_to(reports)} table {i}"] = table
    for path in sorted(reports.rglob("*.ipynb")):
        html = "\n".join(
            str(output.get("data", {}).get("text/html", ""))
            for cell in nbformat.read(path, as_version=4).cells
            for output in cell.get("outputs", [])
        )
        for i, table in enumerate(html_tables(html)):
            tables[f"{path.relative_to(reports)} table {i}"] = table
    return tables


def test_nothing_under_reports_shows_a_count_below_k(rendered_study):
    """Count columns are those privacy.COUNT_COLUMNS names (and "n (%)" cells of Table 1)."""
    assert not (rendered_study.reports / "models").exists()
    assert not list(rendered_study.reports.rglob("metrics.json"))
    tables = published_tables(rendered_study.reports)
    assert len(tables) > 50
    findings = {
        name: small
        for name, table in tables.items()
        if (small := small_counts_shown(table, MIN_CELL_SIZE))
    }
    assert not findings, findings
    # The fit stage's own tables (numbers at risk down to 1) fail the same scan: they are the
    # analyst's, kept under data/.
    fitted = [
        pd.read_csv(path, dtype=str, keep_default_na=False)
        for path in (rendered_study.data / "models").glob("*.csv")
    ]
    assert any(small_counts_shown(table, MIN_CELL_SIZE) for table in fitted)


def test_the_count_scan_finds_what_it_is_meant_to_find():
    html = (
        "<table><tr><th>group</th><th>week 0</th><th>week 4</th></tr>"
        "<tr><td>low</td><td>9</td><td>2</td></tr></table>"
    )
    (risk,) = html_tables(html)
    assert small_counts_shown(risk, MIN_CELL_SIZE) == ["week 4: 2"]
    table_one = pd.DataFrame(
        {
            "variable": ["n", "Sex, n (%)", "", "Age (years), mean (SD)"],
            "level": ["", "", "female", ""],
            "low": ["9", "", "3 (33.3)", "4.5 (1.2)"],
            "p_value": ["", "", "", "0.004"],
        }
    )
    assert small_counts_shown(table_one, MIN_CELL_SIZE) == ["low: 3 (33.3)"]
    shown = pd.DataFrame({"n": ["<5", "0", "12"], "events": ["suppressed", "3", "7"]})
    assert small_counts_shown(shown, MIN_CELL_SIZE) == ["events: 3"]


def test_no_small_count_is_quoted_in_text(rendered_study):
    quoted = re.compile(rf"\bn\s*=\s*([1-{MIN_CELL_SIZE - 1}])\b")
    for path in [*rendered_study.csv_files, *rendered_study.html_files]:
        match = quoted.search(path.read_text())
        assert match is None, f"{path.name}: {match.group(0) if match else ''}"


def test_a_small_group_at_a_site_is_left_out_of_its_report(rendered_study):
    """Every site-group below k (and every group the site plan hides with it) is left out of
    its site's report, tables, curves and models, and the report says so without its size;
    the whole-study Table 1 hides the same cells."""
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    sizes = recovery.groupby(["site", "adherence_group"]).size()
    small = sizes[(sizes > 0) & (sizes < MIN_CELL_SIZE)]
    assert not small.empty, "the simulated study has no small site-group"
    table_one = pd.read_csv(
        rendered_study.reports / "study_report_files" / "table_one.csv", dtype=str
    )
    site_rows = table_one[table_one["variable"] == "Site, n (%)"]
    checked = 0
    for site, group in small.index:
        shown = site_rows.loc[site_rows["level"] == csv_safe_text(site), group].iloc[0]
        assert shown == f"<{MIN_CELL_SIZE}"
        files = rendered_study.site_report(site, "_files")
        if not files.exists():
            continue
        checked += 1
        for name in ("outcomes_by_group", "km_at_risk", "km_medians", "cumulative_incidence"):
            if (files / f"{name}.csv").exists():
                table = pd.read_csv(files / f"{name}.csv", dtype=str)
                assert group not in set(table["group"]), name
        assert group not in pd.read_csv(files / "table_one.csv", nrows=0).columns
        text = BeautifulSoup(rendered_study.site_report(site).read_text(), "html.parser")
        assert re.search(rf"Left out of this report, people and all: [^.]*\b{group}\b", str(text))
    assert checked, "no site report leaves out a small group"


def csv_safe_text(text: str) -> str:
    """How a text cell reads in a published CSV."""
    return csv_safe(pd.DataFrame({"text": [text]}))["text"].iloc[0]


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


def published_table_one(path) -> tuple[PublishedCounts, set]:
    """A published Table 1 CSV as the attacker reads it: its counts and how they add up, with
    the keys of the hidden cells.

    Hidden cells get a placeholder; the attack uses only the published ones. A blank Missing
    cell is tableone's way of saying "see the missing level", not a hidden count.
    """
    shown = pd.read_csv(path, dtype=str, keep_default_na=False)
    groups = [
        name
        for name in shown.columns[2:]
        if name not in ("Missing", "Overall") and not name.startswith("SMD")
    ]
    placeholder = shown.copy()
    for column in ["Overall", *groups]:
        placeholder[column] = shown[column].mask(~shown[column].str[:1].str.isdigit(), "0")
    is_mark = shown["Missing"].str.startswith("<") | (shown["Missing"] == "suppressed")
    placeholder["Missing"] = shown["Missing"].mask(is_mark, "0")
    counts = table_one_counts(placeholder, groups, MIN_CELL_SIZE)
    hidden = {key for key, text in shown_counts(shown, counts).items() if text is None}
    return counts, hidden


def test_no_hidden_count_of_a_table_one_can_be_recovered(rendered_study):
    """The attacker: from each published Table 1 and how its counts add up (levels to n, groups
    to Overall, the missing level to Missing), recover hidden cells by linear algebra."""
    tables = list(rendered_study.reports.glob("**/table_one.csv"))
    assert tables
    for path in tables:
        counts, hidden = published_table_one(path)
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


# --- the attacker on a whole report -----------------------------------------------------------

OUTCOME_COLUMNS = ("recovered", "withdrawn", "censored")
# The flow's rows that the outcomes by group split by group (censored: lost + end of follow-up).
FLOW_OUTCOME = {"recovered": ("recovered",), "withdrawn": ("withdrawn",)}
FLOW_CENSORED = ("lost to follow-up", "censored at end of follow-up")


def _read_count(text: str) -> int | None:
    return int(text) if str(text).strip().isdigit() else None


def report_counts(files) -> tuple[PublishedCounts, set]:
    """Every count one report publishes in its Table 1, flow, outcomes by group, Kaplan-Meier
    medians and risk table, how they add up within and across tables, and the hidden keys.

    Relations: a group's n is its recovered + withdrawn + censored; the same group's n in
    Table 1, the outcomes, the medians and at time 0 of the risk table is one count, as are its
    recovered and the medians' events; the flow's analysed, recovered and withdrawn are the sums
    over the groups, and lost + end of follow-up the sum of the groups' censored.
    """
    parts, links, hidden = [], [], set()
    table_one_path = files / "table_one.csv"
    table_one_n = {}
    if table_one_path.exists():
        counts, table_one_hidden = published_table_one(table_one_path)
        hidden |= table_one_hidden
        parts.append(counts)
        table_one_n = {key[3]: key for key in counts.cells if key[1] == "n"}
    outcomes = pd.read_csv(files / "outcomes_by_group.csv", dtype=str, keep_default_na=False)
    cells, totals = {}, []
    for row in outcomes.itertuples(index=False):
        group = row.group
        keys = {}
        for column in ("n", *OUTCOME_COLUMNS):
            key = ("outcomes", group, column)
            value = _read_count(getattr(row, column))
            cells[key] = value or 0
            keys[column] = key
            if value is None:
                hidden.add(key)
        totals.append(Total(keys["n"], tuple(keys[c] for c in OUTCOME_COLUMNS)))
        if group in table_one_n:
            links.append(same_count(keys["n"], table_one_n[group]))
    medians_path = files / "km_medians.csv"
    if medians_path.exists():
        medians = pd.read_csv(medians_path, dtype=str, keep_default_na=False)
        for row in medians[medians["group"].isin(outcomes["group"])].itertuples(index=False):
            for column, outcome in (("n", "n"), ("events", "recovered")):
                if column not in medians:  # published once, in the outcomes by group
                    continue
                key = ("medians", row.group, column)
                value = _read_count(getattr(row, column))
                cells[key] = value or 0
                if value is None:
                    hidden.add(key)
                links.append(same_count(key, ("outcomes", row.group, outcome)))
    at_risk_path = files / "km_at_risk.csv"
    if at_risk_path.exists():
        at_risk = pd.read_csv(at_risk_path, dtype=str, keep_default_na=False)
        start = at_risk[
            (pd.to_numeric(at_risk["time"]) == 0) & at_risk["group"].isin(outcomes["group"])
        ]
        for row in start.itertuples(index=False):
            key = ("at risk", row.group, "0")
            value = _read_count(row.n_risk)
            cells[key] = value or 0
            if value is None:
                hidden.add(key)
            links.append(same_count(key, ("outcomes", row.group, "n")))
    parts.append(PublishedCounts(cells, tuple(totals)))
    flow_path = files / "cohort_flow.csv"
    if flow_path.exists():
        shown = pd.read_csv(flow_path, dtype=str, keep_default_na=False)
        is_count = shown["n"].str.fullmatch(r"\d+")
        placeholder = shown.assign(n=shown["n"].where(is_count, "0").astype(int))
        flow = flow_counts(placeholder, FLOW_CHAIN)
        hidden |= {key for key, visible in zip(flow.cells, is_count, strict=True) if not visible}
        by_stage = {key[1]: key for key in flow.cells}
        group_keys = [("outcomes", group, "n") for group in outcomes["group"]]
        links.append(Total(by_stage["analysed"], tuple(group_keys)))
        for stage, (column,) in FLOW_OUTCOME.items():
            links.append(
                Total(by_stage[stage], tuple(("outcomes", g, column) for g in outcomes["group"]))
            )
        # lost + end of follow-up = the groups' censored, through one unpublished total.
        censored = ("flow", "censored, all")
        hidden.add(censored)
        parts.append(PublishedCounts({censored: 0}, unpublished=frozenset({censored})))
        links.append(Total(censored, tuple(by_stage[s] for s in FLOW_CENSORED if s in by_stage)))
        links.append(Total(censored, tuple(("outcomes", g, "censored") for g in outcomes["group"])))
        parts.append(flow)
    counts = parts[0].combine(*parts[1:], links=links)
    return counts, hidden


def report_folders(reports) -> list:
    return sorted(path.parent for path in reports.rglob("*_files/outcomes_by_group.csv"))


def test_the_hostile_study_has_a_tiny_site_with_a_report_and_one_without(rendered_study):
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    sizes = recovery.groupby("site")["adherence_group"].value_counts()
    tiny, micro = TINY_SITES
    assert sorted(sizes[tiny], reverse=True) == list(TINY_SITES[tiny])
    assert sizes[micro].sum() < MIN_CELL_SIZE
    assert rendered_study.site_report(tiny).exists()
    assert not rendered_study.site_report(micro).exists()
    # The group below k is left out of the tiny site's report, its people from every count.
    files = rendered_study.site_report(tiny, "_files")
    outcomes = pd.read_csv(files / "outcomes_by_group.csv", dtype=str)
    small = sizes[tiny][sizes[tiny] < MIN_CELL_SIZE].index[0]
    assert small not in set(outcomes["group"])
    table_one = pd.read_csv(files / "table_one.csv", dtype=str)
    assert table_one.loc[table_one["variable"] == "n", "Overall"].iloc[0] == str(sizes[tiny].max())


def test_no_hidden_count_of_a_report_can_be_recovered(rendered_study):
    """The attacker on each report as a whole: Table 1, flow, outcomes by group, medians and the
    risk table, with every relation between them (report_counts); subtraction, then the linear
    algebra of all relations at once. A relation whose cells are all shown must hold (else the
    attacker's model of the report is wrong, and the test says so)."""
    folders = report_folders(rendered_study.reports)
    tiny, _ = TINY_SITES
    assert rendered_study.site_report(tiny, "_files") in folders and len(folders) >= 4
    for files in folders:
        counts, hidden = report_counts(files)
        for relation in counts.totals:
            members = (relation.total, *relation.parts)
            if not set(members) & hidden:
                total = counts.cells[relation.total]
                assert total == sum(counts.cells[p] for p in relation.parts), (files, relation)
        recovered = linear_recovery(counts, hidden)
        recovered.update(subtraction_attack(counts, hidden))
        leaks = {
            key: value
            for key, value in recovered.items()
            if 0 < value < MIN_CELL_SIZE and key not in counts.unpublished
        }
        assert not leaks, f"{files.relative_to(rendered_study.reports)}: {leaks}"


def _under(prefix: str, counts: PublishedCounts, hidden: set) -> tuple[PublishedCounts, set]:
    """One report's counts with every key under `prefix`, so several reports can be combined."""

    def key(old):
        return (prefix, *old)

    renamed = PublishedCounts(
        {key(k): v for k, v in counts.cells.items()},
        tuple(Total(key(t.total), tuple(key(p) for p in t.parts)) for t in counts.totals),
        unpublished=frozenset(key(k) for k in counts.unpublished),
        always_hidden=frozenset(key(k) for k in counts.always_hidden),
    )
    return renamed, {key(k) for k in hidden}


def test_no_group_at_a_site_can_be_recovered_from_the_reports_read_together(rendered_study):
    """The attacker with the whole-study report and every site report at once (they go to the
    same co-authors): a site report's group sizes are the study Table 1's cells of that site and
    group, and that Table 1 shows each site's size and each group's. Once, site E's report
    showed low 5 and high 9, and the study's Table 1 its 18 people: moderate = 18 - 5 - 9 = 4.
    The site plan leaves out of a site report every group it hides in Table 1's site rows."""
    study_counts, hidden = report_counts(rendered_study.reports / "study_report_files")
    study_counts, hidden = _under("study", study_counts, hidden)
    parts, links = [], []
    sites = inputs.study_sites(rendered_study.data / "processed")
    variable = "Site, n (%)"
    for site in sites:
        files = rendered_study.site_report(site, "_files")
        if not files.exists():
            continue
        counts, site_hidden = _under(site, *report_counts(files))
        parts.append(counts)
        hidden |= site_hidden
        level = csv_safe_text(site)
        for cell in counts.cells:
            if cell[1:2] == ("outcomes",) and cell[3] == "n":
                links.append(same_count(cell, ("study", "table one", variable, level, cell[2])))
    assert links, "no site report shows a group"
    combined = study_counts.combine(*parts, links=links)
    for relation in combined.totals:
        members = (relation.total, *relation.parts)
        if not set(members) & hidden:
            total = combined.cells[relation.total]
            assert total == sum(combined.cells[p] for p in relation.parts), relation
    recovered = linear_recovery(combined, hidden)
    recovered.update(subtraction_attack(combined, hidden))
    leaks = {
        key: value
        for key, value in recovered.items()
        if 0 < value < MIN_CELL_SIZE and key not in combined.unpublished
    }
    assert not leaks, leaks


def test_no_percentage_or_smd_of_a_published_table_one_rests_on_a_hidden_count(rendered_study):
    """What the subtraction attacker does not read: a hidden count's percentage (count /
    percentage gives n back), and an SMD comparing a group in which a count of that variable is
    hidden (with the group sizes, a binary variable's SMD pins the counts)."""
    for path in rendered_study.reports.glob("**/table_one.csv"):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        groups = [c for c in table.columns[3:] if not c.startswith("SMD")]
        for variable, rows in table[table["variable"].str.endswith(", n (%)")].groupby(
            "variable", sort=False
        ):
            hidden_in = set()
            for column in groups:
                cells = rows[column]
                hidden = ~cells.str.match(r"^\d") & (cells != "")
                assert not cells[hidden].str.contains(r"\(").any(), (path, variable, column)
                if hidden.any():
                    hidden_in.add(column)
            for smd in [c for c in table.columns if c.startswith("SMD")]:
                compared = set(smd.removeprefix("SMD (").removesuffix(")").split(","))
                if compared & hidden_in:
                    assert (rows[smd] == "").all(), (path, variable, smd)


def test_a_group_below_k_in_the_whole_study_is_planned_across_its_tables(tmp_path):
    """A pilot study with 3 people in one group: its size is the flow's analysed minus the
    other groups, its outcomes the flow's sums minus theirs. One plan over the outcomes, Table 1
    and the flow (`plan_report`) hides what that needs; the report attacker, reading the CSVs
    as published (with the risk table's group sizes at time 0), recovers nothing."""
    recovery = recovery_frame({"low": 3, "moderate": 40, "high": 50}, seed=7)
    order = ["low", "moderate", "high"]
    flat, groups = exact_table_one(recovery, "adherence_group", {"group_order": order})
    cleaning = {
        "tables": {
            "participants": {
                "input_rows": len(recovery) + 6,
                "kept": len(recovery),
                "quarantined_rows_by_rule": {"invalid_id": 6},
            }
        }
    }
    tables = ReportCounts(
        outcomes=exact_outcome_counts(recovery, "adherence_group", order),
        outcome_parts=EVENT_TYPES,
        table_one=flat,
        table_one_groups=tuple(groups),
        flow=cohort_flow(cleaning, recovery),
        flow_chain=FLOW_CHAIN,
        flow_sums=FLOW_OUTCOME_SUMS,
    )
    published = publish_report(tables, plan_report(tables, MIN_CELL_SIZE))
    published.outcomes.to_csv(tmp_path / "outcomes_by_group.csv", index=False)
    published.table_one.to_csv(tmp_path / "table_one.csv", index=False)
    published.flow.to_csv(tmp_path / "cohort_flow.csv", index=False)
    sizes = tables.outcomes.set_index("group")["n"]
    at_risk = pd.DataFrame({"group": ["moderate", "high"], "time": 0.0})
    at_risk.assign(n_risk=sizes[at_risk["group"]].to_numpy()).to_csv(
        tmp_path / "km_at_risk.csv", index=False
    )
    counts, hidden = report_counts(tmp_path)
    assert ("outcomes", "low", "n") in hidden
    recovered = linear_recovery(counts, hidden)
    recovered.update(subtraction_attack(counts, hidden))
    leaks = {key: value for key, value in recovered.items() if 0 < value < MIN_CELL_SIZE}
    assert not leaks, leaks
