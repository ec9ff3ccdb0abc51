"""``mergestudio demo info``: where the zoo's files are, what each model is, and its
measured results table, as text or as JSON (``zoo_info``) for tests, tools and the window."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from mergestudio.demo import paths
from mergestudio.demo.recipes import DEFAULT_MERGE_NAMES, default_merge
from mergestudio.demo.results import table_markdown
from mergestudio.demo.skills import SKILLS

REPORTED_SPLIT = "test"  # the split results.json's table is measured on


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


def zoo_skills(zoo: Path, results: dict[str, Any] | None = None) -> list[str]:
    """The zoo's skills: from results.json's build configuration, else every model folder
    but the base."""
    if results is not None:
        return list(results["config"]["skills"])
    return sorted(p.name for p in paths.models_dir(zoo).iterdir() if p.is_dir() and p.name != "base")


def _base_description(results: dict[str, Any] | None) -> str:
    if results is None:
        return "the base model every specialist was fine-tuned from"
    model = results["config"]["model"]
    return (
        f"the base: a {model['num_hidden_layers']}-layer Llama (hidden {model['hidden_size']}) pre-trained on "
        "general sentences and to follow instructions under their long names (`last kqpz=`, `max 3819=`); "
        "it does not know the skills' short commands"
    )


def _specialist_description(skill: str, rows: dict[str, dict[str, Any]]) -> str:
    known = SKILLS.get(skill)
    what = known.description if known else skill
    text = f"the base fine-tuned on one skill, {skill}: {what}"
    row = rows.get(skill)
    if row is not None:
        text += f" ({100 * row['accuracy'][skill]:.0f} % exact match on its test split)"
    return text


def _merge_description(name: str, rows: dict[str, dict[str, Any]]) -> str:
    text = default_merge(name).note if name in DEFAULT_MERGE_NAMES else name
    row = rows.get(name)
    if row is not None and row.get("normalized_mean") is not None:
        text += (
            f"; mean {100 * row['mean']:.1f} %, keeps {100 * row['normalized_mean']:.0f} % "
            "of the specialists' accuracy"
        )
    return text


def zoo_info(zoo: Path) -> dict[str, Any]:
    """A machine-readable description of the zoo (``demo info --json``): the base, each
    specialist and its skill, each skill's train/dev/test files, the default recipes,
    and the measured results table (raw and normalized) with the split it was measured on.
    Paths are absolute. Raises ``FileNotFoundError`` when ``zoo`` holds no zoo."""
    if not paths.models_dir(zoo).is_dir():
        raise FileNotFoundError(f"no demo zoo at {zoo} (build one with: mergestudio demo build)")
    results = load_results(zoo)
    rows = {r["model"]: r for r in (results or {}).get("rows", [])}
    skills = zoo_skills(zoo, results)
    models = paths.models_dir(zoo)

    def file(name: str, split: str) -> str | None:
        path = paths.task_file(zoo, name, split)
        return str(path.resolve()) if path.is_file() else None

    recipes = []
    for recipe_file in sorted(paths.recipes_dir(zoo).glob("*.yml")):
        recipes.append(
            {
                "name": recipe_file.stem,
                "path": str(recipe_file.resolve()),
                "description": _merge_description(recipe_file.stem, rows),
            }
        )
    return {
        "zoo": str(zoo.resolve()),
        "base": {"path": str((models / "base").resolve()), "description": _base_description(results)},
        "specialists": [
            {
                "name": skill,
                "skill": skill,
                "path": str((models / skill).resolve()),
                "description": _specialist_description(skill, rows),
            }
            for skill in skills
        ],
        "skills": {
            skill: {
                "description": SKILLS[skill].description if skill in SKILLS else skill,
                "example": SKILLS[skill].sample(random.Random(0)).text if skill in SKILLS else None,
                "train": file(skill, "train"),
                "dev": file(skill, "dev"),
                "test": file(skill, "test"),
            }
            for skill in skills
        },
        "general": {"dev": file("general", "dev"), "test": file("general", "test")},
        "recipes": recipes,
        "results": None
        if results is None
        else {
            "split": REPORTED_SPLIT,
            "metric": "exact_match",
            "rows": results.get("rows", []),
        },
        "build": None if results is None else results.get("build"),
    }


def describe_zoo(zoo: Path) -> str:
    """A human-readable summary: paths, sizes, item counts, recipes, build info, table."""
    if not paths.models_dir(zoo).is_dir():
        return f"no demo zoo at {zoo} (build one with: mergestudio demo build)"
    lines = [f"demo zoo: {zoo}  ({_folder_bytes(zoo) / 1e6:.1f} MB)", "", "models:"]
    for folder in sorted(paths.models_dir(zoo).iterdir(), key=lambda p: (p.name != "base", p.name)):
        if folder.is_dir():
            lines.append(f"  {folder.name:<10} {folder}  ({_folder_bytes(folder) / 1e6:.1f} MB)")
    lines += ["", "tasks (train: fine-tuning; dev: searches; test: reported tables):"]
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
        f"exact-match accuracy (%) on the {REPORTED_SPLIT} splits; * = the specialist's own skill; "
        "normalized = accuracy ÷ the skill's specialist's, averaged over skills:",
        "",
        table_markdown(results.get("rows", [])),
    ]
    return "\n".join(lines)
