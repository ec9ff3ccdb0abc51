"""Tiny Llama models for mixture-of-experts tests: a base trained briefly on four kinds of
text (digits, lowercase words, capitals, punctuation), and one fine-tune of it per kind,
each trained on its own kind only. With the character tokenizer of the demo zoo, so
transformers loads every folder with its tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from tests.checkpoints import tiny_llama_model

KINDS = {
    "digits": "0123456789",
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "punct": ".,!?'+-=:",
}


def sample_text(kind: str, rng: random.Random, words: int = 4) -> str:
    """Words of 2-4 characters of one kind, separated by spaces."""
    alphabet = KINDS[kind]
    return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 4))) for _ in range(words))


def prompts(kind: str, count: int, seed: int) -> list[str]:
    rng = random.Random(f"{kind}-{seed}")
    return [sample_text(kind, rng) for _ in range(count)]


def _model(seed: int) -> torch.nn.Module:
    from mergestudio.demo.tokenizer import vocab_size

    return tiny_llama_model(vocab_size(), hidden=32, intermediate=64, seed=seed)


def _train(model: torch.nn.Module, tokenizer: object, kinds: list[str], steps: int, seed: int) -> None:
    """A few Adam steps of next-token prediction on texts of ``kinds`` (batches of 16)."""
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        texts = [sample_text(rng.choice(kinds), rng) for _ in range(16)]
        batch = tokenizer(texts, return_tensors="pt", padding=True)  # type: ignore[operator]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_family(root: Path, base_steps: int = 80, expert_steps: int = 8) -> dict[str, Path]:
    """``root/base`` and ``root/<kind>`` for every kind; returns name → folder."""
    from mergestudio.demo.tokenizer import save_tokenizer
    from transformers import AutoTokenizer

    base_dir = root / "base"
    save_tokenizer(base_dir, model_max_length=64)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = _model(seed=0)
    _train(model, tokenizer, list(KINDS), base_steps, seed=0)
    model.save_pretrained(str(base_dir))
    base_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    folders = {"base": base_dir}
    for index, kind in enumerate(KINDS):
        model.load_state_dict(base_state)
        _train(model, tokenizer, [kind], expert_steps, seed=index + 1)
        folder = root / kind
        model.save_pretrained(str(folder))
        save_tokenizer(folder, model_max_length=64)
        folders[kind] = folder
    return folders
