"""REDCap exports: the reader (the shared real-export fixtures, hand-made edge cases, fuzzing)
and the writer (the study design's export, read back by the reader)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.errors import DataError
from analysis.io import write_csv
from analysis.redcap import (
    ARM_COLUMN,
    DICTIONARY_COLUMNS,
    DICTIONARY_HEADERS,
    EVENT_COLUMN,
    FORM_STATUS_COLUMN,
    FORM_STATUS_LEVELS,
    REDCAP_FIELDS,
    REDCAP_INSTRUMENTS,
    REPEAT_INSTANCE_COLUMN,
    REPEAT_INSTRUMENT_COLUMN,
    UNPLACED_TABLE,
    RedcapExport,
    checkbox_column_suffix,
    format_choices,
    parse_choices,
    read_redcap,
    redcap_export,
)
from analysis.redcap.format import DATE_YMD, FORM_COMPLETE, INTEGER, NUMBER
from analysis.redcap.writer import BASELINE_FORM, REDCAP_PAIN_SITES_FIELD
from analysis.schema import Participants, Quarantine
from analysis.simulate import TABLES, simulate_study

# Fixture name -> (records, dictionary, instrument-event mapping or None), relative paths.
FIXTURES = {
    "redcapr_longitudinal": (
        "REDCapR-longitudinal/data.csv",
        "REDCapR-longitudinal/dictionary.csv",
        "REDCapR-longitudinal/form_event_mapping.csv",
    ),
    "redcapr_potentially_problematic": (
        "REDCapR-messy/potentially-problematic-values/data.csv",
        "REDCapR-messy/potentially-problematic-values/dictionary.csv",
        None,
    ),
    "redcapr_validation_types": (
        "REDCapR-messy/validation-types-1/data.csv",
        "REDCapR-messy/validation-types-1/dictionary.csv",
        None,
    ),
    "redcapr_multilevel": (
        "REDCapR-repeating/multilevel-model-1/data.csv",
        "REDCapR-repeating/multilevel-model-1/dictionary.csv",
        None,
    ),
    "redcapr_sparse": (
        "REDCapR-repeating/repeating-instruments-sparse/data.csv",
        "REDCapR-repeating/repeating-instruments-sparse/dictionary.csv",
        None,
    ),
    "redcapr_vignette": (
        "REDCapR-repeating/vignette-repeating/data.csv",
        "REDCapR-repeating/vignette-repeating/dictionary.csv",
        None,
    ),
    "tidier_long": (
        "REDCapTidieR-long/long/data.csv",
        "REDCapTidieR-long/long/metadata.csv",
        "REDCapTidieR-long/long/form_event_mapping.csv",
    ),
    "tidier_mixed": (
        "REDCapTidieR-long/mixed_structure/data.csv",
        "REDCapTidieR-long/mixed_structure/metadata.csv",
        "REDCapTidieR-long/mixed_structure/form_event_mapping.csv",
    ),
    "phpcap_import": (
        "PHPCap-longitudinal/longitudinal-data-import.csv",
        "PHPCap-longitudinal/longitudinal-metadata.csv",
        "PHPCap-longitudinal/form_event_mapping.csv",
    ),
    "phpcap_xml": (
        "PHPCap-longitudinal/records_flattened_from_xml.csv",
        "PHPCap-longitudinal/longitudinal-metadata.csv",
        "PHPCap-longitudinal/form_event_mapping.csv",
    ),
    "phpcap_repeating": (
        "PHPCap-longitudinal/repeating-forms/repeating-forms-import.csv",
        "PHPCap-longitudinal/repeating-forms/dictionary_derived_from_xml.csv",
        None,
    ),
}

# Rows per instrument, counted by hand from the fixture files.
EXPECTED_ROWS = {
    "redcapr_longitudinal": {
        "demographics": 3,
        "contact_info": 5,
        "baseline_data": 3,
        "visit_lab_data": 4,
        "patient_morale_questionnaire": 10,
        "visit_blood_workup": 4,
        "visit_observed_behavior": 6,
        "completion_data": 2,
        "completion_project_questionnaire": 3,
    },
    "redcapr_potentially_problematic": {"form_1": 2},
    "redcapr_validation_types": {"form_1": 1},
    "redcapr_multilevel": {"patient": 20, "appointment": 200},
    "redcapr_sparse": {"demographics": 5, "bp": 4},
    "redcapr_vignette": {"intake": 2, "blood_pressure": 6, "laboratory": 4, "image": 5},
    "tidier_long": {"nonrepeated": 8, "nonrepeated2": 3, "repeated": 9},
    "tidier_mixed": {"nonrepeat_form": 2, "repeat_form": 2, "mixed_structure_form": 3},
    "phpcap_import": {
        "demographics": 2,
        "contact_info": 2,
        "lab_data": 8,
        "patient_morale_questionnaire": 12,
        "completion_data": 2,
    },
    "phpcap_xml": {
        "demographics": 100,
        "contact_info": 100,
        "lab_data": 385,
        "patient_morale_questionnaire": 586,
        "completion_data": 100,
    },
    "phpcap_repeating": {"basic_information": 4, "weight": 12},
}

VIGNETTE_HEADER = (
    "record_id,redcap_repeat_instrument,redcap_repeat_instance,height,weight,bmi,intake_complete,"
    "sbp,dbp,blood_pressure_complete,lab,conc,laboratory_complete,image_profile,image_complete"
)


# The project's own small hand-written exports (tests/data/redcap/README.md): they keep the
# reader covered on a plain clone, where the shared real exports are absent.
OWN_EXPORTS = Path(__file__).parent / "data" / "redcap"


def own_paths(name: str) -> tuple[Path, Path, Path | None]:
    """Records, dictionary and (if any) instrument-event mapping of one own export."""
    folder = OWN_EXPORTS / name
    mapping = folder / "form_event_mapping.csv"
    return folder / "data.csv", folder / "dictionary.csv", (mapping if mapping.is_file() else None)


def fixture_paths(root: Path, name: str) -> tuple[Path, Path, Path | None]:
    """Absolute paths of one fixture's records, dictionary and mapping."""
    data, dictionary, mapping = FIXTURES[name]
    return root / data, root / dictionary, (root / mapping if mapping else None)


