"""Read a REDCap export (records CSV + data dictionary) into one tidy frame per instrument.

Modelled on R's REDCapTidieR ``read_redcap``: every instrument gets its own frame with the
identifier columns first, its fields decoded through the dictionary, and ``form_status`` last.
Values that do not fit their declared type become missing and are listed in the quarantine.

Decisions (the module's contract, tested in tests/test_redcap.py):

- Frames are indexed by ``source_row``, the data row as a spreadsheet shows it (header = row 1).
- Checkbox choices stay one boolean column each, named as in the export (``field___code``);
  their labels ("Field label: Choice label"), like every column's label, are in
  ``RedcapExport.labels[instrument][column]``.
- An instrument is repeating when any row carries it in ``redcap_repeat_instrument`` (or
  holds its data in a repeating event). Its non-repeating rows (REDCapTidieR's "mixed
  structure") join it as ``redcap_repeat_instance`` 1, as REDCapTidieR does.
- Data columns the dictionary does not explain go, with the row identifiers, into
  ``RedcapExport.unmatched`` (rows where any of them holds a value), never dropped.
- Rows holding nothing but identifiers (and unticked boxes) that no instrument claims are
  listed in ``RedcapExport.empty_rows``.
- Dictionary fields absent from the data file are left out of the frames (a partial export).
- Longitudinal frames carry ``redcap_event_name`` and ``redcap_arm`` (from its ``_arm_N``).
- With an instrument-event mapping, a non-repeating instrument owns every row of its events,
  blank or not (as REDCapTidieR); without one, the rows holding its data or form status.
  Caveat: only the data show that an instrument repeats, so one with no repeating rows in
  this export is read as non-repeating.
- Record ids stay strings ("007" is not 7).
- Dates of every display order (date_mdy, date_dmy...) must be Y-M-D, the form REDCap exports;
  anything else is quarantined, never reordered. A survey timestamp "[not completed]" is
  missing, not quarantined (the form status says as much).
- Quarantine ``scope`` is "value" for one value set to missing, "row" for a row kept out of an
  instrument (duplicate key) or out of all (table "unplaced": no record id, bad instance).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import DataError
from analysis.redcap.format import (
    ARM_SUFFIX_PATTERN,
    CALC,
    CHECKBOX,
    CHECKBOX_SEPARATOR,
    CHECKBOX_TICKED,
    CHECKBOX_UNTICKED,
    CHOICE_FIELD_TYPES,
    DATA_ACCESS_GROUP_COLUMN,
    DATE_VALIDATIONS,
    DATETIME_SECONDS_VALIDATIONS,
    DATETIME_VALIDATIONS,
    DESCRIPTIVE,
    DICTIONARY_COLUMNS,
    DICTIONARY_HEADERS,
    EVENT_COLUMN,
    FIXED_CHOICES,
    FORM_STATUS_CODES,
    INTEGER,
    MAPPING_EVENT,
    MAPPING_FORM,
    NUMBER_COMMA_VALIDATIONS,
    NUMBER_VALIDATIONS,
    REPEAT_INSTANCE_COLUMN,
    REPEAT_INSTRUMENT_COLUMN,
    REQUIRED_DICTIONARY_COLUMNS,
    ROW_IDENTIFIERS,
    SLIDER,
    SURVEY_IDENTIFIER_COLUMN,
    SURVEY_NOT_COMPLETED,
    TEXT,
    TIME,
    TIME_HH_MM_SS,
    TIME_MM_SS,
    VALIDATION_ALIASES,
    checkbox_column_suffix,
    form_status_column,
    parse_choices,
    survey_timestamp_column,
)
from analysis.schema import Quarantine, column_names

ARM_COLUMN = "redcap_arm"
SURVEY_TIMESTAMP_COLUMN = "redcap_survey_timestamp"
FORM_STATUS_COLUMN = "form_status"
FORM_STATUS_LEVELS = tuple(FORM_STATUS_CODES.values())
SOURCE_ROW = "source_row"
# Quarantine table for rows that cannot be given to any instrument (no record id, bad instance).
UNPLACED_TABLE = "unplaced"

# Names the tidy frames add; a dictionary field by one of these names would be ambiguous.
_RESERVED_NAMES = {*ROW_IDENTIFIERS, ARM_COLUMN, SURVEY_TIMESTAMP_COLUMN, FORM_STATUS_COLUMN}


@dataclass(frozen=True)
class RedcapExport:
    """A REDCap export split into tidy instrument frames, plus what could not be kept as typed."""

    instruments: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    dictionary: pd.DataFrame
    record_id: str
    labels: dict[str, dict[str, str]]
    unmatched: pd.DataFrame
    empty_rows: list[int]


@dataclass(frozen=True)
class _Parser:
    """How one kind of REDCap value is read: rule name, what fits, and the conversion."""

    rule: str
    expected: str
    convert: Callable[[pd.Series], pd.Series]
    missing_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Column:
    """One data column of an instrument: its parser, label, and whether '0' means no data."""

    name: str
    parser: _Parser
    label: str
    is_checkbox: bool = False


def read_redcap(
    data_csv: Path,
    dictionary_csv: Path,
    event_mapping: Path | None = None,
    encoding: str | None = None,
) -> RedcapExport:
    """Read a REDCap records CSV with its data dictionary into tidy instrument frames.

    `encoding` is the files' text encoding when it is not UTF-8 (e.g. cp1252).
    """
    data_csv, dictionary_csv = Path(data_csv), Path(dictionary_csv)
    dictionary = normalise_dictionary(_read_text_table(dictionary_csv, "data dictionary", encoding))
    records = _read_text_table(data_csv, "records file", encoding)
    event_forms = None
    if event_mapping is not None:
        event_mapping = Path(event_mapping)
        event_forms = _event_forms(
            _read_text_table(event_mapping, "instrument-event mapping", encoding),
            event_mapping,
            dictionary,
        )
    return tidy_redcap(records, dictionary, event_forms, source_file=data_csv.name)


def normalise_dictionary(raw: pd.DataFrame) -> pd.DataFrame:
    """A REDCap dictionary (web or API headers) with the API headers, one row per field."""
    file = raw.attrs.get("file")
    by_folded_name = {name.casefold(): api for name, api in DICTIONARY_HEADERS.items()}
    by_folded_name |= {api.casefold(): api for api in DICTIONARY_COLUMNS}
    renamed = raw.rename(columns=lambda name: by_folded_name.get(name.strip().casefold(), name))
    missing = [name for name in REQUIRED_DICTIONARY_COLUMNS if name not in renamed.columns]
    if missing:
        raise DataError(
            f"is not a REDCap data dictionary: no column {', '.join(missing)}",
            file=file,
            hint="pass the dictionary exported from REDCap (web 'Data Dictionary' or API metadata)",
        )
    dictionary = pd.DataFrame(
        {name: renamed[name] if name in renamed.columns else "" for name in DICTIONARY_COLUMNS},
        index=renamed.index,
    )
    dictionary = dictionary[(dictionary.apply(lambda column: column.str.strip()) != "").any(axis=1)]
    dictionary = dictionary.copy()
    for name in REQUIRED_DICTIONARY_COLUMNS:
        dictionary[name] = dictionary[name].str.strip()
        blank = dictionary.index[dictionary[name] == ""]
        if len(blank):
            raise DataError(
                "is blank",
                file=file,
                row=int(blank[0]),
                column=name,
                hint="every dictionary row needs a field name, form name and field type",
            )
    if dictionary.empty:
        raise DataError(
            "has no fields",
            file=file,
            hint="pass the project's full data dictionary",
        )
    dictionary["field_type"] = dictionary["field_type"].str.lower()
    clashes = dictionary.index[
        dictionary["field_name"].duplicated() | dictionary["field_name"].isin(_RESERVED_NAMES)
    ]
    if len(clashes):
        name = dictionary.at[clashes[0], "field_name"]
        raise DataError(
            f"field {name!r} is defined twice or clashes with a column REDCap adds",
            file=file,
            row=int(clashes[0]),
            column="field_name",
            hint="field names must be unique, as REDCap enforces",
        )
    return dictionary


def tidy_redcap(
    records: pd.DataFrame,
    dictionary: pd.DataFrame,
    event_forms: set[tuple[str, str]] | None,
    source_file: str,
) -> RedcapExport:
    """Split string records (indexed by spreadsheet row) into tidy frames per instrument."""
    record_id = dictionary["field_name"].iloc[0]
    if record_id not in records.columns:
        raise DataError(
            f"has no record id column (the dictionary's first field is {record_id!r})",
            file=source_file,
            column=record_id,
            hint="export the records with the record id, or pass the dictionary of this project",
        )
    if event_forms is not None and EVENT_COLUMN not in records.columns:
        raise DataError(
            f"has no {EVENT_COLUMN} column but an instrument-event mapping was given",
            file=source_file,
            column=EVENT_COLUMN,
            hint="leave out the event mapping for a classic (non-longitudinal) project",
        )
    instruments = list(dict.fromkeys(dictionary["form_name"]))
    layout, explained = _instrument_columns(records, dictionary, record_id)
    stripped = records.apply(lambda column: column.str.strip())
    blank = stripped == ""
    evidence = pd.DataFrame(
        {name: _has_data(stripped, blank, layout[name]) for name in instruments},
        index=records.index,
        dtype=bool,
    )
    unknown = [name for name in records.columns if name not in explained]
    issues: list[dict] = []

    placeable = _place_rows(stripped, blank, evidence, record_id, instruments, source_file, issues)
    repeat_instrument = _column_or_blank(stripped, REPEAT_INSTRUMENT_COLUMN)
    instance_text = _column_or_blank(stripped, REPEAT_INSTANCE_COLUMN)
    event = _column_or_blank(stripped, EVENT_COLUMN)
    repeating_event_row = placeable & (repeat_instrument == "") & (instance_text != "")
    plain_row = placeable & (repeat_instrument == "") & (instance_text == "")
    repeating = {
        name
        for name in instruments
        if (placeable & (repeat_instrument == name)).any()
        or (repeating_event_row & evidence[name]).any()
    }

    frames, labels = {}, {}
    for name in instruments:
        if event_forms is None:
            mapped = pd.Series(True, index=records.index)
        else:
            mapped = event.map(lambda event_name, form=name: (event_name, form) in event_forms)
        # With a mapping, a non-repeating instrument owns its events' rows even when blank
        # (as REDCapTidieR); without one, only rows holding its data show it applies.
        claims_blank_rows = event_forms is not None and name not in repeating
        owned = (
            placeable
            & mapped.astype(bool)
            & (
                (repeat_instrument == name)
                | (repeating_event_row & evidence[name])
                | (plain_row & (evidence[name] | claims_blank_rows))
            )
        )
        stray = placeable & evidence[name] & ~owned
        _quarantine_stray_cells(
            records, blank, layout[name], stray, mapped, event, name, source_file, issues
        )
        rows = _drop_duplicate_keys(
            stripped, records.index[owned], record_id, name in repeating, name, source_file, issues
        )
        frames[name], labels[name] = _instrument_frame(
            records, stripped, rows, layout[name], dictionary, record_id, name in repeating, name
        )
        issues.extend(_value_issues(records, rows, layout[name], name, source_file))

    unmatched = _unmatched_frame(records, blank, record_id, unknown)
    quarantine = _quarantine_frame(issues)
    accounted = set(unmatched.index) | set(quarantine[Quarantine.source_row])
    for frame in frames.values():
        accounted |= set(frame.index)
    empty_rows = [int(row) for row in records.index if row not in accounted]
    return RedcapExport(
        instruments=frames,
        quarantine=quarantine,
        dictionary=dictionary.reset_index(drop=True),
        record_id=record_id,
        labels=labels,
        unmatched=unmatched,
        empty_rows=empty_rows,
    )


def _read_text_table(path: Path, role: str, encoding: str | None = None) -> pd.DataFrame:
    """A CSV file as a frame of strings, indexed by spreadsheet row (header = row 1)."""
    hint = "export it from REDCap again as CSV (UTF-8), or declare `encoding:` in the mapping"
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{role} not found", file=str(path), hint="check the path") from None
    except OSError as error:
        raise DataError(f"{role} cannot be read ({error.strerror})", file=str(path)) from None
    if b"\x00" in payload:
        raise DataError(f"{role} holds binary data, not CSV text", file=str(path), hint=hint)
    codec = encoding or "UTF-8"
    try:
        text = payload.decode(codec).removeprefix("\ufeff")
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", file=str(path), hint=hint) from None
    except UnicodeDecodeError as error:
        prefix = payload[: error.start].decode(codec, errors="replace")
        raise DataError(
            f"{role} is not {codec} text (byte 0x{payload[error.start]:02x} at offset "
            f"{error.start})",
            file=str(path),
            row=len(list(csv.reader(io.StringIO(prefix + "x", newline="")))),
            hint=hint,
        ) from None
    if not text.strip():
        raise DataError(f"{role} is empty", file=str(path), hint=hint)
    # The csv module (not pandas) so that row numbers are exact and nothing is type-guessed.
    allow_large_csv_cells()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    try:
        rows.extend(reader)
    except csv.Error as error:
        raise DataError(
            f"{role} is not valid CSV ({error})",
            file=str(path),
            row=len(rows) + 1,
            hint="the file looks truncated or has an unclosed quote; " + hint,
        ) from None
    header = [name.strip() for name in rows[0]]
    duplicated = [name for name in header if header.count(name) > 1]
    if duplicated:
        raise DataError(
            f"{role} names a column twice", file=str(path), row=1, column=duplicated[0], hint=hint
        )
    body = []
    for row_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            if all(not value.strip() for value in row) and len(row) < len(header):
                row = [""] * len(header)
            else:
                raise DataError(
                    f"{role} row has {len(row)} values for {len(header)} columns",
                    file=str(path),
                    row=row_number,
                    hint="the file looks truncated or a row is broken; " + hint,
                )
        body.append(row)
    index = pd.RangeIndex(2, 2 + len(body), name=SOURCE_ROW)
    frame = pd.DataFrame(body, columns=header, index=index, dtype=object)
    frame.attrs["file"] = str(path)
    return frame


def allow_large_csv_cells() -> None:
    """Let the csv module read cells of any size (long clinician notes), not only 128 KiB."""
    csv.field_size_limit(2**31 - 1)


def _event_forms(
    mapping: pd.DataFrame, path: Path, dictionary: pd.DataFrame
) -> set[tuple[str, str]]:
    """The (unique event name, instrument) pairs of an instrument-event mapping export."""
    missing = [name for name in (MAPPING_EVENT, MAPPING_FORM) if name not in mapping.columns]
    if missing:
        raise DataError(
            f"is not an instrument-event mapping: no column {', '.join(missing)}",
            file=str(path),
            hint="pass REDCap's instrument-event mapping export (arm_num, unique_event_name, form)",
        )
    pairs = mapping[[MAPPING_EVENT, MAPPING_FORM]].apply(lambda column: column.str.strip())
    pairs = pairs[(pairs != "").any(axis=1)]
    unknown = pairs.index[~pairs[MAPPING_FORM].isin(dictionary["form_name"])]
    if len(unknown):
        raise DataError(
            f"maps instrument {pairs.at[unknown[0], MAPPING_FORM]!r}, which the dictionary lacks",
            file=str(path),
            row=int(unknown[0]),
            column=MAPPING_FORM,
            hint="pass the mapping and dictionary of the same project",
        )
    return set(pairs.itertuples(index=False, name=None))


def _instrument_columns(
    records: pd.DataFrame, dictionary: pd.DataFrame, record_id: str
) -> tuple[dict[str, list[_Column]], set[str]]:
    """Per instrument, its data columns in output order; and every column the layout explains."""
    present = set(records.columns)
    layout: dict[str, list[_Column]] = {name: [] for name in dictionary["form_name"]}
    explained = {record_id, *ROW_IDENTIFIERS}
    checkbox_columns = {}
    for name in present:
        field, separator, suffix = name.partition(CHECKBOX_SEPARATOR)
        if separator:
            checkbox_columns.setdefault(field, {})[suffix.lower()] = name
    for field in dictionary.itertuples(index=False):
        name, instrument = field.field_name, field.form_name
        if name == record_id or field.field_type == DESCRIPTIVE:
            continue
        if field.field_type == CHECKBOX:
            columns = checkbox_columns.get(name, {})
            for code, choice in parse_choices(field.select_choices_or_calculations):
                column = columns.get(checkbox_column_suffix(code))
                if column is not None:
                    label = f"{field.field_label or name}: {choice}"
                    layout[instrument].append(_Column(column, _CHECKBOX, label, is_checkbox=True))
                    explained.add(column)
        elif name in present:
            label = field.field_label or name
            layout[instrument].append(_Column(name, _field_parser(field), label))
            explained.add(name)
    for instrument, columns in layout.items():
        timestamp = survey_timestamp_column(instrument)
        if timestamp in present:
            columns.insert(0, _Column(timestamp, _SURVEY_TIMESTAMP, "Survey timestamp"))
            explained.add(timestamp)
        status = form_status_column(instrument)
        if status in present:
            columns.append(_Column(status, _FORM_STATUS, f"Form status ({status})"))
            explained.add(status)
    return layout, explained


def _field_parser(field) -> _Parser:
    """The parser for one dictionary field, from its type, validation and choices."""
    field_type = field.field_type
    if field_type in CHOICE_FIELD_TYPES:
        return _choice_parser(parse_choices(field.select_choices_or_calculations))
    if field_type in FIXED_CHOICES:
        return _choice_parser(FIXED_CHOICES[field_type])
    if field_type == CALC:
        return _CALC
    if field_type == SLIDER:
        return _SLIDER
    if field_type == TEXT:
        declared = field.text_validation_type_or_show_slider_number.strip()
        validation = VALIDATION_ALIASES.get(declared, declared)
        template = _VALIDATION_PARSERS.get(validation)
        if template is not None:
            return _Parser(f"redcap_validation_{declared}", template.expected, template.convert)
    return _TEXT


def _place_rows(
    stripped: pd.DataFrame,
    blank: pd.DataFrame,
    evidence: pd.DataFrame,
    record_id: str,
    instruments: list[str],
    source_file: str,
    issues: list[dict],
) -> pd.Series:
    """Rows that can be given to instruments; the others with content go to quarantine."""
    repeat_instrument = _column_or_blank(stripped, REPEAT_INSTRUMENT_COLUMN)
    instance_text = _column_or_blank(stripped, REPEAT_INSTANCE_COLUMN)
    identifiers = [name for name in (record_id, *ROW_IDENTIFIERS) if name in stripped.columns]
    has_content = evidence.any(axis=1) | ~blank[identifiers].all(axis=1)
    instance_ok = instance_text.str.fullmatch(r"[1-9]\d{0,8}") | (
        (instance_text == "") & (repeat_instrument == "")
    )
    checks = [
        (
            record_id,
            blank[record_id],
            "redcap_record_id",
            "the record id is blank, so the row belongs to no record",
        ),
        (
            REPEAT_INSTRUMENT_COLUMN,
            (repeat_instrument != "") & ~repeat_instrument.isin(instruments),
            "redcap_repeat_instrument",
            "the repeating instrument is not in the dictionary",
        ),
        (
            REPEAT_INSTANCE_COLUMN,
            ~instance_ok,
            "redcap_repeat_instance",
            "the repeat instance is not a positive whole number",
        ),
    ]
    if EVENT_COLUMN in stripped.columns:
        checks.append(
            (
                EVENT_COLUMN,
                blank[EVENT_COLUMN],
                "redcap_event_name",
                "the event name is blank in a longitudinal export",
            )
        )
    placeable = has_content.copy()
    for column, failed, rule, reason in checks:
        rejected = placeable & failed
        for row in stripped.index[rejected]:
            value = stripped.at[row, column] if column in stripped.columns else ""
            issues.append(
                _issue(UNPLACED_TABLE, source_file, row, column, value, rule, reason, "row")
            )
        placeable &= ~rejected
    return placeable


def _quarantine_stray_cells(
    records: pd.DataFrame,
    blank: pd.DataFrame,
    columns: list[_Column],
    stray: pd.Series,
    mapped: pd.Series,
    event: pd.Series,
    instrument: str,
    source_file: str,
    issues: list[dict],
) -> None:
    """Quarantine values found in rows the instrument does not own (wrong event or instrument)."""
    for row in records.index[stray]:
        if mapped[row]:
            rule = "redcap_value_outside_instrument"
            reason = f"the row belongs to another repeating instrument, not to {instrument!r}"
        else:
            rule = "redcap_form_not_in_event"
            reason = f"instrument {instrument!r} is not mapped to event {event[row]!r}"
        for column in columns:
            value = records.at[row, column.name]
            if not blank.at[row, column.name] and not (
                column.is_checkbox and value.strip() == CHECKBOX_UNTICKED
            ):
                issues.append(
                    _issue(instrument, source_file, row, column.name, value, rule, reason)
                )


def _drop_duplicate_keys(
    stripped: pd.DataFrame,
    rows: pd.Index,
    record_id: str,
    is_repeating: bool,
    instrument: str,
    source_file: str,
    issues: list[dict],
) -> pd.Index:
    """The rows with the first occurrence of each key; later duplicates go to quarantine."""
    key_columns = [name for name in (record_id, EVENT_COLUMN) if name in stripped.columns]
    keys = stripped.loc[rows, key_columns]
    if is_repeating:
        keys = keys.assign(instance=_instances(stripped, rows))
    duplicated = keys.duplicated()
    reason = f"a second row for the same record{', event' if len(key_columns) > 1 else ''}"
    reason += f"{' and instance' if is_repeating else ''} of instrument {instrument!r}"
    for row in rows[duplicated.to_numpy()]:
        value = stripped.at[row, record_id]
        rule = "redcap_duplicate_row"
        issues.append(_issue(instrument, source_file, row, record_id, value, rule, reason, "row"))
    return rows[~duplicated.to_numpy()]


def _instances(stripped: pd.DataFrame, rows: pd.Index) -> pd.Series:
    """The repeat instance of each row; 1 for a non-repeating row of a repeating instrument."""
    text = _column_or_blank(stripped, REPEAT_INSTANCE_COLUMN).loc[rows]
    return text.mask(text == "", "1").astype("int64").astype("Int64")


def _instrument_frame(
    records: pd.DataFrame,
    stripped: pd.DataFrame,
    rows: pd.Index,
    columns: list[_Column],
    dictionary: pd.DataFrame,
    record_id: str,
    is_repeating: bool,
    instrument: str,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One instrument's tidy frame and its column labels."""
    record_label = dictionary["field_label"].iloc[0] or record_id
    parts = {record_id: records.loc[rows, record_id].astype("string")}
    labels = {record_id: record_label}
    if EVENT_COLUMN in records.columns:
        parts[EVENT_COLUMN] = records.loc[rows, EVENT_COLUMN].astype("string")
        arm = stripped.loc[rows, EVENT_COLUMN].str.extract(ARM_SUFFIX_PATTERN, expand=False)
        parts[ARM_COLUMN] = pd.to_numeric(arm).astype("Int64")
        labels |= {EVENT_COLUMN: "Event", ARM_COLUMN: "Arm"}
    for name, label in (
        (DATA_ACCESS_GROUP_COLUMN, "Data access group"),
        (SURVEY_IDENTIFIER_COLUMN, "Survey identifier"),
    ):
        if name in records.columns:
            parts[name] = _TEXT.convert(records.loc[rows, name])
            labels[name] = label
    if is_repeating:
        parts[REPEAT_INSTANCE_COLUMN] = _instances(stripped, rows)
        labels[REPEAT_INSTANCE_COLUMN] = "Repeat instance"
    has_status = False
    for column in columns:
        output_name = column.name
        if column.parser is _SURVEY_TIMESTAMP:
            output_name = SURVEY_TIMESTAMP_COLUMN
        elif column.parser is _FORM_STATUS:
            has_status = True
            continue
        parts[output_name] = _converted(records.loc[rows, column.name], column.parser)
        labels[output_name] = column.label
    status_column = form_status_column(instrument)
    if has_status:
        parts[FORM_STATUS_COLUMN] = _converted(records.loc[rows, status_column], _FORM_STATUS)
    else:
        parts[FORM_STATUS_COLUMN] = _FORM_STATUS.convert(pd.Series("", index=rows, dtype=object))
    labels[FORM_STATUS_COLUMN] = f"Form status ({status_column})"
    frame = pd.DataFrame(parts, index=rows)
    frame.index.name = SOURCE_ROW
    return frame, labels


