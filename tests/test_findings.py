"""The study report's key findings (sentences from the fit stage's tables), its shape (table of
contents, numbered sections and captions, collapsed provenance, STROBE table), the adherence
report's dose-response sentence and the console's median label. Hand-made tables: fast."""

from __future__ import annotations

import re

import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from analysis.cli import OBSERVED_MEDIAN_HEADING, print_cohort_summary
from analysis.provenance import SYNTHETIC_STUDY, collect_provenance
from analysis.report import adherence_groups, render, shared, study_report
from analysis.schema import Recovery
from tests.conftest import PROJECT_ROOT

MIN_CELL_SIZE = 5
INF = float("inf")
PROFILE = "severity=mild, chronic=False, adherence_group=high, underlying_condition=none"


def primary_effects() -> pd.DataFrame:
    adherence = "per 10 percentage points of weekly adherence"
    nerve = "underlying_condition[nerve_entrapment]"
    rows = [
        ("weekly_adherence", adherence, 1.219, 1.171, 1.270, False),
        ("weekly_sitting_hours", "per hour of daily sitting", 0.844, 0.801, 0.889, False),
        ("severity[mild]", "reference level", 1.0, None, None, True),
        ("severity[severe]", "severe vs mild", 0.389, 0.296, 0.510, False),
        ("chronic[False]", "reference level", 1.0, None, None, True),
        ("chronic[True]", "chronic vs not chronic", 0.47, 0.38, 0.58, False),
        ("underlying_condition[none]", "reference level", 1.0, None, None, True),
        (nerve, "nerve_entrapment vs none", 0.315, 0.221, 0.450, False),
    ]
    frame = pd.DataFrame(
        rows, columns=["term", "unit", "hazard_ratio", "hr_conf_low", "hr_conf_high", "reference"]
    )
    return frame.assign(n=498, events=408)


def models() -> dict[str, pd.DataFrame]:
    return {
        "primary_effects": primary_effects(),
        "km_medians": pd.DataFrame(
            {
                "group": ["low", "moderate", "high", "all"],
                "n": [107, 3, 210, 320],
                "events": [71, 2, 189, 262],
                "median": [208.0, 100.0, 141.0, 166.0],
                "conf_low": [194.0, 90.0, 126.0, 155.0],
                "conf_high": [210.0, None, 154.0, 169.0],
            }
        ),
        "km_median_difference": pd.DataFrame(
            {
                "term": ["moderate - low", "high - low"],
                "estimate": [-108.0, -67.0],
                "conf_low": [-150.0, -82.0],
                "conf_high": [-20.0, -42.0],
            }
        ),
        "milestone_quoted_ranges": pd.DataFrame(
            {
                "milestone": ["first_change", "full_recovery", "full_recovery"],
                "claim": ["first changes within 6-8 weeks", "10+ weeks", "a tiny profile"],
                "profile": [PROFILE, PROFILE, "site=site_E"],
                "people": [24, 24, 3],
                "quantile": [0.5, 0.5, 0.5],
                "estimate_weeks": [6.21, 7.14, 3.0],
                "conf_low_weeks": [4.5, 5.9, 2.0],
                "conf_high_weeks": [7.9, 9.9, 5.0],
                "quoted_low_weeks": [6.0, 10.0, 2.0],
                "quoted_high_weeks": [8.0, INF, 4.0],
                "verdict": ["inconclusive", "disagree", "inconclusive"],
            }
        ),
        "timeline_quoted_ranges": pd.DataFrame(
            {
                "claim": [
                    "mild, recent, high-adherence cases: full recovery takes considerably longer",
                    "severe cases take longer than mild ones",
                ],
                "quoted": ["full recovery beyond 8 weeks (median)", "severe towards the upper end"],
                "observed": [
                    "predicted median of full recovery 12.4 weeks (95% CI 10.9 to 13.5); observed "
                    "Turnbull median of the 13 people in the profile 9.9 weeks (95% CI 7.0 to "
                    "12.1)",
                    "predicted medians: severe 20.0 weeks (n=3); mild 15.2 weeks",
                ],
                "verdict": ["agree", "agree"],
                "detail": ["", ""],
                "profile": [
                    "severity=mild, adherence_group=high, sitting_band=moderate, "
                    "underlying_condition=none, chronic=False, typical_overall_adherence=0.91, "
                    "typical_mean_sitting_hours=7.72",
                    None,
                ],
                "people": [13, None],
                "estimate_weeks": [12.4, None],
                "conf_low_weeks": [10.9, None],
                "conf_high_weeks": [13.5, None],
                "observed_weeks": [9.9, None],
                "observed_conf_low_weeks": [7.0, None],
                "observed_conf_high_weeks": [12.1, None],
            }
        ),
    }


