"""Normalized accuracy of the round-two methods (WUDI, SVC on top of others) against
task arithmetic, TIES, TSV and Iso-CTS on the demo zoo (resources/demo), each merge
evaluated in memory on every skill's held-out split.

    python benchmarks/demo_zoo_methods.py [--limit N]
    python benchmarks/demo_zoo_methods.py --registry   # every method that merges 4 models, at its defaults

Normalized accuracy: the merge's accuracy on a skill over that skill's specialist's,
averaged over the skills (``mergestudio.evaluate.normalized``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from mergestudio.demo.info import zoo_info
from mergestudio.engine.device import torch_threads
from mergestudio.evaluate import CausalLM, evaluate_tasks, load_task
from mergestudio.evaluate.normalized import normalized_accuracy
from mergestudio.evaluate.resident import ResidentEvaluator

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "resources" / "demo"


def recipes(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The zoo's default recipes (its recipe files, model paths made absolute) and the
    round-two methods on the same base and specialists."""
    base = info["base"]["path"]
    specialists = [s["path"] for s in info["specialists"]]
    defaults = {r["name"]: _absolute(yaml.safe_load(Path(r["path"]).read_text()), info) for r in info["recipes"]}

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
        "task_arithmetic (zoo default)": defaults["task_arithmetic"],
        "task_arithmetic (λ=0.3)": recipe("task_arithmetic", weight=0.3),
        "ties (zoo default)": defaults["ties"],
        "tsv": recipe("tsv"),
        "iso_cts": recipe("iso_cts"),
        "wudi (adam, paper defaults)": recipe("wudi"),
        "wudi (closed form)": recipe("wudi", solver="closed_form"),
        "task_arithmetic (λ=1) + svc": recipe("task_arithmetic", post="svc", weight=1.0),
        "task_arithmetic (λ=0.3) + svc": recipe("task_arithmetic", post="svc", weight=0.3),
        "ties (zoo default) + svc": {**defaults["ties"], "post_process": {"name": "svc"}},
        "iso_cts + svc": recipe("iso_cts", post="svc"),
        "wudi (closed form) + svc": recipe("wudi", post="svc", solver="closed_form"),
    }


def registry_recipes(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every registered method that merges any number of models, at its declared defaults
    (a per-model weight without a default set to 1), over the zoo's specialists."""
    from mergestudio.methods.registry import all_methods

    base = info["base"]["path"]
    specialists = [s["path"] for s in info["specialists"]]
    out: dict[str, dict[str, Any]] = {}
    for method in all_methods():
        if method.max_models is not None and method.max_models < len(specialists):
            continue
        needs_weight = any(p.name == "weight" and p.per_model and p.default is None for p in method.params)
        models = [{"model": s, **({"parameters": {"weight": 1.0}} if needs_weight else {})} for s in specialists]
        recipe: dict[str, Any] = {"merge_method": method.name, "models": models, "dtype": "float32"}
        if method.needs_base or method.optional_base:
            recipe["base_model"] = base
        out[f"{method.name} (defaults)"] = recipe
    return out


def _absolute(recipe: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Recipe files name models relative to the repository root: use the zoo's paths."""
    by_name = {"base": info["base"]["path"], **{s["name"]: s["path"] for s in info["specialists"]}}

    def resolve(reference: str) -> str:
        return by_name.get(Path(reference).name, reference)

    if recipe.get("base_model"):
        recipe["base_model"] = resolve(recipe["base_model"])
    for model in recipe.get("models") or []:
        model["model"] = resolve(model["model"])
    return recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=ZOO, help="the demo zoo's folder (default: resources/demo)")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--registry", action="store_true", help="every registered method at its defaults")
    args = parser.parse_args()
    info = zoo_info(args.zoo)
    skills = [s["skill"] for s in info["specialists"]]
    tasks = [load_task(info["skills"][skill]["test"]) for skill in skills]
    with torch_threads(1):
        specialist: dict[str, float] = {}
        for entry in info["specialists"]:
            lm = CausalLM.load(entry["path"], device="cpu", dtype="float32")
            report = evaluate_tasks(lm, tasks, limit=args.limit, batch_size=100)
            specialist[entry["skill"]] = report.scores[entry["skill"]]
        print(f"zoo: {info['zoo']} (test split, {args.limit or 'all'} items per skill)")
        print("| merge | " + " | ".join(skills) + " | mean acc. | normalized | merge s |")
        print("|---|" + "---:|" * (len(skills) + 3))
        with ResidentEvaluator(
            info["base"]["path"], tasks, limit=args.limit, batch_size=100, device="cpu", dtype="float32"
        ) as resident:
            chosen = registry_recipes(info) if args.registry else recipes(info)
            for name, recipe in chosen.items():
                try:
                    result = resident.evaluate(recipe)
                except Exception as error:  # a method this zoo cannot run (say why, go on)
                    print(f"| {name} | " + " | ".join("–" for _ in skills) + f" | – | – | {error} |", flush=True)
                    continue
                scores = {s: result.report.scores[s] for s in skills}
                normalized = normalized_accuracy(scores, specialist)
                cells = " | ".join(f"{100 * scores[s]:.1f}" for s in skills)
                mean = 100 * sum(scores.values()) / len(skills)
                norm = 100 * sum(normalized.values()) / len(normalized)
                print(f"| {name} | {cells} | {mean:.1f} | {norm:.1f} | {result.merge_s:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
