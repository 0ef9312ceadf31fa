"""What a report reads and writes: the stage outputs (derived frames, cleaning report, the fit
stage's tables), one site's share of them, and `ReportData`, which writes the numbers behind
every table and figure as checked CSVs beside the report (through io's one atomic writer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from analysis.errors import ParameterError, ReportError
from analysis.io import (
    DERIVED_FRAMES,
    read_stage_frames,
    write_published_csv,
)
from analysis.model_tables import (
    MODEL_TABLES,
    SITE_COLUMN,
    SITE_TABLE_PREFIX,
    SUPPRESSED_GROUPS,
    check_model_table,
)
from analysis.privacy import (
    site_groups_left_out,
    site_plan,
    sites_with_report,
)
from analysis.schema import (
    Recovery,
    WeeklyIntervals,
    WeeklyTrajectories,
)
from analysis.tables import (
    csv_safe,
    find_identifiers_or_dates,
)

# Tables the fit stage writes for the timeline notebook (data/models/<name>.csv).
TIMELINE_TABLES = (
    "timeline",
    "timeline_model_comparison",
    "timeline_quoted_ranges",
    "calibration_summary",
    "calibration_table",
)


def study_sites(processed: Path) -> list[str]:
    """The sites in the analysis frame, sorted."""
    recovery = pd.read_parquet(Path(processed) / "recovery.parquet", columns=[Recovery.site])
    return sorted(recovery[Recovery.site].dropna().astype(str).unique())


def sites_with_a_report(processed: Path, group: str, min_cell_size: int) -> list[str]:
    """The sites that get a report under the site plan (`privacy.sites_with_report`)."""
    recovery = pd.read_parquet(Path(processed) / "recovery.parquet", columns=[Recovery.site, group])
    counts, plan = site_plan(recovery, Recovery.site, group, min_cell_size)
    return sites_with_report(plan, counts)


def model_table_files(models: Path) -> list[Path]:
    """The fit stage's tables, each with the columns its definition declares (one-line
    DataError otherwise), or a ReportError saying to run the fit stage: a report needs them."""
    files = sorted(Path(models).glob("*.csv"))
    if not files:
        raise ReportError(f"{models} holds no model tables: run `ga-rehab fit` first")
    for path in files:
        if path.stem in MODEL_TABLES:
            check_model_table(path.stem, pd.read_csv(path, nrows=0).columns)
    return files


def read_model_table(path: Path) -> pd.DataFrame:
    """One fit table; a site name stays the text it is ("NA", "1" and "" are sites too)."""
    if path.stem.startswith(SITE_TABLE_PREFIX):
        return pd.read_csv(path, converters={SITE_COLUMN: str})
    return pd.read_csv(path)


@dataclass
class ReportInputs:
    """Everything a report reads: analysis frames, the cleaning report and the fit tables."""

    recovery: pd.DataFrame
    weekly_intervals: pd.DataFrame
    weekly_trajectories: pd.DataFrame
    cleaning_report: dict
    models: dict[str, pd.DataFrame] = field(default_factory=dict)
    site: str | None = None
    # For a site: the groups its report leaves out under the site plan (their people are not
    # in `recovery` or the weekly frames); None for the whole study.
    left_out: list | None = None

    @property
    def identifiers(self) -> list[str]:
        """Participant ids, so report tables can be checked never to show one."""
        return self.recovery[Recovery.participant_id].astype(str).tolist()


def read_report_inputs(
    processed_dir: Path | str,
    models_dir: Path | str,
    cleaning_report: Path | str,
) -> ReportInputs:
    """The derive stage's frames, the cleaning report and every fit table (data/models/*.csv)."""
    processed, models = Path(processed_dir), Path(models_dir)
    frames = read_stage_frames(processed, DERIVED_FRAMES, "derive")
    report_path = Path(cleaning_report)
    if not report_path.is_file():
        raise ReportError(f"{report_path} not found: run `ga-rehab clean` first")
    tables = {path.stem: read_model_table(path) for path in model_table_files(models)}
    return ReportInputs(
        recovery=frames["recovery"],
        weekly_intervals=frames["weekly_intervals"],
        weekly_trajectories=frames["weekly_trajectories"],
        cleaning_report=json.loads(report_path.read_text()),
        models=tables,
    )


