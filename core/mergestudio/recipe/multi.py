"""Multi-stage recipes: several named merges in one YAML file, as mergekit-multi writes
them (documents separated by ``---``, each a recipe with a ``name``); a later stage names
an earlier one where it would name a model.

Our rules where mergekit-multi is silent: every stage but the final one has a unique
``name``; the final stage is the one without a name, else the last document; every other
stage must feed a later one (its output would otherwise be lost); references that name
no stage must be a model folder, file or Hub repository. The stage graph is checked here,
before any model is opened.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from mergestudio.errors import RecipeError
from mergestudio.io.sources import is_hub_reference
from mergestudio.recipe.model import Recipe

FINAL_NAME = "final"


@dataclass(frozen=True)
class Stage:
    name: str
    recipe: Recipe
    needs: tuple[str, ...]  # stages whose output this one reads, in reference order


@dataclass(frozen=True)
class MultiRecipe:
    """Stages in an order that runs every stage after those it needs; the last is final."""

    stages: tuple[Stage, ...]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def consumers(self, name: str) -> list[str]:
        return [s.name for s in self.stages if name in s.needs]

    def to_yaml(self) -> str:
        """The stages as mergekit-multi YAML, one document each, in running order."""
        documents = [{**s.recipe.to_dict(), "name": s.name} if s.recipe.name or s is not self.final
                     else s.recipe.to_dict() for s in self.stages]
        return "---\n".join(Recipe.from_dict(d).to_yaml() for d in documents)


def is_multi_stage(text: str) -> bool:
    """Whether YAML ``text`` holds more than one document (a multi-stage recipe)."""
    try:
        return sum(1 for document in yaml.safe_load_all(text) if document is not None) > 1
    except yaml.YAMLError:
        return False


def load_multi(path: str | Path) -> MultiRecipe:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise RecipeError(f"{path}: cannot read recipe ({error.strerror})") from error
    return parse_multi(text, str(path))


def parse_multi(text: str, source: str = "recipe") -> MultiRecipe:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise RecipeError(f"{source}: invalid YAML: {error}") from error
    if not documents:
        raise RecipeError(f"{source}: no recipe in the file")
    recipes = []
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise RecipeError(f"{source}: stage {index + 1} must be a YAML mapping with merge_method")
        recipes.append(Recipe.from_dict(document, f"{source} (stage {index + 1})"))
    return MultiRecipe(_ordered(_name_stages(recipes, source), source))


def _name_stages(recipes: list[Recipe], source: str) -> list[tuple[str, Recipe]]:
    unnamed = [i for i, r in enumerate(recipes) if not r.name]
    final = unnamed[0] if len(unnamed) == 1 else len(recipes) - 1
    if len(unnamed) > 1 or (unnamed and unnamed[0] != final):
        where = ", ".join(str(i + 1) for i in unnamed)
        raise RecipeError(f"{source}: stages {where} have no name; only the final stage may go without one")
    named: list[tuple[str, Recipe]] = []
    seen: set[str] = set()
    for index, recipe in enumerate(recipes):
        name = recipe.name or FINAL_NAME
        if name in seen:
            raise RecipeError(f"{source}: stage {index + 1}: the name {name!r} is used by another stage")
        seen.add(name)
        named.append((name, recipe))
    # The final stage last; the others keep their document order (sorted below).
    named.append(named.pop(final))
    return named


def _ordered(named: list[tuple[str, Recipe]], source: str) -> tuple[Stage, ...]:
    names = [name for name, _ in named]
    stages: dict[str, Stage] = {}
    for name, recipe in named:
        needs = tuple(ref for ref in recipe.referenced_models() if ref in names)
        if name in needs:
            raise RecipeError(f"{source}: stage {name!r} uses its own output")
        for reference in recipe.referenced_models():
            if reference not in names and not _is_model_reference(reference):
                raise RecipeError(
                    f"{source}: stage {name!r} names {reference!r}, which is no stage "
                    f"({', '.join(names)}) and no model folder, file or Hub repository"
                )
        stages[name] = Stage(name, recipe, needs)
    sorter = graphlib.TopologicalSorter({name: stage.needs for name, stage in stages.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise RecipeError(f"{source}: the stages form a cycle: {cycle}") from None
    final = names[-1]
    if order[-1] != final:
        # Something runs after the final stage only if the final stage feeds it.
        users = [s.name for s in stages.values() if final in s.needs]
        raise RecipeError(f"{source}: the final stage {final!r} is used by {', '.join(users)}")
    for name in names[:-1]:
        if not any(name in s.needs for s in stages.values()):
            raise RecipeError(
                f"{source}: stage {name!r} feeds no later stage and is not the final one: its output would be lost"
            )
    return tuple(stages[name] for name in order)


def _is_model_reference(reference: str) -> bool:
    return Path(reference).expanduser().exists() or is_hub_reference(reference)
