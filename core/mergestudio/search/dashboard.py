"""What a search's live plots draw, derived from its trials: Qt-free, numpy only.

A ``TrialHistory`` holds a run's complete trials as columns, in the order they finished
(the x axis of every "vs evaluations" plot). Pure functions derive the rest: the best
value so far, per-generation mean and spread, Pareto fronts in any two objectives and as
a step line, parallel-coordinate polylines, the hypervolume after every trial, and the
genome laid out as a (model/parameter × lane/layer group) grid, and axis ranges that
move in steps as the trials come in. The Qt page redraws from these; the benchmark and
the tests check them without a window.

``TrialHistory.from_run`` rebuilds the same history from a run folder, so a reopened
run draws what the live one drew.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from mergestudio.search.pareto import hypervolume
from mergestudio.search.spec import Direction

if TYPE_CHECKING:
    from mergestudio.search.spec import SearchSpec
    from mergestudio.search.store import TrialRecord

_Scalar = TypeVar("_Scalar", bound=np.generic)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# What a metric's number is, for axis labels.
METRIC_UNITS: dict[str, str] = {
    "acc": "accuracy",
    "acc_norm": "accuracy (length-normalised)",
    "exact_match": "exact-match accuracy",
    "perplexity": "perplexity",
    "nll_per_token": "nats per token",
    "bits_per_byte": "bits per byte",
}
LANES = ("attention", "mlp", "other")
_GENE_NAME = re.compile(r"^(?P<prefix>[^@]+?)(?:\.(?P<lane>attention|mlp|other))?(?:@(?P<group>\d+))?$")


@dataclass(frozen=True)
class ObjectiveAxis:
    """One objective as the plots label it."""

    name: str
    direction: Direction
    metric: str
    task: str
    specialist: str | None = None  # the model the spec names for normalized accuracy

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def unit(self) -> str:
        return METRIC_UNITS.get(self.metric, self.metric)

    @property
    def label(self) -> str:
        """``reverse: exact-match accuracy ↑`` (the arrow points the better way)."""
        return f"{self.name}: {self.unit} {'↑' if self.maximize else '↓'}"


@dataclass(frozen=True)
class GeneBounds:
    name: str
    low: float
    high: float


# ---- the history --------------------------------------------------------------------------


class TrialHistory:
    """A run's complete trials as growing columns (amortised O(1) appends).

    Invariants: rows are in completion order; a trial number appears at most once;
    ``values[:, j]`` is objective ``objectives[j]``, ``study[:, j]`` what the optimiser saw
    (the objectives, or the one weighted score), ``genomes[:, j]`` gene ``genes[j]``.
    """

    def __init__(
        self,
        objectives: Sequence[ObjectiveAxis],
        genes: Sequence[GeneBounds],
        study_directions: Sequence[Direction],
        population_size: int,
        study_references: Sequence[float | None] | None = None,
    ) -> None:
        self.objectives = tuple(objectives)
        self.genes = tuple(genes)
        self.study_directions = tuple(study_directions)
        self.study_references: tuple[float | None, ...] = tuple(
            study_references if study_references is not None else [None] * len(study_directions)
        )
        self.population_size = population_size
        self.version = 0  # bumped on every change: views cache derived data by it
        self._size = 0
        self._numbers: IntArray = np.zeros(0, dtype=np.int64)
        self._generations: IntArray = np.zeros(0, dtype=np.int64)
        self._values: FloatArray = np.zeros((0, len(self.objectives)))
        self._study: FloatArray = np.zeros((0, len(self.study_directions)))
        self._genomes: FloatArray = np.zeros((0, len(self.genes)))
        self._durations: FloatArray = np.zeros(0)
        self._hypervolume: FloatArray = np.zeros(0)
        self._row: dict[int, int] = {}
        self.front: frozenset[int] = frozenset()
        self.recipes: dict[int, str] = {}  # trial number -> recipe YAML, where known
        self._front_mask: tuple[int, frozenset[int], BoolArray] = (-1, self.front, np.zeros(0, dtype=bool))

    @classmethod
    def for_spec(cls, spec: SearchSpec) -> TrialHistory:
        """An empty history shaped by a spec (reads the task files, loads no model)."""
        from mergestudio.search.objectives import Objectives
        from mergestudio.search.spec import build_genome

        objectives = Objectives.build(spec)
        genome = build_genome(spec)
        return cls(
            [ObjectiveAxis(o.name, o.direction, o.metric, o.task, o.specialist) for o in objectives.items],
            [GeneBounds(g.name, g.low, g.high) for g in genome.genes],
            objectives.directions,
            spec.algorithm.population_size,
            objectives.references,
        )

    @classmethod
    def from_run(cls, run_dir: str | Path) -> TrialHistory:
        """The history of the run in ``run_dir`` as its store holds it: complete trials,
        the Pareto front and the hypervolume after every trial, as the live run reported."""
        from mergestudio.search.store import RunFolder

        run = RunFolder(run_dir)
        history = cls.for_spec(run.load_spec())
        history.extend(run.records())
        return history

    # ---- adding ------------------------------------------------------------------------

    def add(
        self,
        number: int,
        generation: int,
        objectives: Mapping[str, float],
        study_values: Sequence[float],
        genome: Mapping[str, float],
        duration_s: float = 0.0,
        recipe_yaml: str = "",
    ) -> bool:
        """Append one complete trial; False (and nothing changes) if it is already here."""
        if number in self._row:
            return False
        self._grow(self._size + 1)
        row = self._size
        self._numbers[row] = number
        self._generations[row] = generation
        self._values[row] = [float(objectives.get(o.name, np.nan)) for o in self.objectives]
        self._study[row] = [float(v) for v in study_values]
        self._genomes[row] = [float(genome.get(g.name, np.nan)) for g in self.genes]
        self._durations[row] = duration_s
        self._hypervolume[row] = self._hypervolume[row - 1] if row else 0.0
        self._row[number] = row
        if recipe_yaml:
            self.recipes[number] = recipe_yaml
        self._size += 1
        self.version += 1
        return True

    def extend(self, records: Sequence[TrialRecord], hypervolume: bool = True) -> None:
        """Add the complete ones of ``records``, then recompute the front (and, with
        ``hypervolume``, the hypervolume curve) from the study values, as the engine's
        tracker does."""
        for record in records:
            if record.state == "complete":
                self.add(
                    record.number,
                    record.generation,
                    record.objectives,
                    record.study_values,
                    record.genome,
                    record.duration_s,
                    record.recipe_yaml,
                )
        self.recompute_front(hypervolume)

    def recompute_front(self, hypervolume: bool = True) -> None:
        """Front (and hypervolume curve) from the study values, for histories not fed by
        the engine's ParetoFrontChanged events. The curve is the slow part (exact
        hypervolumes in 4-D); leave it out to show a reopened run first."""
        if not self._size:
            return
        points = minimization(self.study, self.study_maximize)
        self.front = frozenset(int(n) for n in self.numbers[non_dominated_mask(points)])
        if hypervolume:
            self._hypervolume[: self._size] = self.hypervolume_curve()
        self.version += 1

    def hypervolume_curve(self) -> FloatArray:
        """The hypervolume after every trial, recomputed from the study values."""
        return hypervolume_history(minimization(self.study, self.study_maximize), self._reference_min())

    def set_hypervolume_curve(self, values: FloatArray) -> None:
        """A curve computed elsewhere (in a worker) for the trials held now."""
        count = min(self._size, values.shape[0])
        self._hypervolume[:count] = values[:count]
        self.version += 1

    def set_front(self, trials: Sequence[int], hypervolume_now: float) -> None:
        """The engine announced the front and hypervolume after the latest trial."""
        self.front = frozenset(int(t) for t in trials)
        if self._size:
            self._hypervolume[self._size - 1] = hypervolume_now
        self.version += 1

    def _grow(self, size: int) -> None:
        capacity = self._numbers.shape[0]
        if size <= capacity:
            return
        new = max(64, 2 * capacity, size)
        self._numbers = _resized(self._numbers, new)
        self._generations = _resized(self._generations, new)
        self._values = _resized(self._values, new)
        self._study = _resized(self._study, new)
        self._genomes = _resized(self._genomes, new)
        self._durations = _resized(self._durations, new)
        self._hypervolume = _resized(self._hypervolume, new)

    def _reference_min(self) -> list[float | None]:
        return [
            None if r is None else (-r if up else r)
            for r, up in zip(self.study_references, self.study_maximize, strict=True)
        ]

    # ---- columns (views, not copies: do not write to them) ------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def numbers(self) -> IntArray:
        return self._numbers[: self._size]

    @property
    def generations(self) -> IntArray:
        return self._generations[: self._size]

    @property
    def values(self) -> FloatArray:
        return self._values[: self._size]

    @property
    def study(self) -> FloatArray:
        return self._study[: self._size]

    @property
    def genomes(self) -> FloatArray:
        return self._genomes[: self._size]

    @property
    def durations(self) -> FloatArray:
        return self._durations[: self._size]

    @property
    def hypervolume(self) -> FloatArray:
        """Hypervolume of the study front after each trial (the engine's reference)."""
        return self._hypervolume[: self._size]

    @property
    def evaluations(self) -> IntArray:
        """1, 2, …, n: the x axis of the 'vs evaluations' plots."""
        return np.arange(1, self._size + 1, dtype=np.int64)

    @property
    def study_maximize(self) -> list[bool]:
        return [d == "maximize" for d in self.study_directions]

    def front_mask(self) -> BoolArray:
        """Which rows are on the front (read-only; computed once per change)."""
        version, front, mask = self._front_mask
        if version != self.version or front is not self.front:
            if self.front:
                mask = np.isin(self.numbers, np.fromiter(self.front, dtype=np.int64))
            else:
                mask = np.zeros(self._size, dtype=bool)
            mask.setflags(write=False)
            self._front_mask = (self.version, self.front, mask)
        return mask

    def row_of(self, number: int) -> int | None:
        return self._row.get(number)

    def objective_index(self, name: str) -> int:
        return [o.name for o in self.objectives].index(name)

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.objective_index(name)]

    def genome_of(self, number: int) -> dict[str, float]:
        row = self._row[number]
        return {g.name: float(v) for g, v in zip(self.genes, self._genomes[row], strict=True)}

    def objectives_of(self, number: int) -> dict[str, float]:
        row = self._row[number]
        return {o.name: float(v) for o, v in zip(self.objectives, self._values[row], strict=True)}


