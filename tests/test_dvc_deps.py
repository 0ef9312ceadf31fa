"""dvc.yaml's deps cover every analysis module each stage runs (imports followed through).

A module a stage imports but dvc.yaml does not list would let `dvc repro` skip a stage whose
result changed. The imports are read from the source (module level and inside functions).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import yaml

from analysis.params import STAGE_BLOCKS
from analysis.simulate import study_design
from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "analysis"


def module_path(name: str) -> Path:
    relative = Path(*name.split("."))
    package = PROJECT_ROOT / relative / "__init__.py"
    return package if package.is_file() else PROJECT_ROOT / relative.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    return imports_in(ast.parse(path.read_text()))


NOTEBOOKS = PROJECT_ROOT / "notebooks"


def notebook_imports() -> list[str]:
    """The analysis modules the report notebooks import (read from their code cells)."""
    found = set()
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and not cell.source.lstrip().startswith("%"):
                found |= imports_in(ast.parse(cell.source))
    return sorted(found)


def imports_in(tree: ast.AST) -> set[str]:
    """Modules of the `analysis` package named by the imports of a parsed source."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("analysis")}
    return {name for name in found if module_path(name).is_file()}


# The modules each stage's command starts from (the CLI reads params through analysis.params,
# runs them and writes through io; the report stage also runs whatever its notebooks import).
STAGE_ENTRIES = {
    "simulate": ["analysis.simulate", "analysis.io", "analysis.params"],
    "clean": ["analysis.clean", "analysis.io", "analysis.redcap", "analysis.params"],
    "derive": ["analysis.derive", "analysis.io", "analysis.params"],
    "fit": ["analysis.fit", "analysis.io", "analysis.params"],
    "report": ["analysis.io", "analysis.params", "analysis.report.render", *notebook_imports()],
}


def closure(entries: list[str]) -> set[Path]:
    seen, pending = set(), list(entries)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(imported_modules(module_path(name)))
        parent = name.rsplit(".", 1)[0]
        if parent != name and module_path(parent).name == "__init__.py":
            pending.append(parent)
    return {module_path(name).relative_to(PROJECT_ROOT) for name in seen}


def test_every_module_a_stage_runs_is_a_dependency_of_that_stage():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    for stage, entries in STAGE_ENTRIES.items():
        deps = [Path(dep) for dep in stages[stage]["deps"]]
        missing = [
            str(path)
            for path in sorted(closure(entries))
            if path != Path("analysis/__init__.py")
            and not any(path == dep or dep in path.parents for dep in deps)
        ]
        assert not missing, f"dvc.yaml stage {stage!r} does not depend on {missing}"


def test_no_stage_depends_on_a_module_it_does_not_run():
    """A stage re-runs exactly when a module it imports changes: no dependency beyond them."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    for stage, entries in STAGE_ENTRIES.items():
        modules = closure(entries)
        # analysis/cli.py is the command itself (every stage runs it; its imports per command
        # would make its closure the whole package).
        code_deps = [
            Path(dep)
            for dep in stages[stage]["deps"]
            if dep.startswith("analysis") and dep != "analysis/cli.py"
        ]
        unused = [
            str(dep)
            for dep in code_deps
            if not any(path == dep or dep in path.parents for path in modules)
        ]
        assert not unused, f"dvc.yaml stage {stage!r} depends on {unused} but never imports them"


class RecordingBlock(dict):
    """A params block that records the dotted path of every key read from it."""

    def __init__(self, block: dict, path: str, read: set[str]):
        super().__init__(block)
        self.path, self.read = path, read

    def __getitem__(self, key):
        value = super().__getitem__(key)
        dotted = f"{self.path}.{key}"
        self.read.add(dotted)
        return RecordingBlock(value, dotted, self.read) if isinstance(value, dict) else value


def test_the_simulate_stage_declares_every_derive_param_the_simulator_reads():
    """The simulated study follows derive's definitions: changing one re-runs simulate."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    read: set[str] = set()
    study_design(
        RecordingBlock(params["derive"], "derive", read), params["simulate"]["follow_up_weeks"]
    )
    deepest = {path for path in read if not any(other.startswith(f"{path}.") for other in read)}
    declared = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["simulate"][
        "params"
    ]
    missing = [
        path
        for path in sorted(deepest)
        if not any(path == name or path.startswith(f"{name}.") for name in declared)
    ]
    assert deepest and not missing, f"dvc.yaml stage 'simulate' does not declare {missing}"


def test_every_stage_declares_exactly_the_params_blocks_the_cli_hands_it():
    """dvc.yaml's params per stage are the blocks `StudyParams.stage_params(stage)` passes on
    (a block, or the keys of it the stage reads)."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_BLOCKS)
    for stage, blocks in STAGE_BLOCKS.items():
        declared = stages[stage].get("params", [])
        assert {entry.split(".")[0] for entry in declared} == set(blocks), (
            f"dvc.yaml stage {stage!r}: {declared}"
        )
