"""The `report` stage: papermill runs the notebooks, nbconvert renders HTML without code cells.

Two halves. `render_report` / `render_all` (the edge: files, kernels, HTML) and the helpers the
notebooks call so that no statistics live in a cell: reading the stage outputs, filtering a
site, regrouping adherence, refitting the group comparison on a subset, the methods table, and
`ReportData`, which writes the numbers behind every table and figure as privacy-checked CSV.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import queue
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import GaRehabError, ParameterError
from analysis.io import DERIVED_FRAMES, read_stage_frames, write_published_csv, write_text
from analysis.params import StudyParams
from analysis.privacy import mark, suppress_flow
from analysis.schema import (
    DAYS_PER_WEEK,
    EVENT_TYPES,
    Recovery,
    WeeklyIntervals,
    WeeklyTrajectories,
)
from analysis.tables import (
    SUPPRESSED_COLUMN,
    csv_safe,
    find_identifiers_or_dates,
    format_interval,
    format_tidy,
    groups_to_suppress,
    readable_term,
    suppress_small_cells,
)


class ReportError(GaRehabError):
    """A report notebook failed to run or render; carries the failing cell's error."""


STUDY_REPORT = "study_report"
ADHERENCE_GROUPS = "adherence_groups"
TIMELINE_CALIBRATION = "timeline_calibration"
REPORT_NOTEBOOKS = (STUDY_REPORT, ADHERENCE_GROUPS, TIMELINE_CALIBRATION)
KERNEL_NAME = "python3"
# Notebook parameters that say where outputs go; they are not inputs, so provenance omits them.
OUTPUT_PARAMETERS = ("tables_dir",)
# Tables the fit stage writes for the timeline notebook (reports/models/<name>.csv).
TIMELINE_TABLES = (
    "timeline",
    "timeline_model_comparison",
    "timeline_quoted_ranges",
    "calibration_summary",
    "calibration_table",
)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --- parameters -------------------------------------------------------------------------------


def notebook_parameters(notebook: Path) -> dict[str, object]:
    """Names and placeholder values of a notebook's `parameters` cell (raises if not one)."""
    import nbformat

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


# --- rendering --------------------------------------------------------------------------------


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
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}" alt="Figure">
</div>
{%- endblock data_png -%}
"""


def export_html(executed: Path, title: str) -> str:
    """The executed notebook as one self-contained HTML page: outputs only, figures inline."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata["title"] = title
    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"ga_rehab_report.html.j2": _OFFLINE_TEMPLATE})],
        template_file="ga_rehab_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    body, _ = exporter.from_notebook_node(notebook)
    return with_figure_descriptions(body)


