"""Reading safetensors files ourselves: the header is parsed and checked without touching
tensor data, and tensors are handed out as read-only views of a memory map, so reading a
tensor costs no copy and no anonymous memory.

File layout: 8-byte little-endian header length N, N bytes of JSON
``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``, then data.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import mmap
import os
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mergestudio.errors import SourceError
from mergestudio.io.dtypes import ITEM_SIZE, to_torch

if TYPE_CHECKING:
    import torch

_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives, without its data."""

    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path
    begin: int  # absolute byte offset of the data in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_bytes: bytes


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and validate a safetensors header. Raises SourceError naming the file and,
    where it applies, the tensor: truncated files, garbage headers, offsets out of range."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise SourceError(f"{path}: not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, _MAX_HEADER_BYTES):
                raise SourceError(
                    f"{path}: not a safetensors file or truncated (header says {length} "
                    f"bytes, file has {size})"
                )
            raw = handle.read(length)
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror})") from error
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: not a safetensors file (header is not JSON: {error})") from error
    if not isinstance(parsed, dict):
        raise SourceError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise SourceError(f"{path}: __metadata__ is not a JSON object")
    data_start = 8 + length
    tensors = _validated_tensors(path, parsed, data_start, size - data_start)
    return SafetensorsHeader(path, tensors, {str(k): str(v) for k, v in metadata.items()}, raw)


def _validated_tensors(
    path: Path, entries: dict[str, object], data_start: int, data_size: int
) -> dict[str, TensorInfo]:
    """Every entry checked as the reference implementation checks it: the tensors, sorted
    by offset, tile the data section exactly (no gap, no overlap, nothing after the last),
    and each spans shape × dtype bytes. A file that breaks this would make some tensor be
    read from another one's bytes."""
    spans = sorted(
        (_entry_span(path, name, entry) for name, entry in entries.items()), key=lambda s: (s[1], s[2])
    )
    expected_begin = 0
    previous = ""
    for name, begin, end, _dtype, _shape in spans:
        if begin < expected_begin:
            raise SourceError(
                f"{path}: tensor {name!r} (bytes {begin}-{end}) overlaps tensor {previous!r}, "
                f"which ends at byte {expected_begin}"
            )
        if begin > expected_begin:
            after = f"after tensor {previous!r}" if previous else "at the start of the data"
            raise SourceError(
                f"{path}: tensor {name!r} starts at byte {begin} but the data {after} ends at "
                f"{expected_begin}: {begin - expected_begin} bytes belong to no tensor"
            )
        if end > data_size:
            raise SourceError(
                f"{path}: truncated: tensor {name!r} ends at byte {end} of the data section, "
                f"which holds only {data_size} bytes"
            )
        expected_begin, previous = end, name
    if expected_begin != data_size:
        raise SourceError(
            f"{path}: {data_size - expected_begin} bytes after the last tensor ({previous!r}) "
            "belong to no tensor (a corrupt or hand-edited file)"
        )
    return {
        name: TensorInfo(name, dtype, shape, path, data_start + begin, end - begin)
        for name, begin, end, dtype, shape in spans
    }


def _entry_span(path: Path, name: str, entry: object) -> tuple[str, int, int, str, tuple[int, ...]]:
    """(name, begin, end, dtype, shape) of one header entry, its fields type-checked and
    its byte length matched against shape × dtype."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise SourceError(f"{path}: tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ITEM_SIZE:
        raise SourceError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise SourceError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise SourceError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise SourceError(f"{path}: tensor {name!r} has data_offsets {offsets} that end before they begin")
    expected = math.prod(shape) * ITEM_SIZE[dtype]
    if end - begin != expected:
        raise SourceError(
            f"{path}: tensor {name!r} spans {end - begin} bytes but shape {shape} of {dtype} needs {expected}"
        )
    return name, begin, end, dtype, tuple(shape)


def _is_count(value: object) -> bool:
    """A non-negative JSON integer (JSON booleans are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class MappedFiles:
    """Memory maps of safetensors files, opened on first use and shared between readers.

    Tensors returned by ``tensor`` are read-only views of the page cache: callers must
    not write to them (methods are pure, so they never do).
    """

    def __init__(self) -> None:
        self._maps: dict[Path, mmap.mmap] = {}
        self._addresses: dict[Path, int] = {}
        self._lock = threading.Lock()

    def _map(self, path: Path) -> mmap.mmap:
        with self._lock:
            mapped = self._maps.get(path)
            if mapped is None:
                fd = os.open(path, os.O_RDONLY)
                try:
                    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                finally:
                    os.close(fd)
                self._maps[path] = mapped
            return mapped

    def tensor(self, info: TensorInfo) -> torch.Tensor:
        """The tensor's data as a zero-copy view, shape ``info.shape``, dtype ``info.dtype``."""
        import torch

        mapped = self._map(info.file)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=to_torch(info.dtype))
        with warnings.catch_warnings():
            # The buffer is read-only on purpose; torch warns that it cannot write to it.
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=info.begin)
        return flat.view(to_torch(info.dtype)).view(info.shape)

    def prefetch(self, info: TensorInfo, populate: bool = False) -> None:
        """Ask the kernel to start reading a tensor's pages, so the read overlaps compute.
        With ``populate``, also map them into this process now, blocking until they are
        read: on a thread of its own this takes the page faults (~0.2 s per GB) off the
        thread that computes. A kernel without MADV_POPULATE_READ (Linux < 5.14) skips it."""
        mapped = self._map(info.file)
        page = mmap.PAGESIZE
        start = info.begin - info.begin % page
        length = info.begin + info.nbytes - start
        if length <= 0 or not hasattr(mapped, "madvise"):
            return
        mapped.madvise(mmap.MADV_WILLNEED, start, length)
        if populate:
            _populate(self._address(info.file, mapped) + start, length)

    def _address(self, path: Path, mapped: mmap.mmap) -> int:
        with self._lock:
            address = self._addresses.get(path)
            if address is None:
                # A one-entry view for its address, let go at once: a live view would
                # keep close() from unmapping.
                import numpy as np

                address = self._addresses[path] = int(np.frombuffer(mapped, np.uint8, count=1).ctypes.data)
            return address

    def close(self) -> None:
        with self._lock:
            for mapped in self._maps.values():
                # A tensor view may still point into the map; the OS unmaps it when the
                # last view is garbage-collected.
                with contextlib.suppress(BufferError):
                    mapped.close()
            self._maps.clear()
            self._addresses.clear()


_MADV_POPULATE_READ = 22  # Linux 5.14+; Python's mmap module does not name it before 3.13
_madvise: Callable[[int, int, int], int] | None = None


def _populate(address: int, length: int) -> None:
    """madvise(MADV_POPULATE_READ) through libc, which releases the GIL while the kernel
    reads and maps the pages (``mmap.madvise`` holds it). Errors are ignored: this only
    makes later reads cheaper."""
    global _madvise
    if _madvise is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        _madvise = libc.madvise
    _madvise(address, length, _MADV_POPULATE_READ)
