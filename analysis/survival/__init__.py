"""Survival models over any tidy DataFrame, column names in, tidy results out."""

from analysis.survival.aft import AftResult, fit_aft
from analysis.survival.competing import (
    CumulativeIncidenceResult,
    FineGrayResult,
    GrayTestResult,
    cumulative_incidence,
    fit_fine_gray,
    gray_test,
)
from analysis.survival.cox import CoxResult, concordance_index, fit_cox, fit_cox_time_varying
from analysis.survival.icph import IntervalCoxResult, fit_interval_cox
from analysis.survival.interval import TurnbullResult, turnbull
from analysis.survival.nonparametric import (
    KaplanMeierResult,
    LogrankResult,
    RmstResult,
    kaplan_meier,
    logrank_test,
    median_difference,
    rmst_difference,
)

__all__ = [
    "AftResult",
    "CoxResult",
    "CumulativeIncidenceResult",
    "FineGrayResult",
    "GrayTestResult",
    "IntervalCoxResult",
    "KaplanMeierResult",
    "LogrankResult",
    "RmstResult",
    "TurnbullResult",
    "concordance_index",
    "cumulative_incidence",
    "fit_aft",
    "fit_cox",
    "fit_cox_time_varying",
    "fit_fine_gray",
    "fit_interval_cox",
    "gray_test",
    "kaplan_meier",
    "logrank_test",
    "median_difference",
    "rmst_difference",
    "turnbull",
]
