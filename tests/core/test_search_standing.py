"""Trials against their references: the base marked by the baselines, the specialist of
each objective (best-scoring parent, or the one the spec names), mean accuracy, "beats
base" and normalized accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mergestudio.search import SpecError
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import ObjectiveAxis
from mergestudio.search.objectives import Objectives
from mergestudio.search.spec import spec_from_dict
from mergestudio.search.standing import accuracy_means, beats_base, references

from .test_search import spec_dict, write_search_fixture

AXES = [
    ObjectiveAxis("reverse", "maximize", "exact_match", "reverse.jsonl"),
    ObjectiveAxis("cipher", "maximize", "exact_match", "cipher.jsonl"),
    ObjectiveAxis("general", "minimize", "perplexity", "general.jsonl"),
]


def _parent(label: str, model: str, reverse: float, cipher: float, ppl: float, is_base: bool = False) -> Baseline:
    recipe = {"merge_method": "passthrough", "models": [{"model": model}]}
    values = {"reverse": reverse, "cipher": cipher, "general": ppl}
    return Baseline(label, "parent", recipe, values, "full", is_base=is_base)


BASELINES = [
    _parent("base", "/zoo/base", 0.2, 0.1, 30.0, is_base=True),
    _parent("reverse", "/zoo/reverse", 0.8, 0.0, 40.0),
    _parent("cipher", "/zoo/cipher", 0.1, 0.5, 45.0),
    _parent("generalist", "/zoo/generalist", 0.9, 0.6, 38.0),
    Baseline("linear", "merge", {}, {"reverse": 0.4, "cipher": 0.2, "general": 35.0}, "full"),
]


def test_base_and_specialists_come_from_the_baselines_and_the_scores() -> None:
    refs = references(BASELINES[:3] + BASELINES[4:], AXES)
    assert refs.base == {"reverse": 0.2, "cipher": 0.1, "general": 30.0}
    assert refs.specialist_of == {"reverse": "reverse", "cipher": "cipher"}  # never the base
    assert refs.specialist_scores == {"reverse": 0.8, "cipher": 0.5}
    assert refs.base_mean == pytest.approx(0.15)  # perplexity left out of the mean
    unflagged = [Baseline(b.label, b.kind, b.recipe, b.objectives, b.estimator) for b in BASELINES]
    assert references(unflagged, AXES).base is None


def test_a_pinned_specialist_wins_over_the_best_scoring_parent() -> None:
    # Unpinned, the generalist scores best on both skills and becomes both specialists.
    assert references(BASELINES, AXES).specialist_of == {"reverse": "generalist", "cipher": "generalist"}
    pinned = [
        ObjectiveAxis("reverse", "maximize", "exact_match", "reverse.jsonl", specialist="/zoo/reverse"),
        ObjectiveAxis("cipher", "maximize", "exact_match", "cipher.jsonl", specialist="cipher"),  # a label
        AXES[2],
    ]
    refs = references(BASELINES, pinned)
    assert refs.specialist_of == {"reverse": "reverse", "cipher": "cipher"}
    assert refs.specialist_scores == {"reverse": 0.8, "cipher": 0.5}
    # A pin no parent matches (a run scored before the pin) falls back to the best parent.
    stale = [ObjectiveAxis("reverse", "maximize", "exact_match", "reverse.jsonl", specialist="/zoo/gone")]
    assert references(BASELINES, stale).specialist_of == {"reverse": "generalist"}


def test_means_beats_base_and_normalized_accuracy() -> None:
    refs = references(BASELINES[:3], AXES)
    values = np.array([[0.4, 0.25, 20.0], [0.1, 0.1, 10.0], [np.nan, np.nan, 5.0]])
    means = accuracy_means(values, [a.maximize for a in AXES])
    np.testing.assert_allclose(means[:2], [0.325, 0.1])
    assert math.isnan(means[2])
    assert beats_base(means, refs).tolist() == [True, False, False]
    assert not beats_base(means, references(BASELINES[1:3], AXES)).any()
    result = refs.compare({"reverse": 0.4, "cipher": 0.25, "general": 20.0})
    assert result.normalized == pytest.approx({"reverse": 0.5, "cipher": 0.5})
    assert result.mean_normalized == pytest.approx(0.5)
    assert result.mean_delta_vs_base == pytest.approx(0.175)
    assert result.lower_is_better == {"general": 20.0}
    assert "keeps 50 % of the specialists' skills" in result.verdict(percent_scale=False)


def test_the_spec_pins_specialists_among_the_recipes_models(tmp_path: Path) -> None:
    root = write_search_fixture(tmp_path)
    objectives = [{"task": "ta.jsonl", "specialist": "a"}, {"task": "tb.jsonl", "specialist": "b"}]
    spec = spec_from_dict(spec_dict(objectives=objectives), root=root)
    built = Objectives.build(spec)
    assert [Path(o.specialist or "").name for o in built.items] == ["a", "b"]
    with pytest.raises(SpecError, match=r"objectives\[1\]\.specialist: 'nobody' is not one of the recipe's"):
        spec_from_dict(spec_dict(objectives=[{"task": "ta.jsonl"}, {"task": "tb.jsonl", "specialist": "nobody"}]),
                       root=root)
