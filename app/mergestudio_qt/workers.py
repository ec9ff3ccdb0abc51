"""The studio's jobs: open or download a model, dry-run and run a merge, evaluate,
probe the device, sign in to the Hub. Each calls the engine and returns plain data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import SourceError
from mergestudio.io.hub import hub_transfer

from mergestudio_qt.jobs import Job
from mergestudio_qt.state import ModelEntry, describe_source

if TYPE_CHECKING:
    from mergestudio.engine.estimate import TimeEstimate
    from mergestudio.engine.execute import ExecutionStats
    from mergestudio.engine.graph import StagedPlan
    from mergestudio.engine.memory import MemoryVerdict
    from mergestudio.engine.plan import MergePlan
    from mergestudio.evaluate import EvalReport
    from mergestudio.evaluate.normalized import Comparison


# ---- models -------------------------------------------------------------------------------


def open_entry(reference: str, cache_dir: str | None = None) -> ModelEntry:
    """Open a local model or download a Hub one into the studio's Hub cache (``io.hub``;
    ``cache_dir`` is the Settings cache folder), and describe it (headers only). Download
    progress and cancel come from the caller's ``hub_transfer`` scope."""
    from mergestudio.io.hub import download_snapshot
    from mergestudio.io.sources import is_hub_reference, open_model

    path = Path(reference).expanduser()
    if path.exists():
        kind = "file" if path.is_file() else "folder"
        return describe_source(open_model(path), str(path), kind)
    if not is_hub_reference(reference):
        raise SourceError(f"{reference}: no such file or folder, and not a Hub id (org/name[@revision])")
    repo_id, _, revision = reference.partition("@")
    folder, commit = download_snapshot(repo_id, revision or None, cache_dir=cache_dir)
    source = open_model(folder)
    source.revision = commit
    return describe_source(source, reference, "hub")


class OpenModelJob(Job):
    """Open (or download, then open) one model."""

    def __init__(self, reference: str, cache_dir: str | None = None) -> None:
        super().__init__()
        self.reference = reference
        self.cache_dir = cache_dir

    def work(self) -> ModelEntry:
        with hub_transfer(self.events, self.cancel_token):
            return open_entry(self.reference, self.cache_dir)


@dataclass(frozen=True)
class OpenedModels:
    entries: list[ModelEntry]
    errors: list[str]


class OpenModelsJob(Job):
    """Open several models (a project's); failures are collected, not fatal."""

    def __init__(self, references: Sequence[str], cache_dir: str | None = None) -> None:
        super().__init__()
        self.references = list(references)
        self.cache_dir = cache_dir

    def work(self) -> OpenedModels:
        entries, errors = [], []
        for reference in self.references:
            self.cancel_token.raise_if_cancelled()
            try:
                with hub_transfer(self.events, self.cancel_token):
                    entries.append(open_entry(reference, self.cache_dir))
            except SourceError as error:
                errors.append(str(error))
        return OpenedModels(entries, errors)


# ---- merging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    tensors: int
    bytes_to_read: int
    output_bytes: int
    peak_memory_bytes: int
    largest_tensor: str
    warnings: list[str]
    sources: list[dict[str, Any]]
    vocabulary: list[str]  # the tokenizer source's plan, one line per model; empty when none
    time: TimeEstimate  # read, compute, write on this machine (engine/estimate.py)
    memory: MemoryVerdict  # the peak under the Merge page's memory cap, and whether it fits


@dataclass(frozen=True)
class MemoryLimits:
    """What the engine's memory estimate depends on: the cap (None: none) and the dtype
    the tensor math runs in (Settings)."""

    max_memory: int | None = None
    compute_dtype: str = "float32"


