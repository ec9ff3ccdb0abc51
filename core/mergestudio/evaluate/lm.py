"""A loaded causal language model and the three primitive queries the metrics need:
log-likelihood of a continuation, greedy generation, and token negative log-likelihood
of a text. Works with any `transformers` causal LM folder.

All requests are batched, sorted by length so a batch wastes little padding, and
returned in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.collector import IMPORT_LOCK
from mergestudio.errors import MergeStudioError

if TYPE_CHECKING:
    import torch

# Called after each batch with the number of requests it finished.
BatchDone = Callable[[int], None]

_DEFAULT_MAX_LENGTH = 2048


class ModelLoadError(MergeStudioError):
    """A model folder could not be loaded for evaluation."""


@dataclass(frozen=True)
class LogLikelihood:
    logprob: float  # sum of log p(continuation token) in nats
    is_greedy: bool  # every continuation token was the argmax
    n_tokens: int


@dataclass(frozen=True)
class TextNLL:
    nll: float  # sum of -log p over scored tokens, nats
    n_tokens: int  # tokens scored (the first token has no context and is not scored)


def resolve_device(device: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; a named device that is not here is a
    MergeError naming it."""
    if device != "auto":
        from mergestudio.engine.device import resolve_device as available

        available(device)
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _local_folder(path: str | Path) -> Path:
    """``path``, or for ``org/name[@revision]`` its snapshot folder (downloaded into the
    studio's Hub cache when missing, with the caller's ``hub_transfer`` progress)."""
    from mergestudio.io.sources import is_hub_reference

    if not is_hub_reference(str(path)):
        return Path(path)
    from mergestudio.io.hub import download_snapshot

    repo_id, _, revision = str(path).partition("@")
    return download_snapshot(repo_id, revision or None)[0]


def check_weight_headers(path: Path) -> None:
    """Our own safetensors header checks first, so a corrupt file is reported by name and
    tensor (as ``merge`` reports it), not as a loader's traceback."""
    from mergestudio.io.safetensors_file import read_header

    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    for file in files:
        if file.suffix == ".safetensors":
            read_header(file)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is float32 on CPU (half precision is slow there) and bfloat16 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r} (known: auto, {', '.join(table)})")
    return table[dtype]