def _value_issues(
    records: pd.DataFrame,
    rows: pd.Index,
    columns: list[_Column],
    instrument: str,
    source_file: str,
) -> list[dict]:
    """Quarantine entries for the values of an instrument's rows that do not fit their type."""
    issues = []
    for column in columns:
        raw = records.loc[rows, column.name]
        misfit = _misfits(raw, column.parser)
        for row, value in raw[misfit].items():
            reason = f"{value!r} is not {column.parser.expected}"
            issues.append(
                _issue(instrument, source_file, row, column.name, value, column.parser.rule, reason)
            )
    return issues


def _converted(raw: pd.Series, parser: _Parser) -> pd.Series:
    """Parsed values; blank, missing tokens and misfits all missing."""
    return parser.convert(raw.mask(raw.str.strip().isin(parser.missing_tokens), ""))


def _misfits(raw: pd.Series, parser: _Parser) -> pd.Series:
    """True where a non-blank value does not parse."""
    stripped = raw.str.strip()
    present = (stripped != "") & ~stripped.isin(parser.missing_tokens)
    return present & _converted(raw, parser).isna()


def _unmatched_frame(
    records: pd.DataFrame, blank: pd.DataFrame, record_id: str, unknown: list[str]
) -> pd.DataFrame:
    """Identifiers plus the columns the dictionary does not explain, where any holds a value."""
    identifiers = [name for name in (record_id, *ROW_IDENTIFIERS) if name in records.columns]
    holding = ~blank[unknown].all(axis=1) if unknown else pd.Series(False, index=records.index)
    return records.loc[holding, identifiers + unknown].copy()


