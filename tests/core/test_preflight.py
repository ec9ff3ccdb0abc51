"""The compatibility preflight reads headers only and names what differs."""

from __future__ import annotations

import json

import torch
from mergestudio.io import open_model
from mergestudio.preflight import preflight, vocabulary_size
from safetensors.torch import save_file


def test_fine_tunes_of_one_base_pass(model_family) -> None:
    base = open_model(model_family["base"])
    others = [open_model(model_family[k]) for k in ("ft1", "ft2")]
    report = preflight(base, [base, *others])
    assert report.ok
    assert not report.warnings
    assert {c.model for c in report.checks} == {o.reference for o in others}
    assert "all 21 tensor names match" in report.to_text()


def test_different_vocabulary_and_depth_are_errors(make_checkpoint) -> None:
    base = open_model(make_checkpoint("base"))
    bigger = open_model(make_checkpoint("bigger", seed=1, vocab=64, layers=3))
    report = preflight(base, [bigger])
    assert not report.ok
    topics = {c.topic for c in report.errors}
    assert {"vocabulary", "layers", "shapes"} <= topics
    assert "64 tokens, the base has 48" in report.to_text()
    assert report.status_of(bigger.reference) == "error"


def test_dtype_difference_is_a_warning(make_checkpoint, tmp_path) -> None:
    base_dir = make_checkpoint("base")
    half = tmp_path / "half"
    half.mkdir()
    tensors = open_model(base_dir)
    data = {name: tensors.read(name).to(torch.float16) for name in tensors.tensors}
    save_file(data, str(half / "model.safetensors"))
    (half / "config.json").write_text((base_dir / "config.json").read_text())
    report = preflight(tensors, [open_model(half)])
    assert report.ok
    assert [c.topic for c in report.warnings] == ["dtypes"]


def test_missing_tensors_and_unknown_architecture(make_checkpoint, tmp_path) -> None:
    base = open_model(make_checkpoint("base"))
    partial = tmp_path / "partial.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(48, 16)}, str(partial))
    other = open_model(partial)
    report = preflight(base, [other])
    checks = {c.topic: c for c in report.for_model(other.reference)}
    assert checks["tensor names"].status == "error"
    assert checks["architecture"].status == "warning"
    assert vocabulary_size(other) == 48


def test_vocabulary_from_text_config(tmp_path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"x.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 7}}))
    assert vocabulary_size(open_model(folder)) == 7
