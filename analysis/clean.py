"""Lossless cleaning of the four canonical tables.

Each rule is a small named step. What is unambiguous is fixed and counted (units, date formats,
flag spellings, whitespace, case, exercise-name variants); what is not is quarantined with a
reason: a whole row when it cannot be placed (no participant, no date, unknown exercise), or a
single value when the rest of the row is sound (pain 11 becomes missing, the 11 is kept in the
quarantine). For every table: input rows = kept + quarantined rows + merged duplicates.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc

from analysis.errors import ParameterError
from analysis.schema import (
    CANONICAL_TABLES,
    EXERCISE_PHASE,
    RECORD_KEYS,
    Assessments,
    Diary,
    Participants,
    Quarantine,
    Sessions,
    check_typed_frame,
    column_names,
)

SOURCE_ROW = Quarantine.source_row
# A reader's note on a raw frame (DataFrame.attrs): the decimal mark to assume in a column
# that proves none; None where the file's locale writes decimal commas (";"-separated CSV).
UNPROVEN_DECIMAL_MARK = "unproven_decimal_mark"
TABLE_ORDER = ("participants", "diary", "sessions", "assessments")

TEXT_DTYPE = pd.StringDtype("pyarrow")
PLAIN_NUMBER = r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "."})
TRUE_SPELLINGS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_SPELLINGS = frozenset({"false", "f", "no", "n", "0", "0.0"})
CANONICAL_FLAG_SPELLINGS = frozenset({"true", "false"})
CATEGORY_SYNONYMS = {"f": "female", "m": "male", "woman": "female", "man": "male", "disk": "disc"}

# Unit suffixes a raw numeric cell may carry, per canonical column: suffix -> factor to canonical.
HOURS_UNITS = {
    "h": 1.0,
    "hr": 1.0,
    "hrs": 1.0,
    "hours": 1.0,
    "min": 1 / 60,
    "mins": 1 / 60,
    "minutes": 1 / 60,
}
UNIT_SUFFIXES: dict[str, dict[str, float]] = {
    Diary.sitting_hours: HOURS_UNITS,
    Participants.baseline_sitting_hours: HOURS_UNITS,
    Sessions.load_kg: {"kg": 1.0, "kgs": 1.0, "lb": 0.45359237, "lbs": 0.45359237},
    Assessments.hip_abduction_n: {"n": 1.0, "kgf": 9.80665, "lbf": 4.4482216152605},
}
# Hours columns where a bare number at or above `clean.sitting_minutes_threshold` is minutes.
MINUTES_PRONE_COLUMNS = (Diary.sitting_hours, Participants.baseline_sitting_hours)
# A time of day after a date (dropped: the tables hold dates).
TIME_OF_DAY = (
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[AaPp][Mm])?(?:Z|[+-]\d{2}:?\d{2})?)$"
)
# A number (any separators; the column decides what they mean) and an optional unit word.
NUMBER_AND_UNIT = re.compile(
    r"^(?P<number>[-+]?[\d.,]*\d(?:[eE][-+]?\d+)?|[-+]?[\d.,]*\d[.,]?)\s*(?P<unit>[a-zA-Z]+)?$"
)


@dataclass(frozen=True)
class ColumnSpec:
    """How one canonical column is parsed, read off its pandera model."""

    name: str
    kind: str  # id | date | number | level | flag | category | exercise | text
    required: bool
    low: float | None = None
    high: float | None = None
    levels: tuple = ()


def column_specs(model: type[pandera.DataFrameModel]) -> list[ColumnSpec]:
    """Parsing specs for a table, so bounds and levels have one source: the schema."""
    specs = []
    for name, column in model.to_schema().columns.items():
        stats = {check.name: check.statistics for check in column.checks}
        levels = tuple(stats.get("isin", {}).get("allowed_values", ()))
        low = stats.get("greater_than_or_equal_to", {}).get("min_value")
        high = stats.get("less_than_or_equal_to", {}).get("max_value")
        dtype = str(column.dtype)
        if name == Participants.participant_id:
            kind = "id"
        elif dtype.startswith("datetime"):
            kind = "date"
        elif dtype == "boolean":
            kind = "flag"
        elif dtype.startswith("int") and levels:
            kind = "level"
        elif dtype.startswith(("float", "int")):
            kind = "number"
        elif set(levels) == set(EXERCISE_PHASE):
            kind = "exercise"
        elif levels:
            kind = "category"
        else:
            kind = "text"
        specs.append(ColumnSpec(name, kind, not column.nullable, low, high, levels))
    return specs


@dataclass
class CleanResult:
    """One table cleaned: the kept rows, the quarantine entries and the counts per rule."""

    table: str
    kept: pd.DataFrame
    quarantined: pd.DataFrame
    counts: dict = field(default_factory=dict)


def _flags(mask) -> np.ndarray:
    """A boolean mask as a numpy array (missing counts as False)."""
    if isinstance(mask, pd.Series):
        return mask.to_numpy(dtype=bool, na_value=False)
    return np.asarray(mask, dtype=bool)


def _quarantine_text(values) -> pd.Series:
    """Values as the quarantine keeps them: text, dates as YYYY-MM-DD."""
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.dt.strftime("%Y-%m-%d")
    return values.astype(str)


class _ColumnRejects:
    """What a parser calls on either ledger: the required/optional rule, written once."""

    def reject(self, spec: ColumnSpec, mask, rule: str, values, reason: str) -> None:
        """A bad value in a required column loses the row; in an optional one, only the value."""
        if spec.required:
            self.reject_rows(mask, rule, spec.name, values, reason)
        else:
            self.reject_values(mask, rule, spec.name, values, reason)


class _Ledger(_ColumnRejects):
    """Collects quarantine entries and fix counts while a table is cleaned.

    Masks and values are positional: row i of every mask is row i of the raw table.
    """

    def __init__(self, table: str, source_file: str, raw: pd.DataFrame) -> None:
        self.table, self.source_file = table, source_file
        self.row_labels = raw.index
        self.source_rows = raw[SOURCE_ROW].to_numpy(dtype="int64")
        self.rejected = np.zeros(len(raw), dtype=bool)
        self.entries: list[pd.DataFrame] = []
        self.fixes: Counter[str] = Counter()
        self.row_rules: Counter[str] = Counter()
        self.value_rules: Counter[str] = Counter()

    def _record(self, rows: np.ndarray, rule, column, values, reason, scope) -> None:
        """Entries for the rows at positions `rows`; `values` holds one value per such row."""
        if np.isscalar(values):
            values = pd.Series(values, index=range(len(rows)), dtype=object)
        self.entries.append(
            pd.DataFrame(
                {
                    Quarantine.table: self.table,
                    Quarantine.source_file: self.source_file,
                    Quarantine.source_row: self.source_rows[rows],
                    Quarantine.column: column,
                    Quarantine.value: _quarantine_text(values).to_numpy(),
                    Quarantine.rule: rule,
                    Quarantine.reason: reason,
                    Quarantine.scope: scope,
                }
            )
        )

    def _values_at(self, values, rows: np.ndarray):
        """The values shown for the rows at positions `rows` (a Series is matched by label)."""
        return values if np.isscalar(values) else values.loc[self.row_labels[rows]]

    def reject_row_positions(self, mask: np.ndarray, rule, column, values_at, reason) -> None:
        """Quarantine whole rows (each row once, under the first rule that rejects it).

        `values_at(rows)` gives the value shown for the rows at those positions.
        """
        new = mask & ~self.rejected
        rows = np.flatnonzero(new)
        if len(rows):
            self._record(rows, rule, column, values_at(rows), reason, "row")
            self.rejected |= new
            self.row_rules[rule] += len(rows)

    def reject_value_positions(self, mask: np.ndarray, rule, column, values_at, reason) -> None:
        """Quarantine single values; the caller sets them to missing and keeps the row."""
        rows = np.flatnonzero(mask)
        if len(rows):
            self._record(rows, rule, column, values_at(rows), reason, "value")
            self.value_rules[rule] += len(rows)

    def reject_rows(self, mask, rule: str, column, values, reason: str) -> None:
        """Quarantine whole rows (each row once, under the first rule that rejects it)."""
        self.reject_row_positions(
            _flags(mask), rule, column, lambda rows: self._values_at(values, rows), reason
        )

    def reject_values(self, mask, rule: str, column: str, values, reason: str) -> None:
        """Quarantine single values; the caller sets them to missing and keeps the row."""
        self.reject_value_positions(
            _flags(mask), rule, column, lambda rows: self._values_at(values, rows), reason
        )

    def fix(self, rule: str, mask: pd.Series) -> None:
        """Count the rows in `mask` as fixed by `rule`."""
        self.add_fixes(rule, int(_flags(mask).sum()))

    def add_fixes(self, rule: str, count: int) -> None:
        if count:
            self.fixes[rule] += count

    def quarantine_frame(self) -> pd.DataFrame:
        columns = column_names(Quarantine)
        if not self.entries:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in columns}).astype(
                {Quarantine.source_row: "int64"}
            )
        return pd.concat(self.entries, ignore_index=True)[columns]


class _DistinctLedger(_ColumnRejects):
    """The table's ledger as seen by a parser working on one column's distinct values.

    Each distinct text is judged once; a mask over the distinct values stands for every row
    holding one of them. Fix counts are weighted by those rows, and quarantine entries are
    written per row, in row order, exactly as a pass over every row would write them.
    """

    def __init__(self, ledger: _Ledger, codes: np.ndarray, distinct_count: int) -> None:
        self.ledger, self.codes = ledger, codes
        self.distinct_count = distinct_count

    @functools.cached_property
    def rows_per_value(self) -> np.ndarray:
        """How many rows hold each distinct value (counted once a fix needs it)."""
        return np.bincount(self.codes, minlength=self.distinct_count)

    def _values_at(self, values):
        if np.isscalar(values):
            return lambda rows: values
        return lambda rows: values.iloc[self.codes[rows]]

    def reject_rows(self, mask, rule: str, column, values, reason: str) -> None:
        flags = _flags(mask)
        if flags.any():  # else no row to spread the mask over (the usual case)
            by_row = flags[self.codes]
            self.ledger.reject_row_positions(by_row, rule, column, self._values_at(values), reason)

    def reject_values(self, mask, rule: str, column: str, values, reason: str) -> None:
        flags = _flags(mask)
        if flags.any():
            by_row = flags[self.codes]
            self.ledger.reject_value_positions(
                by_row, rule, column, self._values_at(values), reason
            )

    def fix(self, rule: str, mask: pd.Series) -> None:
        """Count every row holding a value in `mask` (a mask over some distinct values)."""
        positions = mask.index.to_numpy()[_flags(mask)]
        if len(positions):
            self.ledger.add_fixes(rule, int(self.rows_per_value[positions].sum()))


# --- text-level rules -------------------------------------------------------------------------


def trim_whitespace(values: pd.Series, ledger: _Ledger) -> pd.Series:
    """Strip stray whitespace around a cell (and collapse inner runs of spaces)."""
    stripped = values.str.strip()
    inner = stripped.str.contains("  ", regex=False)
    if inner.any():
        stripped = stripped.where(~inner, stripped.str.replace(r"\s+", " ", regex=True))
    ledger.fix("trim_whitespace", stripped != values)
    return stripped


def missing_mask(values: pd.Series) -> pd.Series:
    """Cells that say 'no value' in any of the usual spellings."""
    return values.str.lower().isin(MISSING_TOKENS)


# --- typed parsers ----------------------------------------------------------------------------


def parse_ids(values: pd.Series, spec: ColumnSpec, ledger: _Ledger) -> pd.Series:
    """Participant ids are case-insensitive: upper-case them."""
    upper = values.str.upper()
    ledger.fix("normalise_id_case", upper != values)
    return upper


def _month_day_twin(fmt: str) -> str | None:
    """The same format with day and month swapped, where a file could mean either order.

    Only numeric day/month formats with the year not first: nobody writes year-day-month.
    """
    if "%d" not in fmt or "%m" not in fmt or fmt.startswith("%Y"):
        return None
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _without_time_of_day(values: pd.Series, ledger: _Ledger) -> pd.Series:
    """A date written with a time of day (`2025-01-06 08:30`, `...T08:30:00`) is that date."""
    timed = values.str.contains(TIME_OF_DAY, regex=True).fillna(False)
    ledger.fix("date_time_of_day_dropped", timed)
    return values.where(~timed, values.str.replace(TIME_OF_DAY, "", regex=True))


DATE_ORDERS = ("evidence", "day_first", "month_first")


def parse_dates(
    values: pd.Series,
    spec: ColumnSpec,
    ledger: _Ledger,
    formats: list[str],
    order: str = "evidence",
    sentinels: Iterable[str] = (),
):
    """Parse with the configured formats; day/month order declared or decided per column.

    With `order="evidence"` a configured day/month format also has its twin with the two
    swapped. A value read one way only (13/01/2025, or 01/13/2025) is evidence for that order.
    A column with evidence for one order only is read in that order; a value read both ways
    with different dates, in a column with no evidence or evidence for both, is quarantined as
    ambiguous: never guessed. A declared order reads every such format that way round.
    Dates in `sentinels` (1900-01-01 standing for "unknown") are missing, with a record.
    """
    if order not in DATE_ORDERS:
        raise ParameterError(f"clean.date_order is {order!r}; use one of {list(DATE_ORDERS)}")
    if order != "evidence":
        day_first = order == "day_first"
        formats = [
            fmt if day_first or _month_day_twin(fmt) is None else _month_day_twin(fmt)
            for fmt in formats
        ]
    values = _without_time_of_day(values, ledger)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    pending = values != ""
    ambiguous = pd.Series(False, index=values.index)
    for position, fmt in enumerate(formats):
        if not pending.any():
            break
        as_written = pd.to_datetime(values[pending], format=fmt, errors="coerce")
        twin = _month_day_twin(fmt) if order == "evidence" else None
        if twin is None:
            reading = as_written
        else:
            swapped = pd.to_datetime(values[pending], format=twin, errors="coerce")
            only_written, only_swapped = (
                as_written.notna() & swapped.isna(),
                swapped.notna() & as_written.isna(),
            )
            differ = as_written.notna() & swapped.notna() & (as_written != swapped)
            if only_swapped.any() and not only_written.any():
                reading = swapped
                ledger.fix("date_order_month_first", swapped.notna())
            elif only_written.any() and not only_swapped.any():
                reading = as_written
            else:
                reading = as_written.where(~only_swapped, swapped).where(~differ)
                ambiguous.loc[differ.index[differ]] = True
        hit = reading.notna()
        parsed.loc[reading.index[hit]] = reading[hit]
        if position > 0:
            ledger.fix("date_format", hit)
        pending.loc[reading.index[hit]] = False
        pending &= ~ambiguous
    try:
        sentinel = parsed.isin(pd.to_datetime(list(sentinels), format="ISO8601"))
    except ValueError:
        raise ParameterError(
            f"clean.missing_date_sentinels must be dates like 1900-01-01, got {list(sentinels)}"
        ) from None
    ledger.reject(spec, sentinel, "missing_sentinel", values, "a date code for a missing value")
    parsed = parsed.where(~sentinel)
    ledger.reject(
        spec,
        ambiguous,
        "ambiguous_date",
        values,
        "day and month could be either way round, and the column does not settle the order",
    )
    ledger.reject(
        spec, pending, "unparseable_date", values, f"not a date in any of the formats {formats}"
    )
    return parsed


def to_float(values: pd.Series) -> pd.Series:
    """Plain decimal numbers as floats, anything else NaN (vectorized over Arrow strings)."""
    text = pa.chunked_array(pa.array(values.astype(TEXT_DTYPE).array))
    plain = pc.match_substring_regex(text, PLAIN_NUMBER)
    numbers = pc.cast(pc.if_else(plain, text, None), pa.float64())
    return pd.Series(numbers.to_numpy(zero_copy_only=False), index=values.index)


def map_values(values: pd.Series, mapping) -> pd.Series:
    """`Series.map` through the distinct values only (fast on long columns of few values)."""
    codes, uniques = pd.factorize(values)
    mapped = pd.Series(uniques, dtype=object).map(mapping)
    # A trailing missing slot, of the mapped dtype: factorize codes missing values as -1.
    mapped = mapped.reindex(range(len(uniques) + 1)).to_numpy()
    return pd.Series(mapped[codes], index=values.index)


def _single_separator_proof(text: pd.Series, mark: str) -> pd.Series:
    """One `mark` that cannot be a thousands separator: so it is the decimal mark."""
    other = "," if mark == "." else "."
    single = text.str.fullmatch(rf"\d*\{mark}\d+") & ~text.str.contains(other, regex=False)
    before = text.str.split(mark, regex=False).str[0]
    after = text.str.split(mark, regex=False).str[-1]
    could_group = before.str.fullmatch(r"[1-9]\d{0,2}") & (after.str.len() == 3)
    return single.fillna(False) & ~could_group.fillna(False)


def _grouping_proof(text: pd.Series, group: str, decimal: str) -> pd.Series:
    """Digits grouped by `group` (twice, or followed by `decimal`): `decimal` is the mark."""
    return text.str.fullmatch(
        rf"[1-9]\d{{0,2}}(?:\{group}\d{{3}}){{2,}}(?:\{decimal}\d+)?"
        rf"|[1-9]\d{{0,2}}(?:\{group}\d{{3}})+\{decimal}\d+"
    ).fillna(False)


def decimal_mark(
    numbers: pd.Series, unproven: str | None = "."
) -> tuple[str | None, pd.Series, pd.Series]:
    """The column's decimal mark from its own evidence: (mark, comma proofs, point proofs).

    `1,5` or `1.234,5` prove a decimal comma; `2.5` or `1,234.5` a decimal point; `1,000`
    proves nothing. The mark is "," only when some value proves it and none proves ".";
    `unproven` (".") when nothing proves either; None when the column proves both, or proves
    nothing in a file whose locale writes decimal commas (values then speak for themselves).
    """
    text = numbers.str.lstrip("+-")
    comma = _single_separator_proof(text, ",") | _grouping_proof(text, ".", ",")
    point = _single_separator_proof(text, ".") | _grouping_proof(text, ",", ".")
    if comma.any() and point.any():
        return None, comma, point
    if comma.any() or point.any():
        return ("," if comma.any() else "."), comma, point
    return unproven, comma, point


def _read_with_mark(numbers: pd.Series, mark: str) -> tuple[pd.Series, pd.Series]:
    """Numbers written with decimal `mark` (and the other separator grouping thousands)."""
    group = "," if mark == "." else "."
    valid = numbers.str.fullmatch(
        rf"[-+]?(?:[1-9]\d{{0,2}}(?:\{group}\d{{3}})+|\d+)?(?:\{mark}\d*)?(?:[eE][-+]?\d+)?"
    ).fillna(False) & numbers.str.contains(r"\d", regex=True).fillna(False)
    grouped = valid & numbers.str.contains(group, regex=False).fillna(False)
    plain = numbers.str.replace(group, "", regex=False).str.replace(mark, ".", regex=False)
    return to_float(plain.where(valid, "")), grouped


@dataclass
class NumberReading:
    """Number texts read by the column's decimal mark, with what each reading involved."""

    numbers: pd.Series
    decimal_comma: pd.Series
    thousands_separator: pd.Series
    ambiguous: pd.Series


