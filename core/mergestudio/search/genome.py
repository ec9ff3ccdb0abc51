"""The genome: the flat vector of numbers a search evolves, and how it becomes a recipe.

Each ``GeneSpec`` expands into genes, one per (model, lane, layer group). A gene has a
stable name, e.g. ``weight[math].mlp@1`` (the MLP lane of layer group 1 of model
``math``'s weight), and bounds. ``Genome.recipe(values)`` writes the values into the base
recipe as mergekit settings: a scalar, a gradient over layer groups (the family's blocks),
or lane conditions whose values are scalars or gradients. Lanes and their ``filter``
substrings come from the family of the recipe's reference model
(``mergestudio.architectures``): ``self_attn`` / ``mlp`` for Llama, ``experts.3.`` for a
Mixtral expert, ``attn2`` for an SD UNet's cross-attention; "other" is every lane not named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.architectures import Lane as FamilyLane
from mergestudio.search.schema import GeneSpec, Lane, SpecError

if TYPE_CHECKING:
    from mergestudio.methods.registry import MethodSpec
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import MultiRecipe

OTHER: Lane = "other"
# Lanes when the reference model cannot be opened (a spec checked before its models
# exist): the words every common family's names use.
DEFAULT_LANES = (FamilyLane("attention", ("attn",)), FamilyLane("mlp", ("mlp",)), FamilyLane(OTHER, ()))


@dataclass(frozen=True)
class Gene:
    name: str
    low: float
    high: float


@dataclass(frozen=True)
class _Target:
    """Where one GeneSpec's values go: a model's parameters (or the global ones)."""

    param: str
    model: str | None  # None: the recipe's global parameters
    lanes: tuple[Lane, ...] | None
    groups: int
    genes: tuple[Gene, ...]  # lane-major, then layer group


class Genome:
    """Built from the spec's genome and the base recipe; turns gene values into recipes."""

    def __init__(self, base: Recipe, targets: list[_Target], lanes: tuple[FamilyLane, ...] = DEFAULT_LANES) -> None:
        self.base = base
        self._targets = targets
        self.lanes = lanes
        self.genes: tuple[Gene, ...] = tuple(g for t in targets for g in t.genes)

    @classmethod
    def build(
        cls,
        specs: Sequence[GeneSpec],
        base: Recipe,
        source: str = "search spec",
        lanes: tuple[FamilyLane, ...] | None = None,
    ) -> Genome:
        """``lanes``: the family's lanes; by default those of the recipe's reference model."""
        from mergestudio.errors import RecipeError
        from mergestudio.methods.registry import get_method

        lanes = lanes if lanes is not None else reference_lanes(base)
        known = [lane.name for lane in lanes]
        for index, spec in enumerate(specs):
            unknown = [lane for lane in spec.lanes or [] if lane != OTHER and lane not in known]
            if unknown:
                raise SpecError(
                    f"{source}: genome[{index}].lanes: {', '.join(unknown)} not a lane of this model "
                    f"(lanes: {', '.join(known)}, or other)"
                )
        try:
            method = get_method(base.merge_method)
        except RecipeError as error:
            raise SpecError(f"{source}: recipe.merge_method: {error}") from None
        labels = _model_labels(base)
        targets: list[_Target] = []
        for index, spec in enumerate(specs):
            targets += _targets_of(spec, f"{source}: genome[{index}]", method, base, labels)
        names = [g.name for t in targets for g in t.genes]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise SpecError(f"{source}: genome: gene {duplicate!r} is evolved twice")
        genome = cls(base, targets, lanes)
        genome._check_recipe(source)
        return genome

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    def template_model(self) -> str:
        """A model with the output's architecture, loaded once to merge candidates into."""
        return self.base.base_model or (self.base.models or [])[0].model

    def midpoint(self) -> dict[str, float]:
        return {g.name: (g.low + g.high) / 2 for g in self.genes}

    def recipe(self, values: Mapping[str, float]) -> Recipe:
        """The base recipe with every evolved parameter set from ``values``."""
        from mergestudio.recipe.model import Recipe

        data = self.base.to_dict()
        for target in self._targets:
            setting = self._setting(target, values)
            if target.model is None:
                data.setdefault("parameters", {})[target.param] = setting
                continue
            for entry in data["models"]:
                if entry["model"] == target.model:
                    entry.setdefault("parameters", {})[target.param] = setting
        return Recipe.from_dict(data, "candidate recipe")

    def _setting(self, target: _Target, values: Mapping[str, float]) -> Any:
        per_lane = [
            _group_value([round(float(values[g.name]), 6) for g in target.genes[i : i + target.groups]])
            for i in range(0, len(target.genes), target.groups)
        ]
        if target.lanes is None:
            return per_lane[0]
        evolved = dict(zip(target.lanes, per_lane, strict=True))
        rest = evolved.get(OTHER, self._fixed_value(target))
        *filtered, fallback = self.lanes
        conditions = [
            {"filter": pattern, "value": evolved.get(lane.name, rest)}
            for lane in filtered
            for pattern in lane.filters
        ]
        fallback_value = evolved.get(fallback.name, rest)
        # Trailing conditions that give the fallback's value change nothing: drop them.
        while conditions and conditions[-1]["value"] == fallback_value:
            conditions.pop()
        return [*conditions, {"value": fallback_value}]

    def _fixed_value(self, target: _Target) -> Any:
        """The base recipe's value of the parameter for lanes the genome leaves alone."""
        from mergestudio.methods.registry import get_method

        block = self.base.parameters or {}
        if target.model is not None:
            entry = next(m for m in self.base.models or [] if m.model == target.model)
            block = {**block, **(entry.parameters or {})}
        if target.param in block:
            value = block[target.param]
            if isinstance(value, int | float | list) and not isinstance(value, bool):
                return value
        return get_method(self.base.merge_method).param(target.param).default  # type: ignore[union-attr]

    def _check_recipe(self, source: str) -> None:
        from mergestudio.errors import RecipeError
        from mergestudio.recipe.validate import validate_recipe

        for probe in (
            self.midpoint(),
            {g.name: g.low for g in self.genes},
            {g.name: g.high for g in self.genes},
        ):
            try:
                validate_recipe(self.recipe(probe))
            except RecipeError as error:
                raise SpecError(
                    f"{source}: genome: the candidate recipes would be invalid: {error}"
                ) from None


