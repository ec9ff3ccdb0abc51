"""Writing sharded safetensors while tensors stream in.

The plan knows every output tensor's name, shape and dtype before the merge starts, so
the shard layout and each shard's header are fixed up front and tensor bytes go straight
to disk in plan order: no shard is ever held in memory. A writer thread does the file
writes so the merge thread can go on computing.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mergestudio.errors import MergeError
from mergestudio.io.dtypes import ITEM_SIZE

if TYPE_CHECKING:
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_QUEUE_DEPTH = 2


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEM_SIZE[self.dtype]


@dataclass
class Shard:
    filename: str
    slots: list[TensorSlot] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.slots)

    def header(self) -> bytes:
        entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for slot in self.slots:
            entries[slot.name] = {
                "dtype": slot.dtype,
                "shape": list(slot.shape),
                "data_offsets": [offset, offset + slot.nbytes],
            }
            offset += slot.nbytes
        raw = json.dumps(entries, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)  # data starts 8-byte aligned


def layout_shards(slots: list[TensorSlot], max_shard_bytes: int, stem: str = "model") -> list[Shard]:
    """Greedy, in order: a shard takes tensors until the next would pass the limit (a
    single tensor larger than the limit gets a shard of its own). File names follow the
    Hugging Face convention; ``stem`` is the library's weights name (diffusers:
    ``diffusion_pytorch_model``)."""
    groups: list[list[TensorSlot]] = [[]]
    size = 0
    for slot in slots:
        if groups[-1] and size + slot.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(slot)
        size += slot.nbytes
    if len(groups) == 1:
        return [Shard(f"{stem}.safetensors", groups[0])]
    total = len(groups)
    return [Shard(f"{stem}-{i + 1:05d}-of-{total:05d}.safetensors", group) for i, group in enumerate(groups)]


def write_index(folder: Path, shards: list[Shard]) -> None:
    if len(shards) == 1:
        return
    stem = shards[0].filename.rsplit("-", 3)[0]
    weight_map = {slot.name: shard.filename for shard in shards for slot in shard.slots}
    index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


class ShardWriter:
    """A ``TensorTarget`` that writes into pre-laid-out shards in ``folder``.

    Tensors must arrive in layout order with the declared shapes and dtypes, whole
    (``accept``) or as consecutive flat parts (``accept_part``), so a large tensor never
    has to be held at once. Call ``finish`` when all have been accepted (it raises the
    writer thread's error, if any), or ``abort`` to stop early.
    """

    def __init__(self, folder: Path, shards: list[Shard]) -> None:
        self.folder = folder
        self.shards = shards
        self._expected = iter([slot for shard in shards for slot in shard.slots])
        # (slot, bytes of it, whether they complete it); None stops the writer thread.
        self._queue: queue.Queue[tuple[TensorSlot, torch.Tensor, bool] | None] = queue.Queue(_QUEUE_DEPTH)
        self._partial: tuple[TensorSlot, int] | None = None  # a slot arriving in parts, bytes so far
        self._error: BaseException | None = None
        # Buffers lent by output_buffer (keyed by data pointer) and those written and free.
        self._lent: dict[int, torch.Tensor] = {}
        self._free: list[torch.Tensor] = []
        self._pool_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def accept(self, name: str, tensor: torch.Tensor) -> None:
        from mergestudio.io.dtypes import from_torch

        slot = self._next_slot(name)
        if tuple(tensor.shape) != slot.shape or from_torch(tensor.dtype) != slot.dtype:
            raise MergeError(
                f"{name}: produced shape {list(tensor.shape)} {tensor.dtype}, planned "
                f"{list(slot.shape)} {slot.dtype}"
            )
        self._raise_if_failed()
        # The queue holds a reference, so a view into an input file stays valid.
        self._queue.put((slot, tensor.contiguous(), True))

    def accept_part(self, name: str, part: torch.Tensor, last: bool) -> None:
        """The next consecutive entries (in flat order) of tensor ``name``; ``last`` on
        the part that completes it. ``part`` should come from ``output_buffer``."""
        from mergestudio.io.dtypes import from_torch

        if self._partial is None or self._partial[0].name != name:
            self._partial = (self._next_slot(name), 0)
        slot, received = self._partial
        received += part.numel() * part.element_size()
        if from_torch(part.dtype) != slot.dtype or received > slot.nbytes or (last and received != slot.nbytes):
            raise MergeError(
                f"{name}: produced {received} bytes of {part.dtype} in parts, planned {slot.nbytes} of {slot.dtype}"
            )
        self._partial = None if last else (slot, received)
        self._raise_if_failed()
        self._queue.put((slot, part.contiguous(), last))

    def _next_slot(self, name: str) -> TensorSlot:
        if self._partial is not None:
            raise MergeError(f"{name}: arrived before {self._partial[0].name} was complete")
        slot = next(self._expected, None)
        if slot is None or slot.name != name:
            raise MergeError(f"{name}: arrived out of order (expected {slot.name if slot else 'nothing'})")
        return slot

    def output_buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An empty tensor to produce the next output in, to pass to ``accept``: its
        memory is reused once written. Fresh memory is faulted in and zeroed page by page
        by the OS, which on our benchmark machine cost more than converting the data."""
        import torch

        nbytes = max(1, math.prod(shape) * torch.empty((), dtype=dtype).element_size())
        with self._pool_lock:
            fitting = [i for i, free in enumerate(self._free) if free.numel() >= nbytes]
            if fitting:
                buffer = self._free.pop(min(fitting, key=lambda i: self._free[i].numel()))
            else:
                # The free buffers are all too small: let them go, so the pool holds no
                # more buffers than are in flight (parts of varying sizes grew it otherwise).
                self._free.clear()
                buffer = torch.empty(nbytes, dtype=torch.uint8)
            self._lent[buffer.data_ptr()] = buffer
        return buffer[:nbytes].view(dtype).view(shape)

    def _give_back(self, tensor: torch.Tensor) -> None:
        with self._pool_lock:
            buffer = self._lent.pop(tensor.data_ptr(), None)
            if buffer is not None:
                self._free.append(buffer)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        if self._partial is not None or next(self._expected, None) is not None:
            raise MergeError("the merge ended before every planned tensor was written")
        write_index(self.folder, self.shards)

    def abort(self) -> None:
        # Drain so the thread can see the stop marker even if the queue was full.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise MergeError(f"writing {self.folder}: {self._error}") from self._error

    def _run(self) -> None:
        try:
            for shard in self.shards:
                if not self._write_shard(shard):
                    return
            self._queue.get()  # the stop marker
        except BaseException as error:  # reported to the merge thread by _raise_if_failed
            self._error = error
            self._drain()

    def _write_shard(self, shard: Shard) -> bool:
        header = shard.header()
        with (self.folder / shard.filename).open("wb") as handle:
            handle.write(len(header).to_bytes(8, "little"))
            handle.write(header)
            for _ in shard.slots:
                complete = False
                while not complete:
                    item = self._queue.get()
                    if item is None:
                        return False
                    _, tensor, complete = item
                    if tensor.numel():
                        handle.write(tensor.reshape(-1).view(_byte_dtype()).numpy().data)
                    self._give_back(tensor)
        return True

    def _drain(self) -> None:
        while self._queue.get() is not None:
            pass


def _byte_dtype() -> torch.dtype:
    import torch

    return torch.uint8
