"""Model families as data: which tensors form which block (the units gradients run over),
which lane (module group) each tensor is in, what is tied and what is never merged.

``detect_family`` picks a family from ``config.json`` (``architectures``, ``model_type``,
diffusers' ``_class_name``) or, for files without one, from tensor names; ``layout_of``
applies it to a model. Unknown architectures never fail: names with layer indices get
guessed layers, anything else is one block-less lane, and both come with a warning.
Adding a family is a new table in ``families/`` plus its test (docs/architectures.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from mergestudio.architectures.families.decoders import DECODERS
from mergestudio.architectures.families.encoders import ENCODERS
from mergestudio.architectures.families.generic import GUESSED, UNKNOWN
from mergestudio.architectures.families.unets import UNETS
from mergestudio.architectures.layout import Block, Lane, LayerSlot, ModelLayout, TensorRole, build_layout
from mergestudio.architectures.schema import BlockRule, Family, LaneRule

FAMILIES: tuple[Family, ...] = (*DECODERS, *ENCODERS, *UNETS)

__all__ = [
    "FAMILIES",
    "GUESSED",
    "UNKNOWN",
    "Block",
    "BlockRule",
    "Family",
    "Lane",
    "LaneRule",
    "LayerSlot",
    "ModelLayout",
    "TensorRole",
    "config_depths",
    "detect_family",
    "family_named",
    "layout_of",
]


def family_named(name: str) -> Family:
    for family in (*FAMILIES, GUESSED, UNKNOWN):
        if family.name == name:
            return family
    raise KeyError(name)


def detect_family(config: Mapping[str, Any] | None, names: Iterable[str]) -> tuple[Family, str | None]:
    """The family of a model and, when it was not recognised, a warning saying so."""
    names = list(names)
    claimed = _config_claim(config or {})
    for family in _config_candidates(config or {}):
        if family.requires is None or _any_match(family.requires, names):
            return family, None
    for family in FAMILIES:
        if family.marker and all(_any_match(marker, names) for marker in family.marker):
            return family, None
    what = f"architecture {claimed}" if claimed else "this architecture"
    if any(_guessed_layer(name) for name in names):
        return GUESSED, f"{what} is not in the family registry: layers guessed from tensor names"
    return UNKNOWN, (
        f"{what} is not in the family registry and its tensor names show no layers: merged as "
        "one block with one lane (a gradient gives every tensor its first value)"
    )


def layout_of(config: Mapping[str, Any] | None, names: Iterable[str]) -> ModelLayout:
    names = list(names)
    family, warning = detect_family(config, names)
    return build_layout(family, names, (warning,) if warning else ())


def config_depths(family: Family, config: Mapping[str, Any] | None) -> dict[str, int]:
    """Each stack's depth as the config states it (stacks whose key is absent are left out)."""
    depths = {}
    for stack, path in family.depth_keys.items():
        value: Any = config or {}
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            depths[stack] = value
    return depths


def _config_claim(config: Mapping[str, Any]) -> str | None:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        return str(architectures[0])
    for key in ("model_type", "_class_name"):
        if config.get(key):
            return str(config[key])
    return None


def _config_candidates(config: Mapping[str, Any]) -> list[Family]:
    architectures = config.get("architectures")
    first = str(architectures[0]) if isinstance(architectures, list) and architectures else None
    model_type, class_name = config.get("model_type"), config.get("_class_name")
    return (
        [f for f in FAMILIES if first and first in f.architectures]
        + [f for f in FAMILIES if model_type and model_type in f.model_types]
        + [f for f in FAMILIES if class_name and class_name in f.class_names]
    )


@lru_cache(maxsize=256)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def _any_match(regex: str, names: list[str]) -> bool:
    pattern = _pattern(regex)
    return any(pattern.search(name) for name in names)


def _guessed_layer(name: str) -> bool:
    return _pattern(GUESSED.blocks[0].pattern).search(name) is not None
