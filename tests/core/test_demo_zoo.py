"""The shipped demo zoo (resources/demo), read through ``demo info --json`` and measured
again now: it must show merging pay off on its test split, and its search must select on
dev and report on test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from mergestudio.demo import paths
from mergestudio.demo.results import evaluate_zoo

ZOO = paths.REPO_ROOT / "resources" / "demo"
MAX_ZOO_BYTES = 40 * 1000**2


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    from mergestudio.demo.info import zoo_info

    data = zoo_info(ZOO)
    assert data["results"] is not None, f"no results.json in {ZOO}: run `mergestudio demo build`"
    assert data["results"]["split"] == "test"
    return data


@pytest.fixture(scope="module")
def shipped(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["model"]: r for r in info["results"]["rows"]}


@pytest.fixture(scope="module")
def fresh(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The table measured again now, on the test split."""
    skills = tuple(s["skill"] for s in info["specialists"])
    merges = tuple(r["name"] for r in info["recipes"])
    rows = evaluate_zoo(ZOO, skills, merges, split="test", batch_size=100)
    return {r["model"]: r for r in rows}


def _merges(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: row for name, row in table.items() if row["kind"] == "merge"}


def test_zoo_is_small() -> None:
    size = sum(f.stat().st_size for f in ZOO.rglob("*") if f.is_file())
    assert size <= MAX_ZOO_BYTES, f"the demo zoo is {size / 1e6:.1f} MB"


def test_info_names_every_file(info: dict[str, Any]) -> None:
    assert Path(info["base"]["path"], "config.json").is_file()
    for specialist in info["specialists"]:
        assert Path(specialist["path"], "config.json").is_file()
        files = info["skills"][specialist["skill"]]
        assert all(files[split] and Path(files[split]).is_file() for split in ("train", "dev", "test"))
    assert all(Path(r["path"]).is_file() for r in info["recipes"])


def test_specialists_learn_what_the_base_cannot(fresh: dict[str, dict[str, Any]]) -> None:
    skills = list(fresh["base"]["accuracy"])
    for skill in skills:
        assert fresh[skill]["accuracy"][skill] >= 0.90, (skill, fresh[skill]["accuracy"])
        assert fresh["base"]["accuracy"][skill] <= 0.20, (skill, fresh["base"]["accuracy"])


def test_merges_keep_general_text_and_beat_the_base(fresh: dict[str, dict[str, Any]]) -> None:
    """What the shipped zoo does show: no default merge costs more than 15 % general
    perplexity, and the best one scores above the base on the skills."""
    merges = _merges(fresh)
    base = fresh["base"]
    for name, row in merges.items():
        assert row["perplexity"] <= 1.15 * base["perplexity"], (name, row["perplexity"], base["perplexity"])
    best = max(merges.values(), key=lambda r: r["normalized_mean"])
    assert best["mean"] > base["mean"] and best["normalized_mean"] > 0, (best["model"], best["mean"])


def test_merges_keep_most_of_each_specialist(fresh: dict[str, dict[str, Any]]) -> None:
    """Issue 16's bar: normalized accuracy (merge ÷ specialist, averaged over skills) of
    the default merges at least 60 % for one and 75 % for the best, and the best merges at
    least 20 points of mean accuracy above the base."""
    merges = _merges(fresh)
    normalized = {name: row["normalized_mean"] for name, row in merges.items()}
    assert max(normalized.values()) >= 0.75, normalized
    assert sum(v >= 0.60 for v in normalized.values()) >= 1, normalized
    best = max(merges.values(), key=lambda r: r["normalized_mean"])
    assert best["mean"] - fresh["base"]["mean"] >= 0.20, (best["model"], best["mean"])


def test_shipped_table_matches_a_fresh_measurement(
    shipped: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]]
) -> None:
    """results.json (and so README.md and docs/demo.md) holds measured numbers, not claims."""
    assert set(shipped) == set(fresh)
    for name, row in shipped.items():
        for skill, value in row["accuracy"].items():
            assert fresh[name]["accuracy"][skill] == pytest.approx(value, abs=0.02), (name, skill)
        if row["normalized_mean"] is not None and not math.isnan(row["normalized_mean"]):
            assert fresh[name]["normalized_mean"] == pytest.approx(row["normalized_mean"], abs=0.02)


def test_demo_search_selects_on_dev_and_reports_on_test(info: dict[str, Any]) -> None:
    from mergestudio.search import load_spec

    spec = load_spec(ZOO / "search.yml")
    dev = {str(Path(s["dev"]).resolve()) for s in info["skills"].values()}
    test = {str(Path(s["test"]).resolve()) for s in info["skills"].values()}
    assert {str(Path(o.task).resolve()) for o in spec.objectives} == dev
    assert {str(Path(str(o.test)).resolve()) for o in spec.objectives} == test


def test_readme_table_is_the_measured_one(info: dict[str, Any]) -> None:
    """The zoo's README carries the table of results.json (raw and normalized columns)."""
    from mergestudio.demo.results import table_markdown

    readme = (ZOO / "README.md").read_text(encoding="utf-8")
    assert table_markdown(info["results"]["rows"]) in readme
    assert json.loads(paths.results_file(ZOO).read_text())["rows"] == info["results"]["rows"]