def with_figure_descriptions(html: str) -> str:
    """Give every figure an alternative text: the section heading it illustrates.

    Also drops anything active from the outputs (scripts, event handlers, javascript: links):
    a report shows data and never runs it, whatever a site or group is called.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
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
    return str(soup)


ACTIVE_ELEMENTS = ("script", "iframe", "object", "embed", "form", "base", "meta", "link")
URL_ATTRIBUTES = ("href", "src", "action", "formaction", "xlink:href", "srcset", "poster")
SAFE_URL = re.compile(r"^(?:https?:|mailto:|#|data:image/png;base64,|[^:]*$)", re.IGNORECASE)


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


class ReportKernel:
    """One Jupyter kernel reused for several notebooks, so heavy imports are paid once.

    Each notebook starts with the kernel's namespace cleared (`%reset -f`); modules stay
    imported. Use an instance from one thread only: its clients belong to that thread's event
    loop. The kernel runs in `cwd` (the notebooks' folder, as in JupyterLab).
    """

    def __init__(self, cwd: Path, kernel_name: str = KERNEL_NAME) -> None:
        self.cwd, self.kernel_name = Path(cwd), kernel_name
        self.manager = None
        self.clients: list = []

    def manager_for_next_notebook(self):
        """The running kernel's manager, (re)started if it is not alive."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self.close_clients()
        if self.manager is None or not run_sync(self.manager.is_alive)():
            self.shutdown()
            clients = self.clients

            class TrackedKernelManager(AsyncKernelManager):
                # nbclient leaves the clients of a kernel it does not own open; we close them.
                def client(self, **kwargs):
                    created = super().client(**kwargs)
                    clients.append(created)
                    return created

            self.manager = TrackedKernelManager(kernel_name=self.kernel_name)
            run_sync(self.manager.start_kernel)(cwd=str(self.cwd))
        return self.manager

    def close_clients(self) -> None:
        """Close the channels of every client the last notebook opened."""
        while self.clients:
            self.clients.pop().stop_channels()

    def shutdown(self) -> None:
        """Stop the kernel (idempotent)."""
        from jupyter_core.utils import run_sync

        self.close_clients()
        if self.manager is not None and self.manager.has_kernel:
            run_sync(self.manager.shutdown_kernel)(now=True)
        self.manager = None

    def __enter__(self) -> ReportKernel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def _with_reset_cell(notebook: Path):
    """The notebook with a first cell that clears what a previous notebook left in the kernel."""
    import nbformat

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
    import nbformat

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


def literal_keys_translator():
    """Papermill's Python translator with a dict's keys written as literals, not as text.

    Papermill writes every key as a string, so {1: 7} (sessions prescribed per phase) would
    reach a notebook as {"1": 7}: the values a notebook receives must be those the stages use.
    """
    from papermill.translators import PythonTranslator

    class LiteralKeysTranslator(PythonTranslator):
        @classmethod
        def translate_dict(cls, val):
            items = ", ".join(
                f"{cls.translate(key)}: {cls.translate(value)}" for key, value in val.items()
            )
            return f"{{{items}}}"

    return LiteralKeysTranslator


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
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from papermill.translators import papermill_translators

    papermill_translators.register("python", literal_keys_translator())
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


def study_sites(processed: Path) -> list[str]:
    """The sites in the analysis frame, sorted."""
    recovery = pd.read_parquet(Path(processed) / "recovery.parquet", columns=[Recovery.site])
    return sorted(recovery[Recovery.site].dropna().astype(str).unique())


def site_sizes(processed: Path) -> pd.Series:
    """Participants per site in the analysis frame."""
    recovery = pd.read_parquet(Path(processed) / "recovery.parquet", columns=[Recovery.site])
    return recovery[Recovery.site].dropna().astype(str).value_counts().sort_index()


SITE_REPORTS_FOLDER = "sites"


def model_table_files(models: Path) -> list[Path]:
    """The fit stage's tables, or a ReportError saying to run it: a report needs them."""
    files = sorted(Path(models).glob("*.csv"))
    if not files:
        raise ReportError(f"{models} holds no model tables: run `ga-rehab fit` first")
    return files


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
        sizes = site_sizes(processed)
        names = site_report_names(sizes.index)
        for site, size in sizes.items():
            if size >= params.report.min_cell_size:
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
) -> list[RenderedReport]:
    """Render the whole-study report, adherence_groups, timeline_calibration and one per site.

    Outputs: reports/<name>.html, the CSVs behind it in reports/<name>_files/, the executed
    notebook in reports/executed/<name>.ipynb. Notebooks run on `jobs` kernels at once
    (default: the report block's `jobs`, else one per CPU), each kernel reused for several
    notebooks; the first failure raises ReportError once the running ones finish.
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
    workers = jobs or params.report.jobs or os.cpu_count() or 1
    timeout = params.report.timeout_seconds

    pending: queue.SimpleQueue[ReportJob] = queue.SimpleQueue()
    for job in planned:
        pending.put(job)
    results: dict[str, RenderedReport] = {}
    errors: list[GaRehabError] = []

    def worker() -> None:
        try:
            render_queue()
        finally:
            _close_thread_event_loop()

    def render_queue() -> None:
        # One kernel per worker, reused across its notebooks; stopped when the queue is empty.
        with ReportKernel(notebooks) as kernel:
            while not errors:
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    render_report(
                        job.notebook,
                        job.html,
                        job.parameters,
                        executed_notebook=job.executed,
                        tables_dir=job.tables_dir,
                        kernel=kernel,
                        timeout_seconds=timeout,
                    )
                except GaRehabError as error:
                    errors.append(error)
                    return
                done = RenderedReport(
                    job.name,
                    job.html,
                    job.tables_dir,
                    job.executed,
                    time.perf_counter() - started,
                )
                results[job.name] = done
                if on_done is not None:
                    on_done(done)

    threads = [
        threading.Thread(target=worker, name=f"report-worker-{i}", daemon=True)
        for i in range(max(1, min(int(workers), len(planned))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[job.name] for job in planned]


def _close_thread_event_loop() -> None:
    """The kernel clients ran on this thread's event loop; it ends with the thread."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # the thread never needed one
        return
    loop.close()


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


# --- inputs, for the notebooks ----------------------------------------------------------------


