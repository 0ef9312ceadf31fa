"""Interval-censored PH with time-varying covariates, against R and a hand-written likelihood.

References come from tests/data/icph_reference.R (R 4.2.2, survival 3.5.3):
- exact event times with a piecewise-constant baseline equal the piecewise-exponential Poisson
  GLM on split data, `glm(event ~ 0 + factor(piece) + dose + age + arm +
  offset(log(exposure)), family = poisson)` (icph_exact_poisson.csv);
- one piece (a constant hazard) with interval censoring equals
  `survreg(Surv(L, R, type = "interval2") ~ x + group, dist = "exponential")` with the sign
  flipped (icph_interval_survreg.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis.errors import DataError, ModelWarning
from analysis.results import HAZARD_RATIO_COLUMNS, TIDY_COLUMNS
from analysis.survival import fit_interval_cox
from analysis.testing import assert_ci_contains_estimate

DATA = Path(__file__).parent / "data"
BOUNDS = ("lower", "upper")


def weekly_rows(people: pd.DataFrame, covariates: list[str]) -> pd.DataFrame:
    """Weekly (start, stop] rows from 0 to each person's upper bound (lower if censored)."""
    rows = []
    for person in people.itertuples(index=False):
        end = person.upper if np.isfinite(person.upper) else person.lower
        for start in np.arange(0, end, 7.0):
            rows.append(
                {
                    "id": person.id,
                    "start": start,
                    "stop": min(start + 7, end),
                    **{name: getattr(person, name) for name in [*covariates, *BOUNDS]},
                }
            )
    return pd.DataFrame(rows)


def test_exact_times_equal_the_piecewise_exponential_poisson_glm():
    frame = pd.read_csv(DATA / "icph_exact_frame.csv")
    reference = pd.read_csv(DATA / "icph_exact_poisson.csv").set_index("term")
    fitted = fit_interval_cox(
        frame, "id", "start", "stop", "lower", "upper", ["dose", "age", "arm"], [0, 14, 28, 49]
    )
    tidy = fitted.tidy().set_index("term")
    names = {"dose": "dose", "age": "age", "arm[b]": "armb", "arm[c]": "armc"}
    for ours, theirs in names.items():
        assert tidy.loc[ours, "estimate"] == pytest.approx(
            reference.loc[theirs, "estimate"], abs=1e-6
        )
        assert tidy.loc[ours, "std_error"] == pytest.approx(
            reference.loc[theirs, "std_error"], rel=1e-6
        )
    np.testing.assert_allclose(
        fitted.baseline["log_hazard"],
        reference.loc[[f"factor(piece){k}" for k in range(1, 5)], "estimate"],
        atol=1e-6,
    )
    assert fitted.exact_events == fitted.events > 0
    assert fitted.right_censored > 0


def test_one_piece_with_interval_censoring_equals_exponential_survreg():
    people = pd.read_csv(DATA / "icph_interval_people.csv")
    people["upper"] = people["upper"].astype(float).fillna(np.inf)
    frame = weekly_rows(people, ["x", "group"])
    frame["upper"] = frame["upper"].replace(np.inf, np.nan)
    reference = pd.read_csv(DATA / "icph_interval_survreg.csv").set_index("term")
    fitted = fit_interval_cox(
        frame, "id", "start", "stop", "lower", "upper", ["x", "group"], [0], profile=["x"]
    )
    tidy = fitted.tidy().set_index("term")
    for ours, theirs in {"x": "x", "group[v]": "groupv"}.items():
        # survreg models log time: a log hazard ratio is minus its coefficient.
        assert tidy.loc[ours, "estimate"] == pytest.approx(
            -reference.loc[theirs, "estimate"], abs=1e-6
        )
        assert tidy.loc[ours, "std_error"] == pytest.approx(
            reference.loc[theirs, "std_error"], rel=1e-5
        )
    assert fitted.baseline["log_hazard"].iloc[0] == pytest.approx(
        -reference.loc["(Intercept)", "estimate"], abs=1e-6
    )
    assert fitted.log_likelihood == pytest.approx(reference["log_likelihood"].iloc[0], abs=1e-7)
    assert fitted.conf_method["x"] == "profile likelihood"
    assert fitted.conf_method["group[v]"] == "Wald"


# A hand-made frame: two pieces (cut at day 10), a weekly covariate z and a fixed one w.
HAND_PEOPLE = pd.DataFrame(
    {
        "id": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
        "lower": [7.0, 0.0, 14.0, 21.0, 5.0, 14.0, 3.0, 9.0, 12.0, 20.0],
        "upper": [14.0, 7.0, np.nan, 28.0, 5.0, 21.0, 12.0, np.nan, 19.0, np.nan],
        "w": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5],
    }
)
HAND_Z = {  # weekly z per person, weeks 0, 1, 2, 3
    "a": [0.2, 0.9],
    "b": [0.2],
    "c": [0.6, 0.7],
    "d": [0.0, 0.4, 0.8, 0.6],
    "e": [0.3],
    "f": [0.3, 0.2, 0.9],
    "g": [0.2, 0.4],
    "h": [0.5, 0.6],
    "i": [0.5, 0.5, 0.0],
    "j": [0.6, 0.5, 0.7],
}
HAND_CUTS = [0.0, 10.0]