def outcomes() -> pd.DataFrame:
    """As comparison.outcome_counts publishes it: a small cell and its complement hidden."""
    return pd.DataFrame(
        {
            "group": ["low", "moderate", "high"],
            "n": [139, 40, 210],
            "recovered": [90, "suppressed", 189],
            "withdrawn": [41, "<5", 13],
            "censored": [8, 3, 8],
        }
    )


@pytest.fixture(scope="module")
def findings() -> dict[str, list[str]]:
    return study_report.key_findings(models(), outcomes(), MIN_CELL_SIZE)


def test_headline_effects_carry_clinical_units_and_confidence_intervals(findings):
    adherence, sitting = findings["Adherence and sitting"]
    assert "1.22 (95% CI 1.17 to 1.27) per 10 percentage points of weekly adherence" in adherence
    assert "faster" in adherence
    assert "0.84 (95% CI 0.80 to 0.89) per hour of daily sitting" in sitting
    assert "slower" in sitting


def test_factor_effects_are_against_the_reference_level(findings):
    severity, chronic, condition = findings["Severity, duration and underlying condition"]
    assert "severe vs mild 0.39 (95% CI 0.30 to 0.51)" in severity
    # Levels in the tables' words: a case is chronic or recent, not "not chronic".
    assert "chronic vs recent 0.47 (95% CI 0.38 to 0.58)" in chronic
    assert "nerve entrapment vs none 0.32 (95% CI 0.22 to 0.45)" in condition
    # The reference row is the comparison's baseline, never an estimate of its own.
    assert "reference level 1.00" not in severity


def test_medians_in_weeks_with_their_intervals_and_the_differences_with_theirs(findings):
    medians, differences = findings["Time to recovery by adherence group"][:2]
    assert "low 29.7 weeks (95% CI 27.7 to 30.0)" in medians
    assert "high 20.1 weeks (95% CI 18.0 to 22.0)" in medians
    assert "moderate not shown (fewer than 5 people)" in medians
    assert "all" not in re.findall(r"\b(all) \d", medians)
    assert "(bootstrap 95% CI): high minus low -9.6 weeks (95% CI -11.7 to -6.0)" in differences
    # A group of fewer than k people is compared with nothing.
    assert "moderate" not in differences


def test_quoted_ranges_rest_on_confidence_intervals_and_small_claims_are_not_checked(findings):
    sentences = findings["Quoted timelines against the data"]
    text = " ".join(sentences)
    # The rule, once, before the verdicts it decides.
    assert sentences[0].startswith("Each verdict rests on the estimate's 95% CI: agree: the whole")
    assert "(6-8 weeks)" in text and "6.2 weeks (95% CI 4.5 to 7.9): inconclusive" in text
    assert "(10+ weeks)" in text and "7.1 weeks (95% CI 5.9 to 9.9): the data disagree" in text
    assert "24 people" in text
    assert "a tiny profile (2-4 weeks). Not checked: it concerns fewer than 5 people" in text
    assert "n=3" not in text and any("fewer than 5" in s for s in sentences[1:3])


def test_one_profile_estimated_three_ways_is_set_side_by_side_with_what_each_is(findings):
    side_by_side = findings["Quoted timelines against the data"][-1]
    assert side_by_side.startswith(
        "One profile, full recovery, estimated three ways: observed: all such people, 7.1 "
        "weeks (95% CI 5.9 to 9.9); observed: the timeline's profile only, 9.9 weeks (95% CI "
        "7.0 to 12.1); timeline model, 12.4 weeks (95% CI 10.9 to 13.5)."
    )
    assert "first functional changes it puts at 6-8 weeks" in side_by_side
    table = shared.profile_estimates_for_report(
        models()["milestone_quoted_ranges"], models()["timeline_quoted_ranges"], 14
    )
    # The profile's 13 people are fewer than 14: their median is not shown, the others are.
    assert table["people"].tolist() == [24, "<14", ""]
    assert table["median weeks (95% CI)"].iloc[1] == ""
    assert table["what it is"].iloc[1] == (
        "Turnbull median of the people who are mild, high adherence, moderate sitting band, "
        "no underlying condition, recent"
    )
    assert "(overall adherence 91%, sitting 7.7 h/day)" in table["what it is"].iloc[2]


