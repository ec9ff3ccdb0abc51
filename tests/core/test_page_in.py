"""Page-in: ``prefetch(populate=True)`` maps a tensor's pages before it is read (reading
it then takes no page faults), and the merge asks for it on its page-in thread."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.engine.merge import merge
from mergestudio.io.safetensors_file import MappedFiles, read_header
from mergestudio.io.sources import ModelSource
from safetensors.torch import save_file

from tests.checkpoints import TinyLlama, write_checkpoint

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="MADV_POPULATE_READ is Linux's")


def _mapped_kb(file: Path) -> int:
    """Resident kB of this process's mappings of ``file`` (pages mapped, not merely cached)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and not line.startswith(("Rss", "Size")):
            inside = line.rstrip().endswith(str(file))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_populate_maps_a_tensors_pages_before_it_is_read(tmp_path: Path) -> None:
    file = tmp_path / "big.safetensors"
    values = torch.arange(8 << 20, dtype=torch.int32).to(torch.bfloat16)  # 16 MB
    save_file({"a": values[: 1 << 20].clone(), "b": values}, str(file))
    header = read_header(file)
    mapped = MappedFiles()
    try:
        mapped.prefetch(header.tensors["a"])  # only read ahead: nothing mapped yet
        before = _mapped_kb(file)
        mapped.prefetch(header.tensors["b"], populate=True)
        after = _mapped_kb(file)
        assert before < 1024 and after - before >= 15 * 1024
        assert torch.equal(mapped.tensor(header.tensors["b"]), values)
    finally:
        mapped.close()


def test_the_merge_pages_in_the_next_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TinyLlama(layers=2, hidden=64, intermediate=48, vocab=300, heads=2)
    folders = [write_checkpoint(tmp_path / f"m{i}", spec, seed=i, dtype=torch.bfloat16) for i in range(2)]
    populated: list[str] = []
    original = ModelSource.prefetch

    def recording(self: ModelSource, name: str, populate: bool = False) -> Any:
        if populate:
            populated.append(name)
        return original(self, name, populate)

    monkeypatch.setattr(ModelSource, "prefetch", recording)
    recipe = {"merge_method": "linear", "models": [{"model": str(f), "parameters": {"weight": 0.5}} for f in folders]}
    merge(recipe, tmp_path / "out", device="cpu")
    names = set(read_header(folders[0] / "model.safetensors").tensors)
    assert populated and set(populated) <= names
