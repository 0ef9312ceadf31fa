"""The one tidy shape every model result shares (R's broom convention, snake case)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.errors import ModelWarning

TIDY_COLUMNS = ("term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high")
HAZARD_RATIO_COLUMNS = ("hazard_ratio", "hr_conf_low", "hr_conf_high")


@dataclass
class ModelResult:
    """A fitted model: the underlying object (`.fitted`), its tidy table and what was done.

    `notes` records every fallback applied (e.g. "penalizer 0.01 added after non-convergence")
    so a report can say it; each note was also issued as a `ModelWarning`.
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