def read_fixture(root: Path, name: str, with_mapping: bool = True) -> RedcapExport:
    """read_redcap on one shared fixture."""
    data, dictionary, mapping = fixture_paths(root, name)
    return read_redcap(data, dictionary, mapping if with_mapping else None)


def data_rows(path: Path) -> set[int]:
    """Spreadsheet row numbers (header = 1) of a CSV's records."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return set(range(2, 1 + sum(1 for _ in csv.reader(handle))))


def assert_nothing_lost(export: RedcapExport, rows: set[int]) -> None:
    """Every data row is in a frame, the quarantine, the unmatched frame or the empty rows."""
    placed = set(export.unmatched.index) | set(export.empty_rows)
    placed |= set(export.quarantine[Quarantine.source_row])
    for frame in export.instruments.values():
        placed |= set(frame.index)
    assert placed == rows


def write_dictionary(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """An API-header dictionary from (field, form, type, choices, validation) rows."""
    frame = pd.DataFrame(
        [
            {
                "field_name": field,
                "form_name": form,
                "field_type": field_type,
                "field_label": field.replace("_", " ").title(),
                "select_choices_or_calculations": choices,
                "text_validation_type_or_show_slider_number": validation,
            }
            for field, form, field_type, choices, validation in rows
        ],
        columns=list(DICTIONARY_COLUMNS),
    ).fillna("")
    frame.to_csv(path, index=False)
    return path


# --- the project's own exports (always run) ------------------------------------------------


def test_own_repeating_export_instruments_instances_and_validation_misfit():
    data, dictionary, _ = own_paths("repeating")
    export = read_redcap(data, dictionary)
    assert {name: len(frame) for name, frame in export.instruments.items()} == {
        "intake": 2,
        "blood_pressure": 3,
        "laboratory": 1,
        "image": 2,
    }
    assert export.instruments["blood_pressure"][REPEAT_INSTANCE_COLUMN].tolist() == [1, 2, 1]
    assert export.instruments["blood_pressure"]["sbp"].tolist() == [120.0, 118.0, 131.0]
    intake = export.instruments["intake"]
    assert intake["height"].tolist() == [1.7, 1.6]
    assert intake.loc[6, FORM_STATUS_COLUMN] == "Unverified"
    # "tall" is no number: that one value is missing and quarantined, the row is kept.
    assert pd.isna(intake.loc[6, "weight"])
    misfit = export.quarantine.iloc[0]
    assert len(export.quarantine) == 1
    assert (misfit[Quarantine.source_row], misfit[Quarantine.column], misfit[Quarantine.value]) == (
        6,
        "weight",
        "tall",
    )
    assert misfit[Quarantine.rule] == "redcap_validation_number_1dp"
    assert_nothing_lost(export, data_rows(data))


def test_own_longitudinal_export_events_arms_checkboxes_and_a_bad_date():
    data, dictionary, mapping = own_paths("longitudinal")
    export = read_redcap(data, dictionary, mapping)
    enrolment, visit = export.instruments["enrolment"], export.instruments["visit"]
    assert enrolment.index.tolist() == [2, 6, 8] and visit.index.tolist() == [3, 7, 9]
    assert enrolment[ARM_COLUMN].tolist() == [1, 1, 2]
    assert visit[EVENT_COLUMN].tolist() == ["week_4_arm_1", "week_4_arm_1", "week_4_arm_2"]
    assert enrolment["sex"].tolist() == ["Female", "Male", "Female"]
    assert enrolment[["aids___1", "aids___2", "aids___99"]].to_numpy().tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
    ]
    assert visit["recovered"].tolist() == ["No", "Yes", "No"]
    assert visit["strength_n"].tolist() == [180.5, 201.0, 150.0]
    diary = export.instruments["pain_diary"]
    assert diary[REPEAT_INSTANCE_COLUMN].tolist() == [1, 2] and diary["pain"].tolist() == [4, 3]
    assert enrolment.loc[2, "enrolled_on"] == pd.Timestamp("2024-02-01")
    # Month 13: not a Y-M-D date, so missing and quarantined, never re-read in another order.
    assert pd.isna(enrolment.loc[6, "enrolled_on"])
    assert export.quarantine[[Quarantine.source_row, Quarantine.column]].values.tolist() == [
        [6, "enrolled_on"]
    ]
    assert export.labels["enrolment"]["aids___2"] == "Aids used: Standing desk"
    assert_nothing_lost(export, data_rows(data))


# --- the shared real exports (skipped on a plain clone) --------------------------------------


@pytest.fixture(scope="module")
def longitudinal(redcap_fixtures: Path) -> RedcapExport:
    """The REDCapR 2-arm longitudinal demo read with its form-event mapping."""
    return read_fixture(redcap_fixtures, "redcapr_longitudinal")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_fixture_reads_into_expected_instruments(redcap_fixtures: Path, name: str):
    export = read_fixture(redcap_fixtures, name)
    counts = {instrument: len(frame) for instrument, frame in export.instruments.items()}
    assert counts == EXPECTED_ROWS[name]
    Quarantine.validate(export.quarantine)
    assert_nothing_lost(export, data_rows(fixture_paths(redcap_fixtures, name)[0]))
    for instrument, frame in export.instruments.items():
        assert frame.columns[0] == export.record_id
        assert frame.columns[-1] == FORM_STATUS_COLUMN
        assert frame.index.is_unique
        assert set(export.labels[instrument]) == set(frame.columns)


@pytest.mark.parametrize("name", ["redcapr_longitudinal", "tidier_long", "phpcap_xml"])
def test_mapping_and_data_evidence_agree_on_fixtures(redcap_fixtures: Path, name: str):
    with_mapping = read_fixture(redcap_fixtures, name)
    without = read_fixture(redcap_fixtures, name, with_mapping=False)
    for instrument, frame in with_mapping.instruments.items():
        pd.testing.assert_frame_equal(frame, without.instruments[instrument])


def test_longitudinal_identifier_columns(longitudinal: RedcapExport):
    assert longitudinal.record_id == "study_id"
    demographics = longitudinal.instruments["demographics"]
    assert list(demographics.columns[:4]) == ["study_id", EVENT_COLUMN, ARM_COLUMN, "date_enrolled"]
    assert list(demographics["study_id"]) == ["100", "220", "304"]
    assert list(demographics[ARM_COLUMN]) == [1, 1, 2]
    assert REPEAT_INSTANCE_COLUMN not in demographics.columns
    morale = longitudinal.instruments["patient_morale_questionnaire"]
    assert set(morale[EVENT_COLUMN]) == {
        "dose_1_arm_1",
        "visit_1_arm_1",
        "dose_2_arm_1",
        "visit_2_arm_1",
        "first_dose_arm_2",
        "first_visit_arm_2",
    }


def test_longitudinal_checkboxes_are_booleans_with_labels(longitudinal: RedcapExport):
    demographics = longitudinal.instruments["demographics"].set_index("study_id")
    gym = [f"gym___{code}" for code in range(5)]
    assert list(demographics.columns[demographics.columns.str.startswith("gym___")]) == gym
    assert demographics.loc["100", gym].tolist() == [True, False, False, False, False]
    assert demographics.loc["100", ["aerobics___1", "aerobics___2"]].tolist() == [True, True]
    assert demographics["meds___2"].dtype == "boolean"
    assert longitudinal.labels["demographics"]["gym___0"] == "Gym (Weight Training): Monday"
    assert longitudinal.labels["demographics"]["meds___5"].endswith(": Zoloft")


def test_longitudinal_choices_dates_and_numbers(longitudinal: RedcapExport):
    demographics = longitudinal.instruments["demographics"].set_index("study_id")
    record = demographics.loc["100"]
    assert record["ethnicity"] == "Hispanic or Latino"
    assert record["race"] == "White"
    assert record["sex"] == "Male"
    assert list(demographics["race"].cat.categories)[:2] == [
        "American Indian/Alaska Native",
        "Asian",
    ]
    assert not demographics["race"].cat.ordered
    assert record["dob"] == pd.Timestamp("1983-09-23")
    assert record["date_enrolled"] == pd.Timestamp("2015-04-02")
    assert record["bmi"] == pytest.approx(31.3)
    assert record["specify_mood"] == 71
    assert demographics["specify_mood"].dtype == "Int64"
    assert record["weight"] == 80
    assert record[FORM_STATUS_COLUMN] == "Complete"
    assert list(demographics[FORM_STATUS_COLUMN].cat.categories) == list(FORM_STATUS_LEVELS)
    assert demographics[FORM_STATUS_COLUMN].cat.ordered
    assert demographics.loc["304", "patient_document"] == "levon_and_barry.jpg"
    assert pd.isna(demographics.loc["100", "patient_document"])
    lab = longitudinal.instruments["visit_lab_data"]
    assert lab["vld5"].iloc[0] == pytest.approx(0.34)  # exported as ".34"
    blood = longitudinal.instruments["visit_blood_workup"]
    assert blood["vbw1"].iloc[0] == pytest.approx(0.4334)


def test_phpcap_month_first_dates_are_quarantined_with_row_and_column(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "phpcap_import")
    dob = export.quarantine[export.quarantine[Quarantine.column] == "dob"]
    assert dob[[Quarantine.source_row, Quarantine.value]].values.tolist() == [
        [2, "4/12/1982"],
        [8, "01/07/1984"],
    ]
    assert set(dob[Quarantine.rule]) == {"redcap_validation_date_ymd"}
    assert set(dob[Quarantine.table]) == {"demographics"}
    assert set(dob[Quarantine.source_file]) == {"longitudinal-data-import.csv"}
    assert dob[Quarantine.reason].iloc[0].startswith("'4/12/1982' is not a YYYY-MM-DD date")
    visits = export.quarantine[export.quarantine[Quarantine.column] == "last_visit_date"]
    assert visits[Quarantine.value].tolist() == ["4/1/2017", "4/2/2017"]
    demographics = export.instruments["demographics"].set_index("study_id")
    assert demographics["dob"].isna().all()
    assert demographics.loc["1101", "first_name"] == "John"
    assert demographics.loc["1101", EVENT_COLUMN] == "enrollment_arm_2"
    assert demographics["redcap_data_access_group"].isna().all()
    assert "age" not in demographics.columns  # a calc field the import file does not carry


def test_phpcap_xml_export_is_clean_and_typed(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "phpcap_xml")
    assert export.quarantine.empty
    demographics = export.instruments["demographics"].set_index("study_id")
    assert demographics.loc["1001", "dob"] == pd.Timestamp("1921-01-05")
    assert demographics.loc["1001", "age"] == 100.0
    assert demographics.loc["1001", "gym___2"]
    assert demographics["sex"].loc["1001"] == "Female"


def test_potentially_problematic_free_text_is_quarantined(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "redcapr_potentially_problematic")
    rules = export.quarantine.groupby(Quarantine.column)[Quarantine.rule].unique()
    assert rules.to_dict() == {
        "date_before_validation": ["redcap_validation_date_ymd"],
        "integer_before_validation": ["redcap_validation_integer"],
    }
    assert export.quarantine[Quarantine.source_row].tolist() == [2, 2, 3, 3]
    assert set(export.quarantine[Quarantine.scope]) == {"value"}
    form = export.instruments["form_1"]
    assert form["date_before_validation"].isna().all()
    assert form["integer_before_validation"].isna().all()
    # time_1 has no validation type, so "55:02" is kept as text.
    assert form["time_1"].tolist() == ["2010-01-02", "55:02"]
    assert form[FORM_STATUS_COLUMN].tolist() == ["Complete", "Complete"]


def test_repeating_forms_day_first_declared_dates_are_not_guessed(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "phpcap_repeating")
    weight_dates = export.quarantine[export.quarantine[Quarantine.column] == "weight_date"]
    assert len(weight_dates) == 12
    assert set(weight_dates[Quarantine.rule]) == {"redcap_validation_date_dmy"}
    assert weight_dates[Quarantine.value].iloc[0] == "01/21/2022"
    weight = export.instruments["weight"]
    assert list(weight.columns[:2]) == ["record_id", REPEAT_INSTANCE_COLUMN]
    assert weight["weight_date"].isna().all()
    assert weight["weight_time"].iloc[0] == pd.Timedelta(hours=14, minutes=54)
    assert weight["weight_pounds"].iloc[0] == pytest.approx(173.4)
    assert weight.groupby("record_id")[REPEAT_INSTANCE_COLUMN].max().to_dict() == {
        "1001": 3,
        "1002": 4,
        "1003": 4,
        "1004": 1,
    }
    assert weight[FORM_STATUS_COLUMN].value_counts().to_dict() == {
        "Complete": 9,
        "Unverified": 2,
        "Incomplete": 1,
    }
    basic = export.instruments["basic_information"]
    # date_mdy in the dictionary, yet REDCap exports Y-M-D: the ISO birth dates parse.
    assert basic["birth_date"].iloc[0] == pd.Timestamp("1924-10-20")
    assert basic["height_feet"].dtype == "Int64"  # legacy validation name "int"


def test_tidier_long_events_arms_and_instances(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "tidier_long")
    repeated = export.instruments["repeated"]
    assert list(repeated.columns) == [
        "record_id",
        EVENT_COLUMN,
        ARM_COLUMN,
        REPEAT_INSTANCE_COLUMN,
        "repeat_1",
        "repeat_2",
        FORM_STATUS_COLUMN,
    ]
    arm_two = repeated[repeated[ARM_COLUMN] == 2]
    assert arm_two[["record_id", EVENT_COLUMN, "repeat_1"]].values.tolist() == [
        ["4", "event_3_arm_2", "R1"]
    ]
    nonrepeated = export.instruments["nonrepeated"]
    # Record 3's rows hold only a form status, yet belong to the instrument.
    blank_record = nonrepeated[nonrepeated["record_id"] == "3"]
    assert len(blank_record) == 2 and blank_record["nonrepeat_1"].isna().all()
    assert set(export.instruments["nonrepeated2"]["record_id"]) == {"1", "2", "3"}


def test_tidier_mixed_structure_gets_instance_one(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "tidier_mixed")
    mixed = export.instruments["mixed_structure_form"]
    assert mixed[[EVENT_COLUMN, REPEAT_INSTANCE_COLUMN, "mixed_structure_1"]].values.tolist() == [
        ["event_1_arm_1", 1, "Mixed Nonrepeat 1"],
        ["event_2_arm_1", 1, "Mixed Repeat 1"],
        ["event_2_arm_1", 2, "Mixed Repeat 2"],
    ]
    assert REPEAT_INSTANCE_COLUMN not in export.instruments["nonrepeat_form"].columns


def test_vignette_repeating_instruments(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "redcapr_vignette")
    image = export.instruments["image"]
    assert image["image_profile"].tolist()[:2] == ["levon-and-barry.jpg", "mugshot-1.jpg"]
    assert image["image_profile"].dtype == "string"
    intake = export.instruments["intake"]
    assert intake["height"].tolist() == [1.0, 2.0]
    laboratory = export.instruments["laboratory"]
    assert laboratory.index.tolist() == [6, 7, 14, 15]
    assert laboratory["conc"].tolist() == ["1.1 ppm", "1.2 ppm", "2.1 ppm", "2.2 ppm"]


def test_multilevel_record_id_and_radio_codes(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "redcapr_multilevel")
    assert export.record_id == "patient_id"
    patient = export.instruments["patient"]
    assert list(patient["gender_id"].cat.categories) == ["male", "female", "unknown"]
    assert patient["gender_id"].iloc[0] == "unknown"
    appointment = export.instruments["appointment"]
    assert appointment["date_at_visit"].iloc[0] == pd.Timestamp("2002-02-06")
    assert appointment["age"].dtype == "Int64"
    assert appointment[REPEAT_INSTANCE_COLUMN].max() == 10


def test_sparse_records_keep_their_blank_forms(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "redcapr_sparse")
    demographics = export.instruments["demographics"].set_index("record_id")
    assert pd.isna(demographics.loc["5", "date_enrolled"])
    assert demographics.loc["1", "race"] == "White"
    assert demographics.loc["3", FORM_STATUS_COLUMN] == "Incomplete"
    assert export.instruments["bp"]["bp_systolic"].tolist() == [110, 111, 112, 114]


def test_validation_types_give_typed_columns(redcap_fixtures: Path):
    export = read_fixture(redcap_fixtures, "redcapr_validation_types")
    form = export.instruments["form_1"]
    expected_dtypes = {
        "f_calculated": "float64",
        "f_checkbox___0": "boolean",
        "f_slider": "Int64",
        "f_notes": "string",
        "v_date_dmy": "datetime64[ns]",
        "v_datetime_seconds_mdy": "datetime64[ns]",
        "v_time_hh_mm": "timedelta64[ns]",
        "v_time_mm_ss": "timedelta64[ns]",
        "v_integer": "Int64",
        "v_number_2dp_comma_decimal": "float64",
        "v_zipcode": "string",
    }
    assert {name: str(form[name].dtype) for name in expected_dtypes} == expected_dtypes
    assert list(form["f_yes_no"].cat.categories) == ["Yes", "No"]
    assert list(form["f_true_false"].cat.categories) == ["True", "False"]
    assert form["f_checkbox___0"].tolist() == [False]
    assert "f_descriptive" not in form.columns
    assert export.unmatched.empty


def test_both_dictionary_header_styles_give_the_same_result(redcap_fixtures: Path, tmp_path: Path):
    data, web_dictionary, mapping = fixture_paths(redcap_fixtures, "redcapr_longitudinal")
    api_dictionary = tmp_path / "api_dictionary.csv"
    web = pd.read_csv(web_dictionary, dtype=str, keep_default_na=False)
    assert list(web.columns) == list(DICTIONARY_HEADERS)
    web.rename(columns=DICTIONARY_HEADERS).to_csv(api_dictionary, index=False)
    from_web = read_redcap(data, web_dictionary, mapping)
    from_api = read_redcap(data, api_dictionary, mapping)
    assert list(from_web.dictionary.columns) == list(DICTIONARY_COLUMNS)
    pd.testing.assert_frame_equal(from_web.dictionary, from_api.dictionary)
    for instrument, frame in from_web.instruments.items():
        pd.testing.assert_frame_equal(frame, from_api.instruments[instrument])


def test_checkbox_codes_match_redcap_column_suffixes(tmp_path: Path):
    assert checkbox_column_suffix("-1") == "_1"
    assert checkbox_column_suffix("A") == "a"
    assert checkbox_column_suffix("1.5") == "1_5"
    assert parse_choices("0, Zero | -1, Minus one|A, Letter, with comma") == (
        ("0", "Zero"),
        ("-1", "Minus one"),
        ("A", "Letter, with comma"),
    )
    dictionary = write_dictionary(
        tmp_path / "dictionary.csv",
        [
            ("record_id", "form", "text", "", ""),
            ("pick", "form", "checkbox", "0, Zero | -1, Minus one | A, Letter | 1.5, Half", ""),
        ],
    )
    data = tmp_path / "data.csv"
    data.write_text("record_id,pick___0,pick____1,pick___A,pick___1_5\n1,0,1,1,0\n2,1,0,,x\n")
    export = read_redcap(data, dictionary)
    form = export.instruments["form"]
    assert list(form.columns) == [
        "record_id",
        "pick___0",
        "pick____1",
        "pick___A",
        "pick___1_5",
        FORM_STATUS_COLUMN,
    ]
    assert form.loc[2].tolist()[1:5] == [False, True, True, False]
    assert form.loc[3, "pick___0"] and pd.isna(form.loc[3, "pick___A"])
    assert pd.isna(form.loc[3, "pick___1_5"])
    assert export.quarantine[[Quarantine.column, Quarantine.rule]].values.tolist() == [
        ["pick___1_5", "redcap_checkbox"]
    ]
    assert export.labels["form"]["pick____1"] == "Pick: Minus one"


def test_survey_timestamps_and_repeating_events(tmp_path: Path):
    dictionary = write_dictionary(
        tmp_path / "dictionary.csv",
        [("record_id", "visit", "text", "", ""), ("pain", "visit", "text", "", "integer")],
    )
    data = tmp_path / "data.csv"
    data.write_text(
        "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,"
        "redcap_survey_identifier,visit_timestamp,pain,visit_complete\n"
        "1,weekly_arm_1,,1,,2021-01-02 10:11:12,3,2\n"
        "1,weekly_arm_1,,2,,[not completed],4,0\n"
        "1,weekly_arm_1,,3,,yesterday,,1\n"
    )
    export = read_redcap(data, dictionary)
    visit = export.instruments["visit"]
    assert list(visit.columns) == [
        "record_id",
        EVENT_COLUMN,
        ARM_COLUMN,
        "redcap_survey_identifier",
        REPEAT_INSTANCE_COLUMN,
        "redcap_survey_timestamp",
        "pain",
        FORM_STATUS_COLUMN,
    ]
    assert visit[REPEAT_INSTANCE_COLUMN].tolist() == [1, 2, 3]
    assert visit["redcap_survey_timestamp"].iloc[0] == pd.Timestamp("2021-01-02 10:11:12")
    assert visit["redcap_survey_timestamp"].iloc[1:].isna().all()
    assert export.quarantine[[Quarantine.source_row, Quarantine.column]].values.tolist() == [
        [4, "visit_timestamp"]
    ]


def test_unknown_columns_are_kept_in_unmatched(tmp_path: Path):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path / "data.csv"
    data.write_text(
        f"{VIGNETTE_HEADER},site_note,other_complete\n"
        "1,,,1.0,11.0,111.0,2,,,,,,,,,north,\n"
        "1,blood_pressure,1,,,,,1.1,11.1,2,,,,,,,2\n"
        "2,,,2.0,22.0,222.0,2,,,,,,,,,,\n"
    )
    export = read_redcap(data, dictionary)
    unmatched = export.unmatched
    assert list(unmatched.columns) == [
        "record_id",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "site_note",
        "other_complete",
    ]
    assert unmatched.index.tolist() == [2, 3]
    assert unmatched["site_note"].tolist() == ["north", ""]
    assert "site_note" not in export.instruments["intake"].columns


def test_rows_outside_their_place_are_quarantined(tmp_path: Path):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path / "data.csv"
    data.write_text(
        f"{VIGNETTE_HEADER}\n"
        "1,,,1.0,11.0,111.0,2,,,,,,,,\n"
        "1,blood_pressure,1,5.0,,,,1.1,11.1,2,,,,,\n"  # intake height in a blood-pressure row
        "1,blood_pressure,1,,,,,9.9,99.9,2,,,,,\n"  # same instance twice
        ",,,3.0,,,2,,,,,,,,\n"  # no record id
        "2,unknown_form,1,,,,,,,,,,,,\n"
        "2,laboratory,first,,,,,,,,x,y,2,,\n"
        ",,,,,,,,,,,,,,\n"
        "3,,,,,,,,,,,,,,\n"
    )
    export = read_redcap(data, dictionary)
    quarantine = export.quarantine.set_index(Quarantine.source_row)
    assert quarantine.loc[3, [Quarantine.table, Quarantine.column, Quarantine.rule]].tolist() == [
        "intake",
        "height",
        "redcap_value_outside_instrument",
    ]
    assert quarantine.loc[4, [Quarantine.table, Quarantine.rule, Quarantine.scope]].tolist() == [
        "blood_pressure",
        "redcap_duplicate_row",
        "row",
    ]
    assert quarantine.loc[[5, 6, 7], Quarantine.rule].tolist() == [
        "redcap_record_id",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
    ]
    assert set(quarantine.loc[[5, 6, 7], Quarantine.table]) == {UNPLACED_TABLE}
    assert export.empty_rows == [8, 9]
    assert export.instruments["blood_pressure"]["sbp"].tolist() == [1.1]
    assert len(export.instruments["intake"]) == 1
    Quarantine.validate(export.quarantine)
    assert_nothing_lost(export, set(range(2, 10)))


def test_values_in_unmapped_events_are_quarantined(tmp_path: Path, redcap_fixtures: Path):
    _, dictionary, mapping = fixture_paths(redcap_fixtures, "tidier_long")
    data = tmp_path / "data.csv"
    data.write_text(
        "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,"
        "nonrepeat_1,nonrepeat_2,nonrepeated_complete,nonrepeat_3,nonrepeat_4,"
        "nonrepeated2_complete,repeat_1,repeat_2,repeated_complete\n"
        "1,event_2_arm_1,,,a,b,2,c,,,,,\n"
        "1,event_1_arm_1,,,,,,,,,,,\n"
    )
    export = read_redcap(data, dictionary, mapping)
    assert export.quarantine[[Quarantine.column, Quarantine.rule]].values.tolist() == [
        ["nonrepeat_3", "redcap_form_not_in_event"]
    ]
    # With a mapping, a non-repeating instrument owns the rows of its events even when blank.
    assert export.instruments["nonrepeated"].index.tolist() == [2, 3]
    assert export.instruments["nonrepeated2"].index.tolist() == [3]
    # No repeating rows in this export, so nothing tells "repeated" repeats: it is taken as
    # non-repeating and owns the blank rows of its mapped events too.
    repeated = export.instruments["repeated"]
    assert repeated.index.tolist() == [2, 3] and REPEAT_INSTANCE_COLUMN not in repeated.columns


def test_header_only_export_gives_empty_frames(tmp_path: Path):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path / "data.csv"
    data.write_text(VIGNETTE_HEADER + "\n")
    export = read_redcap(data, dictionary)
    assert all(frame.empty for frame in export.instruments.values())
    assert export.quarantine.empty and export.empty_rows == []


def assert_one_line_data_error(error: pytest.ExceptionInfo, file_name: str) -> None:
    """The error names the file and fits on one line."""
    message = str(error.value)
    assert file_name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"PK\x03\x04\x00\x00garbage", "binary"),
        (b"\xff\xfe\xfarecord_id\n", "not UTF-8"),
        (b'record_id,lab\n1,"unterminated\n', "not valid CSV"),
        (b"record_id,lab,conc\n1,a,b\n2,a", "2 values for 3 columns"),
        (b"record_id,lab\n1,a,b,c\n", "4 values for 2 columns"),
        (b"patient,lab\n1,a\n", "no record id column"),
        (b"record_id,record_id\n1,1\n", "names a column twice"),
    ],
)
def test_bad_records_file_raises_one_line_data_error(tmp_path: Path, content: bytes, fragment: str):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path / "broken_records.csv"
    data.write_bytes(content)
    with pytest.raises(DataError, match=fragment) as error:
        read_redcap(data, dictionary)
    assert_one_line_data_error(error, "broken_records.csv")


def test_missing_file_raises_data_error(tmp_path: Path):
    _, dictionary, _ = own_paths("repeating")
    with pytest.raises(DataError, match="not found") as error:
        read_redcap(tmp_path / "absent.csv", dictionary)
    assert_one_line_data_error(error, "absent.csv")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"name,form\nrecord_id,f\n", "no column field_name, form_name, field_type"),
        (b"field_name,form_name,field_type\n", "has no fields"),
        (b"field_name,form_name,field_type\nrecord_id,,text\n", "row 2, column 'form_name'"),
        (b"field_name,form_name,field_type\nrecord_id,f,text\nrecord_id,f,text\n", "twice"),
        (b"field_name,form_name,field_type\nrecord_id,f,text\nform_status,f,text\n", "clashes"),
    ],
)
def test_bad_dictionary_raises_one_line_data_error(tmp_path: Path, content: bytes, fragment: str):
    data, _, _ = own_paths("repeating")
    dictionary = tmp_path / "broken_dictionary.csv"
    dictionary.write_bytes(content)
    with pytest.raises(DataError, match=fragment) as error:
        read_redcap(data, dictionary)
    assert_one_line_data_error(error, "broken_dictionary.csv")


def test_bad_event_mapping_raises_data_error(tmp_path: Path):
    data, dictionary, _ = own_paths("longitudinal")
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("arm_num,event,form\n1,event_1_arm_1,repeated\n")
    with pytest.raises(DataError, match="no column unique_event_name") as error:
        read_redcap(data, dictionary, mapping)
    assert_one_line_data_error(error, "mapping.csv")
    mapping.write_text("arm_num,unique_event_name,form\n1,event_1_arm_1,not_a_form\n")
    with pytest.raises(DataError, match="not_a_form"):
        read_redcap(data, dictionary, mapping)
    classic_data, classic_dictionary, _ = own_paths("repeating")
    mapping.write_text("arm_num,unique_event_name,form\n1,event_1_arm_1,intake\n")
    with pytest.raises(DataError, match="no redcap_event_name column"):
        read_redcap(classic_data, classic_dictionary, mapping)


FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def read_or_data_error(data: Path, dictionary: Path) -> RedcapExport | None:
    """read_redcap's result, or None when it raised DataError (any other exception fails)."""
    try:
        return read_redcap(data, dictionary)
    except DataError as error:
        assert "\n" not in str(error)
        return None


