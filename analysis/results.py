"""The one tidy shape every model result shares (R's broom convention, snake case)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.conventions import CONVENTIONS
from analysis.distributions import NORMAL
from analysis.errors import GaRehabError, ModelWarning

TIDY_COLUMNS = ("term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high")
HAZARD_RATIO_COLUMNS = ("hazard_ratio", "hr_conf_low", "hr_conf_high")
# The kind of a note recording a fit that raised one of the toolkit's errors.
FAILED = "failed"
# Libraries whose warnings a model note may name (never quote).
KNOWN_LIBRARIES = ("lifelines", "numpy", "pandas", "scipy", "statsmodels")
# Appended to a regression's tidy table: whether the data determine the term, and if not why
# (one sentence). A term that is not estimable has no standard error, test or interval.
ESTIMABILITY_COLUMNS = ("estimable", "reason")
# Marks the row of a factor's reference level in a regression table (gtsummary's reference row).
REFERENCE_COLUMN = "reference"


def z_critical() -> float:
    """The normal quantile for the declared confidence level (1.96 at 95 %)."""
    return float(NORMAL.ppf(0.5 + CONVENTIONS.confidence_level / 2))


def wald_table(terms, estimate, std_error) -> pd.DataFrame:
    """TIDY_COLUMNS from estimates and standard errors: z statistic, two-sided p, Wald CI."""
    estimate = np.asarray(estimate, dtype=float)
    std_error = np.asarray(std_error, dtype=float)
    statistic = estimate / std_error
    z = z_critical()
    return pd.DataFrame(
        {
            "term": list(terms),
            "estimate": estimate,
            "std_error": std_error,
            "statistic": statistic,
            "p_value": 2 * NORMAL.sf(np.abs(statistic)),
            "conf_low": estimate - z * std_error,
            "conf_high": estimate + z * std_error,
        }
    )[list(TIDY_COLUMNS)]


def with_hazard_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """A log-hazard tidy table with the hazard ratio and its CI (exponentiated) beside it."""
    return table.assign(
        hazard_ratio=np.exp(table["estimate"]),
        hr_conf_low=np.exp(table["conf_low"]),
        hr_conf_high=np.exp(table["conf_high"]),
    )[[*TIDY_COLUMNS, *HAZARD_RATIO_COLUMNS]]


def with_estimability(
    table: pd.DataFrame, not_estimable: dict[str, str], limits: dict[str, float] | None = None
) -> pd.DataFrame:
    """The tidy table with ESTIMABILITY_COLUMNS; the terms in `not_estimable` lose their numbers.

    `not_estimable` maps term -> the reason in one sentence, as R's NA. A term whose estimate
    runs to +-infinity keeps that limit as its estimate (from `limits`); an aliased term gets
    NaN. Every other number of such a term (standard error, test, interval) is NaN.
    """
    limits = limits or {}
    table = table.copy()
    affected = table["term"].isin(list(not_estimable))
    numbers = [c for c in table.columns if c != "term"]
    if affected.any():  # an empty .loc assignment still costs pandas milliseconds
        table.loc[affected, numbers] = np.nan
    for term, limit in limits.items():
        row = table["term"] == term
        table.loc[row, "estimate"] = limit
        if "hazard_ratio" in table:
            table.loc[row, "hazard_ratio"] = np.exp(limit)
    table["estimable"] = ~affected
    table["reason"] = table["term"].map(not_estimable).fillna("")
    return table


def with_reference_rows(table: pd.DataFrame, references: dict[str, Any]) -> pd.DataFrame:
    """The tidy table with one row per factor's reference level, before the factor's other levels.

    A reference row reads `factor[level]` with estimate 0 (hazard ratio 1) and no standard
    error, test or interval: the level the other levels are compared with, as gtsummary shows
    it. Every row gets REFERENCE_COLUMN (true only on those rows). A factor with no term in the
    table (one level only) gets no reference row.
    """
    table = table.assign(**{REFERENCE_COLUMN: False})
    if table.empty:
        return table
    first_of = {}
    for factor, level in references.items():
        levels = table.index[table["term"].astype(str).str.startswith(f"{factor}[")]
        if len(levels):
            first_of[levels[0]] = (factor, level)
    records = []
    for index, row in zip(table.index, table.to_dict("records"), strict=True):
        if index in first_of:
            factor, level = first_of[index]
            reference = dict.fromkeys(table.columns, np.nan)
            reference.update(term=f"{factor}[{level}]", estimate=0.0, **{REFERENCE_COLUMN: True})
            if "hazard_ratio" in table:
                reference["hazard_ratio"] = 1.0
            if "estimable" in table:
                reference.update(estimable=True, reason="")
            records.append(reference)
        records.append(row)
    return pd.DataFrame(records, columns=table.columns)


@dataclass
class ModelResult:
    """A fitted model: the underlying object (`.fitted`), its tidy table and what was done.

    `notes` records, in the toolkit's own complete sentences, everything a reader must know
    about how the numbers were obtained (rows left out, terms not estimable, a penalty the caller
    asked for); each note was also issued as a `ModelWarning`.
    """

    fitted: Any
    coefficients: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def tidy(self) -> pd.DataFrame:
        """One row per term with the TIDY_COLUMNS (and hazard-ratio columns where relevant)."""
        return self.coefficients.copy()

    @property
    def summary(self) -> pd.DataFrame:
        return self.tidy()

    def note(self, message: str) -> None:
        """Record a caveat on the result and warn about it by name."""
        self.notes.append(message)
        warnings.warn(message, ModelWarning, stacklevel=3)


def run_collecting_notes(
    model: str,
    fit: Callable[[], Any],
    failures: tuple[type[Exception], ...] = (GaRehabError,),
) -> tuple[Any, list[tuple[str, str, str]]]:
    """Run one fit; every warning it raises becomes a (model, kind, message) note.

    The one warning-to-note collector of the toolkit. Its own warnings keep their sentences; a
    library's warning is not passed on in the library's words but named in a sentence of the
    toolkit's. An error in `failures` (the toolkit's own, by default) becomes a note of kind
    FAILED and the result None; any other error propagates.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit()
        except failures as error:
            failed = [(model, FAILED, str(error))]
            result = None
        else:
            failed = []
    notes = [(model, warning.category.__name__, _note_text(warning)) for warning in caught]
    return result, failed + notes


def _note_text(warning: warnings.WarningMessage) -> str:
    if issubclass(warning.category, ModelWarning):
        return str(warning.message)
    source = Path(warning.filename).parts
    library = next((part for part in source if part in KNOWN_LIBRARIES), "a library")
    return (
        f"While fitting, {library} raised a {warning.category.__name__} that the toolkit has no "
        "rule for; the numbers were kept, so check this model before relying on it."
    )
