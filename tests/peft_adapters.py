"""Real PEFT LoRA adapters for tests, made with ``peft`` on tiny real models, and the
reference weights ``peft`` itself computes for them (``merge_and_unload``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (Conv1D layers store weights as (in, out)) saved with transformers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=48, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def make_lora(
    base: Path,
    out: Path,
    *,
    seed: int,
    r: int = 4,
    alpha: float = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    **options: Any,
) -> Path:
    """Save a LoRA adapter of ``base`` whose A and B are random (a trained-looking update,
    not peft's zero-B initialisation). ``options`` go to ``LoraConfig`` (use_rslora,
    modules_to_save, fan_in_fan_out, rank_pattern, …)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **options
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.mul_(0.2)
            elif parameter.requires_grad:  # modules_to_save copies: make them differ from the base
                parameter.add_(torch.randn_like(parameter) * 0.05)
    peft_model.save_pretrained(out)
    return out


def merged_reference(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """The state dict ``peft`` gives for base + adapter after merge_and_unload."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {name: tensor.detach().clone() for name, tensor in merged.state_dict().items()}


def edit_adapter_config(adapter: Path, **changes: Any) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def logits(model_folder: Path, adapter: Path | None = None) -> torch.Tensor:
    """Logits of a fixed token sequence: the model alone, or with an adapter loaded by peft."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    tokens = torch.arange(3, 19).reshape(2, 8)
    with torch.no_grad():
        return model(tokens).logits