def _resized(array: npt.NDArray[_Scalar], rows: int) -> npt.NDArray[_Scalar]:
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


def best_trial(history: TrialHistory) -> int | None:
    """The trial a dashboard shows when none is selected: the best study value for a
    one-number search; otherwise the best mean over the objectives, each scaled to
    [0, 1] over the run with the better end at 1 (so mixed units weigh alike). Ties go
    to the earliest trial."""
    if not len(history):
        return None
    if len(history.study_directions) == 1:
        column = history.study[:, 0]
        if np.isnan(column).all():
            return None
        row = int(np.nanargmax(column) if history.study_maximize[0] else np.nanargmin(column))
        return int(history.numbers[row])
    maximize = [o.maximize for o in history.objectives]
    scaled, _, _ = parallel_scale(history.values, maximize)
    with np.errstate(all="ignore"):
        mean = np.nanmean(scaled, axis=1)
    if np.isnan(mean).all():
        return None
    return int(history.numbers[int(np.nanargmax(mean))])


# ---- fitness vs evaluations ---------------------------------------------------------------


def best_so_far(values: FloatArray, maximize: bool) -> FloatArray:
    """Running best of ``values`` (NaN entries are skipped, NaN until the first value)."""
    if values.size == 0:
        return values.astype(np.float64)
    filled = np.where(np.isnan(values), -np.inf if maximize else np.inf, values)
    best = np.maximum.accumulate(filled) if maximize else np.minimum.accumulate(filled)
    return np.where(np.isinf(best), np.nan, best)


