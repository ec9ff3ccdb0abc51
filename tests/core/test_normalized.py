"""Normalized accuracy and Δ vs base: the arithmetic every results table shares."""

from __future__ import annotations

import math

from mergestudio.evaluate.normalized import best_model_per_task, compare, normalized_accuracy


def test_normalized_is_ratio_to_the_specialist_and_nan_for_a_zero_specialist():
    out = normalized_accuracy({"a": 45.0, "b": 30.0, "c": 10.0}, {"a": 90.0, "b": 0.0})
    assert out["a"] == 0.5
    assert math.isnan(out["b"])
    assert "c" not in out


def test_comparison_means_skip_perplexity_and_say_what_they_mean():
    cmp = compare(
        {"a": 80.0, "b": 60.0, "ppl": 1.7},
        base={"a": 20.0, "b": 20.0, "ppl": 1.6},
        specialist={"a": 100.0, "b": 80.0},
        lower_is_better=["ppl"],
    )
    assert cmp.raw == {"a": 80.0, "b": 60.0}
    assert cmp.lower_is_better == {"ppl": 1.7}
    assert cmp.mean_raw == 70.0
    assert cmp.mean_delta_vs_base == 50.0
    assert cmp.mean_normalized == (0.8 + 0.75) / 2
    assert cmp.verdict() == "keeps 78 % of the specialists' skills; +50.0 points over the base"
    below = compare({"a": 0.1}, base={"a": 0.3})
    assert below.verdict(percent_scale=False) == "20.0 points below the base"


def test_best_model_per_task_picks_the_top_scorer_and_breaks_ties_by_name():
    scores = {"y": {"a": 0.9, "b": 0.5}, "x": {"a": 0.9, "b": 0.7}, "z": {"b": math.nan}}
    assert best_model_per_task(scores, ["a", "b", "c"]) == {"a": "x", "b": "x"}
