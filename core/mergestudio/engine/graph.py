"""Running a multi-stage recipe (``recipe.multi``): plan every stage before reading any
tensor, then run them in order, each stage's output kept in memory and read by the
stages that name it, unless intermediates are written to folders.

A stage's output appears to later stages as a ``ModelSource`` whose tensor metadata
comes from the stage's plan (so shapes and architectures are checked across the whole
graph at planning time) and whose data is filled in when the stage has run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mergestudio.engine.checks import check_folder_output, check_output_path, check_run_options
from mergestudio.engine.execute import ExecutionStats, execute_plan
from mergestudio.engine.merge import (
    DEFAULT_SHARD_BYTES,
    _dominant_out_dtype,
    _merge_plan,
    _Run,
    check_memory,
)
from mergestudio.engine.plan import MergePlan, PlanEstimate, build_plan
from mergestudio.engine.targets import DictTarget
from mergestudio.errors import MergeStudioError, RecipeError
from mergestudio.events import CancelToken, EventSink, check_cancel, log
from mergestudio.io.dtypes import torch_dtype_name
from mergestudio.io.model_folder import merged_config
from mergestudio.io.safetensors_file import TensorInfo
from mergestudio.io.sources import ModelSource, open_model
from mergestudio.recipe.multi import MultiRecipe, Stage


@dataclass
class StagedPlan:
    stage: Stage
    plan: MergePlan
    output: ModelSource  # what later stages read; data filled in once the stage has run


@dataclass
class MultiResult:
    output: Path
    stages: list[tuple[str, ExecutionStats | None]] = field(default_factory=list)
    intermediates: dict[str, Path] = field(default_factory=dict)


def plan_stages(
    multi: MultiRecipe,
    *,
    allow_pickle: bool = False,
    sources: Mapping[str, ModelSource] | None = None,
) -> list[StagedPlan]:
    """Validate and plan every stage (metadata only). A problem in any stage raises before
    anything is read, its message naming the stage. ``sources``: models already open, by
    reference (the window's models, a search's from candidate to candidate)."""
    staged: list[StagedPlan] = []
    outputs: dict[str, ModelSource] = {}
    known = dict(sources or {})
    try:
        for stage in multi.stages:
            if stage.recipe.writes_adapter:
                raise RecipeError(
                    f"stage {stage.name!r}: output.format adapter is for one-stage recipes; "
                    "a multi-stage recipe writes a model"
                )
            given = {r: known[r] for r in stage.recipe.referenced_models() if r in known}
            given.update({name: outputs[name] for name in stage.needs})
            try:
                plan = build_plan(stage.recipe, sources=given, allow_pickle=allow_pickle)
            except MergeStudioError as error:
                raise type(error)(f"stage {stage.name!r}: {error}") from error
            outputs[stage.name] = stage_output_source(stage.name, plan)
            staged.append(StagedPlan(stage, plan, outputs[stage.name]))
    except BaseException:
        close_stages(staged)
        raise
    return staged


def stage_output_source(name: str, plan: MergePlan) -> ModelSource:
    """A source standing for ``plan``'s output before it exists: tensor names, shapes and
    dtypes from the plan, the config the output folder would get, the tokenizer's folder."""
    tensors = {
        p.name: TensorInfo(p.name, p.out_dtype, tuple(p.shape), Path(), 0, p.out_bytes) for p in plan.tensors
    }
    config_source = plan.sources[plan.config_model]
    layers = plan.output_layers if plan.output_layers else None
    config = merged_config(config_source.config, torch_dtype_name(_dominant_out_dtype(plan)), layers)
    return ModelSource(name, _tokenizer_root(plan), tensors, config, (), _loaded={})


def _tokenizer_root(plan: MergePlan) -> Path:
    """The folder whose tokenizer files the stage's output would get. (Tokens a union
    vocabulary adds and a new chat template exist only in a written folder: a later stage
    that needs them should run with ``keep_intermediates``.)"""
    files_from = plan.vocab.files_from if plan.vocab is not None else plan.config_model
    return plan.sources[files_from].root


