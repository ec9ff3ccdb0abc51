"""model_stock, nuslerp, multislerp, karcher, nearswap, arcee_fusion, ram, ramplus_tl, sce:
hand-computed cases from the definitions and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mergestudio.methods import MergeInputs, get_method


def call(method: str, tensors, base=None, **params):
    spec = get_method(method)
    n = len(tensors)
    full = {p.name: (p.default,) * n if p.per_model else p.default for p in spec.params if not p.required}
    if spec.param("weight") is not None:
        full["weight"] = (1.0,) * n
    for key, value in params.items():
        param = spec.param(key)
        assert param is not None, key
        full[key] = tuple(value) if param.per_model else value
    stacked = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in tensors])
    return spec.function(MergeInputs("w", stacked, base), **full)


def test_model_stock_two_orthogonal_task_vectors() -> None:
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # cos = 0 -> t = 0 -> the base
    assert torch.allclose(call("model_stock", [a, b], base), base)
    # identical task vectors: cos = 1 -> t = 1 -> their average
    assert torch.allclose(call("model_stock", [a, a], base), a)


def test_model_stock_formula() -> None:
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    cos = 1 / math.sqrt(2)
    t = 2 * cos / (1 + cos)
    assert torch.allclose(call("model_stock", [a, b], base), t * (a + b) / 2, atol=1e-6)


def test_model_stock_filter_wise_per_row() -> None:
    base = torch.zeros(2, 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    merged = call("model_stock", [a, b], base, filter_wise=True)
    assert torch.allclose(merged[0], torch.zeros(2))  # orthogonal row: t = 0
    assert torch.allclose(merged[1], torch.tensor([1.0, 0.0]))  # identical row: t = 1


def test_nuslerp_matches_slerp_on_unit_vectors() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    merged = call("nuslerp", [a, b], weight=(0.75, 0.25))
    angle = 0.25 * math.pi / 2
    assert torch.allclose(merged, torch.tensor([math.cos(angle), math.sin(angle)]), atol=1e-6)


def test_nuslerp_with_base_works_on_task_vectors() -> None:
    base = torch.tensor([5.0, 5.0])
    merged = call("nuslerp", [base + torch.tensor([2.0, 0.0]), base + torch.tensor([0.0, 2.0])], base)
    assert torch.allclose(merged, base + math.sqrt(2) * torch.tensor([1.0, 1.0]), atol=1e-6)


def test_nuslerp_rows_and_colinear_fallback() -> None:
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [4.0, 0.0]])
    merged = call("nuslerp", [a, b], nuslerp_flatten=False)
    h = math.sqrt(0.5)
    assert torch.allclose(merged[0], torch.tensor([h, h]), atol=1e-6)
    assert torch.allclose(merged[1], torch.tensor([3.0, 0.0]))  # colinear row: lerp


def test_multislerp_two_orthogonal_unit_vectors_is_the_midpoint_arc() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    merged = call("multislerp", [a, b])
    h = math.sqrt(0.5)
    assert torch.allclose(merged, torch.tensor([h, h]), atol=1e-5)


def test_multislerp_antipodal_pair_falls_back_to_linear() -> None:
    a = torch.tensor([1.0, 2.0])
    merged = call("multislerp", [a, -a])
    assert torch.allclose(merged, torch.zeros(2))


def test_karcher_of_orthogonal_unit_vectors() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    merged = call("karcher", [a, b])
    h = math.sqrt(0.5)
    assert torch.allclose(merged, torch.tensor([h, h]), atol=1e-5)
    # zero inputs give zero, not NaN
    assert torch.equal(call("karcher", [torch.zeros(3), torch.zeros(3)]), torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["multislerp", "karcher", "nuslerp"]), st.integers(1, 3))
def test_spherical_methods_of_identical_models_return_the_model(method: str, n: int) -> None:
    if method == "nuslerp":
        n = min(n, 2)
    model = torch.randn(4, 3)
    merged = call(method, [model] * n)
    assert torch.allclose(merged, model, atol=1e-4)


@pytest.mark.parametrize("method", ["multislerp", "karcher", "model_stock"])
def test_symmetric_methods_ignore_input_order(method: str) -> None:
    base = torch.randn(5, 4) if method == "model_stock" else None
    tensors = [torch.randn(5, 4) for _ in range(3)]
    assert torch.allclose(call(method, tensors, base), call(method, tensors[::-1], base), atol=1e-5)


def test_nearswap_hand_computed() -> None:
    base = torch.tensor([0.0, 0.0, 1.0, 2.0])
    other = torch.tensor([0.1, 1.0, 1.0, 2.5])
    merged = call("nearswap", [other], base, t=0.2)
    # weights: 0.2/0.1 -> 1, 0.2/1 = 0.2, equal -> 1, 0.2/0.5 = 0.4
    assert torch.allclose(merged, torch.tensor([0.1, 0.2, 1.0, 2.2]))
    assert torch.isfinite(call("nearswap", [base], base, t=0.0)).all()


def test_arcee_fusion_keeps_only_outlying_changes() -> None:
    base = torch.zeros(1, 100)
    other = base.clone()
    other[0, :90] = torch.linspace(0.001, 0.01, 90)
    other[0, 95] = 5.0  # one large change
    merged = call("arcee_fusion", [other], base)
    assert merged[0, 95] == 5.0
    assert not merged[0, :90].any()
    assert torch.equal(call("arcee_fusion", [base.clone()], base), base)


def test_ram_averages_overlaps_and_keeps_unique_changes() -> None:
    base = torch.zeros(4)
    a = torch.tensor([1.0, 0.0, 2.0, 0.0])
    b = torch.tensor([0.0, 3.0, 4.0, 0.0])
    assert torch.allclose(call("ram", [a, b], base), torch.tensor([1.0, 3.0, 3.0, 0.0]))


def test_ramplus_boosts_unique_changes_by_shared_ratio() -> None:
    base = torch.zeros(4)
    a = torch.tensor([1.0, 0.0, 2.0, 0.0])  # unique 1, shared 1 -> rho 1 -> lambda 1 + 0.1*0.2
    b = torch.tensor([0.0, 3.0, 4.0, 0.0])
    merged = call("ramplus_tl", [a, b], base)
    assert torch.allclose(merged, torch.tensor([1.02, 3.06, 3.0, 0.0]))


def test_sce_weights_by_energy_and_erases_minority_signs() -> None:
    base = torch.zeros(2)
    a = torch.tensor([1.0, 1.0])  # mean square 1
    b = torch.tensor([3.0, -3.0])  # mean square 9
    merged = call("sce", [a, b], base)
    # weights 0.1, 0.9; entry 0: both positive -> (0.1*1 + 0.9*3)/1 = 2.8
    # entry 1: sum -2 < 0 -> only b -> (0.9*-3)/0.9 = -3
    assert torch.allclose(merged, torch.tensor([2.8, -3.0]))


def test_sce_select_topk_keeps_high_variance_entries() -> None:
    base = torch.zeros(4)
    a = torch.tensor([1.0, 1.0, 0.0, 5.0])
    b = torch.tensor([1.0, -1.0, 0.0, -5.0])
    merged = call("sce", [a, b], base, select_topk=0.5)
    # nonzero variance at 1 and 3; keep the top one (entry 3), zero the rest
    assert merged[0] == 0 and merged[1] == 0 and merged[3] != 0


@pytest.mark.parametrize("method", ["ram", "ramplus_tl", "sce", "nearswap", "arcee_fusion", "model_stock"])
def test_identical_models_return_the_base(method: str) -> None:
    base = torch.randn(6, 5)
    n = 1 if method in ("nearswap", "arcee_fusion") else 3
    params = {"t": 0.1} if method == "nearswap" else {}
    merged = call(method, [base.clone()] * n, base, **params)
    assert torch.isfinite(merged).all()
    assert torch.allclose(merged, base, atol=1e-6)
