"""Run the demo search and measure what issue 5 promises: wall time, Pareto front size,
and whether the best trial (mean over the skills) beats every default merge of the
demo table, re-scored on the full held-out split.

    python benchmarks/search_demo.py [--spec resources/demo/search.yml] [--run runs/demo-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", type=Path, default=Path("resources/demo/search.yml"))
    parser.add_argument("--run", type=Path, default=Path("runs/demo-bench"))
    parser.add_argument(
        "--rescore", type=int, default=3, help="re-score this many best trials on the full split"
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()

    from mergestudio.search import load_spec, start_search
    from mergestudio.search.report import summarize

    if args.run.exists():
        shutil.rmtree(args.run)
    start = time.perf_counter()
    outcome = start_search(args.spec, args.run)
    wall_s = time.perf_counter() - start
    summary = summarize(args.run)
    spec = load_spec(args.spec)
    ranked = sorted(summary.complete, key=lambda r: -summary.mean(r))[: args.rescore]
    rescored = _rescore(spec, [r.recipe_yaml for r in ranked])
    table = _demo_table(args.spec.parent / "results.json")
    result: dict[str, Any] = {
        "wall_s": round(wall_s, 1),
        "search_elapsed_s": round(outcome.elapsed_s, 1),
        "state": outcome.state,
        "complete_trials": outcome.complete_trials,
        "front_trials": len(summary.front),
        "front_distinct_points": summary.to_dict()["distinct_front_points"],
        "best_subset_mean": {r.number: round(summary.mean(r), 4) for r in ranked},
        "best_full_mean": {r.number: s for r, s in zip(ranked, rescored, strict=True)},
        "default_merges_full_mean": table,
    }
    best_full = max(rescored) if rescored else float("nan")
    result["beats_every_default_merge"] = bool(table) and all(best_full > v for v in table.values())
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _rescore(spec: Any, recipes: list[str]) -> list[float]:
    """Mean exact match of each recipe over the objectives' full task files."""
    from mergestudio.evaluate import load_task
    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.search.objectives import Objectives
    from mergestudio.search.spec import base_recipe

    objectives = Objectives.build(spec)
    tasks = [load_task(o.task) for o in spec.objectives]
    recipe = base_recipe(spec)
    template = recipe.base_model or (recipe.models or [])[0].model
    from mergestudio.engine.device import torch_threads

    means = []
    with torch_threads(spec.evaluation.threads), ResidentEvaluator(
        template, tasks, batch_size=spec.evaluation.batch_size, device="cpu", dtype="float32"
    ) as ev:
        for text in recipes:
            values = objectives.values(ev.evaluate(text).report)
            maximized = [values[o.name] for o in objectives.items if o.maximize]
            means.append(round(sum(maximized) / len(maximized), 4))
    return means


def _demo_table(results: Path) -> dict[str, float]:
    """The default merges' mean accuracy from the zoo's results.json (docs/demo.md's table)."""
    if not results.is_file():
        return {}
    data = json.loads(results.read_text())
    rows = data.get("rows", data.get("table", []))
    return {row["model"]: float(row["mean"]) for row in rows if row.get("kind") == "merge"}


if __name__ == "__main__":
    main()
