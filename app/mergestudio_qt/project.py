"""The project file: the model list, the base, the recipe, merge and evaluation settings.

JSON with a ``version`` key. Local paths inside the project's folder are stored relative
to it, so a project folder can be moved or shared; they are made absolute again on load.
Nothing secret is ever written (no tokens).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

VERSION = 1
KIND = "mergestudio-project"
SUFFIX = ".msproj"


class ProjectError(Exception):
    """The file is not a project this version can read; the message says why."""


@dataclass
class ProjectData:
    models: list[dict[str, Any]] = field(default_factory=list)  # {"reference", "include"}
    base: str | None = None
    recipe: dict[str, Any] = field(default_factory=lambda: {"merge_method": "task_arithmetic"})
    merge: dict[str, Any] = field(default_factory=dict)
    evolve: dict[str, Any] = field(default_factory=dict)  # the Evolve page's settings (EvolveSettings)
    eval_tasks: list[str] = field(default_factory=list)
    # task name -> the model whose score on it normalized accuracy divides by (pinned by
    # the user or the zoo's metadata); tasks not named use the best-scoring parent
    specialists: dict[str, str] = field(default_factory=dict)
    # A multi-stage recipe: every stage in document order; ``recipe`` is the one edited.
    stages: list[dict[str, Any]] = field(default_factory=list)
    current_stage: int = 0

    @property
    def references(self) -> list[str]:
        return [m["reference"] for m in self.models]


def save_project(data: ProjectData, path: Path) -> None:
    folder = path.resolve().parent
    body = _map_paths(data, lambda ref: _relative(ref, folder))
    document = {"version": VERSION, "kind": KIND, **asdict(body)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(path)


def load_project(path: Path) -> ProjectData:
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise ProjectError(f"{path}: cannot read ({error.strerror})") from error
    except ValueError as error:
        raise ProjectError(f"{path}: not a project file (invalid JSON: {error})") from error
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise ProjectError(f"{path}: not a Merge Studio project")
    if document.get("version") != VERSION:
        raise ProjectError(f"{path}: project version {document.get('version')} is not supported")
    known = {f.name for f in fields(ProjectData)}
    try:
        data = ProjectData(**{k: v for k, v in document.items() if k in known})
    except TypeError as error:
        raise ProjectError(f"{path}: malformed project ({error})") from error
    folder = path.resolve().parent
    return _map_paths(data, lambda ref: _absolute(ref, folder))


def _relative(reference: str, folder: Path) -> str:
    path = Path(reference)
    if not path.is_absolute():
        return reference
    try:
        return "./" + path.relative_to(folder).as_posix()
    except ValueError:
        return reference


def _absolute(reference: str, folder: Path) -> str:
    if reference.startswith("./") or reference.startswith("../"):
        return str((folder / reference).resolve())
    return reference


def _map_paths(data: ProjectData, convert: Callable[[str], str]) -> ProjectData:
    """A copy with every model reference and task file passed through ``convert``."""
    mapped = copy.deepcopy(data)
    for model in mapped.models:
        model["reference"] = convert(model["reference"])
    mapped.base = convert(mapped.base) if mapped.base else None
    mapped.eval_tasks = [convert(task) for task in mapped.eval_tasks]
    mapped.specialists = {task: convert(model) for task, model in mapped.specialists.items()}
    if mapped.merge.get("out_dir"):
        mapped.merge["out_dir"] = convert(mapped.merge["out_dir"])
    names = {str(s.get("name")) for s in mapped.stages if s.get("name")}
    mapped.stages = [_map_recipe_paths(s, lambda ref: ref if ref in names else convert(ref)) for s in mapped.stages]
    mapped.recipe = recipe = _map_recipe_paths(mapped.recipe, lambda ref: ref if ref in names else convert(ref))
    if recipe.get("tokenizer_source") not in (None, "base", "union"):
        recipe["tokenizer_source"] = convert(recipe["tokenizer_source"])
    _map_tokenizer_block(recipe.get("tokenizer"), convert)
    return mapped


def _map_tokenizer_block(block: object, convert: Callable[[str], str]) -> None:
    """The models a ``tokenizer:`` block names: its source and its token overrides'."""
    if not isinstance(block, dict):
        return
    if block.get("source") not in (None, "base", "union"):
        block["source"] = convert(block["source"])
    for override in (block.get("tokens") or {}).values():
        source = override.get("source") if isinstance(override, dict) else None
        if isinstance(source, str):
            override["source"] = convert(source)
        elif isinstance(source, dict) and isinstance(source.get("model"), str):
            source["model"] = convert(source["model"])


