"""params.yaml as typed blocks: every block validated, one-line errors, read once per command."""

from __future__ import annotations

import ast
import copy
import io as stdlib_io
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from analysis import params as params_module
from analysis.cli import app
from analysis.errors import ParameterError
from analysis.model_tables import MODEL_TABLES
from analysis.params import (
    STAGE_BLOCKS,
    StudyParams,
    parse_param_overrides,
    read_params,
    validated_params,
)
from analysis.report import kernels, render
from tests.conftest import PROJECT_ROOT

PARAMS = PROJECT_ROOT / "params.yaml"
NOTEBOOKS = PROJECT_ROOT / "notebooks"


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def changed(content: dict, dotted: str, value=None, *, remove: bool = False) -> dict:
    """A copy of `content` with the key at `dotted` (a.b.0.c) set to `value` or removed."""
    content = copy.deepcopy(content)
    *parents, last = dotted.split(".")
    node = content
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if remove:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return content


def error_of(content: dict) -> str:
    with pytest.raises(ParameterError) as error:
        validated_params(content, "params.yaml")
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_shipped_params_validate_and_reach_the_stages_unchanged(shipped):
    study = read_params(PARAMS)
    for block in ("simulate", "derive", "fit", "timeline", "report"):
        assert getattr(study, block).model_dump() == shipped[block], block
    # Numbers keep the type YAML gave them (28 stays 28), so outputs print them as before.
    assert study.fit.km_times_days[1] == 28 and isinstance(study.fit.km_times_days[1], int)
    assert isinstance(study.derive.recovery.max_secondary_pain, float)
    assert study.clean.export_date is None
    assert set(study.stage_params("fit")) == {"fit", "timeline", "derive", "report"}
    assert study.stage_params("fit")["fit"] == shipped["fit"]


@pytest.mark.parametrize(
    ("dotted", "value", "allowed"),
    [
        ("simulate.participants", 0, "a whole number >= 1"),
        ("simulate.mess_rate", 1.5, "a number >= 0 and <= 1"),
        ("clean.export_date", "31/01/2025", "a date written YYYY-MM-DD, or null"),
        ("clean.date_order", "dayfirst", "one of 'evidence', 'day_first', 'month_first'"),
        ("clean.sitting_minutes_threshold", 12, "a number > 24"),
        ("derive.follow_up_days", "280", "a whole number >= 1"),
        ("derive.recovery.require_clinician", "yes", "true or false"),
        ("derive.recovery.min_phase", 4, "a whole number >= 1 and <= 3"),
        ("derive.adherence.group_cutoffs", [0.8, 0.5], "numbers in increasing order"),
        (
            "derive.adherence.group_labels",
            ["low", "high"],
            "3 labels, one more than the cut-offs in group_cutoffs",
        ),
        ("derive.sitting.band_labels", ["a", "a", "b"], "names that differ from each other"),
        ("fit.primary.units.weekly_adherence.per", 0, "a number > 0"),
        ("fit.milestones.quoted.0.quantile", 1.5, "a number > 0 and < 1"),
        (
            "fit.landmark.group_labels",
            ["a"],
            "3 labels, one more than the cut-offs in group_cutoffs",
        ),
        ("fit.mixed.max_week", "all", "a number > 0, or null"),
        ("timeline.quantiles", [0.5, 0.1], "numbers in increasing order"),
        ("timeline.brier_weeks", [4], "a list of 2 values, each a number >= 0"),
        ("timeline.calibration_folds", 1, "a whole number >= 2"),
        ("report.min_cell_size", "ten", "a whole number >= 3"),
        ("report.jobs", 0, "a whole number >= 1, or null"),
    ],
)
def test_a_bad_value_is_one_line_naming_file_key_value_and_what_is_allowed(
    shipped, dotted, value, allowed
):
    message = error_of(changed(shipped, dotted, value))
    assert message == f"params.yaml: {dotted} = {value!r} is not allowed: {allowed}"


