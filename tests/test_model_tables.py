"""The fit-to-report contract: each table's declared columns, checked by writer and reader."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.fit import MODEL_NOTE_COLUMNS, MODEL_STATUS_COLUMNS
from analysis.model_tables import (
    MODEL_TABLES,
    SITE_COLUMN,
    TIMELINE_RANGE_COLUMNS,
    check_model_table,
    check_model_tables,
)
from analysis.report.inputs import model_table_files


def timeline_with_quantiles(quantiles: list[int]) -> pd.DataFrame:
    """A timeline table as the fit stage builds its columns from timeline.quantiles."""
    columns = ["severity", "n_in_profile", "median_conf_low", "median_conf_high"]
    columns += ["observed_median_weeks"]
    columns += [f"predicted_p{q}_weeks" if q != 50 else "predicted_median_weeks" for q in quantiles]
    return pd.DataFrame(columns=columns)


def test_a_tunable_that_renames_a_column_the_report_reads_is_one_line_naming_it():
    check_model_tables({"timeline": timeline_with_quantiles([10, 50, 90])})
    with pytest.raises(DataError) as raised:
        check_model_tables({"timeline": timeline_with_quantiles([25, 50, 75])})
    message = str(raised.value)
    assert "\n" not in message
    assert "'timeline'" in message and "'predicted_p10_weeks'" in message


def test_the_writer_refuses_a_table_no_definition_declares():
    with pytest.raises(DataError, match="'km_curvs' is not declared"):
        check_model_table("km_curvs", ["group"])


def test_the_reader_checks_every_file_before_a_report_renders(tmp_path):
    timeline_with_quantiles([25, 50, 75]).to_csv(tmp_path / "timeline.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "an_analysts_own_table.csv", index=False)
    with pytest.raises(DataError, match="file timeline.csv, column 'predicted_p10_weeks'"):
        model_table_files(tmp_path)


def test_site_and_grouping_tables_are_declared_from_the_whole_study_ones():
    assert MODEL_TABLES["site_km_curves"] == (SITE_COLUMN, *MODEL_TABLES["km_curves"])
    assert MODEL_TABLES["adherence_grouping_cox"] == MODEL_TABLES["cox"]
    assert MODEL_TABLES["site_suppressed_groups"] == (SITE_COLUMN, "group")
    assert set(TIMELINE_RANGE_COLUMNS) <= set(MODEL_TABLES["timeline"])
    assert MODEL_TABLES["model_notes"] == MODEL_NOTE_COLUMNS
    assert MODEL_TABLES["model_status"] == MODEL_STATUS_COLUMNS
