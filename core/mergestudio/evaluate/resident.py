"""The resident evaluator for search loops.

The model architecture is loaded once. For each candidate recipe the engine streams the
merged tensors straight into the loaded model's parameters (``ModuleTarget``): no
files are written per candidate and nothing is reloaded, so a candidate costs one
in-memory merge plus one evaluation. Input models stay open (memory-mapped) between
candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from mergestudio.errors import MergeError
from mergestudio.evaluate.evaluator import AnyTask, evaluate_tasks
from mergestudio.evaluate.lm import CausalLM
from mergestudio.evaluate.results import EvalReport
from mergestudio.events import CancelToken, EventSink

if TYPE_CHECKING:
    import torch

    from mergestudio.engine.plan import MergePlan
    from mergestudio.io.sources import ModelSource
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import MultiRecipe


class ModuleTarget:
    """An engine target that copies each merged tensor into the parameter or buffer of
    the same name in a loaded ``torch.nn.Module`` (casting dtype and device).

    Names are the checkpoint's names, which for `transformers` models are the module's
    ``state_dict`` keys. Tied weights (an embedding shared with the output head) are
    one tensor under two names: writing either name fills both.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._slots: dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=True))
        # Names that share storage, so a write under one name counts for all of them.
        by_storage: dict[int, list[str]] = {}
        for name, tensor in self._slots.items():
            by_storage.setdefault(tensor.data_ptr(), []).append(name)
        self._aliases = {n: group for group in by_storage.values() for n in group}
        self.written: set[str] = set()

    def reset(self) -> None:
        self.written.clear()

    def _slot_name(self, name: str) -> str | None:
        if name in self._slots:
            return name
        # A checkpoint of the bare decoder ("layers.0...") loaded into a model with a
        # head ("model.layers.0..."), or the other way round.
        for candidate in (f"model.{name}", name.removeprefix("model.")):
            if candidate in self._slots:
                return candidate
        return None

    def accept(self, name: str, tensor: torch.Tensor) -> None:
        import torch

        slot_name = self._slot_name(name)
        if slot_name is None:
            raise MergeError(f"merged tensor '{name}' has no parameter of that name in the loaded model")
        slot = self._slots[slot_name]
        if tuple(slot.shape) != tuple(tensor.shape):
            raise MergeError(
                f"merged tensor '{name}' has shape {tuple(tensor.shape)}, "
                f"the loaded model's parameter has {tuple(slot.shape)}"
            )
        with torch.no_grad():
            slot.data.copy_(tensor)
        self.written.update(self._aliases[slot_name])

    def missing(self) -> list[str]:
        """Parameters and persistent buffers that no merged tensor has written."""
        return sorted(set(self._slots) - self.written)


@dataclass(frozen=True)
class CandidateResult:
    report: EvalReport
    merge_s: float  # plan + merge into the model's parameters
    eval_s: float


class CandidateEvaluator(Protocol):
    """What a search evaluates its candidates with: the ``ResidentEvaluator`` here, or a
    proxy for one in another process (``search.ray_backend``). ``tasks`` may be replaced
    between candidates (an IRT run switches to its anchor items)."""

    tasks: list[AnyTask]

    def evaluate(
        self,
        recipe: Recipe | MultiRecipe | str | dict[str, Any],
        events: EventSink | None = None,
        cancel: CancelToken | None = None,
    ) -> CandidateResult: ...


class ResidentEvaluator:
    """Evaluate many merge recipes over the same input models with one loaded model.

    ``template``: a model folder with the output's architecture (typically the recipe's
    base model); its weights are overwritten by every candidate. Use as a context
    manager, or call ``close()``, to release the open input models.
    """

    def __init__(
        self,
        template: str | Path,
        tasks: Sequence[AnyTask],
        *,
        limit: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "auto",
        merge_threads: int | None = None,
        graded: bool = False,
    ) -> None:
        # graded: every generation item also gets its reference's teacher-forced log-prob.
        self.graded = graded
        self.lm = CausalLM.load(template, device=device, dtype=dtype)
        self.tasks = [t.limited(limit) for t in tasks]
        self.batch_size = batch_size
        self.merge_threads = merge_threads
        self._target = ModuleTarget(self.lm.model)
        self._sources: dict[str, ModelSource] = {}

    def merge_into_model(
        self, recipe: Recipe | MultiRecipe | str | dict[str, Any], cancel: CancelToken | None = None
    ) -> None:
        """Merge ``recipe`` into the resident model's parameters. Every parameter must be
        written, so no weight of an earlier candidate survives into this one. A
        multi-stage recipe (or its YAML) runs its earlier stages in memory first."""
        from mergestudio.engine import build_plan, execute_plan, load_recipe
        from mergestudio.recipe.multi import MultiRecipe, is_multi_stage, parse_multi

        if isinstance(recipe, str) and is_multi_stage(recipe):
            recipe = parse_multi(recipe, "candidate recipe")
        if isinstance(recipe, MultiRecipe):
            plan = self._run_earlier_stages(recipe, cancel)
        else:
            plan = build_plan(load_recipe(recipe), sources=self._sources)
            # Keep what the plan opened, so the next candidate reuses the memory maps.
            self._sources.update(plan.sources)
        self._target.reset()
        execute_plan(plan, self._target, device=self.lm.device, cancel=cancel, threads=self.merge_threads)
        missing = self._target.missing()
        if missing:
            raise MergeError(
                f"the recipe left {len(missing)} parameter(s) of the loaded model unset, first '{missing[0]}'"
            )

    def _run_earlier_stages(self, graph: MultiRecipe, cancel: CancelToken | None) -> MergePlan:
        """Plan every stage, merge all but the final one in memory; the final stage's plan."""
        from mergestudio.engine.graph import plan_stages, run_stage_in_memory

        staged = plan_stages(graph, sources=self._sources)
        stage_names = {item.stage.name for item in staged}
        for item in staged:
            self._sources.update({r: s for r, s in item.plan.sources.items() if r not in stage_names})
        for item in staged[:-1]:
            run_stage_in_memory(item, device=str(self.lm.device), threads=self.merge_threads, cancel=cancel)
        return staged[-1].plan

    def evaluate(
        self,
        recipe: Recipe | MultiRecipe | str | dict[str, Any],
        events: EventSink | None = None,
        cancel: CancelToken | None = None,
    ) -> CandidateResult:
        """Merge ``recipe`` into the resident model and evaluate it on the tasks."""
        start = time.perf_counter()
        self.merge_into_model(recipe, cancel)
        merged = time.perf_counter()
        report = evaluate_tasks(self.lm, self.tasks, None, self.batch_size, events, cancel, self.graded)
        return CandidateResult(report, merged - start, time.perf_counter() - merged)

    def evaluate_merged(
        self,
        tasks: Sequence[AnyTask],
        events: EventSink | None = None,
        cancel: CancelToken | None = None,
    ) -> CandidateResult:
        """Evaluate the candidate merged last (by ``evaluate``) on ``tasks``, without
        merging again: a fitness estimator's second round of items (``search.fitness``)."""
        start = time.perf_counter()
        report = evaluate_tasks(self.lm, tasks, None, self.batch_size, events, cancel, self.graded)
        return CandidateResult(report, 0.0, time.perf_counter() - start)

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()

    def __enter__(self) -> ResidentEvaluator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