class CausalLM:
    """A model and its tokenizer, ready for scoring. The model's weights may be replaced
    in place between calls (the resident evaluator does that); nothing here caches them."""

    def __init__(self, model: Any, tokenizer: Any, device: str, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.name = name
        self.max_length = _max_length(model, tokenizer)
        # Padding needs some id; it is always masked out, so eos (or 0) does no harm.
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id: int = int(pad)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str = "auto") -> CausalLM:
        """Load a `transformers` causal LM folder (config, weights, tokenizer); a Hub id is
        the snapshot in the studio's one Hub cache (``io.hub``), never transformers' own."""
        path = _local_folder(path)
        dev = resolve_device(device)
        try:
            torch_dtype = resolve_dtype(dtype, dev)
        except ValueError as exc:
            raise ModelLoadError(f"dtype: {exc}") from None
        check_weight_headers(Path(path))
        # Loading imports the family's modules lazily: not at the same time as a warm-up.
        with IMPORT_LOCK:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path))
                model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
            except Exception as exc:  # transformers and safetensors raise many types for a bad folder
                raise ModelLoadError(
                    f"{path}: cannot load as a causal language model: {type(exc).__name__}: {exc}"
                ) from exc
        model.to(dev)
        model.eval()
        return cls(model, tokenizer, dev, name=str(path))

    # -- tokenisation ---------------------------------------------------------------

    def encode(self, text: str, special: bool = True) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def _context_and_continuation(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of ``context`` and of ``continuation`` after it.

        The whole string is encoded once and split where the context's own encoding
        ends, so tokens that merge across the boundary are handled; when the encodings
        disagree, the continuation is encoded on its own."""
        ctx = self.encode(context)
        whole = self.encode(context + continuation)
        if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
            cont = whole[len(ctx) :]
        else:
            cont = self.encode(continuation, special=False)
        if not ctx:
            # A first token needs something to be predicted from.
            ctx = [self._start_id()]
        return ctx, cont

    def _start_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return self.pad_id

    # -- queries ------------------------------------------------------------------

    def loglikelihood(
        self,
        requests: Sequence[tuple[str, str]],
        batch_size: int,
        on_batch: BatchDone | None = None,
    ) -> list[LogLikelihood]:
        """log p(continuation | context) for each (context, continuation)."""
        encoded = [self._context_and_continuation(c, x) for c, x in requests]
        return self.loglikelihood_ids(encoded, batch_size, on_batch)

    def loglikelihood_ids(
        self,
        encoded: Sequence[tuple[list[int], list[int]]],
        batch_size: int,
        on_batch: BatchDone | None = None,
    ) -> list[LogLikelihood]:
        """log p(continuation | context) for each (context ids, continuation ids): for
        callers that tokenise themselves (the lm-evaluation-harness wrapper)."""
        rows: list[tuple[list[int], int]] = []
        for ctx, cont in encoded:
            # Keep the most recent tokens that fit; at least one token must stay as
            # context, so an over-long continuation is scored on its tail only.
            ids = (ctx + cont)[-self.max_length :]
            rows.append((ids, min(len(cont), len(ids) - 1)))
        results: list[LogLikelihood | None] = [None] * len(rows)
        for batch in _batches(rows, batch_size, key=lambda r: len(r[0])):
            scored = self._score_rows([rows[i] for i in batch])
            for i, value in zip(batch, scored, strict=True):
                results[i] = value
            if on_batch is not None:
                on_batch(len(batch))
        return [r for r in results if r is not None]

    def text_nll(
        self,
        texts: Sequence[str],
        batch_size: int,
        on_text: BatchDone | None = None,
    ) -> list[TextNLL]:
        """Negative log-likelihood of every token of each text after the first.

        Texts longer than the model's context are cut into windows: each window scores
        up to ``max_length - 1`` new tokens with as much preceding text as fits."""
        rows: list[tuple[list[int], int]] = []
        owner: list[int] = []  # which text each window belongs to
        for t, text in enumerate(texts):
            ids = self.encode(text)
            for start, first, end in _windows(ids, self.max_length):
                rows.append((ids[start:end], end - first))
                owner.append(t)
        nll = [0.0] * len(texts)
        count = [0] * len(texts)
        windows_left = [owner.count(t) for t in range(len(texts))]
        if on_text is not None and 0 in windows_left:
            on_text(windows_left.count(0))  # one-token texts: nothing to score
        for batch in _batches(rows, batch_size, key=lambda r: len(r[0])):
            finished = 0
            for i, value in zip(batch, self._score_rows([rows[i] for i in batch]), strict=True):
                t = owner[i]
                nll[t] -= value.logprob
                count[t] += value.n_tokens
                windows_left[t] -= 1
                finished += windows_left[t] == 0
            if on_text is not None and finished:
                on_text(finished)
        return [TextNLL(n, c) for n, c in zip(nll, count, strict=True)]

    def _score_rows(self, rows: Sequence[tuple[list[int], int]]) -> list[LogLikelihood]:
        """Score the last ``n`` tokens of each row of ids. Rows are right-padded, so the
        causal mask alone keeps padding from touching real tokens."""
        import torch

        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits  # (B, T, V)
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        results = []
        for r, (ids, n) in enumerate(rows):
            # Position t predicts token t + 1.
            targets = torch.tensor(ids[len(ids) - n :], dtype=torch.long)  # (n,)
            pred = logprobs[r, len(ids) - n - 1 : len(ids) - 1]  # (n, V)
            picked = pred.gather(1, targets[:, None]).squeeze(1)
            greedy = bool((pred.argmax(dim=-1) == targets).all())
            results.append(LogLikelihood(float(picked.sum()), greedy, n))
        return results

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str],
        batch_size: int,
        on_batch: BatchDone | None = None,
    ) -> list[str]:
        """Greedy continuations of each prompt, cut at the first stop string.

        Prompts are left-padded so every row's next token sits in the last column;
        generation stops early once every row has produced eos or a stop string."""
        encoded = [self.encode(p) or [self._start_id()] for p in prompts]
        budget = self.max_length - max_new_tokens
        if budget < 1:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                f"the model's context of {self.max_length} tokens"
            )
        encoded = [ids[-budget:] for ids in encoded]
        out: list[str | None] = [None] * len(encoded)
        for batch in _batches(encoded, batch_size, key=len):
            texts = self._generate_batch([encoded[i] for i in batch], max_new_tokens, stop)
            for i, text in zip(batch, texts, strict=True):
                out[i] = text
            if on_batch is not None:
                on_batch(len(batch))
        return [t if t is not None else "" for t in out]

    def _generate_batch(
        self, rows: Sequence[list[int]], max_new_tokens: int, stop: Sequence[str]
    ) -> list[str]:
        import torch

        from mergestudio.evaluate.metrics import truncate_at_stop

        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids) :] = 1
        criteria = _stop_criteria(self.tokenizer, width, stop)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.pad_id,
                stopping_criteria=criteria,
            )
        new = generated[:, width:].cpu()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [truncate_at_stop(t, stop) for t in texts]


def _stop_criteria(tokenizer: Any, prompt_width: int, stop: Sequence[str]) -> Any:
    """A stopping criterion that ends a row once its new text contains a stop string.
    (eos is handled by `generate` itself.)"""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            import torch

            texts = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
            done = [any(s in t for s in stop) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopStrings()]) if stop else StoppingCriteriaList()


def _max_length(model: Any, tokenizer: Any) -> int:
    """The context length: the model config's, capped by a sane tokenizer limit."""
    config = getattr(model, "config", None)
    candidates = [
        getattr(config, key, None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
    ]
    lengths = [int(c) for c in candidates if isinstance(c, int) and c > 0]
    tok_max = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (1e30); ignore it.
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        lengths.append(tok_max)
    return min(lengths) if lengths else _DEFAULT_MAX_LENGTH


def _windows(ids: Sequence[int], max_length: int) -> list[tuple[int, int, int]]:
    """Split scoring of ids[1:] into windows ``(start, first, end)``: the model reads
    ids[start:end] and scores tokens ids[first:end]. Every token after the first is
    scored exactly once, each with at most ``max_length - 1`` tokens of context."""
    windows = []
    first = 1
    while first < len(ids):
        end = min(len(ids), first + max_length - 1)
        start = max(0, end - max_length)
        windows.append((start, first, end))
        first = end
    return windows


def _batches(rows: Sequence[Any], batch_size: int, key: Callable[[Any], int]) -> list[list[int]]:
    """Indices of ``rows`` grouped into batches, longest first (so an out-of-memory error
    shows up on the first batch rather than the last)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(rows)), key=lambda i: -key(rows[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def quiet_transformers() -> None:
    """transformers draws a progress bar and logs for every load and save; a window or a
    command line has its own progress (no-op without transformers)."""
    try:
        from transformers.utils import logging
    except ImportError:
        return
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
