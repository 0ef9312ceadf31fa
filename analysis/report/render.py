"""Rendering the reports: papermill runs each notebook on a reused kernel, nbconvert exports
HTML without code cells, and the executed notebooks are normalised so that a re-run gives the
same bytes. Also the values each notebook receives (validated by analysis/params.py) and the
list of reports to render (the three notebooks, one study report per site).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill
from bs4 import BeautifulSoup
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.exporters.templateexporter import TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from papermill.exceptions import PapermillExecutionError
from papermill.translators import PythonTranslator, papermill_translators

from analysis.errors import GaRehabError, ReportError
from analysis.io import (
    write_text,
)
from analysis.params import StudyParams
from analysis.report.inputs import model_table_files, sites_with_a_report, study_sites
from analysis.report.kernels import KERNEL_NAME, ReportKernel, ReportKernels, kernel_count

STUDY_REPORT = "study_report"


ADHERENCE_GROUPS = "adherence_groups"


TIMELINE_CALIBRATION = "timeline_calibration"


REPORT_NOTEBOOKS = (STUDY_REPORT, ADHERENCE_GROUPS, TIMELINE_CALIBRATION)


# Notebook parameters that say where outputs go; they are not inputs, so provenance omits them.
OUTPUT_PARAMETERS = ("tables_dir",)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebook_parameters(notebook: Path) -> dict[str, object]:
    """Names and placeholder values of a notebook's `parameters` cell (raises if not one)."""

    cells = [
        cell
        for cell in nbformat.read(notebook, as_version=4).cells
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise ReportError(f"{notebook}: expected one cell tagged 'parameters', found {len(cells)}")
    defaults = {}
    for statement in ast.parse(cells[0].source).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                defaults[target.id] = ast.literal_eval(statement.value)
    return defaults


def _replace_folder(staged: Path, final: Path) -> None:
    """Put a fully written folder where the old one was (old removed only once new is whole)."""
    if final.exists():
        retired = final.with_name(f".{final.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(staged, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)


# Inline the lab template's look but load nothing from the network: no require.js, MathJax or
# mermaid from a CDN, so the report opens offline and a browser logs no failed loads.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
  main { max-width: 1100px; margin: 0 auto; padding: 1em 2em 3em; }
  .jp-OutputArea-output table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 12px; }
  .jp-OutputArea-output th, .jp-OutputArea-output td {
    padding: 3px 8px; text-align: left !important; vertical-align: top; }
  .jp-OutputArea-output td { white-space: nowrap; }
  .jp-OutputArea-output td:last-child { white-space: normal; }
  .jp-OutputArea-output th { background: #f0f0f0; }
  .jp-OutputArea-output tr:nth-child(even) td { background: #fafafa; }
  .jp-RenderedImage img { max-width: 100%; height: auto; }
  p.rendered-at { color: #555; font-size: 12px; }
  nav.toc { border: 1px solid #ddd; padding: 0.5em 1.5em; margin: 1em 0; }
  nav.toc ol { list-style: none; padding-left: 0; margin: 0.3em 0; }
  p.table-caption, p.figure-caption { font-size: 13px; margin: 0.8em 0 0.3em; }
  details.provenance summary { cursor: pointer; color: #333; }
</style>
{%- endblock extra_css -%}
{#- Markdown outputs are built from data (site names, group labels): any HTML in them is
    shown as text, never rendered. -#}
{%- block data_markdown scoped -%}
<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-OutputArea-output {{ extra_class }}"
 data-mime-type="text/markdown">
{{ output.data['text/markdown'] | escape_html | markdown2html }}
</div>
{%- endblock data_markdown -%}
{%- block data_png scoped -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
{#- A 2x (retina) figure carries its display width: without it the browser shows it twice as
    large as drawn, and its text sizes no longer hold. -#}
{%- set size = output.metadata.get('image/png', {}) -%}
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}" alt="Figure"
{%- if size.get('width') %} width="{{ size['width'] | int }}"{% endif %}>
</div>
{%- endblock data_png -%}
{#- A figure (SVG) as an image, so that nothing in it can run, with its size on the page. -#}
{%- block data_svg scoped -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
{%- set size = output.metadata.get('image/svg+xml', {}) -%}
<img src="data:image/svg+xml;base64,{{ output.data['image/svg+xml'] | svg_base64 }}" alt="Figure"
{%- if size.get('width') %} width="{{ size['width'] | int }}"{% endif %}>
</div>
{%- endblock data_svg -%}
"""


class _ReportExporter(HTMLExporter):
    """nbconvert's HTML exporter without its own parse of the page.

    HTMLExporter parses its page once more to give images without one an alt text and to make
    outputs focusable; the report's one parse (`export_html`) does both, so a report with its
    figures inline (megabytes of base64) is parsed and serialised once, not twice. One
    instance per thread keeps the compiled template (a tenth of a second per page to compile).
    """

    def default_filters(self):
        yield from super().default_filters()
        yield ("svg_base64", lambda svg: base64.b64encode(svg.encode()).decode())

    def from_notebook_node(self, nb, resources=None, **kw):
        resources = self._init_resources(resources)
        # As HTMLExporter: the template names a code highlighter (no code is shown here) and
        # a filter choosing which format of each output is shown.
        language = nb.metadata.get("language_info", {})
        self.register_filter(
            "highlight_code",
            Highlight2HTML(
                pygments_lexer=language.get("pygments_lexer", language.get("name")), parent=self
            ),
        )
        self.register_filter(
            "filter_data_type",
            WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources
            ),
        )
        return TemplateExporter.from_notebook_node(self, nb, resources, **kw)


_exporters = threading.local()


def _report_exporter() -> _ReportExporter:
    if not hasattr(_exporters, "exporter"):
        _exporters.exporter = _ReportExporter(
            extra_loaders=[DictLoader({"ga_rehab_report.html.j2": _OFFLINE_TEMPLATE})],
            template_file="ga_rehab_report.html.j2",
            exclude_input=True,
            exclude_input_prompt=True,
            exclude_output_prompt=True,
            embed_images=True,
        )
    return _exporters.exporter


# What HTMLExporter's own pass gives every page: alt text on any image without one, and each
# shown cell input (markdown) and output focusable (keyboard and screen-reader navigation).
MISSING_ALT_TEXT = "No description has been provided for this image"


def notebook_html(executed: Path, title: str) -> str:
    """nbconvert's page for the executed notebook: outputs only, figures inline, offline."""
    return str(_page_soup(executed, title))


def _page_soup(executed: Path, title: str):
    """The page as HTMLExporter makes it, parsed once for every pass."""
    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata["title"] = title
    body, _ = _report_exporter().from_notebook_node(notebook)
    soup = BeautifulSoup(body, "html.parser")
    _accessible(soup)
    return soup


def _accessible(soup) -> None:
    for image in soup.find_all("img", alt=False):
        image["alt"] = MISSING_ALT_TEXT
    notebook = soup.find(class_="jp-Notebook")
    if notebook is not None:
        for cell_part in notebook.find_all(
            "div", class_=["jp-Cell-inputWrapper", "jp-OutputArea-output"]
        ):
            cell_part["tabindex"] = "0"


def export_html(executed: Path, title: str) -> str:
    """The executed notebook as one self-contained HTML page: outputs only, figures inline,
    described (`with_figure_descriptions`) and structured (`with_report_structure`)."""

    # One parse for every pass: each parse and serialisation of a report with its figures
    # inline (megabytes of base64) takes a few tenths of a second.
    soup = _page_soup(executed, title)
    _describe_figures(soup)
    _structure_report(soup)
    return str(soup)


SECTION_HEADING = "h2"
CONTENTS_ID = "contents"
TABLE_CAPTION_CLASS = "table-caption"
FIGURE_CAPTION_CLASS = "figure-caption"
# A reference to a section by its heading, e.g. in the STROBE table: "§[Cohort flow]".
SECTION_REFERENCE = re.compile(r"§\[([^\]]+)\]")
PROVENANCE_HEADING = "Provenance"
PROVENANCE_SUMMARY = "Input files, parameters, package versions and code digest (click to open)"
NOT_IN_REPORT = "not in this report"


# The heading's own title, kept when its number is put in front.
TITLE_ATTRIBUTE = "data-title"


def _heading_text(heading) -> str:
    if heading.get(TITLE_ATTRIBUTE):
        return heading[TITLE_ATTRIBUTE]
    return heading.get_text(strip=True).rstrip("¶").strip()


def _heading_id(heading, number: int) -> str:
    if not heading.get("id"):
        heading["id"] = f"section-{number}"
    return heading["id"]


def with_report_structure(html: str) -> str:
    """Numbered sections with a table of contents under the title, numbered table and figure
    captions, section references resolved ("§[Cohort flow]" -> "3. Cohort flow", linked), and
    the provenance section's contents collapsed."""
    soup = BeautifulSoup(html, "html.parser")
    _structure_report(soup)
    return str(soup)


def _structure_report(soup) -> None:
    sections = {}
    for number, heading in enumerate(soup.find_all(SECTION_HEADING), start=1):
        title = _heading_text(heading)
        heading[TITLE_ATTRIBUTE] = title
        heading.insert(0, f"{number}. ")
        sections[title] = (number, _heading_id(heading, number))
    _number_tables(soup)
    _number_figures(soup)
    _resolve_section_references(soup, sections)
    _collapse_provenance(soup)
    _insert_contents(soup, sections)


def _caption(soup, css_class: str, label: str, text: str):
    caption = soup.new_tag("p", attrs={"class": css_class})
    strong = soup.new_tag("strong")
    strong.string = f"{label}. {text}".rstrip()
    caption.append(strong)
    return caption


def _section_of(element) -> str:
    heading = element.find_previous(SECTION_HEADING) or element.find_previous("h1")
    return "" if heading is None else _heading_text(heading)


def _number_tables(soup) -> None:
    """Every table gets "Table N." before its caption (or, without one, its section's name)."""
    tables = [table for table in soup.find_all("table") if table.find_parent("table") is None]
    for number, table in enumerate(tables, start=1):
        # The caption stands before the table in the same output (a great-tables table sits
        # inside its own <div>, so the caption is not always a sibling).
        caption = table.find_previous("p", class_=TABLE_CAPTION_CLASS)
        if caption is not None and _output_of(caption) is not _output_of(table):
            caption = None
        if caption is not None and caption.strong is not None:
            caption.strong.insert(0, f"Table {number}. ")
        else:
            table.insert_before(
                _caption(soup, TABLE_CAPTION_CLASS, f"Table {number}", _section_of(table))
            )


def _output_of(element):
    return element.find_parent(class_="jp-OutputArea-child") or element


def _number_figures(soup) -> None:
    """Every figure gets "Figure N." on the caption that follows it in the same cell (or a
    caption naming its section, where the notebook displayed none)."""
    images = soup.find_all("img")
    for number, image in enumerate(images, start=1):
        output = _output_of(image)
        caption = None
        for following in output.find_next_siblings(class_="jp-OutputArea-child"):
            if following.find("img") is not None:
                break
            caption = following.find("p", class_=FIGURE_CAPTION_CLASS)
            if caption is not None:
                break
        if caption is not None and caption.strong is not None:
            caption.strong.insert(0, f"Figure {number}. ")
        else:
            output.insert_after(
                _caption(soup, FIGURE_CAPTION_CLASS, f"Figure {number}", _section_of(image))
            )


def _resolve_section_references(soup, sections: Mapping[str, tuple[int, str]]) -> None:
    for text in list(soup.find_all(string=SECTION_REFERENCE)):
        parts, last = [], 0
        for match in SECTION_REFERENCE.finditer(text):
            parts.append(text[last : match.start()])
            title = match.group(1)
            if title in sections:
                number, anchor = sections[title]
                link = soup.new_tag("a", href=f"#{anchor}")
                link.string = f"{number}. {title}"
                parts.append(link)
            else:
                parts.append(NOT_IN_REPORT)
            last = match.end()
        parts.append(text[last:])
        for part in parts:
            text.insert_before(part)
        text.extract()


def _collapse_provenance(soup) -> None:
    """The provenance section's cells go into one closed <details> under its heading."""
    for heading in soup.find_all(SECTION_HEADING):
        if _heading_text(heading) != PROVENANCE_HEADING:
            continue
        cell = heading.find_parent(class_="jp-Cell")
        if cell is None:
            return
        following = []
        for sibling in cell.find_next_siblings(class_="jp-Cell"):
            if sibling.find(SECTION_HEADING) is not None:
                break
            following.append(sibling)
        details = soup.new_tag("details", attrs={"class": "provenance"})
        summary = soup.new_tag("summary")
        summary.string = PROVENANCE_SUMMARY
        details.append(summary)
        cell.insert_after(details)
        for moved in following:
            details.append(moved.extract())
        return


def _insert_contents(soup, sections: Mapping[str, tuple[int, str]]) -> None:
    """A table of contents linking every numbered section, after the cell with the title."""
    if not sections:
        return
    title = soup.find("h1")
    nav = soup.new_tag("nav", attrs={"class": "toc", "id": CONTENTS_ID})
    label = soup.new_tag("p")
    label_text = soup.new_tag("strong")
    label_text.string = "Contents"
    label.append(label_text)
    nav.append(label)
    items = soup.new_tag("ol")
    for title_text, (number, anchor) in sections.items():
        item = soup.new_tag("li")
        link = soup.new_tag("a", href=f"#{anchor}")
        link.string = f"{number}. {title_text}"
        item.append(link)
        items.append(item)
    nav.append(items)
    anchor_cell = None if title is None else title.find_parent(class_="jp-Cell")
    first_section = soup.find(SECTION_HEADING)
    if anchor_cell is not None:
        anchor_cell.insert_after(nav)
    elif first_section is not None:
        (first_section.find_parent(class_="jp-Cell") or first_section).insert_before(nav)


def with_figure_descriptions(html: str) -> str:
    """Give every figure an alternative text: the section heading it illustrates.

    Also drops anything active from the outputs (scripts, event handlers, javascript: links):
    a report shows data and never runs it, whatever a site or group is called.
    """

    soup = BeautifulSoup(html, "html.parser")
    _describe_figures(soup)
    return str(soup)


def _describe_figures(soup) -> None:
    for output in soup.select(".jp-OutputArea-output, .jp-MarkdownCell"):
        _without_active_content(output)
    # Outputs are made from data: a web address in a site name is text, not a link.
    for link in soup.select(".jp-OutputArea-output a[href]"):
        if not link["href"].startswith("#"):
            link.unwrap()
    for image in soup.find_all("img"):
        heading = image.find_previous(["h1", "h2", "h3", "h4"])
        if heading is not None:
            image["alt"] = f"Figure: {heading.get_text(strip=True).rstrip('¶')}"


ACTIVE_ELEMENTS = ("script", "iframe", "object", "embed", "form", "base", "meta", "link")


URL_ATTRIBUTES = ("href", "src", "action", "formaction", "xlink:href", "srcset", "poster")


SAFE_URL = re.compile(
    r"^(?:https?:|mailto:|#|data:image/(?:png|svg\+xml);base64,|[^:]*$)", re.IGNORECASE
)


def _without_active_content(element) -> None:
    for active in element.find_all(ACTIVE_ELEMENTS):
        active.decompose()
    for tag in [element, *element.find_all(True)]:
        for name in list(tag.attrs):
            value = tag.attrs[name]
            text = " ".join(value) if isinstance(value, list) else str(value)
            if name.lower().startswith("on") or (
                name.lower() in URL_ATTRIBUTES and not SAFE_URL.match(text.strip())
            ):
                del tag.attrs[name]


def _cell_error(error: Exception) -> str:
    """The failing cell's error as one readable line (papermill's ANSI codes removed)."""
    name, value = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", "")
    cell = getattr(error, "exec_count", None)
    where = f"cell {cell}" if cell is not None else "a cell"
    return f"{where} raised {name}: {_ANSI_ESCAPE.sub('', str(value or error))}"


RESET_CELL_TAG = "report-kernel-reset"


def _with_reset_cell(notebook: Path):
    """The notebook with a first cell that clears what a previous notebook left in the kernel."""

    node = nbformat.read(notebook, as_version=4)
    node.cells.insert(
        0, nbformat.v4.new_code_cell("%reset -f", metadata={"tags": [RESET_CELL_TAG]})
    )
    return _with_stable_cell_ids(node)


def _with_stable_cell_ids(node):
    """Cell ids by position: papermill's injected cell gets a random one, and ids reach the HTML."""
    node.nbformat, node.nbformat_minor = 4, max(5, node.get("nbformat_minor", 5))
    for index, cell in enumerate(node.cells):
        cell["id"] = f"cell-{index}"
    return node


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


# papermill's run-specific metadata: timings and where the run wrote its temporary files.
_RUN_SPECIFIC_METADATA = ("start_time", "end_time", "duration", "input_path", "output_path")


def _normalised_executed(executed: Path) -> None:
    """The executed notebook without the reset cell, run-specific metadata or kernel counters.

    What remains (sources, parameters, outputs) is the same for every run of the same inputs,
    so the executed notebooks reproduce byte for byte like the reports.
    """

    node = nbformat.read(executed, as_version=4)
    node.cells = [cell for cell in node.cells if RESET_CELL_TAG not in _tags(cell)]
    for key in _RUN_SPECIFIC_METADATA:
        node.metadata.get("papermill", {}).pop(key, None)
    for cell in node.cells:
        for key in _RUN_SPECIFIC_METADATA:
            cell.get("metadata", {}).get("papermill", {}).pop(key, None)
        cell.get("metadata", {}).pop("execution", None)  # nbclient's per-cell timestamps
    code_cells = [cell for cell in node.cells if cell.cell_type == "code"]
    for count, cell in enumerate(code_cells, start=1):
        # A kernel serves several notebooks, so its counter depends on which ran before.
        cell["execution_count"] = count
        for output in cell.get("outputs", []):
            if "execution_count" in output:
                output["execution_count"] = count
    nbformat.write(_with_stable_cell_ids(node), executed)


class LiteralKeysTranslator(PythonTranslator):
    """Papermill's Python translator with a dict's keys written as literals, not as text.

    Papermill writes every key as a string, so {1: 7} (sessions prescribed per phase) would
    reach a notebook as {"1": 7}: the values a notebook receives must be those the stages use.
    """

    @classmethod
    def translate_dict(cls, val):
        items = ", ".join(
            f"{cls.translate(key)}: {cls.translate(value)}" for key, value in val.items()
        )
        return f"{{{items}}}"


def render_report(
    notebook: Path,
    output_html: Path,
    parameters: Mapping,
    *,
    executed_notebook: Path | None = None,
    tables_dir: Path | None = None,
    kernel: ReportKernel | None = None,
    kernel_name: str = KERNEL_NAME,
    timeout_seconds: int = 600,
) -> Path:
    """Run `notebook` with papermill and write its outputs (no code) as one offline HTML file.

    Path parameters should be absolute: the kernel runs in the notebook's folder (as JupyterLab
    does). The executed notebook goes to `executed_notebook` (default: executed/<name>.ipynb
    beside the HTML); if `tables_dir` is given it is passed as the `tables_dir` parameter and
    the CSVs the notebook writes appear there only once the whole report succeeded. Every
    output is written atomically; a failing cell raises ReportError with that cell's error and
    leaves the failed notebook as executed/<name>.failed.ipynb, replacing nothing. Without a
    `kernel` a fresh one is started (and stopped) for this notebook.
    """

    papermill_translators.register("python", LiteralKeysTranslator)
    notebook, output_html = Path(notebook), Path(output_html)
    executed = executed_notebook or output_html.parent / "executed" / f"{output_html.stem}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    output_html.parent.mkdir(parents=True, exist_ok=True)
    failed = executed.with_name(f"{executed.stem}.failed.ipynb")
    # A fixed staging name: the notebook is told where it writes, and that must not vary
    # between runs (one writer per output folder at a time).
    staging = output_html.parent / f".{output_html.stem}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    partial = staging / executed.name
    parameters = dict(parameters)
    if tables_dir is not None:
        # Same folder name as the final one, so the notebook can name it in its text; relative
        # to the notebooks' folder, where the kernel runs.
        parameters["tables_dir"] = Path(
            os.path.relpath((staging / Path(tables_dir).name).resolve(), notebook.parent.resolve())
        ).as_posix()
    own_kernel = kernel is None
    kernel = kernel or ReportKernel(notebook.parent, kernel_name)
    try:
        try:
            # No papermill `cwd`: it would chdir the whole process, which other threads share.
            papermill.execute_notebook(
                _with_reset_cell(notebook),
                str(partial),
                parameters=parameters,
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                # Saving the whole notebook after every cell costs more than the cells.
                request_save_on_cell_execute=False,
                execution_timeout=timeout_seconds,
                km=kernel.manager_for_next_notebook(),
            )
        except PapermillExecutionError as error:
            if partial.exists():
                _normalised_executed(partial)
                os.replace(partial, failed)
            raise ReportError(
                f"{notebook.name}: {_cell_error(error)} (executed notebook kept at {failed})"
            ) from None
        except GaRehabError:
            raise
        except Exception as error:  # kernel missing or dead, timeout: still the stage's error
            raise ReportError(f"{notebook.name} could not be run: {_cell_error(error)}") from error
        _normalised_executed(partial)
        html = export_html(partial, title=output_html.stem.replace("_", " "))
        if tables_dir is not None:
            staged_tables = staging / Path(tables_dir).name
            staged_tables.mkdir(exist_ok=True)
            _replace_folder(staged_tables, Path(tables_dir))
        write_text(html, output_html)
        os.replace(partial, executed)
        failed.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if own_kernel:
            kernel.shutdown()
    return output_html


@dataclass
class RenderedReport:
    """One rendered report: where its HTML, CSVs and executed notebook are, and how long it took."""

    name: str
    html: Path
    tables_dir: Path
    executed: Path
    seconds: float = 0.0


@dataclass
class ReportJob:
    """A notebook to run with its parameters, and where its outputs go."""

    name: str
    notebook: Path
    parameters: dict
    html: Path
    tables_dir: Path
    executed: Path


SITE_REPORTS_FOLDER = "sites"


def report_jobs(
    *,
    raw: Path | None,
    interim: Path,
    processed: Path,
    models: Path,
    reports: Path,
    params: StudyParams,
    params_file: Path,
    notebooks: Path,
) -> list[ReportJob]:
    """Every report to render: the three notebooks, then one study report per site.

    Each notebook gets, for the names its parameters cell declares, the resolved values (the
    `report` block's keys, and `study_params`: the blocks the report stage reads) and the path
    of every input relative to the notebooks' folder, where the kernel runs (so no machine's
    absolute paths reach a report); `params_file` only for the provenance table's hash. A site
    with fewer participants than min_cell_size gets no report (it could describe fewer than k
    people).
    """
    declared = {name: notebook_parameters(notebooks / f"{name}.ipynb") for name in REPORT_NOTEBOOKS}
    model_table_files(models)

    def seen_from_notebooks(path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), Path(notebooks).resolve())).as_posix()

    paths = {
        "raw_dir": None if raw is None else seen_from_notebooks(raw),
        "interim_dir": seen_from_notebooks(interim),
        "processed_dir": seen_from_notebooks(processed),
        "models_dir": seen_from_notebooks(models),
        "cleaning_report": seen_from_notebooks(Path(interim) / "cleaning_report.json"),
        "params_file": seen_from_notebooks(params_file),
    }
    reports = Path(reports)
    executed_dir = reports / "executed"

    def job(name: str, notebook: str, site: str | None = None, folder: Path = reports) -> ReportJob:
        resolved = params if site is None else params.with_report(site=site)
        accepted = declared[notebook]
        parameters = {
            key: value
            for key, value in {
                **resolved.report.model_dump(),
                **paths,
                "study_params": resolved.stage_params("report"),
            }.items()
            if key in accepted and key not in OUTPUT_PARAMETERS
        }
        return ReportJob(
            name=name,
            notebook=notebooks / f"{notebook}.ipynb",
            parameters=parameters,
            html=folder / f"{name}.html",
            tables_dir=folder / f"{name}_files",
            executed=executed_dir / f"{name}.ipynb",
        )

    jobs = [job(name, name, params.report.site) for name in REPORT_NOTEBOOKS]
    if params.report.site_reports and params.report.site is None:
        names = site_report_names(study_sites(processed))
        for site in sites_with_a_report(processed, params.fit.group, params.report.min_cell_size):
            # Site reports share one folder, so the pipeline can declare it as one output.
            jobs.append(job(names[site], STUDY_REPORT, site, reports / SITE_REPORTS_FOLDER))
    return jobs


def render_all(
    *,
    raw: Path | None,
    interim: Path,
    processed: Path,
    models: Path,
    reports: Path,
    params: StudyParams,
    params_file: Path,
    notebooks: Path,
    jobs: int | None = None,
    on_done: Callable[[RenderedReport], None] | None = None,
    kernels: ReportKernels | None = None,
) -> list[RenderedReport]:
    """Render the whole-study report, adherence_groups, timeline_calibration and one per site.

    Outputs: reports/<name>.html, the CSVs behind it in reports/<name>_files/, the executed
    notebook in reports/executed/<name>.ipynb. Notebooks run on `kernels` (started earlier by
    the caller, e.g. while the fit stage ran), else on `jobs` kernels started here (default:
    the report block's `jobs`, else one per CPU), each kernel reused for several notebooks; the
    first failure raises once the running notebooks finish.
    """
    planned = report_jobs(
        raw=raw,
        interim=interim,
        processed=processed,
        models=models,
        reports=reports,
        params=params,
        params_file=params_file,
        notebooks=notebooks,
    )
    timeout = params.report.timeout_seconds

    def render_job(job: ReportJob, kernel: ReportKernel) -> RenderedReport:
        started = time.perf_counter()
        render_report(
            job.notebook,
            job.html,
            job.parameters,
            executed_notebook=job.executed,
            tables_dir=job.tables_dir,
            kernel=kernel,
            timeout_seconds=timeout,
        )
        done = RenderedReport(
            job.name, job.html, job.tables_dir, job.executed, time.perf_counter() - started
        )
        if on_done is not None:
            on_done(done)
        return done

    # Longest first, so that no kernel is left with a long report while the other is idle.
    order = sorted(range(len(planned)), key=lambda index: _render_rank(planned[index]))
    in_order = [planned[index] for index in order]
    if kernels is not None:
        rendered = kernels.run(in_order, render_job)
    else:
        count = min(kernel_count(jobs or params.report.jobs), len(planned))
        with ReportKernels(notebooks, count) as started:
            rendered = started.run(in_order, render_job)
    by_job = dict(zip(order, rendered, strict=True))
    return [by_job[index] for index in range(len(planned))]


# Each report's place in the rendering order, by its usual length: the whole-study report,
# the site reports (the same notebook on fewer people), timeline_calibration, adherence_groups.
_SITE_REPORT = "site report"
_RENDER_ORDER = (STUDY_REPORT, _SITE_REPORT, TIMELINE_CALIBRATION, ADHERENCE_GROUPS)


def _render_rank(job: ReportJob) -> int:
    if job.notebook.stem == STUDY_REPORT and job.name != STUDY_REPORT:
        return _RENDER_ORDER.index(_SITE_REPORT)
    return _RENDER_ORDER.index(job.notebook.stem)


SITE_SLUG_LENGTH = 60


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_")[:SITE_SLUG_LENGTH] or "site"


def _short_hash(text: str) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()[:8]


def site_report_names(sites: Iterable[str]) -> dict[str, str]:
    """Each site's report name, unique: `study_report_<site>`, with a short hash of the exact
    name wherever the file name could not keep it ('St. Mary' and 'St Mary' differ) or two
    names would match on a case-insensitive disk."""
    names = {}
    for site in sites:
        slug = _slug(site)
        names[site] = f"{STUDY_REPORT}_{slug if slug == site else f'{slug}_{_short_hash(site)}'}"
    folded: dict[str, list[str]] = {}
    for site, name in names.items():
        folded.setdefault(name.casefold(), []).append(site)
    for group in folded.values():
        if len(group) > 1:
            for site in group:
                names[site] = f"{STUDY_REPORT}_{_slug(site)}_{_short_hash(site)}"
    return names
