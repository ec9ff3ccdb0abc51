"""Merge methods, one module per family, found by name through the registry."""

from __future__ import annotations

import importlib

from mergestudio.methods.registry import (
    MergeInputs,
    MethodSpec,
    Param,
    all_methods,
    get_method,
    register,
)

# Each module registers its methods when imported. Add a family here to make it known.
FAMILY_MODULES: tuple[str, ...] = (
    "mergestudio.methods.basic",
    "mergestudio.methods.spherical",
    "mergestudio.methods.consensus",
    "mergestudio.methods.geometric",
    "mergestudio.methods.selection",
    "mergestudio.methods.spectral",
    "mergestudio.methods.masks",
    "mergestudio.methods.knots",
    "mergestudio.methods.interference",
    "mergestudio.methods.calibration",
)

_loaded = False


def load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in FAMILY_MODULES:
        importlib.import_module(module)


__all__ = ["MergeInputs", "MethodSpec", "Param", "all_methods", "get_method", "register"]
