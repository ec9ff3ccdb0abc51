"""Writing tiny but real Hugging Face checkpoints for tests: Llama tensor names, a
config.json that transformers accepts, and a tokenizer file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file


@dataclass(frozen=True)
class TinyLlama:
    layers: int = 2
    hidden: int = 16
    intermediate: int = 32
    vocab: int = 48
    heads: int = 2

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for i in range(self.layers):
            prefix = f"model.layers.{i}"
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                shapes[f"{prefix}.self_attn.{proj}.weight"] = (self.hidden, self.hidden)
            shapes[f"{prefix}.mlp.gate_proj.weight"] = (self.intermediate, self.hidden)
            shapes[f"{prefix}.mlp.up_proj.weight"] = (self.intermediate, self.hidden)
            shapes[f"{prefix}.mlp.down_proj.weight"] = (self.hidden, self.intermediate)
            shapes[f"{prefix}.input_layernorm.weight"] = (self.hidden,)
            shapes[f"{prefix}.post_attention_layernorm.weight"] = (self.hidden,)
        shapes["model.norm.weight"] = (self.hidden,)
        shapes["lm_head.weight"] = (self.vocab, self.hidden)
        return shapes

    def config(self, dtype: str) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
            "torch_dtype": dtype,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


def tiny_tensors(spec: TinyLlama, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seed 0 is the 'base'; other seeds are the base plus a seeded perturbation (a fine-tune)."""
    base_gen = torch.Generator().manual_seed(1234)
    tensors = {name: torch.randn(shape, generator=base_gen) * 0.1 for name, shape in spec.shapes().items()}
    if seed:
        tune_gen = torch.Generator().manual_seed(seed)
        for name, tensor in tensors.items():
            tensors[name] = tensor + torch.randn(tensor.shape, generator=tune_gen) * 0.02
    return {name: t.to(dtype).contiguous() for name, t in tensors.items()}


def write_checkpoint(
    folder: Path, spec: TinyLlama, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tiny_tensors(spec, seed, dtype), str(folder / "model.safetensors"), metadata={"format": "pt"})
    dtype_name = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(spec.config(dtype_name), indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    (folder / "generation_config.json").write_text(json.dumps({"max_new_tokens": 8}))
    return folder


def tiny_llama_model(vocab_size: int, hidden: int, intermediate: int, seed: int) -> torch.nn.Module:
    """A randomly initialised 2-layer ``LlamaForCausalLM`` (2 heads, context 64, untied
    head; ids pad 0, bos 1, eos 2) from the real transformers classes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
