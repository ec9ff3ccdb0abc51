"""Adapters trained on a resized vocabulary (``resize_token_embeddings`` + saved
embeddings): applied as peft applies them, aligned by token against another
vocabulary, and refused with a clear error when the rows cannot be matched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from mergestudio.engine.merge import merge
from mergestudio.errors import SourceError
from mergestudio.io import open_model
from safetensors.torch import load_file

from tests.core.test_vocab import ADDED, CHARACTERS, EMBEDDINGS, _save_model, _save_tokenizer, _vocab

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base with 51 tokens (52 rows) and a LoRA adapter trained after adding 8 special
    tokens (59 rows), saving its embedding and LM head whole, with its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("resized")
    base, adapter = root / "base", root / "adapter"
    _save_model(base, 52, seed=1)
    _save_tokenizer(base, CHARACTERS, ())
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": list(ADDED)})
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer))
    torch.manual_seed(3)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if parameter.requires_grad and "lora_" not in name:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    reference = peft_model.merge_and_unload().state_dict()
    torch.save({k: v.detach().clone() for k, v in reference.items()}, root / "reference.pt")
    return {"base": base, "adapter": adapter, "root": root}


def test_a_resized_adapter_applies_as_peft_merges_it(resized: dict[str, Path], tmp_path: Path) -> None:
    source = open_model(f"{resized['base']}+{resized['adapter']}")
    assert source.tensors["model.embed_tokens.weight"].shape == (59, 16)
    assert source.config is not None and source.config["vocab_size"] == 59
    out = merge(
        {"merge_method": "linear", "models": [{"model": f"{resized['base']}+{resized['adapter']}",
                                               "parameters": {"weight": 1.0}}], "dtype": "float32"},
        tmp_path / "applied", device="cpu",
    ).output
    written = load_file(out / "model.safetensors")
    reference = torch.load(resized["root"] / "reference.pt")
    for name, tensor in written.items():
        assert torch.allclose(tensor, reference[name], atol=1e-5), name
    assert _vocab(out) == _vocab(resized["adapter"])  # the adapter's tokenizer, with its added tokens


def test_a_resized_adapter_merges_with_its_base_row_by_token(resized: dict[str, Path], tmp_path: Path) -> None:
    adapted = f"{resized['base']}+{resized['adapter']}"
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(resized["base"]), "parameters": {"weight": 0.5}},
                   {"model": adapted, "parameters": {"weight": 0.5}}],
        "tokenizer": {"source": "union"},
        "dtype": "float32",
    }
    out = merge(recipe, tmp_path / "union", device="cpu").output
    written = load_file(out / "model.safetensors")
    base = load_file(resized["base"] / "model.safetensors")
    reference = torch.load(resized["root"] / "reference.pt")
    vocab_out, vocab_base, vocab_adapter = _vocab(out), _vocab(resized["base"]), _vocab(resized["adapter"])
    assert set(vocab_out) == set(vocab_adapter)
    for name in EMBEDDINGS:
        assert written[name].shape[0] >= len(vocab_out)
        for token in ("a", "z", "7", "<s>"):
            expected = 0.5 * base[name][vocab_base[token]] + 0.5 * reference[name][vocab_adapter[token]]
            assert torch.allclose(written[name][vocab_out[token]], expected, atol=1e-5), (name, token)


def test_a_resized_adapter_without_its_tokenizer_is_refused(resized: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(resized["adapter"] / name, bare / name)
    with pytest.raises(SourceError, match=r"resizes the vocabulary \(52 -> 59 rows\).*no tokenizer.json"):
        open_model(f"{resized['base']}+{bare}")