def _quarantine_frame(issues: list[dict]) -> pd.DataFrame:
    """The quarantine entries as a frame with the columns of analysis.schema.Quarantine."""
    frame = pd.DataFrame(issues, columns=column_names(Quarantine))
    frame[Quarantine.source_row] = frame[Quarantine.source_row].astype("int64")
    return frame.sort_values(Quarantine.source_row, kind="stable").reset_index(drop=True)


def _issue(
    table: str,
    source_file: str,
    row: int,
    column: str,
    value: str,
    rule: str,
    reason: str,
    scope: str = "value",
) -> dict:
    """One quarantine entry; scope 'row' when the whole row was kept out of the table."""
    return {
        Quarantine.table: table,
        Quarantine.source_file: source_file,
        Quarantine.source_row: int(row),
        Quarantine.column: column,
        Quarantine.value: value,
        Quarantine.rule: rule,
        Quarantine.reason: reason,
        Quarantine.scope: scope,
    }


def _has_data(stripped: pd.DataFrame, blank: pd.DataFrame, columns: list[_Column]) -> pd.Series:
    """True for rows where any of the columns holds data (an unticked box holds none)."""
    holding = pd.Series(False, index=stripped.index)
    for column in columns:
        value_present = ~blank[column.name]
        if column.is_checkbox:
            value_present &= stripped[column.name] != CHECKBOX_UNTICKED
        holding |= value_present
    return holding


