"""Streaming execution of a plan: one output tensor at a time on the chosen device and
compute dtype, reading ahead so I/O overlaps compute, handing each result to a target.

Memory stays bounded by the largest tensor times the number of inputs (elementwise
methods split big tensors into row chunks), independent of the model's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mergestudio import collector
from mergestudio.engine.device import resolve_device, torch_threads
from mergestudio.engine.plan import MergePlan, PlannedTensor
from mergestudio.engine.targets import TensorTarget
from mergestudio.errors import MergeError, MergeStudioError
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.io.dtypes import dtype_code, to_torch
from mergestudio.methods.plugins import PostProcessSpec, get_post_process
from mergestudio.methods.registry import MergeInputs
from mergestudio.parallel import run_parallel

if TYPE_CHECKING:
    import torch

# A target's allocator of output tensors (shape, dtype) -> empty tensor, reused by it.
OutputBuffer = Callable[[tuple[int, ...], "torch.dtype"], "torch.Tensor"]
# A target's ``accept_part(name, part, last)``: a tensor's next flat entries, in order.
AcceptPart = Callable[[str, "torch.Tensor", bool], None]
READ_AHEAD = 3  # tensors whose pages are requested before they are needed
_NARROW_RANGE = ("torch.float16",)  # compute dtypes whose range a merge can overflow
# Elementwise methods work on row chunks of about this many bytes (all inputs together),
# small enough that a chunk is still in cache between its conversion and its use.
DEFAULT_CHUNK_BYTES = 8 << 20
# Streamed (two-pass) methods read ranges of about this many bytes (inputs, base and the
# result's range in the compute dtype): large enough that per-range work is negligible.
DEFAULT_STREAM_BYTES = 64 << 20


@dataclass(frozen=True)
class ExecutionStats:
    tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    device: str


def execute_plan(
    plan: MergePlan,
    target: TensorTarget,
    *,
    device: str = "auto",
    compute_dtype: str = "float32",
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    chunk_bytes: int | None = None,
    threads: int | None = None,
    allow_nonfinite: bool = False,
) -> ExecutionStats:
    """Run every planned tensor and give each result to ``target``, in plan order.

    Every input is scanned for NaN/Inf as it streams through: one is an error naming the
    model, tensor and count (a warning, and merged as is, with ``allow_nonfinite``). A
    result with NaN/Inf from finite inputs is always an error (MergeError).

    ``threads``: CPU threads for tensor math, one by default: merging is bound by memory
    bandwidth, and a second thread that has to wait for a busy core (the writer's, or
    another program's) made merges up to 50x slower in our measurements. Pass more for
    compute-heavy methods (SVD) on an idle machine.

    ``chunk_bytes``: the working memory of one step (all inputs of a row chunk or read
    range together, in the compute dtype); None takes the defaults (``DEFAULT_*_BYTES``).
    The result does not depend on it (``MergePlan.chunk_bytes_for`` derives it from a
    memory cap).
    """
    import torch

    torch_device = resolve_device(device)
    compute = to_torch(dtype_code(compute_dtype))
    tensors = plan.tensors
    bytes_total = sum(_read_bytes(plan, p) for p in tensors)
    reporter = ProgressReporter(events, "merge", len(tensors), bytes_total)
    reporter.start()
    log(events, f"merging {len(tensors)} tensors with {plan.method.name} on {torch_device}")
    start = time.perf_counter()
    written = 0
    nonfinite = _NonFiniteGuard(plan, allow_nonfinite, events)
    merger = _TensorMerger(
        plan,
        torch_device,
        compute,
        chunk_bytes or DEFAULT_CHUNK_BYTES,
        nonfinite,
        getattr(target, "output_buffer", None),
        stream_bytes=chunk_bytes or plan.method.stream_bytes or DEFAULT_STREAM_BYTES,
        accept_part=getattr(target, "accept_part", None),
    )
    if threads is None and torch_device.type == "cpu":
        threads = 1
    # The collector paused: the loop's tensors form no cycles, and its collections took
    # 3 % of a 1.1B TIES merge.
    page_in = _PageIn(plan)
    with torch.inference_mode(), torch_threads(threads), collector.paused(), page_in:
        for index, planned in enumerate(tensors):
            check_cancel(cancel)
            for ahead in tensors[index + 1 : index + 1 + READ_AHEAD]:
                _prefetch(plan, ahead)
            if index + 1 < len(tensors):
                page_in.request(tensors[index + 1])
            result = merger.merge(planned)
            if result is not None:  # else it went to the target in parts
                target.accept(planned.name, result)
            written += planned.out_bytes
            reporter.advance(1, _read_bytes(plan, planned), planned.name)
    return ExecutionStats(len(tensors), bytes_total, written, time.perf_counter() - start, str(torch_device))


def _copy_in_inference_mode(job: tuple[torch.Tensor, torch.Tensor, bool]) -> bool:
    """slot.copy_(tensor) on a pool thread: inference mode is per thread, and the
    buffer was made in it. With ``scan``, also whether the copy is all finite, summed
    while it is still in this core's cache. Returns True when not scanned."""
    import torch

    slot, tensor, scan = job
    with torch.inference_mode():
        slot.copy_(tensor)
        return _all_finite(slot) if scan else True


def _halves(length: int) -> list[tuple[int, int]]:
    """[0, length) in two pieces for two cores, or one when too small to be worth it."""
    if length < 1 << 17:
        return [(0, length)]
    return [(0, length // 2), (length // 2, length)]


def _widen_bf16(job: tuple[torch.Tensor, torch.Tensor, bool]) -> bool:
    """``_copy_in_inference_mode`` for bf16 into float32, compiled: exact widening and,
    with ``scan``, an exact NaN/Inf count in the same pass (no second pass to sum)."""
    from mergestudio.methods import bf16_kernels

    slot, tensor, scan = job
    return bf16_kernels.widen_into(bf16_kernels.bits(tensor), bf16_kernels.floats(slot), scan) == 0


def _narrow_into(values: torch.Tensor, destination: torch.Tensor) -> bool:
    """destination ← values (same number of entries) converted to its dtype; whether
    every value is finite (False can also mean a float32 sum overflowed). float32 into
    bf16 runs compiled, in one pass that also counts NaN/Inf exactly."""
    import torch

    if values.dtype == torch.float32 and destination.dtype == torch.bfloat16 and values.device.type == "cpu":
        from mergestudio.methods import bf16_kernels

        return bf16_kernels.narrow_into(bf16_kernels.floats(values), bf16_kernels.bits(destination)) == 0
    destination.copy_(values.view(destination.shape))
    return _all_finite(values)


def _read_bytes(plan: MergePlan, planned: PlannedTensor) -> int:
    return sum(plan.tensor_info(i).nbytes for i in planned.all_inputs())


def _prefetch(plan: MergePlan, planned: PlannedTensor, populate: bool = False) -> None:
    for tensor_input in planned.all_inputs():
        plan.sources[tensor_input.model].prefetch(tensor_input.tensor, populate)


class _PageIn:
    """A thread that maps the next tensor's input pages (``prefetch(populate=True)``)
    while the current one is merged: the page faults of reading memory-mapped inputs
    (~0.2 s per GB) then fall on this thread's core, not on the one that computes.
    Only the newest request is kept: one the merge has already passed is dropped."""

    def __init__(self, plan: MergePlan) -> None:
        self.plan = plan
        self._wanted: PlannedTensor | None = None
        self._stop = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="page-in", daemon=True)

    def __enter__(self) -> _PageIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join()

    def request(self, planned: PlannedTensor) -> None:
        with self._ready:
            self._wanted = planned
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._wanted is None and not self._stop:
                    self._ready.wait()
                if self._stop:
                    return
                planned, self._wanted = self._wanted, None
            assert planned is not None
            # Only a speed-up: a failure shows again, with its message, when the merge reads.
            with contextlib.suppress(Exception):
                _prefetch(self.plan, planned, populate=True)


class _TensorMerger:
    def __init__(
        self,
        plan: MergePlan,
        device: torch.device,
        compute: torch.dtype,
        chunk_bytes: int,
        nonfinite: _NonFiniteGuard,
        output_buffer: OutputBuffer | None = None,
        stream_bytes: int = DEFAULT_STREAM_BYTES,
        accept_part: AcceptPart | None = None,
    ) -> None:
        self.plan = plan
        self.stream_bytes = stream_bytes
        # Results made range by range go to a target that takes parts as they are made
        # (with buffers it lends), so no whole output tensor is held.
        self.accept_part = accept_part if output_buffer is not None else None
        self.output_buffer = output_buffer
        self.device = device
        self.compute = compute
        self.chunk_bytes = chunk_bytes
        self.method = plan.method
        post = plan.recipe.post_process
        self.post: PostProcessSpec | None = get_post_process(post.name) if post else None
        self.post_params: dict[str, object] = dict(post.parameters or {}) if post else {}
        self.seed = plan.recipe.random_seed or 0
        self._buffer: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None
        self._pinned = _PinnedUpload()
        self.nonfinite = nonfinite

    def merge(self, planned: PlannedTensor) -> torch.Tensor | None:
        """The output tensor on the CPU in its output dtype, shape ``planned.shape``, or
        None when it was given to the target in parts (``accept_part``)."""
        out_dtype = to_torch(planned.out_dtype)
        if planned.copy_from is not None:
            return self._read(planned.copy_from.model, planned.copy_from.tensor)
        inputs = [self._read(i.model, i.tensor) for i in planned.inputs]
        base = self._read(planned.base.model, planned.base.tensor) if planned.base else None
        if planned.align_rows:
            return self._merge_aligned(planned, inputs, base, out_dtype)
        return self._merge_read(planned, inputs, base, out_dtype)

    def _merge_read(
        self,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        out_dtype: torch.dtype,
        whole: bool = False,
    ) -> torch.Tensor | None:
        """``whole``: return the tensor even where it could go in parts."""
        try:
            # A post-process sees whole tensors (SVC decomposes them), so no row chunks.
            parts = None if whole or not planned.numel else self.accept_part
            if self.method.elementwise and planned.shape and self.post is None:
                return self._merge_in_chunks(planned, inputs, base, out_dtype, parts)
            if self.method.streamed is not None and self.post is None:
                return self._merge_streamed(planned, inputs, base, out_dtype, parts)
            return self._output(planned, self._call(planned, inputs, base), out_dtype)
        except MergeStudioError:
            raise
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            raise MergeError(f"{planned.name}: {self.method.name} failed: {error}") from error

    def _merge_aligned(
        self,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        """Embedding-like tensors: each input's rows moved to the output vocabulary (rows
        an input lacks filled by the plan's rule), merged, then ``tokens:`` overrides."""
        from mergestudio.vocab.align import apply_overrides, gather_rows

        vocab = self.plan.vocab
        assert vocab is not None
        models = [i.model for i in planned.inputs] + ([planned.base.model] if planned.base else [])
        raw = inputs + ([base] if base is not None else [])
        weights = planned.model_params.get("weight", (1.0,) * len(inputs))
        aligned = gather_rows(vocab, models, raw, [float(w) for w in weights])
        result = self._merge_read(
            planned, aligned[: len(inputs)], aligned[-1] if base is not None else None, out_dtype, whole=True
        )
        assert result is not None
        if vocab.overrides:
            rows_of_model = dict(zip(models, raw, strict=True))
            for override in vocab.overrides:
                if override.model is not None and override.model not in rows_of_model:
                    name = self._tensor_name_in(planned, override.model)
                    rows_of_model[override.model] = self._read(override.model, name)
            apply_overrides(vocab, result, rows_of_model)
        return result

    @staticmethod
    def _tensor_name_in(planned: PlannedTensor, model: str) -> str:
        return next((i.tensor for i in planned.all_inputs() if i.model == model), planned.name)

    def _read(self, model: str, tensor: str) -> torch.Tensor:
        return self.plan.sources[model].read(tensor)

    def _merge_in_chunks(
        self,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        out_dtype: torch.dtype,
        parts: AcceptPart | None = None,
    ) -> torch.Tensor | None:
        """Row chunks of ``chunk_bytes``; with ``parts``, each chunk's rows go to the
        target as they are made. (Each chunk split over the cores, every piece converted,
        merged and converted back on one core, measured slower at load 10 on 2 cores:
        9.8-13.5 s against 8.8-9.6 s for 1.1B linear, with more CPU time.)"""
        rows = planned.shape[0]
        bytes_per_row = max(1, planned.numel // max(rows, 1)) * (len(inputs) + 3) * 4
        rows_per_chunk = max(1, self.chunk_bytes // bytes_per_row)
        fused = self._fused_for(planned, inputs, base, out_dtype)
        if rows_per_chunk >= rows and fused is None:
            return self._output(planned, self._call(planned, inputs, base), out_dtype)
        whole = rows_per_chunk >= rows or parts is None
        output = self._empty_output(planned, out_dtype) if whole else None
        for start in range(0, rows, rows_per_chunk):
            stop = min(rows, start + rows_per_chunk)
            chunk_inputs = [x[start:stop] for x in inputs]
            chunk_base = base[start:stop] if base is not None else None
            if output is not None:
                destination = output[start:stop]
            else:
                assert self.output_buffer is not None
                destination = self.output_buffer((stop - start, *planned.shape[1:]), out_dtype)
            if fused is None or not fused(chunk_inputs, chunk_base, destination):
                chunk = self._call(planned, chunk_inputs, chunk_base)
                destination.copy_(chunk.view(destination.shape))
            if output is None:
                assert parts is not None
                parts(planned.name, destination, stop == rows)
        return output

    def _fused_for(
        self,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> Callable[[list[torch.Tensor], torch.Tensor | None, torch.Tensor], bool] | None:
        """The method's one-pass bf16 form (``MethodSpec.fused``) as ``run(rows, base,
        destination) -> all finite``, where it gives the torch path's bytes: on the CPU
        computing in float32, bf16 in and out. Rows whose results are not all finite
        are left for the torch path, which applies the NaN/Inf policy."""
        import torch

        fused = self.method.fused
        stored = [*inputs, *([base] if base is not None else [])]
        if (
            fused is None
            or self.post is not None
            or self.device.type != "cpu"
            or self.compute != torch.float32
            or out_dtype != torch.bfloat16
            or any(t.dtype != torch.bfloat16 for t in stored)
        ):
            return None
        from mergestudio.methods import bf16_kernels

        params: dict[str, object] = dict(planned.global_params)
        params.update(planned.model_params)

        def run(rows: list[torch.Tensor], row_base: torch.Tensor | None, destination: torch.Tensor) -> bool:
            bits = bf16_kernels.bits
            flat_rows = [bits(r) for r in rows]
            flat_base = bits(row_base) if row_base is not None else None
            out = bits(destination)

            def piece(bounds: tuple[int, int]) -> bool:
                start, stop = bounds
                piece_base = flat_base[start:stop] if flat_base is not None else None
                return fused([r[start:stop] for r in flat_rows], piece_base, out[start:stop], **params) == 0

            # Halves side by side on the cores: the kernel releases the GIL.
            return all(run_parallel(piece, _halves(out.shape[0])))

        return run

    def _merge_streamed(
        self,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        out_dtype: torch.dtype,
        parts: AcceptPart | None = None,
    ) -> torch.Tensor | None:
        """A two-pass method over read ranges of the stored inputs (``_StoredChunks``):
        working memory follows ``stream_bytes``, not the tensor's size. With ``parts``,
        each range of the result goes to the target as it is made."""
        assert self.method.streamed is not None
        output = self._empty_output(planned, out_dtype) if parts is None else None
        destination = output.view(-1) if output is not None else _PartSink(self, planned, out_dtype, parts)
        chunks = _StoredChunks(self, planned, inputs, base, destination)
        generator = self._generator(planned) if self.method.stochastic else None
        params: dict[str, object] = dict(planned.global_params)
        params.update(planned.model_params)
        self.method.streamed(chunks, generator, tuple(planned.shape), **params)
        return output

    def _empty_output(self, planned: PlannedTensor, out_dtype: torch.dtype) -> torch.Tensor:
        """Where the output tensor goes: the target's reused buffer when it lends one."""
        import torch

        if self.output_buffer is not None:
            return self.output_buffer(tuple(planned.shape), out_dtype)
        return torch.empty(planned.shape, dtype=out_dtype)

    def _output(self, planned: PlannedTensor, result: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """``result`` on the CPU in the output dtype, in memory the caller may keep."""
        if self.output_buffer is not None:
            return self._empty_output(planned, out_dtype).copy_(result.view(planned.shape))
        return self._detached(result.to("cpu", out_dtype))

    def _detached(self, result: torch.Tensor) -> torch.Tensor:
        """``result``, copied if it is the reused output buffer (the target keeps it)."""
        scratch = self._scratch
        if (
            scratch is not None
            and result.untyped_storage().data_ptr() == scratch.untyped_storage().data_ptr()
        ):
            return result.clone()
        return result

    def _call(
        self, planned: PlannedTensor, inputs: list[torch.Tensor], base: torch.Tensor | None
    ) -> torch.Tensor:
        # The base shares the reused buffer with the inputs, as its last slot.
        scan = self.nonfinite.wants_input_scan(planned)
        stacked, finite = self._stack(inputs if base is None else [*inputs, base], scan)
        if not finite:
            self.nonfinite.inputs_not_finite(planned)
        base_tensor = None if base is None else stacked[-1]
        models = stacked if base is None else stacked[:-1]
        generator = self._generator(planned) if self.method.stochastic else None
        merge_inputs = MergeInputs(planned.name, models, base_tensor, generator, self._scratch_for(models[0]))
        params: dict[str, object] = dict(planned.global_params)
        params.update(planned.model_params)
        result = self.method.function(merge_inputs, **params)
        if self.post is not None:
            result = self.post.apply(merge_inputs, result, self.post_params)
        self.nonfinite.check_result(planned, result)
        return result

    def _stack(self, inputs: list[torch.Tensor], scan: bool) -> tuple[torch.Tensor, bool]:
        """(n, *shape) in the compute dtype on the device, converted in one copy per input
        into a buffer reused across calls (fresh large allocations cost page faults), and
        whether every entry is finite (True when not ``scan``-ned)."""
        import torch

        shape = (len(inputs), *inputs[0].shape)
        numel = len(inputs) * inputs[0].numel()
        buffer = self._buffer
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffer = torch.empty(numel, dtype=self.compute, device=self.device)
        stacked = buffer[:numel].view(shape)
        # Each copy converts dtype and moves to the device at once; on the CPU they run
        # side by side (torch's copies release the GIL), one per core.
        copies = [(slot, tensor, scan) for slot, tensor in zip(stacked, inputs, strict=True)]
        if self.device.type == "cpu":
            if self.compute == torch.float32 and all(t.dtype == torch.bfloat16 for t in inputs):
                return stacked, all(run_parallel(_widen_bf16, copies))
            return stacked, all(run_parallel(_copy_in_inference_mode, copies))
        if self.device.type == "cuda":
            self._pinned.upload(stacked, inputs)
        else:
            for slot, tensor, _ in copies:
                slot.copy_(tensor)
        return stacked, not scan or _all_finite(stacked)

    def _scratch_for(self, like: torch.Tensor) -> torch.Tensor:
        """A (like.numel(),) output buffer in the compute dtype, reused across calls."""
        return self.scratch(like.numel())

    def scratch(self, numel: int) -> torch.Tensor:
        """A (numel,) buffer in the compute dtype on the device, reused across calls."""
        import torch

        scratch = self._scratch
        if scratch is None or scratch.numel() < numel:
            scratch = self._scratch = torch.empty(numel, dtype=self.compute, device=self.device)
        return scratch[:numel]

    def stack(self, inputs: list[torch.Tensor], scan: bool) -> tuple[torch.Tensor, bool]:
        return self._stack(inputs, scan)

    def _generator(self, planned: PlannedTensor) -> torch.Generator:
        """A generator seeded from the recipe's seed and the tensor's name, so results do
        not depend on the order tensors are processed in."""
        import torch

        digest = hashlib.sha256(f"{self.seed}:{planned.name}".encode()).digest()
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return generator


# Inputs larger than this go to the GPU without pinned staging (whole-matrix methods):
# page-locked memory of that size would be taken from the rest of the system.
_PINNED_LIMIT = 256 << 20


class _PinnedUpload:
    """Host → GPU copies through page-locked (pinned) staging buffers, in two sets used in
    turn: each input is copied from the page cache into a staging buffer on this thread,
    then to the GPU asynchronously (and converted to the compute dtype there), so the
    transfer of one input overlaps the host copy of the next, and a read range's
    transfers overlap the GPU work queued before them. An event per set says when its
    buffers may be refilled; the device buffer they land in is reused safely because
    the copies are ordered on the stream after the work that used it."""

    def __init__(self) -> None:
        self._sets: list[dict[tuple[int, torch.dtype], torch.Tensor]] = [{}, {}]
        self._done: list[torch.cuda.Event | None] = [None, None]
        self._turn = 0

    def upload(self, stacked: torch.Tensor, inputs: list[torch.Tensor]) -> None:
        """stacked[i] ← inputs[i] for device tensors stacked (n, *shape) and CPU inputs."""
        import torch

        if inputs[0].numel() * inputs[0].element_size() > _PINNED_LIMIT:
            for slot, tensor in zip(stacked, inputs, strict=True):
                slot.copy_(tensor)
            return
        turn, self._turn = self._turn, self._turn ^ 1
        done = self._done[turn]
        if done is not None:
            done.synchronize()  # this set's last transfers have left its buffers
        staging = self._sets[turn]
        for index, (slot, tensor) in enumerate(zip(stacked, inputs, strict=True)):
            host = self._buffer(staging, index, tensor)
            host.copy_(tensor.reshape(-1))
            slot.view(-1).copy_(host, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        self._done[turn] = event

    @staticmethod
    def _buffer(staging: dict[tuple[int, torch.dtype], torch.Tensor], index: int, like: torch.Tensor) -> torch.Tensor:
        """A pinned (like.numel(),) buffer in like's dtype for input ``index``, reused."""
        import torch

        key = (index, like.dtype)
        buffer = staging.get(key)
        if buffer is None or buffer.numel() < like.numel():
            buffer = staging[key] = torch.empty(like.numel(), dtype=like.dtype, pin_memory=True)
        return buffer[: like.numel()]


class _PartSink:
    """Where a streamed result's ranges go when the target takes parts: each range is
    copied into a buffer the target lends, in the output dtype, and handed over."""

    def __init__(
        self, merger: _TensorMerger, planned: PlannedTensor, out_dtype: torch.dtype, parts: AcceptPart | None
    ) -> None:
        assert parts is not None and merger.output_buffer is not None
        self.planned = planned
        self.out_dtype = out_dtype
        self.parts = parts
        self.lend = merger.output_buffer

    def lend_part(self, start: int, stop: int) -> torch.Tensor:
        return self.lend((stop - start,), self.out_dtype)

    def hand(self, stop: int, part: torch.Tensor) -> None:
        self.parts(self.planned.name, part, stop == self.planned.numel)


class _StoredChunks:
    """``methods.chunks.FlatChunks`` over one output tensor's stored inputs (memory-mapped
    file data, in their stored dtype): each read converts a flat range of every input
    and the base into the merger's reused buffer, scanning it for NaN/Inf as
    ``_TensorMerger._stack`` does; each committed range of the result is checked and
    copied into the output tensor in the output dtype."""

    def __init__(
        self,
        merger: _TensorMerger,
        planned: PlannedTensor,
        inputs: list[torch.Tensor],
        base: torch.Tensor | None,
        output: torch.Tensor | _PartSink,
    ) -> None:
        self.merger = merger
        self.planned = planned
        self._has_base = base is not None
        self.stored = [tensor.reshape(-1) for tensor in inputs] + ([base.reshape(-1)] if base is not None else [])
        self.result = output
        self._out_dtype = output.out_dtype if isinstance(output, _PartSink) else output.dtype
        self._unused: tuple[int, torch.Tensor] | None = None
        self._n = len(inputs)
        item = merger.compute.itemsize
        # Per entry: every input and the base converted, and the result's range.
        self._entries = max(1, merger.stream_bytes // ((len(self.stored) + 1) * item))

    @property
    def n_models(self) -> int:
        return self._n

    @property
    def numel(self) -> int:
        return self.planned.numel

    @property
    def dtype(self) -> torch.dtype:
        return self.merger.compute

    @property
    def device(self) -> torch.device:
        return self.merger.device

    @property
    def entries_per_read(self) -> int:
        return self._entries

    @property
    def has_base(self) -> bool:
        return self._has_base

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._has_base, "read() needs a base; use read_inputs()"
        stacked = self._converted(start, stop)
        return stacked[: self._n], stacked[self._n]

    def read_inputs(self, start: int, stop: int) -> torch.Tensor:
        return self._converted(start, stop)[: self._n]

    def _converted(self, start: int, stop: int) -> torch.Tensor:
        """(inputs [+ base], stop − start) in the compute dtype, scanned for NaN/Inf."""
        guard = self.merger.nonfinite
        stacked, finite = self.merger.stack([t[start:stop] for t in self.stored], guard.wants_input_scan(self.planned))
        if not finite:
            guard.inputs_not_finite(self.planned)
        return stacked

    def gather(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        assert self._has_base, "gather() needs a base"
        index = positions.cpu()
        picked = torch.stack([t[index].to(self.dtype) for t in self.stored]).to(self.device)
        return picked[: self._n], picked[self._n]

    def output(self, start: int, stop: int) -> torch.Tensor:
        return self.merger.scratch(stop - start)

    def weighted_sum_stored(self, start: int, stop: int, rows: Sequence[int], weights: Sequence[float]) -> bool:
        """``FlatChunks.weighted_sum_stored`` by the compiled bf16 kernel, where the
        stored rows and the result are bf16 and the merge computes in float32 on the CPU."""
        import torch

        merger = self.merger
        if (
            merger.device.type != "cpu"
            or merger.compute != torch.float32
            or self._out_dtype != torch.bfloat16
            or any(self.stored[k].dtype != torch.bfloat16 for k in rows)
        ):
            return False
        from mergestudio.methods import bf16_kernels

        destination = self._destination(start, stop)
        sources = [bf16_kernels.bits(self.stored[k][start:stop]) for k in rows]
        if bf16_kernels.weighted_sum_bf16(sources, weights, None, bf16_kernels.bits(destination)):
            self._unused = (start, destination)  # the caller's commit of this range takes it
            return False
        self._hand(stop, destination)
        return True

    def _destination(self, start: int, stop: int) -> torch.Tensor:
        """Where the result's range goes: a part the target lends (or the one lent for this
        range and not handed over), or the output tensor's range."""
        sink = self.result
        if not isinstance(sink, _PartSink):
            return sink[start:stop]
        unused, self._unused = self._unused, None
        return unused[1] if unused is not None and unused[0] == start else sink.lend_part(start, stop)

    def _hand(self, stop: int, destination: torch.Tensor) -> None:
        if isinstance(self.result, _PartSink):
            self.result.hand(stop, destination)

    def commit(self, start: int, stop: int) -> None:
        values = self.merger.scratch(stop - start)
        destination = self._destination(start, stop)
        # Converted first, checked after: a part reaches the target only once checked.
        if not _narrow_into(values, destination):
            self.merger.nonfinite.check_result(self.planned, values)
        self._hand(stop, destination)


class _NonFiniteGuard:
    """The non-finite policy, applied to each call's inputs and its result.

    The common case costs one sum per converted input, on the thread that converted it
    while it is in that core's cache, and one over the result (a sum is finite exactly
    when every entry is, barring overflow); only a non-finite sum leads
    to counting entry by entry, in the input tensors as stored. For methods that
    propagate NaN/Inf (``MethodSpec.propagates_nonfinite``) a finite result proves the
    inputs finite, so only the result is summed."""

    def __init__(self, plan: MergePlan, allow: bool, events: EventSink | None) -> None:
        self.plan = plan
        self.allow = allow
        self.events = events
        # A post-process (SVC's SVD) fails on NaN rather than passing it on: scan inputs.
        self.result_proves_inputs = plan.method.propagates_nonfinite and plan.recipe.post_process is None
        self._tainted: set[str] = set()  # outputs whose inputs hold NaN/Inf (allowed)

    def wants_input_scan(self, planned: PlannedTensor) -> bool:
        """Whether a call's converted inputs should be summed (see the class doc)."""
        return not self.result_proves_inputs and planned.name not in self._tainted

    def inputs_not_finite(self, planned: PlannedTensor) -> None:
        """A call's converted inputs did not sum to a finite value: find out which."""
        self._find_in_inputs(planned)

    def check_result(self, planned: PlannedTensor, result: torch.Tensor) -> None:
        if planned.name in self._tainted or _all_finite(result):
            return
        if self.result_proves_inputs and self._find_in_inputs(planned):
            return
        count = _nonfinite_count(result)
        if count == 0:
            return
        compute = result.dtype
        cause = (
            f"values overflow {str(compute).removeprefix('torch.')}: try --compute-dtype float32"
            if str(compute) in _NARROW_RANGE
            else "check the method's parameters (weights that cancel out, a scale that is too large)"
        )
        raise MergeError(
            f"{planned.name}: {self.plan.method.name} produced {count} NaN/Inf value(s) from finite "
            f"inputs; nothing was written ({cause})"
        )

    def _find_in_inputs(self, planned: PlannedTensor) -> bool:
        """Count NaN/Inf in each stored input of ``planned``: raise MergeError naming the
        first model and tensor that holds some, or (allowed) warn and return True."""
        found = False
        for tensor_input in planned.all_inputs():
            stored = self.plan.sources[tensor_input.model].read(tensor_input.tensor)
            count = _nonfinite_count(stored)
            if count == 0:
                continue
            message = (
                f"{tensor_input.model}: tensor {tensor_input.tensor!r} holds {count} NaN/Inf "
                f"value(s) out of {stored.numel()}"
            )
            if not self.allow:
                raise MergeError(
                    f"{message}; nothing was written. Pass --allow-nonfinite (Python: "
                    "allow_nonfinite=True) to merge anyway, with them in the output"
                )
            log(self.events, f"{message}; merged anyway (--allow-nonfinite)", "warning")
            self._tainted.add(planned.name)
            found = True
        return found


def _all_finite(tensor: torch.Tensor) -> bool:
    """True when every entry is finite (False can also mean the sum overflowed: callers
    count entry by entry before they conclude anything)."""
    import torch

    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if tensor.dtype in (torch.float32, torch.float64):
        return bool(torch.isfinite(tensor.sum()))  # a dtype argument costs ~25 % more here
    # Half types: accumulate in float32, where a sum of finite values does not overflow.
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32)))


def _nonfinite_count(tensor: torch.Tensor) -> int:
    import torch

    if not tensor.is_floating_point():
        return 0
    return int(tensor.numel() - torch.isfinite(tensor).sum())


class TensorMerge:
    """The executor's merge of one planned tensor, for engines built on it (adapter
    outputs): reading, conversion, the method and its plug-in, the NaN/Inf policy, and
    the seeded generator, exactly as ``execute_plan`` runs them. No row chunking."""

    def __init__(
        self,
        plan: MergePlan,
        device: torch.device,
        *,
        compute_dtype: str = "float32",
        allow_nonfinite: bool = False,
        events: EventSink | None = None,
    ) -> None:
        guard = _NonFiniteGuard(plan, allow_nonfinite, events)
        self._merger = _TensorMerger(plan, device, to_torch(dtype_code(compute_dtype)), 1 << 62, guard)

    def merge(self, planned: PlannedTensor) -> torch.Tensor:
        """The merged tensor on the CPU in ``planned.out_dtype``, shape ``planned.shape``."""
        merged = self._merger.merge(planned)
        assert merged is not None  # this merger has no target to hand parts to
        return merged

    def generator(self, planned: PlannedTensor) -> torch.Generator:
        """The generator a stochastic method gets for this tensor (seed and name)."""
        return self._merger._generator(planned)
