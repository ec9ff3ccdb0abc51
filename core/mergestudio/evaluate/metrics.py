"""Metric arithmetic: pure functions over strings and numbers, no model in sight."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_WHITESPACE = re.compile(r"\s+")


def normalize(text: str, steps: Sequence[str]) -> str:
    """Apply normalisation steps in order (names from ``tasks.NORMALIZERS``)."""
    for step in steps:
        if step == "strip":
            text = text.strip()
        elif step == "lower":
            text = text.lower()
        elif step == "collapse_whitespace":
            text = _WHITESPACE.sub(" ", text).strip()
        elif step == "remove_punctuation":
            text = _PUNCTUATION.sub("", text)
        else:
            raise ValueError(f"unknown normalisation step {step!r}")
    return text


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        at = text.find(s)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def exact_match(prediction: str, targets: Sequence[str], steps: Sequence[str]) -> bool:
    """True if the normalised prediction equals any normalised target."""
    p = normalize(prediction, steps)
    return any(p == normalize(t, steps) for t in targets)


def choice_index(logprobs: Sequence[float]) -> int:
    """The chosen answer: highest log-likelihood, first one on ties."""
    return max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))


def choice_index_normalized(logprobs: Sequence[float], choices: Sequence[str]) -> int:
    """The chosen answer with log-likelihood divided by the choice's length in bytes, so
    long choices are not penalised for having more tokens."""
    scores = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logprobs, choices, strict=True)]
    return choice_index(scores)


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), natural log; inf for no tokens."""
    if n_tokens <= 0:
        return math.inf
    return math.exp(total_nll / n_tokens)


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    """Negative log-likelihood in bits per UTF-8 byte: comparable across tokenizers."""
    if n_bytes <= 0:
        return math.inf
    return total_nll / math.log(2) / n_bytes


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
