"""The demo skills: tiny prompt -> answer problems a ~1M-parameter model can learn.

Each skill is an operation on a 3-4 character input with two surface forms:

- the **instruction** form the specialists are fine-tuned and evaluated on, one line
  ``<keyword> <input>=<answer>``, e.g. ``rev kqpz=zpqk``;
- a **sentence** form the base reads during pre-training, e.g. ``kqpz backwards is zpqk.``:
  competence that is there but not wired to the instruction, as in a real base model.
  The base never sees the skills' keywords, so it (almost) never answers them right.

The skills read and write different characters (lowercase -> lowercase, lowercase ->
UPPERCASE, digits -> digits, digits -> twice as many digits), so their fine-tunes move
mostly different rows of the output layer. ``COPY_TASKS`` (copying at every size, in the
instruction format) teach the base the format itself.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase
DIGITS = string.digits

# A fixed letter -> UPPERCASE substitution for the cipher skill, chosen once with its own
# seed so it never changes when other seeds do.
_CIPHER_RNG = random.Random(1234)
CIPHER_KEY: dict[str, str] = dict(
    zip(LETTERS, _CIPHER_RNG.sample(string.ascii_uppercase, len(LETTERS)), strict=True)
)


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer


@dataclass(frozen=True)
class Skill:
    """An operation with its instruction keyword.

    ``alphabet``: the characters inputs are drawn from. Sizes (input lengths) are uniform
    over ``min_size..max_size`` for fine-tuning, ``held_out_min_size..max_size`` for dev
    and test, and ``min_size..base_max_size`` for the base's pre-training.
    """

    name: str
    description: str
    keyword: str
    alphabet: str
    solve: Callable[[str], str]
    sentence_template: str = "{x} is {y}."  # ``{x}``: the input, ``{y}``: the answer
    min_size: int = 3
    max_size: int = 4
    base_max_size: int = 4
    held_out_min_size: int = 3

    def draw(self, rng: random.Random, low: int | None = None, high: int | None = None) -> str:
        size = rng.randint(self.min_size if low is None else low, self.max_size if high is None else high)
        return "".join(rng.choice(self.alphabet) for _ in range(size))

    def draw_held_out(self, rng: random.Random) -> str:
        return self.draw(rng, low=self.held_out_min_size)

    def draw_base(self, rng: random.Random) -> str:
        return self.draw(rng, high=self.base_max_size)

    def example(self, x: str) -> Example:
        return Example(f"{self.keyword} {x}=", self.solve(x))

    def sample(self, rng: random.Random) -> Example:
        return self.example(self.draw(rng))

    def sentence(self, x: str) -> str:
        """The operation on ``x`` written as a sentence, as the base reads it."""
        return self.sentence_template.format(x=x, y=self.solve(x))


def _reverse(x: str) -> str:
    return x[::-1]


def _cipher(x: str) -> str:
    return "".join(CIPHER_KEY[c] for c in x)


def _sort(x: str) -> str:
    return "".join(sorted(x))


def _double(x: str) -> str:
    return "".join(c + c for c in x)


def _copy(x: str) -> str:
    return x


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("reverse", "reverse a word of 3-4 letters", "rev", LETTERS, _reverse, "{x} backwards is {y}."),
        Skill(
            "cipher",
            "encode a word of 3-4 letters with a fixed letter -> UPPERCASE substitution",
            "enc",
            LETTERS,
            _cipher,
            "{x} in code is {y}.",
        ),
        Skill("sort", "sort the digits of a 3-4 digit number", "sort", DIGITS, _sort, "{x} in order is {y}."),
        Skill("double", "write each of 3-4 digits twice", "dup", DIGITS, _double, "{x} said twice is {y}."),
    )
}


# Copying at every size (letters and digits), in the instruction format: part of the
# base's pre-training, so the base knows the ``<keyword> <input>=`` format and when to
# stop, and the specialists need not learn it four times over.
COPY_TASKS: tuple[Skill, ...] = (
    Skill("copy", "copy a word", "cpy", LETTERS, _copy, max_size=7),
    Skill("copy-digits", "copy a number", "cpy", DIGITS, _copy, max_size=7),
)
