"""File edges: reading raw exports (CSV, XLSX, parquet, REDCap via a mapping) and atomic writes.

Everything a reader returns is text (so cleaning sees exactly what the file says) plus a
`source_row` column: the row as a spreadsheet shows it, header = row 1.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import errno
import fcntl
import glob
import json
import mmap
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv
import yaml

from analysis.clean import (
    SOURCE_ROW,
    TABLE_ORDER,
    UNIT_SUFFIXES,
    UNPROVEN_DECIMAL_MARK,
    column_specs,
)
from analysis.errors import DataError, OutputError, ParameterError
from analysis.redcap import allow_large_csv_cells, read_redcap
from analysis.rounding import rounded_content, rounded_frame
from analysis.schema import CANONICAL_TABLES, Participants, column_names

RAW_SUFFIXES = (".csv", ".parquet", ".xlsx")
# A study export may state its export date in this file beside its tables (the simulator does).
EXPORT_INFO_FILE = "export.json"
EXPORT_DATE_KEY = "export_date"
TEXT_DTYPE = pd.StringDtype("pyarrow")
# Units a mapping file may declare for a column, and the suffix the cleaner converts from.
DECLARABLE_UNITS = {
    "minutes": "min",
    "hours": "h",
    "lb": "lb",
    "kg": "kg",
    "kgf": "kgf",
    "lbf": "lbf",
    "newtons": "n",
}


# --- parameters and mapping -------------------------------------------------------------------


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping file, or a one-line error naming it."""
    if not path.is_file():
        raise ParameterError(f"{what} file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        row = mark.line + 1 if mark else None
        raise DataError(
            f"not valid YAML ({getattr(error, 'problem', error)})", file=str(path), row=row
        ) from None
    if not isinstance(content, dict):
        raise DataError("expected a mapping of keys to values", file=str(path))
    return content


@dataclass
class TableSource:
    """Where one canonical table comes from: a file, and how its columns map to ours."""

    path: Path
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> source column
    units: dict[str, str] = field(default_factory=dict)  # canonical column -> declared unit
    sheet: str | int | None = None
    encoding: str | None = None  # of a CSV; None: UTF-8


IGNORED_COLUMNS = "ignored_columns"
MAPPING_TABLE_KEYS = ("file", "columns", "units", "sheet", "encoding")


def file_in_folder(folder: Path, name, what: str) -> Path:
    """`folder / name`, refused when it resolves outside `folder` (absolute, `..`, a symlink)."""
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"{what}: expected a file name, got {name!r}")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(
            f"{what} {name!r} is outside the raw data folder",
            file=str(folder),
            hint="put the file in the --raw folder and name it relative to it",
        )
    return path


