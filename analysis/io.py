"""File edges: reading raw exports (CSV, XLSX, parquet, REDCap via a mapping) and atomic writes.

Everything a reader returns is text (so cleaning sees exactly what the file says) plus a
`source_row` column: the row as a spreadsheet shows it, header = row 1.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow
import pyarrow.csv
import yaml

from analysis.clean import SOURCE_ROW, TABLE_ORDER, column_specs
from analysis.errors import DataError, ParameterError
from analysis.rounding import rounded_content, rounded_frame
from analysis.schema import CANONICAL_TABLES, Participants

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


def table_sources(raw_dir: Path, mapping: dict | None) -> dict[str, TableSource]:
    """Each table's source: from the mapping file, else `<table>.csv|parquet|xlsx` in raw_dir."""
    if not raw_dir.is_dir():
        raise DataError(
            "raw data folder not found",
            file=str(raw_dir),
            hint="pass --raw with the folder holding the study export",
        )
    declared = (mapping or {}).get("tables", {})
    sources = {}
    for table in TABLE_ORDER:
        spec = declared.get(table)
        if spec:
            sources[table] = TableSource(
                raw_dir / spec["file"],
                spec.get("columns", {}),
                spec.get("units", {}),
                spec.get("sheet"),
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
        sources[table] = TableSource(found)
    return sources


# --- readers ----------------------------------------------------------------------------------


def _first_malformed_row(path: Path) -> tuple[int | None, str]:
    """Locate the first row whose field count differs from the header (for the error message)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader)
            for record in reader:
                if len(record) != len(header):
                    return (
                        reader.line_num,
                        f"{len(record)} fields where the header has {len(header)}",
                    )
    except csv.Error as error:
        return reader.line_num, str(error)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    return None, "unreadable CSV"


def _quote_count(path: Path) -> int:
    """Double quotes in the file: an odd count means a quoted cell never closes (truncation)."""
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            count += chunk.count(b'"')
    return count


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV as text cells; malformed files raise DataError naming the row."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    if not head.strip():
        raise DataError("the file is empty", file=str(path), hint="re-export it with a header row")
    if b"\x00" in head:
        raise DataError("this is not a text CSV (binary content)", file=str(path))
    if _quote_count(path) % 2:
        row, problem = _first_malformed_row(path)
        raise DataError(
            f"malformed CSV: {problem}",
            file=str(path),
            row=row,
            hint="a quoted cell never closes; the file may be truncated",
        )
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        # Every column read as text, empty cells as "", kept in Arrow memory: cleaning's string
        # work then runs vectorized instead of over Python objects.
        table = pyarrow.csv.read_csv(
            path,
            convert_options=pyarrow.csv.ConvertOptions(
                column_types={name: pyarrow.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        frame = table.to_pandas(types_mapper={pyarrow.string(): TEXT_DTYPE}.get)
    except (
        pyarrow.ArrowInvalid,
        UnicodeDecodeError,
        ValueError,
        StopIteration,
        csv.Error,
    ) as error:
        row, problem = _first_malformed_row(path)
        raise DataError(
            f"malformed CSV: {problem or error}",
            file=str(path),
            row=row,
            hint="the file may be truncated; re-export it",
        ) from None
    return frame.fillna("")


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


def read_table_file(path: Path, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a CSV, XLSX or parquet file as text cells with `source_row`."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = read_csv_text(path)
        elif suffix == ".parquet":
            frame = _frame_as_text(pd.read_parquet(path))
        elif suffix in (".xlsx", ".xlsm"):
            frame = _frame_as_text(pd.read_excel(path, sheet_name=sheet or 0, dtype=object))
        else:
            raise DataError(
                f"unsupported file type {suffix!r}", file=str(path), hint="use CSV, XLSX or parquet"
            )
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure becomes one clear line
        raise DataError(
            f"cannot read the file ({type(error).__name__}: {error})", file=str(path)
        ) from None
    frame = frame.reset_index(drop=True)
    frame[SOURCE_ROW] = frame.index + 2
    return frame


def canonical_raw_table(table: str, frame: pd.DataFrame, source: TableSource) -> pd.DataFrame:
    """Rename mapped columns to canonical names, tag declared units, check required columns."""
    renamed = frame.rename(columns={src: dst for dst, src in source.columns.items()})
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
        values = renamed[column]
        bare = (values.str.strip() != "") & ~values.str.contains("[a-zA-Z]", regex=True)
        renamed.loc[bare, column] = values[bare] + " " + DECLARABLE_UNITS[unit]
    return renamed


@dataclass
class RawStudy:
    """The four raw tables as text, the file each came from, and what the reader quarantined."""

    tables: dict[str, pd.DataFrame]
    files: dict[str, str]
    quarantine: pd.DataFrame | None = None
    # Where the export states its own export date (file name -> date), if anywhere.
    stated_export_dates: dict[str, datetime.date] = field(default_factory=dict)


def read_raw_study(raw_dir: Path, mapping_path: Path | None = None) -> RawStudy:
    """All four raw tables as text frames, from plain files or a REDCap export."""
    mapping = read_yaml(mapping_path, "mapping") if mapping_path else None
    if mapping and "redcap" in mapping:
        study = read_redcap_study(raw_dir, mapping["redcap"])
    else:
        tables, files = {}, {}
        for table, source in table_sources(raw_dir, mapping).items():
            frame = read_table_file(source.path, source.sheet)
            tables[table] = canonical_raw_table(table, frame, source)
            files[table] = source.path.name
        study = RawStudy(tables, files)
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
    from analysis.redcap import read_redcap

    data_file = raw_dir / spec["data"]
    export = read_redcap(
        data_file,
        raw_dir / spec["dictionary"],
        raw_dir / spec["event_mapping"] if spec.get("event_mapping") else None,
    )
    tables, files, table_of_instrument = {}, {}, {}
    for table in TABLE_ORDER:
        target = spec["tables"][table]
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


def read_stage_frames(folder: Path, names: tuple[str, ...], stage: str) -> dict[str, pd.DataFrame]:
    """The parquet frames an earlier stage wrote, or a one-line error saying which to run."""
    frames = {}
    for name in names:
        path = Path(folder) / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"not found: run `ga-rehab {stage}` first", file=str(path))
        frames[name] = pd.read_parquet(path)
    return frames


# --- atomic writers ---------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


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