def test_the_error_points_at_the_item_or_the_key_that_must_change(shipped):
    message = error_of(changed(shipped, "fit.km_times_days", [0, 28.5]))
    assert message == "params.yaml: fit.km_times_days.1 = 28.5 is not allowed: a whole number >= 0"
    message = error_of(changed(shipped, "fit.adherence_grouping.cutoffs", [0.5]))
    assert message == (
        "params.yaml: fit.adherence_grouping.labels = ['low', 'moderate', 'high'] is not allowed: "
        "2 labels, one more than the cut-offs in cutoffs"
    )
    message = error_of(changed(shipped, "derive.adherence.prescribed_sessions_per_week", {4: 3}))
    assert message == (
        "params.yaml: derive.adherence.prescribed_sessions_per_week.4 is not allowed as a key: "
        "a whole number >= 1 and <= 3"
    )


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ("mystery", "mystery = 1 is not allowed: not a key of the file (known: simulate, clean"),
        ("report.min_cel_size", "report.min_cel_size = 1 is not allowed: not a key of report"),
        ("derive.recovery.min_phaze", "derive.recovery.min_phaze = 1 is not allowed: not a key"),
        ("fit.milestones.quoted.0.quantiel", "fit.milestones.quoted.0.quantiel = 1 is not"),
    ],
)
def test_an_unknown_key_is_an_error_not_ignored(shipped, dotted, expected):
    assert error_of(changed(shipped, dotted, 1)).startswith(f"params.yaml: {expected}")


def test_a_missing_key_is_an_error_with_what_it_needs(shipped):
    message = error_of(changed(shipped, "report.figure_dpi", remove=True))
    assert message == "params.yaml: report.figure_dpi is missing: a whole number >= 1"
    message = error_of(changed(shipped, "timeline", remove=True))
    assert message.startswith("params.yaml: timeline is missing: a mapping with the keys")


def test_several_problems_are_counted_once_each(shipped):
    content = changed(changed(shipped, "fit.mixed.max_week", "x"), "report.figure_dpi", "y")
    assert error_of(content).endswith("(and 1 more problem(s))")


def test_a_missing_or_broken_params_file_is_one_line(tmp_path):
    with pytest.raises(ParameterError, match="params file not found"):
        read_params(tmp_path / "absent.yaml")
    (tmp_path / "p.yaml").write_text("report: [unclosed\n")
    with pytest.raises(Exception, match="not valid YAML"):
        read_params(tmp_path / "p.yaml")


# --- command-line overrides -------------------------------------------------------------------


def test_param_overrides_are_typed_literals():
    overrides = parse_param_overrides(
        [
            "min_cell_size=10",
            "site=site_A",
            "cutoffs=[0.6, 0.9]",
            "site_reports=false",
            "figure_dpi=120.5",
            "jobs=None",
            "text='quoted'",
        ]
    )
    assert overrides == {
        "min_cell_size": 10,
        "site": "site_A",
        "cutoffs": [0.6, 0.9],
        "site_reports": False,
        "figure_dpi": 120.5,
        "jobs": None,
        "text": "quoted",
    }


@pytest.mark.parametrize("item", ["no_equals_sign", "=5", "two words=1", "1abc=2"])
def test_param_override_without_a_name_is_an_error(item):
    with pytest.raises(ParameterError, match="key=value"):
        parse_param_overrides([item])


def test_overrides_are_validated_like_the_file():
    study = read_params(PARAMS)
    assert study.with_report(min_cell_size=10, site="site_A").report.min_cell_size == 10
    assert study.report.min_cell_size == 5  # the file's values stay as read
    with pytest.raises(ParameterError) as error:
        study.with_report(**parse_param_overrides(["min_cell_size=ten"]))
    assert str(error.value) == (
        "--param: report.min_cell_size = 'ten' is not allowed: a whole number >= 3"
    )
    with pytest.raises(ParameterError, match=r"report.jobs = 0 is not allowed"):
        study.with_report(jobs=0)
    with pytest.raises(ParameterError, match="min_cel_size = 3 is not allowed: not a key"):
        study.with_report(min_cel_size=3)


# --- what the stages and notebooks receive ----------------------------------------------------


