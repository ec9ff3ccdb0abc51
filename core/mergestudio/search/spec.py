"""The search spec: what a search merges, which recipe parameters evolve, what it
optimises, with which algorithm and budget. Read from YAML and validated with messages
that name the key (``genome[1].high``, ``objectives[0].task``).

Relative paths (models, task files, a recipe file) are resolved against the spec file's
folder, so a spec can be run from anywhere; the run folder keeps the resolved copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from mergestudio.search.genome import Genome, StagedGenome
from mergestudio.search.objectives import Objectives
from mergestudio.search.schema import (
    HIGHER_IS_BETTER,
    KNOWN_METRICS,
    Algorithm,
    AlgorithmSpec,
    BudgetSpec,
    Direction,
    EvaluationSpec,
    FitnessSpec,
    GeneSpec,
    Lane,
    ObjectiveSpec,
    ScoreSpec,
    SearchSpec,
    SpecError,
)

if TYPE_CHECKING:
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import MultiRecipe

# The schema's names are part of this module's interface: callers load and name specs here.
__all__ = [
    "HIGHER_IS_BETTER",
    "KNOWN_METRICS",
    "Algorithm",
    "AlgorithmSpec",
    "BudgetSpec",
    "Direction",
    "EvaluationSpec",
    "FitnessSpec",
    "GeneSpec",
    "Lane",
    "ObjectiveSpec",
    "ScoreSpec",
    "SearchSpec",
    "SpecError",
    "base_recipe",
    "build_genome",
    "check_spec",
    "load_spec",
    "objective_files",
    "parse_spec",
    "spec_from_dict",
]

def objective_files(task: str) -> dict[str, str]:
    """An objective's files for a task file named ``<name>.test.jsonl`` that has a
    ``<name>.dev.jsonl`` beside it (the demo zoo's splits): select on dev, re-score on
    test. Any other file is the objective's task as it is."""
    path = Path(task)
    if path.name.endswith(".test.jsonl"):
        dev = path.with_name(path.name.removesuffix(".test.jsonl") + ".dev.jsonl")
        if dev.is_file():
            return {"task": str(dev), "test": str(path)}
    return {"task": task}


# ---- loading -----------------------------------------------------------------------------


def load_spec(path: str | Path) -> SearchSpec:
    """Read, validate and resolve a spec file (paths relative to its folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{path}: cannot read search spec ({error.strerror})") from error
    return parse_spec(text, source=str(path), root=path.resolve().parent)


def parse_spec(text: str, source: str = "search spec", root: Path | None = None) -> SearchSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a search spec must be a YAML mapping")
    return spec_from_dict(data, source, root)


def spec_from_dict(data: dict[str, Any], source: str = "search spec", root: Path | None = None) -> SearchSpec:
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, source)) from None
    if root is not None:
        spec = _resolve_paths(spec, root, source)
    check_spec(spec, source)
    return spec


def check_spec(spec: SearchSpec, source: str = "search spec") -> None:
    """Cross-field checks that need the recipe and the method registry."""
    recipe = base_recipe(spec, source)  # raises SpecError naming the recipe (a graph: its final stage)
    for i, objective in enumerate(spec.objectives):
        if objective.metric is not None and objective.metric not in KNOWN_METRICS:
            known = ", ".join(sorted(KNOWN_METRICS))
            raise SpecError(
                f"{source}: objectives[{i}].metric: unknown metric {objective.metric!r}; known: {known}"
            )
        if objective.lm_eval is not None:
            continue  # lm-eval checks its own tasks when Objectives.build loads them
        if not Path(objective.task).is_file():
            raise SpecError(f"{source}: objectives[{i}].task: no such task file {objective.task!r}")
        if objective.test is not None:
            if not Path(objective.test).is_file():
                raise SpecError(f"{source}: objectives[{i}].test: no such task file {objective.test!r}")
            if Path(objective.test).resolve() == Path(objective.task).resolve():
                raise SpecError(
                    f"{source}: objectives[{i}].test: the held-out file must differ from the task the "
                    "search selects on"
                )
    _check_specialists(spec, recipe, source)
    Objectives.build(spec, source)  # reads the tasks: raises SpecError naming objectives[i]
    multi = len(spec.objectives) > 1 and spec.score is None
    if spec.algorithm.name == "cmaes" and multi:
        raise SpecError(
            f"{source}: algorithm.name: cmaes optimises one objective; add a 'score' to combine "
            "the objectives, or use nsga2, tpe or random"
        )
    if spec.algorithm.name == "cmaes" and spec.algorithm.population_size < 4:
        raise SpecError(f"{source}: algorithm.population_size: CMA-ES needs a population of at least 4")
    build_genome(spec, source)  # raises SpecError naming genome[i]


def build_genome(spec: SearchSpec, source: str = "search spec") -> Genome | StagedGenome:
    """The genome of ``spec``: over one recipe, or over the stages of a multi-stage one."""
    graph = search_graph(spec, source)
    if graph is None:
        for index, gene in enumerate(spec.genome):
            if gene.stage is not None:
                raise SpecError(f"{source}: genome[{index}].stage: the recipe has one stage; leave 'stage' out")
        return Genome.build(spec.genome, base_recipe(spec, source), source)
    return StagedGenome.build(spec.genome, graph, source)


def search_graph(spec: SearchSpec, source: str = "search spec") -> MultiRecipe | None:
    """The spec's recipe as a graph of stages when it has several (a list of stage
    mappings, or multi-document YAML text or file); None for a one-stage recipe."""
    from mergestudio.errors import RecipeError
    from mergestudio.recipe.multi import is_multi_stage, parse_multi

    text: str | None = None
    if isinstance(spec.recipe, list):
        text = yaml.safe_dump_all(spec.recipe, sort_keys=False)
    elif isinstance(spec.recipe, str):
        path = Path(spec.recipe)
        text = spec.recipe if "\n" in spec.recipe or not path.is_file() else path.read_text(encoding="utf-8")
    if text is None or not is_multi_stage(text):
        return None
    try:
        graph = parse_multi(text, "recipe")
    except RecipeError as error:
        raise SpecError(f"{source}: {error}") from None
    for stage in graph.stages:
        if not stage.recipe.models:
            raise SpecError(f"{source}: recipe: stage {stage.name!r}: a search needs stages with 'models'")
    return graph


def _check_specialists(spec: SearchSpec, recipe: Recipe, source: str) -> None:
    """A pinned specialist must be one of the recipe's fine-tuned models."""
    from mergestudio.search.standing import same_model

    tuned = [m.model for m in recipe.models or [] if not same_model(m.model, recipe.base_model)]
    for i, objective in enumerate(spec.objectives):
        wanted = objective.specialist
        if wanted is None or any(same_model(wanted, m) or Path(m).name == wanted for m in tuned):
            continue
        names = ", ".join(Path(m).name for m in tuned) or "none"
        raise SpecError(
            f"{source}: objectives[{i}].specialist: {wanted!r} is not one of the recipe's fine-tuned "
            f"models ({names})"
        )


