"""The `ga-rehab` command: one sub-command per pipeline stage, `run` for all of them.

Only this module (and the readers/writers it calls in `analysis.io`) touches files; every path
comes from an option.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis import io
from analysis.errors import GaRehabError, ReportError
from analysis.params import (
    CleanParams,
    DeriveParams,
    StudyParams,
    parse_param_overrides,
    read_params,
)
from analysis.schema import Recovery
from analysis.simulate import (
    MAX_MESS_RATE,
    MIN_FOLLOW_UP_WEEKS,
    simulate_study,
    study_design,
    to_redcap,
)

app = typer.Typer(
    help="Clean, derive, model and report a gluteal-amnesia rehabilitation cohort study.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
_state = {"debug": False}

ParamsOption = Annotated[
    Path, typer.Option("--params", help="The study's params.yaml (every tunable lives there).")
]
DEFAULT_PARAMS = Path("params.yaml")
# The fit stage's tables hold counts below min_cell_size (numbers at risk of 1, per-site groups),
# and its metrics repeat counts a report's flow may hide as complements (withdrawn, recovered):
# both sit with the data, for the analyst; reports/ holds only what is safe to send.
MODELS_FOLDER = "models"
METRICS_FILE = "metrics.json"
DEFAULT_MODELS = Path("data") / MODELS_FOLDER
DEFAULT_METRICS = Path("data") / METRICS_FILE


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Each stage reads the previous stage's folder and writes only its own."""
    _state["debug"] = debug


def one_line_errors(command: Callable) -> Callable:
    """Print the toolkit's errors as one line and exit non-zero; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GaRehabError as error:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except (KeyboardInterrupt, typer.Exit):
            raise
        except OSError as error:  # a file the OS refused: say which and why, not a traceback
            if _state["debug"]:
                raise
            where = f" {error.filename}" if error.filename else ""
            console.print(
                f"[bold red]error:[/] cannot access{where}: {error.strerror or error} "
                "(check the path and its permissions, and free disk space)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(1)
        except Exception as error:  # noqa: BLE001 - an unexpected failure still gets one line
            if _state["debug"]:
                raise
            console.print(
                f"[bold red]unexpected error:[/] {type(error).__name__}: {error} "
                "(run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(2)

    return wrapper


def stage_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


# --- simulate ---------------------------------------------------------------------------------


def run_simulate(
    out: Path,
    participants: int,
    seed: int,
    mess_rate: float,
    follow_up_weeks: int,
    output_format: str,
    derive: dict,
) -> None:
    study = simulate_study(
        participants=participants,
        seed=seed,
        design=study_design(derive, follow_up_weeks),
        mess_rate=mess_rate,
    )
    if output_format == "redcap":
        data, dictionary = to_redcap(study)
        io.write_csv(data, out / "redcap_data.csv")
        io.write_csv(dictionary, out / "redcap_dictionary.csv")
    else:
        for table, frame in study.tables.items():
            io.write_csv(frame, out / f"{table}.csv")
    io.write_json({io.EXPORT_DATE_KEY: study.export_date.isoformat()}, out / io.EXPORT_INFO_FILE)
    io.write_published_json(study.truth, out / "truth.json")
    io.write_csv(study.injected_defects, out / "injected_defects.csv")


@app.command()
@one_line_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write the raw study into.")],
    participants: Annotated[int, typer.Option(min=1, help="Number of participants.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 20261125,
    mess_rate: Annotated[
        float,
        typer.Option(min=0.0, max=MAX_MESS_RATE, help="Share of rows given a recorded defect."),
    ] = 0.0,
    follow_up_weeks: Annotated[
        int, typer.Option(min=MIN_FOLLOW_UP_WEEKS, help="Weeks of follow-up.")
    ] = 40,
    output_format: Annotated[
        str, typer.Option("--format", help="csv (four tables) or redcap (one flat export).")
    ] = "csv",
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Write a synthetic study with known truth (truth.json, injected_defects.csv).

    The study follows the derive block's prescription and chronic cut-off.
    """
    if output_format not in ("csv", "redcap"):
        raise typer.BadParameter("--format must be csv or redcap")
    derive = read_params(params).derive.model_dump()
    with stage_progress() as progress:
        progress.add_task(f"simulating {participants} participants", total=None)
        run_simulate(out, participants, seed, mess_rate, follow_up_weeks, output_format, derive)
    console.print(f"wrote a study of {participants} participants to {out}")