@dataclass(frozen=True)
class GenerationBands:
    """Per generation: where it sits on the evaluations axis (mean evaluation number of
    its trials), the mean and population standard deviation of one objective, and how
    many trials it has so far."""

    generation: IntArray
    x: FloatArray
    mean: FloatArray
    std: FloatArray
    count: IntArray


def generation_bands(generations: IntArray, values: FloatArray) -> GenerationBands:
    """Mean ± std of ``values`` grouped by generation; trials must be in completion order
    (row i is evaluation i + 1). NaN values are left out of their generation."""
    keep = ~np.isnan(values)
    gens, inverse = np.unique(generations[keep], return_inverse=True)
    if gens.size == 0:
        empty = np.zeros(0)
        return GenerationBands(np.zeros(0, dtype=np.int64), empty, empty, empty, np.zeros(0, dtype=np.int64))
    evaluation = (np.flatnonzero(keep) + 1).astype(np.float64)
    kept = values[keep]
    count = np.bincount(inverse, minlength=gens.size)
    mean = np.bincount(inverse, weights=kept, minlength=gens.size) / count
    squares = np.bincount(inverse, weights=kept * kept, minlength=gens.size) / count
    std = np.sqrt(np.clip(squares - mean * mean, 0.0, None))
    x = np.bincount(inverse, weights=evaluation, minlength=gens.size) / count
    return GenerationBands(gens.astype(np.int64), x, mean, std, count.astype(np.int64))


