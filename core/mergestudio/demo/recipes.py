"""The default merges of the demo zoo: each is one recipe over every specialist, with
each method's default parameters or the setting its paper suggests (said in ``note``).

``build`` writes them to ``recipes/<name>.yml``; ``results`` measures them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergestudio.demo import paths


@dataclass(frozen=True)
class DefaultMerge:
    """One row of the results table: a merge method and the parameters it runs with.

    ``model_params``: the same per-model parameters for every specialist;
    ``params``: global parameters (only those that differ from the method's defaults).
    """

    name: str
    method: str
    note: str
    model_params: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    uses_base: bool = True


DEFAULT_MERGES: tuple[DefaultMerge, ...] = (
    DefaultMerge(
        "linear",
        "linear",
        "the plain average of the specialists (weight 1 each, normalised)",
        {"weight": 1.0},
        uses_base=False,
    ),
    DefaultMerge(
        "task_arithmetic",
        "task_arithmetic",
        "base + λ × the sum of the task vectors, weight 1 each, λ = 0.4 "
        "(Ilharco et al. pick λ in 0.3-0.5 on held-out data for several tasks)",
        {"weight": 1.0},
        {"lambda": 0.4},
    ),
    DefaultMerge(
        "ties",
        "ties",
        "trim each task vector to its top 20 %, elect signs, average the agreeing "
        "entries (the TIES paper's density 0.2, λ = 1)",
        {"weight": 1.0, "density": 0.2},
    ),
    DefaultMerge("tsv", "tsv", "Task Singular Vectors merge (TSV-M), default parameters"),
    DefaultMerge("iso_cts", "iso_cts", "Iso-CTS, default parameters"),
)

DEFAULT_MERGE_NAMES: tuple[str, ...] = tuple(m.name for m in DEFAULT_MERGES)


def default_merge(name: str) -> DefaultMerge:
    for merge in DEFAULT_MERGES:
        if merge.name == name:
            return merge
    raise KeyError(f"no default demo merge named {name!r} (known: {', '.join(DEFAULT_MERGE_NAMES)})")


def recipe_dicts(
    zoo: Path, skills: tuple[str, ...], absolute: bool, names: tuple[str, ...] = DEFAULT_MERGE_NAMES
) -> dict[str, dict[str, Any]]:
    """The recipes of the default merges ``names`` over every specialist of ``skills``,
    with model paths absolute or relative to the repository root (where recipes run)."""

    def ref(name: str) -> str:
        folder = paths.models_dir(zoo) / name
        return str(folder.resolve()) if absolute else paths.display_path(folder)

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        merge = default_merge(name)
        recipe: dict[str, Any] = {"merge_method": merge.method}
        if merge.uses_base:
            recipe["base_model"] = ref("base")
        recipe["models"] = [{"model": ref(s), "parameters": dict(merge.model_params)} for s in skills]
        if merge.params:
            recipe["parameters"] = dict(merge.params)
        recipe["dtype"] = "float32"
        out[name] = recipe
    return out


def write_recipes(zoo: Path, skills: tuple[str, ...], names: tuple[str, ...]) -> None:
    """``recipes/<name>.yml`` for each default merge, with a header saying what it is."""
    import yaml

    folder = paths.recipes_dir(zoo)
    folder.mkdir(parents=True, exist_ok=True)
    for name, recipe in recipe_dicts(zoo, skills, absolute=False, names=names).items():
        file = folder / f"{name}.yml"
        header = f"# Default {name} merge of the demo zoo: {default_merge(name).note}.\n"
        header += (
            f"# Run from the repository root:\n#   mergestudio merge {paths.display_path(file)} out/{name}\n"
        )
        file.write_text(header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
