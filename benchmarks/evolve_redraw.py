"""How long a full redraw of the Evolve page takes with thousands of trials.

The page is filled offscreen with synthetic trials (4 objectives improving over
generations with a trade-off between them, 12 genes as in the demo spec), a front and a
hypervolume curve, and the 8 baselines of the demo zoo. Each timed redraw first appends
one trial and, when it changes the Pareto front, the new front (untimed: the engine
computes it and the page is told, as in a live search) and then:

- update: ``page.redraw()``: every plot's items get new data from the history
  (fitness, Pareto front and step line, parallel coordinates, hypervolume, genome),
  the trial table announces the new row;
- paint: the dashboard rendered to a pixmap (``QWidget.grab``), i.e. what pyqtgraph
  and Qt spend turning the items into pixels.

Three runs of redraws: with a trial selected, with nothing selected (how a run starts:
the genome heatmap then shows the best trial), and each right after a 1-pixel resize
of the window, when no plot can reuse anything of its last paint (the worst case; the
plots keep the rendering of what did not change, like axes and the trials off the
Pareto front, between ordinary redraws, as they do in the live window).

A fourth run times what the live page does instead of a full redraw: each new trial is
drawn by five ticks of its redraw timer, one part per tick (a plot, or the table with
the genome); a tick's time is that part's update and the paint of that part alone.

The budget is 30 ms for update + paint (the page redraws at most 20 times a second).

    QT_QPA_PLATFORM=offscreen python benchmarks/evolve_redraw.py --trials 5000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

BUDGET_MS = 30.0
OBJECTIVES = ("reverse", "cipher", "sort", "double")
MODELS = ("reverse", "cipher", "sort", "double")
LANES = ("attention", "mlp", "other")
POPULATION = 12


def synthetic_trial(rng: np.random.Generator, number: int) -> tuple[int, dict[str, float], dict[str, float]]:
    """(generation, objectives, genome) of trial ``number``: accuracies that rise over
    the generations and trade off against each other (a Dirichlet split of a budget)."""
    generation = number // POPULATION
    level = 0.2 + 0.6 * (1 - np.exp(-generation / 120))
    share = rng.dirichlet(np.ones(len(OBJECTIVES)))
    values = np.clip(level * (0.5 + 1.5 * share) + rng.normal(0, 0.04, len(OBJECTIVES)), 0, 1)
    genome = {f"weight[{m}].{lane}": float(rng.uniform(0, 1.5)) for m in MODELS for lane in LANES}
    return generation, dict(zip(OBJECTIVES, map(float, values), strict=True)), genome


def synthetic_history(trials: int, seed: int = 0):  # -> TrialHistory
    from mergestudio.search.dashboard import GeneBounds, ObjectiveAxis, TrialHistory

    rng = np.random.default_rng(seed)
    history = TrialHistory(
        [ObjectiveAxis(name, "maximize", "exact_match", name) for name in OBJECTIVES],
        [GeneBounds(f"weight[{m}].{lane}", 0.0, 1.5) for m in MODELS for lane in LANES],
        ["maximize"] * len(OBJECTIVES),
        POPULATION,
    )
    for number in range(trials):
        generation, objectives, genome = synthetic_trial(rng, number)
        history.add(number, generation, objectives, tuple(objectives.values()), genome, duration_s=2.0)
    # The front exactly; the hypervolume as a smooth rising curve: exact 4-D volumes of a
    # several-hundred-point front take minutes and are not what this benchmark measures.
    history.recompute_front(hypervolume=False)
    history.set_hypervolume_curve(0.3 * (1 - np.exp(-np.arange(1, trials + 1) / (trials / 4))))
    return history, rng


def add_trial(history: Any, rng: np.random.Generator) -> None:
    """One more trial, and the front after it, as the engine's ParetoFrontChanged would
    announce it: the trial joins the front unless a member dominates it, and the members
    it dominates leave."""
    from mergestudio.search.dashboard import minimization

    number = len(history)
    generation, objectives, genome = synthetic_trial(rng, number)
    history.add(number, generation, objectives, tuple(objectives.values()), genome, duration_s=2.0)
    points = minimization(history.study, history.study_maximize)
    rows = np.flatnonzero(history.front_mask())
    new, front = points[-1], points[rows]
    if np.any(np.all(front <= new, axis=1) & np.any(front < new, axis=1)):
        return  # dominated: the front stays
    kept = rows[~(np.all(new <= front, axis=1) & np.any(new < front, axis=1))]
    history.set_front(history.numbers[np.append(kept, number)].tolist(), float(history.hypervolume[-1]))


def synthetic_baselines() -> list:
    from mergestudio.search.baselines import Baseline

    rows = {
        "base": (0.6, 0.5, 0.5, 0.25),
        "reverse": (0.9, 0.0, 0.0, 0.0),
        "cipher": (0.0, 1.0, 0.0, 0.0),
        "sort": (0.0, 0.0, 0.9, 0.0),
        "double": (0.0, 0.0, 0.0, 1.0),
        "linear": (0.1, 0.4, 0.4, 0.25),
        "task_arithmetic": (0.0, 0.05, 0.0, 0.0),
        "ties": (0.0, 0.0, 0.05, 0.0),
    }
    return [
        Baseline(
            label,
            "merge" if label in ("linear", "task_arithmetic", "ties") else "parent",
            {},
            dict(zip(OBJECTIVES, values, strict=True)),
            "synthetic",
        )
        for label, values in rows.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from mergestudio_qt.context import Studio
    from mergestudio_qt.pages.evolve_page import EvolvePage
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.state import StudioState
    from mergestudio_qt.style import apply_style

    apply_style(app, dark=False)  # type: ignore[arg-type]
    started = time.perf_counter()
    history, rng = synthetic_history(args.trials)
    fill_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache:
        page = EvolvePage(Studio(StudioState(), Preferences(demo_opened=True, cache_dir=cache)))
        page.resize(args.width, args.height)
        page.show()
        page.show_history(history, synthetic_baselines())
        page.tabs.setCurrentIndex(0)
        app.processEvents()
        page.redraw()
        page.select_trial(int(history.numbers[len(history) // 2]))
        dashboard = page.tabs.currentWidget()
        dashboard.grab()  # first paint builds caches (fonts, pens): not timed
        selected = _time_redraws(app, page, history, rng, dashboard, args.repeats)
        # Nothing selected (how a run starts): every redraw shows the best trial's genome.
        page.select_trial(None)
        unselected = _time_redraws(app, page, history, rng, dashboard, args.repeats)
        # Right after the window was resized: no plot has anything from the last paint to
        # reuse (axes, labels, the layers of trials off the front are all drawn afresh).
        page.select_trial(int(history.numbers[len(history) // 2]))
        sizes = iter([(args.width - 1 + i % 2 * 2, args.height) for i in range(args.repeats)])
        resized = _time_redraws(
            app, page, history, rng, dashboard, args.repeats, before=lambda: _resize(app, page, next(sizes))
        )
        ticks = _time_ticks(app, page, history, rng, args.repeats)
        page.close()
    result = {
        "trials": args.trials,
        "objectives": len(OBJECTIVES),
        "repeats": args.repeats,
        "size": f"{args.width}x{args.height}",
        "fill_s": round(fill_s, 3),
        **selected,
        "nothing_selected": unselected,
        "after_resize": resized,
        "one_tick": ticks,
        "budget_ms": BUDGET_MS,
    }
    print(
        f"Evolve page, {len(history) - 3 * args.repeats} trials x {len(OBJECTIVES)} objectives, "
        f"{args.width}x{args.height}, {args.repeats} full redraws each (fill {fill_s:.2f} s):"
    )
    for title, numbers in (
        ("a trial selected", selected),
        ("nothing selected", unselected),
        ("after a resize", resized),
        ("one tick of a live search (one part: update + its paint)", ticks),
    ):
        print(f"  {title}:")
        for key in [k for k in ("update_ms", "paint_ms", "total_ms", "total_cpu_ms") if k in numbers]:
            stats = numbers[key]
            print(
                f"    {key[:-3].replace('_', ' '):>9}: median {stats['median']:.1f} ms, "
                f"p95 {stats['p95']:.1f} ms, max {stats['max']:.1f} ms"
            )
    for title, numbers in (("a trial selected", selected), ("nothing selected", unselected)):
        verdict = "within" if numbers["total_ms"]["median"] <= BUDGET_MS else "OVER"
        print(f"  median total, {title}: {verdict} the {BUDGET_MS:.0f} ms budget")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _time_redraws(
    app: Any,
    page: Any,
    history: Any,
    rng: np.random.Generator,
    dashboard: Any,
    repeats: int,
    before: Callable[[], None] | None = None,
) -> dict[str, dict[str, float]]:
    """``repeats`` timed redraws, each after one more trial (and ``before()``, untimed)."""
    update_ms, paint_ms, total_ms, cpu_ms = [], [], [], []
    for _ in range(repeats):
        add_trial(history, rng)
        if before is not None:
            before()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        page.redraw()
        t1 = time.perf_counter()
        dashboard.grab()
        t2 = time.perf_counter()
        cpu_ms.append(1000 * (time.thread_time() - c0))
        update_ms.append(1000 * (t1 - t0))
        paint_ms.append(1000 * (t2 - t1))
        total_ms.append(1000 * (t2 - t0))
        app.processEvents()
    return {
        "update_ms": _stats(update_ms),
        "paint_ms": _stats(paint_ms),
        "total_ms": _stats(total_ms),
        "total_cpu_ms": _stats(cpu_ms),  # this thread's CPU time: wall minus waiting on a busy machine
    }


def _time_ticks(app: Any, page: Any, history: Any, rng: np.random.Generator, repeats: int) -> dict[str, dict[str, float]]:
    """``repeats`` new trials, each drawn as the live page does: one tick per part, the
    part's widget painted after its tick (the page's redraw timer is stopped meanwhile)."""
    page._redraw_timer.stop()
    widgets = [*page.plots, page.dashboard.widget(1)]  # the parts' widgets, in the page's order
    total_ms: list[float] = []
    for _ in range(repeats):
        add_trial(history, rng)
        page._mark_dirty()
        page._redraw_timer.stop()
        while page._dirty_parts:
            part = page._next_part if page._next_part in page._dirty_parts else min(page._dirty_parts)
            t0 = time.perf_counter()
            page._tick()
            widgets[part].grab()
            total_ms.append(1000 * (time.perf_counter() - t0))
            app.processEvents()
    return {"total_ms": _stats(total_ms)}


def _resize(app: Any, page: Any, size: tuple[int, int]) -> None:
    """Resize the page and lay it out, without painting it."""
    from PySide6.QtCore import QEvent

    page.resize(*size)
    app.sendPostedEvents(None, QEvent.Type.LayoutRequest)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "median": round(statistics.median(values), 2),
        "p95": round(p95, 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


if __name__ == "__main__":
    raise SystemExit(main())