# ---- Pareto fronts ------------------------------------------------------------------------


def minimization(points: FloatArray, maximize: Sequence[bool]) -> FloatArray:
    """Every column turned into one to minimise (maximised columns negated)."""
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    result: FloatArray = np.asarray(points, dtype=np.float64) * signs
    return result


def non_dominated_mask(points: FloatArray) -> BoolArray:
    """Rows no other row dominates (minimisation; equal rows all stay): the same set as
    ``pareto.non_dominated``, in O(n · front) instead of O(n²).

    Rows are visited in lexicographic order: a row that dominates another comes first in
    it (sums would do the same, but tie at infinities and round at large magnitudes),
    and whatever dominates a row is dominated in turn by a front member visited earlier,
    so checking each row against the front found so far is enough."""
    n = points.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    valid = ~np.isnan(points).any(axis=1)
    order = np.flatnonzero(valid)[np.lexsort(points[valid].T[::-1])]
    front = np.empty((0, points.shape[1]))
    for i in order:
        point = points[i]
        if front.shape[0] and np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)):
            continue
        mask[i] = True
        front = np.vstack([front, point])
    return mask


def front_2d(x: FloatArray, y: FloatArray, maximize_x: bool, maximize_y: bool) -> IntArray:
    """Indices of the points on the Pareto front of (x, y), sorted by x ascending.
    O(n log n): a sweep in the order 'best x first'. Points with NaN are never on it."""
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    if valid.size == 0:
        return np.zeros(0, dtype=np.int64)
    # In minimisation form, sorted by x then y: a point is on the front when its y is
    # below every y before it; a copy of a front point (same x and y) is on it too.
    mx = -x[valid] if maximize_x else x[valid]
    my = -y[valid] if maximize_y else y[valid]
    order = np.lexsort((my, mx))
    sx, sy = mx[order], my[order]
    before = np.concatenate([[np.inf], np.minimum.accumulate(sy)[:-1]])
    strict = sy < before
    copy = np.concatenate([[False], (sx[1:] == sx[:-1]) & (sy[1:] == sy[:-1])])
    heads = np.flatnonzero(~copy)
    on_front = strict[heads][np.cumsum(~copy) - 1]
    chosen: IntArray = valid[order[on_front]].astype(np.int64)
    ordered: IntArray = chosen[np.argsort(x[chosen], kind="stable")]
    return ordered


def front_2d_grown(
    x: FloatArray, y: FloatArray, maximize_x: bool, maximize_y: bool, front: IntArray, rows: int
) -> IntArray:
    """``front_2d(x, y, …)`` given ``front``, that of the first ``rows`` points: a point
    off the front of the first rows is dominated by one on it, so only those and the
    points added since can be on the front of all."""
    candidates = np.concatenate([front.astype(np.int64), np.arange(rows, x.size, dtype=np.int64)])
    chosen: IntArray = candidates[front_2d(x[candidates], y[candidates], maximize_x, maximize_y)]
    return chosen


def step_line(
    x: FloatArray, y: FloatArray, maximize_x: bool, maximize_y: bool
) -> tuple[FloatArray, FloatArray]:
    """The boundary of what the front points (``x``, ``y``) dominate, as a staircase
    through them: what the plot draws as the front's step line."""
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    # Work in 'maximise both' form, where the front sorted by x ascending has y
    # descending and the staircase drops from each point to the next one's height.
    sx = x if maximize_x else -x
    sy = y if maximize_y else -y
    order = np.lexsort((-sy, sx))
    sx, sy = sx[order], sy[order]
    xs = np.repeat(sx, 2)[:-1]
    ys = np.empty_like(xs)
    ys[0::2] = sy
    ys[1::2] = sy[1:]
    if not maximize_x:  # back to the caller's x, which then runs right to left
        return -xs[::-1], (ys if maximize_y else -ys)[::-1]
    return xs, (ys if maximize_y else -ys)