@dataclass
class ReportInputs:
    """Everything a report reads: analysis frames, the cleaning report and the fit tables."""

    recovery: pd.DataFrame
    weekly_intervals: pd.DataFrame
    weekly_trajectories: pd.DataFrame
    cleaning_report: dict
    models: dict[str, pd.DataFrame] = field(default_factory=dict)
    site: str | None = None

    @property
    def identifiers(self) -> list[str]:
        """Participant ids, so report tables can be checked never to show one."""
        return self.recovery[Recovery.participant_id].astype(str).tolist()


def read_report_inputs(
    processed_dir: Path | str,
    models_dir: Path | str,
    cleaning_report: Path | str,
) -> ReportInputs:
    """The derive stage's frames, the cleaning report and every reports/models/*.csv table."""
    processed, models = Path(processed_dir), Path(models_dir)
    frames = read_stage_frames(processed, DERIVED_FRAMES, "derive")
    report_path = Path(cleaning_report)
    if not report_path.is_file():
        raise ReportError(f"{report_path} not found: run `ga-rehab clean` first")
    tables = {path.stem: pd.read_csv(path) for path in model_table_files(models)}
    return ReportInputs(
        recovery=frames["recovery"],
        weekly_intervals=frames["weekly_intervals"],
        weekly_trajectories=frames["weekly_trajectories"],
        cleaning_report=json.loads(report_path.read_text()),
        models=tables,
    )


def filter_site(inputs: ReportInputs, site: str | None) -> ReportInputs:
    """The inputs restricted to one site's participants (None: unchanged).

    Fit tables describe the whole study, so they are dropped for a site: its models are refitted.
    """
    if site is None:
        return inputs
    recovery = inputs.recovery[inputs.recovery[Recovery.site] == site]
    if recovery.empty:
        known = ", ".join(sorted(inputs.recovery[Recovery.site].dropna().unique()))
        raise ParameterError(f"site {site!r} is not in the study (sites: {known})")
    ids = set(recovery[Recovery.participant_id])
    return replace(
        inputs,
        recovery=recovery,
        weekly_intervals=inputs.weekly_intervals[
            inputs.weekly_intervals[WeeklyIntervals.participant_id].isin(ids)
        ],
        weekly_trajectories=inputs.weekly_trajectories[
            inputs.weekly_trajectories[WeeklyTrajectories.participant_id].isin(ids)
        ],
        models={},
        site=site,
    )


def regroup_adherence(
    recovery: pd.DataFrame,
    cutoffs: Sequence[float],
    labels: Sequence[str],
    column: str = Recovery.adherence_group,
) -> pd.DataFrame:
    """A copy with `column` recomputed from overall adherence: [-inf, c1) -> labels[0], ...

    Bands are left-closed as in derive; people with no adherence data stay ungrouped.
    """
    cutoffs, labels = [float(c) for c in cutoffs], [str(label) for label in labels]
    if len(labels) != len(cutoffs) + 1:
        raise ParameterError(
            f"{len(cutoffs)} adherence cut-off(s) need {len(cutoffs) + 1} labels, got {len(labels)}"
        )
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:], strict=False)):
        raise ParameterError(f"adherence cut-offs must increase: {cutoffs}")
    if len(set(labels)) != len(labels):
        raise ParameterError(f"adherence group labels must differ: {labels}")
    bands = pd.cut(
        recovery[Recovery.overall_adherence],
        bins=[-np.inf, *cutoffs, np.inf],
        labels=labels,
        right=False,
    ).astype(object)
    return recovery.assign(**{column: bands.where(bands.notna(), None)})


# --- group comparison, refitted on a subset ---------------------------------------------------


