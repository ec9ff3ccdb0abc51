"""The demo project: the demo zoo's base and specialists, a recipe that merges them, and
its evaluation tasks ticked, so a newcomer can press Merge at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mergestudio_qt.project import ProjectData

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "MERGESTUDIO_DEMO_DIR"


class DemoUnavailable(Exception):
    """The demo zoo is not installed; the message says how to get it."""


def zoo_dir() -> Path:
    """Where the demo zoo lives (the demo package decides; this is its fallback)."""
    try:
        from mergestudio.demo.paths import default_zoo_dir
    except ImportError:  # an engine without the demo package
        override = os.environ.get(ENV_VAR)
        return Path(override) if override else REPO_ROOT / "resources" / "demo"
    return default_zoo_dir()


def demo_project(merge_dir: Path) -> ProjectData:
    """The demo as project data (model references absolute). Raises DemoUnavailable."""
    zoo = zoo_dir()
    models = _model_folders(zoo)
    if len(models) < 2:
        raise DemoUnavailable(
            f"the demo zoo is not at {zoo} (it needs a base and specialists under models/). "
            "Build it with `mergestudio demo build`, or set MERGESTUDIO_DEMO_DIR."
        )
    base = _pick_base(models)
    specialists = [m for m in models if m != base]
    recipe = _zoo_recipe(zoo, base, specialists) or _default_recipe(base, specialists)
    return ProjectData(
        models=[{"reference": str(m), "include": True} for m in models],
        base=str(base),
        recipe=recipe,
        merge={"out_dir": str(merge_dir), "out_dtype": "", "device": "auto", "shard_mb": 2000,
               "overwrite": True},
        eval_tasks=[str(p) for p in _eval_tasks(zoo)],
    )


def _model_folders(zoo: Path) -> list[Path]:
    folder = zoo / "models"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "config.json").exists())


def _pick_base(models: list[Path]) -> Path:
    named = [m for m in models if m.name == "base"] or [m for m in models if "base" in m.name]
    return named[0] if named else models[0]


def _eval_tasks(zoo: Path) -> list[Path]:
    try:
        from mergestudio.demo.paths import eval_task_files
    except ImportError:
        return sorted((zoo / "tasks").glob("*.eval.jsonl"))
    return eval_task_files(zoo)


def _zoo_recipe(zoo: Path, base: Path, specialists: list[Path]) -> dict[str, Any] | None:
    """A recipe shipped with the zoo that merges exactly these models, with its model
    paths made absolute: the one with the best mean score in the zoo's results table."""
    from mergestudio.errors import MergeStudioError
    from mergestudio.recipe import Recipe

    # With the base named as base_model, or without one (linear averages the specialists).
    wanted = [{str(p.resolve()) for p in [base, *specialists]}, {str(p.resolve()) for p in specialists}]
    scores = _merge_scores(zoo)
    candidates = sorted((zoo / "recipes").glob("*.y*ml"), key=lambda p: (-scores.get(p.stem, -1.0), p.name))
    for path in candidates:
        try:
            recipe = Recipe.load(path).to_dict()
        except MergeStudioError:
            continue
        if recipe.get("slices"):
            continue
        resolved = _absolute_models(recipe, path.parent)
        names = {resolved.get("base_model")} | {m["model"] for m in resolved.get("models") or []}
        if names - {None} in wanted:
            return resolved
    return None


def _merge_scores(zoo: Path) -> dict[str, float]:
    """Mean accuracy of each merge recipe in the zoo's results table (empty if absent)."""
    import json

    try:
        rows = json.loads((zoo / "results.json").read_text())["rows"]
        return {str(r["model"]): float(r["mean"]) for r in rows if r.get("kind") == "merge"}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _absolute_models(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    def absolute(reference: str) -> str:
        for root in (REPO_ROOT, folder):
            candidate = (root / reference).resolve()
            if candidate.exists():
                return str(candidate)
        return reference

    if recipe.get("base_model"):
        recipe["base_model"] = absolute(recipe["base_model"])
    for model in recipe.get("models") or []:
        model["model"] = absolute(model["model"])
    return recipe


def _default_recipe(base: Path, specialists: list[Path]) -> dict[str, Any]:
    """Task arithmetic with equal weights that sum to one: every specialist's skill is
    added at a strength the base tolerates."""
    from mergestudio.methods import get_method

    from mergestudio_qt import recipe_edit

    method = get_method("task_arithmetic")
    recipe = recipe_edit.new_recipe(method, str(base), [str(p) for p in specialists])
    weight = round(1.0 / max(1, len(specialists)), 4)
    for index in range(len(specialists)):
        recipe = recipe_edit.set_setting(recipe, "weight", weight, index)
    recipe["name"] = "demo-merge"
    return recipe
