"""Normalized accuracy of the round-two methods (WUDI, SVC on top of others) against
task arithmetic, TIES, TSV and Iso-CTS on the demo zoo (resources/demo), each merge
evaluated in memory on every skill's held-out split.

    python benchmarks/demo_zoo_methods.py [--limit N]

Normalized accuracy: the merge's accuracy on a skill over that skill's specialist's,
averaged over the skills (``mergestudio.evaluate.normalized``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mergestudio.demo import paths
from mergestudio.demo.recipes import recipe_dicts
from mergestudio.engine.device import torch_threads
from mergestudio.evaluate import CausalLM, evaluate_tasks, load_task
from mergestudio.evaluate.normalized import normalized_accuracy
from mergestudio.evaluate.resident import ResidentEvaluator

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "resources" / "demo"
SKILLS = ("reverse", "cipher", "sort", "double")


def recipes() -> dict[str, dict[str, Any]]:
    defaults = recipe_dicts(ZOO, SKILLS, absolute=True)
    base = defaults["task_arithmetic"]["base_model"]
    specialists = [m["model"] for m in defaults["task_arithmetic"]["models"]]

    def recipe(method: str, post: str | None = None, **params: Any) -> dict[str, Any]:
        built: dict[str, Any] = {
            "merge_method": method,
            "base_model": base,
            "models": [{"model": s} for s in specialists],
            "parameters": params,
            "dtype": "float32",
        }
        if post:
            built["post_process"] = {"name": post}
        return built

    return {
        "task_arithmetic (zoo default, λ=0.4)": defaults["task_arithmetic"],
        "task_arithmetic (λ=0.3)": recipe("task_arithmetic", weight=0.3),
        "ties (zoo default)": defaults["ties"],
        "tsv": recipe("tsv"),
        "iso_cts": recipe("iso_cts"),
        "wudi (adam, paper defaults)": recipe("wudi"),
        "wudi (closed form)": recipe("wudi", solver="closed_form"),
        "task_arithmetic (λ=1) + svc": recipe("task_arithmetic", post="svc", weight=1.0),
        "task_arithmetic (λ=0.3) + svc": recipe("task_arithmetic", post="svc", weight=0.3),
        "iso_cts + svc": recipe("iso_cts", post="svc"),
        "wudi (closed form) + svc": recipe("wudi", post="svc", solver="closed_form"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    args = parser.parse_args()
    tasks = [load_task(p) for p in paths.eval_task_files(ZOO)]
    tasks = [t for t in tasks if t.name in SKILLS]
    with torch_threads(1):
        specialist: dict[str, float] = {}
        for skill in SKILLS:
            lm = CausalLM.load(paths.models_dir(ZOO) / skill, device="cpu", dtype="float32")
            specialist[skill] = evaluate_tasks(lm, tasks, limit=args.limit, batch_size=100).scores[skill]
        print("| merge | " + " | ".join(SKILLS) + " | mean acc. | normalized | merge s |")
        print("|---|" + "---:|" * (len(SKILLS) + 3))
        with ResidentEvaluator(
            paths.models_dir(ZOO) / "base", tasks, limit=args.limit, batch_size=100, device="cpu", dtype="float32"
        ) as resident:
            for name, recipe in recipes().items():
                started = time.perf_counter()
                result = resident.evaluate(recipe)
                scores = {s: result.report.scores[s] for s in SKILLS}
                normalized = normalized_accuracy(scores, specialist)
                cells = " | ".join(f"{100 * scores[s]:.1f}" for s in SKILLS)
                mean = 100 * sum(scores.values()) / len(SKILLS)
                norm = 100 * sum(normalized.values()) / len(normalized)
                print(f"| {name} | {cells} | {mean:.1f} | {norm:.1f} | {result.merge_s:.2f} |", flush=True)
                del started
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
