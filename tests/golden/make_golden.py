"""Regenerate the mergekit golden files: tiny inputs, one recipe per method, and the
output mergekit writes for it. mergekit is not our dependency: give its mergekit-yaml by
path (any venv where `pip install mergekit` worked).

    python tests/golden/make_golden.py /path/to/venv/bin/mergekit-yaml [METHOD ...]

Outputs are float32 so the comparison tests can use a tight tolerance.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.checkpoints import TinyLlama, write_checkpoint  # noqa: E402

SPEC = TinyLlama(layers=3, hidden=16, intermediate=24, vocab=40, heads=2)
INPUTS = ("base", "ft1", "ft2", "ft3")

_TUNES3 = ["ft1", "ft2", "ft3"]


def _models(names: list[str], params: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, name in enumerate(names):
        row: dict[str, object] = {"model": name}
        if params and params[i]:
            row["parameters"] = params[i]
        rows.append(row)
    return rows


# One recipe per method; model names are replaced by input folders when run.
RECIPES: dict[str, dict[str, object]] = {
    "linear": {
        "merge_method": "linear",
        "models": _models(_TUNES3, [{"weight": 0.3}, {"weight": [0.2, 0.9]}, {"weight": 0.5}]),
    },
    "linear_raw": {
        "merge_method": "linear",
        "parameters": {"normalize": False},
        "models": _models(["ft1", "ft2"], [{"weight": 0.7}, {"weight": 0.6}]),
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "parameters": {"lambda": 0.9},
        "models": _models(_TUNES3, [{"weight": 0.5}, {"weight": [0.0, 1.0]}, {"weight": 0.3}]),
    },
    "slerp": {
        "merge_method": "slerp",
        "base_model": "base",
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0.0, 0.5, 1.0]},
                {"filter": "mlp", "value": [1.0, 0.5, 0.0]},
                {"value": 0.4},
            ]
        },
        "models": _models(["base", "ft1"]),
    },
    "passthrough": {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": "ft1", "layer_range": [0, 2]}]},
            {"sources": [{"model": "ft2", "layer_range": [1, 3]}]},
        ],
    },
    "ties": {
        "merge_method": "ties",
        "base_model": "base",
        "models": _models(
            _TUNES3,
            [
                {"weight": 1.0, "density": 0.5},
                {"weight": 0.6, "density": 0.3},
                {"weight": 0.8, "density": 0.7},
            ],
        ),
    },
    "ties_unnormalized": {
        "merge_method": "ties",
        "base_model": "base",
        "parameters": {"normalize": False},
        "models": _models(["ft1", "ft2"], [{"weight": 0.5, "density": 0.4}, {"weight": 0.5, "density": 0.6}]),
    },
    "breadcrumbs": {
        "merge_method": "breadcrumbs",
        "base_model": "base",
        "models": _models(_TUNES3, [{"weight": 0.4, "density": 0.8, "gamma": 0.05}] * 3),
    },
    "breadcrumbs_ties": {
        "merge_method": "breadcrumbs_ties",
        "base_model": "base",
        "models": _models(_TUNES3, [{"weight": 1.0, "density": 0.7, "gamma": 0.1}] * 3),
    },
    "model_stock": {"merge_method": "model_stock", "base_model": "base", "models": _models(_TUNES3)},
    "nuslerp": {
        "merge_method": "nuslerp",
        "models": _models(["ft1", "ft2"], [{"weight": 0.3}, {"weight": 0.7}]),
    },
    "nuslerp_base": {
        "merge_method": "nuslerp",
        "base_model": "base",
        "models": _models(["ft1", "ft2"], [{"weight": 0.5}, {"weight": 0.5}]),
    },
    "multislerp": {
        "merge_method": "multislerp",
        "models": _models(_TUNES3, [{"weight": 0.2}, {"weight": 0.3}, {"weight": 0.5}]),
    },
    "karcher": {"merge_method": "karcher", "models": _models(_TUNES3)},
    "sce": {
        "merge_method": "sce",
        "base_model": "base",
        "parameters": {"select_topk": 0.5},
        "models": _models(_TUNES3),
    },
    "nearswap": {
        "merge_method": "nearswap",
        "base_model": "base",
        "parameters": {"t": 0.02},
        "models": _models(["base", "ft1"]),
    },
    "arcee_fusion": {
        "merge_method": "arcee_fusion",
        "base_model": "base",
        "models": _models(["base", "ft1"]),
    },
    "ram": {"merge_method": "ram", "base_model": "base", "models": _models(_TUNES3)},
    "ramplus_tl": {"merge_method": "ramplus_tl", "base_model": "base", "models": _models(_TUNES3)},
    # Stochastic: kept for statistical comparisons only (RNG streams differ from ours).
    "dare_ties": {
        "merge_method": "dare_ties",
        "base_model": "base",
        "models": _models(_TUNES3, [{"weight": 1.0, "density": 0.5}] * 3),
    },
    "della": {
        "merge_method": "della",
        "base_model": "base",
        "models": _models(_TUNES3, [{"weight": 1.0, "density": 0.5, "epsilon": 0.1}] * 3),
    },
}
STOCHASTIC = {"dare_ties", "della"}


def write_inputs(folder: Path) -> dict[str, Path]:
    paths = {}
    for seed, name in enumerate(INPUTS):
        path = write_checkpoint(folder / name, SPEC, seed=seed)
        for extra in ("tokenizer_config.json", "generation_config.json"):
            (path / extra).unlink()
        paths[name] = path
    return paths


def resolve(recipe: dict[str, object], paths: dict[str, Path]) -> dict[str, object]:
    """The recipe with model names replaced by folders."""
    text = yaml.safe_dump(recipe, sort_keys=False)
    data = yaml.safe_load(text)

    def fix(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: (str(paths[v]) if k in ("model", "base_model") and v in paths else fix(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(data)  # type: ignore[return-value]


def main() -> int:
    mergekit_yaml = sys.argv[1]
    wanted = sys.argv[2:] or list(RECIPES)
    inputs = write_inputs(HERE / "inputs")
    (HERE / "recipes").mkdir(exist_ok=True)
    (HERE / "outputs").mkdir(exist_ok=True)
    for name in wanted:
        recipe = RECIPES[name]
        (HERE / "recipes" / f"{name}.yml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        with tempfile.TemporaryDirectory() as work:
            recipe_path = Path(work) / "recipe.yml"
            recipe_path.write_text(yaml.safe_dump(resolve(recipe, inputs), sort_keys=False))
            out = Path(work) / "out"
            result = subprocess.run(
                [mergekit_yaml, str(recipe_path), str(out), "--random-seed", "0"],
                capture_output=True,
                text=True,
            )
            produced = out / "model.safetensors"
            if not produced.exists():
                print(f"{name}: mergekit failed\n{result.stderr[-2000:]}", file=sys.stderr)
                continue
            shutil.copy(produced, HERE / "outputs" / f"{name}.safetensors")
            print(f"{name}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
