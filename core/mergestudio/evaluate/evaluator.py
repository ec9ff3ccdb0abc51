"""Run tasks against a loaded model and collect per-item results.

``evaluate_tasks`` is the one entry point: the CLI, the resident evaluator and the demo
build all call it. It reports progress as ``Progress`` events (job ``"evaluate"``,
counted in items) and checks the cancel token between batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from mergestudio.evaluate import metrics
from mergestudio.evaluate.lm import BatchDone, CausalLM
from mergestudio.evaluate.lm_eval_adapter import LmEvalTask, evaluate_lm_eval
from mergestudio.evaluate.results import EvalReport, ItemResult, TaskResult
from mergestudio.evaluate.tasks import ChoiceItem, GenerationItem, Task, TextItem, load_task
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel

# Our JSONL tasks, or an lm-evaluation-harness task run through ``lm_eval_adapter``.
AnyTask = Task | LmEvalTask


def task_items_subset(task: AnyTask, keep: Collection[int]) -> AnyTask:
    """``task`` with only the items at indices ``keep`` (in the task's own order): what a
    fitness estimator scores candidates on."""
    if isinstance(task, Task):
        return replace(task, items=tuple(item for k, item in enumerate(task.items) if k in keep))
    return replace(task, items=tuple(item for k, item in enumerate(task.items) if k in keep))


def evaluate_tasks(
    lm: CausalLM,
    tasks: Sequence[AnyTask],
    limit: int | None = None,
    batch_size: int = 32,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    graded: bool = False,
) -> EvalReport:
    """Evaluate ``lm`` on every task (the first ``limit`` items of each). ``graded``:
    also score each generation item's reference answer under teacher forcing
    (``ItemResult.graded``; multiple-choice items always have theirs)."""
    chosen = [t.limited(limit) for t in tasks]
    progress = ProgressReporter(events, "evaluate", sum(len(t.items) for t in chosen))
    progress.start()
    start = time.perf_counter()
    results = []
    for task in chosen:
        check_cancel(cancel)
        if isinstance(task, LmEvalTask):
            result = evaluate_lm_eval(lm, task, batch_size)
            progress.advance(len(task.items))
            results.append(result)
            continue
        results.append(_evaluate_task(lm, task, batch_size, progress, cancel, graded))
    return EvalReport(model=lm.name, tasks=tuple(results), elapsed_s=time.perf_counter() - start)


def evaluate_path(
    model: str | Path,
    task_files: Sequence[str | Path],
    limit: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> EvalReport:
    """Load a model folder and evaluate it on JSONL task files."""
    tasks = [load_task(p) for p in task_files]  # fail on a bad file before loading a model
    lm = CausalLM.load(model, device=device, dtype=dtype)
    return evaluate_tasks(lm, tasks, limit, batch_size, events, cancel)


def _evaluate_task(
    lm: CausalLM,
    task: Task,
    batch_size: int,
    progress: ProgressReporter,
    cancel: CancelToken | None,
    graded: bool = False,
) -> TaskResult:
    start = time.perf_counter()
    if task.kind == "multiple_choice":
        items, summary = _multiple_choice(lm, task, batch_size, progress, cancel)
    elif task.kind == "generation":
        items, summary = _generation(lm, task, batch_size, progress, cancel, graded)
    else:
        items, summary = _perplexity(lm, task, batch_size, progress, cancel)
    return TaskResult(
        task=task.name,
        kind=task.kind,
        metrics=summary,
        items=tuple(items),
        elapsed_s=time.perf_counter() - start,
    )


def _advance(progress: ProgressReporter, cancel: CancelToken | None, task: str) -> BatchDone:
    def on_batch(n: int) -> None:
        progress.advance(n, current=task)
        check_cancel(cancel)

    return on_batch


def _multiple_choice(
    lm: CausalLM,
    task: Task,
    batch_size: int,
    progress: ProgressReporter,
    cancel: CancelToken | None,
) -> tuple[list[ItemResult], dict[str, float]]:
    choice_items = [i for i in task.items if isinstance(i, ChoiceItem)]
    requests = [(item.prompt, choice) for item in choice_items for choice in item.choices]
    # Progress counts items, but requests are per choice: report the fraction of items.
    per_item = len(requests) / max(1, len(choice_items))
    done_requests = 0
    reported = 0

    def on_batch(n: int) -> None:
        nonlocal done_requests, reported
        done_requests += n
        items_now = int(done_requests / per_item)
        if items_now > reported:
            progress.advance(items_now - reported, current=task.name)
            reported = items_now
        check_cancel(cancel)

    scored = lm.loglikelihood(requests, batch_size, on_batch)
    results, acc, acc_norm = [], [], []
    at = 0
    for item in choice_items:
        values = scored[at : at + len(item.choices)]
        at += len(item.choices)
        logprobs = tuple(v.logprob for v in values)
        chosen = metrics.choice_index(logprobs)
        chosen_norm = metrics.choice_index_normalized(logprobs, item.choices)
        correct = chosen == item.answer
        acc.append(float(correct))
        acc_norm.append(float(chosen_norm == item.answer))
        graded = _log_share(logprobs, item.answer)
        results.append(ItemResult(item.id, float(correct), correct, str(chosen), logprobs=logprobs, graded=graded))
    return results, {"acc": metrics.mean(acc), "acc_norm": metrics.mean(acc_norm)}


def _generation(
    lm: CausalLM,
    task: Task,
    batch_size: int,
    progress: ProgressReporter,
    cancel: CancelToken | None,
    graded: bool = False,
) -> tuple[list[ItemResult], dict[str, float]]:
    gen_items = [i for i in task.items if isinstance(i, GenerationItem)]
    options = task.generation
    outputs = lm.generate(
        [i.prompt for i in gen_items],
        options.max_new_tokens,
        options.stop,
        batch_size,
        _advance(progress, cancel, task.name),
    )
    references = _reference_logprobs(lm, gen_items, batch_size) if graded else [None] * len(gen_items)
    results = []
    for item, output, reference in zip(gen_items, outputs, references, strict=True):
        correct = metrics.exact_match(output, item.targets, options.normalize)
        results.append(ItemResult(item.id, float(correct), correct, output, graded=reference))
    return results, {"exact_match": metrics.mean([r.score for r in results])}


def _reference_logprobs(lm: CausalLM, items: Sequence[GenerationItem], batch_size: int) -> list[float | None]:
    """Mean per-token log-probability (nats) of each item's first reference answer after
    its prompt, teacher-forced: one batched forward pass, no decoding. Per token, so a
    long answer is not worth less than a short one."""
    scored = lm.loglikelihood([(item.prompt, item.targets[0]) for item in items], batch_size)
    return [v.logprob / v.n_tokens if v.n_tokens else None for v in scored]


def _log_share(logprobs: Sequence[float], answer: int) -> float:
    """log of the right choice's share of the choices' probability: log-softmax over the
    choices' log-likelihoods, at the answer."""
    top = max(logprobs)
    return logprobs[answer] - (top + math.log(sum(math.exp(v - top) for v in logprobs)))


def _perplexity(
    lm: CausalLM,
    task: Task,
    batch_size: int,
    progress: ProgressReporter,
    cancel: CancelToken | None,
) -> tuple[list[ItemResult], dict[str, float]]:
    text_items = [i for i in task.items if isinstance(i, TextItem)]
    scored = lm.text_nll([i.text for i in text_items], batch_size, _advance(progress, cancel, task.name))
    results = []
    for item, value in zip(text_items, scored, strict=True):
        per_token = value.nll / value.n_tokens if value.n_tokens else math.inf
        results.append(ItemResult(item.id, per_token, nll=value.nll, n_tokens=value.n_tokens))
    total_nll = sum(v.nll for v in scored)
    total_tokens = sum(v.n_tokens for v in scored)
    total_bytes = sum(len(i.text.encode("utf-8")) for i in text_items)
    return results, {
        "perplexity": metrics.perplexity(total_nll, total_tokens),
        "nll_per_token": total_nll / total_tokens if total_tokens else math.inf,
        "bits_per_byte": metrics.bits_per_byte(total_nll, total_bytes),
    }
