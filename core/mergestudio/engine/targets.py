"""Where merged tensors go. A target receives each output tensor once, in plan order.

Contract for ``accept``: the tensor may be a read-only view of an input file and is
valid only during the call; a target that keeps it must copy it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class TensorTarget(Protocol):
    def accept(self, name: str, tensor: torch.Tensor) -> None: ...


class DictTarget:
    """Collects the merged model in memory: ``tensors[name]`` (owned copies, on CPU)."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def accept(self, name: str, tensor: torch.Tensor) -> None:
        self.tensors[name] = tensor.detach().to("cpu", copy=True)