def _column_or_blank(stripped: pd.DataFrame, name: str) -> pd.Series:
    """A column of the records, or blanks when the export lacks it."""
    if name in stripped.columns:
        return stripped[name]
    return pd.Series("", index=stripped.index, dtype=object)


def _text(raw: pd.Series) -> pd.Series:
    """Strings as exported; blank is missing."""
    return raw.mask(raw.str.strip() == "").astype("string")


def _pattern_datetimes(pattern: str, layout: str) -> Callable[[pd.Series], pd.Series]:
    """A conversion to datetimes for values matching pattern exactly (others missing)."""

    def convert(raw: pd.Series) -> pd.Series:
        stripped = raw.str.strip()
        fitting = stripped.where(stripped.str.fullmatch(pattern))
        return pd.to_datetime(fitting, format=layout, errors="coerce")

    return convert


def _clock_times(pattern: str) -> Callable[[pd.Series], pd.Series]:
    """A conversion to durations (time of day) from named groups h, m, s of pattern."""

    def convert(raw: pd.Series) -> pd.Series:
        parts = raw.str.strip().str.extract(f"^{pattern}$")
        seconds = pd.Series(0.0, index=raw.index)
        for group, scale in (("h", 3600), ("m", 60), ("s", 1)):
            if group in parts.columns:
                seconds = seconds + pd.to_numeric(parts[group]) * scale
        return pd.to_timedelta(seconds, unit="s")

    return convert