def test_limitations_name_dropout_per_group_and_the_interval_censoring(findings):
    dropout, censoring = findings["Main limitations"]
    assert "low 41 of 139 (29%)" in dropout
    assert "moderate fewer than 5" in dropout
    assert "high 13 of 210 (6%)" in dropout
    assert "interval-censored" in censoring


def test_no_count_below_the_threshold_and_no_placeholder_in_the_prose():
    text = study_report.key_findings_markdown(models(), outcomes(), MIN_CELL_SIZE)
    assert "<" not in text
    counts = re.findall(r"\b(\d+) (?:people|recoveries|of \d+)", text)
    counts += re.findall(r"\bn\s*=\s*(\d+)", text)
    assert counts and all(int(count) >= MIN_CELL_SIZE for count in counts), counts


def test_a_site_without_the_primary_model_gets_what_its_tables_support():
    site_models = {"km_medians": models()["km_medians"]}
    findings = study_report.key_findings(site_models, outcomes(), MIN_CELL_SIZE)
    assert list(findings) == ["Time to recovery by adherence group", "Main limitations"]


def test_site_title_names_the_site_once():
    assert study_report.study_report_title("site_B").endswith("study report, Site B")
    assert "(site" not in study_report.study_report_title("site_B")


def test_strobe_table_covers_items_13_to_17_with_sections_the_notebook_has():
    table = study_report.strobe_table()
    assert table["STROBE item"].tolist() == [13, 14, 15, 16, 17]
    assert "unadjusted" in table.set_index("STROBE item").loc[16, "what is reported"]
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "study_report.ipynb", as_version=4)
    headings = {
        line.removeprefix("## ").strip()
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    }
    assert set(study_report.SECTIONS.values()) == headings


def _notebook_html() -> str:
    """What nbconvert's lab template gives: one div per cell, headings with ids."""

    def cell(body: str) -> str:
        return f'<div class="jp-Cell">{body}</div>'

    def output(body: str) -> str:
        return (
            f'<div class="jp-OutputArea-child"><div class="jp-OutputArea-output">{body}</div></div>'
        )

    image = output("<img src='data:image/png;base64,AAAA'>")
    medians = (
        "<p class='table-caption'><strong>Medians</strong></p><table><tr><td>1</td></tr></table>"
    )
    km_caption = (
        "<p class='figure-caption'><strong>Proportion not yet recovered.</strong> Bands.</p>"
    )
    anchor = "<a class='anchor-link' href='#Key-findings'>¶</a>"
    cells = [
        cell(output("<h1 id='title'>Study report</h1>")),
        cell(f"<h2 id='Key-findings'>Key findings{anchor}</h2>"),
        cell(output(medians) + image + output(km_caption)),
        cell("<h2 id='Cox'>Cox</h2>"),
        cell(image + output("<table><tr><td>2</td></tr></table>")),
        cell("<h2 id='STROBE'>STROBE</h2>"),
        cell(output("<table><tr><td>§[Cox]; §[Absent]</td></tr></table>")),
        cell("<h2 id='Provenance'>Provenance</h2>"),
        cell(output("<table><tr><td>data/raw</td></tr></table>")),
    ]
    return "<main>" + "".join(cells) + "</main>"


@pytest.fixture(scope="module")
def structured() -> BeautifulSoup:
    return BeautifulSoup(render.with_report_structure(_notebook_html()), "html.parser")


def test_sections_are_numbered_and_the_contents_link_every_heading(structured):
    headings = structured.find_all("h2")
    numbers = [int(h.get_text().split(".")[0]) for h in headings]
    assert numbers == list(range(1, len(headings) + 1))
    links = [a["href"] for a in structured.select("nav.toc a")]
    assert links == [f"#{h['id']}" for h in headings]
    # The contents come right after the title.
    assert structured.find("nav").find_previous("h1") is not None
    assert structured.find("nav").find_previous("h2") is None


def test_tables_and_figures_are_numbered_in_order_with_what_they_show(structured):
    tables = [p.get_text() for p in structured.select("p.table-caption")]
    figures = [p.get_text() for p in structured.select("p.figure-caption")]
    assert [t.split(".")[0] for t in tables] == [f"Table {i}" for i in range(1, 5)]
    assert tables[0] == "Table 1. Medians"
    assert tables[1] == "Table 2. Cox"  # no caption of its own: its section names it
    assert figures == ["Figure 1. Proportion not yet recovered. Bands.", "Figure 2. Cox"]


