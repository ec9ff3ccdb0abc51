from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mergestudio.errors import SourceError
from mergestudio.io import is_hub_reference, open_model
from safetensors.torch import save_file

from tests.checkpoints import TinyLlama, tiny_tensors


def test_folder_metadata_without_reading_data(make_checkpoint: Callable[..., Path]) -> None:
    folder = make_checkpoint("m", layers=3, hidden=8, intermediate=12, vocab=20)
    source = open_model(folder)
    assert source.architecture == "LlamaForCausalLM"
    assert source.num_layers == 3
    spec = TinyLlama(layers=3, hidden=8, intermediate=12, vocab=20)
    assert {n: i.shape for n, i in source.tensors.items()} == spec.shapes()
    assert source.parameter_count == sum(torch.Size(s).numel() for s in spec.shapes().values())
    assert source.total_bytes == source.parameter_count * 4
    assert source.dtypes == {"F32": source.parameter_count}


def test_read_returns_the_stored_values(make_checkpoint: Callable[..., Path]) -> None:
    folder = make_checkpoint("m", seed=2)
    expected = tiny_tensors(TinyLlama(), seed=2)
    source = open_model(folder)
    for name, tensor in expected.items():
        assert torch.equal(source.read(name), tensor)


def test_sharded_folder_with_index(tmp_path: Path) -> None:
    tensors = tiny_tensors(TinyLlama(), seed=1)
    names = list(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for filename, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(tmp_path / filename))
    weight_map = {n: f for f, part in shards.items() for n in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    source = open_model(tmp_path)
    assert set(source.tensors) == set(names)
    assert torch.equal(source.read(names[-1]), tensors[names[-1]])
    assert len(source.files) == 2


def test_single_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"a.weight": torch.ones(3, 2)}, str(path))
    source = open_model(path)
    assert source.config is None
    assert torch.equal(source.read("a.weight"), torch.ones(3, 2))


def test_truncated_file_names_file_and_tensor(make_checkpoint: Callable[..., Path]) -> None:
    folder = make_checkpoint("m")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(SourceError, match=r"model\.safetensors: truncated: tensor '.+'"):
        open_model(folder)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage!", struct.pack("<Q", 10) + b"not json!!", struct.pack("<Q", 2) + b"[]"],
)
def test_garbage_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="model.safetensors: not a safetensors file"):
        open_model(path)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        open_model(tmp_path / "nowhere" / "model")


def test_index_listing_missing_shard(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(SourceError, match="gone.safetensors"):
        open_model(tmp_path)


def test_pickle_refused_unless_allowed(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(SourceError, match="pytorch_model.bin: pickle checkpoints can run arbitrary code"):
        open_model(tmp_path)
    source = open_model(tmp_path, allow_pickle=True)
    assert torch.equal(source.read("w"), torch.arange(6.0).reshape(2, 3))
    assert source.tensors["w"].dtype == "F32"


def test_pickle_with_code_is_rejected_even_when_allowed(tmp_path: Path) -> None:
    class Sneaky:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    torch.save({"w": Sneaky()}, tmp_path / "model.bin")
    with pytest.raises(SourceError, match="weights_only=True"):
        open_model(tmp_path, allow_pickle=True)


def _populate_hub_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub itself writes: blobs, a snapshot of symlinks, a ref."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for index, (name, content) in enumerate(files.items()):
        blob = repo_dir / "blobs" / f"blob{index}"
        blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def test_hub_reference_offline_from_cache(
    tmp_path: Path, make_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_checkpoint("published", seed=3)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _populate_hub_cache(cache, "acme/tiny-llama", commit, files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # read by io.hub when a download starts
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert is_hub_reference("acme/tiny-llama")
    source = open_model("acme/tiny-llama")
    assert source.revision == commit
    assert source.architecture == "LlamaForCausalLM"
    expected = tiny_tensors(TinyLlama(), seed=3)
    assert torch.equal(source.read("lm_head.weight"), expected["lm_head.weight"])
    pinned = open_model(f"acme/tiny-llama@{commit}")
    assert pinned.revision == commit
    with pytest.raises(SourceError, match="acme/other: the Hugging Face Hub cannot be reached and the model is not in the cache"):
        open_model("acme/other")