def read_number_texts(numbers: pd.Series, unproven_mark: str | None = ".") -> NumberReading:
    """Number texts as floats, by the decimal mark the column itself proves.

    A comma is a decimal comma only when the whole column says so; where the column proves
    both marks, a value whose own text does not settle it is left unread (ambiguous).
    """
    mark, comma_proof, point_proof = decimal_mark(numbers, unproven_mark)
    no = pd.Series(False, index=numbers.index)
    if mark is not None:
        parsed, grouped = _read_with_mark(numbers, mark)
        comma = numbers.str.contains(",", regex=False).fillna(False) if mark == "," else no
        read = parsed.notna()
        return NumberReading(parsed, comma & read, grouped & read, no)
    by_comma, _ = _read_with_mark(numbers, ",")
    by_point, _ = _read_with_mark(numbers, ".")
    parsed = by_point.where(~comma_proof, by_comma)
    separated = numbers.str.contains(r"[.,]", regex=True) & ~comma_proof & ~point_proof
    return NumberReading(parsed.where(~separated), comma_proof, no, separated.fillna(False))


def _read_numbers_with_units(
    values: pd.Series, spec: ColumnSpec, ledger: _Ledger, unproven_mark: str | None
):
    """(numbers, unit text, ambiguous) for cells that are not all plain numbers."""
    parts = values.astype(TEXT_DTYPE).str.extract(NUMBER_AND_UNIT)
    reading = read_number_texts(parts["number"].fillna("").astype(TEXT_DTYPE), unproven_mark)
    ledger.fix("decimal_comma", reading.decimal_comma)
    ledger.fix("thousands_separator", reading.thousands_separator)
    ambiguous = reading.ambiguous.astype(bool)
    ledger.reject(
        spec,
        ambiguous,
        "ambiguous_number",
        values,
        "the column uses both decimal commas and decimal points; this value reads either way",
    )
    units = parts["unit"].fillna("").str.lower().astype(object)
    return reading.numbers.astype(float), units, ambiguous


