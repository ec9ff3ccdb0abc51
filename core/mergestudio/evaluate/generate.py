"""Trying a model by reading what it writes: text generated one token at a time.

A ``TokenStream`` is a small token loop over a loaded ``CausalLM`` (key/value cache,
greedy or temperature + top-p sampling from its own seeded ``torch.Generator``). It
yields each token's text as soon as it is decoded, so a window or a terminal can show
it at once, and a caller stops it between any two tokens. Several streams advanced in
turn (``generate_side_by_side``) give a candidate and its parents the same prompt and
seed at the same pace.

``LoadedModels`` keeps models in memory between generations. A model folder is loaded
once; a recipe is merged in memory into a resident model (the resident evaluator's
``merge_into_model``), so a merge or an Evolve trial can be tried without writing it.

Why our own loop instead of ``model.generate`` with a streamer: a stop must take effect
before the next forward pass, a sampled comparison must not depend on the process-wide
random state that other threads touch, and streams must be steppable in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mergestudio.errors import MergeStudioError
from mergestudio.evaluate.lm import CausalLM
from mergestudio.events import CancelToken

if TYPE_CHECKING:
    import torch

    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.recipe.model import Recipe

StopReason = Literal["eos", "length", "context", "stopped"]
RECIPE_SUFFIXES = (".yml", ".yaml")


class GenerationError(MergeStudioError):
    """A generation request that cannot run (bad option, unusable model or recipe)."""


@dataclass(frozen=True)
class SamplingOptions:
    """How the next token is chosen. ``temperature`` 0 means greedy (the argmax);
    above 0 the logits are divided by it and the token is drawn from the smallest set
    of tokens whose probability reaches ``top_p``, with a generator seeded by ``seed``.
    ``chat``: wrap the prompt in the tokenizer's chat template when it has one."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    chat: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0.0:  # also refuses NaN
            raise GenerationError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Token:
    id: int
    text: str  # the text this token adds; "" while it ends in an incomplete character


