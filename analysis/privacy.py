"""Small-cell privacy: the one owner of min_cell_size and of every suppression rule.

Pure functions on DataFrames; tables and plots receive frames that are already safe.

The rules, in the conventions of R's sdcTable and GaussSuppression (frequency rule):
- A count c with 0 < c < k (k = min_cell_size) is *sensitive*: shown as `mark(k)`, e.g. "<5".
  Zero is shown and never hidden as a complement: it describes no one (sdcTable's
  `primarySuppression(type = "freq", allowZeros = FALSE)`, its default, publishes empty cells
  and leaves them out of secondary suppression). So "<k" tells a reader 1 <= c <= k - 1.
- Published counts are cells plus linear relations between them (a total is the sum of its
  parts: row and column totals, Overall columns, the steps of a flow diagram, the same count in
  two tables). `plan_suppression` hides cells until no sensitive cell is *pinned*: with every
  published value, every relation and the bounds a reader can read off the marks (sensitive
  1..k-1, complementary >= k, everything >= 0), each sensitive cell can still take at least two
  integer values (GaussSuppression's `protectionIntervals` asks the same minimum: an interval
  of width 2). Checked exactly: a rank test (the cell's unit vector in the row space of the
  relations restricted to hidden cells, the idea of GaussSuppression's Gauss method), then
  linear programmes for its lowest and highest value, with an integer programme where those
  are not whole numbers.
- Complementary cells (shown as `COMPLEMENTARY_MARK`) are chosen cheapest first, and a cell
  that turns out not to be needed is shown again, so no count >= k is hidden without reason.
- Anything computed from a hidden count goes with it: its percentage, a standardized mean
  difference involving it (for a binary variable the SMD and the group sizes pin the counts),
  and estimates on fewer than k people.
- Curves end where fewer than k people are at risk, and a step is drawn only once at least k
  events have accumulated since the last one (a step of 1/n at risk reveals one event).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from analysis.errors import DataError

# The threshold when a report is rendered without params.yaml's report.min_cell_size.
SUPPRESSED_COLUMN = "suppressed"
COMPLEMENTARY_MARK = "suppressed"
# "<2" could only mean 1: below this threshold the mark itself discloses the count.
SMALLEST_MIN_CELL_SIZE = 3

Key = Hashable
# Complements are sought as the cheapest set of up to COVER_SIZE cells (a rectangle around a
# cell of a two-way table needs 3) among the COVER_POOL smallest counts near it.
COVER_SIZE = 3
COVER_POOL = 12

# Table 1 as tableone flattens it (analysis.tables).
TABLE_ONE = "table one"
TABLE_ONE_OVERALL = "Overall"
TABLE_ONE_MISSING = "Missing"
TABLE_ONE_N_ROW = "n"
CATEGORICAL_SUFFIX = ", n (%)"
SMD_PREFIX = "SMD"
# tableone shows a missing categorical value as its own level with this text.
MISSING_LEVELS = ("None", "nan", "NaN")


def mark(min_cell_size: int) -> str:
    """How a sensitive count is shown, e.g. "<5" (it means 1 to min_cell_size - 1)."""
    return f"<{min_cell_size}"


def check_min_cell_size(min_cell_size) -> int:
    """min_cell_size as an int, or a DataError naming the value and what is allowed."""
    if isinstance(min_cell_size, bool) or not isinstance(min_cell_size, int | np.integer):
        raise DataError(
            f"min_cell_size must be a whole number, got {min_cell_size!r}",
            column="min_cell_size",
        )
    if min_cell_size < SMALLEST_MIN_CELL_SIZE:
        raise DataError(
            f"min_cell_size must be at least {SMALLEST_MIN_CELL_SIZE}, got {min_cell_size}",
            column="min_cell_size",
            hint=f'"<{min_cell_size}" could only mean {min_cell_size - 1}',
        )
    return int(min_cell_size)


def is_small_count(counts: pd.Series, min_cell_size: int, suppress_zero: bool = False) -> pd.Series:
    """Counts below the threshold; zero is kept unless asked, as it identifies no one."""
    values = pd.to_numeric(counts, errors="coerce")
    small = values < min_cell_size
    if not suppress_zero:
        small &= values != 0
    return small.fillna(False).astype(bool)


def groups_to_suppress(recovery: pd.DataFrame, group: str, min_cell_size: int) -> list:
    """Levels of `group` with fewer than `min_cell_size` people: not to be plotted or shown."""
    sizes = recovery[group].dropna().value_counts()
    return sorted(sizes.index[sizes < min_cell_size].tolist(), key=str)


def suppress_small_cells(
    frame: pd.DataFrame,
    count_columns: Sequence[str],
    min_cell_size: int,
    estimate_columns: Sequence[str] | None = None,
    suppress_zero: bool = False,
) -> pd.DataFrame:
    """A copy where counts below `min_cell_size` show as "<k" and their row's estimates are blanked.

    Primary suppression only, for a table no other published number adds up to: a row is
    suppressed when any of its `count_columns` is small; every small count becomes the mark, and
    `estimate_columns` (default: every other numeric column) become missing. Where counts add up
    to published totals, use `plan_suppression` instead, which also hides complementary cells.
    """
    missing = [name for name in count_columns if name not in frame.columns]
    if missing:
        raise DataError(
            f"count column(s) not in the frame: {', '.join(missing)}", column=missing[0]
        )
    if estimate_columns is None:
        estimate_columns = [
            name
            for name in frame.columns
            if name not in count_columns
            and name != SUPPRESSED_COLUMN
            and is_numeric_dtype(frame[name])
            and not pd.api.types.is_bool_dtype(frame[name])
        ]
    small = pd.DataFrame(
        {name: is_small_count(frame[name], min_cell_size, suppress_zero) for name in count_columns},
        index=frame.index,
    )
    suppressed_rows = small.any(axis=1)
    result = frame.copy()
    for name in count_columns:
        result[name] = result[name].astype(object).where(~small[name], mark(min_cell_size))
    for name in estimate_columns:
        result[name] = result[name].astype(object).where(~suppressed_rows, np.nan)
    result[SUPPRESSED_COLUMN] = suppressed_rows | (
        frame[SUPPRESSED_COLUMN].astype(bool) if SUPPRESSED_COLUMN in frame else False
    )
    return result


def enough_people(counts: pd.Series, min_cell_size: int) -> pd.Series:
    """Rows whose count of people reaches min_cell_size (an estimate on them may be shown)."""
    return (pd.to_numeric(counts, errors="coerce") >= min_cell_size).fillna(False).astype(bool)


def format_count(value, min_cell_size: int | None) -> str:
    """A count as text, "<k" when sensitive; text (an already suppressed cell) passes through."""
    if isinstance(value, str):
        return value
    if min_cell_size is not None and 0 < value < min_cell_size:
        return mark(min_cell_size)
    return f"{int(value)}"


# --- published counts and their relations -----------------------------------------------------


@dataclass(frozen=True)
class Total:
    """A published relation: the count at `total` is the sum of the counts at `parts`."""

    total: Key
    parts: tuple[Key, ...]


def same_count(first: Key, second: Key) -> Total:
    """The relation "these two cells are the same count" (one number shown in two places)."""
    return Total(first, (second,))


@dataclass(frozen=True)
class PublishedCounts:
    """Every count a report publishes (key -> value) and the relations between them.

    `unpublished` are counts that take part in a relation but are never shown (a reader knows
    only that they are >= 0); `always_hidden` are cells a table blanks whatever the plan (the
    column of a group too small to show); `shown_elsewhere` are counts another table of the
    same report shows whenever they reach k (a group's size as the number at risk at time 0):
    hiding them here would protect nothing, so they are never chosen as complements. `costs`
    prices hiding a cell (default: its count), where some counts are cheaper to hide than
    others (a site's size in Table 1 against a whole group in that site's report).
    """

    cells: Mapping[Key, int]
    totals: tuple[Total, ...] = ()
    unpublished: frozenset = frozenset()
    always_hidden: frozenset = frozenset()
    shown_elsewhere: frozenset = frozenset()
    costs: Mapping[Key, float] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [
            key
            for relation in self.totals
            for key in (relation.total, *relation.parts)
            if key not in self.cells
        ]
        if unknown:
            raise DataError(f"a relation names a count that is not among the cells: {unknown[0]}")
        negative = [key for key, value in self.cells.items() if value < 0]
        if negative:
            raise DataError(f"a count is negative: {negative[0]}")

    def cost(self, key: Key) -> float:
        """What hiding this cell costs a reader (the planner hides the cheapest first)."""
        return self.costs.get(key, self.cells[key])

    def combine(self, *others: PublishedCounts, links: Iterable[Total] = ()) -> PublishedCounts:
        """One set for a whole report: these counts, the others', and relations across them."""
        cells = dict(self.cells)
        for other in others:
            clash = set(cells) & set(other.cells)
            if clash:
                raise DataError(f"two tables use the same cell key: {next(iter(clash))}")
            cells.update(other.cells)
        everyone = (self, *others)
        return PublishedCounts(
            cells=cells,
            totals=tuple(t for part in everyone for t in part.totals) + tuple(links),
            unpublished=frozenset().union(*(part.unpublished for part in everyone)),
            always_hidden=frozenset().union(*(part.always_hidden for part in everyone)),
            shown_elsewhere=frozenset().union(*(part.shown_elsewhere for part in everyone)),
            costs={key: cost for part in everyone for key, cost in part.costs.items()},
        )


@dataclass(frozen=True)
class SuppressionPlan:
    """Which cells a report hides: sensitive (0 < n < k), complementary, and always hidden."""

    min_cell_size: int
    sensitive: frozenset
    complementary: frozenset
    always_hidden: frozenset = field(default_factory=frozenset)

    @property
    def hidden(self) -> frozenset:
        return self.sensitive | self.complementary | self.always_hidden

    def shown(self, key: Key, value) -> object:
        """The value as a report shows it: the count, "<k", "suppressed" or blank."""
        if key in self.always_hidden:
            return ""
        if key in self.sensitive:
            return mark(self.min_cell_size)
        if key in self.complementary:
            return COMPLEMENTARY_MARK
        return value


def reader_bounds(
    counts: PublishedCounts,
    plan_sensitive: Iterable,
    plan_complementary: Iterable,
    k: int,
    withheld: Iterable = (),
) -> dict[Key, tuple[float, float]]:
    """What a reader knows of each hidden cell from how it is shown (the attacker's bounds).

    `withheld`: cells a plan shows blank where no mark could be shown safely; zeros are always
    shown, so a reader knows only that such a cell is at least 1.
    """
    bounds: dict[Key, tuple[float, float]] = {}
    for key in plan_complementary:
        bounds[key] = (float(k), np.inf)
    for key in plan_sensitive:
        bounds[key] = (1.0, float(k - 1))
    for key in withheld:
        bounds[key] = (1.0, np.inf)
    # A blank (or never shown) cell tells a reader nothing but that it is a count.
    for key in counts.unpublished | counts.always_hidden:
        bounds[key] = (0.0, np.inf)
    return bounds


class _Relations:
    """The relations as one matrix over every cell: `matrix @ counts = 0` row by row.

    Remembers, per target, other integer fillings of the hidden cells found on the way
    (certificates that the target is not pinned): one stays valid as long as the cells it
    changes are still hidden, which spares most linear programmes while a plan is tuned.
    """

    def __init__(self, counts: PublishedCounts):
        self.counts = counts
        self.keys = list(counts.cells)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.values = np.array([counts.cells[key] for key in self.keys], dtype=float)
        self.matrix = np.zeros((len(counts.totals), len(self.keys)))
        for row, relation in enumerate(counts.totals):
            self.matrix[row, self.index[relation.total]] += 1.0
            for part in relation.parts:
                self.matrix[row, self.index[part]] -= 1.0
        self.alternatives: dict[Key, list[frozenset]] = {}

    def pinned(
        self,
        bounds: Mapping[Key, tuple[float, float]],
        targets: Iterable[Key],
        with_bounds: bool = True,
        stop_at_first: bool = False,
    ) -> set:
        """Targets among the hidden cells (keys of `bounds`) a reader can recover exactly.

        Every cell not in `bounds` is published. A target is pinned if its unit vector lies in
        the row space of the relations restricted to the hidden cells linked to it (it is a
        fixed linear combination of published values), or, `with_bounds`, if under the
        relations and the bounds it can take one integer value only (see `_other_value`).
        `stop_at_first` returns as soon as one pinned target is found.
        """
        hidden_keys = set(bounds)

        def certified(target: Key) -> bool:
            return any(changed <= hidden_keys for changed in self.alternatives.get(target, ()))

        targets = [target for target in targets if not certified(target)]
        hidden = [self.index[key] for key in bounds]
        published = np.setdiff1d(np.arange(len(self.keys)), hidden)
        relations = self.matrix[:, hidden]
        used = relations.any(axis=1)
        relations = relations[used]
        right = -self.matrix[np.ix_(used, published)] @ self.values[published]
        low = np.array([bound[0] for bound in bounds.values()])
        high = np.array([bound[1] for bound in bounds.values()])
        truth = self.values[hidden]
        names = list(bounds)
        position = {key: i for i, key in enumerate(bounds)}
        pieces = {}
        pinned = set()
        # The rank test is cheap: run it on every target before any programme.
        for target in targets:
            members = _linked(relations, position[target])
            rows = relations[:, members].any(axis=1)
            local = relations[np.ix_(rows, members)]
            unit = (members == position[target]).astype(float)
            if _in_row_space(local, unit):
                pinned.add(target)
                if stop_at_first:
                    return pinned
            else:
                pieces[target] = (members, (local, right[rows], low[members], high[members], unit))
        if not with_bounds:
            return pinned
        for target, (members, piece) in pieces.items():
            if certified(target):
                continue  # by the filling found for an earlier target
            other = _other_value(*piece, truth[members])
            if other is None:
                pinned.add(target)
                if stop_at_first:
                    return pinned
            elif other is not _UNBOUNDED:
                # The other filling moves every cell it changes: it certifies each of them.
                changed = frozenset(
                    names[members[i]] for i in np.flatnonzero(~np.isclose(other, truth[members]))
                )
                for key in changed:
                    self.alternatives.setdefault(key, []).append(changed)
        return pinned


def pinned_cells(
    counts: PublishedCounts, bounds: Mapping[Key, tuple[float, float]], targets: Iterable[Key]
) -> set:
    """Targets among the hidden cells (keys of `bounds`) that a reader can recover exactly."""
    return _Relations(counts).pinned(bounds, targets)


def _linked(relations: np.ndarray, start: int) -> np.ndarray:
    """The hidden cells linked to `start` through relations (incl. itself), as positions."""
    touching = relations != 0
    reached = np.zeros(relations.shape[1], dtype=bool)
    reached[start] = True
    while True:
        grown = touching[touching[:, reached].any(axis=1)].any(axis=0) | reached
        if (grown == reached).all():
            return np.flatnonzero(reached)
        reached = grown


def _in_row_space(matrix: np.ndarray, unit: np.ndarray) -> bool:
    if not matrix.size:
        return False
    return np.linalg.matrix_rank(np.vstack([matrix, unit])) == np.linalg.matrix_rank(matrix)


# `_other_value` found the target unbounded: infinitely many values, no single filling to keep.
_UNBOUNDED = np.empty(0)


def _other_value(matrix, rhs, low, high, unit, truth):
    """Another whole-number filling x (matrix @ x = rhs, low <= x <= high) in which x @ unit
    differs from its true value, or None when there is none (the target is pinned).

    The true counts are one filling. A linear programme pushes the target up, then down; an
    optimum beyond the truth in whole numbers is the other filling; when neither direction
    moves, the relaxation (and so every integer filling) pins the target; fractional optima
    go to an integer programme.
    """
    # Imported here: scipy.optimize takes ~0.3 s to import, and every command imports this
    # module (params reads its constants) while only the reports solve these programmes.
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    position = int(np.argmax(unit))
    if low[position] == high[position]:
        return None
    bounds = list(zip(low, np.where(np.isinf(high), None, high), strict=True))
    fractional = False
    for direction in (-unit, unit):
        result = linprog(
            direction,
            A_eq=matrix if len(rhs) else None,
            b_eq=rhs if len(rhs) else None,
            bounds=bounds,
            method="highs",
        )
        if result.status == 3:
            return _UNBOUNDED
        if abs(result.x[position] - truth[position]) > 1e-9:
            if np.allclose(result.x, np.round(result.x), atol=1e-9):
                return np.round(result.x)
            fractional = True
    if not fractional:
        return None
    for direction in (-unit, unit):
        result = milp(
            direction,
            constraints=[LinearConstraint(matrix, rhs, rhs)] if len(rhs) else [],
            integrality=np.ones(len(unit)),
            bounds=Bounds(low, high),
        )
        if round(result.x[position]) != round(truth[position]):
            return np.round(result.x)
    return None


# --- planning ---------------------------------------------------------------------------------


def plan_suppression(
    counts: PublishedCounts, min_cell_size: int, decided: Iterable[Key] = ()
) -> SuppressionPlan:
    """Which cells to hide so that no sensitive count (0 < n < k) can be recovered.

    Primary: every sensitive cell. Complementary, while a sensitive cell is pinned: the set of
    up to COVER_SIZE published positive counts near it with the smallest total cost (its
    count unless `counts.costs` says otherwise) whose hiding unpins it (or, when no such set
    exists, the cheapest count near it, and the search goes on). Finally each complementary
    cell, costliest first, is shown again if the plan stays safe without it: no count >= k is
    hidden that the protection does not need (minimal by inclusion, not necessarily the fewest
    cells overall). Where every count related to a pinned cell is hidden already, the hidden
    cells of its relations are shown blank (`SuppressionPlan.always_hidden`), without the marks
    that bound them. `decided`: cells another plan of the same publication hides as complements
    (the site plan's, in Table 1's site rows); they stay hidden.
    """
    k = check_min_cell_size(min_cell_size)
    sensitive = frozenset(
        key
        for key, value in counts.cells.items()
        if 0 < value < k and key not in counts.unpublished
    )
    decided = frozenset(decided) - sensitive
    complementary: set = set(decided)
    # Hidden cells shown blank instead of marked: a reader learns only that each is >= 1.
    withheld: set = set()
    system = _Relations(counts)

    def exposed(targets: Iterable, extra: Iterable = (), **options) -> set:
        bounds = reader_bounds(counts, sensitive, complementary | set(extra), k, withheld)
        return system.pinned(bounds, targets, **options)

    # Hiding more only widens the set of counts consistent with what is published: a cell once
    # protected stays protected, so only the pinned ones are checked again.
    pinned = exposed(sensitive)
    while pinned:
        target = min(pinned, key=str)
        hidden = sensitive | complementary | counts.unpublished | counts.always_hidden
        candidates = [
            key for key in _candidates(counts, target, hidden) if key not in counts.shown_elsewhere
        ]
        if not candidates:
            # Every count related to the target is hidden, and the marks' bounds still pin it
            # (two levels of 4 in a column of 8 are both 4): its relations' hidden cells are
            # shown blank instead. A reader then learns only that each is at least 1.
            blank = {target} | {
                member
                for relation in counts.totals
                if target in (members := {relation.total, *relation.parts})
                for member in members & (sensitive | complementary)
            }
            if blank <= withheld:
                raise DataError(
                    f"count {target} cannot be protected: every count related to it is hidden",
                    hint="too few people behind these tables to publish their counts: "
                    "withhold them",
                )
            withheld.update(blank)
            pinned = exposed(sensitive)
            continue

        def unpins(keys: tuple, target: Key = target) -> bool:
            # The cover is sought by the rank test alone (fast); the bounds are checked on the
            # next round, which adds more cells if they still pin the target.
            return not exposed([target], keys, with_bounds=False)

        needs = [
            members - {target}
            for members in ({relation.total, *relation.parts} for relation in counts.totals)
            if target in members and not (members - {target}) & hidden
        ]
        cover = _cheapest_cover(candidates, counts, unpins, needs)
        complementary.update(cover or candidates[:1])
        pinned = exposed(pinned)
    optional = complementary - decided - withheld
    for key in sorted(optional, key=lambda key: (-counts.cost(key), str(key))):
        complementary.discard(key)
        if exposed(_sensitive_linked_to(counts.totals, key, sensitive), stop_at_first=True):
            complementary.add(key)
    return SuppressionPlan(
        k, sensitive, frozenset(complementary), counts.always_hidden | frozenset(withheld)
    )


def _sensitive_linked_to(relations: Sequence[Total], key: Key, sensitive: frozenset) -> set:
    """Sensitive cells that share a chain of relations with `key` (the ones it can affect)."""
    linked, frontier = {key}, {key}
    while frontier:
        reached = {
            member
            for relation in relations
            if frontier & {relation.total, *relation.parts}
            for member in (relation.total, *relation.parts)
        }
        frontier = reached - linked
        linked |= reached
    return linked & sensitive


def _candidates(counts: PublishedCounts, target: Key, hidden: frozenset) -> list:
    """Published positive counts to hide next, cheapest first: those within two relations of
    the target or of the hidden cells linked to it (a rectangle around it is in reach)."""
    relations = counts.totals
    linked = {target}
    while True:
        keys = {
            key
            for relation in relations
            if linked & {relation.total, *relation.parts}
            for key in (relation.total, *relation.parts)
        }
        grown = linked | {key for key in keys if key in hidden}
        if grown == linked:
            break
        linked = grown
    reach = keys | {
        key
        for relation in relations
        if keys & {relation.total, *relation.parts}
        for key in (relation.total, *relation.parts)
    }
    return sorted(
        (key for key in reach if key not in hidden and counts.cells[key] > 0),
        key=lambda key: (counts.cost(key), str(key)),
    )


def _cheapest_cover(candidates: list, counts: PublishedCounts, unpins, needs: list[set]) -> tuple:
    """The set of at most COVER_SIZE candidates with the smallest total that unpins the target
    (the hypercube idea of sdcTable: a rectangle of complements around a cell); among the
    COVER_POOL smallest candidates. Empty if none does.

    `needs`: sets of which a cover must hide at least one cell each (a relation in which the
    target is the only hidden cell gives it away by subtraction); checked before the rank test.
    """
    pool = candidates[:COVER_POOL]
    sets = [
        combination
        for size in range(1, COVER_SIZE + 1)
        for combination in itertools.combinations(pool, size)
        if all(need.intersection(combination) for need in needs)
    ]
    sets.sort(key=lambda keys: (sum(counts.cost(key) for key in keys), len(keys)))
    return next((keys for keys in sets if unpins(keys)), ())


def protection_holes(counts: PublishedCounts, plan: SuppressionPlan) -> set:
    """Sensitive cells a reader could recover under this plan (empty for a safe plan)."""
    withheld = plan.always_hidden - counts.always_hidden
    bounds = reader_bounds(counts, plan.sensitive, plan.complementary, plan.min_cell_size, withheld)
    return pinned_cells(counts, bounds, plan.sensitive)


# --- tables of counts -------------------------------------------------------------------------


def frame_counts(
    frame: pd.DataFrame, table: str, label: str, count_columns: Sequence[str]
) -> PublishedCounts:
    """The counts of a plain table, keyed (table, row label, column); no relations yet."""
    cells = {
        (table, row[label], column): int(row[column])
        for _, row in frame.iterrows()
        for column in count_columns
        if pd.notna(row[column])
    }
    return PublishedCounts(cells)


def apply_plan(
    frame: pd.DataFrame,
    plan: SuppressionPlan,
    table: str,
    label: str,
    count_columns: Sequence[str],
    estimate_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """A plain table as the plan shows it; a row with a hidden count loses its estimates."""
    result = frame.copy()
    hidden_rows = pd.Series(False, index=frame.index)
    for column in count_columns:
        keys = [(table, value, column) for value in frame[label]]
        hidden = pd.Series([key in plan.hidden for key in keys], index=frame.index)
        result[column] = [
            plan.shown(key, value) for key, value in zip(keys, frame[column], strict=True)
        ]
        hidden_rows |= hidden
    for column in estimate_columns:
        result[column] = result[column].astype(object).where(~hidden_rows, np.nan)
    result[SUPPRESSED_COLUMN] = hidden_rows
    return result


# The key (in place of a row label) of a column's total over the rows.
COLUMN_TOTAL = ("column total",)


def row_total_counts(
    frame: pd.DataFrame, table: str, label: str, total: str, parts: Sequence[str]
) -> PublishedCounts:
    """The counts of a table whose rows' `parts` add up to their `total`, with those relations."""
    counts = frame_counts(frame, table, label, [total, *parts])
    relations = tuple(
        Total((table, row, total), tuple((table, row, part) for part in parts))
        for row in frame[label]
    )
    return PublishedCounts(counts.cells, relations)


def column_sums(counts: PublishedCounts, table: str, rows: Sequence, column: str) -> tuple:
    """An unpublished cell holding a column's sum over `rows`, and its relation: for linking
    the sum to counts another table shows (the flow's recovered is the groups' recovered)."""
    parts = tuple((table, row, column) for row in rows)
    key = (table, COLUMN_TOTAL, column)
    sums = PublishedCounts(
        {key: sum(counts.cells[part] for part in parts)}, unpublished=frozenset({key})
    )
    return sums, Total(key, parts)


def suppress_with_row_totals(
    frame: pd.DataFrame,
    min_cell_size: int,
    label: str,
    total: str,
    parts: Sequence[str],
    table: str = "table",
    row_totals_shown_elsewhere: bool = False,
    column_totals_shown_elsewhere: bool = False,
) -> pd.DataFrame:
    """A table whose rows' `parts` add up to their `total`, with its own suppression plan.

    Counts below min_cell_size show as "<k" and, where the row total and the other parts would
    give a hidden count back by subtraction, the cheapest complementary cells as "suppressed".
    With `row_totals_shown_elsewhere` the report shows the row totals in other tables (a
    group's n as its number at risk at time 0), with `column_totals_shown_elsewhere` each
    part's sum over the rows (the flow's recovered, withdrawn, lost + end of follow-up): the
    plan then counts them as known to the reader and never hides one as a complement. For a
    report with its flow and Table 1, `plan_report` plans them all at once.
    """
    counts = row_total_counts(frame, table, label, total, parts)
    elsewhere = set()
    if row_totals_shown_elsewhere:
        elsewhere = {relation.total for relation in counts.totals}
    sums, links = [], []
    if column_totals_shown_elsewhere:
        for column in parts:
            column_sum, relation = column_sums(counts, table, list(frame[label]), column)
            (key,) = column_sum.cells
            # Known to the reader: published, never hidden (a sum below k shows as "<k" there).
            sums.append(PublishedCounts(column_sum.cells))
            links.append(relation)
            elsewhere.add(key)
    combined = counts.combine(*sums, links=links)
    plan = plan_suppression(replace(combined, shown_elsewhere=frozenset(elsewhere)), min_cell_size)
    return apply_plan(frame, plan, table, label, [total, *parts])


# --- a report's count tables, planned at once --------------------------------------------------

OUTCOMES_TABLE = "outcomes by group"
OUTCOMES_LABEL = "group"
OUTCOMES_TOTAL = "n"


@dataclass(frozen=True)
class ReportCounts:
    """The exact count tables of one report (NOT for publishing), for `plan_report`.

    `outcomes`: one row per group shown (OUTCOMES_LABEL), its n and how follow-up ended
    (`outcome_parts`); `table_one`: the flattened exact Table 1 and its group columns; `flow`:
    the cohort flow (stage, n, detail) with its `flow_chain`, and `flow_sums`: per outcome
    column (OUTCOMES_TOTAL too), the flow stages whose counts add up to its sum over the groups.
    """

    outcomes: pd.DataFrame
    outcome_parts: tuple[str, ...]
    table_one: pd.DataFrame | None = None
    table_one_groups: tuple[str, ...] = ()
    flow: pd.DataFrame | None = None
    flow_chain: tuple = ()
    flow_sums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def plan_report(
    tables: ReportCounts, min_cell_size: int, decided: Iterable[Key] = ()
) -> SuppressionPlan:
    """One plan for a report's counts: its outcomes by group, Table 1 and flow, and every way
    they add up across tables (a group's n in the outcomes and in Table 1 is one count; the
    flow's analysed, recovered, withdrawn, lost + end of follow-up are the groups' sums). The
    sizes of the groups shown are also the risk table's numbers at time 0: never hidden.
    `decided`: cells another plan hides (the site plan's, in Table 1's site rows).
    """
    k = check_min_cell_size(min_cell_size)
    outcomes = tables.outcomes
    groups = list(outcomes[OUTCOMES_LABEL])
    counts = row_total_counts(
        outcomes, OUTCOMES_TABLE, OUTCOMES_LABEL, OUTCOMES_TOTAL, tables.outcome_parts
    )
    sizes = (relation.total for relation in counts.totals)
    parts = [
        replace(counts, shown_elsewhere=frozenset(key for key in sizes if counts.cells[key] >= k))
    ]
    links = []
    if tables.table_one is not None:
        table_one = table_one_counts(tables.table_one, tables.table_one_groups, k)
        parts.append(table_one)
        links += [
            same_count((OUTCOMES_TABLE, g, OUTCOMES_TOTAL), key)
            for g in groups
            if (key := (TABLE_ONE, TABLE_ONE_N_ROW, "", g)) in table_one.cells
        ]
    if tables.flow is not None:
        flow = flow_counts(tables.flow, tables.flow_chain)
        parts.append(flow)
        for column, stages in tables.flow_sums.items():
            column_sum, relation = column_sums(counts, OUTCOMES_TABLE, groups, column)
            (total,) = column_sum.cells
            parts.append(column_sum)
            links.append(relation)
            links.append(Total(total, tuple(key for key in flow.cells if key[1] in stages)))
    combined = parts[0].combine(*parts[1:], links=links)
    absent = [key for key in decided if key not in combined.cells]
    if absent:
        raise DataError(f"the report has no count {absent[0]} that another plan hides")
    return plan_suppression(combined, k, decided)


@dataclass(frozen=True)
class PublishedTables:
    """A report's count tables as `plan_report`'s plan shows them."""

    outcomes: pd.DataFrame
    table_one: pd.DataFrame | None
    flow: pd.DataFrame | None


def publish_report(tables: ReportCounts, plan: SuppressionPlan) -> PublishedTables:
    """The tables of `tables` with the plan's cells hidden (and what they would give away)."""
    columns = [OUTCOMES_TOTAL, *tables.outcome_parts]
    return PublishedTables(
        outcomes=apply_plan(tables.outcomes, plan, OUTCOMES_TABLE, OUTCOMES_LABEL, columns),
        table_one=None
        if tables.table_one is None
        else apply_table_one_plan(tables.table_one, tables.table_one_groups, plan),
        flow=None if tables.flow is None else apply_flow_plan(tables.flow, plan),
    )


# --- groups within sites: one plan for the study report and every site report ----------------

SITE_GROUP_TABLE = "sites by group"
# The key (in place of a group) of a site's size over its groups.
SITE_TOTAL = ("site total",)
# Hiding a site's size costs the whole-study Table 1 one number; hiding a group at a site
# leaves that group out of the site's report: the planner hides sizes first.
SITE_TOTAL_COST = 1.0


def site_group_counts(recovery: pd.DataFrame, site: str, group: str) -> pd.DataFrame:
    """People per site (rows, as text) and group (columns), among those with both known."""
    known = recovery[recovery[site].notna() & recovery[group].notna()]
    table = pd.crosstab(known[site].astype(str), known[group])
    table.index.name, table.columns.name = None, None
    return table


def plan_site_groups(table: pd.DataFrame, min_cell_size: int) -> SuppressionPlan:
    """Which groups each site report leaves out, planned once for all the reports of a study.

    A site's report shows each of its groups' sizes (n, at risk at time 0, Table 1); the
    whole-study report shows each group's size and, in Table 1's site rows, each site's size and
    its groups. Read together they are one two-way table, sites by groups, with both margins:
    a group of fewer than k people at a site would come back as the site's size minus its other
    groups, or as the group's size minus the other sites' reports. So the group cells
    (SITE_GROUP_TABLE, site, group) and the site sizes (SITE_GROUP_TABLE, site, SITE_TOTAL) are
    planned together; a whole group's size (COLUMN_TOTAL) is shown everywhere and never hidden,
    and a site's size is cheap to hide (SITE_TOTAL_COST). A hidden group cell is a group that
    site's report leaves out (`site_groups_left_out`) and Table 1 hides (`table_one_site_cells`).
    """
    cells: dict[Key, int] = {}
    relations, costs = [], {}
    for site, row in table.iterrows():
        parts = tuple((SITE_GROUP_TABLE, site, group) for group in table.columns)
        cells.update({key: int(value) for key, value in zip(parts, row, strict=True)})
        total = (SITE_GROUP_TABLE, site, SITE_TOTAL)
        cells[total] = int(row.sum())
        costs[total] = SITE_TOTAL_COST
        relations.append(Total(total, parts))
    group_sizes = set()
    for group in table.columns:
        key = (SITE_GROUP_TABLE, COLUMN_TOTAL, group)
        cells[key] = int(table[group].sum())
        relations.append(Total(key, tuple((SITE_GROUP_TABLE, site, group) for site in table.index)))
        group_sizes.add(key)
    counts = PublishedCounts(
        cells, tuple(relations), shown_elsewhere=frozenset(group_sizes), costs=costs
    )
    return plan_suppression(counts, min_cell_size)


def site_plan(
    recovery: pd.DataFrame, site: str, group: str, min_cell_size: int
) -> tuple[pd.DataFrame, SuppressionPlan]:
    """The sites-by-group counts of a study and their plan (`plan_site_groups`)."""
    counts = site_group_counts(recovery, site, group)
    return counts, plan_site_groups(counts, min_cell_size)


def site_groups_left_out(plan: SuppressionPlan, table: pd.DataFrame, site: str) -> list:
    """The groups with people at `site` that its report leaves out under the site plan."""
    return [
        group
        for group in table.columns
        if table.at[site, group] > 0 and (SITE_GROUP_TABLE, site, group) in plan.hidden
    ]


def sites_with_report(plan: SuppressionPlan, table: pd.DataFrame) -> list[str]:
    """Sites with a report: at least min_cell_size people and a group the plan shows."""
    return [
        site
        for site in table.index
        if table.loc[site].sum() >= plan.min_cell_size
        and len(site_groups_left_out(plan, table, site)) < int((table.loc[site] > 0).sum())
    ]


def table_one_site_cells(plan: SuppressionPlan, variable: str, table: str = TABLE_ONE) -> set:
    """The site plan's complementary cells as keys of Table 1's site rows (`table_one_counts`):
    Table 1 hides them too, or a site report's group would undo Table 1's protection."""
    return {
        (table, variable, site, TABLE_ONE_OVERALL if column == SITE_TOTAL else column)
        for _, site, column in plan.complementary
    }


# A count of people quoted in text: "n=3", "n = 3", "3 people", "3 participants", "1 person".
_COUNT_IN_TEXT = re.compile(r"\b(n\s*=\s*|)(\d+)(\s+(?:people|participants|person)\b|)")


def mask_small_counts_in_text(table: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Text cells quoting a count of people below min_cell_size ("n=3", "3 people") show "<k"."""

    def mask(text):
        if not isinstance(text, str):
            return text

        def replace(match: re.Match) -> str:
            prefix, number, suffix = match.groups()
            if not (prefix or suffix) or not 0 < int(number) < min_cell_size:
                return match.group(0)
            return f"{prefix}{mark(min_cell_size)}{suffix}"

        return _COUNT_IN_TEXT.sub(replace, text)

    result = table.copy()
    for name in result.columns:
        if result[name].dtype == object:
            result[name] = result[name].map(mask)
    return result


# --- Table 1 ----------------------------------------------------------------------------------


def _leading_count(cell) -> int | None:
    match = re.match(r"\s*(\d+)", str(cell))
    return int(match.group(1)) if match else None


def table_one_counts(
    flat: pd.DataFrame, groups: Sequence[str], min_cell_size: int, table: str = TABLE_ONE
) -> PublishedCounts:
    """The counts a flattened Table 1 publishes and how they add up.

    Keys: (table, variable, level, column) with variable "n" for the group sizes. Relations: a
    column's levels of each categorical variable sum to its n; a level's Overall count is the
    sum over groups (and so is n); the Missing count of a categorical variable is its missing
    level in the Overall column. A group with fewer than min_cell_size people is blanked whole.
    """
    columns = [name for name in [TABLE_ONE_OVERALL, *groups] if name in flat]
    shown_groups = [name for name in groups if name in flat]
    variable, level = flat.columns[0], flat.columns[1]
    cells: dict[Key, int] = {}
    totals: list[Total] = []
    n_row = flat[flat[variable] == TABLE_ONE_N_ROW]
    for column in columns:
        cells[(table, TABLE_ONE_N_ROW, "", column)] = _leading_count(n_row[column].iloc[0])
    n_key = {column: (table, TABLE_ONE_N_ROW, "", column) for column in columns}
    if TABLE_ONE_OVERALL in columns and shown_groups:
        totals.append(Total(n_key[TABLE_ONE_OVERALL], tuple(n_key[g] for g in shown_groups)))
    tiny = [g for g in shown_groups if cells[n_key[g]] < min_cell_size]
    always_hidden = set()
    categorical = flat[flat[variable].str.endswith(CATEGORICAL_SUFFIX)]
    for name, rows in categorical.groupby(variable, sort=False):
        for column in columns:
            keys = []
            for value, cell in zip(rows[level], rows[column], strict=True):
                key = (table, name, value, column)
                cells[key] = _leading_count(cell) or 0
                keys.append(key)
                if column in tiny:
                    always_hidden.add(key)
            totals.append(Total(n_key[column], tuple(keys)))
        if TABLE_ONE_OVERALL in columns and shown_groups:
            for value in rows[level]:
                totals.append(
                    Total(
                        (table, name, value, TABLE_ONE_OVERALL),
                        tuple((table, name, value, g) for g in shown_groups),
                    )
                )
    if TABLE_ONE_MISSING in flat:
        for name, rows in flat.groupby(variable, sort=False):
            missing = _leading_count(rows[TABLE_ONE_MISSING].iloc[0])
            if name == TABLE_ONE_N_ROW or missing is None:
                continue
            key = (table, name, "", TABLE_ONE_MISSING)
            cells[key] = missing
            missing_level = [value for value in rows[level] if value in MISSING_LEVELS]
            if missing_level and TABLE_ONE_OVERALL in columns:
                totals.append(same_count(key, (table, name, missing_level[0], TABLE_ONE_OVERALL)))
    for group in tiny:
        # The n of a group too small to show is its one visible cell ("<k").
        always_hidden.discard(n_key[group])
    # Every report shows the sizes of the groups it shows elsewhere too (outcomes by group, at
    # risk at time 0): hiding one here would protect nothing.
    shown_sizes = {n_key[group] for group in shown_groups if group not in tiny}
    return PublishedCounts(
        cells,
        tuple(totals),
        always_hidden=frozenset(always_hidden),
        shown_elsewhere=frozenset(shown_sizes),
    )


def smd_columns(table: pd.DataFrame) -> list[str]:
    """The standardized-mean-difference columns of a flattened Table 1."""
    return [name for name in table.columns if str(name).startswith(SMD_PREFIX)]


def _smd_mentions(smd: str, column: str) -> bool:
    return re.search(rf"[(,]{re.escape(column)}[,)]", smd) is not None


def apply_table_one_plan(
    flat: pd.DataFrame, groups: Sequence[str], plan: SuppressionPlan, table: str = TABLE_ONE
) -> pd.DataFrame:
    """A flattened Table 1 as the plan shows it, with what hidden counts would give away.

    A hidden count loses its percentage; a column whose n is hidden shows counts without
    percentages (count / percentage would give n back); a group blanked whole loses its
    summaries; an SMD goes where a count of its variable is hidden in either group it compares
    (with the group sizes, a binary SMD pins the counts) or where a group it compares is blanked.
    """
    result = flat.copy()
    variable, level = flat.columns[0], flat.columns[1]
    columns = [name for name in [TABLE_ONE_OVERALL, *groups] if name in flat]
    n_hidden = {c: (table, TABLE_ONE_N_ROW, "", c) in plan.hidden for c in columns}
    blanked = [c for c in columns if (table, TABLE_ONE_N_ROW, "", c) in plan.sensitive]
    hidden_in = {}  # variable -> columns where one of its counts is hidden
    for row, (name, value) in enumerate(zip(flat[variable], flat[level], strict=True)):
        index = flat.index[row]
        for column in columns:
            key = (table, name, value if name != TABLE_ONE_N_ROW else "", column)
            cell = flat.at[index, column]
            if column in blanked and name != TABLE_ONE_N_ROW:
                result.at[index, column] = ""
            elif key in plan.hidden:
                result.at[index, column] = plan.shown(key, cell)
                hidden_in.setdefault(name, set()).add(column)
            elif n_hidden[column] and name.endswith(CATEGORICAL_SUFFIX):
                result.at[index, column] = str(_leading_count(cell))
        if TABLE_ONE_MISSING in flat:
            key = (table, name, "", TABLE_ONE_MISSING)
            if key in plan.hidden:
                cell = flat.at[index, TABLE_ONE_MISSING]
                result.at[index, TABLE_ONE_MISSING] = plan.shown(key, cell)
    for smd in smd_columns(result):
        compared = [c for c in columns if _smd_mentions(smd, c)]
        if any(c in blanked for c in compared):
            result[smd] = ""
            continue
        for name, where in hidden_in.items():
            if where & set(compared):
                result.loc[result[variable] == name, smd] = ""
    return result


def suppress_table_one(
    flat: pd.DataFrame, groups: Sequence[str], min_cell_size: int, table: str = TABLE_ONE
) -> pd.DataFrame:
    """A flattened Table 1 with its own suppression plan (for a report, `plan_report`)."""
    counts = table_one_counts(flat, groups, min_cell_size, table)
    return apply_table_one_plan(flat, groups, plan_suppression(counts, min_cell_size), table)


# --- cohort flow ------------------------------------------------------------------------------


def flow_counts(flow: pd.DataFrame, chain: Sequence[tuple], table: str = "flow") -> PublishedCounts:
    """The counts of a cohort flow (stage, n, detail) and how its stages add up.

    `chain` lists (total stage, part stages, next stage): total = the parts + the next stage,
    or, with next stage None, total = the parts (the outcomes of those analysed). Rows are keyed
    (table, stage, detail).
    """
    cells = {
        (table, stage, detail): int(n)
        for stage, n, detail in zip(flow["stage"], flow["n"], flow["detail"], strict=True)
    }

    def keys(stages: Iterable[str]) -> tuple:
        return tuple(key for key in cells if key[1] in set(stages))

    totals = []
    for total_stage, part_stages, next_stage in chain:
        total = keys([total_stage])
        parts = keys(part_stages) + (keys([next_stage]) if next_stage is not None else ())
        if total and parts:
            totals.append(Total(total[0], parts))
    return PublishedCounts(cells, tuple(totals))


def apply_flow_plan(flow: pd.DataFrame, plan: SuppressionPlan, table: str = "flow") -> pd.DataFrame:
    """The flow as the plan shows it (n as object: counts, "<k" or "suppressed")."""
    result = flow.copy()
    result["n"] = [
        plan.shown((table, stage, detail), n)
        for stage, n, detail in zip(flow["stage"], flow["n"], flow["detail"], strict=True)
    ]
    return result


# --- curves -----------------------------------------------------------------------------------


def attach_counts(
    curve: pd.DataFrame,
    people: pd.DataFrame,
    person_time: str,
    person_event: str,
    time: str = "time",
    by: str | None = "group",
) -> pd.DataFrame:
    """The curve with n_risk (people whose time is >= t) and n_event (events in the time
    since the curve's previous row, up to t) on each row, from one row per person.

    For a curve a fit table gives without counts (cumulative incidence, Turnbull). For
    Turnbull, give each person the time their status became known (the visit that saw the
    recovery, or the last visit): the counts are then those a reader could attribute to a step.
    """
    parts = [(None, curve)] if by is None else list(curve.groupby(by, sort=False))
    counted = []
    for level, part in parts:
        group = people if by is None else people[people[by] == level]
        times = pd.to_numeric(group[person_time]).to_numpy(float)
        events = times[group[person_event].astype(bool).to_numpy()]
        part = part.sort_values(time, kind="stable")
        grid = pd.to_numeric(part[time]).to_numpy(float)
        cumulative = np.searchsorted(np.sort(events), grid, side="right")
        counted.append(
            part.assign(
                n_risk=(times[:, None] >= grid[None, :]).sum(axis=0),
                n_event=np.diff(cumulative, prepend=0),
            )
        )
    return pd.concat(counted) if counted else curve.assign(n_risk=0, n_event=0)


def _per_curve(
    curve: pd.DataFrame,
    time: str,
    by: str | None,
    keep: Callable[[pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame:
    """`keep` applied to each group's curve in time order (the whole frame when `by` is None)."""
    parts = [curve] if by is None else [part for _, part in curve.groupby(by, sort=False)]
    kept = [keep(part.sort_values(time, kind="stable")) for part in parts]
    return pd.concat(kept) if kept else curve.iloc[:0]


def truncate_curve(
    curve: pd.DataFrame,
    min_cell_size: int,
    n_risk: str = "n_risk",
    time: str = "time",
    by: str | None = "group",
) -> pd.DataFrame:
    """The curve up to (not including) the first time fewer than min_cell_size are at risk.

    Applies to curves and to numbers-at-risk tables alike: both end there.
    """

    def up_to_first_small(part: pd.DataFrame) -> pd.DataFrame:
        too_few = (pd.to_numeric(part[n_risk]) < min_cell_size).to_numpy()
        return part.iloc[: int(np.argmax(too_few)) if too_few.any() else len(part)]

    return _per_curve(curve, time, by, up_to_first_small)


def coarsen_steps(
    curve: pd.DataFrame,
    min_cell_size: int,
    n_event: str = "n_event",
    time: str = "time",
    by: str | None = "group",
) -> pd.DataFrame:
    """Only the steps that rest on at least min_cell_size events since the last step drawn.

    Rows are event times with the estimate at that time; a row is kept once the events at it
    and at the dropped rows since the last kept one reach k. Drawn as a step function, the curve
    then jumps straight to the true value at that time, so no step reveals fewer than k events;
    events after the last kept step (fewer than k) are not drawn. Truncate first.
    """

    def steps_of_enough_events(part: pd.DataFrame) -> pd.DataFrame:
        keep = np.zeros(len(part), dtype=bool)
        accumulated = 0
        for i, events in enumerate(pd.to_numeric(part[n_event]).to_numpy()):
            accumulated += events
            if accumulated >= min_cell_size:
                keep[i] = True
                accumulated = 0
        return part[keep]

    return _per_curve(curve, time, by, steps_of_enough_events)


def safe_curve(
    curve: pd.DataFrame,
    min_cell_size: int,
    n_risk: str = "n_risk",
    n_event: str = "n_event",
    time: str = "time",
    by: str | None = "group",
    n_censor: str = "n_censor",
) -> pd.DataFrame:
    """A curve fit to publish: truncated where fewer than k are at risk, steps of >= k events.

    The count columns (and `n_censor` where present: per-time censorings are single people)
    are dropped: the report shows numbers at risk in its own table and censoring marks from
    `safe_censor_marks`.
    """
    truncated = truncate_curve(curve, min_cell_size, n_risk, time, by)
    coarse = coarsen_steps(truncated, min_cell_size, n_event, time, by)
    return coarse.drop(columns=[n_risk, n_event, *([n_censor] if n_censor in coarse else [])])


def safe_at_risk(
    at_risk: pd.DataFrame,
    min_cell_size: int,
    n_risk: str = "n_risk",
    time: str = "time",
    by: str | None = "group",
) -> pd.DataFrame:
    """A numbers-at-risk table fit to publish under a curve: each group's rows end where fewer
    than min_cell_size are at risk, so every count shown is >= k (nothing is marked "<k")."""
    return truncate_curve(at_risk, min_cell_size, n_risk, time, by).reset_index(drop=True)


def safe_censor_marks(
    curve: pd.DataFrame,
    min_cell_size: int,
    n_risk: str = "n_risk",
    n_censor: str = "n_censor",
    time: str = "time",
    by: str | None = "group",
) -> pd.DataFrame:
    """Times at which a curve may show a censoring mark: each stands for >= k people censored.

    A mark at the exact time of one censored person tells when that person left; so, as steps
    are coarsened, a mark is placed once at least min_cell_size censorings have accumulated since
    the previous one, and only where the curve itself is shown (truncated first). Returns the
    `by` and `time` columns only.
    """
    truncated = truncate_curve(curve, min_cell_size, n_risk, time, by)
    marks = coarsen_steps(truncated, min_cell_size, n_censor, time, by)
    return marks[[name for name in (by, time) if name is not None]].reset_index(drop=True)


def safe_curve_for_people(
    curve: pd.DataFrame,
    people: pd.DataFrame,
    person_time: str,
    person_event: str,
    min_cell_size: int,
    group: str | None = None,
    whole_cohort: str = "all",
    by: str = "group",
    time: str = "time",
) -> pd.DataFrame:
    """`safe_curve` for a curve fitted without counts (Turnbull), counted from one row per person.

    The curve's `by` column names a level of `group` in `people`, or `whole_cohort` for a curve
    of everyone; `person_time` is when each person's status became known (see `attach_counts`).
    """
    parts = []
    for level, part in curve.groupby(by, sort=False):
        if level == whole_cohort:
            members = people
        elif group is not None:
            members = people[people[group] == level]
        else:
            raise DataError(
                f"the curve has a group {level!r} but no group column was given",
                column=by,
                hint="pass group= (the people's group column)",
            )
        counted = attach_counts(part, members, person_time, person_event, time=time, by=None)
        parts.append(safe_curve(counted, min_cell_size, time=time, by=None))
    return pd.concat(parts, ignore_index=True) if parts else curve.iloc[:0]


def safe_cumulative_incidence(
    incidence: pd.DataFrame,
    people: pd.DataFrame,
    person_time: str,
    person_event_type: str,
    group: str,
    min_cell_size: int,
    event: str = "event",
    by: str = "group",
    time: str = "time",
) -> pd.DataFrame:
    """Cumulative incidence curves (group, event, time, ...) fit to publish, per group and event.

    Each curve ends where fewer than min_cell_size of its group are at risk, and steps only once
    at least k events of its type have accumulated (a step of 1/n reveals one person).
    """
    parts = []
    for label, curves in incidence.groupby(event, sort=False):
        members = people.assign(
            **{by: people[group], "_had_event": people[person_event_type] == label}
        )
        counted = attach_counts(curves, members, person_time, "_had_event", time=time, by=by)
        parts.append(safe_curve(counted, min_cell_size, time=time, by=by))
    return pd.concat(parts, ignore_index=True) if parts else incidence.iloc[:0]


def require_safe_counts(
    frame: pd.DataFrame, count: str, min_cell_size: int | None, what: str, hint: str
) -> None:
    """Refuse a frame that shows a count of people below min_cell_size (a figure draws what it is
    given; deciding what to hide is this module's job, done before)."""
    if min_cell_size is None or count not in frame:
        return
    values = pd.to_numeric(frame[count], errors="coerce")
    unsafe = values < min_cell_size
    if unsafe.any():
        raise DataError(
            f"{what} has {int(unsafe.sum())} row(s) with {count} below {min_cell_size} "
            f"(smallest {int(values[unsafe].min())}); it was not made safe to publish",
            column=count,
            hint=hint,
        )


# --- what counts as a count: the published-output check ----------------------------------------

# Column names (compared in lower case, stripped) that count people or events in a published
# table: a value 0 < v < k in one of them is a small cell. Decided here, once, for the report
# checks and the tests. Not counts, whatever their values: estimates and their intervals,
# standard errors, statistics, p-values, degrees of freedom, times (days, weeks, horizons),
# expected counts (log-rank `expected` is a model quantity), `observed` (a proportion in the
# calibration table), and counts of things that are not people (`cells` and `inside observed
# 95% CI` of a mixed model's fit check, bytes of a file).
COUNT_COLUMNS = frozenset(
    {
        "n",
        "n_risk",
        "n_event",
        "n_censor",
        "events",
        "people",
        "participants",
        "n_in_profile",
        "recovered",
        "withdrawn",
        "censored",
        "lost",
        "at risk",
        "number at risk",
    }
)
# The columns of a wide risk table: people at risk at week N.
_AT_RISK_AT_WEEK = re.compile(r"^week \d+$")
# A Table 1 cell "count (percent)": a count of people wherever the table shows categorical
# variables as n (%). Mean (SD) and median (IQR) cells are told apart by their decimals and
# their interval.
_COUNT_PERCENT_CELL = re.compile(r"^\s*(\d+)\s*\(\s*\d+(?:\.\d+)?\s*%?\s*\)\s*$")


def is_count_column(name) -> bool:
    """Whether a published column counts people or events (see COUNT_COLUMNS)."""
    label = str(name).strip().lower()
    return label in COUNT_COLUMNS or bool(_AT_RISK_AT_WEEK.match(label))


def small_counts_shown(table: pd.DataFrame, min_cell_size: int) -> list[str]:
    """Every count below min_cell_size (and above 0) a published table shows, as
    "column: value" findings: count columns by name, and "n (%)" cells of a table that shows
    categorical variables as n (%). Text marks ("<5", "suppressed") are not counts."""
    findings = []
    for column in table.columns:
        if not is_count_column(column):
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        for value in values[(values > 0) & (values < min_cell_size)]:
            findings.append(f"{column}: {value:g}")
    text = table.astype(str)
    shows_n_percent = text.apply(lambda column: column.str.contains(r"n \(%\)", regex=True)).any()
    if shows_n_percent.any() or any("n (%)" in str(name) for name in table.columns):
        for column in table.columns:
            for cell in text[column]:
                match = _COUNT_PERCENT_CELL.match(cell)
                if match and 0 < int(match.group(1)) < min_cell_size:
                    findings.append(f"{column}: {cell.strip()}")
    return findings
