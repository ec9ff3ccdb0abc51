"""docs/methods.md is generated from the declarations and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mergestudio.methods import all_methods

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_methods", ROOT / "docs" / "generate_methods.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_methods_doc_matches_the_declarations() -> None:
    expected = _generator().render()
    actual = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/methods.md is stale: run .venv/bin/python docs/generate_methods.py"


def test_every_method_is_documented_with_math_and_a_source() -> None:
    for method in all_methods():
        assert method.math, method.name
        if method.name not in ("passthrough",):
            assert method.paper, method.name


def test_mergekit_and_literature_methods_are_registered() -> None:
    names = {m.name for m in all_methods()}
    mergekit = {
        "linear",
        "task_arithmetic",
        "slerp",
        "passthrough",
        "ties",
        "dare_ties",
        "dare_linear",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
        "della_linear",
        "model_stock",
        "nuslerp",
        "multislerp",
        "karcher",
        "sce",
        "ram",
        "ramplus_tl",
        "nearswap",
        "arcee_fusion",
    }
    literature = {"tsv", "iso_c", "iso_cts", "star", "tall_consensus", "pcb", "drm"}
    assert mergekit <= names
    assert literature <= names


def test_every_number_parameter_has_a_round_slider_step() -> None:
    """Sliders write values on ``Param.ui_step``: a declared step, or a power of ten that
    gives 100 to 1000 positions, so a density is written as 0.48, never 0.476."""
    import math

    from mergestudio.methods import all_methods
    from mergestudio.methods.registry import Param

    for method in all_methods():
        for param in method.params:
            if param.kind not in ("float", "int"):
                continue
            low, high = param.slider_range
            positions = (high - low) / param.ui_step
            assert param.kind == "int" or 100 <= positions <= 1000 + 1e-6, (method.name, param.name)
            exponent = math.log10(param.ui_step)
            assert param.step is not None or exponent == round(exponent), (method.name, param.name)
    density = Param("density", "float", "", default=1.0, low=0.0, high=1.0)
    assert density.ui_step == 0.01
    assert density.rounded(0.476) == 0.48 and density.rounded(0.1 + 0.2) == 0.3
    assert Param("k", "float", "", default=1.0, low=0.0, high=1.0, step=0.05).rounded(0.33) == 0.35
    assert Param("n", "int", "", default=1, low=0, high=9).rounded(2.6) == 3
