"""Where the demo zoo lives: ``resources/demo`` in the repository, or the folder named by
the ``MERGESTUDIO_DEMO_DIR`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
ENV_VAR = "MERGESTUDIO_DEMO_DIR"


def default_zoo_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else REPO_ROOT / "resources" / "demo"


def models_dir(zoo: Path) -> Path:
    return zoo / "models"


def tasks_dir(zoo: Path) -> Path:
    return zoo / "tasks"


def recipes_dir(zoo: Path) -> Path:
    return zoo / "recipes"


def results_file(zoo: Path) -> Path:
    return zoo / "results.json"


def task_file(zoo: Path, name: str, split: str) -> Path:
    """``tasks/<name>.<split>.jsonl``: ``name`` a skill or ``general``, ``split`` one of
    train (skills only), dev (searches, cheap fitness) and test (reported tables)."""
    return tasks_dir(zoo) / f"{name}.{split}.jsonl"


def eval_task_files(zoo: Path, split: str = "test") -> list[Path]:
    """The evaluation tasks of ``split`` (test: what tables report; dev: what searches
    select on): one per skill, then general-text perplexity."""
    general = f"general.{split}.jsonl"
    return sorted(tasks_dir(zoo).glob(f"*.{split}.jsonl"), key=lambda p: (p.name == general, p.name))


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it (recipes are run from the
    root), absolute otherwise."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path.resolve())
