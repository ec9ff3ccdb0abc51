"""Evaluation tasks read from JSONL files (format: docs/tasks.md).

One file is one task. Every line is a JSON object; an optional first line
``{"task": {...}}`` sets the task's name and generation options. The kind of task is
read from the item keys:

- ``{"prompt": ..., "choices": [...], "answer": 0}``      multiple choice (log-likelihood)
- ``{"prompt": ..., "target": "..." | ["...", ...]}``     greedy generation, exact match
- ``{"text": ...}``                                        perplexity

Every error names the file and the line number (1-based) and the key at fault.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mergestudio.errors import MergeStudioError

TaskKind = Literal["multiple_choice", "generation", "perplexity"]
NORMALIZERS = ("strip", "lower", "collapse_whitespace", "remove_punctuation")


class TaskFormatError(MergeStudioError):
    """A task file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class ChoiceItem:
    """Pick the choice whose continuation of ``prompt`` the model finds most likely."""

    id: str
    prompt: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class GenerationItem:
    """Greedy-generate from ``prompt``; correct if the normalised output equals a target."""

    id: str
    prompt: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class TextItem:
    """Text scored token by token for perplexity."""

    id: str
    text: str


Item = ChoiceItem | GenerationItem | TextItem


@dataclass(frozen=True)
class GenerationOptions:
    """How generations are produced and compared.

    ``stop``: the output is cut at the first occurrence of any of these strings.
    ``normalize``: applied in this order to both output and targets before comparing.
    """

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    normalize: tuple[str, ...] = ("strip",)


@dataclass(frozen=True)
class Task:
    name: str
    kind: TaskKind
    items: tuple[Item, ...]
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    source: str = ""  # the file it came from, for messages

    def limited(self, limit: int | None) -> Task:
        """The first ``limit`` items (all when ``limit`` is None)."""
        if limit is None or limit >= len(self.items):
            return self
        return replace(self, items=self.items[:limit])


_HEADER_KEYS = {"name", "max_new_tokens", "stop", "normalize"}
_KIND_KEYS: dict[TaskKind, set[str]] = {
    "multiple_choice": {"id", "prompt", "choices", "answer"},
    "generation": {"id", "prompt", "target"},
    "perplexity": {"id", "text"},
}


def _kind_of(obj: Mapping[str, Any]) -> TaskKind | None:
    if "choices" in obj:
        return "multiple_choice"
    if "target" in obj:
        return "generation"
    if "text" in obj:
        return "perplexity"
    return None


