"""Published numbers are rounded once, so last-digit CPU/BLAS noise never changes a file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.conventions import CONVENTIONS
from analysis.io import write_published_csv, write_published_json
from analysis.rounding import round_significant, rounded_content, rounded_frame


def test_noise_in_the_last_digits_disappears():
    # The values that once differed between two machines in reports/metrics.json.
    assert round_significant(9.380381413152964, 6) == round_significant(9.38038141315296, 6)
    assert round_significant(9.380381413152964, 6) == 9.38038


def test_integers_and_non_finite_values_are_kept_exactly():
    for value in (0.0, 3.0, 1234567.0, math.inf, -math.inf):
        assert round_significant(value, 6) == value
    assert math.isnan(round_significant(math.nan, 6))


def test_frames_round_estimates_and_p_values_to_their_digits():
    frame = pd.DataFrame(
        {
            "term": ["a", "b"],
            "estimate": [0.123456789, -2.718281828],
            "p_value": [0.0123456, 1.23456e-12],
            "n": [10, 20],
            "logrank_p_value": [0.04567, np.nan],
        }
    )
    rounded = rounded_frame(frame)
    assert CONVENTIONS.published_significant_digits == 6
    assert rounded["estimate"].tolist() == [0.123457, -2.71828]
    assert rounded["p_value"].tolist() == [0.0123, 1.23e-12]
    assert rounded["logrank_p_value"].iloc[0] == 0.0457 and pd.isna(rounded["logrank_p_value"][1])
    assert rounded["n"].tolist() == [10, 20] and rounded["term"].tolist() == ["a", "b"]
    assert frame["estimate"].iloc[0] == 0.123456789, "the caller's frame is not changed"


def test_nested_metrics_round_by_key():
    content = {"hr": {"x": 1.23456789}, "p_value": 0.000123456, "list": [1.0000001, "a"], "k": 3}
    assert rounded_content(content) == {
        "hr": {"x": 1.23457},
        "p_value": 0.000123,
        "list": [1.0, "a"],
        "k": 3,
    }


def test_published_writers_round_what_they_write(tmp_path):
    write_published_csv(pd.DataFrame({"estimate": [1 / 3]}), tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "estimate\n0.333333\n"
    write_published_json({"value": 2 / 3}, tmp_path / "m.json")
    assert '"value": 0.666667' in (tmp_path / "m.json").read_text()