def hypervolume_history(
    points: FloatArray, references: Sequence[float | None], max_exact: int = 200
) -> FloatArray:
    """Hypervolume of the front after each of ``points`` (minimisation form), with the
    engine's reference: the given value per axis, else the worst seen so far.

    The front is kept incrementally; the (exact, slow in 4-D) volume is recomputed only
    where the front or the reference moved, at most ``max_exact`` times: past that, at
    ``max_exact`` of those moves spread evenly over the run, the curve holding its value
    in between. Runs of a few hundred trials are exact at every trial."""
    n = points.shape[0]
    out = np.zeros(n)
    if n == 0:
        return out
    given = np.array([np.nan if r is None else float(r) for r in references])
    worst = np.maximum.accumulate(np.where(np.isnan(points), -np.inf, points), axis=0)
    refs = np.where(np.isnan(given), worst, given)
    moved = _front_moves(points)
    moved[1:] |= np.any(refs[1:] != refs[:-1], axis=1)
    rows = np.flatnonzero(moved)
    if rows.size > max_exact:
        rows = rows[np.unique(np.linspace(0, rows.size - 1, max_exact).round().astype(np.int64))]
    exact = set(rows.tolist())
    front = np.empty((0, points.shape[1]))
    volume = 0.0
    for i in range(n):
        front = _front_with(front, points[i])
        if i in exact:
            volume = hypervolume([tuple(map(float, f)) for f in front], tuple(map(float, refs[i])))
        out[i] = volume
    return out


def _front_with(front: FloatArray, point: FloatArray) -> FloatArray:
    """The front after ``point`` arrives (a copy of a front point joins it)."""
    if np.isnan(point).any():
        return front
    if front.shape[0] and np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)):
        return front
    dominated = np.all(point <= front, axis=1) & np.any(point < front, axis=1)
    return np.vstack([front[~dominated], point])


def _front_moves(points: FloatArray) -> BoolArray:
    """Where each point joined the running front (so the volume may have changed)."""
    moved = np.zeros(points.shape[0], dtype=bool)
    front = np.empty((0, points.shape[1]))
    for i in range(points.shape[0]):
        grown = _front_with(front, points[i])
        moved[i] = grown is not front  # _front_with returns the same array when nothing joins
        front = grown
    return moved


# ---- parallel coordinates -----------------------------------------------------------------


@dataclass(frozen=True)
class ParallelAxes:
    """Polylines of every trial over the objectives, scaled to [0, 1] per axis with the
    better end up. ``x``/``y`` are flat with a NaN after each trial (one plot item draws
    them all); ``low``/``high`` are each axis's value at 0 and 1, for tick labels."""

    x: FloatArray
    y: FloatArray
    low: FloatArray
    high: FloatArray


def parallel_coordinates(
    values: FloatArray, maximize: Sequence[bool], extra: FloatArray | None = None
) -> ParallelAxes:
    """``extra`` (rows of the same objectives, e.g. baselines) widens the axis ranges
    so reference lines fit, but is not drawn here."""
    scaled, low, high = parallel_scale(values, maximize, extra)
    return ParallelAxes(*_polylines(scaled), low, high)


