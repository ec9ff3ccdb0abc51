"""Torch versions of the compiled CPU kernels' random keep decisions (``kernels``), for
the devices numba does not reach (CUDA, MPS) and for compute dtypes other than float32.

DARE and DELLA draw their keep decisions by hashing (the tensor's seed, model, flat
position) with the murmur3 finaliser. The compiled kernels do it on the CPU; these
functions compute the very same words with torch's integer arithmetic on any device, so
a DARE or DELLA merge keeps the same entries wherever it runs (tests compare the two on
the CPU). Thresholds and the combining pass need no port: their torch path in
``sparse`` and ``consensus`` is exact (thresholds) or elementwise.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_SHIFT = 17  # a word keeps the top 15 bits of its 32-bit hash
_SCALE = 1.0 / 32768.0


def _mix32_int(h: int) -> int:
    """The murmur3 finaliser on a Python int in [0, 2**32)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def stream_key(seed: int, model: int) -> int:
    """``kernels.stream_key`` in Python: the 32-bit key of model ``model``'s words."""
    high = _mix32_int((((seed >> 32) & _MASK32) + model) & _MASK32)
    return _mix32_int((seed & _MASK32) ^ high)


def _times_mod32(h: torch.Tensor, factor: int) -> torch.Tensor:
    """(h · factor) mod 2**32 for int64 h in [0, 2**32): in two 16-bit halves of the
    factor, so no product leaves int64's range (a wrapped signed product is undefined
    behaviour in the C++ kernels underneath)."""
    low, high = factor & 0xFFFF, factor >> 16
    return (h * low + ((h * high) & 0xFFFF) * 65536) & _MASK32


def mix32(h: torch.Tensor) -> torch.Tensor:
    """The murmur3 finaliser elementwise on int64 values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _times_mod32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _times_mod32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def random_words(key: int, start: int, count: int, device: torch.device) -> torch.Tensor:
    """(count,) int64: the 15-bit words of flat positions start … start+count−1 in the
    stream ``key`` (``kernels.random_mask``'s words)."""
    positions = torch.arange(count, dtype=torch.int64, device=device).add_((key + start) & _MASK32)
    return mix32(positions.bitwise_and_(_MASK32)) >> _SHIFT


def random_mask(key: int, start: int, threshold: int, count: int, device: torch.device) -> torch.Tensor:
    """(count,) bool: ``kernels.random_mask``: word < threshold (keep probability
    threshold / 2**15)."""
    return random_words(key, start, count, device) < threshold


def della_mask(
    magnitudes: torch.Tensor, ordered: torch.Tensor, key: int, start: int, density: float, epsilon: float
) -> torch.Tensor:
    """(R, C) bool: ``kernels.della_mask`` for one model's rows of float32 magnitudes
    (R, C) and the same rows sorted ascending, the block starting at flat position
    ``start``: the same float32 arithmetic, so the same decisions."""
    rows, columns = magnitudes.shape
    device = magnitudes.device
    words = random_words(key, start, rows * columns, device).view(rows, columns)
    uniform = (words.to(torch.float32) + 0.5) * _SCALE  # exact: (word + 0.5) / 2**15
    if columns == 1 or epsilon == 0:
        # The kernel compares in float64 (numba widens the float32 uniform).
        return uniform.double() < density
    low = torch.tensor(density - epsilon, dtype=torch.float32, device=device)
    spread = torch.tensor((columns - 1) / (2 * epsilon), dtype=torch.float32, device=device)
    # u < low + 2ε j/(C−1)  ⟺  j > (u − low)(C−1)/(2ε): the smallest rank that keeps.
    jmin = torch.floor((uniform - low) * spread).add_(1.0).clamp_(0.0, float(columns))
    rank = jmin.clamp(max=float(columns - 1)).to(torch.int64)
    return (jmin < columns) & (magnitudes >= ordered.gather(1, rank))


__all__ = ["della_mask", "mix32", "random_mask", "random_words", "stream_key"]