def _numbers(pattern: str, decimal_comma: bool = False) -> Callable[[pd.Series], pd.Series]:
    """A conversion to floats for values matching pattern exactly (others missing)."""

    def convert(raw: pd.Series) -> pd.Series:
        stripped = raw.str.strip()
        fitting = stripped.where(stripped.str.fullmatch(pattern))
        if decimal_comma:
            fitting = fitting.str.replace(",", ".", regex=False)
        values = pd.to_numeric(fitting, errors="coerce").astype("float64")
        return values.where(np.isfinite(values))

    return convert


def _integers(raw: pd.Series) -> pd.Series:
    """Whole numbers (up to 18 digits, so int64 holds them exactly); others missing."""
    stripped = raw.str.strip()
    fitting = stripped.where(stripped.str.fullmatch(r"[-+]?\d{1,18}"))
    return fitting.map(int, na_action="ignore").astype("Int64")


def _choice_parser(choices: tuple[tuple[str, str], ...]) -> _Parser:
    """Codes decoded to labels, an unordered categorical with the dictionary's label order."""
    labels = {code: label for code, label in choices}
    categories = list(dict.fromkeys(labels.values()))
    codes = ", ".join(f"{code} ({label})" for code, label in choices) or "none"

    def convert(raw: pd.Series) -> pd.Series:
        decoded = raw.str.strip().map(labels)
        return pd.Series(pd.Categorical(decoded, categories=categories), index=raw.index)

    return _Parser("redcap_choice", f"one of the dictionary's codes: {codes}", convert)


