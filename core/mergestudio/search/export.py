"""Exporting a trial of a run to a merged model folder, with its recipe and lineage.

The folder is the engine's output (sharded safetensors, config, tokenizer, model card);
the card's Provenance section names the run, the trial and its objective values, and
two files beside it keep the lineage machine-readable: ``recipe.yml`` (replay it with
``mergestudio merge``) and ``search_trial.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.events import CancelToken, EventSink
from mergestudio.search.store import RunError, RunFolder, TrialRecord, write_atomic

if TYPE_CHECKING:
    from mergestudio.engine.merge import MergeResult

LINEAGE_FILE = "search_trial.json"
RECIPE_FILE = "recipe.yml"


def trial_record(run: RunFolder, number: int) -> TrialRecord:
    records = {r.number: r for r in run.records()}
    if number not in records:
        raise RunError(f"{run.path}: no trial {number} (the run has trials 0-{len(records) - 1})")
    record = records[number]
    if record.state != "complete":
        raise RunError(
            f"{run.path}: trial {number} is {record.state}, not complete; it has no scores to export"
        )
    return record


def export_trial(
    run_dir: str | Path,
    number: int,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    device: str = "auto",
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> MergeResult:
    """Merge trial ``number`` of the run in ``run_dir`` into ``out_dir``."""
    from mergestudio.engine.merge import merge
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import is_multi_stage

    run = RunFolder(run_dir)
    spec = run.load_spec()
    record = trial_record(run, number)
    if is_multi_stage(record.recipe_yaml):
        raise RunError(
            f"{run.path}: trial {number} is a multi-stage recipe: save its YAML (the Evolve page's "
            "recipe view) and merge it with `mergestudio merge RECIPE OUT`"
        )
    recipe = Recipe.from_yaml(record.recipe_yaml, f"trial {number}'s recipe")
    lineage = _lineage(run, spec.algorithm.name, spec.algorithm.seed, record)
    card_extra = {
        "search run": str(run.path.resolve()),
        "trial": number,
        "generation": record.generation,
        "algorithm": f"{spec.algorithm.name} (seed {spec.algorithm.seed})",
        "objectives": ", ".join(f"{k} = {v:.6g}" for k, v in record.objectives.items()),
        "genome": ", ".join(f"{k} = {v:.4f}" for k, v in record.genome.items()),
    }
    result = merge(
        recipe,
        out_dir,
        device=device,
        overwrite=overwrite,
        events=events,
        cancel=cancel,
        card_extra=card_extra,
    )
    write_atomic(result.output / RECIPE_FILE, recipe.to_yaml())
    write_atomic(result.output / LINEAGE_FILE, json.dumps(lineage, indent=1) + "\n")
    return result


def _lineage(run: RunFolder, algorithm: str, seed: int, record: TrialRecord) -> dict[str, Any]:
    return {
        "run": str(run.path.resolve()),
        "study": f"{run.storage_url}",
        "trial": record.number,
        "generation": record.generation,
        "algorithm": algorithm,
        "seed": seed,
        "genome": record.genome,
        "objectives": record.objectives,
        "study_values": list(record.study_values),
        "items": str(run.items_path(record.number).resolve()),
    }
