"""Survival models over any tidy DataFrame, column names in, tidy results out."""

from analysis.survival.cox import CoxResult, fit_cox, fit_cox_time_varying
from analysis.survival.nonparametric import (
    KaplanMeierResult,
    LogrankResult,
    RmstResult,
    kaplan_meier,
    logrank_test,
    rmst_difference,
)

__all__ = [
    "CoxResult",
    "KaplanMeierResult",
    "LogrankResult",
    "RmstResult",
    "fit_cox",
    "fit_cox_time_varying",
    "kaplan_meier",
    "logrank_test",
    "rmst_difference",
]
