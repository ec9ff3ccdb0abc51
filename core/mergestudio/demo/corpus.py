"""A general synthetic corpus: short English-like sentences from a small grammar.

The base model learns this language alongside small instances of every skill; the
held-out part (different seed, sentences never seen in training) measures perplexity.
"""

from __future__ import annotations

import random

_NOUNS = [
    "cat",
    "dog",
    "bird",
    "fish",
    "horse",
    "child",
    "farmer",
    "baker",
    "king",
    "queen",
    "robot",
    "river",
    "tree",
    "house",
    "garden",
    "boat",
    "city",
    "road",
    "apple",
    "book",
    "lamp",
    "song",
    "storm",
    "cloud",
    "stone",
    "door",
    "window",
    "hill",
]
_ADJECTIVES = [
    "small",
    "big",
    "old",
    "young",
    "red",
    "green",
    "blue",
    "quiet",
    "loud",
    "happy",
    "tired",
    "bright",
    "dark",
]
_VERBS = ["sees", "finds", "likes", "helps", "follows", "paints", "builds", "carries", "watches", "hears"]
_INTRANSITIVE = ["sleeps", "sings", "runs", "waits", "falls", "grows", "shines", "rests", "dances", "smiles"]
_PLACES = ["near the river", "in the garden", "on the hill", "by the road", "at home", "in the city"]
_TIMES = ["today", "at night", "in the morning", "every day", "after the storm", "once"]


def _noun_phrase(rng: random.Random) -> str:
    det = rng.choice(("the", "a", "the", "every", "one"))
    if rng.random() < 0.5:
        return f"{det} {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
    return f"{det} {rng.choice(_NOUNS)}"


def _clause(rng: random.Random) -> str:
    subject = _noun_phrase(rng)
    if rng.random() < 0.6:
        core = f"{subject} {rng.choice(_VERBS)} {_noun_phrase(rng)}"
    else:
        core = f"{subject} {rng.choice(_INTRANSITIVE)}"
    if rng.random() < 0.4:
        core += " " + rng.choice(_PLACES)
    if rng.random() < 0.25:
        core += " " + rng.choice(_TIMES)
    return core


def sentence(rng: random.Random) -> str:
    """One sentence, e.g. ``"the old king sees a red boat near the river."``."""
    text = _clause(rng)
    if rng.random() < 0.3:
        text += rng.choice((" and ", " but ", " so ")) + _clause(rng)
    return text + rng.choice((".", ".", ".", "!"))


def sentences(rng: random.Random, n: int) -> list[str]:
    return [sentence(rng) for _ in range(n)]
