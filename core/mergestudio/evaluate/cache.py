"""Evaluation reports cached by content, and several models evaluated as one job.

A report is reused when the same bytes are scored the same way: the key is a sha256 over
the model folder's files (weights, config, tokenizer; not the model card), every task
file's bytes and the evaluation settings (item limit, batch size, device, dtype). A
renamed copy of a model hits; a re-merge that wrote other weights misses.

Hashing a folder reads every byte once. The file hashes are remembered by path, size and
modification time (``file-hashes.json``), so a repeat run reads only files that changed.

Reports live in ``<root>/evaluations/<key>.json``; the root is the ``cache_dir``
argument, ``$MERGESTUDIO_CACHE_DIR`` or the platform's user cache folder, as for
analyses. Caching is best effort: an unreadable entry is a miss, an unwritable folder
only means nothing is kept.

``evaluate_models`` scores several models on the same tasks with one progress bar:
cached models cost nothing, and the others share one ``Progress`` stream whose
``remaining_s`` comes from measured seconds per item of each task.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergestudio.evaluate.results import EvalReport
from mergestudio.events import CancelToken, EventSink, Progress, emit, log

FORMAT = 1  # bump when a report's meaning changes: old entries then miss
_SUBFOLDER = "evaluations"
_HASHES_FILE = "file-hashes.json"
_NOT_SCORED = frozenset({"README.md"})  # the model card describes; it changes no score
_CHUNK = 1 << 22


def evaluation_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where evaluation reports are cached (not created here)."""
    from mergestudio.analysis.cache import cache_root

    return cache_root(cache_dir) / _SUBFOLDER


@dataclass(frozen=True)
class EvalSettings:
    """Everything besides the model and the task files that changes a score."""

    limit: int | None = None
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "auto"


class EvaluationCache:
    """Reports by content key in one folder. Safe to share between processes: writes are
    atomic (temp file, then rename), and a lost race only costs a second evaluation."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._hashes = _FileHashes(self.folder / _HASHES_FILE)

    def key(self, model: str | Path, task_files: Sequence[str | Path], settings: EvalSettings) -> str:
        """sha256 over the model's files, the tasks' bytes and the settings."""
        payload = {
            "format": FORMAT,
            "model": self._hashes.folder_digest(Path(model)),
            "tasks": [self._hashes.file_digest(Path(t)) for t in task_files],
            "settings": [settings.limit, settings.batch_size, settings.device, settings.dtype],
        }
        self._hashes.save()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def load(self, key: str) -> EvalReport | None:
        try:
            return EvalReport.load_json(self.folder / f"{key}.json")
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: evaluated again and overwritten

    def store(self, key: str, report: EvalReport) -> Path | None:
        return _write_atomic(self.folder / f"{key}.json", json.dumps(report.to_dict()) + "\n")


class _FileHashes:
    """sha256 of files, remembered by (path, size, mtime) in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: dict[str, list[Any]] = {}
        self._dirty = False
        with contextlib.suppress(OSError, ValueError, TypeError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._known = loaded

    def file_digest(self, path: Path) -> str:
        stat = path.stat()  # a missing file raises here, naming it, before any work
        name = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        known = self._known.get(name)
        if isinstance(known, list) and len(known) == 3 and known[:2] == stamp:
            return str(known[2])
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        self._known[name] = [*stamp, digest.hexdigest()]
        self._dirty = True
        return digest.hexdigest()

    def folder_digest(self, folder: Path) -> str:
        """Over the names and contents of every file in ``folder`` (recursively), in
        name order; a single file stands for itself."""
        if folder.is_file():
            return self.file_digest(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such model folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _NOT_SCORED)
        entries = [(p.relative_to(folder).as_posix(), self.file_digest(p)) for p in files]
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def save(self) -> None:
        if self._dirty:
            _write_atomic(self.path, json.dumps(self._known) + "\n")
            self._dirty = False


def _write_atomic(target: Path, text: str) -> Path | None:
    temp_name: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp_name, target)
    except OSError:
        if temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
        return None
    return target


# ---- several models, one job ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelsEvaluation:
    """``reports``: label -> report, in the order asked. ``evaluated``: the labels scored
    by this call; the others came from the cache."""

    reports: dict[str, EvalReport]
    evaluated: tuple[str, ...]