@FUZZ_SETTINGS
@given(payload=st.binary(max_size=400))
def test_random_bytes_as_records_or_dictionary(
    tmp_path_factory: pytest.TempPathFactory, payload: bytes
):
    data, dictionary, _ = own_paths("repeating")
    garbage = tmp_path_factory.mktemp("bytes") / "garbage.csv"
    garbage.write_bytes(payload)
    read_or_data_error(garbage, dictionary)
    read_or_data_error(data, garbage)


@FUZZ_SETTINGS
@given(text=st.text(max_size=400))
def test_random_text_after_a_valid_header(tmp_path_factory: pytest.TempPathFactory, text: str):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path_factory.mktemp("text") / "records.csv"
    data.write_text(VIGNETTE_HEADER + "\n" + text, encoding="utf-8")
    read_or_data_error(data, dictionary)


CELL_VALUES = st.one_of(
    st.sampled_from(
        ["", " ", "0", "1", "2", "-1", "1.5", "1,5", "2021-02-30", "2021-02-03", "12:61", "1e999"]
    ),
    st.sampled_from(["blood_pressure", "laboratory", "image", "intake", "nope", "x"]),
    st.text(max_size=12),
)


@FUZZ_SETTINGS
@given(rows=st.lists(st.lists(CELL_VALUES, min_size=15, max_size=15), max_size=12))
def test_random_rows_are_all_accounted_for(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]]
):
    _, dictionary, _ = own_paths("repeating")
    data = tmp_path_factory.mktemp("rows") / "records.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(VIGNETTE_HEADER.split(","))
        writer.writerows(rows)
    export = read_or_data_error(data, dictionary)
    if export is not None:
        Quarantine.validate(export.quarantine)
        assert_nothing_lost(export, data_rows(data))


