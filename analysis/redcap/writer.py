"""Write the study's canonical tables as a REDCap export (records CSV + data dictionary).

The inverse of analysis.redcap.reader for this study's REDCap design: a non-repeating
"baseline" instrument (participants) and repeating instruments for the diary, exercise
sessions and clinic visits, as a REDCap project with repeating instruments exports them
(flat, raw codes, API dictionary headers). docs/example-redcap-mapping.yaml maps the export
back onto the canonical tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.redcap.format import (
    CHECKBOX,
    CHECKBOX_TICKED,
    CHECKBOX_UNTICKED,
    DATE_YMD,
    DICTIONARY_COLUMNS,
    DROPDOWN,
    FIXED_CHOICES,
    FORM_COMPLETE,
    INTEGER,
    NUMBER,
    RADIO,
    REPEAT_INSTANCE_COLUMN,
    REPEAT_INSTRUMENT_COLUMN,
    TEXT,
    YESNO,
    checkbox_column,
    form_status_column,
    format_choices,
)
from analysis.schema import (
    EXERCISE_PHASE,
    PAIN_SITES,
    SEVERITY_LEVELS,
    SEX_LEVELS,
    UNDERLYING_CONDITIONS,
    Assessments,
    Diary,
    Participants,
    Sessions,
)

REDCAP_RECORD_ID = Participants.participant_id
BASELINE_FORM, DIARY_FORM, SESSION_FORM, VISIT_FORM = (
    "baseline",
    "diary",
    "exercise_session",
    "clinic_visit",
)
# Instrument name -> the canonical table it holds; the baseline is the one non-repeating form.
REDCAP_INSTRUMENTS = {
    BASELINE_FORM: "participants",
    DIARY_FORM: "diary",
    SESSION_FORM: "sessions",
    VISIT_FORM: "assessments",
}
REDCAP_PAIN_SITES_FIELD = "pain_sites_at_baseline"
REDCAP_PAIN_SITE_LABELS = ("Low back", "Hip", "Knee")
# A pain site is ticked at baseline when the enrolment-day diary scores it at least this.
PAIN_SITE_TICKED_FROM = 1
EXERCISE_LABELS = tuple(name.replace("_", " ").capitalize() for name in EXERCISE_PHASE)


@dataclass(frozen=True)
class RedcapField:
    """One data-dictionary row; `column` is the canonical column the field holds."""

    name: str
    form: str
    field_type: str
    label: str
    column: str | None = None
    choices: tuple[tuple[str, str, str], ...] = ()
    validation: str = ""
    minimum: str = ""
    maximum: str = ""


def coded_choices(
    levels: tuple[str, ...], labels: tuple[str, ...]
) -> tuple[tuple[str, str, str], ...]:
    """(code, label, canonical level) for a radio or dropdown, coded 1.. in level order."""
    return tuple(
        (str(code), label, level)
        for code, (label, level) in enumerate(zip(labels, levels, strict=True), start=1)
    )


# REDCap's fixed yes/no codes, with the canonical flag each stands for.
YES_NO_CHOICES = tuple(
    (code, label, level)
    for (code, label), level in zip(FIXED_CHOICES[YESNO], ("true", "false"), strict=True)
)

REDCAP_FIELDS = (
    RedcapField(
        REDCAP_RECORD_ID, BASELINE_FORM, TEXT, "Participant ID", Participants.participant_id
    ),
    RedcapField("site", BASELINE_FORM, TEXT, "Site", Participants.site),
    RedcapField(
        "enrolled_on",
        BASELINE_FORM,
        TEXT,
        "Date enrolled",
        Participants.enrolled_on,
        validation=DATE_YMD,
    ),
    RedcapField(
        "age_years",
        BASELINE_FORM,
        TEXT,
        "Age (years)",
        Participants.age_years,
        validation=INTEGER,
        minimum="16",
        maximum="100",
    ),
    RedcapField(
        "sex",
        BASELINE_FORM,
        RADIO,
        "Sex",
        Participants.sex,
        choices=coded_choices(SEX_LEVELS, ("Female", "Male")),
    ),
    RedcapField(
        "bmi",
        BASELINE_FORM,
        TEXT,
        "Body mass index (kg/m2)",
        Participants.bmi,
        validation=NUMBER,
        minimum="12",
        maximum="70",
    ),
    RedcapField(
        "severity",
        BASELINE_FORM,
        RADIO,
        "Severity",
        Participants.severity,
        choices=coded_choices(SEVERITY_LEVELS, ("Mild", "Moderate", "Severe")),
    ),
    RedcapField(
        "symptom_months",
        BASELINE_FORM,
        TEXT,
        "Symptom duration (months)",
        Participants.symptom_months,
        validation=NUMBER,
        minimum="0",
    ),
    RedcapField(
        "underlying_condition",
        BASELINE_FORM,
        DROPDOWN,
        "Underlying condition",
        Participants.underlying_condition,
        choices=coded_choices(UNDERLYING_CONDITIONS, ("None", "Disc", "Nerve entrapment", "Other")),
    ),
    RedcapField(
        "baseline_sitting_hours",
        BASELINE_FORM,
        TEXT,
        "Daily sitting at baseline (hours)",
        Participants.baseline_sitting_hours,
        validation=NUMBER,
        minimum="0",
        maximum="24",
    ),
    RedcapField(
        "withdrawn_on",
        BASELINE_FORM,
        TEXT,
        "Date withdrawn",
        Participants.withdrawn_on,
        validation=DATE_YMD,
    ),
    RedcapField(
        "withdrawal_reason",
        BASELINE_FORM,
        TEXT,
        "Reason for withdrawal",
        Participants.withdrawal_reason,
    ),
    RedcapField(
        REDCAP_PAIN_SITES_FIELD,
        BASELINE_FORM,
        CHECKBOX,
        "Secondary pain sites at baseline",
        choices=tuple(
            (str(code), label, site)
            for code, (label, site) in enumerate(
                zip(REDCAP_PAIN_SITE_LABELS, PAIN_SITES, strict=True), start=1
            )
        ),
    ),
    RedcapField("diary_date", DIARY_FORM, TEXT, "Diary date", Diary.date, validation=DATE_YMD),
    RedcapField(
        "sitting_hours",
        DIARY_FORM,
        TEXT,
        "Sitting (hours)",
        Diary.sitting_hours,
        validation=NUMBER,
        minimum="0",
        maximum="24",
    ),
    RedcapField(
        "sitting_breaks",
        DIARY_FORM,
        TEXT,
        "Sitting breaks",
        Diary.sitting_breaks,
        validation=INTEGER,
        minimum="0",
    ),
    *(
        RedcapField(
            site,
            DIARY_FORM,
            TEXT,
            f"{label} pain (0-10)",
            site,
            validation=INTEGER,
            minimum="0",
            maximum="10",
        )
        for site, label in zip(PAIN_SITES, REDCAP_PAIN_SITE_LABELS, strict=True)
    ),
    RedcapField(
        "session_done",
        DIARY_FORM,
        YESNO,
        "Exercise session done",
        Diary.session_done,
        choices=YES_NO_CHOICES,
    ),
    RedcapField(
        "session_date",
        SESSION_FORM,
        TEXT,
        "Session date",
        Sessions.date,
        validation=DATE_YMD,
    ),
    RedcapField(
        "phase",
        SESSION_FORM,
        TEXT,
        "Programme phase",
        Sessions.phase,
        validation=INTEGER,
        minimum="1",
        maximum="3",
    ),
    RedcapField(
        "exercise",
        SESSION_FORM,
        DROPDOWN,
        "Exercise",
        Sessions.exercise,
        choices=coded_choices(tuple(EXERCISE_PHASE), EXERCISE_LABELS),
    ),
    RedcapField(
        "sets",
        SESSION_FORM,
        TEXT,
        "Sets",
        Sessions.sets,
        validation=INTEGER,
        minimum="1",
        maximum="20",
    ),
    RedcapField(
        "reps",
        SESSION_FORM,
        TEXT,
        "Repetitions",
        Sessions.reps,
        validation=INTEGER,
        minimum="1",
        maximum="200",
    ),
    RedcapField(
        "load_kg",
        SESSION_FORM,
        TEXT,
        "Load (kg, blank = bodyweight)",
        Sessions.load_kg,
        validation=NUMBER,
        minimum="0",
        maximum="400",
    ),
    RedcapField(
        "form_quality",
        SESSION_FORM,
        TEXT,
        "Form quality (1-5)",
        Sessions.form_quality,
        validation=INTEGER,
        minimum="1",
        maximum="5",
    ),
    RedcapField(
        "visit_date",
        VISIT_FORM,
        TEXT,
        "Visit date",
        Assessments.date,
        validation=DATE_YMD,
    ),
    RedcapField(
        "activation_score",
        VISIT_FORM,
        TEXT,
        "Gluteal activation score (0-10)",
        Assessments.activation_score,
        validation=NUMBER,
        minimum="0",
        maximum="10",
    ),
    RedcapField(
        "hip_abduction_n",
        VISIT_FORM,
        TEXT,
        "Hip abduction strength (N)",
        Assessments.hip_abduction_n,
        validation=NUMBER,
        minimum="0",
        maximum="1000",
    ),
    RedcapField(
        "single_leg_balance_s",
        VISIT_FORM,
        TEXT,
        "Single-leg balance (s)",
        Assessments.single_leg_balance_s,
        validation=NUMBER,
        minimum="0",
        maximum="300",
    ),
    RedcapField(
        "trendelenburg_positive",
        VISIT_FORM,
        YESNO,
        "Trendelenburg sign positive",
        Assessments.trendelenburg_positive,
        choices=YES_NO_CHOICES,
    ),
    RedcapField(
        "phase_assigned",
        VISIT_FORM,
        TEXT,
        "Phase assigned",
        Assessments.phase_assigned,
        validation=INTEGER,
        minimum="1",
        maximum="3",
    ),
    RedcapField(
        "clinician_recovered",
        VISIT_FORM,
        YESNO,
        "Clinician judges recovered",
        Assessments.clinician_recovered,
        choices=YES_NO_CHOICES,
    ),
)


def redcap_dictionary() -> pd.DataFrame:
    """The REDCap data dictionary of the study design (API header style)."""
    rows = [
        {
            "field_name": field.name,
            "form_name": field.form,
            "field_type": field.field_type,
            "field_label": field.label,
            "select_choices_or_calculations": ""
            if field.field_type in FIXED_CHOICES
            else format_choices((code, label) for code, label, _ in field.choices),
            "text_validation_type_or_show_slider_number": field.validation,
            "text_validation_min": field.minimum,
            "text_validation_max": field.maximum,
        }
        for field in REDCAP_FIELDS
    ]
    return pd.DataFrame(rows, columns=list(DICTIONARY_COLUMNS)).fillna("")


def redcap_columns() -> list[str]:
    """Export columns: record id, repeat columns, then each form's fields and its form status."""
    columns = [REDCAP_RECORD_ID, REPEAT_INSTRUMENT_COLUMN, REPEAT_INSTANCE_COLUMN]
    for form in REDCAP_INSTRUMENTS:
        for field in REDCAP_FIELDS:
            if field.form != form or field.name == REDCAP_RECORD_ID:
                continue
            if field.field_type == CHECKBOX:
                columns += [checkbox_column(field.name, code) for code, _, _ in field.choices]
            else:
                columns.append(field.name)
        columns.append(form_status_column(form))
    return columns