class _Line:
    """Where we are, so every error can say ``file:line``."""

    def __init__(self, path: str, number: int) -> None:
        self.path = path
        self.number = number

    def error(self, message: str) -> TaskFormatError:
        return TaskFormatError(f"{self.path}:{self.number}: {message}")

    def string(self, obj: Mapping[str, Any], key: str, allow_empty: bool = True) -> str:
        value = obj.get(key)
        if not isinstance(value, str):
            raise self.error(f"key '{key}' must be a string, got {type(value).__name__}")
        if not allow_empty and not value:
            raise self.error(f"key '{key}' must not be empty")
        return value

    def strings(self, obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = obj.get(key)
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise self.error(f"key '{key}' must be a string or a non-empty list of strings")


def _parse_header(line: _Line, header: Any, default_name: str) -> tuple[str, GenerationOptions]:
    if not isinstance(header, dict):
        raise line.error("key 'task' must be an object")
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        raise line.error(f"unknown key 'task.{unknown[0]}' (known: {', '.join(sorted(_HEADER_KEYS))})")
    name = line.string(header, "name", allow_empty=False) if "name" in header else default_name
    options = GenerationOptions()
    if "max_new_tokens" in header:
        value = header["max_new_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise line.error("key 'task.max_new_tokens' must be a positive integer")
        options = replace(options, max_new_tokens=value)
    if "stop" in header:
        value = header["stop"]
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise line.error("key 'task.stop' must be a list of non-empty strings")
        options = replace(options, stop=tuple(value))
    if "normalize" in header:
        value = header["normalize"]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise line.error("key 'task.normalize' must be a list of strings")
        bad = [s for s in value if s not in NORMALIZERS]
        if bad:
            raise line.error(
                f"unknown normalisation '{bad[0]}' in 'task.normalize' (known: {', '.join(NORMALIZERS)})"
            )
        options = replace(options, normalize=tuple(value))
    return name, options


def _parse_item(line: _Line, obj: Mapping[str, Any], kind: TaskKind, index: int) -> Item:
    unknown = sorted(set(obj) - _KIND_KEYS[kind])
    if unknown:
        raise line.error(
            f"unknown key '{unknown[0]}' for a {kind} item (known: {', '.join(sorted(_KIND_KEYS[kind]))})"
        )
    item_id = str(obj["id"]) if "id" in obj else str(index)
    if kind == "multiple_choice":
        prompt = line.string(obj, "prompt")
        choices = line.strings(obj, "choices")
        if len(choices) < 2:
            raise line.error("key 'choices' needs at least two choices")
        answer = obj.get("answer")
        if isinstance(answer, str):
            if answer not in choices:
                raise line.error(f"key 'answer' {answer!r} is not one of the choices")
            answer = choices.index(answer)
        if not isinstance(answer, int) or isinstance(answer, bool):
            raise line.error("key 'answer' must be a choice index or one of the choices")
        if not 0 <= answer < len(choices):
            raise line.error(f"key 'answer' {answer} is out of range for {len(choices)} choices")
        return ChoiceItem(item_id, prompt, choices, answer)
    if kind == "generation":
        return GenerationItem(item_id, line.string(obj, "prompt"), line.strings(obj, "target"))
    return TextItem(item_id, line.string(obj, "text", allow_empty=False))


def parse_task_lines(lines: Sequence[str], source: str, default_name: str) -> Task:
    """Parse the lines of a JSONL task. Blank lines are skipped."""
    name, options = default_name, GenerationOptions()
    kind: TaskKind | None = None
    items: list[Item] = []
    seen_ids: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        line = _Line(source, number)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise line.error(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise line.error(f"expected a JSON object, got {type(obj).__name__}")
        if "task" in obj:
            if items or len(obj) != 1:
                raise line.error("a 'task' header must be alone on the first line")
            name, options = _parse_header(line, obj["task"], default_name)
            continue
        item_kind = _kind_of(obj)
        if item_kind is None:
            raise line.error(
                "cannot tell the item kind: expected key 'choices' (multiple choice), "
                "'target' (generation) or 'text' (perplexity)"
            )
        if kind is None:
            kind = item_kind
        elif item_kind != kind:
            raise line.error(f"a {item_kind} item in a {kind} task (one kind per file)")
        item = _parse_item(line, obj, kind, len(items))
        if item.id in seen_ids:
            raise line.error(f"duplicate id {item.id!r} (first on line {seen_ids[item.id]})")
        seen_ids[item.id] = number
        items.append(item)
    if kind is None:
        raise TaskFormatError(f"{source}: no items")
    return Task(name=name, kind=kind, items=tuple(items), generation=options, source=source)


# Parsed tasks by (path, modification time, size): checking a search spec, shaping its
# dashboard and scoring it each read the same files (~3 ms per 200-item file), and the
# window does the first two on the GUI thread. Tasks are frozen, so sharing them is safe.
_PARSED: dict[tuple[str, int, int], Task] = {}
_PARSED_LIMIT = 64
_PARSED_LOCK = threading.Lock()


def load_task(path: str | Path) -> Task:
    """Read one JSONL task file; the task is named after the file unless its header says.
    A file read before and unchanged since (same modification time and size) is not
    parsed again."""
    p = Path(path)
    try:
        stat = p.stat()
        key = (str(p), stat.st_mtime_ns, stat.st_size)
        with _PARSED_LOCK:
            if key in _PARSED:
                return _PARSED[key]
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFormatError(f"{p}: cannot read task file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TaskFormatError(f"{p}: not UTF-8 text") from None
    task = parse_task_lines(text.splitlines(), str(p), _task_name(p))
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.pop(next(iter(_PARSED)))  # the oldest entry
        _PARSED[key] = task
    return task


def _task_name(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_task(
    path: str | Path,
    items: Sequence[Item],
    name: str | None = None,
    generation: GenerationOptions | None = None,
) -> None:
    """Write items as a JSONL task (with a header when a name or options are given)."""
    lines: list[str] = []
    if name is not None or generation is not None:
        header: dict[str, Any] = {}
        if name is not None:
            header["name"] = name
        if generation is not None:
            header["max_new_tokens"] = generation.max_new_tokens
            header["stop"] = list(generation.stop)
            header["normalize"] = list(generation.normalize)
        lines.append(json.dumps({"task": header}))
    for item in items:
        lines.append(json.dumps(_item_dict(item), ensure_ascii=False))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _item_dict(item: Item) -> dict[str, Any]:
    if isinstance(item, ChoiceItem):
        return {"id": item.id, "prompt": item.prompt, "choices": list(item.choices), "answer": item.answer}
    if isinstance(item, GenerationItem):
        target: str | list[str] = item.targets[0] if len(item.targets) == 1 else list(item.targets)
        return {"id": item.id, "prompt": item.prompt, "target": target}
    return {"id": item.id, "text": item.text}