FIELD_TYPES = ["text", "notes", "calc", "radio", "dropdown", "checkbox", "yesno", "truefalse"]
FIELD_TYPES += ["slider", "file", "descriptive", "sql", "weird"]
VALIDATIONS = ["", "date_ymd", "date_dmy", "datetime_seconds_mdy", "time", "time_mm_ss", "int"]
VALIDATIONS += ["integer", "number", "number_2dp_comma_decimal", "email", "bogus"]
CHOICES = st.one_of(
    st.sampled_from(["", "1, A | 2, B", "0, Zero|0, Again", "-1, Neg | a.b, Dot", "x | y", "|,|"]),
    st.text(max_size=20),
)


@FUZZ_SETTINGS
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(FIELD_TYPES),
            CHOICES,
            st.sampled_from(VALIDATIONS),
        ),
        min_size=1,
        max_size=6,
    ),
    cells=st.lists(st.lists(CELL_VALUES, min_size=12, max_size=12), max_size=6),
)
def test_random_dictionaries_with_random_rows(
    tmp_path_factory: pytest.TempPathFactory,
    fields: list[tuple[str, str, str, str]],
    cells: list[list[str]],
):
    folder = tmp_path_factory.mktemp("dictionary")
    rows = [("record_id", "a", "text", "", "")]
    rows += [
        (f"field_{number}", form, field_type, choices, validation)
        for number, (form, field_type, choices, validation) in enumerate(fields)
    ]
    dictionary = write_dictionary(folder / "dictionary.csv", rows)
    header = ["record_id", "redcap_repeat_instrument", "redcap_repeat_instance"]
    header += [f"field_{number}" for number in range(len(fields))]
    header += ["field_0___1", "field_1____1", "a_complete", "b_timestamp", "zzz"]
    data = folder / "records.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows((row * 2)[: len(header)] for row in cells)
    export = read_or_data_error(data, dictionary)
    if export is not None:
        Quarantine.validate(export.quarantine)
        assert_nothing_lost(export, data_rows(data))


