"""The package's import graph: no circles, no hidden imports, no private names across modules.

Read from the source with `ast` (module level and inside functions), so a circle dodged with a
function-local import is still a circle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = "analysis"
# The CLI imports a stage's module when that stage's command runs, so one command does not load
# every other stage's libraries; nothing imports the CLI, so no circle can hide behind it (its
# imports still count as edges of the graph).
LOCAL_IMPORTS_ALLOWED = {"analysis.cli"}


def module_names(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package under `root`."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.ImportFrom, modules: dict[str, Path]) -> list[tuple[str, str | None, str]]:
    """(module, imported name or None for a module, the name it is bound to) per alias."""
    found = []
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        bound = alias.asname or alias.name
        if submodule in modules:
            found.append((submodule, None, bound))
        else:
            found.append((node.module, alias.name, bound))
    return found


def import_facts(root: Path, package: str = PACKAGE) -> dict[str, dict]:
    """Per module: the package modules it imports, and its function-local and private imports."""
    modules = module_names(root, package)
    facts = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        local_nodes = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for inner in ast.walk(node)
        }
        edges, local, private = set(), [], []
        imported_modules = {}
        for node in ast.walk(tree):
            targets: list[tuple[str, str | None, str]] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == package:
                    targets = _imported(node, modules)
            elif isinstance(node, ast.Import):
                targets = [
                    (alias.name, None, alias.asname or alias.name)
                    for alias in node.names
                    if alias.name in modules
                ]
            for module, imported_name, bound in targets:
                if module not in modules or module == name:
                    continue
                edges.add(module)
                if imported_name is None:
                    imported_modules[bound] = module
                hidden = f"{name} line {node.lineno}: imports {module} in a function"
                if id(node) in local_nodes and hidden not in local:
                    local.append(hidden)
                if imported_name is not None and imported_name.startswith("_"):
                    private.append(f"{name} line {node.lineno}: {module}.{imported_name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                module = imported_modules[node.value.id]
                private.append(f"{name} line {node.lineno}: {module}.{node.attr}")
        facts[name] = {"edges": edges, "local": local, "private": private}
    return facts


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as sorted lists."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    facts = import_facts(PROJECT_ROOT)
    graph = {name: fact["edges"] for name, fact in facts.items()}
    assert circles(graph) == []


def test_no_analysis_module_is_imported_inside_a_function():
    facts = import_facts(PROJECT_ROOT)
    hidden = [
        line
        for name, fact in facts.items()
        if name not in LOCAL_IMPORTS_ALLOWED
        for line in fact["local"]
    ]
    assert hidden == []


def test_no_private_name_is_imported_from_another_module():
    facts = import_facts(PROJECT_ROOT)
    assert [line for fact in facts.values() for line in fact["private"]] == []


def test_the_checks_find_a_circle_a_hidden_import_and_a_private_name(tmp_path):
    """The three rules fail on a small package that breaks each of them."""
    package = tmp_path / PACKAGE
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "__init__.py").write_text("from analysis.inner.low import visible\n")
    (package / "inner" / "low.py").write_text("def visible():\n    return 1\n\n\n_hidden = 2\n")
    (package / "top.py").write_text(
        "from analysis.inner.low import _hidden\n"
        "from analysis.inner import low\n\n\n"
        "def run():\n    from analysis import middle\n\n    return middle, low._hidden\n"
    )
    (package / "middle.py").write_text("from analysis import top\n")
    facts = import_facts(tmp_path)
    graph = {name: fact["edges"] for name, fact in facts.items()}
    assert circles(graph) == [["analysis.middle", "analysis.top"]]
    assert facts["analysis.top"]["local"] == [
        "analysis.top line 6: imports analysis.middle in a function"
    ]
    assert facts["analysis.top"]["private"] == [
        "analysis.top line 1: analysis.inner.low._hidden",
        "analysis.top line 8: analysis.inner.low._hidden",
    ]
    assert facts["analysis.inner"]["private"] == []
