"""Extracting a LoRA from a fine-tune: full rank reproduces it, low rank keeps the energy
it reports; the folder loads in peft."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mergestudio.errors import Cancelled, PlanError
from mergestudio.events import CancelToken, Progress
from mergestudio.lora.extract import ExtractSettings, extract_lora, lora_size_bytes
from mergestudio.lora.factorize import svd_for_energy, truncated_svd

from tests.checkpoints import TinyLlama, tiny_tensors
from tests.peft_adapters import logits, merged_reference

pytest.importorskip("peft")


@pytest.mark.parametrize("embeddings", ["save", "lora"])
def test_full_rank_extraction_reproduces_the_finetune(
    make_checkpoint: Callable[..., Path], tmp_path: Path, embeddings: str
) -> None:
    base, tune = make_checkpoint("base"), make_checkpoint("tune", seed=1)
    result = extract_lora(base, tune, tmp_path / "lora", ExtractSettings(rank=16, embeddings=embeddings))  # type: ignore[arg-type]
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    assert all(m.energy > 0.999999 for m in result.lora_modules)
    assert torch.allclose(logits(base, tmp_path / "lora"), logits(tune), atol=1e-4)
    actions = {m.tensor: m.action for m in result.modules}
    assert actions["model.layers.0.self_attn.q_proj.weight"] == "lora"
    assert actions["model.norm.weight"] == "saved"  # norms cannot be low-rank: saved whole
    expected = "lora" if embeddings == "lora" else "saved"
    assert actions["model.embed_tokens.weight"] == expected
    assert actions["lm_head.weight"] == expected


def test_low_rank_keeps_the_energy_it_reports(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base, tune = make_checkpoint("base"), make_checkpoint("tune", seed=2)
    result = extract_lora(base, tune, tmp_path / "lora", ExtractSettings(energy=0.6))
    report = json.loads((tmp_path / "lora" / "lora_report.json").read_text())
    assert len(report["modules"]) == len(result.modules)
    applied = merged_reference(base, tmp_path / "lora")
    original, tuned = tiny_tensors(TinyLlama(), 0), tiny_tensors(TinyLlama(), 2)
    ranks = []
    for module in result.lora_modules:
        delta = tuned[module.tensor] - original[module.tensor]
        kept = applied[module.tensor] - original[module.tensor]
        measured = 1 - float((delta - kept).square().sum() / delta.square().sum())
        assert module.energy >= 0.6
        assert measured == pytest.approx(module.energy, abs=1e-4), module.tensor
        ranks.append(module.rank)
    assert max(ranks) < 16  # random task matrices: 60 % of the energy needs fewer than all directions


def test_rank_and_energy_choose_the_same_best_factorisation() -> None:
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(400, 6, generator=generator) @ torch.randn(6, 300, generator=generator)
    matrix = low + 0.05 * torch.randn(400, 300, generator=generator)
    fixed = truncated_svd(matrix, 6)  # randomised path: 6 + oversampling ≪ 300
    assert fixed.energy > 0.99
    residual = matrix - fixed.left @ fixed.right
    assert fixed.relative_error == pytest.approx(float(residual.norm() / matrix.norm()), rel=1e-3)
    exact = torch.linalg.svdvals(matrix)
    assert fixed.energy == pytest.approx(float(exact[:6].square().sum() / exact.square().sum()), abs=1e-4)
    chosen = svd_for_energy(matrix, fixed.energy - 1e-4)
    assert chosen.rank == 6


def test_extraction_reports_progress_and_cancels_cleanly(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base, tune = make_checkpoint("base"), make_checkpoint("tune", seed=1)
    cancel = CancelToken()
    seen: list[Progress] = []

    def events(event: object) -> None:
        if isinstance(event, Progress):
            seen.append(event)
            cancel.cancel()  # on the first report, before any tensor is done

    with pytest.raises(Cancelled):
        extract_lora(base, tune, tmp_path / "lora", ExtractSettings(rank=4), events=events, cancel=cancel)
    assert seen and seen[0].job == "extract"
    assert not (tmp_path / "lora").exists()
    assert not any(p.name.startswith(".lora") for p in tmp_path.iterdir())


def test_a_model_of_another_shape_is_not_a_finetune(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base, other = make_checkpoint("base"), make_checkpoint("other", seed=1, hidden=24)
    with pytest.raises(PlanError, match="not a fine-tune of this base"):
        extract_lora(base, other, tmp_path / "lora", ExtractSettings(rank=4))
    assert not (tmp_path / "lora").exists()


def test_size_estimate_matches_the_written_adapter(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base, tune = make_checkpoint("base"), make_checkpoint("tune", seed=1)
    result = extract_lora(
        base, tune, tmp_path / "lora", ExtractSettings(rank=3, embeddings="skip"), dtype="f32"
    )
    shapes = [(m.shape[0], m.shape[1]) for m in result.lora_modules]
    estimate = lora_size_bytes(shapes, 3, item_size=4)
    saved = sum(4 * torch.Size(m.shape).numel() for m in result.modules if m.action == "saved")
    # the file adds its JSON header to the tensor bytes
    assert estimate + saved < result.adapter_bytes < estimate + saved + 20_000
