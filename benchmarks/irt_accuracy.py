"""How well the IRT fitness estimator predicts a candidate's full dev-split accuracy, against
the ``subset`` estimator at the same item count (issue 22).

Over the demo search space (the genome of the zoo's ``search.yml``) on the demo zoo, every
candidate is scored on every dev item of every skill (the truth). Calibration uses what a
search has: the baselines (parents and default merges) scored on the full dev split, and
optionally the first ``--calibration-trials`` candidates of the run scored in full. The
estimators then see only the anchors' answers (IRT) or a fixed random subset of the same
size (``subset``); since greedy decoding is deterministic, an item's answer is the same
whether it is asked alone or with the whole split, so both read them from the full
responses; the adaptive round's choice is simulated exactly the same way, from each
candidate's answers to its anchors). Reported per anchor count: items per candidate, how many times fewer than the
full split, the mean absolute error in accuracy points and Spearman's ρ across candidates
(per skill, then averaged; and of the mean over skills).

Paths come from ``mergestudio.demo.info.zoo_info`` (what ``mergestudio demo info --json``
prints), so a rebuilt zoo is measured by the same command. Evaluations are cached in
``--responses``, keyed by a fingerprint of the zoo's model and dev files, the genome and the
seed: a second run on the same zoo only re-analyses, a new zoo is scored afresh. IRT rows
come with the anchors shared among the skills (the estimator's default) and split evenly,
and with the two options of issue 22's fourth session: the genome prior (``irt_prior:
genome``, a regression from each candidate's genome to its ability, fitted on the
calibration trials) and the adaptive second round (``adaptive: true``), over the IRT seeds
``--irt-seeds`` (k-means and fit seeds; the candidates stay the same), and with graded item
scores (``graded: true``: every item's reference log-probability, cached beside the answers).
``--graded-cost N`` times the evaluation of N candidates with and without graded scores.

    python benchmarks/irt_accuracy.py [--candidates 120] [--responses runs/irt-bench/responses.json] [--json out.json]
        [--irt-seeds 0 1 2 3] [--cached]   # --cached: re-analyse the cache as is (an older zoo's answers)
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

SUBSET_SEEDS = 20  # the subset estimator's error is averaged over this many random subsets
MAX_OBSERVED = 400
COST_MODELS = 24  # models whose evaluation is timed with and without graded scores  # fitness.MAX_OBSERVED_TRIALS: the earlier trials a genome prior learns from


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", type=Path, help="demo zoo folder (default: the repository's)")
    parser.add_argument(
        "--candidates", type=int, default=120, help="random candidates scored as the test set"
    )
    parser.add_argument("--calibration-trials", type=int, default=16, help="extra candidates scored in full")
    parser.add_argument("--anchors", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--responses", type=Path, default=Path("runs/irt-bench/responses.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the table here")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument(
        "--irt-seeds", type=int, nargs="+", help="seeds of the IRT fit and anchors for the option rows (default: --seed)"
    )
    parser.add_argument(
        "--option-anchors",
        type=int,
        nargs="+",
        default=[5, 10, 20],
        help="anchors per task of the option rows (genome prior, adaptive round)",
    )
    parser.add_argument(
        "--graded-cost",
        type=int,
        default=0,
        metavar="N",
        help="time N candidates' evaluation with and without graded scores (alternating, 3 times each), then stop",
    )
    parser.add_argument(
        "--graded-only", action="store_true", help="option rows: only irt4's default with and without graded scores"
    )
    parser.add_argument(
        "--cached", action="store_true", help="analyse --responses as it is, without checking or scoring the zoo"
    )
    args = parser.parse_args()

    spec = _demo_spec(args.zoo)
    count = args.candidates + args.calibration_trials
    if args.graded_cost:
        print(json.dumps(measure_graded_cost(spec, args.graded_cost, args.seed), indent=1))
        return
    if args.cached:
        responses = json.loads(args.responses.read_text())
    else:
        responses = _score_everything(spec, count, args.responses, args.seed)
    if args.evaluate_only:
        return
    genomes = _candidate_genomes(spec, count, args.seed)
    result = analyse(spec, responses, args.candidates, args.calibration_trials, args.anchors, args.seed)
    result["rows"] += option_rows(
        spec,
        responses,
        genomes,
        args.candidates,
        args.calibration_trials,
        args.option_anchors,
        args.irt_seeds or [args.seed],
        GRADED_OPTIONS if args.graded_only else OPTIONS,
    )
    print(markdown_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _demo_spec(zoo: Path | None) -> Any:
    """The demo search spec (its genome), over the zoo's models and dev splits as
    ``zoo_info`` names them, scored on every item."""
    from mergestudio.demo.info import zoo_info
    from mergestudio.demo.paths import default_zoo_dir
    from mergestudio.search.spec import load_spec, spec_from_dict

    info = zoo_info(zoo or default_zoo_dir())
    demo = load_spec(Path(info["zoo"]) / "search.yml")
    data = demo.model_dump(mode="json", exclude_none=True)
    data["recipe"] = {
        "merge_method": "task_arithmetic",
        "base_model": info["base"]["path"],
        "models": [{"model": s["path"]} for s in info["specialists"]],
        "dtype": "float32",
    }
    data["objectives"] = [{"task": info["skills"][s["skill"]]["dev"]} for s in info["specialists"]]
    data["fitness"] = {"estimator": "full"}
    return spec_from_dict(data, "irt benchmark spec")


def _score_everything(spec: Any, count: int, cache: Path, seed: int) -> dict[str, Any]:
    """Per-item answers of the baselines and of ``count`` random candidates on the full
    dev split: {"tasks": {task: [item ids]}, "models": {label: {task: [0/1 ...]}}}."""
    from mergestudio.engine.device import torch_threads
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.search.baselines import baseline_recipes
    from mergestudio.search.genome import Genome
    from mergestudio.search.objectives import Objectives
    from mergestudio.search.spec import base_recipe

    quiet_transformers()
    fingerprint = _fingerprint(spec, seed)
    data: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    if data.get("fingerprint") != fingerprint:
        if data:
            print(f"{cache}: scored on another zoo, search space or seed; scoring afresh", flush=True)
        data = {"fingerprint": fingerprint, "models": {}, "seconds": {}}
    objectives = Objectives.build(spec)
    data["tasks"] = {t.name: [i.id for i in t.items] for t in objectives.tasks}
    genome = Genome.build(spec.genome, base_recipe(spec))
    todo: list[tuple[str, Any]] = [
        (label, recipe) for label, _, recipe in baseline_recipes(base_recipe(spec))
    ]
    for label, values in _candidate_genomes(spec, count, seed).items():
        todo.append((label, genome.recipe(values).to_dict()))
    cache.parent.mkdir(parents=True, exist_ok=True)
    template = base_recipe(spec).base_model
    data.setdefault("graded", {})
    data.setdefault("cost", [])
    with (
        torch_threads(1),
        ResidentEvaluator(
            template, objectives.tasks, batch_size=100, device="cpu", dtype="float32", graded=True
        ) as resident,
    ):
        for label, recipe in todo:
            if label in data["models"] and label in data["graded"]:
                continue
            start = time.perf_counter()
            result = resident.evaluate(recipe)
            answers = {t.task: [float(i.score) for i in t.items] for t in result.report.tasks}
            if label in data["models"] and answers != data["models"][label]:
                raise SystemExit(f"{label}: answers differ from the cache's (not deterministic?)")
            data["models"][label] = answers
            data["graded"][label] = {t.task: [i.graded for i in t.items] for t in result.report.tasks}
            data["seconds"][label] = round(time.perf_counter() - start, 2)
            if len(data["cost"]) < COST_MODELS:
                data["cost"].append(_graded_cost(resident, objectives.tasks, result.eval_s))
            cache.write_text(json.dumps(data) + "\n")
            print(f"{label}: {data['seconds'][label]} s", flush=True)
    return data


def _graded_cost(resident: Any, tasks: Any, graded_s: float) -> dict[str, float]:
    """Seconds to evaluate the merged candidate on every item with and without graded
    scores (the same model, one after the other, so the machine's load is alike)."""
    resident.graded = False
    plain = resident.evaluate_merged(tasks).eval_s
    resident.graded = True
    items = sum(len(t.items) for t in tasks)
    return {"plain_s": round(plain, 3), "graded_s": round(graded_s, 3), "items": items}


def measure_graded_cost(spec: Any, count: int, seed: int, repeats: int = 3) -> dict[str, Any]:
    """Evaluation seconds of ``count`` candidates on every dev item, without and with
    graded scores, on one merged model each, alternating plain/graded ``repeats`` times
    (so a warm-up or a load change hits both alike); medians per candidate, then means."""
    from mergestudio.engine.device import torch_threads
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.search.genome import Genome
    from mergestudio.search.objectives import Objectives
    from mergestudio.search.spec import base_recipe

    quiet_transformers()
    objectives = Objectives.build(spec)
    genome = Genome.build(spec.genome, base_recipe(spec))
    items = sum(len(t.items) for t in objectives.tasks)
    plain, graded = [], []
    with (
        torch_threads(1),
        ResidentEvaluator(
            base_recipe(spec).base_model, objectives.tasks, batch_size=100, device="cpu", dtype="float32"
        ) as resident,
    ):
        for values in list(_candidate_genomes(spec, count, seed).values()):
            resident.merge_into_model(genome.recipe(values).to_dict())
            resident.evaluate_merged(objectives.tasks)  # warm-up
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(repeats):
                for flag in (False, True):
                    resident.graded = flag
                    times[flag].append(resident.evaluate_merged(objectives.tasks).eval_s)
            plain.append(float(np.median(times[False])))
            graded.append(float(np.median(times[True])))
    extra = (np.mean(graded) - np.mean(plain)) / items
    return {
        "candidates": count,
        "items": items,
        "plain_s": round(float(np.mean(plain)), 3),
        "graded_s": round(float(np.mean(graded)), 3),
        "extra_ms_per_item": round(1000 * float(extra), 3),
        "extra_share": round(float(np.mean(graded) / np.mean(plain) - 1), 3),
    }


def _candidate_genomes(spec: Any, count: int, seed: int) -> dict[str, dict[str, float]]:
    """The random candidates' gene values, by label: drawn in gene order from one seeded
    generator, so the same for scoring and for analysing a cache."""
    from mergestudio.search.genome import Genome
    from mergestudio.search.spec import base_recipe

    genome = Genome.build(spec.genome, base_recipe(spec))
    rng = random.Random(seed)
    return {
        f"candidate-{n:03d}": {g.name: rng.uniform(g.low, g.high) for g in genome.genes} for n in range(count)
    }


def _fingerprint(spec: Any, seed: int) -> str:
    """What the cached answers depend on: the bytes of every model file and dev task the
    spec names, the genome and the candidates' seed. A rebuilt zoo gets a new one, so its
    candidates are scored afresh rather than read from the old zoo's cache."""
    import hashlib

    from mergestudio.search.spec import base_recipe

    recipe = base_recipe(spec)
    digest = hashlib.sha256()
    paths = [Path(str(recipe.base_model))] + [Path(m.model) for m in recipe.models]
    files = [f for p in paths for f in sorted(p.rglob("*")) if f.is_file()]
    files += [Path(o.task) for o in spec.objectives if o.task]
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    digest.update(json.dumps([g.model_dump(mode="json") for g in spec.genome], sort_keys=True).encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()[:16]



def _responses_by_task(
    data: dict[str, Any], models: dict[str, Any], subjects: list[str], tasks: list[str]
) -> dict[str, tuple[Any, np.ndarray]]:
    """What ``calibrate_tasks`` fits: per task, its items and the (subjects, items)
    matrix of the calibration models' answers."""
    return {t: (data["tasks"][t], np.array([models[m][t] for m in subjects])) for t in tasks}

def analyse(
    spec: Any,
    data: dict[str, Any],
    candidates: int,
    calibration_trials: int,
    anchor_counts: list[int],
    seed: int,
) -> dict[str, Any]:
    from mergestudio.search.irt import calibrate_tasks

    tasks = list(data["tasks"])
    models = data["models"]
    baselines = [m for m in models if not m.startswith("candidate-")]
    extra = [f"candidate-{n:03d}" for n in range(calibration_trials)]
    test = [f"candidate-{n:03d}" for n in range(calibration_trials, calibration_trials + candidates)]
    full_items = sum(len(ids) for ids in data["tasks"].values())
    truth = np.array([[np.mean(models[m][t]) for t in tasks] for m in test])  # (C, T)
    rows = []
    settings = [
        (name, subjects, share)
        for name, subjects in (
            ("baselines", baselines),
            (f"baselines + {calibration_trials} trials", baselines + extra),
        )
        if not name.endswith(" 0 trials")
        for share in (True, False)
    ]
    for calibration_name, subjects, share in settings:
        for k in anchor_counts:
            start = time.perf_counter()
            calibrations = calibrate_tasks(
                _responses_by_task(data, models, subjects, tasks),
                k,
                seed=seed,
                share=share,
            )
            fit_s = time.perf_counter() - start
            split = "/".join(str(len(calibrations[t].anchors.indices)) for t in tasks)
            anchors = f"shared {split}" if share else f"{k} per task"
            estimates: dict[str, np.ndarray] = {}
            for name in ("gp-irt", "p-irt", "anchor"):
                estimates[name] = np.array(
                    [
                        [
                            calibrations[t].estimates(
                                np.array(models[m][t])[list(calibrations[t].anchors.indices)]
                            )[name]  # type: ignore[index]
                            for t in tasks
                        ]
                        for m in test
                    ]
                )
            items = sum(len(c.anchors.indices) for c in calibrations.values())
            for name, values in estimates.items():
                row = _row(f"irt {name}", calibration_name, k, items, full_items, values, truth, fit_s)
                rows.append({**row, "anchors": anchors})
    for k in anchor_counts:
        runs = []
        for s in range(SUBSET_SEEDS):
            rng = random.Random(f"{seed + s}")
            picks = {
                t: rng.sample(range(len(data["tasks"][t])), min(k, len(data["tasks"][t]))) for t in tasks
            }
            values = np.array([[np.mean(np.array(models[m][t])[picks[t]]) for t in tasks] for m in test])
            row = _row(
                "subset", "none", k, sum(len(p) for p in picks.values()), full_items, values, truth, 0.0
            )
            runs.append({**row, "anchors": f"{k} random per task"})
        rows.append(_mean_row(runs))
    return {
        "candidates": len(test),
        "calibration_models": {"baselines": baselines, "extra_trials": len(extra)},
        "tasks": tasks,
        "full_items_per_candidate": full_items,
        "truth_range_points": [round(100 * float(truth.min()), 1), round(100 * float(truth.max()), 1)],
        "rows": rows,
    }


OPTIONS = (  # (irt_prior, adaptive, prior_from_trials, graded): the settings compared in option_rows
    ("population", False, False, False),
    ("genome", False, False, False),
    ("population", True, False, False),
    ("genome", True, False, False),
    ("genome", False, True, False),
    ("genome", True, True, False),  # irt4's default with calibration trials
    ("population", True, False, True),
    ("genome", True, True, True),  # + graded scores
)
GRADED_OPTIONS = tuple(o for o in OPTIONS if o[:3] == ("genome", True, True))


def option_rows(
    spec: Any,
    data: dict[str, Any],
    genomes: dict[str, dict[str, float]],
    candidates: int,
    calibration_trials: int,
    anchor_counts: list[int],
    seeds: list[int],
    options: tuple[tuple[str, bool, bool, bool], ...] = OPTIONS,
) -> list[dict[str, Any]]:
    """gp-irt with the genome prior and/or the adaptive round, calibrated on the baselines
    and the calibration trials (the genome prior's regression needs them), anchors shared;
    each row the mean over ``seeds``, with every seed's MAE. Through the estimator's own
    code: ``calibrate_tasks``, ``TaskCalibration.second_round`` and ``estimates``."""
    from mergestudio.search.genome import Genome
    from mergestudio.search.irt import calibrate_tasks
    from mergestudio.search.spec import base_recipe

    genes = [(g.name, g.low, g.high) for g in Genome.build(spec.genome, base_recipe(spec)).genes]
    tasks = list(data["tasks"])
    models = data["models"]
    baselines = [m for m in models if not m.startswith("candidate-")]
    extra = [f"candidate-{n:03d}" for n in range(calibration_trials)]
    test = [f"candidate-{n:03d}" for n in range(calibration_trials, calibration_trials + candidates)]
    subjects = baselines + extra
    subject_genomes = [genomes.get(m) for m in subjects]  # baselines: None (no genome)
    full_items = sum(len(ids) for ids in data["tasks"].values())
    truth = np.array([[np.mean(models[m][t]) for t in tasks] for m in test])  # (C, T)
    rows = []
    for prior, adaptive, from_trials, graded in options:
        if prior == "genome" and calibration_trials < 3:  # the regression needs 3
            continue
        if graded and "graded" not in data:
            continue
        for k in anchor_counts:
            runs = []
            for seed in seeds:
                start = time.perf_counter()
                calibrations = calibrate_tasks(
                    _responses_by_task(data, models, subjects, tasks),
                    k,
                    seed=seed,
                    adaptive=adaptive,
                    genes=genes if prior == "genome" else None,
                    genomes=subject_genomes,
                    graded={t: np.array([data["graded"][m][t] for m in subjects]) for t in tasks} if graded else None,
                )
                fit_s = time.perf_counter() - start
                answers = {t: [np.array(models[m][t]) for m in test] for t in tasks}
                scores = {t: [np.array(data["graded"][m][t]) for m in test] if graded else None for t in tasks}
                order = [genomes[m] for m in test]
                values = np.array(
                    [_simulate_run(calibrations[t], answers[t], order, from_trials, scores[t]) for t in tasks]
                ).T  # (C, T)
                items = sum(c.items_per_candidate for c in calibrations.values())
                label = f"irt gp-irt, {prior} prior" + (" + earlier trials" if from_trials else "")
                label += ", adaptive" if adaptive else ""
                label += ", graded" if graded else ""
                row = _row(label, f"baselines + {calibration_trials} trials", k, items, full_items, values, truth, fit_s)
                split = "/".join(
                    f"{len(calibrations[t].anchors.indices)}+{calibrations[t].adaptive_items}"
                    if adaptive
                    else str(len(calibrations[t].anchors.indices))
                    for t in tasks
                )
                runs.append({**row, "anchors": f"shared {split}", "seed": seed})
            mean = _mean_row(runs)
            mean["calibration"] = f"baselines + {calibration_trials} trials (mean of IRT seeds {seeds})"
            mean["mae_points_by_seed"] = [r["mae_points"] for r in runs]
            mean["spearman_per_task_by_seed"] = [r["spearman_per_task"] for r in runs]
            rows.append(mean)
            print(f"{mean['estimator']}, {k} per task: MAE {mean['mae_points']} by seed {mean['mae_points_by_seed']}", flush=True)
    return rows


def _simulate_run(
    calibration: Any,
    answers: list[np.ndarray],
    genomes: list[dict[str, float]],
    from_trials: bool,
    graded: list[np.ndarray] | None = None,
) -> list[float]:
    """The candidates' gp-irt estimates on one task, in order as a run meets them, from
    their full answers, asking what the estimator would: the anchors, then (adaptive)
    the items chosen from the anchors' answers. ``from_trials``: each candidate's genome
    prior learns from the candidates before it (their genome and estimated ability).
    ``graded``: the candidates' graded scores of every item (read for the asked ones)."""
    observed: list[tuple[dict[str, float], float, float]] = []
    out = []
    anchors = list(calibration.anchors.indices)
    for n, (row, genome) in enumerate(zip(answers, genomes, strict=True)):
        first = row[anchors]
        first_scores = graded[n][anchors] if graded is not None else None
        extra = list(calibration.second_round(first, genome, observed, first_scores))
        second = row[extra] if calibration.adaptive_items else None
        second_scores = graded[n][extra] if graded is not None and calibration.adaptive_items else None
        scored = (first, genome, second, observed, first_scores, second_scores)
        out.append(float(calibration.estimates(*scored)["gp-irt"]))
        if from_trials:
            _, _, theta, variance = calibration.ability(*scored)
            observed = [*observed, (genome, theta, variance)][-MAX_OBSERVED:]
    return out


def _row(
    estimator: str,
    calibration: str,
    k: int,
    items: int,
    full: int,
    values: np.ndarray,
    truth: np.ndarray,
    fit_s: float,
) -> dict[str, Any]:
    errors = np.abs(values - truth) * 100  # accuracy points
    rhos = [_spearman(values[:, t], truth[:, t]) for t in range(truth.shape[1])]
    return {
        "estimator": estimator,
        "calibration": calibration,
        "anchors_per_task": k,
        "items_per_candidate": items,
        "times_fewer": round(full / items, 1),
        "mae_points": round(float(errors.mean()), 2),
        "spearman_per_task": round(float(np.nanmean(rhos)), 3),
        "spearman_mean": round(_spearman(values.mean(axis=1), truth.mean(axis=1)), 3),
        "mae_mean_points": round(float(np.abs(values.mean(axis=1) - truth.mean(axis=1)).mean() * 100), 2),
        "calibration_fit_s": round(fit_s, 2),
    }


def _mean_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    row = dict(runs[0])
    for key in ("mae_points", "spearman_per_task", "spearman_mean", "mae_mean_points"):
        row[key] = round(float(np.mean([r[key] for r in runs])), 3)
    row["calibration"] = f"none (mean of {len(runs)} subsets)"
    return row


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ with average ranks for ties (NaN when either side is constant)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # ties share their mean rank
            same = v == value
            r[same] = r[same].mean()
        return r

    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['candidates']} candidates, {result['full_items_per_candidate']} dev items each in full; "
        f"true mean accuracy spans {result['truth_range_points'][0]}-{result['truth_range_points'][1]} points",
        "",
        "| estimator | calibration | items per task | items/candidate | × fewer | MAE (points) | ρ per skill | ρ of mean | MAE of mean |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result["rows"], key=lambda r: (r["anchors_per_task"], r["estimator"] != "subset")):
        lines.append(
            f"| {r['estimator']} | {r['calibration']} | {r['anchors']} | {r['items_per_candidate']} | {r['times_fewer']} | "
            f"{r['mae_points']} | {r['spearman_per_task']} | {r['spearman_mean']} | {r['mae_mean_points']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
