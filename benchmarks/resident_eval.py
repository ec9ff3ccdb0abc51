"""Resident evaluation on the demo zoo: per-candidate merge-into-model time against
evaluation time, and process memory over many candidates.

    .venv/bin/python benchmarks/resident_eval.py [--candidates 200] [--limit N] [--json out.json]

Each candidate is a random recipe over the demo specialists (linear, task_arithmetic
or ties with random weights and densities, from a fixed seed). The evaluator loads the
base architecture once; every candidate is merged by the engine straight into the
loaded model's parameters and evaluated on the held-out demo tasks. Nothing is written
to disk per candidate.

Targets: merge <= 10 % of evaluation time; resident memory flat over the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from mergestudio.demo import paths
from mergestudio.demo.build import recipe_dicts
from mergestudio.evaluate import load_task
from mergestudio.evaluate.resident import ResidentEvaluator
from mergestudio.methods.registry import all_methods


def candidate_recipes(zoo: Path, skills: tuple[str, ...], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    defaults = recipe_dicts(zoo, skills, absolute=True)
    available = {m.name for m in all_methods()}
    methods = [m for m in ("linear", "task_arithmetic", "ties") if m in available]
    out = []
    for _ in range(count):
        method = rng.choice(methods)
        recipe = json.loads(json.dumps(defaults[method]))  # a deep copy
        for model in recipe["models"]:
            model["parameters"]["weight"] = round(rng.uniform(0.1, 1.0), 3)
            if "density" in model["parameters"]:
                model["parameters"]["density"] = round(rng.uniform(0.2, 1.0), 3)
        out.append(recipe)
    return out


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", type=Path, default=paths.default_zoo_dir())
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--limit", type=int, help="items per task (default: all)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write per-candidate timings and memory here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tasks = [load_task(p) for p in paths.eval_task_files(args.zoo)]
    skills = tuple(t.name for t in tasks if t.kind == "generation")
    recipes = candidate_recipes(args.zoo, skills, args.candidates, args.seed)

    start = time.perf_counter()
    rows = []
    with ResidentEvaluator(
        paths.models_dir(args.zoo) / "base",
        tasks,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        dtype="float32",
    ) as resident:
        load_s = time.perf_counter() - start
        items = sum(len(t.items) for t in resident.tasks)
        print(f"loaded in {load_s:.2f}s; {len(recipes)} candidates x {items} items, rss {rss_mb():.0f} MB")
        for index, recipe in enumerate(recipes, start=1):
            result = resident.evaluate(recipe)
            gc.collect()
            rows.append(
                {
                    "candidate": index,
                    "method": recipe["merge_method"],
                    "merge_s": result.merge_s,
                    "eval_s": result.eval_s,
                    "mean_accuracy": result.report.mean_accuracy,
                    "rss_mb": rss_mb(),
                }
            )
            if index in (1, 10, 50, 100, 150, 200) or index == len(recipes):
                r = rows[-1]
                print(
                    f"candidate {index:4d}: merge {r['merge_s'] * 1000:6.1f} ms  eval {r['eval_s']:.2f} s  "
                    f"rss {r['rss_mb']:.0f} MB  ({r['method']}, mean acc {r['mean_accuracy']:.3f})",
                    flush=True,
                )

    merge = [r["merge_s"] for r in rows]
    evals = [r["eval_s"] for r in rows]
    ratios = [m / e for m, e in zip(merge, evals, strict=True)]
    warm = rows[min(9, len(rows) - 1)]["rss_mb"]
    summary = {
        "candidates": len(rows),
        "items_per_candidate": items,
        "merge_ms_median": 1000 * statistics.median(merge),
        "merge_ms_p90": 1000 * statistics.quantiles(merge, n=10)[-1] if len(merge) > 1 else 1000 * merge[0],
        "eval_s_median": statistics.median(evals),
        "merge_over_eval_median": statistics.median(ratios),
        "rss_mb_first": rows[0]["rss_mb"],
        "rss_mb_after_10": warm,
        "rss_mb_last": rows[-1]["rss_mb"],
        "rss_growth_after_10_mb": rows[-1]["rss_mb"] - warm,
        "total_s": time.perf_counter() - start,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "candidates": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
