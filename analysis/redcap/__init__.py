"""REDCap exports: the format (`format`), the reader (`reader`) and the writer (`writer`).

The reader and the writer take every name of the format (columns REDCap adds, dictionary
headers, field types, validation names, form-status codes, checkbox columns, choices strings)
from `analysis.redcap.format`, so the two sides cannot disagree about it.
"""

from analysis.redcap.format import (
    DATA_ACCESS_GROUP_COLUMN,
    DICTIONARY_COLUMNS,
    DICTIONARY_HEADERS,
    EVENT_COLUMN,
    REPEAT_INSTANCE_COLUMN,
    REPEAT_INSTRUMENT_COLUMN,
    SURVEY_IDENTIFIER_COLUMN,
    checkbox_column_suffix,
    format_choices,
    parse_choices,
)
from analysis.redcap.reader import (
    ARM_COLUMN,
    FORM_STATUS_COLUMN,
    FORM_STATUS_LEVELS,
    SOURCE_ROW,
    SURVEY_TIMESTAMP_COLUMN,
    UNPLACED_TABLE,
    RedcapExport,
    allow_large_csv_cells,
    normalise_dictionary,
    read_redcap,
    tidy_redcap,
)
from analysis.redcap.writer import (
    REDCAP_FIELDS,
    REDCAP_INSTRUMENTS,
    RedcapField,
    redcap_dictionary,
    redcap_export,
)

__all__ = [
    "ARM_COLUMN",
    "DATA_ACCESS_GROUP_COLUMN",
    "DICTIONARY_COLUMNS",
    "DICTIONARY_HEADERS",
    "EVENT_COLUMN",
    "FORM_STATUS_COLUMN",
    "FORM_STATUS_LEVELS",
    "REDCAP_FIELDS",
    "REDCAP_INSTRUMENTS",
    "REPEAT_INSTANCE_COLUMN",
    "REPEAT_INSTRUMENT_COLUMN",
    "SOURCE_ROW",
    "SURVEY_IDENTIFIER_COLUMN",
    "SURVEY_TIMESTAMP_COLUMN",
    "UNPLACED_TABLE",
    "RedcapExport",
    "RedcapField",
    "allow_large_csv_cells",
    "checkbox_column_suffix",
    "format_choices",
    "parse_choices",
    "normalise_dictionary",
    "read_redcap",
    "redcap_dictionary",
    "redcap_export",
    "tidy_redcap",
]