def parallel_scale(
    values: FloatArray, maximize: Sequence[bool], extra: FloatArray | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``parallel_coordinates`` as a matrix: (every trial's scaled values, one row each;
    each axis's value at 0; at 1)."""
    k = values.shape[1]
    ranged = values if extra is None or extra.size == 0 else np.vstack([values, extra])
    with np.errstate(all="ignore"):
        lo = np.nanmin(ranged, axis=0) if ranged.size else np.zeros(k)
        hi = np.nanmax(ranged, axis=0) if ranged.size else np.ones(k)
    lo = np.where(np.isnan(lo), 0.0, lo)
    hi = np.where(np.isnan(hi), 1.0, hi)
    flip = np.asarray(maximize, dtype=bool)
    low = np.where(flip, lo, hi)  # the value drawn at 0: the worse end
    high = np.where(flip, hi, lo)
    return scale_axes(values, low, high), low, high


def scale_axes(values: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """Values mapped so ``low`` -> 0 and ``high`` -> 1 per column (0.5 when flat)."""
    span = high - low
    safe = np.where(span == 0, 1.0, span)
    scaled: FloatArray = np.where(span == 0, 0.5, (values - low) / safe)
    return scaled


def _polylines(scaled: FloatArray) -> tuple[FloatArray, FloatArray]:
    n, k = scaled.shape
    x = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), n)
    y = np.hstack([scaled, np.full((n, 1), np.nan)]).ravel()
    return x, y


# ---- the genome as a grid -----------------------------------------------------------------


@dataclass(frozen=True)
class GenomeLayout:
    """Where each gene sits in the heatmap: rows are the evolved parameter per model
    (``weight[sort]``), columns the lane and layer group (``mlp@1``), so the grid reads
    like the network: which module, how deep."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[tuple[int, int], ...]  # (row, column) of each gene, in gene order

    def grid(self, genes: Sequence[float]) -> FloatArray:
        """(rows, columns) values; NaN where no gene sits."""
        out = np.full((len(self.rows), len(self.columns)), np.nan)
        for (row, column), value in zip(self.cells, genes, strict=True):
            out[row, column] = value
        return out


def parse_gene(name: str) -> tuple[str, str | None, int | None]:
    """``weight[sort].mlp@1`` -> ("weight[sort]", "mlp", 1); ``lambda`` -> ("lambda", None, None)."""
    match = _GENE_NAME.match(name)
    if match is None:
        return name, None, None
    group = match.group("group")
    return match.group("prefix"), match.group("lane"), None if group is None else int(group)


def genome_layout(names: Sequence[str]) -> GenomeLayout:
    parsed = [parse_gene(n) for n in names]
    rows = tuple(dict.fromkeys(prefix for prefix, _, _ in parsed))
    lane_rank = {lane: i for i, lane in enumerate(LANES)}
    keys = sorted(
        {(lane, group) for _, lane, group in parsed},
        key=lambda k: (lane_rank.get(k[0] or "", len(LANES)), -1 if k[1] is None else k[1]),
    )
    columns = tuple(_column_label(lane, group) for lane, group in keys)
    cells = tuple((rows.index(prefix), keys.index((lane, group))) for prefix, lane, group in parsed)
    return GenomeLayout(rows, columns, cells)


def _column_label(lane: str | None, group: int | None) -> str:
    if lane is None and group is None:
        return "value"
    if group is None:
        return str(lane)
    if lane is None:
        return f"layers {group}"
    return f"{lane} {group}"


def normalized_genome(genome: FloatArray, genes: Sequence[GeneBounds]) -> FloatArray:
    """Gene values as a fraction of their bounds (0 = low, 1 = high)."""
    low = np.asarray([g.low for g in genes])
    high = np.asarray([g.high for g in genes])
    result: FloatArray = (genome - low) / (high - low)
    return result


# ---- axis ranges --------------------------------------------------------------------------


def nice_step(size: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is at least ``size`` (which must be > 0)."""
    power = 10.0 ** math.floor(math.log10(size))
    for factor in (1.0, 2.0, 5.0):
        if factor * power >= size * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def axis_range(
    *series: FloatArray | Sequence[float], pad: float = 0.04, steps: int = 20
) -> tuple[float, float] | None:
    """A view range over every finite value of ``series``: padded by ``pad`` of the
    span on each side and rounded out to a 1-2-5 step of about 1/``steps`` of the span.
    A live run's values creep outwards with almost every trial; rounded, the range (and
    with it the axis's ticks and the scale everything is drawn at) changes only when
    they cross a step. None when there is no finite value."""
    finite = [v[np.isfinite(v)] for v in (np.asarray(s, dtype=np.float64).ravel() for s in series)]
    values = np.concatenate(finite) if finite else np.zeros(0)
    if values.size == 0:
        return None
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:  # one value: a range of its size around it (or of 1 around 0)
        span = abs(high) or 1.0
        low, high = low - span / 2, high + span / 2
    step = nice_step(span / steps)
    return (
        round(math.floor((low - pad * span) / step) * step, 12),
        round(math.ceil((high + pad * span) / step) * step, 12),
    )
