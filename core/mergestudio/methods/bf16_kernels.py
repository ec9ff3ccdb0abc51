"""Compiled kernels that read and write bfloat16 as stored, computing in float32 in one
pass, with exactly the bits of the torch path they replace.

The torch path of a bf16 merge on the CPU converts every input to float32 (one pass
writing twice the bytes it reads), runs each operation of the method as a pass over
the float32 rows, sums the result for NaN/Inf, and converts back: some eight passes
over memory for a linear merge, which is most of its CPU time. These kernels do it
in one pass over blocks that stay in the core's cache:

- widening is exact: the bf16 bits are the high half of the float32 (``bits << 16``);
- each operation is the one torch runs, in float32, in the same order (``add_`` with
  ``alpha`` is a fused multiply-add there, so it is one here too);
- narrowing rounds to nearest even as torch does (``(b + 0x7FFF + ((b >> 16) & 1)) >>
  16``), every NaN becomes 0xFFFF as torch's vectorised conversion makes it.

Arrays are 1-D and C-contiguous: bf16 data as ``uint16`` (its bit pattern), float32 as
``float32``. Each kernel returns how many results were NaN/Inf (in float32, before
rounding), so the caller can apply its NaN/Inf policy, or redo a block through torch.

Import this module only on the CPU path: numba takes ~0.4 s to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from mergestudio.methods.kernels import Scalar, _compiled, _inlined

if TYPE_CHECKING:
    import torch

_BLOCK = 4096  # entries per block: a float32 accumulator of 16 KB stays in L1


def _fma32_typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c in float32 with one rounding (LLVM's fma), as torch's ``add_(alpha=)``."""
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        single = ir.FloatType()
        function = builder.module.declare_intrinsic(
            "llvm.fma", [single], ir.FunctionType(single, [single, single, single])
        )
        return builder.call(function, args)

    return signature, codegen


# The intrinsics are typed Any: mypy cannot follow numba's decorator.
_fma32: Any = intrinsic(_fma32_typer)


def _float_of_bits_typer(typingctx: Any, bits: Any) -> Any:
    """The float32 whose bit pattern is the uint32 ``bits``."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


_float_of_bits: Any = intrinsic(_float_of_bits_typer)


def _bits_of_float_typer(typingctx: Any, value: Any) -> Any:
    """The bit pattern of the float32 ``value``, as uint32."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


_bits_of_float: Any = intrinsic(_bits_of_float_typer)


@_inlined
def widen(bits: Scalar) -> Scalar:
    """bf16 bits (uint16) → the float32 of the same value, exactly."""
    return _float_of_bits(np.uint32(bits) << np.uint32(16))


@_inlined
def narrow(value: Scalar) -> Scalar:
    """float32 → bf16 bits (uint16), rounded to nearest even; NaN → 0xFFFF (torch's)."""
    bits = _bits_of_float(np.float32(value))
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    is_nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.uint16(np.uint32(0xFFFF) if is_nan else rounded)


@_inlined
def _nonfinite(value: Scalar) -> Scalar:
    return (_bits_of_float(np.float32(value)) & np.uint32(0x7F800000)) == np.uint32(0x7F800000)


@_compiled
def widen_into(source: np.ndarray, out: np.ndarray, scan: bool) -> int:
    """out (L,) float32 ← source (L,) bf16 bits; with ``scan``, how many are NaN/Inf."""
    bad = 0
    for i in range(source.shape[0]):
        value = widen(source[i])
        out[i] = value
        if scan:
            bad += _nonfinite(value)
    return bad


@_compiled
def narrow_into(values: np.ndarray, out: np.ndarray) -> int:
    """out (L,) bf16 bits ← values (L,) float32, rounded as torch rounds; how many of
    ``values`` are NaN/Inf."""
    bad = 0
    for i in range(values.shape[0]):
        value = values[i]
        bad += _nonfinite(value)
        out[i] = narrow(value)
    return bad


# The block helpers index from 0 over slices: an index like ``start + i`` could be
# negative for all numba knows, and its wrap-around check stops the loop vectorising (5x).


