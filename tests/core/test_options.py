"""The merge options a user sets, each checked for its effect: device resolution and its
errors, torch threads, the compute dtype, the output dtype in the written file, the random
seed end to end, the tokenizer source, and the CLI's --shard-size and --threads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mergestudio.cli.args import parse_size
from mergestudio.cli.main import main
from mergestudio.engine import merge
from mergestudio.engine.device import resolve_device, torch_threads
from mergestudio.errors import MergeError, RecipeError
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file

CUDA = torch.cuda.is_available()


def _recipe(family: dict[str, Path], method: str = "task_arithmetic", **extra: Any) -> dict[str, Any]:
    return {
        "merge_method": method,
        "base_model": str(family["base"]),
        "models": [
            {"model": str(family["ft1"]), "parameters": {"weight": 0.7}},
            {"model": str(family["ft2"]), "parameters": {"weight": 0.4}},
        ],
        **extra,
    }


def _task_arithmetic_reference(family: dict[str, Path]) -> dict[str, np.ndarray]:
    """θ_base + 0.7 τ₁ + 0.4 τ₂ in float64, from the files."""
    files = {k: load_numpy(str(family[k] / "model.safetensors")) for k in ("base", "ft1", "ft2")}
    out = {}
    for name, base in files["base"].items():
        b = base.astype(np.float64)
        out[name] = b + 0.7 * (files["ft1"][name] - b) + 0.4 * (files["ft2"][name] - b)
    return out


# ---- devices --------------------------------------------------------------------------------


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool, bool], None]:
    """``devices(cuda, mps)`` makes torch report those accelerators as present or not."""

    def set_present(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_present


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(devices, cuda: bool, mps: bool, expected: str) -> None:
    devices(cuda, mps)
    assert resolve_device("auto") == torch.device(expected)


def test_explicit_devices_are_honoured_or_refused(devices) -> None:
    devices(False, False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MergeError, match="device: cuda was asked for but no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(MergeError, match="device: cuda was asked for"):
        resolve_device("cuda:1")
    with pytest.raises(MergeError, match="device: mps was asked for but Apple's Metal"):
        resolve_device("mps")
    with pytest.raises(MergeError, match=r"unknown device 'tpu'; valid: auto, cpu, cuda, mps"):
        resolve_device("tpu")
    devices(True, False)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # the index is kept


def test_an_unavailable_device_fails_the_merge_before_writing(devices, model_family, tmp_path: Path) -> None:
    devices(False, False)
    with pytest.raises(MergeError, match="cuda"):
        merge(_recipe(model_family), tmp_path / "out", device="cuda")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine: the CUDA merge was not run")
def test_cuda_merge_matches_the_cpu_merge(model_family, tmp_path: Path) -> None:
    on_gpu = merge(_recipe(model_family, method="ties", parameters={"density": 0.5}), tmp_path / "gpu", device="cuda")
    on_cpu = merge(_recipe(model_family, method="ties", parameters={"density": 0.5}), tmp_path / "cpu", device="cpu")
    assert on_gpu.stats.device.startswith("cuda") and on_cpu.stats.device == "cpu"
    gpu, cpu = load_file(str(on_gpu.output / "model.safetensors")), load_file(str(on_cpu.output / "model.safetensors"))
    assert set(gpu) == set(cpu)
    for name in cpu:
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-5, atol=1e-6, msg=name)


# ---- threads --------------------------------------------------------------------------------


def test_torch_threads_sets_the_count_inside_and_restores_it() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(wanted):
        raise RuntimeError("restored even when the block fails")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@contextmanager
def _recording_threads(seen: list[tuple[int | None, int]]) -> Iterator[Callable[[int | None], Any]]:
    """A stand-in for ``torch_threads`` that records (asked, in effect) and defers to it."""

    @contextmanager
    def recording(count: int | None) -> Iterator[None]:
        with torch_threads(count):
            seen.append((count, torch.get_num_threads()))
            yield

    yield recording


def test_cli_threads_reach_the_merge(model_family, tmp_path: Path, monkeypatch, capsys) -> None:
    import mergestudio.engine.execute as execute

    seen: list[tuple[int | None, int]] = []
    with _recording_threads(seen) as recording:
        monkeypatch.setattr(execute, "torch_threads", recording)
        recipe = tmp_path / "recipe.yml"
        recipe.write_text(json.dumps(_recipe(model_family)))
        assert main(["merge", str(recipe), str(tmp_path / "three"), "--threads", "3", "-q", "--device", "cpu"]) == 0
        assert main(["merge", str(recipe), str(tmp_path / "default"), "-q", "--device", "cpu"]) == 0
    assert seen == [(3, 3), (1, 1)]  # one thread unless asked: merging is memory-bound
    capsys.readouterr()


# ---- dtypes ---------------------------------------------------------------------------------


def test_float64_compute_and_output(model_family, tmp_path: Path) -> None:
    """Computed and written in float64, task arithmetic matches a float64 reference to
    1e-15, which no float32 computation could (its rounding alone is ~1e-8 here)."""
    result = merge(_recipe(model_family, out_dtype="float64"), tmp_path / "f64", compute_dtype="float64")
    written = load_numpy(str(result.output / "model.safetensors"))
    reference = _task_arithmetic_reference(model_family)
    assert {t.dtype for t in written.values()} == {np.dtype("float64")}
    worst = max(float(np.abs(written[k] - reference[k]).max()) for k in reference)
    assert worst < 1e-15
    in_float32 = merge(_recipe(model_family, out_dtype="float64"), tmp_path / "f32", compute_dtype="float32")
    coarse = load_numpy(str(in_float32.output / "model.safetensors"))
    assert max(float(np.abs(coarse[k] - reference[k]).max()) for k in reference) > 1e-10
    assert json.loads((result.output / "config.json").read_text())["torch_dtype"] == "float64"


def test_bfloat16_compute_rounds_every_value_to_bfloat16(model_family, tmp_path: Path) -> None:
    result = merge(_recipe(model_family, out_dtype="float32"), tmp_path / "bf16", compute_dtype="bfloat16")
    written = load_file(str(result.output / "model.safetensors"))
    reference = _task_arithmetic_reference(model_family)
    for name, tensor in written.items():
        assert tensor.dtype == torch.float32
        # Computed in bfloat16, then widened: every value is a bfloat16 number…
        assert torch.equal(tensor, tensor.to(torch.bfloat16).to(torch.float32)), name
        # …close to the exact merge at bfloat16's precision (8 bits of mantissa).
        np.testing.assert_allclose(tensor.numpy(), reference[name], rtol=2**-6, atol=2e-3, err_msg=name)


@pytest.mark.parametrize(("out_dtype", "code"), [("float16", "F16"), ("bfloat16", "BF16"), ("float32", "F32")])
def test_out_dtype_is_the_written_files_dtype(model_family, tmp_path: Path, out_dtype: str, code: str) -> None:
    result = merge(_recipe(model_family, out_dtype=out_dtype), tmp_path / out_dtype)
    with safe_open(str(result.output / "model.safetensors"), "pt") as handle:
        assert {handle.get_slice(name).get_dtype() for name in handle.keys()} == {code}  # noqa: SIM118
    assert json.loads((result.output / "config.json").read_text())["torch_dtype"] == out_dtype
    reference = _task_arithmetic_reference(model_family)
    written = load_file(str(result.output / "model.safetensors"))
    for name, tensor in written.items():
        exact = torch.from_numpy(reference[name]).to(getattr(torch, out_dtype))
        torch.testing.assert_close(tensor, exact, rtol=2**-7, atol=1e-3, msg=name)


# ---- seeds ----------------------------------------------------------------------------------


def test_random_seed_end_to_end(model_family, tmp_path: Path) -> None:
    """DARE-TIES with a recipe seed: the same seed writes byte-identical files, another
    seed merges differently (different random masks), both reading the same inputs."""

    def dare(seed: int, name: str) -> bytes:
        recipe = _recipe(model_family, method="dare_ties", parameters={"density": 0.5}, random_seed=seed)
        return (merge(recipe, tmp_path / name).output / "model.safetensors").read_bytes()

    first, again, other = dare(7, "a"), dare(7, "b"), dare(8, "c")
    assert first == again
    assert first != other
    kept_a = load_file(str(tmp_path / "a" / "model.safetensors"))
    kept_c = load_file(str(tmp_path / "c" / "model.safetensors"))
    differing = [n for n in kept_a if not torch.equal(kept_a[n], kept_c[n])]
    assert len(differing) > len(kept_a) // 2  # every tensor draws its own masks from the seed


# ---- tokenizer source -----------------------------------------------------------------------


@pytest.fixture
def tokenized_family(model_family: dict[str, Path]) -> dict[str, Path]:
    """The family with a distinct tokenizer file per model."""
    for name, folder in model_family.items():
        (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "owner": name}))
    return model_family


@pytest.mark.parametrize(("source", "owner"), [(None, "base"), ("base", "base"), ("ft2", "ft2")])
def test_tokenizer_source_copies_that_models_tokenizer(
    tokenized_family, tmp_path: Path, source: str | None, owner: str
) -> None:
    extra = {} if source is None else {"tokenizer_source": source if source == "base" else str(tokenized_family[source])}
    result = merge(_recipe(tokenized_family, **extra), tmp_path / "out")
    assert json.loads((result.output / "tokenizer_config.json").read_text())["owner"] == owner


def test_tokenizer_source_that_is_not_an_input_is_refused(tokenized_family, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"tokenizer_source: '/elsewhere' is not one of the recipe's models"):
        merge(_recipe(tokenized_family, tokenizer_source="/elsewhere"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- shard size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1.5KB", 1500), ("64kib", 65536),
     ("123", 123), (" 3M ", 3 * 10**6), ("7B", 7)],
)
def test_shard_size_parsing(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["five GB", "GB", "1.2.3MB", ""])
def test_shard_size_parsing_rejects_what_is_not_a_size(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


def test_cli_shard_size_splits_the_output(model_family, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(json.dumps(_recipe(model_family)))
    assert main(["merge", str(recipe), str(tmp_path / "whole"), "-q"]) == 0
    assert main(["merge", str(recipe), str(tmp_path / "sharded"), "-q", "--shard-size", "4KB"]) == 0
    capsys.readouterr()
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == {p.name for p in shards}
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    pieces: dict[str, torch.Tensor] = {}
    for shard in shards:
        part = load_file(str(shard))
        # No shard holds more than 4 kB of tensors unless one tensor alone is larger.
        sizes = [t.numel() * t.element_size() for t in part.values()]
        assert sum(sizes) <= 4000 or len(sizes) == 1, shard.name
        assert all(index["weight_map"][name] == shard.name for name in part)
        pieces.update(part)
    assert pieces.keys() == whole.keys()
    assert all(torch.equal(pieces[name], whole[name]) for name in whole)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())


# ---- the output options the writing commands share ------------------------------------------


def _options(command: str) -> dict[str, argparse.Action]:
    from mergestudio.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in subparsers.choices[command]._actions for flag in action.option_strings}


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("merge", {"--shard-size", "--overwrite", "--allow-pickle", "--json", "-q", "--quiet"}),
        ("moe", {"--shard-size", "--overwrite", "--allow-pickle", "--json", "-q", "--quiet"}),
        ("extract-lora", {"--overwrite", "--json", "-q", "--quiet"}),
        ("export", {"--overwrite", "-q", "--quiet"}),
    ],
)
def test_writing_commands_share_their_output_options(command: str, flags: set[str]) -> None:
    """Each writing command has the output options it had, each meaning and saying the same
    as in the others (one declaration: ``cli.args.add_output_options``)."""
    options = _options(command)
    shared = {"--shard-size", "--overwrite", "--allow-pickle", "--json", "-q", "--quiet"}
    assert shared & set(options) == flags
    reference = _options("merge")
    for flag in flags - {"--json"}:  # --json says what it prints, which differs
        mine, theirs = options[flag], reference[flag]
        assert (mine.help, mine.default, mine.type, mine.dest) == (theirs.help, theirs.default, theirs.type, theirs.dest)
    if "--shard-size" in flags:
        assert options["--shard-size"].type("5GB") == 5 * 10**9