def parse_numbers(
    values: pd.Series,
    spec: ColumnSpec,
    ledger: _Ledger,
    params: dict,
    unproven_mark: str | None = ".",
):
    """Numbers with their units converted to the canonical unit; out-of-range values rejected.

    A number without a unit in a minutes-prone column at or above the threshold is minutes; an
    explicit unit is never re-read. Sentinel codes (params `missing_sentinels`) are missing.
    `unproven_mark` is the decimal mark of a column that proves none (see `decimal_mark`).
    """
    numbers = to_float(values)
    plain = (numbers.notna() | (values == "")).all()
    if plain and (unproven_mark == "." or not values.str.contains(".", regex=False).any()):
        # Plain decimal numbers only (the usual case): no separators or units to weigh.
        unit_text = pd.Series("", index=values.index)
        ambiguous = pd.Series(False, index=values.index)
    else:
        numbers, unit_text, ambiguous = _read_numbers_with_units(
            values, spec, ledger, unproven_mark
        )
    sentinel = numbers.isin([float(code) for code in params.get("missing_sentinels", ())])
    ledger.reject(
        spec,
        sentinel,
        "missing_sentinel",
        values,
        "a code for a missing value (params clean.missing_sentinels)",
    )
    numbers = numbers.where(~sentinel)
    units = UNIT_SUFFIXES.get(spec.name, {})
    factor = unit_text.map({"": 1.0, **units})
    numbers = numbers * factor.to_numpy(dtype=float)
    for unit, unit_factor in units.items():
        if unit_factor != 1.0:
            ledger.fix(f"unit_{unit}_to_canonical", (unit_text == unit) & numbers.notna())
    if spec.name in MINUTES_PRONE_COLUMNS:
        minutes = (unit_text == "") & (numbers >= params["sitting_minutes_threshold"])
        numbers = numbers.where(~minutes, numbers / 60)
        ledger.fix("sitting_minutes_to_hours", minutes)
    not_number = numbers.isna() & (values != "") & ~sentinel & ~ambiguous
    ledger.reject(spec, not_number, "not_a_number", values, "not a number in a known unit")
    out_of_range = pd.Series(False, index=values.index)
    if spec.low is not None:
        out_of_range |= numbers < spec.low
    if spec.high is not None:
        out_of_range |= numbers > spec.high
    ledger.reject(
        spec,
        out_of_range,
        "out_of_range",
        values,
        f"outside the plausible range {spec.low} to {spec.high}",
    )
    return numbers.where(~out_of_range)