def test_each_notebook_gets_every_value_it_declares_resolved(tmp_path):
    study = read_params(PARAMS).with_report(min_cell_size=7, site_reports=False)
    (tmp_path / "models").mkdir()
    # A table with the columns the reports read (model_tables checks them before rendering).
    columns = MODEL_TABLES["km_curves"]
    (tmp_path / "models" / "km_curves.csv").write_text(
        ",".join(columns) + "\n" + ",".join("1" * len(columns)) + "\n"
    )
    jobs = render.report_jobs(
        raw=tmp_path / "raw",
        interim=tmp_path,
        processed=tmp_path,
        models=tmp_path / "models",
        reports=tmp_path / "reports",
        params=study,
        params_file=PARAMS,
        notebooks=NOTEBOOKS,
    )
    assert [job.name for job in jobs] == list(render.REPORT_NOTEBOOKS)
    for job in jobs:
        declared = set(render.notebook_parameters(job.notebook))
        # tables_dir is added by render_report (the staging folder); site None = whole study.
        assert set(job.parameters) == declared - {"tables_dir"}, job.name
        given = {key for key, value in job.parameters.items() if value is not None}
        assert given == declared - {"tables_dir", "site"}, job.name
        assert job.parameters["min_cell_size"] == 7
        assert job.parameters["study_params"] == study.stage_params("report")
        assert job.parameters["study_params"]["report"]["min_cell_size"] == 7


def tiny_params(root: Path) -> Path:
    """The shipped params for a study small enough to run every stage in seconds."""
    content = yaml.safe_load(PARAMS.read_text())
    content["simulate"].update(participants=40, follow_up_weeks=12)
    content["fit"]["families"] = ["kaplan_meier"]
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def test_ga_rehab_run_reads_params_yaml_once_and_hands_notebooks_the_values(tmp_path, monkeypatch):
    params_file = tiny_params(tmp_path)
    opened: list[str] = []
    real_open = stdlib_io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file).resolve() == params_file.resolve():
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    rendered: list[dict] = []

    def render_report(notebook, output_html, parameters, **kwargs):
        """Papermill's part, recorded: the kernels run in other processes."""
        rendered.append(dict(parameters))
        return output_html

    class NoKernel:
        def __init__(self, *args):
            pass

        def start(self):
            pass

        def shutdown(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

    monkeypatch.setattr(stdlib_io, "open", counting_open)  # what Path.open/read_text call
    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr(render, "render_report", render_report)
    monkeypatch.setattr(kernels, "ReportKernel", NoKernel)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data",
            str(tmp_path / "data"),
            "--reports",
            str(tmp_path / "reports"),
            "--notebooks",
            str(NOTEBOOKS),
            "--params",
            str(params_file),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert len(opened) == 1, opened
    study = read_params(params_file)
    assert len(rendered) > len(render.REPORT_NOTEBOOKS)  # site reports too
    for parameters in rendered:
        site = parameters["study_params"]["report"]["site"]
        assert parameters.get("site") == site
        assert parameters["study_params"] == study.with_report(site=site).stage_params("report")
        assert parameters["min_cell_size"] == study.report.min_cell_size


def test_every_stage_gets_only_the_blocks_it_declares():
    study = read_params(PARAMS)
    assert set(STAGE_BLOCKS) == {"simulate", "clean", "derive", "fit", "report"}
    for stage, blocks in STAGE_BLOCKS.items():
        assert tuple(study.stage_params(stage)) == blocks
    assert set(StudyParams.model_fields) == set().union(*STAGE_BLOCKS.values())


def test_a_notebook_value_left_out_is_named():
    with pytest.raises(ParameterError, match=r"not given: min_cell_size, study_params;"):
        params_module.require_report_parameters(
            {"site": None, "min_cell_size": None, "study_params": None, "figure_dpi": 100},
            may_be_none=("site",),
        )


def test_values_reach_the_notebooks_with_their_types():
    """Papermill writes dict keys as text; the report's translator keeps {1: 7} as it is."""
    translator = render.LiteralKeysTranslator
    blocks = read_params(PARAMS).stage_params("report")
    assert ast.literal_eval(translator.translate(blocks)) == blocks
    assert "{1: 7, 2: 3, 3: 3}" in translator.translate(blocks)
