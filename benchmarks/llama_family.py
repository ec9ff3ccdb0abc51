"""Synthetic Llama-shaped checkpoint families for benchmarks: a base and N fine-tunes
(base plus small seeded noise), bf16, realistic tensor names and config.json.

Written once into a work folder and reused: generating 8.8 GB takes a while.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file


@dataclass(frozen=True)
class LlamaShape:
    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for i in range(self.layers):
            p = f"model.layers.{i}"
            shapes[f"{p}.input_layernorm.weight"] = (self.hidden,)
            shapes[f"{p}.self_attn.q_proj.weight"] = (self.hidden, self.hidden)
            shapes[f"{p}.self_attn.k_proj.weight"] = (kv, self.hidden)
            shapes[f"{p}.self_attn.v_proj.weight"] = (kv, self.hidden)
            shapes[f"{p}.self_attn.o_proj.weight"] = (self.hidden, self.hidden)
            shapes[f"{p}.post_attention_layernorm.weight"] = (self.hidden,)
            shapes[f"{p}.mlp.gate_proj.weight"] = (self.intermediate, self.hidden)
            shapes[f"{p}.mlp.up_proj.weight"] = (self.intermediate, self.hidden)
            shapes[f"{p}.mlp.down_proj.weight"] = (self.hidden, self.intermediate)
        shapes["model.norm.weight"] = (self.hidden,)
        shapes["lm_head.weight"] = (self.vocab, self.hidden)
        return shapes

    @property
    def parameters(self) -> int:
        total = 0
        for shape in self.tensor_shapes().values():
            count = 1
            for d in shape:
                count *= d
            total += count
        return total

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


SHAPES = {
    "tiny": LlamaShape("tiny", 256, 4, 688, 4000, 4, 4),
    "134m": LlamaShape("134m", 768, 12, 2048, 32000, 12, 12),
    "1.1b": LlamaShape("1.1b", 2048, 22, 5632, 32000, 32, 4),  # TinyLlama-1.1B's shape
}


def write_family(
    root: Path, shape: LlamaShape, fine_tunes: int = 3, shard_bytes: int = 2 * 1000**3
) -> list[Path]:
    """Write (or reuse) ``root/base`` and ``root/ft1..N``; returns their folders."""
    folders = [root / "base"] + [root / f"ft{i}" for i in range(1, fine_tunes + 1)]
    if all((f / "config.json").exists() for f in folders):
        return folders
    started = time.perf_counter()
    shapes = shape.tensor_shapes()
    for seed, folder in enumerate(folders):
        _write_model(folder, shape, shapes, seed, shard_bytes)
    print(
        f"wrote {shape.name} family ({shape.parameters / 1e6:.0f}M params x {len(folders)}) "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return folders


def _write_model(
    folder: Path, shape: LlamaShape, shapes: dict[str, tuple[int, ...]], seed: int, shard_bytes: int
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for index, (name, tensor_shape) in enumerate(shapes.items()):
        tensor = _tensor(tensor_shape, index, seed)
        if size and size + tensor.numel() * 2 > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.numel() * 2
    weight_map = {}
    for i, shard in enumerate(shards):
        filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, filename))
    index = {
        "metadata": {"total_size": sum(t.numel() * 2 for s in shards for t in s.values())},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(shape.config(), indent=2))


def _tensor(shape: tuple[int, ...], index: int, seed: int) -> torch.Tensor:
    """The base tensor is seeded by its index; a fine-tune adds noise seeded by (seed, index)
    at 1/20 of the base's scale, with a few larger outliers, like a real fine-tune."""
    base = torch.randn(shape, generator=torch.Generator().manual_seed(index)) * 0.02
    if len(shape) == 1:
        base += 1.0
    if seed:
        noise_gen = torch.Generator().manual_seed(1_000_003 * seed + index)
        noise = torch.randn(shape, generator=noise_gen) * 0.001
        base += noise
    return base.to(torch.bfloat16)