def project_from_recipe(path: Path) -> ProjectData:
    """A project from a mergekit YAML recipe, checked by the engine: every model it
    names (base first), its ``base_model`` as the base. A relative model path is found
    next to the recipe or in a folder above it (recipes are often run from a repository
    root); Hub ids stay as written."""
    from mergestudio.errors import MergeStudioError
    from mergestudio.recipe import Recipe, validate_recipe
    from mergestudio.recipe.multi import is_multi_stage

    try:
        if is_multi_stage(path.read_text()):
            return _project_from_stages(path)
        recipe = Recipe.load(path)
        validate_recipe(recipe)
    except OSError as error:
        raise ProjectError(f"{path}: cannot read ({error.strerror})") from error
    except MergeStudioError as error:
        raise ProjectError(str(error)) from error
    folder = path.resolve().parent
    document = _map_recipe_paths(recipe.to_dict(), lambda ref: _find_model(ref, folder))
    base = document.get("base_model")
    references = ([base] if base else []) + [m for m in _recipe_models(document) if m != base]
    return ProjectData(
        models=[{"reference": ref, "include": True} for ref in dict.fromkeys(references)],
        base=base,
        recipe=document,
    )


def _project_from_stages(path: Path) -> ProjectData:
    """A multi-stage recipe: every model any stage names (stage names aside) is listed;
    the final stage is the one edited first."""
    from mergestudio.errors import MergeStudioError
    from mergestudio.recipe.multi import load_multi

    try:
        graph = load_multi(path)
    except MergeStudioError as error:
        raise ProjectError(str(error)) from error
    folder = path.resolve().parent
    names = {s.name for s in graph.stages}
    stages = [
        _map_recipe_paths(s.recipe.to_dict(), lambda ref: ref if ref in names else _find_model(ref, folder))
        for s in graph.stages
    ]
    references: list[str] = []
    for stage in stages:
        base = stage.get("base_model")
        references += ([base] if base else []) + _recipe_models(stage)
    references = [r for r in dict.fromkeys(references) if r not in names]
    final = stages[-1]
    base = next((s.get("base_model") for s in reversed(stages) if s.get("base_model") in references), None)
    return ProjectData(
        models=[{"reference": ref, "include": True} for ref in references],
        base=base,
        recipe=final,
        stages=stages,
        current_stage=len(stages) - 1,
    )


def _recipe_models(recipe: dict[str, Any]) -> list[str]:
    models = [m["model"] for m in recipe.get("models") or []]
    for output_slice in recipe.get("slices") or []:
        models += [s["model"] for s in output_slice.get("sources") or []]
    return models


def _find_model(reference: str, folder: Path) -> str:
    path = Path(reference).expanduser()
    if path.is_absolute():
        return str(path)
    for root in (folder, *folder.parents[:4], Path.cwd()):
        if (root / path).exists():
            return str((root / path).resolve())
    return reference  # a Hub id, or a path the Models page will report as missing


def _map_recipe_paths(recipe: dict[str, Any], convert: Callable[[str], str]) -> dict[str, Any]:
    mapped = copy.deepcopy(recipe)
    if mapped.get("base_model"):
        mapped["base_model"] = convert(mapped["base_model"])
    for model in mapped.get("models") or []:
        model["model"] = convert(model["model"])
    for output_slice in mapped.get("slices") or []:
        if output_slice.get("base_model"):
            output_slice["base_model"] = convert(output_slice["base_model"])
        for source in output_slice.get("sources") or []:
            source["model"] = convert(source["model"])
    return mapped