def _collect(notes: list[tuple[str, str, str]], model: str, fit: Callable):
    """Run one fit; its warnings become notes and a toolkit error a "failed" note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit()
        except GaRehabError as error:
            notes.append((model, "failed", str(error)))
            result = None
    notes.extend((model, w.category.__name__, str(w.message)) for w in caught)
    return result


def group_comparison(
    recovery: pd.DataFrame,
    fit_params: Mapping,
    group: str | None,
    min_cell_size: int,
    intervals: pd.DataFrame | None = None,
    cox_covariates: Sequence[str] | None = None,
    turnbull_overall: bool = False,
) -> dict[str, pd.DataFrame]:
    """KM, log-rank, RMST, Cox and cumulative incidence by `group`, named as the fit stage's.

    For a subset (a site) or a regrouping. Groups with fewer than min_cell_size people are
    left out before fitting, so no estimate rests on them (listed in `suppressed_groups`).
    The time-varying Cox model is fitted only when `intervals` is given, the whole-cohort
    Turnbull curve only with `turnbull_overall`; Fine-Gray and the mixed models are
    whole-study models and are not refitted. `cox_covariates` replaces fit.cox_covariates
    (e.g. to put the group itself in the model).
    """
    from analysis.fit import FitOutputs, baseline_cox_model, cox_models, km_models

    params = dict(fit_params)
    group = group or params["group"]
    params["group"] = group
    if cox_covariates is not None:
        params["cox_covariates"] = list(cox_covariates)
    suppressed = groups_to_suppress(recovery, group, min_cell_size)
    frame = recovery[~recovery[group].isin(suppressed)]
    outputs = FitOutputs()
    _collect(outputs.notes, "kaplan_meier", lambda: km_models(frame, params, outputs))
    if turnbull_overall:
        # The whole-cohort curve describes everyone, small groups included (none is shown).
        _collect(outputs.notes, "turnbull", lambda: _turnbull_overall(recovery, outputs))
    if intervals is not None:
        ids = frame[Recovery.participant_id]
        kept = intervals[intervals[WeeklyIntervals.participant_id].isin(ids)]
        _collect(outputs.notes, "cox", lambda: cox_models(frame, kept, params, outputs))
    else:
        _collect(outputs.notes, "cox", lambda: baseline_cox_model(frame, params, outputs))
    _collect(
        outputs.notes,
        "cumulative_incidence",
        lambda: _cumulative_incidence_only(frame, params, outputs),
    )
    tables = dict(outputs.tables)
    tables["model_notes"] = _unique_notes(outputs.notes_frame())
    tables["model_status"] = outputs.status_frame()
    tables["suppressed_groups"] = pd.DataFrame({"group": suppressed}, dtype=object)
    return tables


def _turnbull_overall(frame: pd.DataFrame, outputs) -> None:
    from analysis.fit import interval_censored_frame
    from analysis.survival import turnbull

    informative = interval_censored_frame(frame)
    if informative.empty:
        return
    result = turnbull(informative, Recovery.interval_lower_days, Recovery.interval_upper_days)
    outputs.tables["turnbull_curves"] = result.curves


def _cumulative_incidence_only(frame: pd.DataFrame, params: Mapping, outputs) -> None:
    from analysis.fit import with_group
    from analysis.survival import cumulative_incidence

    outputs.tables["cumulative_incidence"] = cumulative_incidence(
        with_group(frame, params),
        Recovery.time_to_recovery_days,
        Recovery.event_type,
        group=params["group"],
    ).table


def _unique_notes(notes: pd.DataFrame) -> pd.DataFrame:
    """A note raised both as a warning and recorded on the result is shown once."""
    return notes.drop_duplicates(subset=["model", "message"]).reset_index(drop=True)


# --- report tables (counts suppressed, ready for CSV and HTML) --------------------------------


def curves_for_report(curves: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """KM curves truncated where fewer than min_cell_size remain at risk; no per-time counts.

    Event and censoring counts per day are single people, so only survival, its CI and the
    number at risk (all >= k after truncation) are shown.
    """
    kept = curves[pd.to_numeric(curves["n_risk"]) >= min_cell_size]
    columns = [
        c for c in ("group", "time", "n_risk", "survival", "conf_low", "conf_high") if c in kept
    ]
    return kept[columns].reset_index(drop=True)


def at_risk_for_report(at_risk: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """The numbers-at-risk table with counts below min_cell_size shown as "<k"."""
    return suppress_small_cells(at_risk, ["n_risk"], min_cell_size, estimate_columns=[])


def drop_groups(table: pd.DataFrame, groups: Iterable, column: str = "group") -> pd.DataFrame:
    """Rows of a table whose group is not among `groups` (suppressed groups)."""
    groups = set(groups)
    if not groups or column not in table:
        return table
    return table[~table[column].isin(groups)].reset_index(drop=True)


def outcome_counts(
    recovery: pd.DataFrame, group: str, group_order: Sequence, min_cell_size: int
) -> pd.DataFrame:
    """People per group by how follow-up ended, counts below min_cell_size hidden."""
    frame = recovery[recovery[group].notna()]
    counts = pd.crosstab(frame[group], frame[Recovery.event_type]).reindex(
        columns=list(EVENT_TYPES), fill_value=0
    )
    order = [g for g in group_order if g in counts.index]
    counts = counts.reindex(order + sorted(set(counts.index) - set(order), key=str))
    counts.insert(0, "n", counts.sum(axis=1))
    table = counts.reset_index().rename(columns={group: "group"})
    table.columns.name = None
    hidden = suppress_small_cells(table, ["n", *EVENT_TYPES], min_cell_size, estimate_columns=[])
    return _complementary_suppression(hidden, table, list(EVENT_TYPES), min_cell_size)


def _complementary_suppression(
    hidden: pd.DataFrame, exact: pd.DataFrame, parts: list[str], min_cell_size: int
) -> pd.DataFrame:
    """Where one part of a shown total is hidden, hide the next smallest part too.

    Otherwise the hidden count is the total minus the others.
    """
    mark = f"<{min_cell_size}"
    result = hidden.copy()
    for row in result.index:
        is_hidden = [result.at[row, part] == mark for part in parts]
        if sum(is_hidden) != 1 or result.at[row, "n"] == mark:
            continue
        shown = [
            part
            for part, h in zip(parts, is_hidden, strict=True)
            if not h and exact.at[row, part] > 0
        ]
        if shown:
            smallest = min(shown, key=lambda part: exact.at[row, part])
            result.at[row, smallest] = "suppressed"
            result.at[row, SUPPRESSED_COLUMN] = True
    return result


def trajectory_means(
    trajectories: pd.DataFrame,
    outcomes: Sequence[str],
    group: str,
    min_cell_size: int,
    max_week: int | None = None,
) -> pd.DataFrame:
    """Observed weekly mean (95% CI half-width) per group and outcome; means of < k hidden."""
    from analysis.plots import weekly_means

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
            f"counts below {report['min_cell_size']} "
            "shown as '<k', estimates resting on them blanked, such groups not drawn",
        ),
    ]
    return pd.DataFrame(rows, columns=["item", "specification"])


def timeline_tables(
    models_dir: Path | str,
    recovery: pd.DataFrame | None = None,
    study_params: Mapping | None = None,
) -> dict[str, pd.DataFrame]:
    """The fit stage's timeline and calibration tables, or computed here when it wrote none.

    Computing takes tens of seconds (bootstrap and cross-validation), so `run` reads the fit
    stage's CSVs; the fallback serves a models folder written before timelines existed.
    """
    models = Path(models_dir)
    found = {name: models / f"{name}.csv" for name in TIMELINE_TABLES}
    if all(path.is_file() for path in found.values()):
        return {name: pd.read_csv(path) for name, path in found.items()}
    if recovery is None or study_params is None:
        missing = [str(path) for path in found.values() if not path.is_file()]
        raise ReportError(f"timeline tables not found: {', '.join(missing)}")
    from analysis.timeline import (
        calibration_diagnostics,
        compare_with_quoted_ranges,
        timeline_table,
    )

    timeline_params, fit_params = study_params["timeline"], study_params["fit"]
    with warnings.catch_warnings():
        # Fallback fits warn per bootstrap replicate; their notes are in the tables.
        warnings.simplefilter("ignore")
        timeline = timeline_table(recovery, timeline_params, fit_params, study_params["derive"])
        calibration = calibration_diagnostics(
            recovery, timeline_params, fit_params, seed=timeline_params["seed"]
        )
        comparison = compare_with_quoted_ranges(timeline, recovery, timeline_params)
    return {
        "timeline": timeline.tidy(),
        "timeline_model_comparison": timeline.model_comparison,
        "timeline_quoted_ranges": comparison,
        "calibration_summary": calibration.summary,
        "calibration_table": calibration.calibration_table,
    }


# --- showing and saving -----------------------------------------------------------------------


class ReportData:
    """Writes the numbers behind each table and figure as <folder>/<name>.csv, checked first.

    A table that shows a participant id, a calendar date or an identifier column is refused
    (ReportError), so nothing identifying can leave through a CSV or the HTML it feeds.
    """

    def __init__(self, folder: Path | str, identifiers: Iterable[str] = ()) -> None:
        self.folder = Path(folder)
        self.identifiers = list(identifiers)
        self.written: list[str] = []

    def save(self, name: str, table: pd.DataFrame) -> pd.DataFrame:
        """Check and write `table` as <name>.csv; returns it for display."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ReportError(f"table name {name!r}: use letters, digits, - and _ only")
        if name in self.written:
            raise ReportError(f"table {name!r} saved twice in one report")
        findings = find_identifiers_or_dates(table, self.identifiers)
        if findings:
            raise ReportError(f"table {name!r} would show {'; '.join(findings[:3])}")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_published_csv(csv_safe(table), self.folder / f"{name}.csv")
        self.written.append(name)
        return table

    def listing(self) -> pd.DataFrame:
        """The CSV files written so far (for the report's last section)."""
        return pd.DataFrame({"file": [f"{self.folder.name}/{name}.csv" for name in self.written]})