def test_section_references_become_numbered_links(structured):
    cell = structured.find(string=re.compile("not in this report")).parent
    assert "§[" not in structured.get_text()
    assert cell.find("a")["href"] == "#Cox" and cell.find("a").get_text() == "2. Cox"


def test_provenance_contents_are_collapsed_under_its_heading(structured):
    details = structured.find("details")
    assert details is not None and not details.has_attr("open")
    assert "data/raw" in details.get_text()
    assert details.find_previous("h2").get_text().endswith("Provenance")


def test_provenance_is_readable_relative_and_leaves_the_simulator_out(tmp_path):
    project = tmp_path / "project"
    raw = project / "data" / "raw"
    raw.mkdir(parents=True)
    for name in ("participants.csv", "truth.json", "injected_defects.csv"):
        (raw / name).write_text("x\n")
    notebooks = project / "notebooks"
    notebooks.mkdir()
    parameters = {"raw_dir": "../data/raw", "site": None, "flag": True, "min_cell_size": 5}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(notebooks)
        provenance = collect_provenance(
            {"raw": "../data/raw"}, parameters, {"simulate": {"seed": 1}}, project=".."
        )
    outside = collect_provenance({}, {"raw_dir": str(tmp_path / "elsewhere" / "raw")}, {}, "..")
    assert outside.parameters["value"].tolist() == ["elsewhere/raw (outside the project folder)"]
    values = dict(provenance.parameters.to_numpy())
    assert values == {"raw_dir": "data/raw", "site": "not set", "flag": "yes", "min_cell_size": "5"}
    assert provenance.files["file"].tolist() == ["participants.csv"]
    assert provenance.inputs["path"].tolist() == ["data/raw"]
    shown = " ".join(map(str, provenance.environment.to_numpy().ravel()))
    assert shown.count(SYNTHETIC_STUDY) == 1


def test_dose_response_scales_the_interval_with_the_estimate():
    sentence = adherence_groups.dose_response_sentence(primary_effects(), 0.1, 0.3)
    assert "1.22 (95% CI 1.17 to 1.27) per 10 percentage points of weekly adherence" in sentence
    expected = [f"{value**3:.2f}" for value in (1.219, 1.171, 1.270)]
    assert f"{expected[0]} (95% CI {expected[1]} to {expected[2]})" in sentence
    assert adherence_groups.middle_group_width([0.5, 0.8]) == pytest.approx(0.3)


def test_adherence_report_points_to_the_study_report_for_the_same_groups():
    same = adherence_groups.comparison_pointer(
        [0.5, 0.8], ["l", "m", "h"], [0.5, 0.8], ["l", "m", "h"]
    )
    other = adherence_groups.comparison_pointer([0.6], ["l", "h"], [0.5, 0.8], ["l", "m", "h"])
    assert "study report" in same and "not repeated" in same
    assert "differ" in other


def test_console_names_its_median_as_not_kaplan_meier(capsys):
    recovery = pd.DataFrame(
        {
            Recovery.adherence_group: ["low", "low", "high"],
            Recovery.recovered: [True, False, True],
            Recovery.event_type: ["recovered", "withdrawn", "recovered"],
            Recovery.time_to_recovery_days: [70.0, 30.0, 84.0],
        }
    )
    print_cohort_summary(recovery)
    printed = " ".join(capsys.readouterr().out.split())
    assert "not Kaplan-Meier" in OBSERVED_MEDIAN_HEADING
    assert "Kaplan-Meier medians" in printed


@pytest.mark.parametrize(
    ("site", "label"),
    [("site_B", "Site B"), ("Site 3", "Site 3"), ("St. Mary", "St. Mary"), ("site_", "site_")],
)
def test_site_label_tidies_coded_names_and_keeps_every_other_name(site, label):
    assert study_report.site_label(site) == label


def test_adherence_report_names_the_reference_group_the_cox_model_used():
    cox = pd.DataFrame(
        {
            "term": ["adherence_group[low]", "adherence_group[high]", "severity[mild]"],
            "reference": [True, False, True],
        }
    )
    text = adherence_groups.reference_level_text(cox, "adherence_group")
    assert text == "Reference group for the hazard ratios: **low**."