def filter_site(
    inputs: ReportInputs, site: str | None, group: str, min_cell_size: int
) -> ReportInputs:
    """The inputs restricted to one site's participants in the groups its report shows (None:
    unchanged).

    The groups a site report leaves out come from the site plan of the whole study
    (`privacy.plan_site_groups`, the fit stage's too): their people are left out of every
    count of the report, its totals included, so no published number has them in it. For a
    site the fit tables are its site_comparison tables under their whole-study names
    (`site_tables`); the whole-study models (primary, Fine-Gray, mixed...) are not among them.
    """
    if site is None:
        return inputs
    at_site = inputs.recovery[Recovery.site] == site
    if not at_site.any():
        known = ", ".join(sorted(inputs.recovery[Recovery.site].dropna().unique()))
        raise ParameterError(f"site {site!r} is not in the study (sites: {known})")
    counts, plan = site_plan(inputs.recovery, Recovery.site, group, min_cell_size)
    if site not in sites_with_report(plan, counts):
        raise ReportError(
            f"site {site!r} has no report: fewer than {min_cell_size} people, or no group that "
            "can be shown without giving a small count back"
        )
    left_out = site_groups_left_out(plan, counts, site)
    shown_group = inputs.recovery[group].notna() & ~inputs.recovery[group].isin(left_out)
    recovery = inputs.recovery[at_site & shown_group]
    ids = set(recovery[Recovery.participant_id])
    return replace(
        inputs,
        recovery=recovery,
        weekly_intervals=inputs.weekly_intervals[
            inputs.weekly_intervals[WeeklyIntervals.participant_id].isin(ids)
        ],
        weekly_trajectories=inputs.weekly_trajectories[
            inputs.weekly_trajectories[WeeklyTrajectories.participant_id].isin(ids)
        ],
        models=site_tables(inputs.models, site),
        site=site,
        left_out=left_out,
    )


def site_tables(models: Mapping[str, pd.DataFrame], site: str) -> dict[str, pd.DataFrame]:
    """One site's rows of the fit stage's site_<name> tables, as <name> without the site column.

    A table in which the site has no row (a model not fitted for it) is left out, as the fit
    stage leaves out the table of a model that failed.
    """
    chosen = {}
    for name, table in models.items():
        if name.startswith(SITE_TABLE_PREFIX):
            rows = table[table[SITE_COLUMN].astype(str) == str(site)]
            # An empty list of left-out groups is an answer too (the report checks it).
            if not rows.empty or name == SITE_TABLE_PREFIX + SUPPRESSED_GROUPS:
                chosen[name.removeprefix(SITE_TABLE_PREFIX)] = rows.drop(
                    columns=SITE_COLUMN
                ).reset_index(drop=True)
    if not chosen:
        raise ReportError(
            f"the fit stage wrote no site_comparison tables for site {site!r}: run `ga-rehab fit` "
            "with site_comparison in params.yaml's fit.families (a site with fewer than "
            "report.min_cell_size people has none)"
        )
    return chosen


def timeline_tables(models: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The fit stage's timeline and calibration tables, or a ReportError naming those missing.

    The report never computes them itself (bootstrap and cross-validation are the fit stage's
    `timeline` family): a models folder without them was fitted without that family.
    """
    missing = [name for name in TIMELINE_TABLES if name not in models]
    if missing:
        raise ReportError(
            f"the fit stage wrote no {', '.join(f'{name}.csv' for name in missing)}: run "
            "`ga-rehab fit` with the timeline family listed in params.yaml's fit.families"
        )
    return {name: models[name] for name in TIMELINE_TABLES}


class ReportData:
    """Writes the numbers behind each table and figure as <folder>/<name>.csv, checked first.

    A table that shows a participant id, a calendar date or an identifier column is refused
    (ReportError), so nothing identifying can leave through a CSV or the HTML it feeds.
    """

    def __init__(self, folder: Path | str, identifiers: Iterable[str] = ()) -> None:
        self.folder = Path(folder)
        self.identifiers = list(identifiers)
        self.written: list[str] = []

    def save(self, name: str, table: pd.DataFrame) -> pd.DataFrame:
        """Check and write `table` as <name>.csv; returns it for display."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ReportError(f"table name {name!r}: use letters, digits, - and _ only")
        if name in self.written:
            raise ReportError(f"table {name!r} saved twice in one report")
        findings = find_identifiers_or_dates(table, self.identifiers)
        if findings:
            raise ReportError(f"table {name!r} would show {'; '.join(findings[:3])}")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_published_csv(csv_safe(table), self.folder / f"{name}.csv")
        self.written.append(name)
        return table

    def listing(self) -> pd.DataFrame:
        """The CSV files written so far (for the report's last section)."""
        return pd.DataFrame({"file": [f"{self.folder.name}/{name}.csv" for name in self.written]})
