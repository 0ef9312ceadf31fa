"""The REDCap export format, written down once for the reader and the writer.

Column names REDCap adds to a records export, the data dictionary's headers (web and API
style), field types, validation names, form-status codes, checkbox column names and the
choices string: what a REDCap project exports, independent of any study.
"""

from __future__ import annotations

import re

# Columns REDCap adds to a records export, one value per row.
EVENT_COLUMN = "redcap_event_name"
REPEAT_INSTRUMENT_COLUMN = "redcap_repeat_instrument"
REPEAT_INSTANCE_COLUMN = "redcap_repeat_instance"
DATA_ACCESS_GROUP_COLUMN = "redcap_data_access_group"
SURVEY_IDENTIFIER_COLUMN = "redcap_survey_identifier"
ROW_IDENTIFIERS = (
    EVENT_COLUMN,
    REPEAT_INSTRUMENT_COLUMN,
    REPEAT_INSTANCE_COLUMN,
    DATA_ACCESS_GROUP_COLUMN,
    SURVEY_IDENTIFIER_COLUMN,
)
# A unique event name ends in its arm: "baseline_arm_1".
ARM_SUFFIX_PATTERN = r"_arm_(\d+)$"

# Per instrument, REDCap exports `<instrument>_complete` and, for a survey,
# `<instrument>_timestamp` (the survey timestamp, "[not completed]" when there is none).
FORM_STATUS_SUFFIX = "_complete"
SURVEY_TIMESTAMP_SUFFIX = "_timestamp"
SURVEY_NOT_COMPLETED = "[not completed]"
# Form status codes in REDCap's order.
FORM_STATUS_CODES = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}
FORM_COMPLETE = "2"

# The data dictionary: web export headers -> the API's, the style the toolkit reads and writes.
DICTIONARY_HEADERS = {
    "Variable / Field Name": "field_name",
    "Form Name": "form_name",
    "Section Header": "section_header",
    "Field Type": "field_type",
    "Field Label": "field_label",
    "Choices, Calculations, OR Slider Labels": "select_choices_or_calculations",
    "Field Note": "field_note",
    "Text Validation Type OR Show Slider Number": "text_validation_type_or_show_slider_number",
    "Text Validation Min": "text_validation_min",
    "Text Validation Max": "text_validation_max",
    "Identifier?": "identifier",
    "Branching Logic (Show field only if...)": "branching_logic",
    "Required Field?": "required_field",
    "Custom Alignment": "custom_alignment",
    "Question Number (surveys only)": "question_number",
    "Matrix Group Name": "matrix_group_name",
    "Matrix Ranking?": "matrix_ranking",
    "Field Annotation": "field_annotation",
}
DICTIONARY_COLUMNS = tuple(DICTIONARY_HEADERS.values())
REQUIRED_DICTIONARY_COLUMNS = ("field_name", "form_name", "field_type")
# The instrument-event mapping export's columns.
MAPPING_EVENT, MAPPING_FORM = "unique_event_name", "form"

# Field types.
TEXT = "text"
RADIO = "radio"
DROPDOWN = "dropdown"
CHECKBOX = "checkbox"
YESNO = "yesno"
TRUEFALSE = "truefalse"
CALC = "calc"
SLIDER = "slider"
DESCRIPTIVE = "descriptive"
CHOICE_FIELD_TYPES = (RADIO, DROPDOWN)
# yesno and truefalse fields have fixed codes; the dictionary leaves their choices blank.
FIXED_CHOICES = {
    YESNO: (("1", "Yes"), ("0", "No")),
    TRUEFALSE: (("1", "True"), ("0", "False")),
}

# Text validation names (text_validation_type_or_show_slider_number).
DATE_YMD = "date_ymd"
DATE_VALIDATIONS = (DATE_YMD, "date_mdy", "date_dmy")
DATETIME_VALIDATIONS = ("datetime_ymd", "datetime_mdy", "datetime_dmy")
DATETIME_SECONDS_VALIDATIONS = (
    "datetime_seconds_ymd",
    "datetime_seconds_mdy",
    "datetime_seconds_dmy",
)
TIME = "time"
TIME_HH_MM_SS = "time_hh_mm_ss"
TIME_MM_SS = "time_mm_ss"
INTEGER = "integer"
NUMBER = "number"
# number_1dp .. number_4dp: a number shown with that many decimal places.
NUMBER_DECIMAL_PLACES = range(1, 5)
NUMBER_VALIDATIONS = (NUMBER, *(f"number_{places}dp" for places in NUMBER_DECIMAL_PLACES))
NUMBER_COMMA_VALIDATIONS = (
    "number_comma_decimal",
    *(f"number_{places}dp_comma_decimal" for places in NUMBER_DECIMAL_PLACES),
)
# Legacy validation names REDCap still stores for old projects.
VALIDATION_ALIASES = {
    "int": INTEGER,
    "float": NUMBER,
    "date": DATE_YMD,
    "datetime": DATETIME_VALIDATIONS[0],
    "datetime_seconds": DATETIME_SECONDS_VALIDATIONS[0],
}

# A checkbox exports one 0/1 column per choice: `<field>___<code suffix>`.
CHECKBOX_SEPARATOR = "___"
CHECKBOX_TICKED, CHECKBOX_UNTICKED = "1", "0"
# Choices strings: "1, Yes | 0, No".
CHOICE_SEPARATOR, CODE_SEPARATOR = "|", ","


def form_status_column(instrument: str) -> str:
    return f"{instrument}{FORM_STATUS_SUFFIX}"


def survey_timestamp_column(instrument: str) -> str:
    return f"{instrument}{SURVEY_TIMESTAMP_SUFFIX}"


def checkbox_column_suffix(code: str) -> str:
    """The suffix REDCap gives a checkbox code in export column names (``field___<suffix>``).

    Mirrors REDCap's Project::getExtendedCheckboxCodeFormatted: '-' and '.' become '_', the
    code is lower-cased and anything outside [a-z0-9_] is dropped.
    """
    return re.sub(r"[^a-z0-9_]", "", code.replace("-", "_").replace(".", "_").lower())


def checkbox_column(field: str, code: str) -> str:
    """The export column of one checkbox choice."""
    return f"{field}{CHECKBOX_SEPARATOR}{checkbox_column_suffix(code)}"


def parse_choices(text: str) -> tuple[tuple[str, str], ...]:
    """(code, label) pairs from a REDCap choices string such as '1, Yes | 0, No'."""
    pairs = []
    for choice in text.split(CHOICE_SEPARATOR):
        if not choice.strip():
            continue
        code, comma, label = choice.partition(CODE_SEPARATOR)
        # A choice without a comma uses its text as both code and label, as REDCap does.
        pairs.append((code.strip(), label.strip() if comma else code.strip()))
    return tuple(pairs)


def format_choices(pairs) -> str:
    """A REDCap choices string from (code, label) pairs; parse_choices reads it back."""
    return f" {CHOICE_SEPARATOR} ".join(f"{code}{CODE_SEPARATOR} {label}" for code, label in pairs)