def parse_levels(values: pd.Series, spec: ColumnSpec, ledger: _Ledger) -> pd.Series:
    """Whole-number codes such as the programme phase; '2.0' is 2."""
    numbers = to_float(values)
    valid = numbers.isin(spec.levels)
    ledger.reject(
        spec, ~valid & (values != ""), "unknown_level", values, f"not one of {list(spec.levels)}"
    )
    return numbers.where(valid)


def parse_flags(values: pd.Series, spec: ColumnSpec, ledger: _Ledger) -> pd.Series:
    """yes/no, Y/N, 1/0, TRUE/FALSE in any case mean the same; record each re-spelling."""
    lower = values.str.lower()
    flags = pd.Series(pd.NA, index=values.index, dtype="boolean")
    flags[lower.isin(TRUE_SPELLINGS)] = True
    flags[lower.isin(FALSE_SPELLINGS)] = False
    ledger.fix("flag_spelling", flags.notna() & ~values.isin(CANONICAL_FLAG_SPELLINGS))
    ledger.reject(spec, flags.isna() & (values != ""), "unknown_flag", values, "not a yes/no value")
    return flags


def normalise_label(values: pd.Series) -> pd.Series:
    """Lower case, spaces and hyphens as underscores: 'Nerve entrapment' -> 'nerve_entrapment'."""
    return values.str.lower().str.replace(r"[\s\-]+", "_", regex=True)


