"""The shipped demo zoo (resources/demo), evaluated now: the orderings that make it a
meaningful merging demo must hold on the held-out splits."""

from __future__ import annotations

import pytest
from mergestudio.demo import paths
from mergestudio.demo.info import load_results
from mergestudio.demo.results import evaluate_zoo

ZOO = paths.REPO_ROOT / "resources" / "demo"
MAX_ZOO_BYTES = 25 * 1000**2


@pytest.fixture(scope="module")
def table() -> dict[str, dict]:
    results = load_results(ZOO)
    assert results is not None, f"no shipped zoo at {ZOO}: run `mergestudio demo build`"
    skills = tuple(results["config"]["skills"])
    merges = tuple(results["config"]["merges"])
    rows = evaluate_zoo(ZOO, skills, merges, batch_size=100)
    return {r["model"]: r for r in rows}


def test_zoo_is_small() -> None:
    size = sum(f.stat().st_size for f in ZOO.rglob("*") if f.is_file())
    assert size <= MAX_ZOO_BYTES, f"the demo zoo is {size / 1e6:.1f} MB"


def test_each_specialist_is_best_at_its_own_skill(table: dict[str, dict]) -> None:
    specialists = [name for name, row in table.items() if row["kind"] == "specialist"]
    assert len(specialists) >= 3
    for skill in specialists:
        own = table[skill]["accuracy"][skill]
        for name, row in table.items():
            if name != skill:
                assert own > row["accuracy"][skill] + 0.1, (skill, name)


def test_specialists_are_worse_than_the_base_elsewhere(table: dict[str, dict]) -> None:
    base = table["base"]["accuracy"]
    for name, row in table.items():
        if row["kind"] == "specialist":
            for skill, value in row["accuracy"].items():
                if skill != name:
                    assert value < base[skill], (name, skill)


def test_a_default_merge_beats_every_specialist_on_average(table: dict[str, dict]) -> None:
    best_specialist = max(r["mean"] for r in table.values() if r["kind"] == "specialist")
    merges = {name: r["mean"] for name, r in table.items() if r["kind"] == "merge"}
    assert {"linear", "task_arithmetic", "ties"} <= set(merges)
    assert max(merges.values()) > best_specialist, merges


def test_shipped_table_matches_a_fresh_measurement(table: dict[str, dict]) -> None:
    """results.json (and so docs/demo.md) holds measured numbers, not claims."""
    results = load_results(ZOO)
    assert results is not None
    for row in results["rows"]:
        fresh = table[row["model"]]
        for skill, value in row["accuracy"].items():
            assert fresh["accuracy"][skill] == pytest.approx(value, abs=0.02), (row["model"], skill)