def hand_frame() -> pd.DataFrame:
    rows = []
    for person in HAND_PEOPLE.itertuples(index=False):
        end = person.lower if np.isnan(person.upper) else person.upper
        for week, z in enumerate(HAND_Z[person.id]):
            start = 7.0 * week
            if start < end:
                rows.append(
                    {
                        "id": person.id,
                        "start": start,
                        "stop": min(start + 7, end),
                        "z": z,
                        "w": person.w,
                        "lower": person.lower,
                        "upper": person.upper,
                    }
                )
    return pd.DataFrame(rows)


def hand_log_likelihood(theta: np.ndarray) -> float:
    """The likelihood written out person by person (no vectorisation, no splitting tricks)."""
    log_h0, log_h1, beta_z, beta_w = theta

    def cumulative_hazard(person_id: str, w: float, t: float) -> float:
        total = 0.0
        for week, z in enumerate(HAND_Z[person_id]):
            a, b = 7.0 * week, min(7.0 * week + 7, t)
            if b <= a:
                continue
            first_piece = max(0.0, min(b, 10.0) - a)  # time in [0, 10)
            second_piece = (b - a) - first_piece  # time in [10, inf)
            baseline = np.exp(log_h0) * first_piece + np.exp(log_h1) * second_piece
            total += np.exp(beta_z * z + beta_w * w) * baseline
        return total

    value = 0.0
    for person in HAND_PEOPLE.itertuples(index=False):
        hazard_lower = cumulative_hazard(person.id, person.w, person.lower)
        if np.isnan(person.upper):
            value -= hazard_lower
        elif person.upper == person.lower:
            week = int(np.ceil(person.upper / 7.0)) - 1
            log_baseline = log_h0 if person.upper <= 10.0 else log_h1
            z = HAND_Z[person.id][week]
            value += -hazard_lower + log_baseline + beta_z * z + beta_w * person.w
        else:
            hazard_upper = cumulative_hazard(person.id, person.w, person.upper)
            # Far from the maximum the interval's probability can underflow to 0 (log -inf).
            with np.errstate(divide="ignore"):
                value += np.log(np.exp(-hazard_lower) - np.exp(-hazard_upper))
    return value


@pytest.fixture(scope="module")
def hand_fit():
    return fit_interval_cox(
        hand_frame(), "id", "start", "stop", "lower", "upper", ["z", "w"], HAND_CUTS, ["z"]
    )


@pytest.fixture(scope="module")
def hand_optimum():
    result = optimize.minimize(
        lambda theta: -hand_log_likelihood(theta),
        x0=np.array([-3.0, -3.0, 0.0, 0.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40_000, "maxfev": 40_000},
    )
    assert result.success
    return result


def test_hand_made_frame_maximises_the_likelihood_written_by_hand(hand_fit, hand_optimum):
    theta = np.concatenate([hand_fit.baseline["log_hazard"], hand_fit.tidy()["estimate"]])
    assert hand_fit.log_likelihood == pytest.approx(hand_log_likelihood(theta), abs=1e-10)
    assert hand_fit.log_likelihood == pytest.approx(-hand_optimum.fun, abs=1e-8)
    np.testing.assert_allclose(theta, hand_optimum.x, atol=2e-4)
    assert hand_fit.exact_events == 1 and hand_fit.right_censored == 3


def test_standard_errors_are_the_inverse_observed_information(hand_fit):
    theta = np.concatenate([hand_fit.baseline["log_hazard"], hand_fit.tidy()["estimate"]])
    step = 1e-4
    hessian = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            shifts = [
                np.eye(4)[i] * step * si + np.eye(4)[j] * step * sj
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1))
            ]
            values = [hand_log_likelihood(theta + shift) for shift in shifts]
            hessian[i, j] = (values[0] - values[1] - values[2] + values[3]) / (4 * step**2)
    numeric = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    np.testing.assert_allclose(hand_fit.tidy()["std_error"], numeric[2:], rtol=1e-5)
    np.testing.assert_allclose(hand_fit.baseline["std_error"], numeric[:2], rtol=1e-5)


def test_profile_interval_bounds_lose_the_chi_square_quantile(hand_fit):
    row = hand_fit.tidy().set_index("term").loc["z"]
    threshold = stats.chi2.ppf(0.95, 1)
    for bound in (row["conf_low"], row["conf_high"]):
        profile = optimize.minimize(
            lambda rest, b=bound: -hand_log_likelihood(np.array([rest[0], rest[1], b, rest[2]])),
            x0=np.array([*hand_fit.baseline["log_hazard"], hand_fit.tidy()["estimate"].iloc[1]]),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40_000, "maxfev": 40_000},
        )
        assert 2 * (hand_fit.log_likelihood + profile.fun) == pytest.approx(threshold, abs=1e-6)
    # The likelihood is not quadratic here: the profile interval is not the Wald one.
    wald_half_width = stats.norm.ppf(0.975) * row["std_error"]
    assert row["conf_high"] - row["estimate"] != pytest.approx(wald_half_width, rel=1e-3)


