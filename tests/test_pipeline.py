"""Simulate -> clean -> derive on studies with known truth: defects, true recovery days."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.schema import RECORD_KEYS, Quarantine, Recovery
from analysis.validation import simulate_clean_derive

SEED = 7
PARTICIPANTS = 400
MESS_RATE = 0.05


@pytest.fixture(scope="module")
def truth_pipeline(params):
    return simulate_clean_derive(PARTICIPANTS, SEED, params)


@pytest.fixture(scope="module")
def clean_truth(truth_pipeline):
    return truth_pipeline.cleaned


@pytest.fixture(scope="module")
def messy(params):
    pipeline = simulate_clean_derive(PARTICIPANTS, SEED, params, mess_rate=MESS_RATE)
    return pipeline.simulated, pipeline.cleaned


def test_a_clean_study_passes_cleaning_untouched(clean_truth):
    assert clean_truth.quarantine.empty
    for table, counts in clean_truth.report["tables"].items():
        assert counts["kept"] == counts["input_rows"], table
        assert counts["fixes_by_rule"] == {}, table


def test_every_row_is_accounted_for(messy):
    _, cleaned = messy
    for counts in cleaned.report["tables"].values():
        assert counts["input_rows"] == (
            counts["kept"] + counts["quarantined"] + counts["merged_duplicates"]
        )


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Rounded so unit conversions (lb -> kg -> lb, minutes -> hours) compare equal."""
    return frame.round(6).astype(object).where(frame.notna(), None)


def test_injected_defects_are_fixed_or_quarantined(messy, clean_truth):
    study, cleaned = messy
    defects = study.injected_defects
    quarantined = set(
        zip(
            cleaned.quarantine[Quarantine.table],
            cleaned.quarantine[Quarantine.source_row],
            strict=True,
        )
    )
    handled = []
    for defect in defects.itertuples():
        if (defect.table, int(defect.source_row)) in quarantined:
            handled.append(True)
            continue
        key = list(RECORD_KEYS[defect.table])
        truth_row = clean_truth.tables[defect.table].iloc[[int(defect.truth_row)]]
        kept = cleaned.tables[defect.table].merge(truth_row[key], on=key)
        if len(kept) != 1:
            handled.append(False)
            continue
        expected = _normalised(truth_row.reset_index(drop=True))
        actual = _normalised(kept)
        if defect.kind == "missing_value":
            expected[defect.column] = None
        handled.append(expected.equals(actual))
    share = np.mean(handled)
    missed = defects[~np.array(handled)]
    assert share >= 0.99, missed.groupby("kind").size().to_dict()


def test_clean_rows_are_almost_never_quarantined(messy):
    study, cleaned = messy
    defective = set(
        zip(study.injected_defects["table"], study.injected_defects["source_row"], strict=True)
    )
    rows = cleaned.quarantine[cleaned.quarantine[Quarantine.scope] == "row"]
    clean_rows_lost = sum(
        (t, r) not in defective
        for t, r in zip(rows[Quarantine.table], rows[Quarantine.source_row], strict=True)
    )
    total_rows = sum(len(frame) for frame in study.tables.values())
    assert clean_rows_lost / total_rows <= 0.001


@pytest.fixture(scope="module")
def derived_truth(truth_pipeline):
    pipeline = truth_pipeline
    truth = pd.DataFrame(pipeline.simulated.truth["participants"]).set_index("participant_id")
    truth = truth.rename(columns={"overall_adherence": "true_overall_adherence"})
    return pipeline.derived, truth


def test_derived_recovery_brackets_the_true_day(derived_truth):
    frames, truth = derived_truth
    recovery = frames.recovery.set_index(Recovery.participant_id).join(truth)
    recovered = recovery[recovery[Recovery.recovered]]
    inside = (recovered["true_recovery_day"] > recovered[Recovery.interval_lower_days]) & (
        recovered["true_recovery_day"] <= recovered[Recovery.interval_upper_days]
    )
    assert inside.mean() >= 0.99
    # Nobody is declared recovered without a true recovery.
    assert recovered["true_recovery_day"].notna().all()
    never = recovery[recovery["true_recovery_day"].isna()]
    assert not never[Recovery.recovered].any()


def test_derived_censoring_and_adherence_match_the_truth(derived_truth):
    frames, truth = derived_truth
    recovery = frames.recovery.set_index(Recovery.participant_id).join(truth)
    withdrawn = recovery[Recovery.censor_reason] == "withdrawn"
    assert (withdrawn == (recovery["withdrawn_day"].notna() & ~recovery[Recovery.recovered])).all()
    # The derived share caps each week at 1 (a partial last week can hold all its scheduled
    # sessions); the simulator's overall share does not.
    np.testing.assert_allclose(
        recovery[Recovery.overall_adherence],
        recovery["true_overall_adherence"].clip(upper=1.0),
        atol=0.02,
    )
