"""Kept so older imports work: the name-only helpers now live in
``mergestudio.architectures.names``; families, blocks and lanes in ``mergestudio.architectures``."""

from __future__ import annotations

from mergestudio.architectures.names import (
    MODULE_GROUPS,
    LayerName,
    ModuleGroup,
    config_layer_count,
    is_embedding,
    is_pre_layer,
    layer_index,
    module_group,
    parse_layer_name,
    set_config_layer_count,
)

__all__ = [
    "MODULE_GROUPS",
    "LayerName",
    "ModuleGroup",
    "config_layer_count",
    "is_embedding",
    "is_pre_layer",
    "layer_index",
    "module_group",
    "parse_layer_name",
    "set_config_layer_count",
]
