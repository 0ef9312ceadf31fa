"""The toolkit's own errors and warnings, in one place (as lifelines' exceptions module)."""

from __future__ import annotations


class GaRehabError(Exception):
    """Base of every error the toolkit raises on purpose; the CLI prints it as one line."""


class DataError(GaRehabError):
    """Input that cannot be read or cleaned row by row; names the file, row and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.row, self.column, self.hint = file, row, column, hint
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file is not None else None,
                f"row {row}" if row is not None else None,
                f"column {column!r}" if column is not None else None,
            )
            if part
        )
        text = f"{where}: {message}" if where else message
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class OutputError(GaRehabError):
    """Outputs that cannot be written: disk full, no permission, or another writer at work."""


class ParameterError(GaRehabError):
    """A value in params.yaml or on the command line that the toolkit cannot use."""


class ReportError(GaRehabError):
    """A report notebook failed to run or render, or a report's inputs are missing or stale."""


class ConvergenceError(GaRehabError):
    """A model fit whose optimiser did not reach an answer the toolkit can stand behind."""


class NotEstimableError(GaRehabError):
    """The data do not determine the quantity asked for (where R gives NA or stops)."""


class ModelWarning(UserWarning):
    """A model fitted, but with a caveat the result also records (e.g. a term not estimable)."""


class ConvergenceWarning(ModelWarning):
    """An optimizer reported non-convergence or a non-finite log-likelihood."""
