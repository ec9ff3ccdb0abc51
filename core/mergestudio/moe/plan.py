"""A MoE config + the models' headers → a ``MoEPlan``: every output tensor, where it comes
from, and every check, before any tensor is read. The dry run is ``plan_moe``.

The base gives everything outside the MLPs (embeddings, attention, norms, head); each
expert gives its MLP matrices, one copy per layer; the router rows are computed (see
``gates.py``) once the plan passed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergestudio.errors import PlanError, RecipeError
from mergestudio.io.dtypes import FLOAT_CODES, ITEM_SIZE, dtype_code, torch_dtype_name
from mergestudio.io.sources import ModelSource, open_model
from mergestudio.moe.config import PROMPT_MODES, Expert, MoEConfig, load_moe_config
from mergestudio.moe.outputs import (
    MLP_PATTERN,
    MLP_PREFIX,
    MoEArchitecture,
    architecture_for,
    architecture_named,
)

# Files from which transformers can build a tokenizer for the prompts.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
EMBEDDING = "model.embed_tokens.weight"


@dataclass(frozen=True)
class MoETensor:
    """One output tensor. ``model`` indexes ``MoEPlan.sources`` (0: the base) and
    ``source_name`` names the tensor read there; a router row block has neither and
    ``router`` says which ("experts" or "shared") for ``layer``."""

    name: str
    shape: tuple[int, ...]
    out_dtype: str
    model: int | None = None
    source_name: str | None = None
    layer: int | None = None
    router: str | None = None
    noise_scale: float | None = None
    scale: float | None = None  # residual_scale, on down projections only

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEM_SIZE[self.out_dtype]


@dataclass
class MoEPlan:
    config: MoEConfig
    architecture: MoEArchitecture
    sources: list[ModelSource]  # the base first, then each distinct expert model once
    expert_models: list[int]  # per routed expert: its index in ``sources``
    shared_model: int | None
    layers: int
    hidden: int
    out_dtype: str
    output_config: dict[str, Any]
    tensors: list[MoETensor]
    warnings: list[str] = field(default_factory=list)

    @property
    def base(self) -> ModelSource:
        return self.sources[0]

    @property
    def bytes_to_read(self) -> int:
        return sum(
            self.sources[t.model].tensors[t.source_name].nbytes
            for t in self.tensors
            if t.model is not None and t.source_name is not None
        )

    @property
    def bytes_to_write(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def report(self) -> dict[str, Any]:
        """What the dry run prints: the output, each expert and the sizes."""
        config = self.config
        return {
            "architecture": self.architecture.architecture,
            "gate_mode": config.gate_mode,
            "experts_per_token": config.experts_per_token,
            "layers": self.layers,
            "hidden_size": self.hidden,
            "dtype": torch_dtype_name(self.out_dtype),
            "base": self.base.reference,
            "experts": [
                {
                    "model": self.sources[index].reference,
                    "positive_prompts": len(expert.positive_prompts or []),
                    "negative_prompts": len(expert.negative_prompts or []),
                }
                for expert, index in zip(config.experts, self.expert_models, strict=True)
            ],
            "shared_expert": None if self.shared_model is None else self.sources[self.shared_model].reference,
            "tensors": len(self.tensors),
            "parameters": self.parameter_count,
            "bytes_to_read": self.bytes_to_read,
            "bytes_to_write": self.bytes_to_write,
            "warnings": list(self.warnings),
        }

    def close(self) -> None:
        for source in self.sources:
            source.close()


def plan_moe(
    config: MoEConfig | str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> MoEPlan:
    """Every check a MoE build makes before reading a tensor or creating a folder: the
    config, the output path (skipped when ``out_dir`` is None), the models' families and
    headers, prompts and tokenizer for the gate mode. The caller closes the plan."""
    moe = load_moe_config(config)
    _check_config(moe)
    if out_dir is not None:
        from mergestudio.engine.checks import check_output_path

        check_output_path(Path(out_dir), overwrite)
    sources: dict[str, ModelSource] = {}
    try:
        for reference in [moe.base_model, *(expert.source_model for _, expert in moe.all_experts())]:
            if reference not in sources:
                sources[reference] = open_model(reference, allow_pickle=allow_pickle)
        return _plan(moe, list(sources.values()))
    except BaseException:
        for source in sources.values():
            source.close()
        raise


def _check_config(moe: MoEConfig) -> None:
    """Checks that need only the YAML."""
    if moe.experts_per_token < 1:
        raise RecipeError(f"experts_per_token: must be at least 1 (got {moe.experts_per_token})")
    if moe.experts_per_token > len(moe.experts):
        raise RecipeError(
            f"experts_per_token: {moe.experts_per_token} is more than the {len(moe.experts)} expert(s) listed"
        )
    for where, expert in moe.all_experts():
        if expert.noise_scale is not None and expert.noise_scale < 0:
            raise RecipeError(f"{where}.noise_scale: must be 0 or more (got {expert.noise_scale})")
    if moe.dtype is not None:
        try:
            code = dtype_code(moe.dtype)
        except ValueError as error:
            raise RecipeError(f"dtype: {error}") from None
        if code not in FLOAT_CODES:
            raise RecipeError(f"dtype: {moe.dtype!r} is not a floating-point type")
    if moe.gate_mode in PROMPT_MODES:
        _check_prompts(moe)


def _check_prompts(moe: MoEConfig) -> None:
    for where, expert in moe.all_experts():
        if not expert.positive_prompts:
            raise RecipeError(
                f"{where}.positive_prompts: gate_mode {moe.gate_mode!r} builds each router row from "
                f"its expert's prompts, and {expert.source_model} has none (give one or more, or use "
                "gate_mode: random)"
            )
        if any(not prompt.strip() for prompt in [*expert.positive_prompts, *(expert.negative_prompts or [])]):
            raise RecipeError(f"{where}: a prompt is empty")
    if len(moe.experts) > 1 and len({_prompt_key(e) for e in moe.experts}) == 1:
        raise RecipeError(
            "experts: every expert has the same positive and negative prompts, so the router could "
            "not tell them apart; give each expert prompts typical of what it should receive"
        )


def _prompt_key(expert: Expert) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(expert.positive_prompts or ()), tuple(expert.negative_prompts or ())


def _plan(moe: MoEConfig, sources: list[ModelSource]) -> MoEPlan:
    by_reference = {source.reference: index for index, source in enumerate(sources)}
    base = sources[0]
    architecture = _architecture(moe, base)
    layers, hidden = _base_shape(base)
    _check_models(moe, sources, by_reference, layers)
    if architecture.needs_shared_expert and len(moe.shared_experts or []) != 1:
        raise RecipeError(
            f"shared_experts: {architecture.title} has one shared expert on every layer; list exactly one "
            f"(got {len(moe.shared_experts or [])}), as mergekit-moe's qwen output requires"
        )
    if not architecture.needs_shared_expert and moe.shared_experts:
        raise RecipeError(f"shared_experts: {architecture.title} has no shared expert; remove the key")
    _check_gate_inputs(moe, base)
    out_dtype = _out_dtype(moe, base)
    expert_models = [by_reference[expert.source_model] for expert in moe.experts]
    shared_model = by_reference[moe.shared_experts[0].source_model] if moe.shared_experts else None
    plan = MoEPlan(
        config=moe,
        architecture=architecture,
        sources=sources,
        expert_models=expert_models,
        shared_model=shared_model,
        layers=layers,
        hidden=hidden,
        out_dtype=out_dtype,
        output_config=architecture.output_config(
            base.config or {}, len(moe.experts), moe.experts_per_token, torch_dtype_name(out_dtype)
        ),
        tensors=[],
    )
    plan.tensors = _output_tensors(plan)
    plan.warnings.extend(_warnings(plan))
    return plan


def _architecture(moe: MoEConfig, base: ModelSource) -> MoEArchitecture:
    model_type = (base.config or {}).get("model_type")
    if base.config is None:
        raise PlanError(f"base_model: {base.reference} has no config.json; the output's config is made from it")
    if moe.architecture is not None:
        chosen = architecture_named(moe.architecture)
        if model_type not in chosen.input_model_types:
            raise PlanError(
                f"architecture: {chosen.title} is built from {' or '.join(chosen.input_model_types)} models; "
                f"the base {base.reference} is {model_type!r}"
            )
        return chosen
    found = architecture_for(model_type)
    if found is None:
        raise PlanError(
            f"base_model: {base.reference} is a {model_type!r} model; MoE outputs are built from "
            "llama or mistral (→ Mixtral) and qwen2 (→ Qwen2-MoE) models"
        )
    return found


def _base_shape(base: ModelSource) -> tuple[int, int]:
    config = base.config or {}
    layers, hidden = config.get("num_hidden_layers"), config.get("hidden_size")
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise PlanError(f"base_model: {base.reference}/config.json lacks num_hidden_layers or hidden_size")
    return layers, hidden


def _check_models(moe: MoEConfig, sources: list[ModelSource], by_reference: dict[str, int], layers: int) -> None:
    """Every expert is of the base's family, and has the base's MLP matrices."""
    base = sources[0]
    base_mlp = _mlp_tensors(base, "base_model", layers)
    model_type = (base.config or {}).get("model_type")
    for where, expert in moe.all_experts():
        source = sources[by_reference[expert.source_model]]
        expert_type = (source.config or {}).get("model_type")
        if source.config is not None and expert_type != model_type:
            raise PlanError(
                f"{where}.source_model: {source.reference} is a {expert_type!r} model; the base "
                f"{base.reference} is {model_type!r} (every expert must be of the base's family)"
            )
        for name, info in base_mlp.items():
            found = source.tensors.get(name)
            if found is None:
                raise PlanError(f"{where}.source_model: {source.reference} has no tensor {name}")
            if found.shape != info.shape:
                raise PlanError(
                    f"{where}.source_model: {source.reference}: {name} is {list(found.shape)}, the base's is "
                    f"{list(info.shape)} (experts must have the base's shapes)"
                )


def _mlp_tensors(source: ModelSource, where: str, layers: int) -> dict[str, Any]:
    """The MLP matrices of ``source``; an MLP tensor that is not one of them (a bias) is
    refused, since no expert has a place for it."""
    found = {name: info for name, info in source.tensors.items() if re.match(MLP_PATTERN, name)}
    for name in source.tensors:
        if re.match(MLP_PREFIX, name) and name not in found:
            raise PlanError(f"{where}: {source.reference}: {name} has no place in an expert (only gate, up "
                            "and down projection weights do)")
    for layer in range(layers):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            name = f"model.layers.{layer}.mlp.{proj}.weight"
            if name not in found:
                raise PlanError(f"{where}: {source.reference} has no tensor {name}")
    return found


def _check_gate_inputs(moe: MoEConfig, base: ModelSource) -> None:
    if moe.gate_mode not in PROMPT_MODES:
        return
    if not any((base.root / marker).is_file() for marker in TOKENIZER_MARKERS):
        raise PlanError(
            f"base_model: {base.reference} has no tokenizer files; gate_mode {moe.gate_mode!r} tokenizes "
            "the prompts with the base's tokenizer"
        )
    if moe.gate_mode == "cheap_embed" and EMBEDDING not in base.tensors:
        raise PlanError(f"base_model: {base.reference} has no tensor {EMBEDDING} (gate_mode 'cheap_embed' reads it)")


def _out_dtype(moe: MoEConfig, base: ModelSource) -> str:
    if moe.dtype is not None:
        return dtype_code(moe.dtype)
    config = base.config or {}
    named = config.get("torch_dtype") or config.get("dtype")
    if isinstance(named, str):
        try:
            return dtype_code(named)
        except ValueError:
            pass
    counts = base.dtypes
    return max(counts, key=lambda code: counts[code]) if counts else "F32"


def _output_tensors(plan: MoEPlan) -> list[MoETensor]:
    """The base's tensors in file order; at each layer's first MLP matrix the router rows
    come first, then each MLP matrix becomes one tensor per expert (and the shared one)."""
    arch, moe, out = plan.architecture, plan.config, plan.out_dtype
    tensors: list[MoETensor] = []
    routed_layers: set[int] = set()
    for name, info in plan.base.tensors.items():
        match = re.match(MLP_PATTERN, name)
        if match is None:
            tensors.append(MoETensor(name, info.shape, out, model=0, source_name=name))
            continue
        layer, proj = int(match["layer"]), match["proj"]
        if layer not in routed_layers:
            routed_layers.add(layer)
            tensors.append(MoETensor(arch.router.format(layer=layer), (len(moe.experts), plan.hidden), out,
                                     layer=layer, router="experts"))
            if arch.shared_gate is not None:
                tensors.append(MoETensor(arch.shared_gate.format(layer=layer), (1, plan.hidden), out,
                                         layer=layer, router="shared"))
        for index, (expert, model) in enumerate(zip(moe.experts, plan.expert_models, strict=True)):
            tensors.append(_expert_tensor(arch.experts[proj].format(layer=layer, expert=index), info.shape,
                                          out, model, name, expert, proj))
        if arch.shared_expert is not None and plan.shared_model is not None and moe.shared_experts:
            tensors.append(_expert_tensor(arch.shared_expert[proj].format(layer=layer), info.shape, out,
                                          plan.shared_model, name, moe.shared_experts[0], proj))
    return tensors


def _expert_tensor(name: str, shape: tuple[int, ...], out: str, model: int, source_name: str,
                   expert: Expert, proj: str) -> MoETensor:
    from mergestudio.moe.outputs import RESIDUAL_PROJECTION

    scale = expert.residual_scale if proj == RESIDUAL_PROJECTION else None
    return MoETensor(name, shape, out, model=model, source_name=source_name,
                     noise_scale=expert.noise_scale or None, scale=scale)


def _warnings(plan: MoEPlan) -> list[str]:
    warnings = []
    count = len(plan.config.experts)
    if count & (count - 1):
        warnings.append(f"{count} experts is not a power of two: llama.cpp cannot load the output")
    if len(set(plan.expert_models)) == 1 and count > 1:
        warnings.append("every expert is the same model: the output computes what that model does, "
                        "at more cost (useful only as a start for training)")
    return warnings