def _pain_sites_at_baseline(tables: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """Checkbox columns: a site is ticked when the enrolment-day diary scores its pain >= 1."""
    participants = tables["participants"]
    enrolment = (
        tables["diary"]
        .merge(
            participants[[Participants.participant_id, Participants.enrolled_on]],
            left_on=[Diary.participant_id, Diary.date],
            right_on=[Participants.participant_id, Participants.enrolled_on],
        )
        .set_index(Diary.participant_id)
    )
    pain = enrolment.reindex(participants[Participants.participant_id])
    checkbox = next(field for field in REDCAP_FIELDS if field.field_type == CHECKBOX)
    return {
        checkbox_column(checkbox.name, code): np.where(
            pd.to_numeric(pain[site]).fillna(0) >= PAIN_SITE_TICKED_FROM,
            CHECKBOX_TICKED,
            CHECKBOX_UNTICKED,
        )
        for code, _, site in checkbox.choices
    }


def redcap_export(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical string tables as a REDCap flat export with repeating instruments, and its
    dictionary.

    The values must be canonical (levels as the schema spells them): a value outside a field's
    choices would be exported blank.
    """
    participant_order = {
        participant: index
        for index, participant in enumerate(tables["participants"][Participants.participant_id])
    }
    blocks = []
    for form_index, (form, table) in enumerate(REDCAP_INSTRUMENTS.items()):
        frame = tables[table]
        block = {REDCAP_RECORD_ID: frame[Participants.participant_id].to_numpy()}
        for field in REDCAP_FIELDS:
            if field.form != form or field.column is None or field.name == REDCAP_RECORD_ID:
                continue
            values = frame[field.column]
            if field.choices:
                values = values.map({level: code for code, _, level in field.choices})
            block[field.name] = values.to_numpy(dtype=object)
        if form == BASELINE_FORM:
            block.update(_pain_sites_at_baseline(tables))
            block[REPEAT_INSTRUMENT_COLUMN] = ""
            block[REPEAT_INSTANCE_COLUMN] = ""
        else:
            instance = frame.groupby(Participants.participant_id, sort=False).cumcount() + 1
            block[REPEAT_INSTRUMENT_COLUMN] = form
            block[REPEAT_INSTANCE_COLUMN] = instance.astype(str).to_numpy(dtype=object)
        block[form_status_column(form)] = FORM_COMPLETE
        block = pd.DataFrame(block)
        block["_participant"] = block[REDCAP_RECORD_ID].map(participant_order)
        block["_form"] = form_index
        blocks.append(block)
    data = pd.concat(blocks, ignore_index=True)
    data = data.sort_values(["_participant", "_form"], kind="stable").reset_index(drop=True)
    data = data[redcap_columns()].fillna("").astype(object)
    return data, redcap_dictionary()
