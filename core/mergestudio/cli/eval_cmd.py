"""``mergestudio eval MODEL --task FILE.jsonl [--task ...] [--limit N] [--json out.json]
[--base BASE] [--normalize-by SPEC ...]``.

With ``--base`` and ``--normalize-by`` the table says what the scores mean: Δ against the
base and normalized accuracy (the model's accuracy ÷ each task's specialist's), with a
mean row and a one-line verdict. Model folders named there are evaluated on the same
tasks, and every evaluation is cached by content (``mergestudio.evaluate.cache``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mergestudio.cli.args import DEVICE_HELP, device_name, positive_int, writable_file_path
from mergestudio.cli.progress import TerminalProgress
from mergestudio.cli.signals import cancel_on_stop

if TYPE_CHECKING:
    from mergestudio.evaluate.normalized import Comparison
    from mergestudio.evaluate.results import EvalReport

MODEL_LABEL = "model"
BASE_LABEL = "base"
DEMO_SPEC = "demo"
NORMALIZE_HELP = (
    "the specialists to normalize by; repeat. SPEC is a specialist's eval report "
    "(REPORT.json, from `mergestudio eval --json`) or model folder (evaluated on the same "
    "tasks, cached), optionally pinned to a task (TASK=REPORT.json, TASK=FOLDER); unpinned, "
    "each task's specialist is the one scoring highest on it. "
    f"'{DEMO_SPEC}': the demo zoo's specialists, as measured in its results.json"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on JSONL tasks",
        description=(
            "Evaluate a causal language model folder on JSONL tasks (multiple choice by "
            "log-likelihood, exact match of greedy generation, perplexity). "
            "Task formats: docs/tasks.md."
        ),
    )
    parser.add_argument("model", type=Path, help="a transformers causal LM folder")
    parser.add_argument(
        "--task",
        dest="tasks",
        type=Path,
        action="append",
        required=True,
        metavar="FILE.jsonl",
        help="a task file; repeat for several tasks",
    )
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N items of each task")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="requests per forward pass (default: 32)"
    )
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="auto (float32 on CPU, bfloat16 elsewhere), float32, float16 or bfloat16",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write every item's result as JSON")
    parser.add_argument(
        "--base",
        metavar="BASE",
        help="the base model, to show Δ vs base: its folder (evaluated on the same tasks, "
        "cached) or its eval report (.json)",
    )
    parser.add_argument(
        "--normalize-by", dest="normalize_by", action="append", default=[], metavar="SPEC", help=NORMALIZE_HELP
    )
    parser.add_argument("--no-cache", action="store_true", help="evaluate every model again; keep nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.evaluate.cache import (
        EvalSettings,
        EvaluationCache,
        evaluate_models,
        evaluation_cache_dir,
    )

    problem = writable_file_path(args.json, "--json") if args.json is not None else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        references = _References.parse(args.base, args.normalize_by)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = EvalSettings(args.limit, args.batch_size, args.device, args.dtype)
    with cancel_on_stop() as cancel:
        evaluation = evaluate_models(
            {MODEL_LABEL: args.model, **references.folders},
            args.tasks,
            settings,
            cache=None if args.no_cache else EvaluationCache(evaluation_cache_dir()),
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    report = evaluation.reports[MODEL_LABEL]
    if not args.quiet:
        cached = [label for label in evaluation.reports if label not in evaluation.evaluated]
        if cached:
            print(f"from the cache: {', '.join(cached)}", file=sys.stderr)
    comparison = references.compare(report, evaluation.reports) if references.wanted else None
    print(format_report_table(report, comparison, cached=MODEL_LABEL not in evaluation.evaluated))
    if args.json is not None:
        if comparison is not None:
            meta = {**report.meta, "comparison": comparison.to_dict()}
            report = type(report)(report.model, report.tasks, report.elapsed_s, meta)
        report.save_json(args.json)
        print(f"wrote {args.json}")
    return 0


class _References:
    """What ``--base`` and ``--normalize-by`` name: reports read now, folders to evaluate
    (label -> folder), specialists pinned to a task, and the demo zoo's measured values."""

    def __init__(self) -> None:
        self.wanted = False
        self.base_label: str | None = None
        self.reports: dict[str, dict[str, float]] = {}  # label -> scores, read from files
        self.folders: dict[str, Path] = {}
        self.pinned: dict[str, str] = {}  # task -> label
        self.specialist_labels: list[str] = []

    @classmethod
    def parse(cls, base: str | None, specs: list[str]) -> _References:
        refs = cls()
        refs.wanted = base is not None or bool(specs)
        if base is not None:
            refs.base_label = refs._add(BASE_LABEL, Path(base), "--base")
        for spec in specs:
            if spec == DEMO_SPEC:
                refs._add_demo()
                continue
            task, sep, target = spec.partition("=")
            path = Path(target if sep else spec)
            label = refs._add(_label_for(path, refs.known_labels()), path, f"--normalize-by {spec}")
            refs.specialist_labels.append(label)
            if sep:
                refs.pinned[task] = label
        return refs

    def known_labels(self) -> set[str]:
        return {MODEL_LABEL, *self.reports, *self.folders}

    def _add(self, label: str, path: Path, option: str) -> str:
        if path.is_dir():
            self.folders[label] = path
        elif path.is_file():
            self.reports[label] = _report_scores(path, option)
        else:
            raise ValueError(f"{option}: {path}: no such report file or model folder")
        return label

    def _add_demo(self) -> None:
        from mergestudio.demo.info import load_results
        from mergestudio.demo.paths import default_zoo_dir

        zoo = default_zoo_dir()
        rows = (load_results(zoo) or {}).get("rows", [])
        specialists = [r for r in rows if r.get("kind") == "specialist"]
        if not specialists:
            raise ValueError(f"--normalize-by {DEMO_SPEC}: no specialists in {zoo}/results.json")
        for row in specialists:
            # The zoo names each specialist after its skill unless the row says otherwise.
            task = str(row.get("skill") or row["model"])
            label = f"{DEMO_SPEC}:{row['model']}"
            self.reports[label] = {str(k): float(v) for k, v in row.get("accuracy", {}).items()}
            self.specialist_labels.append(label)
            self.pinned[task] = label

    def compare(self, report: EvalReport, evaluated: dict[str, EvalReport]) -> Comparison:
        from mergestudio.evaluate.normalized import compare_to_parents

        scores = {**self.reports, **{label: r.scores for label, r in evaluated.items()}}
        return compare_to_parents(
            report.scores,
            base=scores[self.base_label] if self.base_label else None,
            parents={label: scores[label] for label in self.specialist_labels},
            lower_is_better=[t.task for t in report.tasks if not t.higher_is_better],
            specialist_of=self.pinned,
        )