def test_tidy_table_has_the_cox_columns_and_consistent_hazard_ratios(hand_fit):
    tidy = hand_fit.tidy()
    assert tuple(tidy.columns) == (*TIDY_COLUMNS, *HAZARD_RATIO_COLUMNS)
    assert_ci_contains_estimate(tidy)
    np.testing.assert_allclose(tidy["hazard_ratio"], np.exp(tidy["estimate"]))
    np.testing.assert_allclose(tidy["hr_conf_low"], np.exp(tidy["conf_low"]))


def test_rows_past_the_needed_end_are_ignored():
    """Rows after upper (or after lower when censored) do not change the fit."""
    frame = hand_frame()
    extra = (
        frame.groupby("id")
        .tail(1)
        .assign(start=lambda f: f["stop"], stop=lambda f: f["stop"] + 7, z=5.0)
    )
    longer = pd.concat([frame, extra], ignore_index=True)
    base = fit_interval_cox(frame, "id", "start", "stop", *BOUNDS, ["z", "w"], HAND_CUTS)
    more = fit_interval_cox(longer, "id", "start", "stop", *BOUNDS, ["z", "w"], HAND_CUTS)
    pd.testing.assert_frame_equal(base.tidy(), more.tidy())


def test_no_recoveries_is_an_error():
    frame = hand_frame().assign(upper=np.nan)
    frame = frame[frame["start"] < frame["lower"]]
    frame = frame.assign(stop=np.minimum(frame["stop"], frame["lower"]))
    with pytest.raises(DataError, match="no recoveries"):
        fit_interval_cox(frame, "id", "start", "stop", *BOUNDS, ["z"], HAND_CUTS)


def test_a_piece_no_recovery_interval_touches_is_an_error():
    with pytest.raises(DataError, match=r"baseline\[40, inf\) has no recovery interval"):
        fit_interval_cox(hand_frame(), "id", "start", "stop", *BOUNDS, ["z"], [0, 10, 40])


def test_an_aliased_covariate_is_not_estimable_with_a_note():
    frame = hand_frame().assign(z_copy=lambda f: 2 * f["z"])
    with pytest.warns(ModelWarning, match="z_copy not estimable"):
        fitted = fit_interval_cox(
            frame, "id", "start", "stop", *BOUNDS, ["z", "w", "z_copy"], HAND_CUTS
        )
    tidy = fitted.tidy().set_index("term")
    assert tidy.loc["z_copy", ["estimate", "std_error"]].isna().all()
    assert fitted.conf_method["z_copy"] == "not estimable"
    reference = fit_interval_cox(
        hand_frame(), "id", "start", "stop", *BOUNDS, ["z", "w"], HAND_CUTS
    )
    assert tidy.loc["z", "estimate"] == pytest.approx(reference.tidy()["estimate"].iloc[0])


def test_a_person_with_a_missing_covariate_on_a_used_row_is_dropped_with_a_note():
    frame = hand_frame()
    frame.loc[(frame["id"] == "a") & (frame["start"] == 7), "z"] = np.nan
    with pytest.warns(ModelWarning, match="1 of 10 people dropped"):
        fitted = fit_interval_cox(frame, "id", "start", "stop", *BOUNDS, ["z"], HAND_CUTS)
    assert fitted.n == 9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f[~((f["id"] == "d") & (f["start"] == 7))], "contiguous"),
        (lambda f: f[~((f["id"] == "d") & (f["start"] == 21))], "run from entry"),
        (lambda f: f.assign(upper=np.where(f["id"] == "a", 3.0, f["upper"])), "lower <= upper"),
    ],
)
def test_rows_that_do_not_cover_the_interval_are_an_error(change, message):
    with pytest.raises(DataError, match=message):
        fit_interval_cox(change(hand_frame()), "id", "start", "stop", *BOUNDS, ["z"], HAND_CUTS)


def test_late_entry_gives_the_likelihood_conditional_on_no_recovery_before_it():
    """A path starting at day 7 for everyone equals the same fit on times shifted by 7."""
    frame = hand_frame()
    late = frame[(frame["start"] >= 7) & (frame["lower"] >= 7)]
    shifted = late.assign(
        start=late["start"] - 7,
        stop=late["stop"] - 7,
        lower=late["lower"] - 7,
        upper=late["upper"] - 7,
    )
    on_late = fit_interval_cox(late, "id", "start", "stop", *BOUNDS, ["z"], [0.0])
    on_shifted = fit_interval_cox(shifted, "id", "start", "stop", *BOUNDS, ["z"], [0.0])
    assert on_late.log_likelihood == pytest.approx(on_shifted.log_likelihood, abs=1e-10)
    assert on_late.tidy()["estimate"].iloc[0] == pytest.approx(
        on_shifted.tidy()["estimate"].iloc[0], abs=1e-8
    )