class StagedGenome:
    """Genes over the stages of a multi-stage recipe: each ``GeneSpec`` names its stage
    (``stage: NAME``; the final stage when left out), gene names are ``NAME:gene``, and a
    candidate is the whole graph with every stage's evolved parameters set."""

    def __init__(self, graph: MultiRecipe, genomes: dict[str, Genome]) -> None:
        self.graph = graph
        self._genomes = genomes
        self.base: Recipe = graph.final.recipe
        self.genes: tuple[Gene, ...] = tuple(
            Gene(f"{stage}:{g.name}", g.low, g.high) for stage, genome in genomes.items() for g in genome.genes
        )

    @classmethod
    def build(cls, specs: Sequence[GeneSpec], graph: MultiRecipe, source: str = "search spec") -> StagedGenome:
        names = [s.name for s in graph.stages]
        by_stage: dict[str, list[GeneSpec]] = {}
        for index, spec in enumerate(specs):
            stage = spec.stage or graph.final.name
            if stage not in names:
                raise SpecError(f"{source}: genome[{index}].stage: no stage {stage!r} (stages: {', '.join(names)})")
            by_stage.setdefault(stage, []).append(spec)
        lanes = _model_lanes(template_of_graph(graph))
        genomes = {
            stage.name: Genome.build(by_stage[stage.name], stage.recipe, f"{source} (stage {stage.name!r})", lanes)
            for stage in graph.stages
            if stage.name in by_stage
        }
        return cls(graph, genomes)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    def midpoint(self) -> dict[str, float]:
        return {g.name: (g.low + g.high) / 2 for g in self.genes}

    def template_model(self) -> str:
        return template_of_graph(self.graph)

    def recipe(self, values: Mapping[str, float]) -> MultiRecipe:
        """The graph with every evolved stage's parameters set from ``values``."""
        from dataclasses import replace

        from mergestudio.recipe.multi import MultiRecipe

        stages = []
        for stage in self.graph.stages:
            genome = self._genomes.get(stage.name)
            if genome is not None:
                prefix = f"{stage.name}:"
                own = {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}
                stage = replace(stage, recipe=genome.recipe(own))
            stages.append(stage)
        return MultiRecipe(tuple(stages))


