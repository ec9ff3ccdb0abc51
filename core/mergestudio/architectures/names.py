"""Name-only heuristics from before families existed: a layer index and a module group
read from the common ``<prefix>.<layers|h|blocks|layer>.<N>.<rest>`` form. Families
(``mergestudio.architectures``) replace them wherever a model is at hand; the config
helpers (layer counts) are still used for writing an output's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

ModuleGroup = Literal["attention", "mlp", "embedding", "norm", "other"]
MODULE_GROUPS: tuple[ModuleGroup, ...] = ("attention", "mlp", "embedding", "norm", "other")

_LAYER_NAME = re.compile(
    r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|block|layer))\.(?P<index>\d+)\.(?P<rest>.+)$"
)
_EMBEDDING_WORDS = ("embed", "wte", "wpe", "word_embeddings", "tok_embeddings", "position_embeddings")
_ATTENTION_WORDS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj")
_MLP_WORDS = ("mlp", "feed_forward", "ffn", "gate_proj", "up_proj", "down_proj", "fc1", "fc2")
_NORM_WORDS = ("norm", "ln_", "ln.", "layernorm")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass(frozen=True)
class LayerName:
    """A per-layer tensor name split around its layer index."""

    prefix: str
    index: int
    rest: str

    def with_index(self, index: int) -> str:
        return f"{self.prefix}.{index}.{self.rest}"


def parse_layer_name(name: str) -> LayerName | None:
    match = _LAYER_NAME.match(name)
    if match is None:
        return None
    return LayerName(match["prefix"], int(match["index"]), match["rest"])


def layer_index(name: str) -> int | None:
    parsed = parse_layer_name(name)
    return parsed.index if parsed else None


def module_group(name: str) -> ModuleGroup:
    """Classify a tensor name into a module group (attention, MLP, embedding, norm, other)."""
    lowered = name.lower()
    if any(word in lowered for word in _EMBEDDING_WORDS) or lowered.startswith("lm_head"):
        return "embedding"
    if any(word in lowered for word in _NORM_WORDS):
        return "norm"
    if any(word in lowered for word in _ATTENTION_WORDS):
        return "attention"
    if any(word in lowered for word in _MLP_WORDS):
        return "mlp"
    return "other"


def is_pre_layer(name: str) -> bool:
    """Non-layer tensors that sit before the layers (input embeddings); the rest of the
    non-layer tensors (final norm, LM head) come after them."""
    lowered = name.lower()
    return any(word in lowered for word in _EMBEDDING_WORDS)


def is_embedding(name: str) -> bool:
    lowered = name.lower()
    return is_pre_layer(name) or lowered.startswith("lm_head") or ".lm_head." in lowered


def config_layer_count(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    for key in _LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int):
            return value
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        return config_layer_count(text_config)
    return None


def set_config_layer_count(config: dict[str, Any], count: int) -> None:
    for key in _LAYER_COUNT_KEYS:
        if key in config:
            config[key] = count
            return
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        set_config_layer_count(text_config, count)