def _mapping_entry(table: str, spec) -> dict:
    """One table's block of a mapping file, checked for shape (one-line errors, no KeyError)."""
    if not isinstance(spec, dict) or "file" not in spec:
        raise ParameterError(f"mapping for {table}: expected a block with at least `file:`")
    unknown = sorted(set(spec) - set(MAPPING_TABLE_KEYS))
    if unknown:
        raise ParameterError(
            f"mapping for {table}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(MAPPING_TABLE_KEYS)})"
        )
    for key in ("columns", "units"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ParameterError(f"mapping for {table}: `{key}` must map names to names")
    return spec


def table_sources(raw_dir: Path, mapping: dict | None) -> dict[str, TableSource]:
    """Each table's source: from the mapping file, else `<table>.csv|parquet|xlsx` in raw_dir."""
    if not raw_dir.is_dir():
        raise DataError(
            "raw data folder not found",
            file=str(raw_dir),
            hint="pass --raw with the folder holding the study export",
        )
    declared = (mapping or {}).get("tables") or {}
    if not isinstance(declared, dict):
        raise ParameterError("mapping: `tables` must map table names to blocks")
    unknown = sorted(set(declared) - set(TABLE_ORDER))
    if unknown:
        raise ParameterError(
            f"mapping: unknown table(s) {', '.join(unknown)} (known: {', '.join(TABLE_ORDER)})"
        )
    default_encoding = (mapping or {}).get("encoding")
    sources = {}
    for table in TABLE_ORDER:
        spec = declared.get(table)
        if spec:
            spec = _mapping_entry(table, spec)
            sources[table] = TableSource(
                file_in_folder(raw_dir, spec["file"], f"the mapping's file for {table}"),
                {str(k): str(v) for k, v in (spec.get("columns") or {}).items()},
                {str(k): str(v) for k, v in (spec.get("units") or {}).items()},
                spec.get("sheet"),
                spec.get("encoding", default_encoding),
            )
            continue
        candidates = [raw_dir / f"{table}{suffix}" for suffix in RAW_SUFFIXES]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise DataError(
                f"no {table} table found",
                file=str(candidates[0]),
                hint="name it so, or describe the export in a --mapping file",
            )
        sources[table] = TableSource(found, encoding=default_encoding)
    return sources


# --- readers ----------------------------------------------------------------------------------


# Delimiters a CSV export may use (Excel in a decimal-comma locale writes ";").
CSV_DELIMITERS = (",", ";", "\t", "|")
UTF8_HINT = (
    "save it as UTF-8, or declare its encoding (e.g. `encoding: cp1252` for a Windows/Excel "
    "export) for this table in the --mapping file"
)


def _decode(payload: bytes, path: Path, encoding: str | None) -> str:
    """The file's text: in the declared encoding, else UTF-8 (a byte-order mark is dropped)."""
    codec = encoding or "UTF-8"
    try:
        text = payload.decode(codec)
    except LookupError:
        raise ParameterError(
            f"unknown encoding {encoding!r} declared for {path.name}; use a Python codec "
            "name such as utf-8, cp1252 or latin-1"
        ) from None
    except UnicodeDecodeError as error:
        prefix = payload[: error.start].decode(codec, errors="replace")
        # The bad byte belongs to the last (partial) record of the text before it.
        row = len(list(csv.reader(StringIO(prefix + "x", newline=""))))
        raise DataError(
            f"byte 0x{payload[error.start]:02x} at offset {error.start} is not {codec} text",
            file=str(path),
            row=row,
            hint=UTF8_HINT if encoding is None else "check the encoding declared in the mapping",
        ) from None
    return text.removeprefix("\ufeff")


def _delimiter(header_line: str) -> str:
    """The delimiter that splits the header into the most fields (comma on a tie)."""
    counts = {
        delimiter: len(next(csv.reader([header_line], delimiter=delimiter), []))
        for delimiter in CSV_DELIMITERS
    }
    return max(CSV_DELIMITERS, key=lambda delimiter: counts[delimiter])


def _header_names(header: list[str], path: Path) -> list[str]:
    """Header names as written (outer spaces dropped); a name used twice is refused."""
    names = [name.strip() for name in header]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise DataError(
                "the header names this column twice",
                file=str(path),
                row=1,
                column=name,
                hint="rename or delete one of the two columns",
            )
        seen.add(name)
    return names


def _csv_records(
    text: str, path: Path, strict: bool = True
) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data records and each record's spreadsheet row (blank lines count as rows).

    Strict first; text after a closing quote (`"word" more`) is then read as a spreadsheet
    reads it (`word more`), but a quote left open at the end (a truncated file) is refused.
    """
    allow_large_csv_cells()
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(StringIO(text, newline=""), delimiter=_delimiter(first_line), strict=strict)
    header: list[str] | None = None
    records: list[list[str]] = []
    rows: list[int] = []
    row = width = 0
    try:
        for record in reader:
            row += 1
            if header is None:
                header = _header_names(record, path)
                width = len(header)
                continue
            if len(record) != width:
                if not "".join(record).strip():
                    continue  # a blank line: a blank spreadsheet row, no data
                if len(record) > width and not "".join(record[width:]).strip():
                    record = record[:width]  # trailing empty cells some exporters add
            elif not "".join(record).strip():
                continue
            if len(record) != width:
                raise DataError(
                    f"malformed CSV: {len(record)} fields where the header has {width}",
                    file=str(path),
                    row=row,
                    hint="a cell holds an unquoted delimiter or quote, or the file is truncated",
                )
            records.append(record)
            rows.append(row)
    except csv.Error as error:
        if strict and "expected after" in str(error):
            return _csv_records(text, path, strict=False)
        raise DataError(
            f"malformed CSV: {error}",
            file=str(path),
            row=row + 1,
            hint="a quoted cell never closes; the file may be truncated",
        ) from None
    if header is None:
        raise DataError("the file is empty", file=str(path), hint="re-export it with a header row")
    return header, records, rows


def _records_frame(header: list[str], records: list[list[str]], rows: list[int]) -> pd.DataFrame:
    columns = list(zip(*records, strict=True)) if records else [()] * len(header)
    frame = pd.DataFrame(
        {i: pd.array(list(cells), dtype=TEXT_DTYPE) for i, cells in enumerate(columns)},
        index=pd.RangeIndex(len(records)),
    ).set_axis(header, axis=1)
    frame[SOURCE_ROW] = pd.array(rows, dtype="int64")
    return frame


def _byte_count(payload: bytes | mmap.mmap, byte: int) -> int:
    """How often `byte` occurs, counted a slice at a time (no mask as large as the file)."""
    view = np.frombuffer(payload, dtype=np.uint8)
    step = 1 << 22
    return sum(
        int(np.count_nonzero(view[start : start + step] == byte))
        for start in range(0, len(view), step)
    )


def _file_bytes(path: Path) -> bytes | mmap.mmap:
    """The file's bytes, mapped from the page cache rather than copied (hundreds of megabytes
    for a large export; copying them costs the kernel a fresh zeroed page per 4 KB)."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def _arrow_csv(
    payload: bytes | mmap.mmap, encoding: str | None, coded: bool
) -> pyarrow.Table | None:
    """The fast reader (Arrow) for the usual file; None where only the exact reader can say.

    `coded`: each column as codes into its distinct texts (Arrow dictionaries), read so.

    Arrow reads a quoted cell left open at the end of the file as if it closed there, so a
    file that may end inside a quote (odd quote count, a quote on the last line, a last cell
    running over lines without a closing quote) goes to the exact reader, as any Arrow error.
    """
    # Offsets rather than slices: the payload may be hundreds of megabytes.
    end = len(payload)
    while end and payload[end - 1] in b"\r\n":
        end -= 1
    closed = end > 0 and payload[end - 1] == ord('"')
    last_line_quoted = payload.find(b'"', payload.rfind(b"\n", 0, end) + 1, end) >= 0
    if _byte_count(payload, ord('"')) % 2 or (last_line_quoted and not closed):
        return None
    head = payload[:65536].decode(encoding or "utf-8", errors="replace").removeprefix("\ufeff")
    delimiter = _delimiter(head.split("\n", 1)[0])
    width = len(next(csv.reader([head.split("\n", 1)[0]], delimiter=delimiter)))
    cell_type = pyarrow.dictionary(pyarrow.int32(), pyarrow.string()) if coded else pyarrow.string()
    try:
        table = pyarrow.csv.read_csv(
            pyarrow.py_buffer(payload),
            read_options=pyarrow.csv.ReadOptions(
                autogenerate_column_names=True, encoding=encoding or "utf8"
            ),
            # Blank lines kept as empty rows, so row i is spreadsheet row i + 1.
            parse_options=pyarrow.csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, ignore_empty_lines=False
            ),
            convert_options=pyarrow.csv.ConvertOptions(
                column_types={f"f{i}": cell_type for i in range(width)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pyarrow.ArrowInvalid, UnicodeDecodeError, LookupError):
        return None
    if table.num_columns != width or table.num_rows == 0:
        return None
    if not closed and "\n" in table.column(width - 1)[-1].as_py():
        return None  # the last cell ran to the end of the file: a quote opened, never closed
    return table


def _cells_frame(table: pyarrow.Table) -> pd.DataFrame:
    """Arrow text columns as a frame: strings share Arrow's memory, dictionaries become
    categoricals.

    The categoricals' codes are allocated by the system allocator, not Arrow's pool: cleaning
    frees each raw table once parsed, and the pool would keep that memory for itself.
    """

    def column(position: int) -> pd.Series:
        cells = table.column(position)
        if pyarrow.types.is_dictionary(cells.type):
            return cells.to_pandas(memory_pool=pyarrow.system_memory_pool())
        return pd.Series(pd.arrays.ArrowStringArray(cells), copy=False)

    return pd.DataFrame({position: column(position) for position in range(table.num_columns)})


def _blank_cells(cells: pd.Series) -> np.ndarray:
    """Per cell, whether it holds only spaces or nothing; a coded column is judged over its
    distinct texts (stripping millions of cells builds as many Python strings)."""
    if isinstance(cells.dtype, pd.CategoricalDtype):
        blank = np.asarray(cells.cat.categories.str.strip() == "", dtype=bool)
        # A missing cell (code -1) takes the appended slot: not blank, as a text comparison says.
        return np.append(blank, False)[cells.cat.codes.to_numpy()]
    return (cells.str.strip() == "").to_numpy(dtype=bool, na_value=False)


def read_csv_text(path: Path, encoding: str | None = None, coded: bool = False) -> pd.DataFrame:
    """A CSV as text cells plus `source_row`; malformed files raise DataError naming the row.

    Quoted cells may span lines and be of any size; nothing is type-guessed (ids such as 00017
    stay text); `source_row` is the spreadsheet's row (blank lines count). Arrow reads the usual
    file; the csv module reads the rest and says where a broken file breaks. `coded`: Arrow
    reads the columns as codes into their distinct texts (see `coded_text`), so a large file's
    text is never held whole.
    """
    payload = _file_bytes(path)
    if not re.search(rb"\S", payload):
        raise DataError("the file is empty", file=str(path), hint="re-export it with a header row")
    if encoding is None and payload[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"  # Excel's "Unicode text": the byte-order mark says so
    if encoding != "utf-16" and b"\x00" in payload[:65536]:
        raise DataError("this is not a text CSV (binary content)", file=str(path))
    # Excel writes ";" where the decimal mark is a comma: "1.000" may be a thousand there.
    head = payload[:4096].decode(encoding or "utf-8", errors="replace").removeprefix("\ufeff")
    semicolon_separated = _delimiter(head.split("\n", 1)[0]) == ";"
    table = None if encoding == "utf-16" else _arrow_csv(payload, encoding, coded)
    if table is not None:
        del payload  # the file's bytes are no longer needed; a large export is freed early
        cells = _cells_frame(table)
        del table
        header = _header_names(cells.iloc[0].tolist(), path)
        frame = cells.iloc[1:].set_axis(header, axis=1)
        frame[SOURCE_ROW] = frame.index + 1
        # Blank rows (blank lines, or only delimiters): first column empty, then all.
        maybe = frame.index[_blank_cells(frame.iloc[:, 0])]
        if len(maybe):
            data = frame.loc[maybe].drop(columns=SOURCE_ROW)
            all_blank = (data.apply(lambda c: c.str.strip()) == "").all(axis=1)
            if all_blank.any():  # else no copy of the whole table
                frame = frame[~frame.index.isin(maybe[all_blank])]
        frame.index = pd.RangeIndex(len(frame))
    else:
        text = _decode(payload[:], path, encoding)
        if "\x00" in text[:65536]:
            raise DataError("this is not a text CSV (binary content)", file=str(path))
        frame = _records_frame(*_csv_records(text, path))
    unnamed = [
        position
        for position, name in enumerate(frame.columns)
        if not name and (frame.iloc[:, position].str.strip() != "").any()
    ]
    if unnamed:
        raise DataError(
            f"column {unnamed[0] + 1} holds values but has no name",
            file=str(path),
            row=1,
            hint="give it a header, or delete it",
        )
    if not all(frame.columns):  # else no copy of the whole table
        frame = frame.loc[:, [bool(name) for name in frame.columns]]
    if semicolon_separated:
        frame.attrs[UNPROVEN_DECIMAL_MARK] = None
    return frame


def _text_cell(value) -> str:
    """One spreadsheet/parquet cell as the text a CSV export would hold."""
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and pd.isna(value))
    ):
        return ""
    if isinstance(value, datetime.date):
        stamp = pd.Timestamp(value)
        return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _frame_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    text = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            text[str(name)] = column.dt.strftime("%Y-%m-%d").fillna("")
        else:
            text[str(name)] = column.map(_text_cell).astype(object)
    return text.astype(TEXT_DTYPE)