def parse_categories(values: pd.Series, spec: ColumnSpec, ledger: _Ledger) -> pd.Series:
    """Canonical lower-case levels; case, spacing and a few synonyms are fixed."""
    labels = normalise_label(values).replace(CATEGORY_SYNONYMS)
    changed = (labels != values) & (values != "")
    ledger.fix("normalise_category", changed)
    valid = labels.isin(spec.levels)
    ledger.reject(
        spec, ~valid & (values != ""), "unknown_category", values, f"not one of {list(spec.levels)}"
    )
    return labels.where(valid)


def _exercise_key(name: str) -> str:
    """Order- and plural-insensitive key: 'Hip thrust (weighted)' ~ 'weighted_hip_thrust'."""
    tokens = re.findall(r"[a-z]+", name.lower())
    singular = [
        t[:-1] if len(t) > 3 and t.endswith("s") and not t.endswith("ss") else t for t in tokens
    ]
    return "".join(sorted(singular))


def match_exercise_names(names: pd.Series, min_similarity: float) -> dict[str, str | None]:
    """Map each distinct raw name to a catalogue exercise, or None when nothing is close enough."""
    by_key = {_exercise_key(name): name for name in EXERCISE_PHASE}
    by_squashed = {name.replace("_", ""): name for name in EXERCISE_PHASE}
    mapping: dict[str, str | None] = {}
    for raw in names.unique():
        key = _exercise_key(raw)
        squashed = re.sub(r"[^a-z]", "", raw.lower())
        match = by_key.get(key) or by_squashed.get(squashed) or by_squashed.get(squashed[:-1])
        if match is None:
            close = difflib.get_close_matches(
                squashed, list(by_squashed), n=1, cutoff=min_similarity
            )
            match = by_squashed[close[0]] if close else None
        mapping[raw] = match
    return mapping


def parse_exercises(values: pd.Series, spec: ColumnSpec, ledger: _Ledger, params: dict):
    """Exercise names matched to the catalogue (variants, plurals, one-letter typos)."""
    mapping = match_exercise_names(values[values != ""], params["exercise_name_min_similarity"])
    matched = map_values(values, mapping).astype(TEXT_DTYPE)
    ledger.fix("exercise_name", matched.notna() & (matched != values))
    ledger.reject(
        spec,
        matched.isna() & (values != ""),
        "unknown_exercise",
        values,
        "no catalogue exercise is close to this name",
    )
    return matched


# --- whole-table cleaning ---------------------------------------------------------------------


@dataclass
class _TypedColumn:
    """A parsed column: its distinct typed values and, per row, which of them the row holds."""

    distinct: pd.Series
    codes: np.ndarray

    @classmethod
    def of_rows(cls, rows: pd.Series) -> _TypedColumn:
        """A column whose every row is its own entry (for values set row by row)."""
        return cls(rows.reset_index(drop=True), np.arange(len(rows)))

    def at(self, positions: np.ndarray) -> pd.Series:
        """The typed values of the rows at `positions`, indexed 0, 1, ... (taken once)."""
        rows = self.codes[positions]
        if self.distinct.dtype == TEXT_DTYPE:
            # Taken by Arrow from one contiguous array of the distinct texts: pandas' take
            # goes through a chunked array, several times slower over millions of rows.
            texts = pa.array(self.distinct.array)
            if isinstance(texts, pa.ChunkedArray):
                texts = texts.combine_chunks()
            return pd.Series(pd.arrays.ArrowStringArray(texts.take(pa.array(rows))), copy=False)
        return pd.Series(self.distinct.array.take(rows), copy=False)

    def rows(self, index: pd.Index) -> pd.Series:
        """The typed value of every row, under the raw table's `index`."""
        return self.distinct.take(self.codes).set_axis(index)

    def value_codes(self, positions: np.ndarray) -> np.ndarray:
        """For the rows at `positions`, an integer equal exactly when their typed values are,
        and in the values' order (missing last): a table in key order gets ascending keys."""
        by_value = pd.factorize(self.distinct, sort=True, use_na_sentinel=False)[0].astype(np.int32)
        return by_value[self.codes[positions]]

    def ledger(self, ledger: _Ledger) -> _DistinctLedger:
        return _DistinctLedger(ledger, self.codes, len(self.distinct))