# --- the writer ---------------------------------------------------------------------------------

WRITER_SEED = 20261128


@pytest.fixture(scope="module")
def small_tables(simulated_design) -> dict[str, pd.DataFrame]:
    return simulate_study(20, WRITER_SEED, simulated_design).tables


def test_redcap_export_has_the_design_shape(small_tables):
    data, dictionary = redcap_export(small_tables)
    assert list(dictionary.columns) == list(DICTIONARY_COLUMNS)
    assert dictionary["field_name"].iloc[0] == Participants.participant_id
    assert list(data.columns[:3]) == [
        Participants.participant_id,
        REPEAT_INSTRUMENT_COLUMN,
        REPEAT_INSTANCE_COLUMN,
    ]
    assert {f"{REDCAP_PAIN_SITES_FIELD}___{code}" for code in (1, 2, 3)} <= set(data.columns)
    assert set(dictionary["form_name"]) == set(REDCAP_INSTRUMENTS)
    assert len(data) == sum(len(small_tables[table]) for table in TABLES)
    baseline = data[data[REPEAT_INSTRUMENT_COLUMN] == ""]
    assert (
        baseline[Participants.participant_id].tolist()
        == small_tables["participants"][Participants.participant_id].tolist()
    )
    assert (baseline[REPEAT_INSTANCE_COLUMN] == "").all()
    first_rows = data.groupby(Participants.participant_id, sort=False).head(1)
    assert (first_rows[REPEAT_INSTRUMENT_COLUMN] == "").all()
    for form in REDCAP_INSTRUMENTS:
        filled = data[f"{form}_complete"] != ""
        assert (data.loc[filled, f"{form}_complete"] == FORM_COMPLETE).all()
    assert data.map(lambda value: isinstance(value, str)).all().all()


