"""``mergestudio demo info``: where the zoo's files are and its measured results table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mergestudio.demo import paths
from mergestudio.demo.results import table_markdown


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip() and not line.startswith('{"task"'))


def load_results(zoo: Path) -> dict[str, Any] | None:
    file = paths.results_file(zoo)
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text())
    return data


def describe_zoo(zoo: Path) -> str:
    """A human-readable summary: paths, sizes, item counts, recipes, build info, table."""
    if not paths.models_dir(zoo).is_dir():
        return f"no demo zoo at {zoo} (build one with: mergestudio demo build)"
    lines = [f"demo zoo: {zoo}  ({_folder_bytes(zoo) / 1e6:.1f} MB)", "", "models:"]
    for folder in sorted(paths.models_dir(zoo).iterdir(), key=lambda p: (p.name != "base", p.name)):
        if folder.is_dir():
            lines.append(f"  {folder.name:<10} {folder}  ({_folder_bytes(folder) / 1e6:.1f} MB)")
    lines += ["", "tasks:"]
    for file in sorted(paths.tasks_dir(zoo).glob("*.jsonl")):
        lines.append(f"  {file.name:<22} {_count_lines(file):>6} items  {file}")
    lines += ["", "recipes:"]
    for file in sorted(paths.recipes_dir(zoo).glob("*.yml")):
        lines.append(f"  {file.stem:<16} {file}")
    results = load_results(zoo)
    if results is None:
        lines += ["", "no results.json: rebuild with evaluation to measure the table"]
        return "\n".join(lines)
    build = results.get("build", {})
    timings = build.get("timings", {})
    lines += [
        "",
        f"built with torch {build.get('torch')}, transformers {build.get('transformers')}, "
        f"tokenizers {build.get('tokenizers')} on {build.get('processor')}; "
        f"training {timings.get('train_total_s', 0):.0f}s, evaluation {timings.get('evaluate_s', 0):.0f}s "
        f"({results.get('config', {}).get('threads')} thread(s))",
        "",
        "exact-match accuracy (%) on held-out splits; * = the specialist's own skill:",
        "",
        table_markdown(results.get("rows", [])),
    ]
    return "\n".join(lines)