@_inlined
def _scale_block(row: np.ndarray, weight: Scalar, acc: np.ndarray) -> None:
    for i in range(row.shape[0]):
        acc[i] = widen(row[i]) * weight


@_inlined
def _fma_block(row: np.ndarray, weight: Scalar, acc: np.ndarray) -> None:
    for i in range(row.shape[0]):
        acc[i] = _fma32(widen(row[i]), weight, acc[i])


@_inlined
def _divide_block(divisor: Scalar, acc: np.ndarray) -> None:
    for i in range(acc.shape[0]):
        acc[i] = acc[i] / divisor


@_inlined
def _scale_add_block(row: np.ndarray, scale: Scalar, acc: np.ndarray) -> None:
    for i in range(row.shape[0]):
        scaled = acc[i] * scale
        acc[i] = scaled + widen(row[i])


@_compiled
def affine_bf16(
    inputs: Any,
    weights: np.ndarray,
    base: np.ndarray,
    base_weight: Scalar,
    divisor: Scalar,
    scale: Scalar,
    out: np.ndarray,
) -> int:
    """The weighted sums of linear and task arithmetic, on bf16 rows, in torch's order.

    inputs: a tuple of n (L,) bf16-bit arrays; weights (n,) float32; base (L,) bf16 bits
    or an empty array (no base); out (L,) bf16 bits. Per entry, in float32:

        acc = x₀·w₀;  acc = fma(xᵢ, wᵢ, acc) for i ≥ 1      (weighted_sum)
        with a base:  acc = fma(base, base_weight, acc)     (sub_(base, alpha=Σw))
        acc = acc / divisor                                  (skipped when divisor is 0)
        with a base:  acc = acc·scale + base                 (λ, then add_(base))

    Block by block, each step a loop of its own (so each vectorises), over an
    accumulator that stays in L1. Returns how many results were NaN/Inf before rounding."""
    length = out.shape[0]
    has_base = base.shape[0] == length
    acc = np.empty(_BLOCK, np.float32)
    bad = 0
    for start in range(0, length, _BLOCK):
        stop = min(length, start + _BLOCK)
        block = acc[: stop - start]
        _scale_block(inputs[0][start:stop], weights[0], block)
        for model in range(1, len(inputs)):
            _fma_block(inputs[model][start:stop], weights[model], block)
        if has_base:
            _fma_block(base[start:stop], base_weight, block)
        if divisor != 0:
            _divide_block(divisor, block)
        if has_base:
            _scale_add_block(base[start:stop], scale, block)
        bad += narrow_into(block, out[start:stop])
    return bad


def weighted_sum_bf16(
    rows: Sequence[np.ndarray],
    weights: Sequence[float],
    base: np.ndarray | None,
    out: np.ndarray,
    *,
    divisor: float = 0.0,
    scale: float = 1.0,
) -> int:
    """``affine_bf16`` for Python callers: rows and base as ``bits`` gives them, float
    parameters rounded to float32 as torch rounds a Python scalar for a float32 tensor;
    with a base, the base weight is −Σ weights (task arithmetic)."""
    base_weight = -float(sum(weights)) if base is not None else 0.0
    return int(
        affine_bf16(
            tuple(_read_only(row) for row in rows),
            np.asarray(weights, np.float32),
            _read_only(base) if base is not None else _NO_BASE,
            np.float32(base_weight),
            np.float32(divisor),
            np.float32(scale),
            out,
        )
    )


def bits(tensor: torch.Tensor) -> np.ndarray:
    """A bf16 tensor's data as a flat uint16 numpy array (a view, no copy)."""
    import torch

    return tensor.reshape(-1).view(torch.int16).numpy().view(np.uint16)


def floats(tensor: torch.Tensor) -> np.ndarray:
    """A float32 tensor's data as a flat numpy array (a view, no copy)."""
    return tensor.reshape(-1).numpy()


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: numba types read-only and writable arrays apart, and a tuple
    of inputs must hold one type (memory-mapped inputs are read-only)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


_NO_BASE = _read_only(np.empty(0, np.uint16))


__all__ = ["affine_bf16", "bits", "floats", "narrow_into", "weighted_sum_bf16", "widen_into"]
