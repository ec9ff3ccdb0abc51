"""Building a mixture-of-experts model folder: plan (every check), router rows, then the
tensors streamed one at a time into shards in a staging folder that is moved into place
only when complete — the merge's writer and staging, with a plan of copies."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.io.model_folder import (
    GENERATION_FILES,
    TOKENIZER_FILES,
    copy_side_files,
    remove_stale_leftovers,
    staged_folder,
)
from mergestudio.io.shards import ShardWriter, TensorSlot, layout_shards
from mergestudio.moe.card import moe_card
from mergestudio.moe.config import MoEConfig
from mergestudio.moe.gates import GateRows, compute_gate_rows
from mergestudio.moe.plan import MoEPlan, MoETensor, plan_moe

if TYPE_CHECKING:
    import torch

DEFAULT_SHARD_BYTES = 5 * 1000**3


@dataclass(frozen=True)
class MoEResult:
    output: Path
    tensors: int
    shards: int
    bytes_read: int
    bytes_written: int
    gate_seconds: float
    write_seconds: float
    warnings: tuple[str, ...]


def build_moe(
    config: MoEConfig | str | Path | dict[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    shard_size: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    allow_pickle: bool = False,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> MoEResult:
    """Build the MoE model ``config`` describes into a Hugging Face folder at ``out_dir``.

    Nothing appears at ``out_dir`` unless the build completes; every check of
    ``plan_moe`` passes before the router rows are computed or a folder is made.
    ``seed`` seeds random gates and expert noise."""
    from mergestudio.engine.device import resolve_device

    plan = plan_moe(config, out_dir, overwrite=overwrite, allow_pickle=allow_pickle)
    try:
        for warning in plan.warnings:
            log(events, warning, "warning")
        started = time.perf_counter()
        rows = compute_gate_rows(plan, seed=seed, device=str(resolve_device(device)), events=events, cancel=cancel)
        gate_seconds = time.perf_counter() - started
        target = Path(out_dir)
        for leftover in remove_stale_leftovers(target.parent):
            log(events, f"removed {leftover.path.name}, left by an interrupted run", "warning")
        started = time.perf_counter()
        shards = _write(plan, rows, target, seed, shard_size, overwrite, events, cancel)
        log(events, f"wrote {target} ({shards} shard(s))")
        return MoEResult(
            target,
            len(plan.tensors),
            shards,
            plan.bytes_to_read,
            plan.bytes_to_write,
            gate_seconds,
            time.perf_counter() - started,
            tuple(plan.warnings),
        )
    finally:
        plan.close()


def _write(
    plan: MoEPlan,
    rows: GateRows,
    target: Path,
    seed: int,
    shard_size: int,
    overwrite: bool,
    events: EventSink | None,
    cancel: CancelToken | None,
) -> int:
    shards = layout_shards([TensorSlot(t.name, t.out_dtype, t.shape) for t in plan.tensors], shard_size)
    reporter = ProgressReporter(events, "moe", len(plan.tensors), plan.bytes_to_write)
    reporter.start()
    with staged_folder(target, overwrite) as staging:
        writer = ShardWriter(staging, shards)
        try:
            for index, planned in enumerate(plan.tensors):
                check_cancel(cancel)
                _prefetch(plan, index + 1)
                writer.accept(planned.name, _produce(plan, planned, rows, seed, writer))
                reporter.advance(nbytes=planned.nbytes, current=planned.name)
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        _write_side_files(plan, staging)
    return len(shards)


def _prefetch(plan: MoEPlan, index: int) -> None:
    if index < len(plan.tensors):
        upcoming = plan.tensors[index]
        if upcoming.model is not None and upcoming.source_name is not None:
            plan.sources[upcoming.model].prefetch(upcoming.source_name)


def _produce(plan: MoEPlan, planned: MoETensor, rows: GateRows, seed: int, writer: ShardWriter) -> torch.Tensor:
    """The output tensor: a router block, or a source tensor converted to the output
    dtype (with the expert's noise and residual scale, in float32, when it has them)."""
    import torch

    from mergestudio.io.dtypes import to_torch

    dtype = to_torch(planned.out_dtype)
    if planned.router is not None:
        assert planned.layer is not None
        block = rows.experts if planned.router == "experts" else rows.shared
        assert block is not None  # the plan has a shared gate only where rows were made
        return block[planned.layer].to(dtype)
    assert planned.model is not None and planned.source_name is not None
    tensor = plan.sources[planned.model].read(planned.source_name)
    if planned.noise_scale or planned.scale is not None:
        tensor = tensor.float()
        if planned.noise_scale:
            generator = torch.Generator().manual_seed(seed ^ zlib.crc32(planned.name.encode()))
            tensor = tensor + torch.randn(tensor.shape, generator=generator) * planned.noise_scale
        if planned.scale is not None:
            tensor = tensor * planned.scale
    if tensor.dtype == dtype:
        return tensor  # the writer keeps a reference to the read-only view until written
    out = writer.output_buffer(tuple(tensor.shape), dtype)
    out.copy_(tensor)
    return out


def _write_side_files(plan: MoEPlan, folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps(plan.output_config, indent=2) + "\n")
    copy_side_files(plan.base.root, folder, TOKENIZER_FILES)
    copy_side_files(plan.base.root, folder, GENERATION_FILES)
    (folder / "README.md").write_text(moe_card(plan))
