"""Rounding of every published number, so a study gives the same bytes on any machine.

Model tables, metrics and the CSVs beside each report are rounded to the significant digits
declared once in `analysis.conventions`: CPU and BLAS differences in the last digits of a
float then never change an output file, a `dvc.lock` hash or a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.conventions import CONVENTIONS


def is_p_value_name(name: object) -> bool:
    """Columns and keys holding p-values: `p_value` or ending in `_p_value`."""
    return str(name) == "p_value" or str(name).endswith("_p_value")


def round_significant(value: float, digits: int) -> float:
    """`value` to `digits` significant digits; integers, NaN and infinities unchanged."""
    if not math.isfinite(value) or value == int(value):
        return value
    return float(f"{value:.{digits}g}")


def digits_for(name: object) -> int:
    if is_p_value_name(name):
        return CONVENTIONS.published_p_value_significant_digits
    return CONVENTIONS.published_significant_digits


def rounded_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every float column rounded to its published precision."""
    rounded = frame.copy()
    for column in rounded.columns:
        values = rounded[column]
        if pd.api.types.is_float_dtype(values.dtype):
            digits = digits_for(column)
            rounded[column] = values.map(
                lambda value, digits=digits: (
                    value if pd.isna(value) else round_significant(float(value), digits)
                )
            ).astype(values.dtype)
    return rounded


def rounded_content(content, name: object = None):
    """JSON-like `content` with every float rounded (p-values by their key's name)."""
    if isinstance(content, Mapping):
        return {key: rounded_content(value, key) for key, value in content.items()}
    if isinstance(content, list | tuple):
        return [rounded_content(value, name) for value in content]
    if isinstance(content, float | np.floating):
        return round_significant(float(content), digits_for(name))
    return content