def _sheet_as_text(path: Path, sheet: str | int | None) -> pd.DataFrame:
    """An XLSX sheet as text cells; the first row is the header, rows keep their sheet number."""
    cells = pd.read_excel(path, sheet_name=sheet or 0, dtype=object, header=None)
    if cells.empty:
        raise DataError("the sheet is empty", file=str(path), hint="export it with a header row")
    header = _header_names([_text_cell(value) for value in cells.iloc[0]], path)
    body = _frame_as_text(cells.iloc[1:])
    body.columns = header
    body = body.loc[:, [bool(name) for name in header]]
    body[SOURCE_ROW] = cells.index[1:] + 1
    blank = (body.drop(columns=SOURCE_ROW) == "").all(axis=1)
    return body[~blank].reset_index(drop=True)


def read_table_file(
    path: Path, sheet: str | int | None = None, encoding: str | None = None, coded: bool = False
) -> pd.DataFrame:
    """Read a CSV, XLSX or parquet file as text cells with `source_row` (`coded`: a CSV's
    columns may come as categoricals, see `read_csv_text`)."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return read_csv_text(path, encoding, coded)
        if suffix in (".xlsx", ".xlsm"):
            return _sheet_as_text(path, sheet)
        if suffix == ".parquet":
            frame = _frame_as_text(pd.read_parquet(path)).reset_index(drop=True)
            frame[SOURCE_ROW] = frame.index + 2
            return frame
    except (DataError, ParameterError):
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure becomes one clear line
        raise DataError(
            f"cannot read the file ({type(error).__name__}: {error})", file=str(path)
        ) from None
    raise DataError(
        f"unsupported file type {suffix!r}", file=str(path), hint="use CSV, XLSX or parquet"
    )


def header_key(name: str) -> str:
    """A column name as compared: case, outer spaces and inner space/hyphen runs ignored."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _match_columns(table: str, frame: pd.DataFrame, source: TableSource) -> dict[str, str]:
    """Source column -> canonical name: the mapping's names first, then names equal up to case
    and spacing. Two source columns for one canonical column are refused."""
    by_key: dict[str, list[str]] = {}
    for name in frame.columns:
        if name != SOURCE_ROW:
            by_key.setdefault(header_key(name), []).append(name)
    renames: dict[str, str] = {}
    for spec in column_specs(CANONICAL_TABLES[table]):
        wanted = source.columns.get(spec.name, spec.name)
        candidates = by_key.get(header_key(wanted), [])
        if len(candidates) > 1:
            raise DataError(
                f"columns {', '.join(map(repr, candidates))} all read as {spec.name!r}",
                file=str(source.path),
                row=1,
                column=candidates[0],
                hint="delete or rename all but one, or map one in a --mapping file",
            )
        if candidates:
            renames[candidates[0]] = spec.name
        elif spec.name in source.columns:
            raise DataError(
                f"column {wanted!r}, mapped to {spec.name}, is not in the file",
                file=str(source.path),
                row=1,
                column=wanted,
                hint="correct the column name in the --mapping file",
            )
    return renames