def show(table: pd.DataFrame, caption: str | None = None, digits: int = 3):
    """A table as plain HTML (no index, missing shown blank, floats rounded, suppressed flagged)."""
    from IPython.display import HTML

    shown = table.copy()
    if SUPPRESSED_COLUMN in shown:
        shown[SUPPRESSED_COLUMN] = shown[SUPPRESSED_COLUMN].map({True: "yes", False: ""})
    for name in shown.columns:
        if pd.api.types.is_float_dtype(shown[name]):
            shown[name] = shown[name].map(
                lambda v: (
                    ""
                    if pd.isna(v)
                    else f"{v:.{digits}g}"
                    if abs(v) < 1e-3 and v != 0
                    else f"{v:.{digits}f}"
                )
            )
    html = shown.to_html(index=False, na_rep="", border=0, escape=True)
    if caption:
        html = f"<p><strong>{_escape(caption)}</strong></p>{html}"
    return HTML(html)


def _escape(text: str) -> str:
    import html

    return html.escape(str(text))


def setup_figures(dpi: int = 100) -> None:
    """Report-wide figure look: resolution and font sizes readable in a browser."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
        }
    )


# --- notebook sections ------------------------------------------------------------------------


NOT_ESTIMATED = (
    "*Not estimated for this report (too few people, or the model failed): see the model notes.*"
)


def has_tables(models: Mapping[str, pd.DataFrame], *names: str) -> bool:
    """Whether every named model table exists (a model that failed wrote none)."""
    return all(name in models for name in names)


# --- primary analysis, milestones and model status (study report) ----------------------------

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


def model_status_sentence(models: Mapping[str, pd.DataFrame], model: str) -> str | None:
    """Why a model is not shown (the fit stage's own sentence), or None when it was fitted."""
    status = models.get("model_status")
    if status is None or model not in set(status["model"]):
        return None
    reason = status.set_index("model").loc[model, "reason"]
    return None if pd.isna(reason) or not str(reason) else f"*{reason}*"


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


def quoted_ranges_for_report(quotes: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Each quoted range beside the data's estimate, in weeks; claims about fewer than
    min_cell_size people show no estimate."""

    def quoted(low: float, high: float) -> str:
        return f"{low:g}+" if np.isinf(high) else f"{low:g}-{high:g}"

    small = quotes["people"] < min_cell_size
    return pd.DataFrame(
        {
            "milestone": quotes["milestone"],
            "claim": quotes["claim"],
            "people": quotes["people"].astype(object).where(~small, mark(min_cell_size)),
            "quantile": quotes["quantile"],
            "quoted (weeks)": [
                quoted(low, high)
                for low, high in quotes[["quoted_low_weeks", "quoted_high_weeks"]].to_numpy(float)
            ],
            "data (weeks)": quotes["estimate_weeks"].round(1).astype(object).where(~small, ""),
            "verdict": quotes["verdict"].where(~small, "not shown (too few people)"),
        }
    )


def milestone_medians_for_report(medians: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Kaplan-Meier medians of both milestones (days and weeks), small groups suppressed."""
    shown = medians_for_report(medians, min_cell_size)
    return shown[["milestone", *[c for c in shown.columns if c != "milestone"]]]


def groups_shown(recovery: pd.DataFrame, group: str, min_cell_size: int) -> list:
    """Groups with at least min_cell_size people (the ones a figure may draw)."""
    sizes = recovery[group].dropna().value_counts()
    return sorted(sizes.index[sizes >= min_cell_size].tolist(), key=str)


def models_for_report(
    inputs: ReportInputs, fit_params: Mapping, min_cell_size: int
) -> dict[str, pd.DataFrame]:
    """The fit stage's tables for the whole study; for a site, the comparison refitted on it."""
    if inputs.site is None:
        return dict(inputs.models)
    return group_comparison(
        inputs.recovery,
        fit_params,
        group=None,
        min_cell_size=min_cell_size,
        intervals=inputs.weekly_intervals,
        turnbull_overall=True,
    )


def study_report_title(site: str | None) -> str:
    """The report's heading (Markdown)."""
    scope = "whole study" if site is None else f"site {site}"
    return f"# Gluteal-amnesia rehabilitation cohort: study report ({scope})"


def cohort_sentence(
    recovery: pd.DataFrame,
    group: str,
    suppressed: Sequence,
    min_cell_size: int,
    group_order: Sequence | None = None,
) -> str:
    """One sentence on who is in the report and which groups are hidden for small numbers."""
    grouped = recovery[recovery[group].notna()]
    text = (
        f"{len(recovery)} participants; {len(grouped)} with a known {group.replace('_', ' ')}. "
        "Times are days (or weeks) since each participant's enrolment."
    )
    if len(suppressed):
        from analysis.plots import ordered_groups

        names = ", ".join(str(level) for level in ordered_groups(suppressed, group_order))
        text += (
            f" Group(s) {names} had fewer than {min_cell_size} participants: they are left out "
            "of every table, figure and model below."
        )
    return text


def cohort_flow_for_report(
    cleaning_report: dict, recovery: pd.DataFrame, group: str, min_cell_size: int
) -> pd.DataFrame:
    """The CONSORT counts, suppressed as a whole so that no hidden count follows from the
    others by subtraction (counts below min_cell_size show as "<k", complements as
    "suppressed")."""
    from analysis.tables import FLOW_CHAIN, cohort_flow

    return suppress_flow(cohort_flow(cleaning_report, recovery, group), FLOW_CHAIN, min_cell_size)


def wide_at_risk(at_risk: pd.DataFrame, group_order: Sequence) -> pd.DataFrame:
    """The risk table as groups x days (for display; the CSV keeps the long form)."""
    wide = at_risk.pivot(index="group", columns="time", values="n_risk")
    order = [g for g in group_order if g in wide.index]
    wide = wide.reindex(order + sorted(set(wide.index) - set(order), key=str))
    wide.columns = [f"day {time:g}" for time in wide.columns]
    return wide.reset_index()


MEDIAN_DISPLAY_COLUMNS = ["group", "n", "events", "median days (95% CI)", "median weeks"]
RMST_DISPLAY_COLUMNS = ["group", "horizon", "RMST days (95% CI)"]


def medians_for_report(km_medians: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Median days to recovery per group as "median (low-high)", "not reached" where it is not."""
    table = km_medians.copy()

    def text(row) -> str:
        if pd.isna(row["median"]):
            return "not reached"
        limits = ["NA" if pd.isna(row[c]) else f"{row[c]:.0f}" for c in ("conf_low", "conf_high")]
        return f"{row['median']:.0f} ({limits[0]}-{limits[1]})"

    table["median days (95% CI)"] = [text(row) for _, row in table.iterrows()]
    table["median weeks"] = (table["median"] / DAYS_PER_WEEK).round(1)
    return suppress_small_cells(
        table,
        ["n", "events"],
        min_cell_size,
        estimate_columns=["median", "conf_low", "conf_high", "median weeks"],
    ).assign(
        **{
            "median days (95% CI)": lambda t: t["median days (95% CI)"].where(
                ~t[SUPPRESSED_COLUMN], ""
            )
        }
    )


def rmst_groups_for_report(rmst_groups: pd.DataFrame) -> pd.DataFrame:
    """RMST per group with its CI as text."""
    from analysis.tables import format_interval

    table = rmst_groups.copy()
    table["RMST days (95% CI)"] = [
        format_interval(row.rmst, row.conf_low, row.conf_high, digits=1)
        for row in table.itertuples()
    ]
    return table


def overall_km_curves(recovery: pd.DataFrame) -> pd.DataFrame:
    """Kaplan-Meier curve of the whole cohort, group "all" (for the Turnbull comparison)."""
    from analysis.plots import WHOLE_COHORT
    from analysis.survival import kaplan_meier

    with warnings.catch_warnings():
        # A dropped-row note here repeats the fit stage's, listed in the model notes.
        warnings.simplefilter("ignore", category=Warning)
        result = kaplan_meier(recovery, Recovery.time_to_recovery_days, Recovery.recovered)
    return result.curves.assign(group=WHOLE_COHORT)


def mixed_predictions_for_report(models: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The mixed models' fitted lines, or an empty frame of that shape where none were fitted."""
    if "mixed_predictions" in models:
        return models["mixed_predictions"]
    return pd.DataFrame(columns=["week", Recovery.adherence_group, "outcome", "fitted"])


def notes_for_report(models: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Model notes, each once; a row saying so when there were none."""
    notes = models.get("model_notes")
    if notes is None or notes.empty:
        return pd.DataFrame([{"model": "all", "kind": "", "message": "no warnings or failures"}])
    return _unique_notes(notes.fillna(""))


# --- adherence regrouping ---------------------------------------------------------------------


def cox_covariates_for_groups(fit_params: Mapping, group: str) -> list[str]:
    """fit.cox_covariates with the group in place of overall adherence (which defines it)."""
    others = [
        c for c in fit_params["cox_covariates"] if c not in (Recovery.overall_adherence, group)
    ]
    return [group, *others]


def grouping_table(cutoffs: Sequence[float], labels: Sequence[str]) -> pd.DataFrame:
    """Each group's range of overall adherence, as text."""
    bounds = [None, *[float(c) for c in cutoffs], None]
    rows = []
    for label, low, high in zip(labels, bounds, bounds[1:], strict=False):
        if low is None:
            rule = f"below {high:g}"
        elif high is None:
            rule = f"{low:g} or more"
        else:
            rule = f"{low:g} to below {high:g}"
        rows.append({"group": str(label), "overall adherence": rule})
    return pd.DataFrame(rows)


def grouping_text(cutoffs: Sequence[float], labels: Sequence[str]) -> str:
    """ "low (below 0.5), moderate (0.5 to below 0.8), high (0.8 or more)"."""
    return ", ".join(
        f"{row['group']} ({row['overall adherence']})"
        for _, row in grouping_table(cutoffs, labels).iterrows()
    )


def reference_level_text(recovery: pd.DataFrame, group: str) -> str:
    """Which group the Cox hazard ratios compare against (treatment coding, first sorted level)."""
    levels = sorted(recovery[group].dropna().astype(str).unique())
    if not levels:
        return ""
    return f"Reference group for the hazard ratios: **{levels[0]}** (first in sorted order)."


# --- timelines ---------------------------------------------------------------------------------


def timeline_for_report(timeline: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """The timeline table with profile sizes below min_cell_size shown as "<k".

    Predictions are model-based and stay; an observed median needs min_profile_size people
    anyway, and is blanked with the count. Counts quoted in the notes ("n=3") are masked too.
    """
    estimates = [c for c in ("observed_median_weeks",) if c in timeline]
    hidden = suppress_small_cells(
        timeline, ["n_in_profile"], min_cell_size, estimate_columns=estimates
    )
    return mask_small_counts_in_text(hidden, min_cell_size)


_COUNT_IN_TEXT = re.compile(r"\b(n\s*=\s*|)(\d+)(\s+(?:people|participants|person)\b|)")


def mask_small_counts_in_text(table: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Text cells quoting a count of people below min_cell_size ("n=3", "3 people") show "<k"."""

    def mask(text):
        if not isinstance(text, str):
            return text

        def replace(match: re.Match) -> str:
            prefix, number, suffix = match.groups()
            if not (prefix or suffix) or not 0 < int(number) < min_cell_size:
                return match.group(0)
            return f"{prefix}<{min_cell_size}{suffix}"

        return _COUNT_IN_TEXT.sub(replace, text)

    result = table.copy()
    for name in result.columns:
        if result[name].dtype == object:
            result[name] = result[name].map(mask)
    return result


def profiles_seen(timeline: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Profiles with at least min_cell_size people in the data (the ones worth plotting)."""
    sizes = pd.to_numeric(timeline["n_in_profile"], errors="coerce")
    return timeline[sizes >= min_cell_size].reset_index(drop=True)


def timeline_display(timeline: pd.DataFrame) -> pd.DataFrame:
    """Profile, people, predicted median (CI) and 10-90 range in weeks, observed median."""
    from analysis.plots import profile_label
    from analysis.tables import format_interval

    rows = []
    for _, row in timeline.sort_values("predicted_median_weeks").iterrows():
        rows.append(
            {
                "profile": profile_label(row),
                "people": row["n_in_profile"],
                "predicted median (95% CI)": format_interval(
                    row["predicted_median_weeks"],
                    row["median_conf_low"],
                    row["median_conf_high"],
                    digits=1,
                ),
                "10th-90th percentile": f"{row['predicted_p10_weeks']:.1f}-"
                f"{row['predicted_p90_weeks']:.1f}",
                "observed median": ""
                if pd.isna(row.get("observed_median_weeks"))
                else f"{row['observed_median_weeks']:.1f}",
            }
        )
    return pd.DataFrame(rows)


def calibration_for_report(calibration: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Calibration groups with fewer than min_cell_size people: count "<k", estimates blanked."""
    return suppress_small_cells(
        calibration, ["n"], min_cell_size, estimate_columns=["predicted", "observed"]
    )