def template_of_graph(graph: MultiRecipe) -> str:
    """The model whose architecture the final output has: the final stage's base (else
    first model), followed through stage names to a model of the inputs."""
    stages = {s.name: s for s in graph.stages}
    recipe = graph.final.recipe
    while True:
        reference = recipe.base_model or next((m.model for m in recipe.models or []), None)
        reference = reference or recipe.referenced_models()[0]
        if reference not in stages:
            return reference
        recipe = stages[reference].recipe


def _model_lanes(reference: str) -> tuple[FamilyLane, ...]:
    from mergestudio.errors import MergeStudioError
    from mergestudio.io.sources import open_model

    try:
        source = open_model(reference)
    except (MergeStudioError, OSError):
        return DEFAULT_LANES
    source.close()
    return source.layout.lanes if len(source.layout.lanes) > 1 else DEFAULT_LANES


def reference_lanes(recipe: Recipe) -> tuple[FamilyLane, ...]:
    """The lanes of the recipe's base model (else its first model), read from headers;
    ``DEFAULT_LANES`` when it cannot be opened."""
    from mergestudio.errors import MergeStudioError
    from mergestudio.io.sources import open_model

    reference = recipe.base_model or next((m.model for m in recipe.models or []), None)
    if reference is None:
        return DEFAULT_LANES
    try:
        source = open_model(reference)
    except (MergeStudioError, OSError):
        return DEFAULT_LANES
    source.close()
    return source.layout.lanes if len(source.layout.lanes) > 1 else DEFAULT_LANES


def _group_value(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values


def _model_labels(recipe: Recipe) -> dict[str, str]:
    """Short, unique names for gene names: the folder name, else the position."""
    refs = [m.model for m in recipe.models or []]
    short = [Path(r.rstrip("/")).name or r for r in refs]
    return {
        r: (s if short.count(s) == 1 else f"m{i}") for i, (r, s) in enumerate(zip(refs, short, strict=True))
    }


def _targets_of(
    spec: GeneSpec, where: str, method: MethodSpec, base: Recipe, labels: dict[str, str]
) -> list[_Target]:
    param = method.param(spec.param)
    if param is None:
        valid = ", ".join(p.name for p in method.params if p.kind in ("float", "int")) or "none"
        raise SpecError(
            f"{where}.param: {spec.param!r} is not a parameter of {method.name!r}; numeric: {valid}"
        )
    if param.kind != "float":
        raise SpecError(
            f"{where}.param: {spec.param!r} is a {param.kind} parameter; only float parameters evolve"
        )
    if (param.low is not None and spec.low < param.low) or (
        param.high is not None and spec.high > param.high
    ):
        raise SpecError(
            f"{where}: bounds [{spec.low}, {spec.high}] leave {spec.param!r}'s range [{param.low}, {param.high}]"
        )
    models: list[str | None]
    if not param.per_model:
        if spec.models:
            raise SpecError(f"{where}.models: {spec.param!r} is one value for the whole merge, not per model")
        models = [None]
    else:
        inputs = [m.model for m in base.models or [] if not method.takes_base(base.base_model) or m.model != base.base_model]
        models = list(spec.models or inputs)
        for model in models:
            if model not in labels:
                raise SpecError(f"{where}.models: {model!r} is not one of the recipe's models")
    lanes = tuple(spec.lanes) if spec.lanes else None
    targets = []
    for model in models:
        prefix = spec.param if model is None else f"{spec.param}[{labels[model]}]"
        genes = [
            Gene(_gene_name(prefix, lane, group, spec.layer_groups), spec.low, spec.high)
            for lane in (lanes or (None,))
            for group in range(spec.layer_groups)
        ]
        targets.append(_Target(spec.param, model, lanes, spec.layer_groups, tuple(genes)))
    return targets


def _gene_name(prefix: str, lane: Lane | None, group: int, groups: int) -> str:
    name = prefix if lane is None else f"{prefix}.{lane}"
    return name if groups == 1 else f"{name}@{group}"
