"""Quick eval on the demo zoo: the Merge page's job without the window.

    python benchmarks/quick_eval.py [--limit 100] [--cache DIR]

Merges the demo's default recipe, then times four runs of the quick-eval job:
- ``uncached``: every model scored one after another, as the page did before the cache
  (also what a first run costs);
- ``first``: the job with an empty cache (every model scored, under one progress bar);
- ``repeat``: the same merge again (every report from the cache);
- ``new merge``: another recipe merged (only the merge scored).
Prints seconds per run, which models each run scored, and the load average, since on a
shared machine the times mean little without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "app")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--cache", type=Path, help="cache folder (default: a new temp folder)")
    args = parser.parse_args()

    from mergestudio.engine import merge
    from mergestudio.evaluate import evaluate_path
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio_qt.demo import demo_project
    from mergestudio_qt.workers import QUICK_EVAL_BATCH, EvalJob

    quiet_transformers()
    work = Path(tempfile.mkdtemp(prefix="quick-eval-"))
    cache = args.cache or work / "cache"
    project = demo_project(work / "merged")
    tasks = project.eval_tasks
    base = project.base
    parents = {Path(base).name: base}
    parents.update({Path(m["model"]).name: m["model"] for m in project.recipe.get("models") or []})
    print(f"tasks: {[Path(t).name for t in tasks]}, {args.limit} items each; models: merged + {list(parents)}")

    merged = work / "merged"
    merge(project.recipe, merged, overwrite=True)
    models = {"merged": str(merged), **parents}

    started = time.perf_counter()
    for folder in models.values():
        evaluate_path(folder, tasks, limit=args.limit, batch_size=QUICK_EVAL_BATCH, device="cpu", dtype="float32")
    report("uncached", time.perf_counter() - started, list(models))

    def job_run(name: str) -> None:
        job = EvalJob(models, tasks, args.limit, merged_label="merged", base_label=Path(base).name,
                      cache_dir=str(cache))
        started = time.perf_counter()
        result = job.work()
        report(name, time.perf_counter() - started, list(result.evaluated))
        print(f"    verdict: {result.comparison.verdict(percent_scale=False)}")

    job_run("first")
    job_run("repeat")
    recipe = dict(project.recipe)
    recipe["models"] = [{**m, "parameters": {**(m.get("parameters") or {}), "weight": 0.3}}
                        for m in recipe.get("models") or []]
    merge(recipe, merged, overwrite=True)
    job_run("new merge")


def report(name: str, seconds: float, scored: list[str]) -> None:
    load = os.getloadavg()[0]
    print(f"{name:>10}: {seconds:6.1f} s  scored {', '.join(scored) or 'nothing'}  (load {load:.1f})", flush=True)


if __name__ == "__main__":
    main()