def estimate_stages(staged: list[StagedPlan]) -> PlanEstimate:
    """The dry run's numbers for the whole graph: tensors and bytes read summed over the
    stages, the final stage's output, the largest stage's peak plus the intermediates
    held in memory while it runs (an upper bound)."""
    estimates = [item.plan.estimate() for item in staged]
    largest = max(estimates, key=lambda e: e.peak_memory_bytes)
    return PlanEstimate(
        sum(e.tensor_count for e in estimates),
        sum(e.bytes_to_read for e in estimates),
        estimates[-1].output_bytes,
        largest.peak_memory_bytes + intermediate_peak_bytes(staged),
        largest.largest_tensor,
    )


def close_stages(staged: list[StagedPlan]) -> None:
    for item in staged:
        item.plan.close()
        item.output.close()


def merge_multi(
    multi: MultiRecipe,
    out_dir: str | Path,
    *,
    keep_intermediates: str | Path | None = None,
    memory_limit: int | None = None,
    device: str = "auto",
    compute_dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    allow_pickle: bool = False,
    allow_no_config: bool = False,
    allow_nonfinite: bool = False,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    threads: int | None = None,
    max_memory: int | None = None,
    chunk_bytes: int | None = None,
) -> MultiResult:
    """Run every stage; the final one is written to ``out_dir`` as ``merge`` would.

    Intermediate outputs stay in memory (freed once no later stage needs them) unless
    ``keep_intermediates`` names a folder: then each is written to ``<folder>/<stage>``
    and later stages read it from there, exactly as if run one by one. When the
    intermediates held in memory at once would exceed ``memory_limit`` bytes (default:
    half the memory available now), they go to a temporary folder beside ``out_dir``
    instead, removed at the end. Either way the result is bit-identical.

    ``max_memory`` and ``chunk_bytes`` apply to every stage as ``merge`` applies them
    (each stage's plan is checked against the cap before anything is written); under a
    cap, intermediates go to a folder (``keep_intermediates`` or a temporary one), since
    an intermediate held in memory is as large as a model.
    """
    check_run_options(device, compute_dtype, threads, shard_size)
    check_output_path(Path(out_dir), overwrite)
    staged = plan_stages(multi, allow_pickle=allow_pickle)
    result = MultiResult(Path(out_dir))
    run = _Run(device, compute_dtype, shard_size, threads, allow_nonfinite)
    spill: tempfile.TemporaryDirectory[str] | None = None
    try:
        steps = stage_steps(staged, max_memory, chunk_bytes, compute_dtype)
        folder_for = keep_intermediates
        if folder_for is None and max_memory is not None and len(staged) > 1:
            Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
            spill = tempfile.TemporaryDirectory(prefix=".mergestudio-stages-", dir=Path(out_dir).parent)
            folder_for = spill.name
            log(events, f"max_memory: intermediate stages are written to {folder_for} (removed at the end)")
        elif folder_for is None:
            peak, limit = intermediate_peak_bytes(staged), _memory_limit(memory_limit)
            if peak > limit:
                Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
                spill = tempfile.TemporaryDirectory(prefix=".mergestudio-stages-", dir=Path(out_dir).parent)
                folder_for = spill.name
                log(
                    events,
                    f"intermediate stages would hold {peak / 1e9:.2f} GB in memory at once, over the "
                    f"{limit / 1e9:.2f} GB limit: writing them to {folder_for} (removed at the end)",
                    "warning",
                )
        for item in staged:
            if item is staged[-1] or folder_for is not None:
                check_folder_output(item.plan, allow_no_config=allow_no_config)
        for index, item in enumerate(staged):
            check_cancel(cancel)
            log(events, f"stage {index + 1}/{len(staged)}: {item.stage.name} ({item.plan.method.name})")
            for warning in item.plan.warnings:
                log(events, f"stage {item.stage.name!r}: {warning}", "warning")
            is_final = index == len(staged) - 1
            if is_final or folder_for is not None:
                folder = Path(out_dir) if is_final else Path(folder_for or ".") / item.stage.name
                stage_run = replace(run, chunk_bytes=steps[index])
                merged = _merge_plan(item.plan, folder, stage_run, overwrite, events, cancel, None)
                result.stages.append((item.stage.name, merged.stats))
                if not is_final:
                    if spill is None:
                        result.intermediates[item.stage.name] = folder
                    _read_from_folder(item.output, folder)
            else:
                stats = run_stage_in_memory(
                    item,
                    device=device,
                    compute_dtype=compute_dtype,
                    threads=threads,
                    allow_nonfinite=allow_nonfinite,
                    events=events,
                    cancel=cancel,
                    chunk_bytes=steps[index],
                )
                result.stages.append((item.stage.name, stats))
            _release_finished(staged, index)
    finally:
        close_stages(staged)
        if spill is not None:
            spill.cleanup()
    return result


