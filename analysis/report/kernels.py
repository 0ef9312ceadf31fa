"""The report stage's Jupyter kernels: each started once, warmed with the notebooks' imports and
reused for several notebooks, one thread driving each.

Kept apart from `render` and light to import (no papermill, nbconvert or nbformat), so that a
command can start the kernels first and let them boot and import while it loads the rest.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

KERNEL_NAME = "python3"


# How long a kernel may take to start and run its warm-up (the notebooks' imports).
KERNEL_START_TIMEOUT_SECONDS = 120


def kernel_count(jobs: int | None = None) -> int:
    """How many kernels render the reports: `jobs` (params.yaml report.jobs), else one per CPU."""
    return max(1, int(jobs or os.cpu_count() or 1))


class ReadyOnReplyClient(AsyncKernelClient):
    """A kernel client that is ready once the kernel has answered on both channels it reads.

    jupyter_client's `wait_for_ready` ends by waiting until IOPub has been quiet for 0.2 s, to
    drop messages of earlier requests. A client made for one notebook has none it would read
    (nbclient takes only the messages of its own requests), so that wait left the kernel idle
    for 0.2 s before every notebook.
    """

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
                if reply["msg_type"] == "kernel_info_reply":
                    # IOPub is connected once it delivers the kernel's status for the request.
                    await self.iopub_channel.get_msg(timeout=0.2)
                    self._handle_kernel_info_reply(reply)
                    return
            except queue.Empty:
                pass
            if not await self.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")


class ReportKernel:
    """One Jupyter kernel reused for several notebooks, so heavy imports are paid once.

    Each notebook starts with the kernel's namespace cleared (`%reset -f`); modules stay
    imported. `warm_up` code (e.g. `warm_up_source`) runs as soon as the kernel has started, so
    its imports are done before the first notebook arrives. The kernel talks over IPC sockets in
    a private folder: no TCP port another user of the machine could reach, and no warning from
    ipykernel about unencrypted TCP. Use an instance from one thread only: its clients belong
    to that thread's event loop. The kernel runs in `cwd` (the notebooks' folder, as in
    JupyterLab).
    """

    def __init__(
        self, cwd: Path, kernel_name: str = KERNEL_NAME, warm_up: str | None = None
    ) -> None:
        self.cwd, self.kernel_name, self.warm_up = Path(cwd), kernel_name, warm_up
        self.manager = None
        self.clients: list = []
        self.sockets: Path | None = None

    def start(self, timeout_seconds: int = KERNEL_START_TIMEOUT_SECONDS) -> None:
        """Start the kernel (if it is not running) and run the warm-up code.

        A warm-up that fails is not an error here: the notebooks run the same imports, and
        their failing cell names the error.
        """
        if self.manager is not None and run_sync(self.manager.is_alive)():
            return
        self.shutdown()
        clients = self.clients

        class TrackedKernelManager(AsyncKernelManager):
            # nbclient leaves the clients of a kernel it does not own open; we close them.
            def client(self, **kwargs):
                created = super().client(**kwargs)
                clients.append(created)
                return created

        self.sockets = Path(tempfile.mkdtemp(prefix="ga-rehab-kernel-"))
        self.manager = TrackedKernelManager(
            kernel_name=self.kernel_name,
            transport="ipc",
            ip=str(self.sockets / "kernel"),
            client_factory=ReadyOnReplyClient,
        )
        run_sync(self.manager.start_kernel)(cwd=str(self.cwd))
        if self.warm_up:
            client = self.manager.client()
            client.start_channels()
            run_sync(client.wait_for_ready)(timeout=timeout_seconds)
            run_sync(client.execute_interactive)(
                self.warm_up,
                silent=True,
                store_history=False,
                timeout=timeout_seconds,
                output_hook=lambda message: None,
            )
            self.close_clients()

    def manager_for_next_notebook(self):
        """The running kernel's manager, (re)started if it is not alive."""

        self.close_clients()
        self.start()
        return self.manager

    def close_clients(self) -> None:
        """Close the channels of every client the last notebook opened."""
        while self.clients:
            self.clients.pop().stop_channels()

    def shutdown(self) -> None:
        """Stop the kernel (idempotent)."""

        self.close_clients()
        if self.manager is not None and self.manager.has_kernel:
            run_sync(self.manager.shutdown_kernel)(now=True)
        self.manager = None
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None

    def __enter__(self) -> ReportKernel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def code_cell_sources(notebook: Path) -> list[str]:
    """The source of each code cell of a notebook (read as the JSON it is stored as)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return [
        "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for cell in cells
        if cell["cell_type"] == "code"
    ]


def warm_up_source(notebooks: Iterable[Path]) -> str:
    """The notebooks' import statements, each once, then `gc.freeze()`: what a report kernel
    can do before the fit stage's tables exist.

    Freezing moves everything imported so far out of the garbage collector's sight, so the full
    collections `%reset -f` runs before each notebook scan only what notebooks made (with the
    libraries in view, each took ~0.2 s). Imported modules live as long as the kernel anyway.
    """
    statements: list[str] = []
    for notebook in notebooks:
        for source in code_cell_sources(notebook):
            try:
                tree = ast.parse(source)
            except SyntaxError:  # IPython syntax (magics): not an import the warm-up can run
                continue
            for node in tree.body:
                if isinstance(node, ast.Import | ast.ImportFrom):
                    statement = ast.unparse(node)
                    if statement not in statements:
                        statements.append(statement)
    return "\n".join([*statements, "import gc", "gc.freeze()"])


class ReportKernels:
    """`count` kernels in `notebooks` (their working folder), each driven by a thread of its
    own: started and warmed with the imports of every notebook there (`warm_up_source`) as soon
    as this object is made, so that start-up overlaps whatever the caller does next (its own
    imports; the other stages, in `ga-rehab run`).

    `run` hands a list of tasks to the kernels, each kernel taking the next task when it is
    free; use the object as a context manager, which stops the kernels.
    """

    def __init__(self, notebooks: Path, count: int, kernel_name: str = KERNEL_NAME) -> None:
        warm_up = warm_up_source(sorted(Path(notebooks).glob("*.ipynb")))
        self._inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(count)]
        self._threads = [
            threading.Thread(
                target=self._serve,
                args=(inbox, ReportKernel(notebooks, kernel_name, warm_up)),
                name=f"report-kernel-{number}",
                daemon=True,
            )
            for number, inbox in enumerate(self._inboxes)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _serve(inbox: queue.SimpleQueue, kernel: ReportKernel) -> None:
        # Never leaves early: `run` waits for every thread to take each batch.
        try:
            # A kernel that fails to start is started again by the first task, which says why
            # (and a missing folder is the rendering's error to report, not the kernel's).
            with contextlib.suppress(Exception):
                if kernel.cwd.is_dir():
                    kernel.start()
            while (batch := inbox.get()) is not None:
                batch.run_on(kernel)
        finally:
            kernel.shutdown()
            _close_thread_event_loop()

    def run(self, tasks: Sequence, work: Callable[[object, ReportKernel], object]) -> list:
        """`work(task, kernel)` for every task, results in the tasks' order; after a failure
        no task is started, and the first failure is raised once the running ones finish."""
        batch = _Batch(tasks, work)
        for inbox in self._inboxes:
            inbox.put(batch)
        for _ in self._inboxes:
            batch.finished.acquire()
        if batch.errors:
            raise batch.errors[0]
        return [batch.results[index] for index in range(len(tasks))]

    def close(self) -> None:
        """Stop every kernel (once its current task, if any, is done)."""
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> ReportKernels:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is KeyboardInterrupt:
            return  # no wait for running notebooks: each kernel stops with this process
        self.close()


class _Batch:
    """The tasks of one `ReportKernels.run` call, shared by the kernels' threads."""

    def __init__(self, tasks: Sequence, work: Callable) -> None:
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        for index, task in enumerate(tasks):
            self.pending.put((index, task))
        self.work = work
        self.results: dict[int, object] = {}
        self.errors: list[Exception] = []
        self.finished = threading.Semaphore(0)

    def run_on(self, kernel: ReportKernel) -> None:
        """Take tasks until none is left or one failed; record a failure for the caller."""
        try:
            while not self.errors:
                try:
                    index, task = self.pending.get_nowait()
                except queue.Empty:
                    return
                self.results[index] = self.work(task, kernel)
        except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
            self.errors.append(error)
        finally:
            self.finished.release()


def _close_thread_event_loop() -> None:
    """The kernel clients ran on this thread's event loop; it ends with the thread."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # the thread never needed one
        return
    loop.close()