def _form_status(raw: pd.Series) -> pd.Series:
    """0/1/2 as the ordered categories Incomplete < Unverified < Complete."""
    decoded = raw.str.strip().map(FORM_STATUS_CODES)
    return pd.Series(
        pd.Categorical(decoded, categories=FORM_STATUS_LEVELS, ordered=True), index=raw.index
    )


def _checkbox(raw: pd.Series) -> pd.Series:
    """REDCap's raw checkbox values, 1 ticked and 0 not, as nullable booleans."""
    ticked = {CHECKBOX_TICKED: True, CHECKBOX_UNTICKED: False}
    return raw.str.strip().map(ticked).astype("boolean")


_DECIMAL = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DECIMAL_COMMA = r"[-+]?(?:\d+,?\d*|,\d+)"
_YMD = r"\d{4}-\d{2}-\d{2}"
_NOT_GUESSED = "; REDCap exports every date as Y-M-D, other orders are not guessed"
_DATE = _Parser("", "a YYYY-MM-DD date" + _NOT_GUESSED, _pattern_datetimes(_YMD, "%Y-%m-%d"))
_DATETIME = _Parser(
    "",
    "a 'YYYY-MM-DD HH:MM' date and time" + _NOT_GUESSED,
    _pattern_datetimes(_YMD + r" \d{2}:\d{2}", "%Y-%m-%d %H:%M"),
)
_DATETIME_SECONDS = _Parser(
    "",
    "a 'YYYY-MM-DD HH:MM:SS' date and time" + _NOT_GUESSED,
    _pattern_datetimes(_YMD + r" \d{2}:\d{2}:\d{2}", "%Y-%m-%d %H:%M:%S"),
)
_NUMBER = _Parser("", "a number with '.' as decimal mark", _numbers(_DECIMAL))
_NUMBER_COMMA = _Parser(
    "", "a number with ',' as decimal mark", _numbers(_DECIMAL_COMMA, decimal_comma=True)
)
_HOURS, _MINUTES, _SECONDS = r"(?P<h>[01]\d|2[0-3])", r"(?P<m>[0-5]\d)", r"(?P<s>[0-5]\d)"
# Number precision (number_2dp...) is a display rule: any number fits, rounding is not enforced.
# Rules are left blank here: _field_parser names each after the declared validation type.
_VALIDATION_PARSERS = {
    **dict.fromkeys(DATE_VALIDATIONS, _DATE),
    **dict.fromkeys(DATETIME_VALIDATIONS, _DATETIME),
    **dict.fromkeys(DATETIME_SECONDS_VALIDATIONS, _DATETIME_SECONDS),
    TIME: _Parser("", "an HH:MM time", _clock_times(f"{_HOURS}:{_MINUTES}")),
    TIME_HH_MM_SS: _Parser("", "an HH:MM:SS time", _clock_times(f"{_HOURS}:{_MINUTES}:{_SECONDS}")),
    TIME_MM_SS: _Parser("", "an MM:SS time", _clock_times(f"{_MINUTES}:{_SECONDS}")),
    INTEGER: _Parser("", "a whole number", _integers),
    **dict.fromkeys(NUMBER_VALIDATIONS, _NUMBER),
    **dict.fromkeys(NUMBER_COMMA_VALIDATIONS, _NUMBER_COMMA),
}
_TEXT = _Parser("", "text", _text)
_CALC = _Parser("redcap_calc", "a number (calculated field)", _numbers(_DECIMAL))
_SLIDER = _Parser("redcap_slider", "a whole number (slider)", _integers)
_CHECKBOX = _Parser("redcap_checkbox", "0 or 1 (checkbox)", _checkbox)
_FORM_STATUS = _Parser("redcap_form_status", "0, 1 or 2 (form status)", _form_status)
_SURVEY_TIMESTAMP = _Parser(
    "redcap_survey_timestamp",
    "a 'YYYY-MM-DD HH:MM:SS' survey timestamp",
    _pattern_datetimes(_YMD + r" \d{2}:\d{2}:\d{2}", "%Y-%m-%d %H:%M:%S"),
    missing_tokens=(SURVEY_NOT_COMPLETED,),
)
