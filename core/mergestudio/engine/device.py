"""Choosing the compute device and dtype: a setting, never a fork in the merge code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergestudio.errors import MergeError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; an explicit choice that is not
    available is an error rather than a silent fallback."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise MergeError(f"device: unknown device {name!r}; valid: {', '.join(DEVICE_CHOICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise MergeError("device: cuda was asked for but no CUDA GPU is available")
    if base == "mps" and not torch.backends.mps.is_available():
        raise MergeError("device: mps was asked for but Apple's Metal backend is not available")
    return torch.device(name)
