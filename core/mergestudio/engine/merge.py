"""Merging to a model folder: plan, stream into shards in a staging folder, add config,
tokenizer and model card, and move the finished folder into place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergestudio.engine.card import model_card
from mergestudio.engine.checks import check_folder_output, check_output_path, check_run_options
from mergestudio.engine.execute import ExecutionStats, execute_plan
from mergestudio.engine.memory import compute_item_bytes, memory_verdict
from mergestudio.engine.plan import MergePlan, build_plan
from mergestudio.errors import PlanError, RecipeError
from mergestudio.events import CancelToken, EventSink, log
from mergestudio.io.dtypes import torch_dtype_name
from mergestudio.io.hub import hub_transfer
from mergestudio.io.model_folder import (
    GENERATION_FILES,
    TOKENIZER_FILES,
    copy_side_files,
    remove_stale_leftovers,
    staged_folder,
    write_config,
)
from mergestudio.io.shards import ShardWriter, TensorSlot, layout_shards
from mergestudio.recipe.model import Recipe
from mergestudio.vocab.write import add_union_tokens, set_vocab_size, write_chat_template

DEFAULT_SHARD_BYTES = 5 * 1000**3


@dataclass(frozen=True)
class MergeResult:
    output: Path
    stats: ExecutionStats
    shards: int
    warnings: tuple[str, ...]


def load_recipe(recipe: Recipe | str | Path | dict[str, Any]) -> Recipe:
    """A Recipe from a Recipe, a path to YAML, a YAML string, or a dict."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    text = str(recipe)
    if "\n" not in text and (text.endswith((".yml", ".yaml")) or Path(text).is_file()):
        return Recipe.load(text)
    return Recipe.from_yaml(text)


def plan_folder_merge(
    recipe: Recipe | str | Path | dict[str, Any],
    out_dir: str | Path | None,
    *,
    device: str = "auto",
    compute_dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_BYTES,
    threads: int | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
    allow_no_config: bool = False,
) -> MergePlan:
    """Every check a merge into a folder makes before it reads a tensor or creates a
    folder: the arguments, the output path (skipped when ``out_dir`` is None), the
    recipe against the models' headers, and a config source for a loadable folder.
    The dry run is this function; the caller closes the plan. A recipe whose
    ``output.format`` is ``adapter`` gets the adapter output's checks instead (every
    input an adapter of one base)."""
    check_run_options(device, compute_dtype, threads, shard_size)
    if out_dir is not None:
        check_output_path(Path(out_dir), overwrite)
    plan = build_plan(load_recipe(recipe), allow_pickle=allow_pickle)
    try:
        if not plan.recipe.writes_adapter:  # an adapter's inputs were checked by build_plan
            check_folder_output(plan, allow_no_config=allow_no_config)
    except BaseException:
        plan.close()
        raise
    return plan


def merge(
    recipe: Recipe | str | Path | dict[str, Any],
    out_dir: str | Path,
    *,
    device: str = "auto",
    compute_dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    allow_pickle: bool = False,
    allow_no_config: bool = False,
    allow_nonfinite: bool = False,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    card_extra: dict[str, Any] | None = None,
    threads: int | None = None,
    max_memory: int | None = None,
    chunk_bytes: int | None = None,
) -> MergeResult:
    """Merge ``recipe`` into a Hugging Face folder at ``out_dir``.

    Nothing appears at ``out_dir`` unless the merge completes: work happens in a hidden
    staging folder beside it, created only once every check of ``plan_folder_merge``
    passed. An existing non-empty ``out_dir`` is an error unless ``overwrite``. NaN or
    Inf in an input is an error unless ``allow_nonfinite``; a method that makes them
    from finite inputs always is. A recipe with ``output.format: adapter`` is merged by
    ``merge_to_adapter`` (``mergestudio.lora.merge``), not here.

    ``max_memory``: bytes the merge may use; a plan whose estimate does not fit is refused
    (PlanError) before anything is written, and the step size follows the cap.
    ``chunk_bytes``: the step size itself (``execute_plan``), overriding the cap's.
    The output does not depend on either.
    """
    if load_recipe(recipe).writes_adapter:
        raise RecipeError(
            "output.format is adapter: this recipe writes a LoRA adapter; run it with "
            "`mergestudio merge` or mergestudio.lora.merge.merge_to_adapter"
        )
    with hub_transfer(events, cancel):  # Hub models download with progress and cancel
        plan = plan_folder_merge(
            recipe,
            out_dir,
            device=device,
            compute_dtype=compute_dtype,
            shard_size=shard_size,
            threads=threads,
            overwrite=overwrite,
            allow_pickle=allow_pickle,
            allow_no_config=allow_no_config,
        )
    try:
        for warning in plan.warnings:
            log(events, warning, "warning")
        capped = check_memory(plan, max_memory, compute_dtype) if max_memory else None
        steps = chunk_bytes or capped
        target = Path(out_dir)
        _remove_stale_staging(target.parent, events)
        run = _Run(device, compute_dtype, shard_size, threads, allow_nonfinite, steps)
        return _merge_plan(plan, target, run, overwrite, events, cancel, card_extra)
    finally:
        plan.close()