class DryRunJob(Job):
    """Every check a merge makes before it writes, and the estimate: of one recipe, or
    of every stage of a multi-stage one (a list of stage recipes)."""

    def __init__(self, recipe: dict[str, Any] | list[dict[str, Any]], limits: MemoryLimits | None = None) -> None:
        super().__init__()
        self.recipe = recipe
        self.limits = limits or MemoryLimits()

    def work(self) -> DryRun:
        from mergestudio.engine.estimate import estimate_time
        from mergestudio.engine.memory import memory_verdict
        from mergestudio.engine.plan import describe_sources

        if isinstance(self.recipe, list):
            return self._stages(self.recipe)
        plan = _plan_one(self.recipe, self)
        try:
            estimate = plan.estimate()
            memory = memory_verdict(plan, self.limits.max_memory, self.limits.compute_dtype)
            return DryRun(
                estimate.tensor_count,
                estimate.bytes_to_read,
                estimate.output_bytes,
                memory.peak_bytes,
                estimate.largest_tensor,
                list(plan.warnings),
                describe_sources(plan),
                _vocabulary_lines(plan),
                estimate_time(plan),
                memory,
            )
        finally:
            plan.close()

    def _stages(self, stages: list[dict[str, Any]]) -> DryRun:
        from mergestudio.engine.estimate import combined, estimate_time
        from mergestudio.engine.graph import close_stages, estimate_stages
        from mergestudio.engine.plan import describe_sources

        staged = _plan_stages(stages)
        try:
            estimate = estimate_stages(staged)
            final = staged[-1].plan
            memory = _stages_verdict(staged, self.limits)
            return DryRun(
                estimate.tensor_count,
                estimate.bytes_to_read,
                estimate.output_bytes,
                memory.peak_bytes,
                estimate.largest_tensor,
                [f"stage {item.stage.name!r}: {w}" for item in staged for w in item.plan.warnings],
                describe_sources(final),
                _vocabulary_lines(final),
                # Intermediates stay in memory: only the last stage writes.
                combined([estimate_time(item.plan, write=item is staged[-1]) for item in staged]),
                memory,
            )
        finally:
            close_stages(staged)


class MemoryCheckJob(Job):
    """The engine's memory verdict on a recipe (or a list of stage recipes) under a cap:
    the Merge page's answer to "will this fit?" before anything runs. Plans from the
    models' headers as the dry run does, without its time calibration."""

    def __init__(self, recipe: dict[str, Any] | list[dict[str, Any]], limits: MemoryLimits) -> None:
        super().__init__()
        self.recipe = recipe
        self.limits = limits

    def work(self) -> MemoryVerdict:
        from mergestudio.engine.graph import close_stages
        from mergestudio.engine.memory import memory_verdict

        if isinstance(self.recipe, list):
            staged = _plan_stages(self.recipe)
            try:
                return _stages_verdict(staged, self.limits)
            finally:
                close_stages(staged)
        plan = _plan_one(self.recipe, self)
        try:
            return memory_verdict(plan, self.limits.max_memory, self.limits.compute_dtype)
        finally:
            plan.close()


def _plan_one(recipe: dict[str, Any], job: Job) -> MergePlan:
    """Every check a merge of ``recipe`` makes before it writes (Hub models: with the
    job's progress and cancel); the caller closes the plan."""
    from mergestudio.engine.merge import plan_folder_merge

    with hub_transfer(job.events, job.cancel_token):
        return plan_folder_merge(recipe, None)


def _plan_stages(stages: list[dict[str, Any]]) -> list[StagedPlan]:
    """Every stage planned, and the final one checked as a folder output; the caller
    closes them (``close_stages``)."""
    from mergestudio.engine.checks import check_folder_output
    from mergestudio.engine.graph import close_stages, plan_stages
    from mergestudio.recipe.multi import parse_multi

    staged = plan_stages(parse_multi(_yaml_documents(stages)))
    try:
        check_folder_output(staged[-1].plan)
    except BaseException:
        close_stages(staged)
        raise
    return staged


def _stages_verdict(staged: list[StagedPlan], limits: MemoryLimits) -> MemoryVerdict:
    """The stage that decides whether a multi-stage merge fits (they run one by one)."""
    from mergestudio.engine.memory import memory_verdict, worst_verdict

    return worst_verdict([memory_verdict(item.plan, limits.max_memory, limits.compute_dtype, item.stage.name)
                          for item in staged])


