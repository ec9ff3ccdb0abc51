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
        # Replace stays unticked: merging again asks before replacing the last merge.
        merge={"out_dir": str(merge_dir), "out_dtype": "", "device": "auto", "shard_mb": 2000,
               "overwrite": False},
        eval_tasks=[str(p) for p in _eval_tasks(zoo)],
        specialists=_zoo_specialists(zoo),
    )


def _zoo_specialists(zoo: Path) -> dict[str, str]:
    """Task name -> the specialist trained on it, for every split of every skill, from
    the zoo's metadata (empty for a zoo without it): the quick eval's normalized accuracy
    then divides by the model that learned the skill, not whichever parent scores best."""
    try:
        from mergestudio.demo.info import zoo_info
        from mergestudio.evaluate.tasks import TaskFormatError, load_task
    except ImportError:
        return {}
    try:
        info = zoo_info(zoo)
    except (OSError, ValueError):
        return {}
    pins: dict[str, str] = {}
    for specialist in info.get("specialists", []):
        files = info.get("skills", {}).get(specialist.get("skill"), {})
        for split in ("dev", "test"):
            if files.get(split):
                try:
                    pins[load_task(files[split]).name] = str(specialist["path"])
                except TaskFormatError:
                    continue
    return pins


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
        return sorted((zoo / "tasks").glob("*.test.jsonl"))
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


def model_description(folder: Path) -> str | None:
    """A short description of a model folder, or None: the first paragraph of its model
    card (README.md), or for a demo zoo model the zoo's own metadata (its README's line
    for ``models/<name>``, else the skill the model was fine-tuned on)."""
    card = _card_paragraph(folder / "README.md")
    if card:
        return card
    zoo = folder.parent.parent
    if folder.parent.name != "models" or not (zoo / "README.md").is_file():
        return None
    described = _zoo_descriptions(zoo)
    return described.get(folder.name)


def _card_paragraph(readme: Path, limit: int = 240) -> str | None:
    """The first prose paragraph of a model card (front matter, headings, badges,
    tables and code skipped), cut to ``limit`` characters."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end >= 0 else ""
    paragraph: list[str] = []
    in_code = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            continue
        if in_code or stripped.startswith(("#", "|", "![", "[![", "<")):
            if paragraph:
                break
            continue
        if not stripped:
            if paragraph:
                break
            continue
        paragraph.append(stripped)
    joined = " ".join(paragraph)
    if not joined:
        return None
    return joined if len(joined) <= limit else joined[: limit - 1].rsplit(" ", 1)[0] + "…"


def _zoo_descriptions(zoo: Path) -> dict[str, str]:
    """Model name -> description from the demo package's metadata when it offers them,
    else from the zoo README's ``- `models/<name>`: ...`` lines and the skill table."""
    try:
        from mergestudio.demo import info
    except ImportError:
        info = None  # type: ignore[assignment]
    offered = getattr(info, "model_descriptions", None)
    if callable(offered):
        try:
            return {str(k): str(v) for k, v in dict(offered(zoo)).items()}
        except (OSError, ValueError, TypeError):
            pass  # fall back to the README below
    described: dict[str, str] = {}
    try:
        from mergestudio.demo.skills import SKILLS
    except ImportError:
        SKILLS = {}  # an engine without the demo package
    for name, skill in SKILLS.items():
        described[name] = f"Demo specialist: the base fine-tuned to {skill.description}."
    try:
        lines = (zoo / "README.md").read_text(encoding="utf-8").splitlines()
    except OSError:
        return described
    for index, line in enumerate(lines):
        if line.startswith("- `models/") and "<" not in line.split("`")[1]:
            name = line.split("`")[1].removeprefix("models/")
            body = [line.split(":", 1)[1].strip()]
            for following in lines[index + 1:]:  # the bullet's wrapped lines
                if not following.startswith("  "):
                    break
                body.append(following.strip())
            described[name] = f"Demo {name}: " + " ".join(body).rstrip(".") + "."
    return described
