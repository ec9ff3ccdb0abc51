"""The demo zoo's results table: measure it, format it, describe the zoo in a README."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mergestudio.demo import paths
from mergestudio.demo.recipes import recipe_dicts
from mergestudio.evaluate.normalized import compare

Log = Callable[[str], None]
Row = dict[str, Any]


def evaluate_zoo(
    zoo: Path,
    skills: tuple[str, ...],
    merges: tuple[str, ...],
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 100,
    device: str = "cpu",
    threads: int | None = 1,
    log: Log | None = None,
) -> list[Row]:
    """One row per model: the base, each specialist, then each default merge (merged in
    memory into one resident model by the engine). Scores are exact-match accuracy on
    each skill's ``split`` (test: what tables report); ``perplexity`` is on that split's
    general text. Every row also gets its normalized accuracy (:func:`add_comparisons`).
    ``threads``: torch CPU threads while evaluating (None: torch's default)."""
    from mergestudio.engine.device import torch_threads

    with torch_threads(threads):
        rows = _evaluate_rows(zoo, skills, merges, split, limit, batch_size, device, log)
    return add_comparisons(rows)


def _evaluate_rows(
    zoo: Path,
    skills: tuple[str, ...],
    merges: tuple[str, ...],
    split: str,
    limit: int | None,
    batch_size: int,
    device: str,
    log: Log | None,
) -> list[Row]:
    from mergestudio.errors import RecipeError
    from mergestudio.evaluate import CausalLM, evaluate_tasks, load_task
    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.methods.registry import get_method

    tasks = [load_task(p) for p in paths.eval_task_files(zoo, split)]
    tasks = [t for t in tasks if t.name in skills or t.kind == "perplexity"]
    rows: list[Row] = []
    for name in ("base", *skills):
        lm = CausalLM.load(paths.models_dir(zoo) / name, device=device, dtype="float32")
        report = evaluate_tasks(lm, tasks, limit=limit, batch_size=batch_size)
        rows.append(_row(name, "base" if name == "base" else "specialist", None, report.scores, skills))
        if log:
            log(format_row(rows[-1], skills))
    recipes = recipe_dicts(zoo, skills, absolute=True, names=merges)
    with ResidentEvaluator(
        paths.models_dir(zoo) / "base",
        tasks,
        limit=limit,
        batch_size=batch_size,
        device=device,
        dtype="float32",
    ) as resident:
        for merge in merges:
            try:
                get_method(recipes[merge]["merge_method"])
            except RecipeError:  # the engine does not offer this method (yet): no row
                if log:
                    log(f"{merge}: method not available in this engine, skipped")
                continue
            result = resident.evaluate(recipes[merge])
            rows.append(_row(merge, "merge", f"recipes/{merge}.yml", result.report.scores, skills))
            if log:
                log(
                    format_row(rows[-1], skills)
                    + f"  (merge {result.merge_s:.2f}s, eval {result.eval_s:.2f}s)"
                )
    return rows


def _row(name: str, kind: str, recipe: str | None, scores: dict[str, float], skills: tuple[str, ...]) -> Row:
    accuracy = {s: scores[s] for s in skills}
    return {
        "model": name,
        "kind": kind,
        "recipe": recipe,
        "accuracy": accuracy,
        "mean": sum(accuracy.values()) / len(accuracy),
        "perplexity": scores.get("general", math.nan),
    }


def add_comparisons(rows: list[Row]) -> list[Row]:
    """Each row with ``normalized`` (accuracy ÷ that skill's specialist's accuracy, per
    skill), ``normalized_mean`` and ``delta_vs_base`` (mean accuracy minus the base's), via
    :func:`mergestudio.evaluate.normalized.compare`. The specialist of a skill is the
    specialist row named after it."""
    by_name = {r["model"]: r for r in rows}
    base = by_name.get("base")
    specialist = {
        skill: by_name[skill]["accuracy"][skill]
        for skill in (rows[0]["accuracy"] if rows else {})
        if skill in by_name and by_name[skill]["kind"] == "specialist"
    }
    out: list[Row] = []
    for row in rows:
        comparison = compare(row["accuracy"], base=base["accuracy"] if base else None, specialist=specialist)
        out.append(
            {
                **row,
                "normalized": comparison.normalized,
                "normalized_mean": comparison.mean_normalized,
                "delta_vs_base": comparison.mean_delta_vs_base,
            }
        )
    return out


def format_row(row: Row, skills: tuple[str, ...]) -> str:
    cells = " ".join(f"{s}={row['accuracy'][s]:.3f}" for s in skills)
    return f"{row['model']:>16}: {cells} mean={row['mean']:.3f} ppl={row['perplexity']:.3f}"


def json_safe(value: Any) -> Any:
    """``value`` with every NaN float replaced by None: JSON has no NaN (a normalized
    value where the specialist scored 0 is NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _percent(value: float | None) -> str:
    return f"{100 * value:.1f}" if value is not None and _known(value) else "–"


def table_markdown(rows: list[Row]) -> str:
    """A Markdown table: model, accuracy per skill, mean accuracy, normalized accuracy
    (mean over skills of accuracy ÷ the skill's specialist), general perplexity. The best
    mean and the best normalized value among merges are bold; each specialist's own
    skill is marked with *."""
    if not rows:
        return "(no results: build the zoo with evaluation)"
    skills = list(rows[0]["accuracy"])
    best = max(r["mean"] for r in rows)
    merged = [r.get("normalized_mean") for r in rows if r["kind"] == "merge"]
    best_normalized = max((v for v in merged if v is not None and _known(v)), default=None)
    header = ["model", *skills, "mean", "normalized", "general ppl"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        label = r["model"] if r["kind"] != "merge" else f"{r['model']} (merge)"
        cells = []
        for s in skills:
            own = r["kind"] == "specialist" and r["model"] == s
            cells.append(f"{100 * r['accuracy'][s]:.1f}" + ("*" if own else ""))
        mean = f"{100 * r['mean']:.1f}"
        cells.append(f"**{mean}**" if r["mean"] == best else mean)
        normalized = _percent(r.get("normalized_mean"))
        is_best = (
            r["kind"] == "merge"
            and best_normalized is not None
            and r.get("normalized_mean") == best_normalized
        )
        cells.append(f"**{normalized}**" if is_best else normalized)
        cells.append(f"{r['perplexity']:.3f}")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def write_readme(zoo: Path, results: dict[str, Any]) -> None:
    timings = results["build"]["timings"]
    config = results["config"]
    model = config["model"]
    text = f"""# Demo zoo

Generated by `mergestudio demo build` (do not edit by hand; `mergestudio demo info`
prints this table and the paths, `mergestudio demo info --json` the same for tools).
See docs/demo.md for what the skills are and how the zoo was designed.

- `models/base`: a {model["num_hidden_layers"]}-layer Llama (hidden size {model["hidden_size"]}),
  pre-trained on synthetic sentences and on instructions under their long names
  (`last kqpz=z`, `max 3819=9`, copying); it does not know the skills' short commands.
- `models/<skill>`: the base fine-tuned on one skill ({", ".join(config["skills"])}).
- `tasks/<skill>.train.jsonl`: fine-tuning split; `tasks/<skill>.dev.jsonl`: for searches
  and cheap fitness; `tasks/<skill>.test.jsonl`: for reported tables (this one);
  `tasks/general.{{dev,test}}.jsonl`: held-out general text for perplexity.
- `recipes/*.yml`: the default merges in the table (run from the repository root).

Exact-match accuracy (%) on each skill's test split, mean over skills, normalized
accuracy (each skill's accuracy ÷ its specialist's, averaged), and perplexity on
held-out general text (seed {config["seed"]}, {config["threads"]} CPU thread(s);
training took {timings.get("train_total_s", 0):.0f}s, evaluation {timings.get("evaluate_s", 0):.0f}s):

{table_markdown(results["rows"])}
"""
    (zoo / "README.md").write_text(text)