def test_redcap_values_round_trip_to_the_clean_tables(small_tables):
    data, _ = redcap_export(small_tables)
    for form, table in REDCAP_INSTRUMENTS.items():
        rows = data[data[REPEAT_INSTRUMENT_COLUMN] == ("" if form == BASELINE_FORM else form)]
        for field in REDCAP_FIELDS:
            if field.form != form or field.column is None:
                continue
            decode = {code: level for code, _, level in field.choices}
            values = rows[field.name].map(decode) if decode else rows[field.name]
            assert values.tolist() == small_tables[table][field.column].tolist()
        if form != BASELINE_FORM:
            instances = rows.groupby(Participants.participant_id).cumcount() + 1
            assert (rows[REPEAT_INSTANCE_COLUMN] == instances.astype(str)).all()


def test_the_reader_reads_the_writers_export_back_whole(small_tables, tmp_path: Path):
    """Writer and reader share the format: every value comes back typed, nothing quarantined."""
    data, dictionary = redcap_export(small_tables)
    write_csv(data, tmp_path / "data.csv")
    write_csv(dictionary, tmp_path / "dictionary.csv")
    export = read_redcap(tmp_path / "data.csv", tmp_path / "dictionary.csv")
    assert export.quarantine.empty and export.unmatched.empty and export.empty_rows == []
    assert export.record_id == Participants.participant_id
    for form, table in REDCAP_INSTRUMENTS.items():
        frame, expected_table = export.instruments[form], small_tables[table]
        assert len(frame) == len(expected_table)
        assert (REPEAT_INSTANCE_COLUMN in frame.columns) == (form != BASELINE_FORM)
        assert (frame[FORM_STATUS_COLUMN] == FORM_STATUS_LEVELS[-1]).all()
        for field in REDCAP_FIELDS:
            if field.form != form or field.column is None:
                continue
            read = frame[field.name].reset_index(drop=True)
            written = expected_table[field.column].replace("", None)
            if field.choices:
                labels = {level: label for _, label, level in field.choices}
                assert read.astype(object).tolist() == written.map(labels).tolist(), field.name
            elif field.validation == DATE_YMD:
                pd.testing.assert_series_equal(
                    read, pd.to_datetime(written, format="%Y-%m-%d"), check_names=False
                )
            elif field.validation in (INTEGER, NUMBER):
                np.testing.assert_array_equal(
                    read.astype(float), pd.to_numeric(written).astype(float), err_msg=field.name
                )
            else:
                assert read.astype(object).where(read.notna(), None).tolist() == (
                    written.tolist()
                ), field.name
    ticked = export.instruments[BASELINE_FORM].filter(like=f"{REDCAP_PAIN_SITES_FIELD}___")
    assert ticked.dtypes.eq("boolean").all() and ticked.shape[1] == 3


def test_choices_strings_round_trip():
    pairs = (("1", "Low back"), ("2", "Hip"), ("nerve_entrapment", "Nerve entrapment"))
    assert parse_choices(format_choices(pairs)) == pairs
