"""lm-evaluation-harness tasks on our loaded model: no files, no reload.

``ResidentLM`` is an ``lm_eval`` model (a ``TemplateLM``: lm-eval tokenises pairs its own
way, with trailing context spaces moved onto the continuation) whose three queries run on
a ``CausalLM``, the very model the resident evaluator merges each candidate into. So a
search can optimise any lm-eval task (ARC, GSM8K, MMLU, or a user's local task YAML over a
local JSON file) on every candidate without writing it to disk.

``LmEvalTask`` stands for one such task in a list of our own tasks: its items are the
task's documents (ids ``"0"``, ``"1"`` … in lm-eval's order), so the IRT estimator can pick
anchor documents and ``evaluate`` runs only those (lm-eval's ``samples``). Each document's
score comes from lm-eval's logged samples, so item-level fitness works as for our tasks.

lm-eval is an optional extra (``pip install mergestudio[lm-eval]``); nothing here imports
it before it is needed, and its absence is a clear error naming the extra.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from mergestudio.errors import MergeStudioError
from mergestudio.evaluate.results import ItemResult, TaskResult

if TYPE_CHECKING:
    from mergestudio.evaluate.lm import CausalLM
    from mergestudio.search.schema import LmEvalSpec

# lm-eval's own default (HFLM.max_gen_toks) when a task's generation_kwargs say nothing.
DEFAULT_MAX_GEN_TOKS = 256


class LmEvalError(MergeStudioError):
    """lm-eval is missing, or a task cannot be loaded or run."""


@dataclass(frozen=True)
class DocItem:
    """One document of an lm-eval task, by its index in lm-eval's document order."""

    id: str


@dataclass(frozen=True)
class LmEvalTask:
    """An lm-eval task as an entry of our task lists: ``items`` are the documents it is run
    on (all of them up to ``spec.limit``, or a subset such as IRT anchors)."""

    name: str
    spec: LmEvalSpec
    items: tuple[DocItem, ...]
    higher_is_better: bool = True
    kind: str = "lm_eval"
    source: str = field(default="")

    def limited(self, limit: int | None) -> LmEvalTask:
        if limit is None or limit >= len(self.items):
            return self
        return replace(self, items=self.items[:limit])

    @classmethod
    def load(cls, spec: LmEvalSpec, name: str | None = None) -> LmEvalTask:
        """Build the lm-eval task (reading its dataset) to count its documents and check
        that it reports ``spec.metric``."""
        task = _build_task(spec)
        count = len(task.eval_docs)
        if spec.limit is not None:
            count = min(count, spec.limit)
        metrics = set(task.aggregation())
        if spec.metric not in metrics:
            raise LmEvalError(
                f"lm-eval task {spec.task!r} has no metric {spec.metric!r}; it has {', '.join(sorted(metrics))}"
            )
        higher = bool(task.higher_is_better().get(spec.metric, True))
        items = tuple(DocItem(str(i)) for i in range(count))
        return cls(name or spec.task, spec, items, higher, source=f"lm-eval:{spec.task}")


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise LmEvalError(
            "lm_eval objectives need lm-evaluation-harness: pip install 'mergestudio[lm-eval]'"
        ) from None
    return lm_eval


@cache
def _task_manager(include_path: str | None, task: str) -> Any:
    """lm-eval's task index. Indexing its thousands of built-in task files takes minutes on
    a slow disk, so a task found in ``include_path`` is looked up there alone."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if task in local.all_tasks:
            return local
        return TaskManager(include_path=include_path)
    return TaskManager()


def _build_task(spec: LmEvalSpec) -> Any:
    manager = _task_manager(spec.include_path, spec.task)
    try:
        tasks = manager.load([spec.task])["tasks"]
    except Exception as error:  # lm-eval raises KeyError/ValueError/… for unknown tasks and bad YAML
        where = f" (include_path {spec.include_path})" if spec.include_path else ""
        raise LmEvalError(f"lm-eval task {spec.task!r}{where}: {type(error).__name__}: {error}") from None
    if spec.task not in tasks:
        raise LmEvalError(
            f"lm-eval task {spec.task!r} is a group ({', '.join(map(str, tasks))}); name one task"
        )
    return tasks[spec.task]


def check_evaluate_args(spec: LmEvalSpec) -> None:
    """``evaluate_args`` must be keyword arguments of ``lm_eval.simple_evaluate`` that we do
    not set ourselves."""
    evaluate = _lm_eval().simple_evaluate
    ours = {"model", "tasks", "limit", "samples", "num_fewshot", "task_manager", "log_samples", "batch_size"}
    known = set(inspect.signature(evaluate).parameters) - ours
    unknown = sorted(set(spec.evaluate_args) - known)
    if unknown:
        raise LmEvalError(
            f"evaluate_args: {unknown[0]!r} is not an lm_eval.simple_evaluate argument we pass on"
        )


def evaluate_lm_eval(lm: CausalLM, task: LmEvalTask, batch_size: int) -> TaskResult:
    """Run ``task`` on ``lm`` (its documents ``task.items``) through lm-eval and return
    every document's score and the metric over them."""
    evaluate = _lm_eval().simple_evaluate
    spec = task.spec
    doc_ids = [int(i.id) for i in task.items]
    start = time.perf_counter()
    try:
        output = evaluate(
            model=ResidentLM(lm, batch_size),
            tasks=[spec.task],
            num_fewshot=spec.num_fewshot,
            samples={spec.task: doc_ids},
            task_manager=_task_manager(spec.include_path, spec.task),
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
            **spec.evaluate_args,
        )
    except MergeStudioError:
        raise
    except Exception as error:  # whatever the harness raises is reported with the task's name
        raise LmEvalError(f"lm-eval task {spec.task!r}: {type(error).__name__}: {error}") from error
    key = f"{spec.metric},{spec.filter}"
    results = output["results"][spec.task]
    if key not in results:
        raise LmEvalError(f"lm-eval task {spec.task!r} reported no {key!r}; it reported {', '.join(results)}")
    samples = sorted(
        (s for s in output["samples"][spec.task] if s.get("filter", spec.filter) == spec.filter),
        key=lambda s: int(s["doc_id"]),
    )
    items = tuple(_item(s, spec.metric) for s in samples)
    output_type = _output_type(samples)
    return TaskResult(
        task=task.name,
        kind="generation" if output_type == "generate_until" else "multiple_choice",
        metrics={spec.metric: float(results[key])},
        items=items,
        elapsed_s=time.perf_counter() - start,
    )