def _distinct_texts(raw: pd.Series) -> _TypedColumn:
    """A raw column as its distinct texts (each held by some row) and a code per row."""
    if not isinstance(raw.dtype, pd.CategoricalDtype):
        codes, distinct = pd.factorize(raw, use_na_sentinel=False)
        # int32: half the memory of the default; distinct texts < 2**31.
        return _TypedColumn(pd.Series(distinct), codes.astype(np.int32))
    # Coded already: the categories' codes serve, with no hash table over millions of rows.
    # A category no row holds is dropped (it is no evidence); a missing cell (code -1) takes
    # the slot after the categories, a value of its own.
    categories = raw.cat.categories
    slots = raw.cat.codes.to_numpy()
    if slots.min(initial=0) < 0:
        slots = slots.astype(np.int32)
        slots[slots < 0] = len(categories)
    held = np.bincount(slots, minlength=len(categories) + 1) > 0
    code_of_slot = (np.cumsum(held) - 1).astype(np.int32)
    held_slots = np.flatnonzero(held)
    held_slots[held_slots == len(categories)] = -1
    distinct = pd.Categorical.from_codes(held_slots, dtype=raw.dtype)
    return _TypedColumn(pd.Series(distinct).astype(categories.dtype), code_of_slot[slots])


def _parse_column(
    raw: pd.Series, spec: ColumnSpec, ledger: _Ledger, params: dict, unproven_mark: str | None
) -> _TypedColumn:
    """One raw column typed: each distinct text is parsed once, its rows share the result.

    Columns of millions of cells hold a few to some thousands of distinct texts, and every rule
    judges a cell by its text alone (column-wide evidence, such as the decimal mark or the
    day/month order, is a question of which texts occur, not how often).
    """
    column = _distinct_texts(raw)
    parsed = _parse_texts(column.distinct, spec, column.ledger(ledger), params, unproven_mark)
    return _TypedColumn(parsed, column.codes)


def _parse_texts(
    raw: pd.Series,
    spec: ColumnSpec,
    ledger: _Ledger | _DistinctLedger,
    params: dict,
    unproven_mark: str | None,
) -> pd.Series:
    values = trim_whitespace(raw.astype(TEXT_DTYPE).fillna(""), ledger)
    missing = missing_mask(values) if spec.kind != "category" else values == ""
    values = values.where(~missing, "")
    if spec.required:
        ledger.reject_rows(
            missing, "missing_required", spec.name, raw.fillna(""), "a required value is missing"
        )
    if spec.kind == "id":
        return parse_ids(values, spec, ledger).where(~missing)
    if spec.kind == "date":
        return parse_dates(
            values,
            spec,
            ledger,
            params["date_formats"],
            params.get("date_order", "evidence"),
            params.get("missing_date_sentinels", ()),
        )
    if spec.kind == "number":
        return parse_numbers(values, spec, ledger, params, unproven_mark)
    if spec.kind == "level":
        return parse_levels(values, spec, ledger)
    if spec.kind == "flag":
        return parse_flags(values, spec, ledger)
    if spec.kind == "category":
        return parse_categories(values, spec, ledger)
    if spec.kind == "exercise":
        return parse_exercises(values, spec, ledger, params)
    return values.where(~missing)


def _reject_implausible_dates(
    columns: dict[str, _TypedColumn],
    ledger: _Ledger,
    enrolment: pd.Series | None,
    params: dict,
    as_of: date,
) -> None:
    """Dates after `as_of` are in the future; visit/diary dates before enrolment are misfiled."""
    date_column = Participants.enrolled_on if enrolment is None else Diary.date
    dates = columns[date_column]
    dates.ledger(ledger).reject_rows(
        dates.distinct > pd.Timestamp(as_of),
        "future_date",
        date_column,
        dates.distinct,
        f"date after the export date {as_of}",
    )
    if enrolment is not None:
        ids = columns[Diary.participant_id]
        enrolled = ids.distinct.map(enrolment).to_numpy(dtype="datetime64[ns]")[ids.codes]
        allowed = np.timedelta64(params["days_before_enrolment_allowed"], "D")
        date_rows = dates.distinct.to_numpy(dtype="datetime64[ns]")[dates.codes]
        ledger.reject_row_positions(
            date_rows < enrolled - allowed,
            "date_before_enrolment",
            date_column,
            # Only the rejected rows' dates: a Series of every row's date would cost more.
            lambda rows: dates.distinct.iloc[dates.codes[rows]],
            "date before the participant enrolled",
        )


def _reject_unknown_participants(
    ids: _TypedColumn, ledger: _Ledger, kept_ids: pd.Index, raw_ids: pd.Index
) -> None:
    """Rows of a participant not kept: quarantined with them, or unknown to the export."""
    # As Python strings: pandas' `isin` on Arrow strings makes one Arrow scalar per id looked
    # for (0.1 s per 20,000 ids); a hash set over the same strings takes milliseconds.
    distinct = pd.Series(ids.distinct.to_numpy(dtype=object, na_value=None))
    known = distinct.isin(kept_ids.to_numpy(dtype=object)).to_numpy(dtype=bool)
    in_export = distinct.isin(raw_ids.to_numpy(dtype=object)).to_numpy(dtype=bool)
    by_id = ids.ledger(ledger)
    by_id.reject_rows(
        ~known & in_export,
        "participant_quarantined",
        Diary.participant_id,
        ids.distinct,
        "the participant's own row is in quarantine",
    )
    by_id.reject_rows(
        ~known & ids.distinct.notna().to_numpy(),
        "unknown_participant",
        Diary.participant_id,
        ids.distinct,
        "participant id not in the participants table",
    )


