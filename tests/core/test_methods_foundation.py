"""linear, task_arithmetic, slerp, passthrough: hand-computed expectations and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mergestudio.methods import MergeInputs, get_method


def call(method: str, tensors: list[torch.Tensor], base: torch.Tensor | None = None, **params: object):
    spec = get_method(method)
    n = len(tensors)
    full = {p.name: (p.default,) * n if p.per_model else p.default for p in spec.params if not p.required}
    full.update(params)
    return spec.function(MergeInputs("t", torch.stack(tensors), base), **full)


def test_linear_normalises_by_default() -> None:
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    merged = call("linear", [a, b], weight=(1.0, 3.0))
    assert torch.allclose(merged, (1 * a + 3 * b) / 4)
    raw = call("linear", [a, b], weight=(1.0, 3.0), normalize=False)
    assert torch.allclose(raw, a + 3 * b)


def test_task_arithmetic_against_numpy() -> None:
    rng = np.random.default_rng(0)
    base, m1, m2 = (rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3))
    expected = base + 0.7 * (0.5 * (m1 - base) + 0.25 * (m2 - base))
    merged = call(
        "task_arithmetic",
        [torch.from_numpy(m1), torch.from_numpy(m2)],
        torch.from_numpy(base),
        weight=(0.5, 0.25),
        **{"lambda": 0.7},
    )
    np.testing.assert_allclose(merged.numpy(), expected, rtol=1e-5, atol=1e-6)
    normalized = call(
        "task_arithmetic",
        [torch.from_numpy(m1), torch.from_numpy(m2)],
        torch.from_numpy(base),
        weight=(0.5, 0.25),
        normalize=True,
    )
    np.testing.assert_allclose(
        normalized.numpy(), base + (0.5 * (m1 - base) + 0.25 * (m2 - base)) / 0.75, rtol=1e-5, atol=1e-6
    )


def test_task_arithmetic_zero_weight_sum_does_not_divide_by_zero() -> None:
    base = torch.zeros(3)
    merged = call("task_arithmetic", [torch.ones(3), torch.ones(3)], base, weight=(1.0, -1.0), normalize=True)
    assert torch.isfinite(merged).all()
    assert torch.allclose(merged, torch.zeros(3))


def test_slerp_on_orthogonal_unit_vectors_follows_the_arc() -> None:
    start, end = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    for t in (0.0, 0.25, 0.5, 1.0):
        merged = call("slerp", [end], start, t=t)
        angle = t * math.pi / 2
        assert torch.allclose(merged, torch.tensor([math.cos(angle), math.sin(angle)]), atol=1e-6)


def test_slerp_falls_back_to_lerp_when_colinear() -> None:
    start = torch.tensor([1.0, 2.0, 3.0])
    end = start * 2.0  # same direction: |cos| = 1
    merged = call("slerp", [end], start, t=0.25)
    assert torch.allclose(merged, torch.lerp(start, end, 0.25))


def test_slerp_of_zero_tensors_is_finite() -> None:
    merged = call("slerp", [torch.zeros(4)], torch.zeros(4), t=0.5)
    assert torch.isfinite(merged).all() and not merged.any()


def test_passthrough_copies_and_scales() -> None:
    x = torch.arange(4.0)
    assert torch.equal(call("passthrough", [x]), x)
    assert torch.equal(call("passthrough", [x], scale=(0.5,)), x * 0.5)


_arrays = st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(values=_arrays, n=st.integers(1, 4))
def test_identical_inputs_return_the_input(values: list[float], n: int) -> None:
    x = torch.tensor(values)
    weights = tuple(1.0 + i for i in range(n))
    assert torch.allclose(call("linear", [x] * n, weight=weights), x, atol=1e-4)
    assert torch.allclose(call("task_arithmetic", [x] * n, x, weight=weights), x, atol=1e-4)
    assert torch.allclose(call("slerp", [x], x, t=0.3), x, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(a=_arrays, seed=st.integers(0, 1000))
def test_weight_one_on_one_model_returns_it(a: list[float], seed: int) -> None:
    x = torch.tensor(a)
    y = torch.randn(len(a), generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(call("linear", [x, y], weight=(1.0, 0.0)), x, atol=1e-5)
    assert torch.allclose(call("task_arithmetic", [x, y], y, weight=(1.0, 0.0)), x, atol=1e-4)
    assert torch.allclose(call("slerp", [x], y, t=1.0), x, atol=1e-3 * (1 + x.abs().max().item()))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000))
def test_linear_and_task_arithmetic_ignore_input_order(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(5, generator=g) for _ in range(3)]
    base = torch.randn(5, generator=g)
    w = (0.2, 0.5, 0.3)
    for method, extra in (("linear", ()), ("task_arithmetic", (base,))):
        forward = call(method, xs, *extra, weight=w)
        backward = call(method, xs[::-1], *extra, weight=w[::-1])
        assert torch.allclose(forward, backward, atol=1e-5)


def test_unknown_method_lists_valid_ones() -> None:
    from mergestudio.errors import RecipeError

    with pytest.raises(RecipeError, match="valid methods: .*slerp"):
        get_method("slurp")