def _output_type(samples: Sequence[dict[str, Any]]) -> str:
    for sample in samples:
        arguments = sample.get("arguments")
        if isinstance(arguments, dict) and arguments:
            first = next(iter(arguments.values()))
            if isinstance(first, dict) and "arg_1" in first and isinstance(first["arg_1"], dict):
                return "generate_until"  # (context, gen_kwargs)
    return "loglikelihood"


def _item(sample: dict[str, Any], metric: str) -> ItemResult:
    score = float(sample[metric])
    binary = score in (0.0, 1.0)
    return ItemResult(id=str(sample["doc_id"]), score=score, correct=bool(score) if binary else None)


def _template_lm() -> type:
    _lm_eval()
    from lm_eval.api.model import TemplateLM

    return TemplateLM  # type: ignore[no-any-return]


class _ResidentLMBase:
    """Everything but the base class, which exists only once lm-eval is imported."""

    def __init__(self, lm: CausalLM, batch_size: int) -> None:
        super().__init__()
        self.lm = lm
        self._batch_size = batch_size

    # -- what TemplateLM needs -------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        eos = self.lm.tokenizer.eos_token_id
        return int(eos) if eos is not None else self.lm.pad_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.lm.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self.lm.max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_: Any) -> list[int]:
        """As lm-eval's HF model with its defaults: the tokenizer's own special tokens,
        except that a string already starting with BOS gets no second one."""
        tokenizer = self.lm.tokenizer
        if add_special_tokens is None:
            bos = tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        ids: list[int] = tokenizer.encode(string, add_special_tokens=add_special_tokens)
        return ids

    def _loglikelihood_tokens(
        self, requests: Sequence[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **_: Any
    ) -> list[tuple[float, bool]]:
        scored = self.lm.loglikelihood_ids([(ctx, cont) for _, ctx, cont in requests], self._batch_size)
        return [(s.logprob, s.is_greedy) for s in scored]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-likelihood over lm-eval's disjoint rolling windows."""
        from lm_eval import utils

        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for index, request in enumerate(requests):
            (text,) = request.args
            for window in map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append(window)
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, scored in zip(owner, self.lm.loglikelihood_ids(windows, self._batch_size), strict=True):
            totals[index] += scored.logprob
        return totals

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation, grouped by identical generation arguments."""
        out: list[str] = [""] * len(requests)
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for index, request in enumerate(requests):
            _context, gen_kwargs = request.args
            kwargs = dict(gen_kwargs or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature", 0.0) or 0.0) > 0.0:
                raise LmEvalError("lm-eval generation: only greedy decoding is supported (do_sample: false)")
            until = kwargs.get("until") or []
            stops = (until,) if isinstance(until, str) else tuple(until)
            max_tokens = int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            groups.setdefault((stops, max_tokens), []).append(index)
        for (stops, max_tokens), indices in groups.items():
            prompts = [requests[i].args[0] for i in indices]
            texts = self.lm.generate(prompts, max_tokens, stops, self._batch_size)
            for i, text in zip(indices, texts, strict=True):
                out[i] = text
        return out


@cache
def _resident_lm_class() -> type:
    return type("ResidentLM", (_ResidentLMBase, _template_lm()), {})


def ResidentLM(lm: CausalLM, batch_size: int) -> Any:  # a class made on first use, once lm-eval is imported
    """An ``lm_eval.api.model.TemplateLM`` over ``lm``."""
    return _resident_lm_class()(lm, batch_size)