def _yaml_documents(stages: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(stages, sort_keys=False)


def _vocabulary_lines(plan: Any) -> list[str]:
    vocab = plan.vocab
    if vocab is None:
        return []
    lines = [f"vocabulary: {vocab.source}, {len(vocab.vocab)} tokens, {vocab.rows} embedding rows"]
    lines += [f"{model}: {note}" for model, note in vocab.notes.items()]
    return lines


@dataclass(frozen=True)
class MergeOptions:
    out_dir: str
    device: str = "auto"
    compute_dtype: str = "float32"
    shard_bytes: int = 2_000_000_000
    overwrite: bool = False
    threads: int | None = None
    max_memory: int | None = None  # bytes; a merge that cannot fit is refused before writing


@dataclass(frozen=True)
class MergeDone:
    """What the Merge page shows of a finished merge, whichever kind it was."""

    output: Path
    stats: ExecutionStats


class MergeJob(Job):
    """Run a merge: one recipe into a model folder, a recipe whose ``output.format`` is
    ``adapter`` into a PEFT folder, or a multi-stage recipe (a list of stages). A
    cancelled merge leaves nothing at ``out_dir`` (the engine stages into a hidden
    folder and renames only when complete)."""

    def __init__(self, recipe: dict[str, Any] | list[dict[str, Any]], options: MergeOptions) -> None:
        super().__init__()
        self.recipe = recipe
        self.options = options

    def work(self) -> Any:
        from mergestudio.engine import merge
        from mergestudio.engine.merge import load_recipe

        options = self.options
        if isinstance(self.recipe, list):
            return self._stages(self.recipe)
        recipe = load_recipe(self.recipe)
        if recipe.writes_adapter:
            return self._adapter(recipe)
        return merge(recipe, options.out_dir, **self._engine_options())

    def _engine_options(self) -> dict[str, Any]:
        """The Merge page's settings as the engine's merge functions take them."""
        options = self.options
        return {
            "device": options.device,
            "compute_dtype": options.compute_dtype,
            "shard_size": options.shard_bytes,
            "overwrite": options.overwrite,
            "events": self.events,
            "cancel": self.cancel_token,
            "threads": options.threads,
            "max_memory": options.max_memory,
        }

    def _stages(self, stages: list[dict[str, Any]]) -> MergeDone:
        from mergestudio.engine.execute import ExecutionStats
        from mergestudio.engine.graph import merge_multi
        from mergestudio.recipe.multi import parse_multi

        result = merge_multi(parse_multi(_yaml_documents(stages)), self.options.out_dir, **self._engine_options())
        runs = [stats for _, stats in result.stages if stats is not None]
        total = ExecutionStats(
            sum(s.tensors for s in runs),
            sum(s.bytes_read for s in runs),
            sum(s.bytes_written for s in runs),
            sum(s.seconds for s in runs),
            runs[-1].device if runs else "",
        )
        return MergeDone(result.output, total)

    def _adapter(self, recipe: Any) -> MergeDone:
        from mergestudio.engine.device import resolve_device
        from mergestudio.engine.execute import ExecutionStats
        from mergestudio.lora.merge import merge_to_adapter

        options = self.options
        result = merge_to_adapter(
            recipe,
            options.out_dir,
            device=options.device,
            overwrite=options.overwrite,
            threads=options.threads,
            events=self.events,
            cancel=self.cancel_token,
        )
        written = (result.output / "adapter_model.safetensors").stat().st_size
        device = str(resolve_device(options.device))
        return MergeDone(result.output, ExecutionStats(len(result.modules), 0, written, result.seconds, device))


# ---- evaluation ---------------------------------------------------------------------------


QUICK_EVAL_BATCH = 64  # requests per forward pass; the demo's tiny models score 64 at once


@dataclass(frozen=True)
class QuickEval:
    """A merge scored next to its base and parents. ``reports``: label -> report, in the
    order asked; ``evaluated``: the labels scored now (the rest came from the cache);
    ``comparison``: the merge against the base and each task's specialist (the parent
    ``specialist_of`` names for the task, else the parent scoring highest on it), from
    the engine's ``compare_to_parents``."""

    reports: dict[str, EvalReport]
    evaluated: tuple[str, ...]
    merged_label: str
    base_label: str | None
    comparison: Comparison
    specialist_of: dict[str, str] = field(default_factory=dict)  # task -> pinned parent label

    def with_specialists(self, specialist_of: dict[str, str]) -> QuickEval:
        """The same scores compared with other pinned specialists (nothing re-evaluated)."""
        comparison = compare_quick_eval(self.reports, self.merged_label, self.base_label, specialist_of)
        return replace(self, comparison=comparison, specialist_of=dict(specialist_of))


def compare_quick_eval(reports: dict[str, EvalReport], merged_label: str, base_label: str | None,
                       specialist_of: dict[str, str]) -> Comparison:
    """The merge's report against the base's and the parents' (``specialist_of``: task ->
    parent label pinned as its specialist)."""
    from mergestudio.evaluate.normalized import compare_to_parents

    merged = reports[merged_label]
    parents = {k: r.scores for k, r in reports.items() if k not in (merged_label, base_label)}
    return compare_to_parents(
        merged.scores,
        base=reports[base_label].scores if base_label else None,
        parents=parents,
        lower_is_better=[t.task for t in merged.tasks if not t.higher_is_better],
        specialist_of=specialist_of,
    )


class EvalJob(Job):
    """Evaluate several models (label -> folder) on the same task files in one job: one
    progress stream, reports of unchanged models from the content-hash cache under
    ``cache_dir``. ``merged_label`` and ``base_label`` say which model is which; every
    other model is a parent that may be a task's specialist. ``device``: where the models
    run (the Merge page's device setting; scoring and generation both honour it)."""

    def __init__(self, models: dict[str, str], task_files: Sequence[str], limit: int | None = None,
                 *, merged_label: str, base_label: str | None, cache_dir: str | None,
                 specialist_of: dict[str, str] | None = None, device: str = "cpu") -> None:
        super().__init__()
        self.specialist_of = dict(specialist_of or {})
        self.device = device
        self.models = models
        self.task_files = list(task_files)
        self.limit = limit
        self.merged_label = merged_label
        self.base_label = base_label
        self.cache_dir = cache_dir

    def work(self) -> QuickEval:
        from mergestudio.evaluate.cache import (
            EvalSettings,
            EvaluationCache,
            evaluate_models,
            evaluation_cache_dir,
        )
        from mergestudio.evaluate.lm import quiet_transformers

        quiet_transformers()
        evaluation = evaluate_models(
            self.models,
            self.task_files,
            EvalSettings(limit=self.limit, batch_size=QUICK_EVAL_BATCH, device=self.device, dtype="float32"),
            cache=EvaluationCache(evaluation_cache_dir(self.cache_dir)),
            events=self.events,
            cancel=self.cancel_token,
        )
        reports = evaluation.reports
        comparison = compare_quick_eval(reports, self.merged_label, self.base_label, self.specialist_of)
        return QuickEval(reports, evaluation.evaluated, self.merged_label, self.base_label, comparison,
                         self.specialist_of)


# ---- environment --------------------------------------------------------------------------


class DeviceProbeJob(Job):
    """What 'auto' resolves to, in words (importing torch takes a second or two)."""

    def work(self) -> str:
        import torch

        if torch.cuda.is_available():
            return f"CUDA ({torch.cuda.get_device_name(0)})"
        if torch.backends.mps.is_available():
            return "Apple MPS"
        return f"CPU ({os.cpu_count() or 1} cores)"


class HubLoginJob(Job):
    """Sign in with a token: huggingface_hub checks it and keeps it in its own store."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def work(self) -> str:
        from huggingface_hub import login, whoami

        token, self._token = self._token, ""
        try:
            login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
            return str(whoami().get("name", "signed in"))
        except Exception as error:  # network and auth errors come in many types
            # Never echo the token: the message names only what failed.
            raise SourceError(f"Hub sign-in failed: {type(error).__name__}") from None