def canonical_raw_table(table: str, frame: pd.DataFrame, source: TableSource) -> pd.DataFrame:
    """Rename mapped columns to canonical names, tag declared units, check required columns.

    Header names match canonical (or mapped) names regardless of case and spacing, so an
    optional column spelled `Withdrawn_On ` is read, not silently left empty.
    """
    for canonical in source.columns:
        if canonical not in column_names(CANONICAL_TABLES[table]):
            raise ParameterError(
                f"the mapping for {table} maps an unknown column {canonical!r} "
                f"(known: {', '.join(column_names(CANONICAL_TABLES[table]))})"
            )
    renames = _match_columns(table, frame, source)
    canonical_names = set(column_names(CANONICAL_TABLES[table]))
    # A source column that happens to carry a canonical name but maps elsewhere is left out.
    unmatched = [name for name in frame.columns if name not in renames and name in canonical_names]
    # The columns relabelled on a shallow copy: `rename` would copy every cell of a large table.
    renamed = frame.drop(columns=unmatched) if unmatched else frame.copy(deep=False)
    renamed.columns = [renames.get(name, name) for name in renamed.columns]
    # Said in the cleaning report: a column the export holds but no canonical column reads.
    renamed.attrs[IGNORED_COLUMNS] = [
        str(name) for name in frame.columns if name not in renames and name != SOURCE_ROW
    ]
    for spec in column_specs(CANONICAL_TABLES[table]):
        if spec.name not in renamed.columns:
            if spec.required:
                raise DataError(
                    f"required column {spec.name!r} is missing",
                    file=str(source.path),
                    row=1,
                    column=spec.name,
                    hint="rename it, or map it in a --mapping file",
                )
            renamed[spec.name] = ""
    for column, unit in source.units.items():
        if unit not in DECLARABLE_UNITS:
            raise ParameterError(
                f"unknown unit {unit!r} for {column}; use one of {sorted(DECLARABLE_UNITS)}"
            )
        if column not in UNIT_SUFFIXES:
            raise ParameterError(
                f"a unit is declared for {column}, which takes none; "
                f"units apply to {', '.join(sorted(UNIT_SUFFIXES))}"
            )
        suffix = DECLARABLE_UNITS[unit]
        if suffix not in UNIT_SUFFIXES[column]:
            raise ParameterError(
                f"unit {unit!r} does not fit {column} "
                f"(it takes {', '.join(sorted(UNIT_SUFFIXES[column]))})"
            )
        values = renamed[column].astype(TEXT_DTYPE).fillna("")
        bare = (values.str.strip() != "") & ~values.str.contains("[a-zA-Z]", regex=True)
        # The whole column replaced: a coded (categorical) column takes no new texts in place.
        renamed[column] = renamed[column].astype(TEXT_DTYPE).where(~bare, values + " " + suffix)
    return renamed


