"""Pareto fronts and hypervolume, exact, for the few objectives a merge search has.

Points are compared after turning every objective into one to minimise (maximised
values are negated). Hypervolume is computed by slicing along the last objective
(HSO): exact, and fast enough for the fronts of a few hundred trials in 2-4 objectives.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, ...]


def to_minimization(values: Sequence[float], maximize: Sequence[bool]) -> Point:
    return tuple(-v if up else v for v, up in zip(values, maximize, strict=True))


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates (equal points all stay)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (minimisation).
    Points not strictly better than the reference on every axis add nothing."""
    inside = [p for p in points if all(x < r for x, r in zip(p, reference, strict=True))]
    return _hso(_unique_front(inside), reference)


def _unique_front(points: list[Point]) -> list[Point]:
    unique = list(dict.fromkeys(points))
    return [unique[i] for i in non_dominated(unique)]


def _hso(points: list[Point], reference: Point) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        return _area(points, reference)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        depth = upper - point[-1]
        if depth > 0:
            slice_points = _unique_front([p[:-1] for p in ordered[: i + 1]])
            volume += depth * _hso(slice_points, reference[:-1])
    return volume


def _area(points: list[Point], reference: Point) -> float:
    """2-D sweep: sort by x, add each point's strip below the best y so far."""
    area = 0.0
    best_y = reference[1]
    ordered = sorted(points)
    for i, (x, y) in enumerate(ordered):
        next_x = ordered[i + 1][0] if i + 1 < len(ordered) else reference[0]
        best_y = min(best_y, y)
        area += (next_x - x) * (reference[1] - best_y)
    return area


def reference_point(points: Sequence[Point], given: Sequence[float | None]) -> Point:
    """The reference point: the spec's value per axis (already in minimisation form), or
    the worst value seen on that axis."""
    return tuple(g if g is not None else max(p[axis] for p in points) for axis, g in enumerate(given))