def _withdrawal_before_enrolment(columns: dict[str, _TypedColumn], ledger: _Ledger) -> None:
    withdrawn = columns[Participants.withdrawn_on].rows(ledger.row_labels)
    early = withdrawn < columns[Participants.enrolled_on].rows(ledger.row_labels)
    ledger.reject_values(
        early,
        "withdrawal_before_enrolment",
        Participants.withdrawn_on,
        withdrawn,
        "withdrawal date before enrolment",
    )
    columns[Participants.withdrawn_on] = _TypedColumn.of_rows(withdrawn.where(~early))


def _record_codes(columns: Iterable[np.ndarray]) -> np.ndarray:
    """One integer per row, equal between two rows exactly when each column's code is.

    Codes (non-negative) are folded in one column at a time, each array released once folded;
    where the next product of code ranges would overflow int64, the key so far and the column
    are first re-coded densely (0 .. rows - 1; hash tables over every row, only for codes
    spread that widely).
    """
    columns = iter(columns)
    combined = next(columns).astype(np.int64)
    for codes in columns:
        span = int(codes.max(initial=0)) + 1
        if (int(combined.max(initial=0)) + 1) * span > np.iinfo(np.int64).max:
            combined = pd.factorize(combined)[0].astype(np.int64)
            codes = pd.factorize(codes)[0]
            span = int(codes.max(initial=0)) + 1
        combined = combined * span + codes
    return combined


def _occurs_more_than_once(record: np.ndarray) -> np.ndarray:
    """Per row, whether another row has the same value: found by sorting, with no hash table
    over millions of keys (equal values lie side by side once sorted).

    A stable sort (timsort) runs in about linear time over keys mostly in order already, as an
    export's rows usually are (participant by participant, day by day).
    """
    order = np.argsort(record, kind="stable")
    in_order = record[order]
    same_as_next = in_order[1:] == in_order[:-1]
    del in_order
    repeated = np.zeros(len(record), dtype=bool)
    repeated[order[1:][same_as_next]] = True
    repeated[order[:-1][same_as_next]] = True
    return repeated


def _merge_duplicates(
    columns: dict[str, _TypedColumn], table: str, ledger: _Ledger
) -> tuple[np.ndarray, int]:
    """Exact repeats merge into one row; rows sharing a key but not values are quarantined.

    Returns the positions of the rows kept and the number merged. Keys are compared as integer
    codes of their typed values; only rows whose key repeats can be either, so whole rows are
    compared among those alone.
    """
    key = list(RECORD_KEYS[table])
    alive = np.flatnonzero(~ledger.rejected)
    record = _record_codes(columns[name].value_codes(alive) for name in key)
    shared = alive[_occurs_more_than_once(record)]
    del record
    shared_key = pd.DataFrame(
        {name: column.at(shared) for name, column in columns.items()}
    ).set_axis(ledger.row_labels[shared])
    repeat = shared_key.duplicated(keep="first").to_numpy()
    shared_key = shared_key[~repeat]
    conflicting = shared_key.index[shared_key.duplicated(subset=key, keep=False)]
    if len(conflicting):
        ledger.reject_rows(
            ledger.row_labels.isin(conflicting),
            "conflicting_duplicate",
            ", ".join(key),
            shared_key.loc[conflicting, key].astype(str).agg(" / ".join, axis=1),
            "another row has the same key with different values",
        )
    kept = ~ledger.rejected
    kept[shared[repeat]] = False
    return np.flatnonzero(kept), int(repeat.sum())


def clean_table(
    table: str,
    raw: pd.DataFrame,
    *,
    source_file: str,
    params: dict,
    as_of: date,
    participants: pd.DataFrame | None = None,
    raw_participant_ids: pd.Index | None = None,
) -> CleanResult:
    """Clean one raw table (all cells as text, plus `source_row`) into its canonical form.

    Child tables (diary, sessions, assessments) need the already-cleaned `participants` to check
    ids and enrolment dates; `raw_participant_ids` tells a quarantined participant from an
    unknown one.
    """
    return _clean_taken_table(
        table,
        {table: raw},
        source_file=source_file,
        params=params,
        as_of=as_of,
        participants=participants,
        raw_participant_ids=raw_participant_ids,
    )


def _clean_taken_table(
    table: str,
    raw_tables: dict[str, pd.DataFrame],
    *,
    source_file: str,
    params: dict,
    as_of: date,
    participants: pd.DataFrame | None = None,
    raw_participant_ids: pd.Index | None = None,
    before_kept: Callable[[], None] | None = None,
) -> CleanResult:
    """`clean_table` on the raw table taken out of `raw_tables`: once its columns are parsed it
    is referenced nowhere here, so it can be freed before the rows are merged and kept.
    `before_kept()` is called before the kept rows are taken (see `clean_study`)."""
    raw = raw_tables.pop(table)
    model = CANONICAL_TABLES[table]
    ledger = _Ledger(table, source_file, raw)
    input_rows = len(raw)
    unproven_mark = raw.attrs.get(UNPROVEN_DECIMAL_MARK, ".")
    # Held as distinct values and codes until the kept rows are known: no frame of every row.
    columns = {
        spec.name: _parse_column(
            raw[spec.name] if spec.name in raw else pd.Series("", index=raw.index),
            spec,
            ledger,
            params,
            unproven_mark,
        )
        for spec in column_specs(model)
    }
    del raw
    if table == "participants":
        _reject_implausible_dates(columns, ledger, None, params, as_of)
        _withdrawal_before_enrolment(columns, ledger)
    else:
        enrolment = participants.set_index(Participants.participant_id)[Participants.enrolled_on]
        _reject_unknown_participants(
            columns[Participants.participant_id],
            ledger,
            enrolment.index,
            raw_participant_ids if raw_participant_ids is not None else enrolment.index,
        )
        _reject_implausible_dates(columns, ledger, enrolment, params, as_of)
    kept_rows, merged = _merge_duplicates(columns, table, ledger)
    if before_kept is not None:
        before_kept()
    # Column by column, each released once taken: no frame-wide copy into consolidated blocks.
    kept = pd.DataFrame(index=pd.RangeIndex(len(kept_rows)))
    for name in list(columns):
        kept[name] = columns.pop(name).at(kept_rows)
    del kept_rows
    kept = check_typed_frame(model, kept)
    quarantined = ledger.quarantine_frame()
    counts = {
        "input_rows": input_rows,
        "kept": len(kept),
        "quarantined": int(ledger.rejected.sum()),
        "merged_duplicates": merged,
        "quarantined_rows_by_rule": dict(sorted(ledger.row_rules.items())),
        "quarantined_values_by_rule": dict(sorted(ledger.value_rules.items())),
        "fixes_by_rule": dict(sorted(ledger.fixes.items())),
    }
    return CleanResult(table, kept, quarantined, counts)


