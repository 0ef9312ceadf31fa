"""Conventions that differ between statistical packages, declared once, R's choice as default.

Every model function reads its convention from here, and reports print `conventions_table()`
in their methods section, so a reader knows exactly which definition produced each number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class Conventions:
    confidence_level: float = 0.95
    km_conf_type: str = "log"
    km_median: str = (
        "survfit: smallest time at which S(t) <= 0.5; where S(t) is exactly 0.5 over an "
        "interval, the midpoint of that interval; CI limits by the same rule on the CI curves"
    )
    cox_ties: str = "efron"
    concordance: str = (
        "Harrell's C as survival::concordance: a higher risk score predicts a shorter time; "
        "pairs tied on the risk score count 1/2; pairs tied on time are not comparable"
    )
    dummy_coding: str = "treatment coding against the first sorted level"
    interval_endpoints: str = (
        "(lower, upper], upper missing = right-censored, as Surv(type='interval2')"
    )
    aft_scale: str = "coefficients on the log-time scale and scale parameter as survreg"
    cumulative_incidence: str = "Aalen-Johansen, tied times handled exactly (no jitter), as survfit"
    fine_gray_se: str = "subject-level robust sandwich, as cmprsk::crr"
    not_estimable: str = (
        "as R's NA: aliased terms have no estimate; a coefficient running to infinity is "
        "reported as +-inf with the other terms at their limit; never a silent penalty "
        "(docs/model-safety.md)"
    )
    competing_event_codes: str = "numeric event codes read 0 as censored, as survfit and crr"
    mixed_fixed_effect_se: str = "(X' V^-1 X)^-1 at the (RE)ML estimates, as lme4"
    # Every number written to a model table, metrics or a report CSV: the last digits of a
    # float differ between CPUs and BLAS builds, and must not change the bytes of a study.
    published_significant_digits: int = 6
    published_p_value_significant_digits: int = 3

    def table(self) -> pd.DataFrame:
        """One row per convention (name, choice) for a report's methods section."""
        return pd.DataFrame(
            [{"convention": name, "choice": str(value)} for name, value in asdict(self).items()]
        )


CONVENTIONS = Conventions()