@dataclass
class RawStudy:
    """The four raw tables as text, the file each came from, and what the reader quarantined."""

    tables: dict[str, pd.DataFrame]
    files: dict[str, str]
    quarantine: pd.DataFrame | None = None
    # Where the export states its own export date (file name -> date), if anywhere.
    stated_export_dates: dict[str, datetime.date] = field(default_factory=dict)

    @property
    def ignored_columns(self) -> dict[str, list[str]]:
        """Per table, the export's columns that no canonical column reads."""
        return {table: frame.attrs.get(IGNORED_COLUMNS, []) for table, frame in self.tables.items()}


def coded_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The text columns as codes into each column's distinct texts (pandas categoricals).

    A large export holds millions of cells but few distinct texts per column: a code takes one
    to four bytes where the text took tens, and cleaning parses each distinct text once anyway.
    The frame is changed in place (each text column is released as it is encoded).
    """
    for name in frame.columns:
        if name != SOURCE_ROW:
            frame[name] = frame[name].astype("category")
    return frame


def read_raw_study(raw_dir: Path, mapping_path: Path | None = None) -> RawStudy:
    """All four raw tables as text (held as codes, see `coded_text`), from plain files or a
    REDCap export."""
    mapping = read_yaml(mapping_path, "mapping") if mapping_path else None
    if mapping and "redcap" in mapping:
        study = read_redcap_study(raw_dir, mapping["redcap"])
        study.tables = {table: coded_text(frame) for table, frame in study.tables.items()}
    else:
        tables, files = {}, {}
        for table, source in table_sources(raw_dir, mapping).items():
            frame = read_table_file(source.path, source.sheet, source.encoding, coded=True)
            canonical = canonical_raw_table(table, frame, source)
            del frame  # so that encoding releases each text column
            tables[table] = coded_text(canonical)
            files[table] = source.path.name
        study = RawStudy(tables, files)
    # Once, after all files: the memory Arrow freed after one file is reused reading the next
    # (fresh memory costs the kernel's zeroing of every page), and none is kept for cleaning.
    release_arrow_memory()
    study.stated_export_dates = stated_export_dates(raw_dir, mapping_path, mapping)
    return study


def stated_export_dates(
    raw_dir: Path, mapping_path: Path | None, mapping: dict | None
) -> dict[str, datetime.date]:
    """The export date as the export states it: in the mapping file and/or in export.json."""
    stated = {}
    if mapping and mapping.get(EXPORT_DATE_KEY) is not None:
        stated[str(mapping_path)] = parse_export_date(
            mapping[EXPORT_DATE_KEY], str(mapping_path), EXPORT_DATE_KEY
        )
    info_path = raw_dir / EXPORT_INFO_FILE
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"not valid JSON ({error})", file=str(info_path)) from None
        if not isinstance(info, dict) or EXPORT_DATE_KEY not in info:
            raise DataError(
                f"no {EXPORT_DATE_KEY!r} key", file=str(info_path), column=EXPORT_DATE_KEY
            )
        stated[str(info_path)] = parse_export_date(
            info[EXPORT_DATE_KEY], str(info_path), EXPORT_DATE_KEY
        )
    return stated


def parse_export_date(value, source: str, key: str) -> datetime.date:
    """An ISO date (YYYY-MM-DD) stated as the export date, or a one-line error naming where."""
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise DataError(
            f"export date {value!r} is not a YYYY-MM-DD date", file=source, column=key
        ) from None


def resolve_export_date(
    stated: dict[str, datetime.date], configured: datetime.date | None, params_file: str
) -> datetime.date:
    """The one export date of a study: stated by the export and/or configured, never guessed.

    Dates after it count as "in the future" when cleaning, so it must be a fact of the export;
    the day the pipeline runs would make the same export clean differently on another day.
    """
    sources = dict(stated)
    if configured is not None:
        sources[f"{params_file} (clean.{EXPORT_DATE_KEY})"] = configured
    if not sources:
        raise DataError(
            "the export date is not stated",
            file=params_file,
            column=f"clean.{EXPORT_DATE_KEY}",
            hint=(
                f"state it as {EXPORT_DATE_KEY}: YYYY-MM-DD in the mapping file or in params.yaml "
                f"(clean.{EXPORT_DATE_KEY}), or in {EXPORT_INFO_FILE} beside the export"
            ),
        )
    dates = set(sources.values())
    if len(dates) > 1:
        listed = ", ".join(f"{where}: {when}" for where, when in sources.items())
        raise DataError(
            f"the export date is stated differently ({listed})",
            column=EXPORT_DATE_KEY,
            hint="state one export date",
        )
    return dates.pop()


def read_redcap_study(raw_dir: Path, spec: dict) -> RawStudy:
    """Raw tables from a REDCap export: instruments mapped onto the canonical tables.

    Values the REDCap reader rejected against the data dictionary are already missing in the
    instrument frames; its quarantine entries are carried along under the canonical table name.
    """
    if not isinstance(spec, dict) or not {"data", "dictionary", "tables"} <= set(spec):
        raise ParameterError("mapping: a `redcap` block needs `data`, `dictionary` and `tables`")
    data_file = file_in_folder(raw_dir, spec["data"], "the REDCap data file")
    export = read_redcap(
        data_file,
        file_in_folder(raw_dir, spec["dictionary"], "the REDCap data dictionary"),
        file_in_folder(raw_dir, spec["event_mapping"], "the REDCap event mapping")
        if spec.get("event_mapping")
        else None,
        encoding=spec.get("encoding"),
    )
    tables, files, table_of_instrument = {}, {}, {}
    for table in TABLE_ORDER:
        target = spec["tables"].get(table)
        if not isinstance(target, dict) or "instrument" not in target:
            raise ParameterError(f"mapping: redcap table {table} needs an `instrument`")
        if target["instrument"] not in export.instruments:
            raise DataError(
                f"instrument {target['instrument']!r} not in the export",
                file=str(data_file),
                hint="check the mapping's instrument names",
            )
        instrument = export.instruments[target["instrument"]]
        table_of_instrument[target["instrument"]] = table
        columns = {
            export.record_id: Participants.participant_id,
            **{src: dst for dst, src in target.get("columns", {}).items()},
        }
        frame = _frame_as_text(instrument.reset_index(drop=True))
        frame[SOURCE_ROW] = instrument.index.to_numpy()
        source = TableSource(data_file, {}, target.get("units", {}))
        tables[table] = canonical_raw_table(table, frame.rename(columns=columns), source)
        files[table] = data_file.name
    quarantine = export.quarantine.assign(
        table=export.quarantine["table"].replace(table_of_instrument)
    )
    return RawStudy(tables, files, quarantine)


# --- stage outputs ----------------------------------------------------------------------------

CLEAN_TABLES = TABLE_ORDER
DERIVED_FRAMES = ("recovery", "weekly_intervals", "weekly_trajectories")


def read_stage_frames(
    folder: Path,
    names: tuple[str, ...],
    stage: str,
    columns: dict | None = None,
    coded: tuple[str, ...] = (),
) -> dict[str, pd.DataFrame]:
    """The parquet frames an earlier stage wrote, or a one-line error saying which to run.

    `columns`: per frame name, the only columns to read (a frame not named is read whole).
    `coded`: text columns read as codes into their distinct values (categoricals): a column of
    millions of repeated ids takes four bytes a row instead of its text.
    """
    columns = columns or {}
    frames = {}
    for name in names:
        path = Path(folder) / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"not found: run `ga-rehab {stage}` first", file=str(path))
        # Text columns back in Arrow memory, as the schema declares them (Text): the default,
        # one Python string per cell, takes twice the memory of the whole clean table.
        with pd.option_context("mode.string_storage", "pyarrow"), _system_allocated():
            frames[name] = pd.read_parquet(
                path, columns=columns.get(name), read_dictionary=list(coded) or None
            )
    return frames


# --- atomic writers ---------------------------------------------------------------------------


def release_arrow_memory() -> None:
    """Hand the memory Arrow's allocator kept from freed buffers back to the system.

    Arrow's pool (mimalloc) keeps freed memory for reuse; after a whole table has passed through
    Arrow (read, converted to pandas, freed) that is hundreds of megabytes the process holds but
    no longer uses, which counts in its peak. Called once per table read or written.
    """
    pyarrow.default_memory_pool().release_unused()


@contextmanager
def _system_allocated() -> Iterator[None]:
    """Arrow allocates with the system allocator within: a frame read here gives its memory
    back to the system when freed (a stage that copies part of a large table and drops the
    rest would otherwise carry the rest in Arrow's pool, which keeps freed memory for reuse)."""
    pool = pyarrow.default_memory_pool()
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    try:
        yield
    finally:
        pyarrow.set_memory_pool(pool)


def _new_file_beside(path: Path) -> Path:
    """An empty hidden file beside `path`, created with the umask's mode (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    temporary = _new_file_beside(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    release_arrow_memory()


class BackgroundParquetWrites:
    """Parquet files written one at a time on a second thread while the caller goes on.

    pyarrow's writer runs without the GIL, so writing one clean table overlaps cleaning the
    next on another core. At most one write is in flight (`write` first waits for the one
    before), and `wait` lets the caller bound it further: the frame being written stays in
    memory until its file is done. Leaving the `with` block waits for the last write and
    raises its error, if any (after an error of the caller's, its write is waited for only).
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._pending: Future | None = None

    def write(self, frame: pd.DataFrame, path: Path) -> None:
        self.wait()
        self._pending = self._executor.submit(write_parquet, frame, path)

    def wait(self) -> None:
        """Return once the file handed over last is written (or raise its error)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundParquetWrites:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        self._executor.shutdown(wait=True)
        if error_type is None:
            self.wait()


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def write_published_csv(frame: pd.DataFrame, path: Path) -> None:
    """A results table for people and for DVC, numbers at their published precision."""
    write_csv(rounded_frame(frame), path)


def write_published_json(content, path: Path) -> None:
    """Results or metrics as JSON, numbers at their published precision."""
    write_json(rounded_content(content), path)


def write_text(text: str, path: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(content, path: Path) -> None:
    write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n", path)


# --- whole stage outputs: one writer at a time, all or nothing --------------------------------

STAGING_SUFFIX = "run"


@contextmanager
def output_lock(lock_path: Path, stage: str) -> Iterator[None]:
    """Hold `lock_path` while a stage writes; a second writer is refused, told who holds it.

    An OS lock (flock), so a writer killed with -9 releases it; the file's text names the
    holder (stage, pid, host, start time) for the message the second writer gets.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 1000).decode("utf-8", "replace").strip()
            os.close(handle)
            raise OutputError(
                f"another writer is busy with these outputs ({holder or 'just starting'}); "
                f"wait for it to finish, or delete {lock_path} if that process is gone"
            ) from None
        try:
            same_file = os.fstat(handle).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(handle)  # the previous holder removed the file as we opened it: lock the new one
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    os.ftruncate(handle, 0)
    os.write(
        handle, f"`{stage}`, pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode()
    )
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(handle)


def _new_folder_beside(path: Path, role: str) -> Path:
    """An empty hidden folder beside `path` (umask mode; mkdtemp would make it 0700)."""
    while True:
        folder = path.with_name(f".{path.name}.{role}-{secrets.token_hex(6)}")
        try:
            os.mkdir(folder, 0o777)
        except FileExistsError:
            continue
        return folder


def _staging_folder_beside(path: Path) -> Path:
    """The one staging folder beside `path`, always the same name (the caller holds the lock).

    A stage's outputs may record where they were written (a report's notebook is told the
    folder its CSVs go to), so a random name would make two runs' outputs differ.
    """
    folder = path.with_name(f".{path.name}.staging-{STAGING_SUFFIX}")
    shutil.rmtree(folder, ignore_errors=True)
    os.mkdir(folder, 0o777)
    return folder


def _leftovers(path: Path, role: str) -> list[Path]:
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.{role}-*"))


def _recover_interrupted_swap(path: Path) -> None:
    """A writer killed between the two renames of a swap leaves the old output retired: put it
    back, and remove staging folders nobody is writing (the caller holds the lock)."""
    retired = _leftovers(path, "old")
    if not path.exists() and retired:
        os.replace(retired[-1], path)
    for leftover in _leftovers(path, "old") + _leftovers(path, "staging"):
        shutil.rmtree(leftover, ignore_errors=True)


def replace_entry(staged: Path, final: Path) -> None:
    """Put a fully written file or folder where the old one was; the old one goes only after."""
    if staged.is_dir() and final.exists():
        retired = _new_folder_beside(final, "old")
        os.rmdir(retired)
        os.replace(final, retired)
        try:
            os.replace(staged, final)
        except BaseException:
            os.replace(retired, final)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staged, final)


