"""The demo skills: tiny prompt -> one-character answer problems a ~1M-parameter model can learn.

Every task is one line ``<keyword> <input>=<answer>`` over an input of 3-5 characters.
The base is pre-trained to follow a repertoire of such instructions under their long
names (``BASE_TASKS``: ``last kqpz=z``, ``max 3819=9``, ... and copying). Each skill is
one of those operations under a **short command the base never saw** (``end kqpz=``):
what a specialist learns is the command, wired to competence the base already has, which
is what instruction tuning of a real pre-trained model mostly does. Asked the short
command, the base answers something else.

The skills read and write different characters (lowercase -> lowercase, lowercase ->
UPPERCASE, digits -> digits, digits -> symbols), so their fine-tunes touch mostly
different rows of the embedding and output layers. The base also learns operations no
skill uses (the first letter, the smallest digit, ...), so an unknown command does not
default to any one skill's answer.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase
DIGITS = string.digits
# The symbol on each digit's key of a US keyboard's top row (shift + digit), indexed by digit.
SHIFTED_DIGITS = ")!@#$%^&*("

# A fixed letter -> UPPERCASE substitution for the cipher operations, chosen once with its
# own seed so it never changes when other seeds do.
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
class Instruction:
    """An operation under one instruction keyword: ``<keyword> <input>=<solve(input)>``.

    ``alphabet``: the characters inputs are drawn from; sizes are uniform over
    ``min_size..max_size``. ``base_keyword``: the long name the base is pre-trained to
    follow for the same operation (equal to ``keyword`` for the base's own tasks).
    """

    name: str
    description: str
    keyword: str
    alphabet: str
    solve: Callable[[str], str]
    base_keyword: str = ""
    min_size: int = 3
    max_size: int = 5

    def draw(self, rng: random.Random) -> str:
        size = rng.randint(self.min_size, self.max_size)
        return "".join(rng.choice(self.alphabet) for _ in range(size))

    def example(self, x: str) -> Example:
        """The instruction form the task is evaluated on."""
        return Example(f"{self.keyword} {x}=", self.solve(x))

    def sample(self, rng: random.Random) -> Example:
        return self.example(self.draw(rng))

    def base_line(self, x: str) -> str:
        """The same operation on ``x`` under its long name, as the base reads it."""
        return f"{self.base_keyword or self.keyword} {x}={self.solve(x)}"


def _last(x: str) -> str:
    return x[-1]


def _first(x: str) -> str:
    return x[0]


def _cipher_first(x: str) -> str:
    return CIPHER_KEY[x[0]]


def _cipher_last(x: str) -> str:
    return CIPHER_KEY[x[-1]]


def _largest(x: str) -> str:
    return max(x)


def _smallest(x: str) -> str:
    return min(x)


def _symbol_first(x: str) -> str:
    return SHIFTED_DIGITS[int(x[0])]


def _symbol_last(x: str) -> str:
    return SHIFTED_DIGITS[int(x[-1])]


def _copy(x: str) -> str:
    return x


SKILLS: dict[str, Instruction] = {
    s.name: s
    for s in (
        Instruction("last", "the last letter of a word of 3-5 letters", "end", LETTERS, _last, "last"),
        Instruction(
            "cipher",
            "the first letter of a word of 3-5 letters in code (a fixed letter -> UPPERCASE substitution)",
            "key",
            LETTERS,
            _cipher_first,
            "code",
        ),
        Instruction("max", "the largest digit of a 3-5 digit number", "top", DIGITS, _largest, "max"),
        Instruction(
            "symbol",
            "the symbol on the key of a 3-5 digit number's first digit (shift + digit: 1 -> !, 2 -> @, ...)",
            "sym",
            DIGITS,
            _symbol_first,
            "mark",
        ),
    )
}

# What the base is pre-trained to follow besides the skills' operations under their long
# names: neighbouring operations on the same inputs (so a command the base does not know
# is not read as any one skill), and copying at every size.
BASE_TASKS: tuple[Instruction, ...] = (
    Instruction("first", "the first letter of a word", "first", LETTERS, _first),
    Instruction("cipher-last", "the last letter of a word in code", "codel", LETTERS, _cipher_last),
    Instruction("min", "the smallest digit of a number", "min", DIGITS, _smallest),
    Instruction("symbol-last", "the symbol on the key of a number's last digit", "markl", DIGITS, _symbol_last),
)
COPY_TASKS: tuple[Instruction, ...] = (
    Instruction("copy", "copy a word", "cpy", LETTERS, _copy, max_size=7),
    Instruction("copy-digits", "copy a number", "cpy", DIGITS, _copy, max_size=7),
)


# The base's answer to a command it was not taught: pre-training pairs random unknown
# keywords with it, so the base says it does not know rather than guessing one of the
# operations it knows (a guess would score on some skill by chance).
UNKNOWN_ANSWER = "?"


def unknown_command_line(rng: random.Random, known: set[str]) -> str:
    """``<kw> <input>=?`` for a random three-letter keyword not in ``known``."""
    while True:
        keyword = "".join(rng.choice(LETTERS) for _ in range(3))
        if keyword not in known:
            break
    alphabet = rng.choice((LETTERS, DIGITS))
    x = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 5)))
    return f"{keyword} {x}={UNKNOWN_ANSWER}"
