"""The inputs of one output tensor as flat ranges, for methods that stream them.

A two-pass method (the sparsifiers) never holds a whole tensor in the compute dtype:
it reads ranges of the flattened inputs, once for its statistics (thresholds, norms,
keep masks) and once more to combine them, and writes each range of the result as it
is made. Where the ranges come from is the caller's: whole tensors already in memory
(``TensorChunks``), or the stored tensors of a model file, converted range by range
into a reused buffer (the executor's). Results depend on the range size only through
``spans``' alignment, which every method states, so any budget gives the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class FlatChunks(Protocol):
    """n input rows and (``has_base``) a base, each ``numel`` entries, read by flat range.

    ``read`` returns (n, L) and (L,) tensors in ``dtype`` on ``device``; they may be
    views into a buffer that the next ``read`` reuses. Without a base, ``read_inputs``
    returns the (n, L) inputs alone (``read`` and ``gather`` need the base). ``output`` lends the (L,) tensor
    where the method writes the result's range [start, stop); ``commit`` says it is
    complete (ranges are committed in order, each once)."""

    @property
    def n_models(self) -> int: ...

    @property
    def numel(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def entries_per_read(self) -> int: ...

    @property
    def has_base(self) -> bool: ...

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def read_inputs(self, start: int, stop: int) -> torch.Tensor: ...

    def gather(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def output(self, start: int, stop: int) -> torch.Tensor: ...

    def commit(self, start: int, stop: int) -> None: ...

    def weighted_sum_stored(self, start: int, stop: int, rows: Sequence[int], weights: Sequence[float]) -> bool:
        """Write and commit the result's range [start, stop) as Σ weights[k]·row
        rows[k] (row n is the base), straight from the stored data, with the bits of
        ``torch.mul(r₀, w₀, out=out).add_(r₁, alpha=w₁)…``. False, with nothing
        written, where it cannot (the default) or a result was NaN/Inf: the caller
        then computes the range and commits it as usual."""
        ...


def spans(chunks: FlatChunks, align: int) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges covering [0, numel) in order, each a whole number of
    ``align``-entry units (the last one excepted) of about ``entries_per_read`` entries,
    at least one unit."""
    units = max(1, chunks.entries_per_read // max(align, 1))
    step = units * max(align, 1)
    for start in range(0, chunks.numel, step):
        yield start, min(chunks.numel, start + step)


class TensorChunks:
    """``FlatChunks`` over tensors in memory: inputs (n, numel), base (numel,) or None;
    the result goes to ``result`` (numel,), in the inputs' dtype and device."""

    def __init__(
        self,
        inputs: torch.Tensor,
        base: torch.Tensor | None,
        result: torch.Tensor,
        entries_per_read: int | None = None,
    ) -> None:
        self.inputs = inputs
        self.base = base
        self.result = result
        self._entries = entries_per_read or max(1, int(inputs.shape[1]))

    @property
    def n_models(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def numel(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.inputs.dtype

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    @property
    def entries_per_read(self) -> int:
        return self._entries

    @property
    def has_base(self) -> bool:
        return self.base is not None

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.base is not None, "read() needs a base; use read_inputs()"
        return self.inputs[:, start:stop], self.base[start:stop]

    def read_inputs(self, start: int, stop: int) -> torch.Tensor:
        return self.inputs[:, start:stop]

    def gather(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.base is not None, "gather() needs a base"
        return self.inputs[:, positions], self.base[positions]

    def output(self, start: int, stop: int) -> torch.Tensor:
        return self.result[start:stop]

    def commit(self, start: int, stop: int) -> None:
        return None

    def weighted_sum_stored(self, start: int, stop: int, rows: Sequence[int], weights: Sequence[float]) -> bool:
        return False  # the tensors are already in the compute dtype


__all__ = ["FlatChunks", "TensorChunks", "spans"]
