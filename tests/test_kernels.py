"""The report kernels: warm-up source, the pool that runs tasks on them, IPC transport."""

from __future__ import annotations

import subprocess
import sys
import threading

import nbformat
import pytest

from analysis.report import kernels, render
from tests.conftest import PROJECT_ROOT


def _notebook(path, *sources: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.cells.insert(1, nbformat.v4.new_markdown_cell("import not_code"))
    nbformat.write(notebook, path)


def test_warm_up_runs_each_notebook_import_once_then_freezes_the_collector(tmp_path):
    _notebook(
        tmp_path / "a.ipynb",
        "import json\nfrom pathlib import Path as P\nvalue = 1",
        "if value:\n    import csv",  # not at the top of a cell: not run ahead
    )
    _notebook(tmp_path / "b.ipynb", "%reset -f", "import json\nimport os.path")
    source = kernels.warm_up_source([tmp_path / "a.ipynb", tmp_path / "b.ipynb"])
    assert source.splitlines() == [
        "import json",
        "from pathlib import Path as P",
        "import os.path",
        "import gc",
        "gc.freeze()",
    ]


class FakeKernel:
    """Stands in for a Jupyter kernel: records which thread started and stopped it."""

    started: list[str] = []
    stopped: list[str] = []

    def __init__(self, cwd, kernel_name, warm_up):
        self.cwd, self.warm_up = cwd, warm_up

    def start(self):
        FakeKernel.started.append(threading.current_thread().name)

    def shutdown(self):
        FakeKernel.stopped.append(threading.current_thread().name)


@pytest.fixture
def fake_kernels(monkeypatch, tmp_path):
    FakeKernel.started, FakeKernel.stopped = [], []
    monkeypatch.setattr(kernels, "ReportKernel", FakeKernel)
    _notebook(tmp_path / "report.ipynb", "import json")
    return tmp_path


def test_the_pool_starts_every_kernel_at_once_and_returns_results_in_task_order(fake_kernels):
    with kernels.ReportKernels(fake_kernels, 2) as pool:
        results = pool.run(list(range(7)), lambda task, kernel: (task * 10, kernel.warm_up))
        assert [result for result, _ in results] == [0, 10, 20, 30, 40, 50, 60]
        assert {warm_up for _, warm_up in results} == {"import json\nimport gc\ngc.freeze()"}
        # A second batch runs on the same kernels.
        assert pool.run(["x"], lambda task, kernel: task) == ["x"]
    assert sorted(FakeKernel.started) == ["report-kernel-0", "report-kernel-1"]
    assert sorted(FakeKernel.stopped) == ["report-kernel-0", "report-kernel-1"]


def test_the_first_failure_is_raised_in_the_caller_and_no_task_starts_after_it(fake_kernels):
    done = []

    def work(task, kernel):
        if task == 0:
            raise OSError(28, "No space left on device")
        done.append(task)
        return task

    with kernels.ReportKernels(fake_kernels, 1) as pool, pytest.raises(OSError, match="space"):
        pool.run(list(range(5)), work)
    assert done == []


def test_a_kernel_that_cannot_start_is_started_again_by_its_first_task(fake_kernels, monkeypatch):
    def broken_start(self):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(FakeKernel, "start", broken_start)
    with (
        kernels.ReportKernels(fake_kernels, 2) as pool,
        pytest.raises(RuntimeError, match="no such kernel"),
    ):
        pool.run([1, 2], lambda task, kernel: kernel.start())
    assert sorted(FakeKernel.stopped) == ["report-kernel-0", "report-kernel-1"]


def test_a_real_kernel_talks_over_ipc_in_a_private_folder_and_warns_of_nothing(
    tmp_path, capfd, monkeypatch
):
    """ipykernel warns on stderr when it runs over TCP without encryption; over IPC it does
    not, and the sockets' folder (mode 0700) goes with the kernel."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("value = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import json\nprint(json.dumps(value))"),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    with kernels.ReportKernels(tmp_path, 1) as pool:
        sockets = []

        def work(task, kernel):
            kernel.start()
            sockets.append(kernel.sockets)
            assert kernel.manager.transport == "ipc"
            assert (kernel.sockets.stat().st_mode & 0o777) == 0o700
            return render.render_report(
                tmp_path / "tiny.ipynb", tmp_path / "out" / "tiny.html", {"value": 3}, kernel=kernel
            )

        (html,) = pool.run([None], work)
    assert html.is_file()
    executed = nbformat.read(tmp_path / "out" / "executed" / "tiny.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "3\n"
    assert not sockets[0].exists()
    assert "without encryption" not in capfd.readouterr().err


def test_the_report_modules_do_not_load_rfc3987_syntax():
    """jsonschema's optional IRI checker builds two dozen parsers on import (1-2 s)."""
    code = "import sys, analysis.report.render; print(sys.modules.get('rfc3987_syntax'))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
    )
    assert result.stdout.strip() == "None"