@dataclass(frozen=True)
class Generation:
    """One finished (or stopped) generation."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    stop_reason: StopReason
    seconds: float
    chat_template: bool  # the prompt went through the tokenizer's chat template

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(lm: CausalLM, prompt: str, chat: bool) -> tuple[list[int], bool]:
    """Token ids of ``prompt``: through the chat template (one user turn, the assistant's
    turn opened) when ``chat`` and the tokenizer has one, else encoded as plain text.
    Returns the ids and whether the template was used."""
    tokenizer = lm.tokenizer
    if chat and has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # The template writes its own special tokens (a bos among them, when it wants one).
        return lm.encode(str(text), special=False), True
    ids = lm.encode(prompt)
    return (ids or [lm._start_id()]), False


def _eos_ids(lm: CausalLM) -> frozenset[int]:
    """Tokens that end a generation: the generation config's (an id or a list) and the
    tokenizer's eos."""
    found: set[int] = set()
    config = getattr(lm.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return frozenset(found)


def sample_next(
    logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None
) -> int:
    """The next token from ``logits`` (V,) float32 on the CPU: the argmax when greedy,
    else a draw after temperature and nucleus (top-p) filtering. The most likely token
    always stays in the nucleus, so a tiny ``top_p`` is greedy."""
    import torch

    if options.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / options.temperature, dim=-1)
    if options.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass above each token
        sorted_probs[before >= options.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class TokenStream:
    """Tokens of one prompt, one forward pass per ``next()``. Stops by itself at an eos
    token, after ``max_new_tokens``, or when the model's context is full; the caller may
    simply stop iterating (``finish("stopped")``). Not thread-safe: one thread steps it.
    """

    def __init__(self, lm: CausalLM, prompt: str, options: SamplingOptions) -> None:
        import torch

        self.lm = lm
        self.options = options
        ids, self.chat_template = prompt_ids(lm, prompt, options.chat)
        # Keep the prompt's end when it does not fit: at least one new token must.
        self.prompt = ids[-(lm.max_length - 1) :] if lm.max_length > 1 else ids[-1:]
        self.generated: list[int] = []
        self.stop_reason: StopReason | None = None
        self._eos = _eos_ids(lm)
        self._generator = None if options.greedy else torch.Generator().manual_seed(options.seed)
        self._past: Any = None
        self._pieces: list[str] = []
        self._prefix_offset = 0  # decoding window: text already emitted ends at _read_offset
        self._read_offset = 0
        self._started = time.perf_counter()
        self._seconds: float | None = None

    def __iter__(self) -> Iterator[Token]:
        return self

    def __next__(self) -> Token:
        if self.stop_reason is not None:
            raise StopIteration
        token_id = self._step()
        if token_id in self._eos:
            self.finish("eos")
            raise StopIteration
        self.generated.append(token_id)
        token = Token(token_id, self._decode_piece())
        if len(self.generated) >= self.options.max_new_tokens:
            self.finish("length")
        elif len(self.prompt) + len(self.generated) >= self.lm.max_length:
            self.finish("context")
        return token

    def _step(self) -> int:
        """One forward pass: the whole prompt first, then only the last token, reading
        the earlier ones from the key/value cache."""
        import torch

        fresh = self.generated[-1:] if self._past is not None else self.prompt
        input_ids = torch.tensor([fresh], dtype=torch.long, device=self.lm.device)
        with torch.inference_mode():
            out = self.lm.model(input_ids=input_ids, past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        logits = out.logits[0, -1].float().cpu()  # (V,)
        return sample_next(logits, self.options, self._generator)

    def _decode_piece(self) -> str:
        """The text the newest token adds. The last few tokens are decoded together, so
        tokenizers that fix spacing or join bytes across tokens come out right; a piece
        ending in an incomplete UTF-8 character waits for the next token."""
        before, now = self._window_text()
        if len(now) > len(before) and not now.endswith("\ufffd"):
            piece = now[len(before) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self.generated)
            self._pieces.append(piece)
            return piece
        return ""

    def _window_text(self) -> tuple[str, str]:
        """The decoded text of the tokens already emitted in the window, and of the
        whole window up to the newest token."""
        ids = self.generated
        decode = self.lm.tokenizer.decode
        before = decode(ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        return str(before), str(decode(ids[self._prefix_offset :], skip_special_tokens=True))

    def finish(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self._seconds = time.perf_counter() - self._started
            self._past = None  # the cache can be large: free it now

    @property
    def text(self) -> str:
        """Everything emitted so far, plus a held-back tail once the stream has ended."""
        if self.stop_reason is None:
            return "".join(self._pieces)
        before, now = self._window_text()
        return "".join(self._pieces) + now[len(before) :]

    def result(self) -> Generation:
        if self.stop_reason is None:
            raise RuntimeError("the stream is still running")
        return Generation(
            self.text,
            tuple(self.generated),
            len(self.prompt),
            self.stop_reason,
            self._seconds or 0.0,
            self.chat_template,
        )


OnToken = Callable[[int, Token], None]  # stream index, token


def generate_side_by_side(
    models: Sequence[CausalLM],
    prompt: str,
    options: SamplingOptions,
    on_token: OnToken | None = None,
    cancel: CancelToken | None = None,
) -> list[Generation]:
    """Generate from every model with the same prompt and options, one token of each in
    turn, so the columns fill at the same pace. A cancel stops all of them before the
    next forward pass; their text so far is kept (stop reason "stopped")."""
    from mergestudio.collector import paused

    streams = [TokenStream(lm, prompt, options) for lm in models]
    # Every forward pass leaves transformers' output objects behind, which starts the
    # cyclic collector again and again; its full collections walk millions of objects
    # and hold the GIL for 100-200 ms, freezing a window that shows the tokens. With it
    # paused (as the merge loop does) reference counting still frees each step.
    with paused():
        return _interleave(streams, on_token, cancel)


def _interleave(streams: list[TokenStream], on_token: OnToken | None, cancel: CancelToken | None) -> list[Generation]:
    running = list(range(len(streams)))
    while running:
        for index in list(running):
            if cancel is not None and cancel.cancelled:
                for stream in streams:
                    stream.finish("stopped")
                return [s.result() for s in streams]
            try:
                token = next(streams[index])
            except StopIteration:
                running.remove(index)
                continue
            if on_token is not None:
                on_token(index, token)
            if streams[index].stop_reason is not None:
                running.remove(index)
    return [s.result() for s in streams]


def generate(
    lm: CausalLM,
    prompt: str,
    options: SamplingOptions,
    on_token: Callable[[Token], None] | None = None,
    cancel: CancelToken | None = None,
) -> Generation:
    """One model's generation; ``on_token`` sees each token as it is made."""
    relay = None if on_token is None else (lambda _index, token: on_token(token))
    return generate_side_by_side([lm], prompt, options, relay, cancel)[0]


# ---- models kept in memory ---------------------------------------------------------------


def is_recipe_reference(reference: object) -> bool:
    """A recipe (a dict, a ``Recipe``, or a path to a .yml/.yaml file) rather than a model."""
    from mergestudio.recipe.model import Recipe

    if isinstance(reference, (dict, Recipe)):
        return True
    return Path(str(reference)).suffix.lower() in RECIPE_SUFFIXES and Path(str(reference)).is_file()


@dataclass
class _ResidentMerge:
    evaluator: ResidentEvaluator
    lm: CausalLM  # the evaluator's model with the tokenizer the merge would write
    recipe_yaml: str = ""  # what is merged into it now
    tokenizer_key: tuple[Path, str | None] | None = None  # where lm.tokenizer came from


@dataclass
class LoadedModels:
    """Models kept loaded between generations, for one thread at a time.

    ``folder(path)`` loads a model folder once. ``recipe(recipe)`` merges the recipe in
    memory into a resident model of its output's architecture (the config model's
    folder, as a merge to disk would use), re-merging only when the recipe changed;
    every recipe with the same config model shares that one resident model."""

    device: str = "auto"
    dtype: str = "auto"
    merge_threads: int | None = None
    _folders: dict[str, CausalLM] = field(default_factory=dict)
    _residents: dict[str, _ResidentMerge] = field(default_factory=dict)

    def model(self, reference: str | Path | Mapping[str, Any] | Recipe, cancel: CancelToken | None = None) -> CausalLM:
        if is_recipe_reference(reference):
            return self.recipe(reference, cancel)
        return self.folder(str(reference))

    def folder(self, path: str | Path) -> CausalLM:
        key = str(Path(path).expanduser().resolve()) if Path(path).exists() else str(path)
        if key not in self._folders:
            self._folders[key] = CausalLM.load(key, device=self.device, dtype=self.dtype)
        return self._folders[key]

    def recipe(self, recipe: Recipe | str | Path | Mapping[str, Any], cancel: CancelToken | None = None) -> CausalLM:
        from mergestudio.engine.merge import load_recipe

        loaded = load_recipe(dict(recipe) if isinstance(recipe, Mapping) else recipe)
        text = loaded.to_yaml()
        template, tokenizer_folder, chat_template = _output_of(loaded)
        resident = self._residents.get(str(template))
        if resident is None:
            resident = self._residents[str(template)] = self._load_resident(template)
        if resident.recipe_yaml != text:
            resident.recipe_yaml = ""  # half-merged until merge_into_model returns
            resident.evaluator.merge_into_model(loaded, cancel)
            resident.recipe_yaml = text
        if resident.tokenizer_key != (tokenizer_folder, chat_template):
            resident.lm.tokenizer = _tokenizer(tokenizer_folder, chat_template)
            resident.tokenizer_key = (tokenizer_folder, chat_template)
        return resident.lm

    def _load_resident(self, template: Path) -> _ResidentMerge:
        from mergestudio.evaluate.resident import ResidentEvaluator

        evaluator = ResidentEvaluator(
            template, [], device=self.device, dtype=self.dtype, merge_threads=self.merge_threads
        )
        inner = evaluator.lm
        return _ResidentMerge(evaluator, CausalLM(inner.model, inner.tokenizer, inner.device, name=str(template)))

    def close(self) -> None:
        for resident in self._residents.values():
            resident.evaluator.close()
        self._residents.clear()
        self._folders.clear()


def _output_of(recipe: Recipe) -> tuple[Path, Path, str | None]:
    """Where a merge of ``recipe`` to disk would take its architecture (the config
    model's folder), its tokenizer files, and its chat template. Refuses a recipe whose
    output vocabulary differs from the config model's: the resident model has that
    model's embedding shapes. Reads headers only."""
    from mergestudio.engine.plan import build_plan

    plan = build_plan(recipe)
    try:
        root = plan.sources[plan.config_model].root
        if not (root / "config.json").is_file():
            raise GenerationError(
                f"{plan.config_model}: generating from a recipe in memory needs a config "
                f"model with a config.json; {root} has none"
            )
        tokenizer_from = plan.config_model
        if plan.vocab is not None:
            if plan.vocab.new_tokens:
                raise GenerationError(
                    f"the recipe's tokenizer plan ({plan.vocab.source}) adds "
                    f"{len(plan.vocab.new_tokens)} token(s); merge it to a folder to generate from it"
                )
            tokenizer_from = plan.vocab.files_from
        return root, plan.sources[tokenizer_from].root, plan.chat_template
    finally:
        plan.close()


def _tokenizer(folder: Path, chat_template: str | None) -> Any:
    from mergestudio.collector import IMPORT_LOCK

    with IMPORT_LOCK:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