@dataclass
class StudyCleanResult:
    """All four tables cleaned, with one quarantine frame and the cleaning report."""

    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    report: dict


def clean_study(
    raw_tables: dict[str, pd.DataFrame],
    source_files: dict[str, str],
    params: dict,
    as_of: date,
    reader_quarantine: pd.DataFrame | None = None,
    hand_over: Callable[[str, pd.DataFrame], None] | None = None,
    release_raw: bool = False,
    before_kept: Callable[[], None] | None = None,
) -> StudyCleanResult:
    """Clean participants first (ids and enrolment dates), then the tables that refer to them.

    `reader_quarantine` holds what a reader already rejected (e.g. REDCap values that do not
    fit the data dictionary); it joins the quarantine and is counted in the report.
    `hand_over(table, kept)`, if given, receives each table as soon as it is clean (to write
    it) and the result keeps none of them: a large study's tables are not all held at once.
    `release_raw`: each raw table is taken out of `raw_tables` as it is cleaned (the caller's
    dict is emptied), so a large export's raw tables are freed one by one.
    `before_kept()`, if given, is called before each table's kept rows are taken, the
    table's memory peak: a caller writing the table handed over before it in the background
    waits there, so the two are never held at that peak together.
    """
    tables: dict[str, pd.DataFrame] = {}
    quarantines: list[pd.DataFrame] = []
    counts: dict[str, dict] = {}

    def done(result: CleanResult) -> None:
        quarantines.append(result.quarantined)
        counts[result.table] = result.counts
        if hand_over is None:
            tables[result.table] = result.kept
        else:
            hand_over(result.table, result.kept)

    raw_ids = pd.Index(
        raw_tables["participants"][Participants.participant_id]
        .astype(TEXT_DTYPE)
        .fillna("")
        .str.strip()
        .str.upper()
    )
    to_clean = raw_tables if release_raw else dict(raw_tables)
    participants = _clean_taken_table(
        "participants",
        to_clean,
        source_file=source_files["participants"],
        params=params,
        as_of=as_of,
        before_kept=before_kept,
    )
    done(participants)
    for table in TABLE_ORDER[1:]:
        done(
            _clean_taken_table(
                table,
                to_clean,
                source_file=source_files[table],
                params=params,
                as_of=as_of,
                participants=participants.kept,
                raw_participant_ids=raw_ids,
                before_kept=before_kept,
            )
        )
    reader_counts = {}
    if reader_quarantine is not None and not reader_quarantine.empty:
        quarantines.insert(0, reader_quarantine[column_names(Quarantine)])
        reader_counts = {
            f"{table}: {rule}": int(n)
            for (table, rule), n in reader_quarantine.groupby([Quarantine.table, Quarantine.rule])
            .size()
            .items()
        }
    quarantine = pd.concat(quarantines, ignore_index=True)
    report = {
        "as_of": as_of.isoformat(),
        "reader_quarantine_by_rule": reader_counts,
        "tables": {
            table: {"source_file": source_files[table], **table_counts}
            for table, table_counts in counts.items()
        },
    }
    return StudyCleanResult(tables, quarantine, report)


def cleaning_report_markdown(report: dict) -> str:
    """The cleaning report for people: the row accounting per table, then each rule's count."""
    lines = [
        "# Cleaning report",
        "",
        f"Dates after {report['as_of']} count as future dates.",
        "",
        "| table | input rows | kept | quarantined | merged duplicates | balanced |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for table, counts in report["tables"].items():
        balanced = counts["input_rows"] == (
            counts["kept"] + counts["quarantined"] + counts["merged_duplicates"]
        )
        lines.append(
            f"| {table} | {counts['input_rows']} | {counts['kept']} | {counts['quarantined']} | "
            f"{counts['merged_duplicates']} | {'yes' if balanced else 'NO'} |"
        )
    for heading, key in (
        ("Rows quarantined, by rule", "quarantined_rows_by_rule"),
        ("Values set to missing and quarantined, by rule", "quarantined_values_by_rule"),
        ("Values fixed, by rule", "fixes_by_rule"),
    ):
        lines += ["", f"## {heading}", "", "| table | rule | count |", "|---|---|---:|"]
        for table, counts in report["tables"].items():
            lines += [f"| {table} | {rule} | {n} |" for rule, n in counts[key].items()]
    ignored = {table: names for table, names in report.get("ignored_columns", {}).items() if names}
    if ignored:
        lines += ["", "## Columns in the export that no table column reads", ""]
        lines += [
            f"- {table}: {', '.join(f'`{name}`' for name in names)}"
            for table, names in ignored.items()
        ]
    return "\n".join(lines) + "\n"