def base_recipe(spec: SearchSpec, source: str = "search spec") -> Recipe:
    """The spec's recipe; for a multi-stage recipe, its final stage."""
    from mergestudio.engine.merge import load_recipe
    from mergestudio.errors import RecipeError

    graph = search_graph(spec, source)
    if graph is not None:
        return graph.final.recipe
    data = spec.recipe[0] if isinstance(spec.recipe, list) and spec.recipe else spec.recipe
    try:
        if isinstance(data, list):
            raise RecipeError("an empty list of stages")
        recipe = load_recipe(data)
    except RecipeError as error:
        raise SpecError(f"{source}: recipe: {error}") from None
    if not recipe.models:
        raise SpecError(
            f"{source}: recipe: a search needs a recipe with 'models' (slices are not searched yet)"
        )
    return recipe


def _resolve_paths(spec: SearchSpec, root: Path, source: str) -> SearchSpec:
    """Make model, task and recipe paths absolute when they exist relative to ``root``
    (Hub ids such as ``org/repo`` are left as they are)."""

    data = spec.model_dump(mode="json", exclude_none=True)
    recipe = data["recipe"]
    if isinstance(recipe, str) and "\n" not in recipe:
        recipe_path = Path(_resolve_against(recipe, root))
        if not recipe_path.is_file():
            raise SpecError(f"{source}: recipe: no such recipe file {recipe!r}")
        documents = [d for d in yaml.safe_load_all(recipe_path.read_text(encoding="utf-8")) if d is not None]
        recipe = documents if len(documents) > 1 else documents[0] if documents else None
        # A recipe file's own relative model paths are relative to the recipe file.
        root_for_models = recipe_path.parent
    else:
        root_for_models = root
    if isinstance(recipe, dict):
        recipe = _resolve_recipe_models(recipe, lambda r: _resolve_against(r, root_for_models))
    elif isinstance(recipe, list):
        stage_names = {d.get("name") for d in recipe if isinstance(d, dict)}
        recipe = [
            _resolve_recipe_models(d, lambda r: r if r in stage_names else _resolve_against(r, root_for_models))
            if isinstance(d, dict)
            else d
            for d in recipe
        ]
    data["recipe"] = recipe
    for objective in data["objectives"]:
        if objective.get("lm_eval", {}).get("include_path"):
            objective["lm_eval"]["include_path"] = _resolve_against(objective["lm_eval"]["include_path"], root)
        if not objective.get("task"):
            continue  # an lm-eval task: named, not a file
        objective["task"] = _resolve_against(objective["task"], root)
        if objective.get("test"):
            objective["test"] = _resolve_against(objective["test"], root)
        if objective.get("specialist"):
            objective["specialist"] = _resolve_against(objective["specialist"], root_for_models)
    for gene in data["genome"]:
        if gene.get("models"):
            gene["models"] = [_resolve_against(m, root_for_models) for m in gene["models"]]
    return SearchSpec.model_validate(data)


def _resolve_against(ref: str, root: Path) -> str:
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and (root / candidate).exists():
        return str((root / candidate).resolve())
    return ref


def _resolve_recipe_models(recipe: dict[str, Any], resolve: Any) -> dict[str, Any]:
    recipe = dict(recipe)
    if isinstance(recipe.get("base_model"), str):
        recipe["base_model"] = resolve(recipe["base_model"])
    if isinstance(recipe.get("tokenizer_source"), str) and recipe["tokenizer_source"] not in (
        "base",
        "union",
    ):
        recipe["tokenizer_source"] = resolve(recipe["tokenizer_source"])
    models = recipe.get("models")
    if isinstance(models, list):
        recipe["models"] = [
            {**m, "model": resolve(m["model"])}
            if isinstance(m, dict) and isinstance(m.get("model"), str)
            else m
            for m in models
        ]
    return recipe


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        location = _key_path(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{location}'")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing required key '{location}'")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{source}: {location}: {message} (got {item.get('input')!r})")
    return "\n".join(dict.fromkeys(lines))


def _key_path(loc: tuple[int | str, ...]) -> str:
    """('genome', 0, 'low') -> 'genome[0].low'; pydantic's union tags are dropped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in {"str", "dict", "int", "float"}:
            continue
        else:
            path += f".{part}" if path else part
    return path