def _label_for(path: Path, taken: set[str]) -> str:
    stem = path.name if path.is_dir() else path.stem
    label, n = stem, 2
    while label in taken:
        label, n = f"{stem}-{n}", n + 1
    return label


def _report_scores(path: Path, option: str) -> dict[str, float]:
    from mergestudio.evaluate.results import EvalReport

    try:
        return EvalReport.load_json(path).scores
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{option}: {path} is not an eval report (mergestudio eval --json): {error}") from None


def format_report_table(report: EvalReport, comparison: Comparison | None = None, cached: bool = False) -> str:
    """A fixed-width table: task, kind, items, headline metric (with its direction),
    value, and with a comparison: Δ vs base, the specialist and normalized accuracy,
    a mean row and the verdict."""
    compared = comparison is not None
    head = ("task", "kind", "items", "metric", "value")
    rows = [(*head, "Δ base", "specialist", "normalized", "other") if compared else (*head, "other")]
    for t in report.tasks:
        others = ", ".join(f"{k}={_fmt(v)}" for k, v in t.metrics.items() if k != t.primary_metric)
        metric = f"{t.primary_metric} {'↑' if t.higher_is_better else '↓'}"
        cells = (t.task, t.kind, str(len(t.items)), metric, _fmt(t.value))
        rows.append((*cells, *_comparison_cells(comparison, t.task), others) if comparison else (*cells, others))
    if comparison is not None:
        mean = (f"mean of {len(comparison.raw)}", "", "", "", _fmt(comparison.mean_raw))
        rows.append((*mean, _signed(comparison.mean_delta_vs_base), "", _percent(comparison.mean_normalized), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if comparison is not None:
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        lines.append(comparison.verdict(percent_scale=False))
    lines.append(f"(from the cache; scored in {report.elapsed_s:.1f}s)" if cached else f"({report.elapsed_s:.1f}s)")
    return "\n".join(lines)


def _comparison_cells(comparison: Comparison, task: str) -> tuple[str, str, str]:
    if task in comparison.lower_is_better:
        change = comparison.lower_is_better_change().get(task)
        base = comparison.base_lower_is_better.get(task)
        delta = "" if base is None else _signed(comparison.lower_is_better[task] - base)
        return (f"{delta} ({change:+.1%})" if change is not None else delta, "", "")
    specialist = comparison.specialist_of.get(task, "")
    if specialist:
        specialist = f"{specialist} ({_fmt(comparison.specialist[task])})"
    return (
        _signed(comparison.delta_vs_base.get(task, math.nan)),
        specialist,
        _percent(comparison.normalized.get(task, math.nan)),
    )


def _signed(value: float) -> str:
    return "" if math.isnan(value) else f"{value:+.4f}"


def _percent(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1%}"


def _fmt(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
