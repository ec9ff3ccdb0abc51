"""Choosing the compute device and dtype: a setting, never a fork in the merge code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (None: leave the setting alone).

    Two reasons to pin it: on a machine whose cores are busy, a second thread that waits
    for a core makes merges and evaluations many times slower; and reductions split
    differently across threads can change the last bits of a score."""
    import torch

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
