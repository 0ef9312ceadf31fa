"""The tidy contract: every result type's `.tidy()` has the fixed columns (as sksurv's
all_survival_estimators() conformance tests), and the one warning-to-note collector."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.errors import ConvergenceError, DataError, ModelWarning
from analysis.mixed import fit_mixed
from analysis.results import (
    FAILED,
    HAZARD_RATIO_COLUMNS,
    TIDY_COLUMNS,
    ModelResult,
    run_collecting_notes,
)
from analysis.survival import (
    cumulative_incidence,
    fit_aft,
    fit_cox,
    fit_cox_time_varying,
    fit_fine_gray,
    fit_interval_cox,
    gray_test,
    kaplan_meier,
    logrank_test,
    median_difference,
    rmst_difference,
    turnbull,
)
from analysis.survival.competing import GRAY_TEST_COLUMNS

VISIT_DAYS = 10


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    """Eighty people: a number, a three-level factor, times seen at visits every 10 days."""
    rng = np.random.default_rng(20261130)
    n = 80
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "f": rng.choice(["a", "b", "c"], n),
        }
    )
    true_time = rng.exponential(40.0 * np.exp(-0.5 * frame["x"]))
    censor_time = rng.uniform(20, 120, n)
    frame["time"] = np.minimum(true_time, censor_time).round(1) + 0.1
    frame["event"] = (true_time <= censor_time).astype(int)
    frame["event_type"] = np.where(
        frame["event"] == 1, "recovered", np.where(rng.random(n) < 0.5, "withdrawn", "censored")
    )
    frame["event_type"] = frame["event_type"].replace({"censored": None})
    seen = np.ceil(frame["time"] / VISIT_DAYS) * VISIT_DAYS
    frame["lower"] = seen - VISIT_DAYS
    frame["upper"] = np.where(frame["event"] == 1, seen, np.nan)
    return frame


@pytest.fixture(scope="module")
def weekly(people) -> pd.DataFrame:
    """Start/stop rows of 10 days per person up to their last visit, the bounds repeated.

    Someone censored before the first visit has no rows (nothing is known of them).
    """
    rows = []
    for person in people.itertuples():
        end = person.upper if np.isfinite(person.upper) else person.lower
        for start in np.arange(0, end, VISIT_DAYS):
            rows.append(
                {
                    "id": person.id,
                    "start": start,
                    "stop": start + VISIT_DAYS,
                    "x": person.x,
                    "f": person.f,
                    "lower": person.lower,
                    "upper": person.upper,
                    "event": int(person.event == 1 and start + VISIT_DAYS >= end),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results(people: pd.DataFrame, weekly: pd.DataFrame) -> dict[str, ModelResult]:
    """One fit of every public model function on the small frames.

    Small frames: singular fits and dropped rows are noted; the columns must still be there.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelWarning)
        return _fit_every_model(people, weekly)


def _fit_every_model(people: pd.DataFrame, weekly: pd.DataFrame) -> dict[str, ModelResult]:
    rng = np.random.default_rng(7)
    clusters = pd.DataFrame({"g": np.repeat(np.arange(20), 5), "x": rng.normal(size=100)}).assign(
        y=lambda d: d["x"] + np.repeat(rng.normal(size=20), 5) + rng.normal(size=100)
    )
    return {
        "cox": fit_cox(people, "time", "event", ["x", "f"]),
        "cox_time_varying": fit_cox_time_varying(
            weekly, "id", "start", "stop", "event", ["x", "f"]
        ),
        "aft": fit_aft(people, ["x", "f"], lower="lower", upper="upper"),
        "fine_gray": fit_fine_gray(people, "time", "event_type", "recovered", ["x", "f"]),
        "interval_cox": fit_interval_cox(
            weekly, "id", "start", "stop", "lower", "upper", ["x", "f"], cuts=[0, 30]
        ),
        "mixed": fit_mixed(clusters, "y ~ x", "g"),
        "turnbull": turnbull(people, "lower", "upper", group="f"),
        "cumulative_incidence": cumulative_incidence(people, "time", "event_type", group="f"),
        "rmst": rmst_difference(people, "time", "event", "f", 60.0),
        "median_difference": median_difference(people, "time", "event", "f", 50, seed=1),
        "kaplan_meier": kaplan_meier(people, "time", "event", group="f"),
        "logrank": logrank_test(people, "time", "event", "f"),
        "gray_test": gray_test(people, "time", "event_type", "f"),
    }


# Result types whose table is not a table of estimates, each with the columns it promises.
OTHER_CONTRACTS = {
    "KaplanMeierResult": ("group", "n", "events", "median", "conf_low", "conf_high"),
    "LogrankResult": ("term", "statistic", "dof", "p_value"),
    "GrayTestResult": GRAY_TEST_COLUMNS,
    # The timeline's and its calibration's tables are per profile / per metric; tests/
    # test_timeline.py checks them on a cohort large enough to fit them.
    "TimelineResult": None,
    "CalibrationResult": None,
}
HAZARD_RATIO_TYPES = {"CoxResult", "FineGrayResult", "IntervalCoxResult"}


def all_result_types() -> set[str]:
    """Every ModelResult subclass in the package (its modules imported first)."""
    for module in pkgutil.walk_packages(analysis.__path__, "analysis."):
        if module.name != "analysis.report":
            importlib.import_module(module.name)
    found, pending = set(), [ModelResult]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.startswith("analysis."):
                found.add(subclass.__name__)
            pending.append(subclass)
    return found


def test_every_result_type_is_checked_here(results):
    """A new model cannot forget the contract: its type must appear in one of the checks."""
    fitted = {type(result).__name__ for result in results.values()}
    assert all_result_types() <= fitted | set(OTHER_CONTRACTS)


def test_every_tidy_table_has_the_fixed_columns(results):
    for name, result in results.items():
        kind = type(result).__name__
        table = result.tidy()
        if kind in OTHER_CONTRACTS:
            expected = OTHER_CONTRACTS[kind]
        elif kind in HAZARD_RATIO_TYPES:
            expected = (*TIDY_COLUMNS, *HAZARD_RATIO_COLUMNS)
        else:
            expected = TIDY_COLUMNS
        missing = [column for column in expected if column not in table.columns]
        assert not missing, f"{name} ({kind}).tidy() lacks {missing}"
        assert len(table) > 0, name
        pd.testing.assert_frame_equal(result.summary, table)


def test_the_collector_turns_warnings_into_notes_and_toolkit_errors_into_a_failure():
    def fit():
        warnings.warn("two rows were left out", ModelWarning, stacklevel=1)
        warnings.warn("overflow encountered", RuntimeWarning, stacklevel=1)
        return "fitted"

    result, notes = run_collecting_notes("cox", fit)
    assert result == "fitted"
    assert notes[0] == ("cox", "ModelWarning", "two rows were left out")
    kind, sentence = notes[1][1:]
    assert kind == "RuntimeWarning"
    assert sentence.startswith("While fitting, a library raised a RuntimeWarning")

    def failing():
        warnings.warn("a caveat", ModelWarning, stacklevel=1)
        raise ConvergenceError("no optimum")

    result, notes = run_collecting_notes("aft", failing)
    assert result is None
    assert notes == [("aft", FAILED, "no optimum"), ("aft", "ModelWarning", "a caveat")]
    with pytest.raises(DataError):
        run_collecting_notes("aft", lambda: (_ for _ in ()).throw(DataError("bad")), failures=())