def _output_error(error: OSError, where: Path, existed: bool) -> OutputError:
    kept = "the previous output is unchanged" if existed else "nothing was written"
    advice = (
        "free disk space and run again"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else "check the folder's permissions and run again"
    )
    return OutputError(f"cannot write {where}: {error.strerror or error} ({kept}; {advice})")


@contextmanager
def stage_folder(final: Path, stage: str, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a sibling folder to write a stage's outputs into; on success it replaces `final`
    whole. A second writer is refused meanwhile; on any failure `final` is untouched (a full
    disk or a permission problem is one OutputError saying so). With `keep_existing` the
    folder starts as a copy of `final` (a stage that rewrites only some of its files)."""
    final = Path(final)
    lock = final.with_name(f".{final.name}.lock")
    with output_lock(lock, stage):
        _recover_interrupted_swap(final)
        if final.exists() and not final.is_dir():
            raise OutputError(f"{final} is a file; the {stage} output must be a folder")
        existed = final.exists()
        staging = _staging_folder_beside(final)
        try:
            if keep_existing and existed:
                shutil.copytree(final, staging, dirs_exist_ok=True)
            yield staging
            replace_entry(staging, final)
        except OSError as error:
            raise _output_error(error, final, existed) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def stage_entries(parent: Path, stage: str) -> Iterator[Path]:
    """As `stage_folder` for a stage whose outputs share `parent` with others' (the reports):
    each top-level file or folder written into the yielded folder replaces its namesake in
    `parent` once all are written; nothing in `parent` changes if writing fails."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    with output_lock(parent / f".{stage}.lock", stage):
        marker = parent / f".{stage}"
        _recover_interrupted_swap(marker)
        staging = _staging_folder_beside(marker)
        try:
            yield staging
            for entry in sorted(staging.iterdir()):
                replace_entry(entry, parent / entry.name)
        except OSError as error:
            raise _output_error(error, parent, True) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
