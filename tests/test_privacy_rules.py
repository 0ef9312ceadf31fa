"""Suppression rules (analysis.privacy), checked by an attacker who knows every published number.

The attacker here is written independently of the planner: subtraction over the relations, the
null space of the relations restricted to hidden cells, and (for small tables) enumeration of
every integer filling of the hidden cells that a reader's bounds allow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.linalg import null_space

from analysis.errors import DataError
from analysis.privacy import (
    COMPLEMENTARY_MARK,
    PublishedCounts,
    SuppressionPlan,
    Total,
    apply_flow_plan,
    attach_counts,
    check_min_cell_size,
    coarsen_steps,
    flow_counts,
    frame_counts,
    mark,
    mask_small_counts_in_text,
    plan_suppression,
    protection_holes,
    reader_bounds,
    require_safe_counts,
    safe_at_risk,
    safe_censor_marks,
    safe_cumulative_incidence,
    safe_curve,
    safe_curve_for_people,
    smd_columns,
    suppress_table_one,
    suppress_with_row_totals,
    table_one_counts,
    truncate_curve,
)
from analysis.tables import FLOW_CHAIN, FOLLOW_UP_LABEL, cohort_flow, exact_table_one, table_one
from tests.test_tables import recovery_frame

K = 5
# Integer enumeration is run where every count is at most this (it takes seconds beyond).
ENUMERABLE = 60


# --- the attacker -----------------------------------------------------------------------------


def subtraction_attack(counts: PublishedCounts, hidden: set) -> dict:
    """Hidden cells found by subtraction: a relation with one unknown gives it; repeat."""
    known = {key: value for key, value in counts.cells.items() if key not in hidden}
    found = {}
    progress = True
    while progress:
        progress = False
        for relation in counts.totals:
            signed = [(relation.total, 1)] + [(part, -1) for part in relation.parts]
            unknown = {key for key, _ in signed if key not in known}
            if len(unknown) != 1:
                continue
            (key,) = unknown
            coefficient = sum(sign for member, sign in signed if member == key)
            rest = sum(sign * known[member] for member, sign in signed if member != key)
            if coefficient:
                known[key] = found[key] = round(-rest / coefficient)
                progress = True
    return found


def linear_attack(counts: PublishedCounts, hidden: set) -> set:
    """Hidden cells fixed by the relations alone (see `linear_recovery`)."""
    return set(linear_recovery(counts, hidden))


def linear_recovery(counts: PublishedCounts, hidden: set) -> dict:
    """Hidden cells fixed by the relations and the published values, with their values.

    A cell is fixed when it is zero in every direction of the null space of the relations
    restricted to the hidden cells; its value is then that of any solution (least squares).
    The values at hidden keys in `counts.cells` are not used.
    """
    order = sorted(hidden, key=str)
    index = {key: i for i, key in enumerate(order)}
    rows, right = [], []
    for relation in counts.totals:
        row = np.zeros(len(order))
        known = 0.0
        for key, sign in [(relation.total, 1.0)] + [(part, -1.0) for part in relation.parts]:
            if key in index:
                row[index[key]] += sign
            else:
                known += sign * counts.cells[key]
        rows.append(row)
        right.append(-known)
    matrix = np.array(rows).reshape(len(rows), len(order))
    directions = null_space(matrix) if len(rows) else np.eye(len(order))
    solution = np.linalg.lstsq(matrix, np.array(right), rcond=None)[0] if len(rows) else None
    return {
        key: round(float(solution[index[key]]))
        for key in order
        if np.allclose(directions[index[key]], 0.0, atol=1e-9)
    }


def enumeration_attack(counts: PublishedCounts, plan) -> dict:
    """Every value each hidden cell can take: all integer fillings within the reader's bounds.

    Depth-first over the hidden cells; a relation is checked as soon as its last hidden cell is
    filled. Unbounded cells are capped at the largest count plus k: a cap can only hide
    solutions, which makes the attacker look stronger, never weaker.
    """
    withheld = plan.always_hidden - counts.always_hidden
    bounds = reader_bounds(counts, plan.sensitive, plan.complementary, plan.min_cell_size, withheld)
    cap = max(counts.cells.values()) + plan.min_cell_size
    order = sorted(bounds, key=str)
    relations = [
        [(relation.total, 1)] + [(part, -1) for part in relation.parts]
        for relation in counts.totals
    ]
    closes_at = {i: [] for i in range(len(order))}
    for signed in relations:
        positions = [order.index(key) for key, _ in signed if key in bounds]
        if positions:
            closes_at[max(positions)].append(signed)
    seen = {key: set() for key in order}
    filled = dict(counts.cells)

    def fill(i: int) -> None:
        if i == len(order):
            for key in order:
                seen[key].add(filled[key])
            return
        low, high = bounds[order[i]]
        for value in range(int(low), int(min(high, cap)) + 1):
            filled[order[i]] = value
            if all(sum(s * filled[key] for key, s in signed) == 0 for signed in closes_at[i]):
                fill(i + 1)

    fill(0)
    return seen


def assert_safe(counts: PublishedCounts, plan, enumerate_small: bool = True) -> None:
    """Nothing 0 < n < k is shown and no hidden cell can be recovered by the attacks above."""
    k = plan.min_cell_size
    shown_small = [
        key
        for key, value in counts.cells.items()
        if 0 < value < k and key not in plan.hidden and key not in counts.unpublished
    ]
    assert not shown_small, f"sensitive counts shown: {shown_small}"
    found = subtraction_attack(counts, set(plan.hidden))
    assert not (set(found) & plan.sensitive), f"recovered by subtraction: {found}"
    pinned = linear_attack(counts, set(plan.hidden))
    assert not (pinned & set(plan.sensitive | plan.complementary)), f"pinned: {pinned}"
    if enumerate_small and len(plan.hidden) <= 5 and max(counts.cells.values()) <= ENUMERABLE:
        values = enumeration_attack(counts, plan)
        single = {key: v for key, v in values.items() if len(v) == 1 and key in plan.sensitive}
        assert not single, f"pinned by integer enumeration: {single}"


def assert_minimal(counts: PublishedCounts, plan) -> None:
    """Showing any complementary cell again lets the attacker recover a sensitive one.

    A complement the plan also shows blank (withheld with the rest of a pinned cell's
    relations) stays hidden whatever the complements are, so it is not a choice to undo.
    """
    for key in plan.complementary - plan.always_hidden:
        fewer = type(plan)(
            plan.min_cell_size, plan.sensitive, plan.complementary - {key}, plan.always_hidden
        )
        hidden = set(fewer.hidden)
        exposed = linear_attack(counts, hidden) & set(fewer.sensitive)
        if not exposed:
            values = enumeration_attack(counts, fewer)
            exposed = {k for k in fewer.sensitive if len(values[k]) == 1}
        assert exposed, f"{key} = {counts.cells[key]} is hidden without need"


def cross_table(values: list[list[int]]) -> PublishedCounts:
    """A table with row totals, column totals and a grand total, keyed (row, column)."""
    cells, totals = {}, []
    n_rows, n_columns = len(values), len(values[0])
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            cells[(i, j)] = value
        cells[(i, "total")] = sum(row)
        totals.append(Total((i, "total"), tuple((i, j) for j in range(n_columns))))
    for j in [*range(n_columns), "total"]:
        cells[("total", j)] = sum(cells[(i, j)] for i in range(n_rows))
        totals.append(Total(("total", j), tuple((i, j) for i in range(n_rows))))
    return PublishedCounts(cells, tuple(totals))


# --- the cases the issue found ----------------------------------------------------------------


def test_flow_differences_no_longer_give_hidden_counts_away():
    """504 - 500 = 4 removed; 500 - 420 - 68 - 11 = 1 censored at the end of follow-up."""
    flow = pd.DataFrame(
        {
            "stage": [
                "enrolled",
                "participant rows quarantined",
                "included after cleaning",
                "no adherence group",
                "analysed",
                "recovered",
                "withdrawn",
                "lost to follow-up",
                "censored at end of follow-up",
            ],
            "n": [504, 4, 500, 0, 500, 420, 68, 11, 1],
            "detail": ["", "bad id", "", "", "", "", "", "", ""],
        }
    )
    counts = flow_counts(flow, FLOW_CHAIN)
    plan = plan_suppression(counts, K)
    assert_safe(counts, plan)
    assert_minimal(counts, plan)
    shown = apply_flow_plan(flow, plan)
    assert shown["n"].tolist().count(mark(K)) == 2
    assert len(plan.complementary) == 2, "one complementary cell per hidden count is enough"
    assert shown.loc[shown["stage"] == "withdrawn", "n"].item() == 68


def test_the_attacker_finds_what_row_by_row_suppression_leaves():
    """Hiding only the small counts (the old rule) gives 4 and 1 back: the attacker has teeth."""
    flow = pd.DataFrame(
        {
            "stage": ["enrolled", "participant rows quarantined", "included after cleaning"],
            "n": [504, 4, 500],
            "detail": ["", "bad id", ""],
        }
    )
    counts = flow_counts(flow, FLOW_CHAIN)
    hidden = {("flow", "participant rows quarantined", "bad id")}
    assert linear_recovery(counts, hidden) == {next(iter(hidden)): 4}
    assert subtraction_attack(counts, hidden) == {next(iter(hidden)): 4}
    grid = cross_table([[30, 40, 20], [6, 4, 8], [22, 24, 26]])
    assert linear_recovery(grid, {(1, 1)}) == {(1, 1): 4}
    assert linear_recovery(grid, {(1, 1), (1, 0)}) == {(1, 1): 4, (1, 0): 6}, "by columns"


def test_site_row_of_table_one_cannot_be_subtracted():
    """Site E: 18 people, 6 / 4 / 8 by group: the 4 is hidden with a rectangle of complements."""
    counts = cross_table([[30, 40, 20], [6, 4, 8], [22, 24, 26]])
    plan = plan_suppression(counts, K)
    assert plan.sensitive == {(1, 1)}
    assert len(plan.complementary) == 3
    assert_safe(counts, plan)
    assert_minimal(counts, plan)
    assert (1, 1) not in subtraction_attack(counts, set(plan.hidden))


def test_large_counts_not_needed_for_protection_stay_visible():
    """41 withdrawals of 139 in one group are shown (the differential dropout a reader needs)."""
    counts = cross_table([[80, 41, 18], [70, 12, 3], [60, 9, 31]])
    plan = plan_suppression(counts, K)
    assert (0, 1) not in plan.hidden
    assert (0, "total") not in plan.hidden
    assert_safe(counts, plan)
    assert_minimal(counts, plan)


def test_bounds_a_reader_reads_off_the_marks_are_used():
    """6 = 1 + 5: with "<5" in 1..4 and "suppressed" >= 5, hiding both still gives 1 and 5."""
    counts = PublishedCounts({"n": 6, "a": 1, "b": 5}, (Total("n", ("a", "b")),))
    plan = plan_suppression(counts, K)
    assert "n" in plan.hidden, "the total must go as well"
    assert_safe(counts, plan)


def test_zero_is_shown_and_is_not_a_complement():
    counts = PublishedCounts({"n": 10, "a": 0, "b": 3, "c": 7}, (Total("n", ("a", "b", "c")),))
    plan = plan_suppression(counts, K)
    assert "a" not in plan.hidden
    assert plan.complementary == {"c"}


def test_counts_shown_in_two_tables_are_protected_together():
    """A group size shown in Table 1 and in a KM table is one cell for the attacker."""
    table_a = PublishedCounts({("a", "n"): 20, ("a", "x"): 3, ("a", "y"): 17})
    table_b = PublishedCounts({("b", "n"): 20, ("b", "x"): 3, ("b", "z"): 9, ("b", "w"): 8})
    links = (
        Total(("a", "n"), (("a", "x"), ("a", "y"))),
        Total(("b", "n"), (("b", "x"), ("b", "z"), ("b", "w"))),
        Total(("a", "n"), (("b", "n"),)),
        Total(("a", "x"), (("b", "x"),)),
    )
    counts = table_a.combine(table_b, links=links)
    plan = plan_suppression(counts, K)
    assert_safe(counts, plan)
    assert_minimal(counts, plan)


def test_a_count_never_published_protects_like_a_hidden_one():
    """30 enrolled = 3 excluded + 27 in a stage no table shows: the 3 needs no complement."""
    counts = PublishedCounts(
        {"enrolled": 30, "excluded": 3, "unshown": 27},
        (Total("enrolled", ("excluded", "unshown")),),
        unpublished=frozenset({"unshown"}),
    )
    plan = plan_suppression(counts, K)
    assert plan.sensitive == {"excluded"} and not plan.complementary
    published = PublishedCounts(counts.cells, counts.totals)
    assert plan_suppression(published, K).complementary == {"unshown"}


def test_min_cell_size_must_be_a_whole_number_of_at_least_three():
    assert check_min_cell_size(10) == 10
    for bad in (2, "ten", True, 5.0, None):
        with pytest.raises(DataError, match="min_cell_size"):
            check_min_cell_size(bad)


def test_relations_must_name_known_cells():
    with pytest.raises(DataError, match="not among the cells"):
        PublishedCounts({"n": 4}, (Total("n", ("missing",)),))


# --- random cross-tables ----------------------------------------------------------------------

small_tables = st.integers(2, 3).flatmap(
    lambda rows: st.integers(2, 3).flatmap(
        lambda columns: st.lists(
            st.lists(st.integers(0, 14), min_size=columns, max_size=columns),
            min_size=rows,
            max_size=rows,
        )
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=small_tables, k=st.integers(3, 5))
# Every cell below k: the grand total is a complement the plan then withholds as well.
@example(values=[[1, 1], [1, 2]], k=3)
def test_random_cross_tables_are_safe_and_minimal(values, k):
    counts = cross_table(values)
    plan = plan_or_justified_refusal(counts, k)
    if plan is None:
        return
    assert_safe(counts, plan, enumerate_small=False)
    for key in plan.complementary:
        assert counts.cells[key] >= k, "a complement is a count of at least k"
    assert_minimal(counts, plan)


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.lists(st.integers(0, 9), min_size=2, max_size=2), min_size=2, max_size=2))
def test_small_tables_survive_integer_enumeration(values):
    counts = cross_table(values)
    plan = plan_or_justified_refusal(counts, 4)
    if plan is None:
        return
    values_left = enumeration_attack(counts, plan)
    pinned = {key for key in plan.sensitive if len(values_left[key]) == 1}
    assert not pinned


def plan_or_justified_refusal(counts: PublishedCounts, k: int) -> SuppressionPlan | None:
    """The plan, or None where the planner refused a table that no suppression protects.

    A refusal is justified when hiding every positive count still leaves a sensitive one
    pinned (a tiny table, with its zeros shown).
    """
    try:
        return plan_suppression(counts, k)
    except DataError as refusal:
        assert "cannot be protected" in str(refusal)
    sensitive = frozenset(key for key, value in counts.cells.items() if 0 < value < k)
    rest = frozenset(key for key, value in counts.cells.items() if value >= k)
    assert protection_holes(counts, SuppressionPlan(k, sensitive, rest))
    return None


# --- Table 1 ----------------------------------------------------------------------------------


def shown_counts(table: pd.DataFrame, counts: PublishedCounts) -> dict:
    """What a reader reads off a rendered Table 1: the count at each key, or None if hidden."""
    read = {}
    for key in counts.cells:
        _, variable, level, column = key
        if column == "Missing":
            cell = table.loc[table["variable"] == variable, column].iloc[0]
        else:
            rows = table[(table["variable"] == variable) & (table["level"].astype(str) == level)]
            if variable == "n":
                rows = table[table["variable"] == "n"]
            cell = rows[column].iloc[0]
        text = str(cell).split(" ")[0]
        read[key] = int(text) if text.isdigit() else None
    return read


SMALL_SITE = recovery_frame({"low": 14, "moderate": 12, "high": 9}, seed=5)
SMALL_SITE_PARAMS = {"min_cell_size": K, "group_order": ["low", "moderate", "high"]}


@pytest.fixture(scope="module")
def small_site_table_one():
    return table_one(SMALL_SITE, "adherence_group", SMALL_SITE_PARAMS)


def test_table_one_hidden_counts_resist_the_attacker(small_site_table_one):
    table = small_site_table_one
    exact, groups = exact_table_one(SMALL_SITE, "adherence_group", SMALL_SITE_PARAMS)
    counts = table_one_counts(exact, groups, K)
    read = shown_counts(table, counts)
    hidden = {key for key, value in read.items() if value is None}
    assert hidden, "the small site has small cells"
    for key, value in read.items():
        assert value is None or value == 0 or value >= K, (key, value)
        assert value is None or value == counts.cells[key], "a shown count is the true count"
    assert not (set(subtraction_attack(counts, hidden)) & hidden)
    sensitive = {key for key in hidden if 0 < counts.cells[key] < K}
    assert not (linear_attack(counts, hidden) & sensitive)


def test_table_one_missing_counts_and_follow_up_are_planned_with_the_rest():
    """A categorical variable's Missing count (now shown on every variable) is a count like any
    other: 3 people without a sex recorded show as "<k" and cannot be subtracted back; the
    follow-up row of a group blanked whole is blank."""
    site = recovery_frame({"low": 14, "moderate": 12, "high": 3}, seed=5)
    site.loc[site.index[:3], "sex"] = None
    table = table_one(site, "adherence_group", SMALL_SITE_PARAMS)
    first = table.drop_duplicates("variable").set_index("variable")
    assert first.loc["Sex, n (%)", "Missing"] == mark(K)
    follow_up = table[table["variable"] == FOLLOW_UP_LABEL].iloc[0]
    assert follow_up["high"] == ""
    assert follow_up["low"] != "" and follow_up["Overall"] != ""
    exact, groups = exact_table_one(site, "adherence_group", SMALL_SITE_PARAMS)
    counts = table_one_counts(exact, groups, K)
    hidden = {key for key, value in shown_counts(table, counts).items() if value is None}
    sensitive = {key for key in hidden if 0 < counts.cells[key] < K}
    assert ("table one", "Sex, n (%)", "", "Missing") in sensitive
    assert not (set(subtraction_attack(counts, hidden)) & sensitive)
    assert not (linear_attack(counts, hidden) & sensitive)


def site_e_table_one() -> pd.DataFrame:
    """Table 1 of site E of a 150-person simulated study: 8 people, groups of 2, 2 and 4."""
    rows = [
        ("n", "", "8", "2", "2", "4"),
        ("Sex, n (%)", "female", "6 (75.0)", "1 (50.0)", "2 (100.0)", "3 (75.0)"),
        ("Sex, n (%)", "male", "2 (25.0)", "1 (50.0)", "0 (0.0)", "1 (25.0)"),
        ("Severity, n (%)", "moderate", "7 (87.5)", "2 (100.0)", "2 (100.0)", "3 (75.0)"),
        ("Severity, n (%)", "severe", "1 (12.5)", "0 (0.0)", "0 (0.0)", "1 (25.0)"),
        ("Condition, n (%)", "none", "5 (62.5)", "1 (50.0)", "1 (50.0)", "3 (75.0)"),
        ("Condition, n (%)", "nerve", "2 (25.0)", "1 (50.0)", "1 (50.0)", "0 (0.0)"),
        ("Condition, n (%)", "other", "1 (12.5)", "0 (0.0)", "0 (0.0)", "1 (25.0)"),
        ("Chronic, n (%)", "no", "4 (50.0)", "0 (0.0)", "1 (50.0)", "3 (75.0)"),
        ("Chronic, n (%)", "yes", "4 (50.0)", "2 (100.0)", "1 (50.0)", "1 (25.0)"),
        ("Site, n (%)", "site_E", "8 (100.0)", "2 (100.0)", "2 (100.0)", "4 (100.0)"),
    ]
    return pd.DataFrame(rows, columns=["variable", "level", "Overall", "low", "moderate", "high"])


def test_a_site_whose_groups_are_all_tiny_still_gets_a_safe_table_one():
    """Every group column is blank but its n ("<5"): a reader knows nothing of those cells
    beyond the relations (a planner that took blanks for "<5" refused this table)."""
    exact = site_e_table_one()
    groups = ["low", "moderate", "high"]
    table = suppress_table_one(exact, groups, K)
    counts = table_one_counts(exact, groups, K)
    read = shown_counts(table, counts)
    assert [read[("table one", "n", "", group)] for group in groups] == [None] * 3
    assert table[groups].iloc[1:].eq("").all().all()
    hidden = {key for key, value in read.items() if value is None}
    sensitive = {key for key in hidden if 0 < counts.cells[key] < K}
    recovered = linear_recovery(counts, hidden) | subtraction_attack(counts, hidden)
    assert not {key for key in recovered if key in sensitive}


def test_smd_goes_with_a_hidden_count(small_site_table_one):
    table = small_site_table_one
    for variable, rows in table.groupby("variable", sort=False):
        if not variable.endswith(", n (%)"):
            continue
        for smd in smd_columns(table):
            compared = [g for g in ("low", "moderate", "high") if f"{g}," in smd or f",{g})" in smd]
            hidden = rows[compared].isin([mark(K), COMPLEMENTARY_MARK]).any().any()
            if hidden:
                assert set(rows[smd]) <= {""}, (variable, smd)


def test_suppress_table_one_blanks_a_tiny_group_and_keeps_the_overall_safe():
    flat = pd.DataFrame(
        {
            "variable": ["n", "Sex, n (%)", "Sex, n (%)"],
            "level": ["", "female", "male"],
            "Overall": ["23", "12 (52.2)", "11 (47.8)"],
            "low": ["3", "2 (66.7)", "1 (33.3)"],
            "high": ["20", "10 (50.0)", "10 (50.0)"],
            "SMD (low,high)": ["", "0.34", ""],
        }
    )
    result = suppress_table_one(flat, ["low", "high"], K)
    assert result["low"].tolist() == [mark(K), "", ""]
    assert set(result["SMD (low,high)"]) == {""}
    counts = table_one_counts(flat, ["low", "high"], K)
    hidden = {key for key, value in shown_counts(result, counts).items() if value is None}
    sensitive = {key for key in hidden if 0 < counts.cells[key] < K}
    assert sensitive == {key for key in counts.cells if key[3] == "low"}
    assert not (linear_attack(counts, hidden) & sensitive)
    assert not (set(subtraction_attack(counts, hidden)) & sensitive)


# --- cohort flow on a real frame --------------------------------------------------------------


def test_cohort_flow_with_a_tiny_count_is_safe():
    recovery = recovery_frame({"low": 30, "moderate": 30, "high": 30}, seed=3)
    report = {
        "tables": {
            "participants": {
                "input_rows": 94,
                "kept": 90,
                "quarantined_rows_by_rule": {"unparseable id": 3},
                "merged_duplicates": 1,
            }
        }
    }
    flow = cohort_flow(report, recovery)
    counts = flow_counts(flow, FLOW_CHAIN)
    plan = plan_suppression(counts, K)
    assert_safe(counts, plan)
    assert_minimal(counts, plan)


# --- curves -----------------------------------------------------------------------------------


def km_like_curve() -> pd.DataFrame:
    n_risk = [20, 19, 17, 14, 10, 8, 5, 4, 2]
    n_event = [1, 2, 3, 2, 1, 3, 1, 2, 1]
    survival = np.cumprod([1 - e / n for e, n in zip(n_event, n_risk, strict=True)])
    return pd.DataFrame(
        {
            "group": "low",
            "time": np.arange(1, 10) * 7.0,
            "survival": survival,
            "n_risk": n_risk,
            "n_event": n_event,
        }
    )


def test_curves_end_where_fewer_than_k_are_at_risk():
    curve = km_like_curve()
    truncated = truncate_curve(curve, K)
    assert truncated["n_risk"].min() >= K
    assert truncated["time"].max() == 49.0


def test_every_step_drawn_rests_on_at_least_k_events():
    curve = truncate_curve(km_like_curve(), K)
    coarse = coarsen_steps(curve, K)
    events = curve["n_event"].cumsum().to_numpy()
    at_kept = events[curve["time"].isin(coarse["time"]).to_numpy()]
    assert np.all(np.diff(np.concatenate([[0], at_kept])) >= K)
    assert (
        coarse["survival"].tolist()
        == curve.set_index("time").loc[coarse["time"], "survival"].tolist()
    )


def test_safe_curve_drops_the_counts():
    safe = safe_curve(km_like_curve().assign(n_censor=0), K)
    assert not {"n_risk", "n_event", "n_censor"} & set(safe.columns)
    assert len(safe) == 2


def test_counts_for_a_curve_without_them_come_from_the_people():
    people = pd.DataFrame(
        {
            "group": ["a"] * 6 + ["b"] * 2,
            "days": [3, 5, 5, 8, 9, 12, 4, 6],
            "recovered": [True, True, False, True, True, False, True, True],
        }
    )
    curve = pd.DataFrame({"group": ["a", "a", "a", "b"], "time": [5.0, 9.0, 12.0, 6.0]})
    counted = attach_counts(curve, people, "days", "recovered")
    a = counted[counted["group"] == "a"]
    assert a["n_risk"].tolist() == [5, 2, 1]
    assert a["n_event"].tolist() == [2, 2, 0], "events since the previous row, up to t"
    assert counted.loc[counted["group"] == "b", ["n_risk", "n_event"]].values.tolist() == [[1, 2]]


def test_outcomes_by_group_hide_no_count_a_reader_could_subtract_back():
    """How follow-up ended per group: n = recovered + withdrawn + censored on every row."""
    exact = pd.DataFrame(
        {
            "group": ["low", "moderate", "high", "tiny"],
            "n": [20, 30, 40, 3],
            "recovered": [12, 20, 30, 1],
            "withdrawn": [3, 5, 6, 2],
            "censored": [5, 5, 4, 0],
        }
    )
    parts = ["recovered", "withdrawn", "censored"]
    shown = suppress_with_row_totals(exact, K, "group", "n", parts)
    rows = shown.set_index("group")
    assert rows.loc["moderate", ["n", *parts]].tolist() == [30, 20, 5, 5]
    assert rows.loc["low", "withdrawn"] == f"<{K}"
    assert rows.loc["low", "n"] == 20  # the total stays; the smallest other part goes with it
    assert rows.loc["low", "censored"] == COMPLEMENTARY_MARK
    assert rows.loc["tiny", "n"] == f"<{K}"
    assert rows["suppressed"].tolist() == [True, False, True, True]
    counts = PublishedCounts(
        frame_counts(exact, "table", "group", ["n", *parts]).cells,
        tuple(
            Total(("table", g, "n"), tuple(("table", g, p) for p in parts)) for g in exact["group"]
        ),
    )
    hidden = {
        ("table", g, c)
        for g, row in rows.iterrows()
        for c in ["n", *parts]
        if isinstance(row[c], str)
    }
    recovered = linear_recovery(counts, hidden)
    recovered.update(subtraction_attack(counts, hidden))
    assert not {k: v for k, v in recovered.items() if 0 < v < K}


def test_counts_of_people_quoted_in_text_are_masked_below_k():
    table = pd.DataFrame(
        {
            "detail": ["n=3 in this profile", "3 people", "12 people", "week 3", "1 person"],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    masked = mask_small_counts_in_text(table, K)
    assert masked["detail"].tolist() == [
        f"n=<{K} in this profile",
        f"<{K} people",
        "12 people",
        "week 3",
        f"<{K} person",
    ]
    assert masked["value"].tolist() == table["value"].tolist()


# --- what figures receive ---------------------------------------------------------------------


def test_a_risk_table_under_a_curve_shows_only_counts_of_at_least_k():
    at_risk = pd.DataFrame(
        {
            "group": ["a"] * 5 + ["b"] * 5,
            "time": [0, 28, 56, 84, 112] * 2,
            "n_risk": [30, 20, 9, 4, 0, 12, 8, 5, 2, 1],
        }
    )
    safe = safe_at_risk(at_risk, K)
    assert (safe["n_risk"] >= K).all()
    assert safe.groupby("group")["time"].max().to_dict() == {"a": 56, "b": 56}
    assert pd.api.types.is_integer_dtype(safe["n_risk"])


def test_each_censor_mark_stands_for_at_least_k_people():
    curve = km_like_curve().assign(n_censor=[0, 1, 2, 2, 0, 4, 1, 0, 0])
    marks = safe_censor_marks(curve, K)
    assert list(marks.columns) == ["group", "time"]
    # Up to day 49 (the last time with >= 5 at risk): 1 + 2 + 2 = 5 by day 28, then 4 + 1 = 5
    # by day 49; the 4 censored on day 42 alone get no mark of their own.
    assert marks["time"].tolist() == [28.0, 49.0]


def test_cumulative_incidence_is_cut_and_coarsened_per_event_type():
    people = pd.DataFrame(
        {
            "group": ["a"] * 14,
            "days": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
            "event_type": ["recovered"] * 6 + ["withdrawn"] * 3 + ["censored"] * 5,
        }
    )
    incidence = pd.DataFrame(
        {
            "group": "a",
            "event": ["recovered"] * 14 + ["withdrawn"] * 14,
            "time": list(range(1, 15)) * 2,
            "estimate": np.linspace(0.0, 0.5, 28),
        }
    )
    safe = safe_cumulative_incidence(incidence, people, "days", "event_type", "group", K)
    recovered = safe[safe["event"] == "recovered"]
    # 5 recoveries by day 5 (14 at risk there); the 6th alone is no step; withdrawals never reach 5.
    assert recovered["time"].tolist() == [5]
    assert safe[safe["event"] == "withdrawn"].empty
    assert not {"n_risk", "n_event"} & set(safe.columns)


def test_a_curve_without_counts_is_counted_from_its_group_or_everyone():
    people = pd.DataFrame(
        {
            "group": ["a"] * 8 + ["b"] * 4,
            "days": [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4],
            "recovered": [True] * 12,
        }
    )
    curve = pd.DataFrame(
        {
            "group": ["all"] * 8 + ["a"] * 8,
            "time": list(range(1, 9)) * 2,
            "survival": list(np.linspace(0.9, 0.1, 8)) * 2,
        }
    )
    safe = safe_curve_for_people(curve, people, "days", "recovered", K, group="group")
    # Everyone: at risk 12, 10, 8, 6, 4 on days 1-5, so cut after day 4; 2 events a day, so the
    # first step of >= 5 is day 3 (6 events). Group a: at risk 8, 7, 6, 5, 4 and one event a
    # day: cut after day 4 with only 4 events, so no step at all.
    assert safe[safe["group"] == "all"]["time"].tolist() == [3]
    assert safe[safe["group"] == "a"].empty
    with pytest.raises(DataError, match="no group column"):
        safe_curve_for_people(curve, people, "days", "recovered", K)


def test_a_frame_still_showing_fewer_than_k_is_refused():
    frame = pd.DataFrame({"n": [12, 3, "<5"]})
    with pytest.raises(DataError, match="1 row\\(s\\) with n below 5 \\(smallest 3\\)"):
        require_safe_counts(frame, "n", K, "the table", "make it safe")
    require_safe_counts(frame, "n", None, "the table", "no threshold: nothing to check")
    require_safe_counts(frame.iloc[[0, 2]], "n", K, "the table", "marks are not counts")


def test_outcomes_planned_with_the_sums_a_flow_shows_cannot_be_undone():
    """The flow shows each outcome's sum over the groups and the risk table each group's n: a
    plan that ignored them gave 35 - 23 - 7 = 5 withdrawn, then 112 - 103 - 5 = 4 censored."""
    outcomes = pd.DataFrame(
        {
            "group": ["low", "moderate", "high"],
            "n": [86, 102, 112],
            "recovered": [55, 90, 103],
            "withdrawn": [23, 7, 5],
            "censored": [8, 5, 4],
        }
    )
    parts = ["recovered", "withdrawn", "censored"]
    alone = suppress_with_row_totals(outcomes, K, "group", "n", parts, "o")
    shown = suppress_with_row_totals(
        outcomes,
        K,
        "group",
        "n",
        parts,
        "o",
        row_totals_shown_elsewhere=True,
        column_totals_shown_elsewhere=True,
    )
    assert (shown["n"] == outcomes["n"]).all()
    counts = frame_counts(outcomes, "o", "group", ["n", *parts])
    relations = [Total(("o", g, "n"), tuple(("o", g, p) for p in parts)) for g in outcomes.group]
    for part in parts:
        column = tuple(("o", g, part) for g in outcomes.group)
        total = ("o", "sum", part)
        relations.append(Total(total, column))
    cells = {**counts.cells, **{("o", "sum", p): int(outcomes[p].sum()) for p in parts}}
    published = PublishedCounts(cells, tuple(relations))

    def hidden_in(table):
        return {
            ("o", row.group, column)
            for row in table.itertuples()
            for column in parts
            if not str(getattr(row, column)).isdigit()
        }

    assert linear_attack(published, hidden_in(alone)) & {("o", "high", "censored")}
    assert not linear_attack(published, hidden_in(shown))


def test_outcomes_that_no_plan_can_protect_are_refused():
    """Site E of the default study: with every group's n and every column's sum shown
    elsewhere, the group of 4 is the sums' total minus the other groups (13 + 5 + 0 - 5 - 9),
    whatever is hidden. Blanking the parts (as once done) left it there: the planner refuses,
    and the site plan leaves such a group out of the report instead."""
    outcomes = pd.DataFrame(
        {
            "group": ["low", "moderate", "high"],
            "n": [5, 4, 9],
            "recovered": [2, 3, 8],
            "withdrawn": [3, 1, 1],
            "censored": [0, 0, 0],
        }
    )
    parts = ["recovered", "withdrawn", "censored"]
    with pytest.raises(DataError, match=r"count \('o', 'moderate', 'n'\) cannot be protected"):
        suppress_with_row_totals(
            outcomes,
            K,
            "group",
            "n",
            parts,
            "o",
            row_totals_shown_elsewhere=True,
            column_totals_shown_elsewhere=True,
        )
    # Without the column sums (a site report has no flow), the parts can be protected.
    shown = suppress_with_row_totals(
        outcomes.drop(index=1), K, "group", "n", parts, "o", row_totals_shown_elsewhere=True
    )
    assert shown["n"].tolist() == [5, 9]
    assert shown["recovered"].tolist()[0] == mark(K)