def evaluate_models(
    models: Mapping[str, str | Path],
    task_files: Sequence[str | Path],
    settings: EvalSettings = EvalSettings(),
    *,
    cache: EvaluationCache | None = None,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> ModelsEvaluation:
    """Evaluate every model (label -> folder) on the same task files. Models whose report
    is cached are not loaded. One ``Progress`` stream (job ``"evaluate"``) covers the
    items of every model evaluated, in order; ``current`` is ``"label: task"``."""
    from mergestudio.evaluate.evaluator import evaluate_tasks
    from mergestudio.evaluate.lm import CausalLM, check_weight_headers
    from mergestudio.evaluate.tasks import load_task

    tasks = [load_task(p) for p in task_files]  # a bad task file fails before any model loads
    for folder in models.values():  # a corrupt model fails before the cache writes its hashes
        check_weight_headers(Path(folder))
    keys = {label: cache.key(folder, task_files, settings) for label, folder in models.items()} if cache else {}
    reports: dict[str, EvalReport] = {}
    for label in models:
        cached = cache.load(keys[label]) if cache is not None else None
        if cached is not None:
            reports[label] = cached
    pending = [label for label in models if label not in reports]
    items = {t.name: len(t.limited(settings.limit).items) for t in tasks}
    clock = _JobClock(events, items, len(pending))
    for report in reports.values():
        clock.learn(report)
    if pending:
        log(events, f"cached: {', '.join(reports) or 'none'}; evaluating: {', '.join(pending)}")
    for label in pending:
        if cancel is not None:
            cancel.raise_if_cancelled()
        clock.model_started(label)
        lm = CausalLM.load(models[label], device=settings.device, dtype=settings.dtype)
        clock.model_loaded()
        report = evaluate_tasks(lm, tasks, settings.limit, settings.batch_size, clock.sink, cancel)
        del lm
        clock.model_done(report)
        reports[label] = report
        if cache is not None:
            cache.store(keys[label], report)
    return ModelsEvaluation({label: reports[label] for label in models}, tuple(pending))


class _JobClock:
    """Turns each model's own progress into one stream over all of them, and estimates
    the time left from measured seconds per item of each task (a generation item costs
    far more than a perplexity one) plus the measured time to load a model."""

    def __init__(self, events: EventSink | None, items: dict[str, int], models: int) -> None:
        self._events = events
        self._items = items
        self._per_model = sum(items.values())
        self._total = self._per_model * models
        self._models_left = models
        self._start = time.perf_counter()
        self._offset = 0
        self._label = ""
        self._seconds_per_item: dict[str, float] = {}
        self._load_s: float | None = None
        self._model_start = self._start
        self._model_eval_start = self._start

    def learn(self, report: EvalReport) -> None:
        """Seconds per item of each task from a report of the same tasks (a cached one
        says how fast this machine scored them)."""
        for task in report.tasks:
            if task.items and task.elapsed_s > 0:
                self._seconds_per_item[task.task] = task.elapsed_s / len(task.items)

    def model_started(self, label: str) -> None:
        self._label = label
        self._model_start = time.perf_counter()
        # Until the model is loaded, count its load as the last one took.
        self._model_eval_start = self._model_start + (self._load_s or 0.0)
        self._emit(0, "")

    def model_loaded(self) -> None:
        self._model_eval_start = time.perf_counter()
        self._load_s = self._model_eval_start - self._model_start

    def model_done(self, report: EvalReport) -> None:
        self.learn(report)
        self._offset += self._per_model
        self._models_left -= 1

    def sink(self, event: object) -> None:
        if isinstance(event, Progress):
            self._emit(event.done, event.current)
        else:
            emit(self._events, event)

    def _emit(self, done_in_model: int, task: str) -> None:
        now = time.perf_counter()
        done = self._offset + done_in_model
        emit(
            self._events,
            Progress(
                job="evaluate",
                done=done,
                total=self._total,
                elapsed_s=now - self._start,
                current=f"{self._label}: {task}" if task else self._label,
                remaining_s=self._remaining(now, done),
            ),
        )

    def _remaining(self, now: float, done: int) -> float | None:
        """None until every task's cost is measured (the counts then extrapolate)."""
        if any(task not in self._seconds_per_item for task in self._items):
            return None
        model_s = sum(n * self._seconds_per_item[t] for t, n in self._items.items())
        load_s = self._load_s or 0.0
        in_model = max(0.0, now - self._model_eval_start)
        current_left = max(0.0, model_s - in_model) if done < self._total else 0.0
        return current_left + max(0, self._models_left - 1) * (model_s + load_s)