def run_stage_in_memory(
    item: StagedPlan,
    *,
    device: str = "auto",
    compute_dtype: str = "float32",
    threads: int | None = None,
    allow_nonfinite: bool = False,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    chunk_bytes: int | None = None,
) -> ExecutionStats:
    """Merge one stage into memory; later stages read it through ``item.output``."""
    target = DictTarget()
    stats = execute_plan(
        item.plan,
        target,
        device=device,
        compute_dtype=compute_dtype,
        events=events,
        cancel=cancel,
        threads=threads,
        allow_nonfinite=allow_nonfinite,
        chunk_bytes=chunk_bytes,
    )
    item.output._loaded = target.tensors
    return stats


def stage_steps(
    staged: list[StagedPlan], max_memory: int | None, chunk_bytes: int | None, compute_dtype: str = "float32"
) -> list[int | None]:
    """Each stage's step size (``execute_plan``'s ``chunk_bytes``): ``chunk_bytes`` when
    given, else what ``max_memory`` leaves the stage (None: the defaults). PlanError
    naming the stage when one cannot fit under the cap, before anything is read."""
    steps: list[int | None] = []
    for item in staged:
        capped = None
        if max_memory is not None:
            try:
                capped = check_memory(item.plan, max_memory, compute_dtype)
            except MergeStudioError as error:
                raise type(error)(f"stage {item.stage.name!r}: {error}") from error
        steps.append(chunk_bytes or capped)
    return steps


def intermediate_peak_bytes(staged: list[StagedPlan]) -> int:
    """The most bytes of intermediate outputs held in memory at once when every stage
    but the final one stays in memory: while stage i runs, its own output and every
    earlier output a stage from i on still reads."""
    peak = 0
    for index, item in enumerate(staged[:-1]):
        later = {name for other in staged[index:] for name in other.stage.needs}
        alive = [s for s in staged[:index] if s.stage.name in later] + [item]
        peak = max(peak, sum(p.out_bytes for s in alive for p in s.plan.tensors))
    return peak


def _memory_limit(limit: int | None) -> int:
    """``limit``, else half the memory available now: the merge of each stage needs the rest."""
    if limit is not None:
        return limit
    import psutil

    return int(psutil.virtual_memory().available) // 2


def _read_from_folder(output: ModelSource, folder: Path) -> None:
    """Point ``output`` at the written folder's files (same names, shapes and dtypes)."""
    written = open_model(str(folder))
    output.tensors.clear()
    output.tensors.update(written.tensors)
    output.root, output.files, output._mapped, output._loaded = folder, written.files, written._mapped, None


def _release_finished(staged: list[StagedPlan], done: int) -> None:
    """Free in-memory outputs no stage after ``done`` reads."""
    later = {name for item in staged[done + 1 :] for name in item.stage.needs}
    for item in staged[: done + 1]:
        if item.stage.name not in later and item.output._loaded:
            item.output._loaded = {}