# --- clean ------------------------------------------------------------------------------------


def run_clean(
    raw: Path, out: Path, mapping: Path | None, params: CleanParams, params_path: Path
) -> dict:
    from analysis.clean import clean_study, cleaning_report_markdown

    raw_study = io.read_raw_study(raw, mapping)
    export_date = io.resolve_export_date(
        raw_study.stated_export_dates, params.export_date, str(params_path)
    )
    # Written into a sibling folder that replaces `out` whole: never old and new tables mixed.
    # Each table is written as soon as it is clean, so a large study's are not all held.
    # Read before cleaning, which empties `raw_study.tables` to free each raw table once used.
    ignored_columns = raw_study.ignored_columns
    # Each table is written on a second thread while the next is cleaned, and waited for
    # before the next one's kept rows are taken (its memory peak).
    with io.stage_folder(out, "clean") as staging, io.BackgroundParquetWrites() as writes:
        result = clean_study(
            raw_study.tables,
            raw_study.files,
            params.model_dump(),
            export_date,
            reader_quarantine=raw_study.quarantine,
            hand_over=lambda table, frame: writes.write(frame, staging / f"{table}.parquet"),
            release_raw=True,
            before_kept=writes.wait,
        )
        result.report[io.IGNORED_COLUMNS] = ignored_columns
        writes.write(result.quarantine, staging / "quarantine.parquet")
        io.write_json(result.report, staging / "cleaning_report.json")
        io.write_text(cleaning_report_markdown(result.report), staging / "cleaning_report.md")
    return result.report


def print_cleaning_summary(report: dict) -> None:
    table = Table(title="Cleaning", title_justify="left")
    for heading in ("table", "input rows", "kept", "quarantined", "merged duplicates", "fixes"):
        table.add_column(heading, justify="left" if heading == "table" else "right")
    for name, counts in report["tables"].items():
        table.add_row(
            name,
            str(counts["input_rows"]),
            str(counts["kept"]),
            str(counts["quarantined"]),
            str(counts["merged_duplicates"]),
            str(sum(counts["fixes_by_rule"].values())),
        )
    Console().print(table)
    for name, columns in report.get(io.IGNORED_COLUMNS, {}).items():
        if columns:
            console.print(f"note: {name}: columns not used: {', '.join(columns)}", highlight=False)


