"""``mergestudio eval MODEL --task FILE.jsonl [--task ...] [--limit N] [--json out.json]``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mergestudio.cli.args import DEVICE_HELP, device_name, positive_int, writable_file_path
from mergestudio.cli.progress import TerminalProgress
from mergestudio.cli.signals import on_stop_signals
from mergestudio.events import CancelToken

if TYPE_CHECKING:
    from mergestudio.evaluate.results import EvalReport


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
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.evaluate import evaluate_path

    problem = writable_file_path(args.json, "--json") if args.json is not None else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cancel = CancelToken()
    with on_stop_signals(lambda _signum: cancel.cancel()):
        report = evaluate_path(
            args.model,
            args.tasks,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    print(format_report_table(report))
    if args.json is not None:
        report.save_json(args.json)
        print(f"wrote {args.json}")
    return 0


def format_report_table(report: EvalReport) -> str:
    """A fixed-width table: task, kind, items, headline metric, other metrics."""
    rows = [("task", "kind", "items", "metric", "value", "other")]
    for t in report.tasks:
        others = ", ".join(f"{k}={_fmt(v)}" for k, v in t.metrics.items() if k != t.primary_metric)
        rows.append((t.task, t.kind, str(len(t.items)), t.primary_metric, _fmt(t.value), others))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({report.elapsed_s:.1f}s)")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
