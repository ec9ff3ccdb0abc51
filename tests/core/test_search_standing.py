"""Trials against their references: the base found by the recipe's base model, the
specialist of each task, mean accuracy, "beats base" and normalized accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import ObjectiveAxis
from mergestudio.search.standing import accuracy_means, beats_base, references, standing

AXES = [
    ObjectiveAxis("reverse", "maximize", "exact_match", "reverse.jsonl"),
    ObjectiveAxis("cipher", "maximize", "exact_match", "cipher.jsonl"),
    ObjectiveAxis("general", "minimize", "perplexity", "general.jsonl"),
]


def _parent(label: str, model: str, reverse: float, cipher: float, ppl: float) -> Baseline:
    recipe = {"merge_method": "passthrough", "models": [{"model": model}]}
    return Baseline(label, "parent", recipe, {"reverse": reverse, "cipher": cipher, "general": ppl}, "full")


BASELINES = [
    _parent("base", "/zoo/base", 0.2, 0.1, 30.0),
    _parent("reverse", "/zoo/reverse", 0.8, 0.0, 40.0),
    _parent("cipher", "/zoo/cipher", 0.1, 0.5, 45.0),
    Baseline("linear", "merge", {}, {"reverse": 0.4, "cipher": 0.2, "general": 35.0}, "full"),
]


def test_base_and_specialists_come_from_the_recipe_and_the_scores() -> None:
    refs = references(BASELINES, AXES, "/zoo/base")
    assert refs.base == {"reverse": 0.2, "cipher": 0.1, "general": 30.0}
    assert refs.specialist == {"reverse": "reverse", "cipher": "cipher"}  # never the base
    assert refs.specialist_scores == {"reverse": 0.8, "cipher": 0.5}
    assert refs.base_mean == pytest.approx(0.15)  # perplexity left out of the mean
    assert references(BASELINES, AXES, None).base is None
    assert references(BASELINES, AXES, "/zoo/elsewhere").base_mean is None


def test_means_beats_base_and_normalized_accuracy() -> None:
    refs = references(BASELINES, AXES, "/zoo/base")
    values = np.array([[0.4, 0.25, 20.0], [0.1, 0.1, 10.0], [np.nan, np.nan, 5.0]])
    means = accuracy_means(values, [a.maximize for a in AXES])
    np.testing.assert_allclose(means[:2], [0.325, 0.1])
    assert math.isnan(means[2])
    assert beats_base(means, refs).tolist() == [True, False, False]
    assert not beats_base(means, references(BASELINES, AXES, None)).any()
    result = standing({"reverse": 0.4, "cipher": 0.25, "general": 20.0}, refs, AXES)
    assert result.normalized == pytest.approx({"reverse": 0.5, "cipher": 0.5})
    assert result.mean_normalized == pytest.approx(0.5)
    assert result.mean_delta_vs_base == pytest.approx(0.175)
    assert result.lower_is_better == {"general": 20.0}
    assert "keeps 50 % of the specialists' skills" in result.verdict(percent_scale=False)