@app.command()
@one_line_errors
def clean(
    raw: Annotated[Path, typer.Option(help="Folder with the raw export.")],
    out: Annotated[Path, typer.Option(help="Folder for clean tables and the quarantine.")],
    mapping: Annotated[
        Path | None, typer.Option(help="Mapping file for other file/column names, units, REDCap.")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Validate and normalise the four tables; every rejected row goes to quarantine."""
    with stage_progress() as progress:
        progress.add_task("cleaning", total=None)
        report = run_clean(raw, out, mapping, read_params(params).clean, params)
    print_cleaning_summary(report)


# --- derive -----------------------------------------------------------------------------------


def run_derive(clean_dir: Path, out: Path, params: DeriveParams):
    from analysis.derive import INPUT_CODED_COLUMNS, INPUT_COLUMNS, derive_tables

    tables = io.read_stage_frames(
        clean_dir, io.CLEAN_TABLES, "clean", INPUT_COLUMNS, coded=INPUT_CODED_COLUMNS
    )
    # derive_tables empties `tables` as it goes: no reference here keeps a table alive.
    frames = derive_tables(tables, params.model_dump())
    with io.stage_folder(out, "derive") as staging:
        io.write_parquet(frames.recovery, staging / "recovery.parquet")
        io.write_parquet(frames.weekly_intervals, staging / "weekly_intervals.parquet")
        io.write_parquet(frames.weekly_trajectories, staging / "weekly_trajectories.parquet")
    return frames


# The console's median is of the recovered only; the reports' medians are Kaplan-Meier (they
# also count who has not recovered yet, so they are longer): the label and caption say which.
OBSERVED_MEDIAN_HEADING = "median days among the recovered (not Kaplan-Meier)"
OBSERVED_MEDIAN_CAPTION = (
    'The study report shows Kaplan-Meier medians (its "Median time to recovery" table), '
    "which also count the people not yet recovered and are therefore longer."
)


def print_cohort_summary(recovery: pd.DataFrame) -> None:
    table = Table(
        title="Cohort",
        title_justify="left",
        caption=OBSERVED_MEDIAN_CAPTION,
        caption_justify="left",
    )
    for heading in ("adherence group", "n", "recovered", "withdrawn", OBSERVED_MEDIAN_HEADING):
        table.add_column(heading, justify="left" if heading == "adherence group" else "right")
    grouped = recovery.groupby(recovery[Recovery.adherence_group].fillna("unknown"))
    for group, rows in grouped:
        recovered = rows[rows[Recovery.recovered]]
        table.add_row(
            str(group),
            str(len(rows)),
            str(len(recovered)),
            str(int((rows[Recovery.event_type] == "withdrawn").sum())),
            f"{recovered[Recovery.time_to_recovery_days].median():.0f}" if len(recovered) else "-",
        )
    Console().print(table)


@app.command()
@one_line_errors
def derive(
    clean_dir: Annotated[Path, typer.Option("--clean", help="Folder written by `ga-rehab clean`.")],
    out: Annotated[Path, typer.Option(help="Folder for the analysis frames.")],
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Recovery, censoring, exposures and weekly frames, by the definitions in params.yaml."""
    with stage_progress() as progress:
        progress.add_task("deriving outcomes", total=None)
        frames = run_derive(clean_dir, out, read_params(params).derive)
    print_cohort_summary(frames.recovery)


# --- fit ------------------------------------------------------------------------------------


TIMELINE_MODEL_FILE = "timeline_model.json"
METRICS_STAGED = ".metrics.json.staged"
# Below this no survival model is defined (a hazard ratio compares people).
MIN_PARTICIPANTS_TO_FIT = 2


def run_fit(
    processed: Path,
    models_dir: Path,
    metrics_path: Path,
    params: StudyParams,
    only: list[str] | None = None,
):
    """Fit and write the tables; with `only`, other families' files and metrics are kept."""
    from analysis.fit import run_models
    from analysis.model_tables import check_model_tables

    frames = io.read_stage_frames(processed, io.DERIVED_FRAMES, "derive")
    recovery = frames["recovery"]
    size = (
        f"{len(recovery)} participant(s), {int(recovery[Recovery.recovered].sum())} recovered, "
        f"{recovery[Recovery.adherence_group].nunique()} adherence group(s)"
    )
    if len(recovery) < MIN_PARTICIPANTS_TO_FIT or not recovery[Recovery.recovered].any():
        raise GaRehabError(
            f"nothing to fit: the study has {size}; the models need at least "
            f"{MIN_PARTICIPANTS_TO_FIT} participants and one recovery (check the cleaning "
            "report for participants quarantined, or the export for missing visits)"
        )
    try:
        outputs = run_models(
            recovery,
            frames["weekly_intervals"],
            frames["weekly_trajectories"],
            params.stage_params("fit"),
            only=only,
            # Two groups of families side by side where there is a second core (the same
            # outputs either way): 8.1 -> 6.1 s on an idle 2-core machine; with the other core
            # busy it costs ~10% (docs/performance.md). A load average lags too much to choose.
            processes=2 if (os.cpu_count() or 1) >= 2 else 1,
        )
    except GaRehabError:
        raise
    except Exception as error:  # noqa: BLE001 - a model library's failure, said in study terms
        raise GaRehabError(
            f"the models could not be fitted on this study ({size}): "
            f"{type(error).__name__}: {error}. A study this small or this uniform cannot "
            "support them; check the cleaning report for participants lost, or run with "
            "--debug for the traceback"
        ) from error
    metrics = outputs.metrics
    if only is not None:
        # The families not refitted keep their tables, notes and metrics.
        notes_path = models_dir / "model_notes.csv"
        if notes_path.is_file():
            earlier = pd.read_csv(notes_path)
            refitted = earlier["model"].astype(str).str.startswith(tuple(only))
            outputs.tables["model_notes"] = pd.concat(
                [earlier[~refitted], outputs.tables["model_notes"]], ignore_index=True
            )
        if metrics_path.is_file():
            metrics = {**json.loads(metrics_path.read_text()), **metrics}
    # The metrics file sits outside the models folder: staged with it, moved in right after.
    # The fit-to-report contract: a table without a column the reports read stops here.
    check_model_tables(outputs.tables)
    with io.stage_folder(models_dir, "fit", keep_existing=only is not None) as staging:
        for name, table in outputs.tables.items():
            io.write_published_csv(table, staging / f"{name}.csv")
        if outputs.timeline_model is not None:
            io.write_published_json(outputs.timeline_model, staging / TIMELINE_MODEL_FILE)
        io.write_published_json(metrics, staging / METRICS_STAGED)
    io.replace_entry(models_dir / METRICS_STAGED, metrics_path)
    return outputs


def print_fit_summary(outputs) -> None:
    table = Table(title="Models", title_justify="left")
    table.add_column("headline")
    table.add_column("value", justify="right")
    metrics = outputs.metrics
    for group, median in metrics.get("km_median_days", {}).items():
        table.add_row(
            f"KM median days to recovery, {group} adherence",
            "not reached" if median is None else f"{median:.0f}",
        )
    if "cox_concordance" in metrics:
        table.add_row("Cox concordance", f"{metrics['cox_concordance']:.3f}")
    if "aft_best_distribution" in metrics:
        table.add_row("best AFT distribution (AIC)", metrics["aft_best_distribution"])
    failed = [model for model, kind, _ in outputs.notes if kind == "failed"]
    table.add_row("models failed", ", ".join(failed) or "none")
    Console().print(table)


@app.command()
@one_line_errors
def fit(
    processed: Annotated[Path, typer.Option(help="Folder written by `ga-rehab derive`.")],
    models: Annotated[
        Path,
        typer.Option(
            help="Folder for the tidy model tables (CSV): for the analyst only, they hold "
            "counts below min_cell_size, so keep it out of the folder that is shared."
        ),
    ] = DEFAULT_MODELS,
    metrics: Annotated[
        Path, typer.Option(help="Headline figures for `dvc metrics` (for the analyst only).")
    ] = DEFAULT_METRICS,
    params: ParamsOption = DEFAULT_PARAMS,
    only: Annotated[
        str | None,
        typer.Option(
            help="Fit just these model families (comma-separated names from fit.families in "
            "params.yaml, e.g. primary,landmark); the other families' outputs are kept."
        ),
    ] = None,
) -> None:
    """Survival, competing-risks and mixed models configured in params.yaml."""
    families = None if only is None else [name.strip() for name in only.split(",") if name.strip()]
    with stage_progress() as progress:
        progress.add_task("fitting models", total=None)
        outputs = run_fit(processed, models, metrics, read_params(params), families)
    print_fit_summary(outputs)


@app.command()
@one_line_errors
def timeline(
    severity: Annotated[str, typer.Option(help="mild, moderate or severe.")],
    adherence: Annotated[float, typer.Option(help="Share of prescribed sessions done, 0-1.")],
    sitting_hours: Annotated[float, typer.Option(help="Mean daily sitting hours.")],
    symptom_months: Annotated[
        float | None, typer.Option(help="How long symptoms have lasted, in months.")
    ] = None,
    underlying: Annotated[
        str, typer.Option(help="none, disc, nerve_entrapment or other.")
    ] = "none",
    models: Annotated[
        Path, typer.Option(help="Folder written by `ga-rehab fit`.")
    ] = DEFAULT_MODELS,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """One person's calibrated recovery range, in words a clinician can quote."""
    from analysis.timeline import TimelineModel

    path = models / TIMELINE_MODEL_FILE
    if not path.is_file():
        raise GaRehabError(f"{path} not found: run `ga-rehab fit` first")
    model = TimelineModel.from_dict(json.loads(path.read_text()))
    chronic_after = read_params(params).derive.chronic_after_months
    typer.echo(
        model.describe_range(
            severity,
            adherence,
            sitting_hours,
            symptom_months=symptom_months,
            underlying_condition=underlying,
            chronic_after_months=chronic_after,
        )
    )


# --- report ---------------------------------------------------------------------------------

NotebooksOption = Annotated[Path, typer.Option(help="Folder with the report notebooks.")]


def run_report(
    raw: Path | None,
    data: Path,
    models: Path,
    reports: Path,
    params: StudyParams,
    params_path: Path,
    notebooks: Path,
    kernels=None,
) -> list:
    """Render every report into `reports` (replaced only once all succeeded), on `kernels`
    (kernels.ReportKernels) if the caller started them ahead, else on kernels started here."""
    from analysis.report.render import render_all

    # Rendered beside the old reports, which are replaced only once every report succeeded.
    with io.stage_entries(reports, "report") as staging:
        try:
            rendered = render_all(
                raw=raw,
                interim=data / "interim",
                processed=data / "processed",
                models=models,
                reports=staging,
                params=params,
                params_file=params_path,
                notebooks=notebooks,
                kernels=kernels,
            )
        except ReportError as error:
            raise ReportError(_keep_failed_notebooks(str(error), staging, reports)) from None
    return [
        replace(
            report,
            html=reports / report.html.relative_to(staging),
            tables_dir=reports / report.tables_dir.relative_to(staging),
            executed=reports / report.executed.relative_to(staging),
        )
        for report in rendered
    ]


def _keep_failed_notebooks(message: str, staging: Path, reports: Path) -> str:
    """Move a failed run's executed notebooks where the message says they are kept."""
    for failed in staging.glob("executed/*.failed.ipynb"):
        (reports / "executed").mkdir(parents=True, exist_ok=True)
        os.replace(failed, reports / "executed" / failed.name)
    return message.replace(str(staging), str(reports))


def print_reports(rendered: list) -> None:
    table = Table(title="Reports", title_justify="left")
    table.add_column("report")
    table.add_column("file")
    table.add_column("seconds", justify="right")
    for report in rendered:
        table.add_row(report.name, str(report.html), f"{report.seconds:.1f}")
    Console().print(table)


@app.command()
@one_line_errors
def report(
    data: Annotated[
        Path, typer.Option(help="Data folder (raw/, interim/, processed/, models/).")
    ] = Path("data"),
    models: Annotated[
        Path | None, typer.Option(help="Folder written by `ga-rehab fit` (default: <data>/models).")
    ] = None,
    reports: Annotated[
        Path, typer.Option(help="Folder to share: the HTML and the safe CSVs beside each report.")
    ] = Path("reports"),
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Override a report parameter: key=value (repeatable)."),
    ] = None,
    notebooks: NotebooksOption = Path("notebooks"),
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Run the notebooks with papermill and render HTML reports (whole study and per site)."""
    from analysis.report.kernels import ReportKernels, kernel_count

    study = read_params(params).with_report(**parse_param_overrides(param or []))
    models = models or data / MODELS_FOLDER
    # The kernels start first: they boot and do their imports while this process loads the
    # rendering libraries.
    with (
        ReportKernels(notebooks, kernel_count(study.report.jobs)) as kernels,
        stage_progress() as progress,
    ):
        progress.add_task("rendering reports", total=None)
        rendered = run_report(
            data / "raw", data, models, reports, study, params, notebooks, kernels
        )
    print_reports(rendered)


# --- run --------------------------------------------------------------------------------------


@app.command()
@one_line_errors
def run(
    raw: Annotated[
        Path | None,
        typer.Option(help="Your study export; without it the built-in synthetic study is used."),
    ] = None,
    data: Annotated[
        Path, typer.Option(help="Data folder (raw/, interim/, processed/, models/).")
    ] = Path("data"),
    reports: Annotated[
        Path, typer.Option(help="Folder to share: the reports and the safe CSVs beside each.")
    ] = Path("reports"),
    mapping: Annotated[Path | None, typer.Option(help="Mapping file for --raw.")] = None,
    notebooks: NotebooksOption = Path("notebooks"),
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """The whole pipeline: (simulate ->) clean -> derive -> fit -> report, with a summary."""
    from analysis.report.kernels import ReportKernels, kernel_count

    study = read_params(params)
    # The report kernels start now and do their imports while the other stages run.
    with (
        ReportKernels(notebooks, kernel_count(study.report.jobs)) as kernels,
        stage_progress() as progress,
    ):
        if raw is None:
            raw = data / "raw"
            sim = study.simulate
            progress.add_task(f"simulating {sim.participants} participants", total=None)
            run_simulate(
                raw,
                sim.participants,
                sim.seed,
                sim.mess_rate,
                sim.follow_up_weeks,
                "csv",
                study.derive.model_dump(),
            )
        progress.add_task("cleaning", total=None)
        cleaning = run_clean(raw, data / "interim", mapping, study.clean, params)
        progress.add_task("deriving outcomes", total=None)
        frames = run_derive(data / "interim", data / "processed", study.derive)
        progress.add_task("fitting models", total=None)
        models = data / MODELS_FOLDER
        outputs = run_fit(data / "processed", models, data / METRICS_FILE, study)
        progress.add_task("rendering reports", total=None)
        rendered = run_report(raw, data, models, reports, study, params, notebooks, kernels)
    print_cleaning_summary(cleaning)
    print_cohort_summary(frames.recovery)
    print_fit_summary(outputs)
    print_reports(rendered)
