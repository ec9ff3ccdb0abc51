"""Writing a PEFT LoRA folder that ``peft.PeftModel.from_pretrained`` loads:
``adapter_config.json``, ``adapter_model.safetensors`` and a JSON report of how it was
made."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mergestudio.io.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX

ModuleKind = Literal["linear", "embedding"]


@dataclass(frozen=True)
class LoraFactors:
    """One module's update B·A, scale 1: ``b`` (out, r), ``a`` (r, in) in peft's
    orientation (for embeddings b is (embedding_dim, r) and a (r, num_embeddings))."""

    module: str
    kind: ModuleKind
    b: torch.Tensor
    a: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


def lora_from_weight_layout(
    module: str, kind: ModuleKind, left: torch.Tensor, right: torch.Tensor, transposed: bool
) -> LoraFactors:
    """Factors of a delta laid out like the weight (delta = left @ right) as peft's B, A:
    weights stored (in, out) — embeddings, fan_in_fan_out Conv1D — take deltaᵀ = rightᵀ leftᵀ."""
    if transposed:
        return LoraFactors(module, kind, right.T.contiguous(), left.T.contiguous())
    return LoraFactors(module, kind, left.contiguous(), right.contiguous())


def write_peft_folder(
    folder: Path,
    *,
    base_model: str,
    factors: list[LoraFactors],
    saved: dict[str, torch.Tensor],
    dtype: torch.dtype,
    fan_in_fan_out: bool = False,
    report: dict[str, Any] | None = None,
) -> None:
    """Write the adapter into ``folder`` (which must exist). ``saved``: full tensors of
    ``modules_to_save`` by tensor name. Every module gets alpha = its rank (scale 1)."""
    config = _lora_config(base_model, factors, saved, fan_in_fan_out)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    tensors: dict[str, torch.Tensor] = {}
    for item in factors:
        key = f"{PEFT_PREFIX}{item.module}"
        if item.kind == "embedding":
            tensors[f"{key}.lora_embedding_A"] = item.a
            tensors[f"{key}.lora_embedding_B"] = item.b
        else:
            tensors[f"{key}.lora_A.weight"] = item.a
            tensors[f"{key}.lora_B.weight"] = item.b
    for name, tensor in saved.items():
        tensors[f"{PEFT_PREFIX}{name}"] = tensor
    _stream_tensors(folder, tensors, dtype)
    if report is not None:
        (folder / "lora_report.json").write_text(json.dumps(report, indent=2))


def _stream_tensors(folder: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """``adapter_model.safetensors`` through the streaming shard writer (header first,
    tensors one by one): safetensors' save_file builds the whole file in memory first."""
    from mergestudio.io.dtypes import from_torch
    from mergestudio.io.shards import ShardWriter, TensorSlot, layout_shards

    code = from_torch(dtype)
    slots = [TensorSlot(name, code, tuple(tensor.shape)) for name, tensor in tensors.items()]
    shards = layout_shards(slots, 1 << 62, stem=ADAPTER_WEIGHTS.removesuffix(".safetensors"))
    writer = ShardWriter(folder, shards)
    try:
        for name, tensor in tensors.items():
            writer.accept(name, tensor.detach().to("cpu", dtype))
        writer.finish()
    except BaseException:
        writer.abort()
        raise


def _lora_config(
    base_model: str, factors: list[LoraFactors], saved: dict[str, torch.Tensor], fan_in_fan_out: bool
) -> dict[str, Any]:
    """peft's LoraConfig as JSON. Written directly, not through peft: importing peft
    (and transformers) takes longer than extracting a small model's adapter; keys left
    out take peft's defaults, and the tests load every folder we write with peft."""
    ranks = [item.rank for item in factors] or [1]
    rank = max(set(ranks), key=ranks.count)  # the most common rank; the rest are patterns
    # Patterns are regular expressions matched at the end of module names: escaped, a
    # module path matches only itself.
    pattern = {re.escape(i.module): i.rank for i in factors if i.rank != rank}
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted({item.module for item in factors}) or None,
        "modules_to_save": sorted({name.rsplit(".", 1)[0] for name in saved}) or None,
        "fan_in_fan_out": fan_in_fan_out,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "init_lora_weights": True,
    }