@dataclass(frozen=True)
class _Run:
    device: str
    compute_dtype: str
    shard_size: int
    threads: int | None
    allow_nonfinite: bool
    chunk_bytes: int | None = None


def check_memory(plan: MergePlan, max_memory: int, compute_dtype: str = "float32") -> int:
    """The step size that keeps ``plan`` within ``max_memory`` bytes; PlanError saying
    what the merge needs and what would make it fit when even the smallest steps would
    not fit (``memory_verdict``)."""
    verdict = memory_verdict(plan, max_memory, compute_dtype)
    if not verdict.fits:
        raise PlanError(verdict.refusal())
    return plan.chunk_bytes_for(max_memory, compute_item_bytes(compute_dtype))


def _remove_stale_staging(parent: Path, events: EventSink | None) -> None:
    for leftover in remove_stale_leftovers(parent):
        log(
            events,
            f"removed {leftover.path.name}, left in {parent} by an interrupted merge "
            f"(process {leftover.pid}, no longer running)",
            "warning",
        )


def _merge_plan(
    plan: MergePlan,
    target: Path,
    run: _Run,
    overwrite: bool,
    events: EventSink | None,
    cancel: CancelToken | None,
    card_extra: dict[str, Any] | None,
) -> MergeResult:
    slots = [TensorSlot(p.name, p.out_dtype, p.shape) for p in plan.tensors]
    stem = plan.sources[plan.config_model].layout.family.weights_stem
    shards = layout_shards(slots, run.shard_size, stem)
    with staged_folder(target, overwrite) as staging:
        writer = ShardWriter(staging, shards)
        try:
            stats = execute_plan(
                plan,
                writer,
                device=run.device,
                compute_dtype=run.compute_dtype,
                events=events,
                cancel=cancel,
                threads=run.threads,
                allow_nonfinite=run.allow_nonfinite,
                chunk_bytes=run.chunk_bytes,
            )
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        _write_side_files(plan, staging, card_extra)
    log(events, f"wrote {target} ({len(shards)} shard(s))")
    return MergeResult(target, stats, len(shards), tuple(plan.warnings))


def _write_side_files(plan: MergePlan, folder: Path, card_extra: dict[str, Any] | None) -> None:
    config_source = plan.sources[plan.config_model]
    out_dtype = _dominant_out_dtype(plan)
    layers = plan.output_layers if plan.output_layers else None
    write_config(folder, config_source.config, torch_dtype_name(out_dtype), layers)
    _write_tokenizer(plan, folder)
    copy_side_files(config_source.root, folder, GENERATION_FILES)
    (folder / "README.md").write_text(model_card(plan, card_extra))


def _dominant_out_dtype(plan: MergePlan) -> str:
    counts: dict[str, int] = {}
    for planned in plan.tensors:
        counts[planned.out_dtype] = counts.get(planned.out_dtype, 0) + planned.numel
    return max(counts, key=lambda code: counts[code])


def _write_tokenizer(plan: MergePlan, folder: Path) -> None:
    """The tokenizer files of the source the plan chose (checked already), the tokens a
    union adds, the chat template, and the output's vocab_size."""
    vocab = plan.vocab
    files_from = vocab.files_from if vocab is not None else plan.config_model
    copy_side_files(plan.sources[files_from].root, folder, TOKENIZER_FILES)
    if vocab is not None:
        add_union_tokens(vocab, folder)
        set_vocab_size(folder, vocab.rows)
    if plan.chat_template is not None:
        write_chat_template(folder, plan.chat_template)
