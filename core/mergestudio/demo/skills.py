"""The demo skills: tiny prompt -> answer problems a ~1M-parameter model can learn.

Every skill has a *size* (digits per operand, letters per word). The base model sees
only small instances during pre-training, so it solves part of each evaluation set;
a specialist is fine-tuned on the full size range of its own skill. Skills share the
same letters and digits, so fine-tuning on one disturbs the others, which is what makes
merging them a real trade-off.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase

# A fixed letter permutation for the cipher skill, chosen once with its own seed so it
# never changes when other seeds do.
_CIPHER_RNG = random.Random(1234)
CIPHER_KEY: dict[str, str] = dict(zip(LETTERS, _CIPHER_RNG.sample(LETTERS, len(LETTERS)), strict=True))


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer


@dataclass(frozen=True)
class Skill:
    """A skill: a name, a prompt keyword, and a generator of one example of a given size."""

    name: str
    description: str
    make: Callable[[random.Random, int], Example]
    min_size: int
    max_size: int
    base_max_size: int  # the base model only ever sees sizes up to this

    def sample(self, rng: random.Random, max_size: int | None = None) -> Example:
        hi = self.max_size if max_size is None else max_size
        return self.make(rng, rng.randint(self.min_size, hi))


def _word(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(size))


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _add(rng: random.Random, size: int) -> Example:
    # Operands have `size` and 1..size digits, in random order, so carries of every
    # length appear. (Not in the default zoo: at ~1M parameters the base learns too
    # little addition in the build's time budget for the specialist ordering to hold.)
    a = _number(rng, size)
    b = _number(rng, rng.randint(1, size))
    if rng.random() < 0.5:
        a, b = b, a
    return Example(f"add {a}+{b}=", str(a + b))


def _reverse(rng: random.Random, size: int) -> Example:
    w = _word(rng, size)
    return Example(f"rev {w}=", w[::-1])


def _cipher(rng: random.Random, size: int) -> Example:
    w = _word(rng, size)
    return Example(f"enc {w}=", "".join(CIPHER_KEY[c] for c in w))


def _double(rng: random.Random, size: int) -> Example:
    w = _word(rng, size)
    return Example(f"dup {w}=", "".join(c + c for c in w))


def _sort(rng: random.Random, size: int) -> Example:
    w = _word(rng, size)
    return Example(f"sort {w}=", "".join(sorted(w)))


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("add", "add two numbers of up to 3 digits", _add, 2, 3, 2),
        Skill("reverse", "reverse a word of 3-7 letters", _reverse, 3, 7, 4),
        Skill("cipher", "apply a fixed letter substitution to a word", _cipher, 3, 7, 4),
        Skill("sort", "sort the letters of a word", _sort, 3, 7, 4),
        Skill("double", "write every letter of a word twice", _double, 3, 7, 4),
    )
}
