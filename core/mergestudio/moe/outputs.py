"""The mixture-of-experts architectures a MoE config can produce, as data: which input
families they take, where an input's MLP tensors go, the router's name, and how the
output's config.json is made from the base's.

Names follow the checkpoints on the Hub (``block_sparse_moe.experts.E.w1`` for Mixtral,
``mlp.experts.E.gate_proj`` for Qwen2-MoE), one tensor per expert matrix: what llama.cpp,
vLLM and every transformers version read (transformers 5 fuses them when it loads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# An input's MLP matrix: model.layers.<layer>.mlp.<projection>.weight
MLP_PATTERN = r"^model\.layers\.(?P<layer>\d+)\.mlp\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
# Any other tensor of an input's MLP (biases, scales) has no place in an expert.
MLP_PREFIX = r"^model\.layers\.\d+\.mlp\."
# The projection whose output is added to the residual stream (residual_scale scales it).
RESIDUAL_PROJECTION = "down_proj"


@dataclass(frozen=True)
class MoEArchitecture:
    """One output architecture. Templates take ``layer`` and ``expert``."""

    name: str  # the config's ``architecture`` value
    title: str
    architecture: str  # config.json "architectures"
    model_type: str
    input_model_types: tuple[str, ...]
    experts: Mapping[str, str]  # input projection -> output name template
    router: str
    experts_key: str  # the config key counting routed experts
    # Qwen2-MoE's shared expert (run on every token, scaled by a sigmoid gate).
    shared_expert: Mapping[str, str] | None = None
    shared_gate: str | None = None
    # config.json: fixed values, keys that get the base's intermediate_size, keys removed.
    config_values: Mapping[str, Any] = field(default_factory=dict)
    intermediate_keys: tuple[str, ...] = ()
    dropped_keys: tuple[str, ...] = ()

    @property
    def needs_shared_expert(self) -> bool:
        return self.shared_expert is not None

    def output_config(self, base: Mapping[str, Any], experts: int, per_token: int, dtype: str) -> dict[str, Any]:
        """config.json of the output: the base's, with this architecture's keys."""
        config = {key: value for key, value in base.items() if key not in self.dropped_keys}
        config.update(self.config_values)
        config["architectures"] = [self.architecture]
        config["model_type"] = self.model_type
        config[self.experts_key] = experts
        config["num_experts_per_tok"] = per_token
        for key in self.intermediate_keys:
            config[key] = base.get("intermediate_size")
        config["torch_dtype"] = dtype
        if "dtype" in config:
            config["dtype"] = dtype
        return config


MIXTRAL = MoEArchitecture(
    name="mixtral",
    title="Mixtral (MixtralForCausalLM)",
    architecture="MixtralForCausalLM",
    model_type="mixtral",
    input_model_types=("llama", "mistral"),
    experts=MappingProxyType({
        "gate_proj": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight",
        "down_proj": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight",
        "up_proj": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight",
    }),
    router="model.layers.{layer}.block_sparse_moe.gate.weight",
    experts_key="num_local_experts",
    # Mixtral attends to the whole context; a Llama base has no sliding window.
    config_values=MappingProxyType({"sliding_window": None}),
    dropped_keys=("mlp_bias", "attention_bias", "pretraining_tp", "layer_types", "use_sliding_window",
                  "max_window_layers"),
)

QWEN2_MOE = MoEArchitecture(
    name="qwen",
    title="Qwen2-MoE (Qwen2MoeForCausalLM)",
    architecture="Qwen2MoeForCausalLM",
    model_type="qwen2_moe",
    input_model_types=("qwen2",),
    experts=MappingProxyType({
        proj: f"model.layers.{{layer}}.mlp.experts.{{expert}}.{proj}.weight"
        for proj in ("gate_proj", "up_proj", "down_proj")
    }),
    router="model.layers.{layer}.mlp.gate.weight",
    experts_key="num_experts",
    shared_expert=MappingProxyType({
        proj: f"model.layers.{{layer}}.mlp.shared_expert.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")
    }),
    shared_gate="model.layers.{layer}.mlp.shared_expert_gate.weight",
    # mergekit's conventions: every layer sparse, top-k weights renormalised, no window.
    config_values=MappingProxyType({
        "decoder_sparse_step": 1,
        "norm_topk_prob": True,
        "mlp_only_layers": [],
        "use_sliding_window": False,
        "sliding_window": None,
    }),
    intermediate_keys=("moe_intermediate_size", "shared_expert_intermediate_size"),
    dropped_keys=("layer_types", "max_window_layers"),
)

ARCHITECTURES = (MIXTRAL, QWEN2_MOE)


def architecture_named(name: str) -> MoEArchitecture:
    return next(arch for arch in ARCHITECTURES if arch.name == name)


def architecture_for(model_type: str | None) -> MoEArchitecture | None:
    """The output a base of ``model_type`` gets by default (None: no MoE output takes it)."""
    return next((arch for arch in ARCHITECTURES if model_type in arch.input_model_types), None)
