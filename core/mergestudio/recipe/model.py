"""Recipes: mergekit's YAML, read and written, validated with messages that name the key.

A recipe has either ``models`` (merge whole models) or ``slices`` (merge or stack layer
ranges), a ``merge_method``, and ``parameters`` at the global, slice, and per-model
levels. A parameter value is a scalar, a gradient (a list of numbers interpolated over
the layers), or a list of ``{filter, value}`` conditions matched against tensor names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from mergestudio.errors import RecipeError

Scalar: TypeAlias = StrictBool | StrictInt | StrictFloat | StrictStr
Gradient: TypeAlias = list[StrictInt | StrictFloat]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently change a merge.
    model_config = ConfigDict(extra="forbid")


class Condition(_Strict):
    """``- filter: self_attn`` / ``value: …``: applies to tensors whose name contains
    ``filter`` (no filter, or ``*``, matches every tensor)."""

    filter: str | None = None
    value: Scalar | Gradient


ParameterSetting: TypeAlias = Scalar | Gradient | list[Condition] | Condition
Parameters: TypeAlias = dict[str, ParameterSetting]


class InputModel(_Strict):
    model: str
    parameters: Parameters | None = None


class InputSlice(_Strict):
    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None


class OutputSlice(_Strict):
    sources: list[InputSlice]
    base_model: str | None = None
    residual_weight: float | None = None
    parameters: Parameters | None = None


class ZeroToken(_Strict):
    kind: Literal["zero"]


class ModelToken(_Strict):
    kind: Literal["model_token"]
    model: str
    token: str | None = None


class TokenOverride(_Strict):
    """``tokenizer.tokens.<token>``: where that token's embedding rows come from.
    ``force`` is accepted for mergekit compatibility: overrides always apply."""

    source: str | ZeroToken | ModelToken
    force: bool = False


class TokenizerSettings(_Strict):
    """mergekit's ``tokenizer:`` block (its default source is ``union``)."""

    source: str = "union"
    tokens: dict[str, TokenOverride] | None = None
    pad_to_multiple_of: int | None = None


class PostProcess(_Strict):
    """``post_process: {name: svc, parameters: {alpha: 0.1}}``: a registered plug-in
    applied to every tensor the method merges (ours; mergekit has none)."""

    name: str
    parameters: dict[str, Scalar] | None = None


class OutputSettings(_Strict):
    """``output: {format: adapter, rank: 16}``: write the merge as a PEFT LoRA adapter
    (every input an adapter of one base) instead of a model folder (ours; mergekit has
    none). ``rank``: the rank of re-factorised modules (default: the inputs' ranks summed)."""

    format: Literal["model", "adapter"] = "model"
    rank: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _rank_for_adapters(self) -> OutputSettings:
        if self.rank is not None and self.format != "adapter":
            raise ValueError("rank applies to format: adapter only")
        return self

    @property
    def adapter(self) -> bool:
        return self.format == "adapter"


class Recipe(BaseModel):
    """A merge recipe. Accepts mergekit's keys; ``random_seed`` (seeds stochastic
    methods), ``post_process`` (a plug-in run on the method's output) and ``output``
    (write a LoRA adapter) are ours."""

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    base_model: str | None = None
    parameters: Parameters | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerSettings | None = None
    chat_template: str | None = None
    name: str | None = None
    random_seed: int | None = None
    post_process: PostProcess | None = None
    output: OutputSettings | None = None

    # ---- reading and writing -------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, source: str = "recipe") -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: invalid YAML: {error}") from error
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe must be a YAML mapping with merge_method")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> Recipe:
        if "modules" in data:
            raise RecipeError(f"{source}: key 'modules' (multi-module merges) is not supported yet")
        if data.get("tokenizer") is not None and data.get("tokenizer_source") is not None:
            raise RecipeError(f"{source}: give either 'tokenizer' or 'tokenizer_source', not both")
        try:
            recipe = cls.model_validate(data)
        except ValidationError as error:
            raise RecipeError(describe_validation_error(error, source)) from None
        recipe._check_shape(source)
        return recipe

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise RecipeError(f"{path}: cannot read recipe ({error.strerror})") from error
        return cls.from_yaml(text, str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True)

    # ---- structure -------------------------------------------------------------------

    def _check_shape(self, source: str) -> None:
        if bool(self.models) == bool(self.slices):
            raise RecipeError(f"{source}: give exactly one of 'models' or 'slices'")
        for index, output_slice in enumerate(self.slices or []):
            if not output_slice.sources:
                raise RecipeError(f"{source}: slices[{index}].sources is empty")
            for j, src in enumerate(output_slice.sources):
                start, end = src.layer_range
                if not 0 <= start < end:
                    raise RecipeError(
                        f"{source}: slices[{index}].sources[{j}].layer_range {list(src.layer_range)} "
                        "must be [start, end) with 0 <= start < end"
                    )

    @property
    def writes_adapter(self) -> bool:
        """Whether the merge is written as a LoRA adapter (``output.format: adapter``)."""
        return self.output is not None and self.output.adapter

    def referenced_models(self) -> list[str]:
        """Every model the recipe names, base first, each once, in order of appearance."""
        names: list[str] = []
        if self.base_model:
            names.append(self.base_model)
        for model in self.models or []:
            names.append(model.model)
        for output_slice in self.slices or []:
            if output_slice.base_model:
                names.append(output_slice.base_model)
            names.extend(src.model for src in output_slice.sources)
        return list(dict.fromkeys(names))

    def parameter_blocks(self) -> list[tuple[str, Parameters, str | None]]:
        """Every ``parameters`` mapping with where it sits and the model it belongs to
        (None for global and slice-level blocks)."""
        blocks: list[tuple[str, Parameters, str | None]] = []
        if self.parameters:
            blocks.append(("parameters", self.parameters, None))
        for i, model in enumerate(self.models or []):
            if model.parameters:
                blocks.append((f"models[{i}].parameters", model.parameters, model.model))
        for i, output_slice in enumerate(self.slices or []):
            if output_slice.parameters:
                blocks.append((f"slices[{i}].parameters", output_slice.parameters, None))
            for j, src in enumerate(output_slice.sources):
                if src.parameters:
                    blocks.append((f"slices[{i}].sources[{j}].parameters", src.parameters, src.model))
        return blocks


def describe_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's errors into one line per problem, naming the key path."""
    lines = []
    for item in error.errors():
        location = _key_path(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{location}'")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing required key '{location}'")
        else:
            lines.append(f"{source}: {location}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(dict.fromkeys(lines))


def _key_path(loc: tuple[int | str, ...]) -> str:
    """('models', 0, 'foo') -> 'models[0].foo'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_tag(part):
            path += f".{part}" if path else part
    return path


def _is_union_tag(part: object) -> bool:
    # pydantic puts the tried union member ("list[Condition]", "float") into the path.
    return isinstance(part, str) and ("[" in part or part in {"bool", "int", "float", "str", "Condition"})


class _RecipeDumper(yaml.SafeDumper):
    """Lists of numbers in flow style ([0, 0.5, 1]), as mergekit writes gradients."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    flow = bool(data) and all(isinstance(e, int | float) and not isinstance(e, bool) for e in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_RecipeDumper.add_representer(list, _represent_list)
