"""Results that say what they mean: the evaluation cache (by content), several models under
one progress bar, ``mergestudio eval --base/--normalize-by``, and normalized accuracy in
search baselines and ``runs show``. Models are hand-built bigram Llamas whose greedy
continuations are known, so each model's exact-match accuracy is known item by item."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from mergestudio.events import Progress

from tests.core.evalfixtures import write_bigram_model

# Each model's bigram table; "</s>" ends a generation.
BASE = {"q": "a", "a": "</s>", "r": "x", "x": "</s>"}  # knows the first step of each skill
SKILL_Q = {"q": "a", "a": "b", "b": "c", "c": "</s>"}  # specialist of task "tq": q -> abc
SKILL_R = {"r": "x", "x": "y", "y": "z", "z": "</s>"}  # specialist of task "tr": r -> xyz
MERGED = {"q": "a", "a": "b", "b": "c", "c": "</s>", "r": "x", "x": "</s>"}  # one skill and a half

# (prompt, target): who gets it right is read off the tables above.
TASK_Q = [("q", "abc"), ("qa", "bc"), ("qab", "c"), ("q", "a")]
TASK_R = [("r", "xyz"), ("rx", "yz"), ("rxy", "z"), ("r", "x")]


def _write_task(path: Path, name: str, items: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"task": {"name": name, "max_new_tokens": 4}})]
    lines += [json.dumps({"id": f"{name}-{i}", "prompt": p, "target": t}) for i, (p, t) in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _accuracy(table: dict[str, str], items: list[tuple[str, str]]) -> float:
    """Exact match of greedy generation from the bigram table, computed by hand."""
    right = 0
    for prompt, target in items:
        out, current = "", prompt[-1]
        while len(out) < 4 and table.get(current, "</s>") != "</s>":
            current = table[current]
            out += current
        right += out == target
    return right / len(items)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    folders = {name: root / name for name in ("base", "skill_q", "skill_r", "merged")}
    for name, table in (("base", BASE), ("skill_q", SKILL_Q), ("skill_r", SKILL_R), ("merged", MERGED)):
        write_bigram_model(folders[name], table)
    folders["tq"] = _write_task(root / "tq.test.jsonl", "tq", TASK_Q)
    folders["tr"] = _write_task(root / "tr.test.jsonl", "tr", TASK_R)
    return folders


def _expected() -> dict[str, dict[str, float]]:
    tables = {"base": BASE, "skill_q": SKILL_Q, "skill_r": SKILL_R, "merged": MERGED}
    return {m: {"tq": _accuracy(t, TASK_Q), "tr": _accuracy(t, TASK_R)} for m, t in tables.items()}


def test_hand_computed_accuracies_are_not_trivial() -> None:
    # The fixture is only useful if the numbers differ: guard against a degenerate table.
    expected = _expected()
    assert expected["skill_q"]["tq"] == 0.75 and expected["skill_r"]["tr"] == 0.75
    assert expected["base"] == {"tq": 0.25, "tr": 0.25}
    assert expected["merged"] == {"tq": 0.75, "tr": 0.25}


# ---- the cache and one progress stream ---------------------------------------------------


def test_repeat_evaluates_only_what_changed(zoo: dict[str, Path], tmp_path: Path) -> None:
    from mergestudio.evaluate.cache import EvalSettings, EvaluationCache, evaluate_models

    merged = tmp_path / "merged"
    shutil.copytree(zoo["merged"], merged)
    models = {"merged": merged, "base": zoo["base"], "skill_q": zoo["skill_q"]}
    tasks = [zoo["tq"], zoo["tr"]]
    settings = EvalSettings(device="cpu", dtype="float32")
    cache = EvaluationCache(tmp_path / "cache")

    first = evaluate_models(models, tasks, settings, cache=cache)
    assert first.evaluated == ("merged", "base", "skill_q")
    second = evaluate_models(models, tasks, settings, cache=EvaluationCache(tmp_path / "cache"))
    assert second.evaluated == ()
    assert {k: r.scores for k, r in second.reports.items()} == {k: r.scores for k, r in first.reports.items()}

    # A re-merge that writes other weights is scored again; the parents are not.
    shutil.rmtree(merged)
    write_bigram_model(merged, SKILL_R)
    third = evaluate_models(models, tasks, settings, cache=cache)
    assert third.evaluated == ("merged",)
    assert third.reports["merged"].scores == _expected()["skill_r"]
    # Other settings are another question: everything is scored again.
    fourth = evaluate_models(models, tasks, EvalSettings(limit=2, device="cpu", dtype="float32"), cache=cache)
    assert fourth.evaluated == ("merged", "base", "skill_q")


def test_cache_key_follows_content_not_path(zoo: dict[str, Path], tmp_path: Path) -> None:
    from mergestudio.evaluate.cache import EvalSettings, EvaluationCache

    cache = EvaluationCache(tmp_path / "cache")
    copy = tmp_path / "renamed"
    shutil.copytree(zoo["base"], copy)
    settings = EvalSettings()
    assert cache.key(copy, [zoo["tq"]], settings) == cache.key(zoo["base"], [zoo["tq"]], settings)
    (copy / "README.md").write_text("a model card changes no score")
    assert cache.key(copy, [zoo["tq"]], settings) == cache.key(zoo["base"], [zoo["tq"]], settings)
    assert cache.key(zoo["skill_q"], [zoo["tq"]], settings) != cache.key(zoo["base"], [zoo["tq"]], settings)
    assert cache.key(zoo["base"], [zoo["tr"]], settings) != cache.key(zoo["base"], [zoo["tq"]], settings)


def test_a_damaged_cache_entry_is_evaluated_again(zoo: dict[str, Path], tmp_path: Path) -> None:
    from mergestudio.evaluate.cache import EvalSettings, EvaluationCache, evaluate_models

    cache = EvaluationCache(tmp_path / "cache")
    settings = EvalSettings(device="cpu")
    evaluate_models({"base": zoo["base"]}, [zoo["tq"]], settings, cache=cache)
    for entry in (tmp_path / "cache").glob("*.json"):
        if entry.name != "file-hashes.json":
            entry.write_text("{not json")
    again = evaluate_models({"base": zoo["base"]}, [zoo["tq"]], settings, cache=cache)
    assert again.evaluated == ("base",)


def test_one_progress_stream_covers_every_model(zoo: dict[str, Path], tmp_path: Path) -> None:
    from mergestudio.evaluate.cache import EvalSettings, EvaluationCache, evaluate_models

    cache = EvaluationCache(tmp_path / "cache")
    settings = EvalSettings(batch_size=1, device="cpu")
    evaluate_models({"base": zoo["base"]}, [zoo["tq"], zoo["tr"]], settings, cache=cache)
    events: list[Progress] = []
    models = {"merged": zoo["merged"], "base": zoo["base"], "skill_q": zoo["skill_q"], "skill_r": zoo["skill_r"]}
    evaluate_models(models, [zoo["tq"], zoo["tr"]], settings, cache=cache, events=events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    items = len(TASK_Q) + len(TASK_R)
    assert {p.total for p in progress} == {3 * items}  # the cached base is not in the job
    done = [p.done for p in progress]
    assert done == sorted(done) and done[-1] == 3 * items
    assert {p.job for p in progress} == {"evaluate"}
    # The cached base says how long each task takes: the ETA is measured from the start.
    assert all(p.remaining_s is not None for p in progress)
    assert progress[-1].eta_s == 0.0
    assert [p.current.split(":")[0] for p in progress if p.current][-1] == "skill_r"


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_normalize_by_matches_an_independent_computation(
    zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mergestudio.cli.main import main
    from mergestudio.evaluate import evaluate_path

    # The specialists as a report (written by `eval --json`) and as a folder.
    report_q = tmp_path / "skill_q.json"
    assert main(["eval", str(zoo["skill_q"]), "--task", str(zoo["tq"]), "--task", str(zoo["tr"]),
                 "--device", "cpu", "--json", str(report_q), "-q"]) == 0
    out = tmp_path / "merged.json"
    capsys.readouterr()
    code = main([
        "eval", str(zoo["merged"]), "--task", str(zoo["tq"]), "--task", str(zoo["tr"]), "--device", "cpu",
        "--base", str(zoo["base"]), "--normalize-by", str(report_q), "--normalize-by", str(zoo["skill_r"]),
        "--json", str(out), "-q",
    ])
    assert code == 0
    printed = capsys.readouterr().out

    # Independently: evaluate every folder without the cache, then do the arithmetic here.
    scores = {m: evaluate_path(zoo[m], [zoo["tq"], zoo["tr"]], device="cpu").scores
              for m in ("merged", "base", "skill_q", "skill_r")}
    assert scores == _expected()
    normalized = {"tq": scores["merged"]["tq"] / scores["skill_q"]["tq"],
                  "tr": scores["merged"]["tr"] / scores["skill_r"]["tr"]}
    delta = {t: scores["merged"][t] - scores["base"][t] for t in ("tq", "tr")}

    comparison = json.loads(out.read_text())["meta"]["comparison"]
    assert comparison["normalized"] == pytest.approx(normalized)
    assert comparison["delta_vs_base"] == pytest.approx(delta)
    assert comparison["specialist_of"] == {"tq": "skill_q", "tr": "skill_r"}
    assert comparison["mean_normalized"] == pytest.approx(sum(normalized.values()) / 2)
    assert comparison["mean_delta_vs_base"] == pytest.approx(sum(delta.values()) / 2)
    rows = {line.split()[0]: line for line in printed.splitlines() if line.strip()}
    assert f"{normalized['tq']:.1%}" in rows["tq"] and f"{delta['tq']:+.4f}" in rows["tq"]
    assert f"{normalized['tr']:.1%}" in rows["tr"] and "exact_match ↑" in rows["tr"]
    mean_normalized = sum(normalized.values()) / 2
    assert f"{mean_normalized:.1%}" in rows["mean"]
    assert f"keeps {mean_normalized * 100:.0f} % of the specialists' skills" in printed
    assert f"+{sum(delta.values()) / 2 * 100:.1f} points over the base" in printed


def test_cli_normalize_by_pins_a_specialist_and_reads_the_demo_zoo(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mergestudio.cli.main import main

    # Pinned: skill_r is the reference on tq too, though it scores 0 there (ratio: NaN).
    out = tmp_path / "pinned.json"
    assert main(["eval", str(zoo["merged"]), "--task", str(zoo["tq"]), "--device", "cpu", "-q",
                 "--normalize-by", f"tq={zoo['skill_r']}", "--json", str(out)]) == 0
    comparison = json.loads(out.read_text())["meta"]["comparison"]
    assert comparison["specialist_of"] == {"tq": "skill_r"} and comparison["normalized"] == {"tq": None}

    # The demo zoo's measured specialists (results.json rows of kind "specialist").
    demo = tmp_path / "demo"
    demo.mkdir()
    rows = [{"model": "tq", "kind": "specialist", "accuracy": {"tq": 0.9, "tr": 0.0}},
            {"model": "tr", "kind": "specialist", "accuracy": {"tq": 0.0, "tr": 0.5}},
            {"model": "base", "kind": "base", "accuracy": {"tq": 1.0, "tr": 1.0}}]
    (demo / "results.json").write_text(json.dumps({"rows": rows}))
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(demo))
    out = tmp_path / "demo.json"
    assert main(["eval", str(zoo["merged"]), "--task", str(zoo["tq"]), "--task", str(zoo["tr"]),
                 "--device", "cpu", "-q", "--normalize-by", "demo", "--json", str(out)]) == 0
    comparison = json.loads(out.read_text())["meta"]["comparison"]
    assert comparison["normalized"] == pytest.approx({"tq": 0.75 / 0.9, "tr": 0.25 / 0.5})
    assert comparison["delta_vs_base"] == {}  # no --base


def test_cli_normalize_by_a_missing_file_names_it(tmp_path: Path, zoo: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mergestudio.cli.main import main

    missing = tmp_path / "nope.json"
    assert main(["eval", str(zoo["merged"]), "--task", str(zoo["tq"]), "--normalize-by", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


# ---- search baselines and runs show ---------------------------------------------------------


def _write_search(zoo: dict[str, Path], root: Path) -> Path:
    import yaml

    spec = {
        "recipe": {"merge_method": "task_arithmetic", "base_model": str(zoo["base"]),
                   "models": [{"model": str(zoo["skill_q"])}, {"model": str(zoo["skill_r"])}]},
        "genome": [{"param": "weight", "low": 0.0, "high": 1.0}],
        "objectives": [{"task": str(zoo["tq"])}, {"task": str(zoo["tr"])}],
        "algorithm": {"name": "random", "seed": 1},
        "budget": {"evaluations": 3},
        "evaluation": {"batch_size": 8, "device": "cpu"},
    }
    path = root / "spec.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_baselines_and_runs_show_carry_normalized_accuracy(
    zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mergestudio.cli.main import main
    from mergestudio.search import start_search
    from mergestudio.search.baselines import BASELINES_FILE, load_baselines, run_baselines, trial_comparison
    from mergestudio.search.objectives import Objectives
    from mergestudio.search.store import RunFolder

    run = tmp_path / "run"
    start_search(_write_search(zoo, tmp_path), run)
    assert main(["runs", "show", str(run)]) == 0
    assert "baselines not scored yet" in capsys.readouterr().out

    baselines = run_baselines(run)
    expected = _expected()
    by_label = {b.label: b for b in baselines}
    assert by_label["base"].is_base and not by_label["skill_q"].is_base
    specialist = {"tq": expected["skill_q"]["tq"], "tr": expected["skill_r"]["tr"]}
    for label in ("skill_q", "skill_r", "linear"):
        b = by_label[label]
        assert b.normalized == pytest.approx({t: b.objectives[t] / specialist[t] for t in ("tq", "tr")})
        assert b.delta_vs_base == pytest.approx({t: b.objectives[t] - expected["base"][t] for t in ("tq", "tr")})
    spec = RunFolder(run).load_spec()
    assert load_baselines(run, spec) == baselines  # read back with the same comparisons
    assert "normalized" not in json.loads((run / BASELINES_FILE).read_text())["key"]

    records = [r for r in RunFolder(run).records() if r.state == "complete"]
    comparison = trial_comparison(records[0].objectives, baselines, Objectives.build(spec))
    hand = {t: records[0].objectives[t] / specialist[t] for t in ("tq", "tr")}
    assert comparison.normalized == pytest.approx(hand)
    assert comparison.specialist_of == {"tq": "skill_q", "tr": "skill_r"}

    assert main(["runs", "show", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    trial = next(t for t in summary["trials"] if t["number"] == records[0].number)
    assert trial["mean_normalized"] == pytest.approx(sum(hand.values()) / 2)
    assert {b["label"]: b["mean_normalized"] for b in summary["baselines"]}["skill_q"] == pytest.approx(
        (1.0 + expected["skill_q"]["tr"] / specialist["tr"]) / 2
    )
    assert main(["runs", "show", str(run)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.split()[:2] == [str(records[0].number), "complete"])
    assert f"{sum(hand.values()) / 2 * 100:.0f} %" in row
    assert "base (base)" in text and "norm." in text
    assert not math.isnan(comparison.mean_delta_vs_base)
