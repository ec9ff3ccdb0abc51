"""Bounded memory: a merge in the smallest steps writes the very bytes of the default
merge, for every registered method; the sparsifiers' streamed passes really split a
tensor into many ranges; ``--max-memory`` is honoured by the dry run and the merge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.cli.main import main as cli_main
from mergestudio.engine import execute
from mergestudio.engine.merge import merge
from mergestudio.errors import PlanError
from mergestudio.methods import all_methods
from mergestudio.methods.registry import MethodSpec, Param
from mergestudio.methods.sparse import CHUNK
from mergestudio.sizes import format_bytes

from tests.checkpoints import TinyLlama, write_checkpoint

# The embedding (2304 × 128 = 294,912 entries) is larger than 4 × CHUNK, so the
# sparsifiers sample, scan and combine it range by range; bf16 inputs make task vectors
# quantised, with ties at the thresholds (the tie cuts cross ranges).
SPEC = TinyLlama(layers=1, hidden=128, intermediate=64, vocab=2304, heads=2)
EMBEDDING = "model.embed_tokens.weight"
METHODS = [spec.name for spec in all_methods()]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family")
    return {
        name: write_checkpoint(root / name, SPEC, seed=seed, dtype=torch.bfloat16)
        for seed, name in enumerate(["base", "ft1", "ft2", "ft3"])
    }


def _value(param: Param, n_models: int) -> Any:
    """A value users would pick: weights that share 1, half density, midpoints."""
    if param.name == "weight":
        return round(1.0 / n_models, 4)
    if param.name == "density":
        return 0.5
    if param.kind == "bool":
        return bool(param.default)
    if param.kind == "choice":
        return param.default if param.default is not None else param.choices[0]
    if param.default is not None:
        return param.default
    low, high = param.slider_range
    return round(low) if param.kind == "int" else (low + high) / 2


def _recipe(spec: MethodSpec, family: dict[str, Path]) -> dict[str, Any]:
    n = max(spec.min_models, min(3, spec.max_models or 3))
    tunes = [str(family[f"ft{i}"]) for i in range(1, n + 1)]
    per_model = {p.name: _value(p, n) for p in spec.model_params}
    recipe: dict[str, Any] = {
        "merge_method": spec.name,
        "models": [{"model": t, "parameters": dict(per_model)} for t in tunes],
        "parameters": {p.name: _value(p, n) for p in spec.global_params},
        "dtype": "bfloat16",
    }
    if spec.needs_base or spec.optional_base:
        recipe["base_model"] = str(family["base"])
    return recipe


def _weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture
def range_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, int]]]:
    """Every range the streamed path reads, with or without the base: (tensor, start, stop)."""
    seen: list[tuple[str, int, int]] = []
    for reader in ("read", "read_inputs"):
        original = getattr(execute._StoredChunks, reader)

        def read(self: Any, start: int, stop: int, original: Any = original) -> Any:
            seen.append((self.planned.name, start, stop))
            return original(self, start, stop)

        monkeypatch.setattr(execute._StoredChunks, reader, read)
    yield seen


@pytest.mark.parametrize("method", METHODS)
def test_smallest_steps_write_the_same_bytes(
    method: str, family: dict[str, Path], tmp_path: Path, range_reads: list[tuple[str, int, int]]
) -> None:
    spec = next(s for s in all_methods() if s.name == method)
    recipe = _recipe(spec, family)
    merge(recipe, tmp_path / "default", device="cpu")
    range_reads.clear()
    # A generous cap (the step size is set below it) and 64 KB steps: elementwise methods
    # take ~20 rows at a time, the sparsifiers their smallest unit (CHUNK entries, or a
    # block of rows), where the default takes every tensor here in one step.
    merge(recipe, tmp_path / "small", device="cpu", max_memory=8 << 30, chunk_bytes=64 << 10)
    default, small = _weights(tmp_path / "default"), _weights(tmp_path / "small")
    assert default.keys() == small.keys() and default
    for name in default:
        assert small[name] == default[name], f"{method}: {name} differs in small steps"
    if spec.streamed is not None:
        starts = {start for tensor, start, _ in range_reads if tensor == EMBEDDING}
        # At least one range per CHUNK, read by each pass (statistics and combining).
        assert len(starts) >= (SPEC.vocab * SPEC.hidden) // CHUNK
        assert max(stop - start for _, start, stop in range_reads) <= CHUNK


def test_a_cap_too_small_is_refused_before_writing(family: dict[str, Path], tmp_path: Path) -> None:
    spec = next(s for s in all_methods() if s.name == "ties")
    out = tmp_path / "out"
    with pytest.raises(PlanError, match="max_memory: this merge needs about"):
        merge(_recipe(spec, family), out, device="cpu", max_memory=64 << 20)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_dry_run_says_whether_a_merge_fits(
    family: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text(json.dumps(_recipe(next(s for s in all_methods() if s.name == "ties"), family)))
    verdicts = {}
    for cap in ("64MB", "2GB"):
        code = cli_main(["merge", str(recipe), str(tmp_path / "out"), "--dry-run", "--json", "--max-memory", cap])
        assert code == 0
        report = json.loads(capsys.readouterr().out)
        verdicts[cap] = report["fits"]
        assert report["memory_advice"].startswith("raise the cap") != report["fits"]
        assert report["max_memory_bytes"] == {"64MB": 64 * 10**6, "2GB": 2 * 10**9}[cap]
        assert report["whole_tensor_memory_bytes"] == 0  # TIES streams every tensor
    assert verdicts == {"64MB": False, "2GB": True}
    # A whole-matrix method reports the tensor it holds whole.
    recipe.write_text(json.dumps(_recipe(next(s for s in all_methods() if s.name == "tsv"), family)))
    assert cli_main(["merge", str(recipe), str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["whole_tensor_memory_bytes"] >= SPEC.vocab * SPEC.hidden * 4 * 4


@pytest.mark.parametrize(("method", "holds_whole"), [("ties", False), ("tsv", True)])
def test_the_verdict_says_the_least_cap_and_what_would_make_it_fit(
    method: str, holds_whole: bool, family: dict[str, Path], tmp_path: Path
) -> None:
    from mergestudio.engine import build_plan, load_recipe
    from mergestudio.engine.memory import memory_verdict

    recipe = _recipe(next(s for s in all_methods() if s.name == method), family)
    plan = build_plan(load_recipe(recipe))
    try:
        least = memory_verdict(plan, None).least_bytes
        # The least cap is exact: the merge fits in it, and not in a byte less.
        assert memory_verdict(plan, least).fits
        just_under, far_under = memory_verdict(plan, least - 1), memory_verdict(plan, 64 << 20)
    finally:
        plan.close()
    for refused in (just_under, far_under):
        assert not refused.fits and refused.summary().startswith(f"does not fit: needs about {format_bytes(least)}")
        assert refused.advice().startswith(f"raise the cap to at least {format_bytes(least)}")
    # A method that streams would fit just under the least cap, when the whole embedding
    # is what the merge needs beyond it; far under it, only a larger cap helps.
    assert just_under.streaming_would_help == holds_whole and not far_under.streaming_would_help
    if holds_whole:
        assert f"choose a method that streams (tsv holds {EMBEDDING} whole" in just_under.advice()
        assert f"tsv holds {EMBEDDING} whole" in far_under.advice()
    else:
        assert "runtime alone" in far_under.advice()
    with pytest.raises(PlanError) as error:
        merge(recipe, tmp_path / "out", max_memory=64 << 20)
    assert far_under.advice() in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_max_memory_merge_matches_the_default(family: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text(json.dumps(_recipe(next(s for s in all_methods() if s.name == "dare_ties"), family)))
    assert cli_main(["merge", str(recipe), str(tmp_path / "a"), "-q", "--device", "cpu"]) == 0
    args = ["merge", str(recipe), str(tmp_path / "b"), "-q", "--device", "cpu", "--max-memory", "4GB"]
    assert cli_main([*args, "--chunk-size", "256KB"]) == 0
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")


@pytest.mark.parametrize("method", ["linear", "ties", "slerp"])
def test_estimate_counts_queued_parts_not_whole_outputs(method: str, family: dict[str, Path]) -> None:
    from mergestudio.engine import build_plan, load_recipe
    from mergestudio.engine.plan import RUNTIME_BYTES

    spec = next(s for s in all_methods() if s.name == method)
    plan = build_plan(load_recipe(_recipe(spec, family)))
    try:
        step = 64 << 10
        estimate = plan.estimate(chunk_bytes=step)
        statistics = max(p.numel * len(p.all_inputs()) // 4 for p in plan.tensors) if spec.streamed else 0
        # The writer's queue holds parts of under half a step each (three at most), where
        # the embedding alone (2304 × 128 bf16, 576 KB) would be whole outputs.
        assert estimate.peak_memory_bytes <= RUNTIME_BYTES + step + statistics + 3 * step // 2
        assert estimate.whole_tensor_bytes == 0
    finally:
        plan.close()
