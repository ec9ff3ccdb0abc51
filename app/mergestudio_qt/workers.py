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


class DryRunJob(Job):
    def __init__(self, recipe: dict[str, Any]) -> None:
        super().__init__()
        self.recipe = recipe

    def work(self) -> DryRun:
        from mergestudio.engine.estimate import estimate_time
        from mergestudio.engine.merge import plan_folder_merge
        from mergestudio.engine.plan import describe_sources

        with hub_transfer(self.events, self.cancel_token):  # Hub models: progress and cancel
            plan = plan_folder_merge(self.recipe, None)  # every check a merge makes before writing
        try:
            estimate = plan.estimate()
            return DryRun(
                estimate.tensor_count,
                estimate.bytes_to_read,
                estimate.output_bytes,
                estimate.peak_memory_bytes,
                estimate.largest_tensor,
                list(plan.warnings),
                describe_sources(plan),
                _vocabulary_lines(plan),
                estimate_time(plan),
            )
        finally:
            plan.close()


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


class MergeJob(Job):
    """Run a merge. A cancelled merge leaves nothing at ``out_dir`` (the engine stages
    into a hidden folder and renames only when complete)."""

    def __init__(self, recipe: dict[str, Any], options: MergeOptions) -> None:
        super().__init__()
        self.recipe = recipe
        self.options = options

    def work(self) -> Any:
        from mergestudio.engine import merge

        options = self.options
        return merge(
            self.recipe,
            options.out_dir,
            device=options.device,
            compute_dtype=options.compute_dtype,
            shard_size=options.shard_bytes,
            overwrite=options.overwrite,
            events=self.events,
            cancel=self.cancel_token,
            threads=options.threads,
        )


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
    other model is a parent that may be a task's specialist."""

    def __init__(self, models: dict[str, str], task_files: Sequence[str], limit: int | None = None,
                 *, merged_label: str, base_label: str | None, cache_dir: str | None,
                 specialist_of: dict[str, str] | None = None) -> None:
        super().__init__()
        self.specialist_of = dict(specialist_of or {})
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
            EvalSettings(limit=self.limit, batch_size=QUICK_EVAL_BATCH, device="cpu", dtype="float32"),
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
