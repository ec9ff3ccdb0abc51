"""Training for the demo zoo: pre-train a tiny Llama on a mixed corpus, then fine-tune
copies of it on one skill each.

Everything is seeded and runs with a fixed number of CPU threads, so the same machine
with the same library versions produces bit-identical weights.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """Shape of the demo Llama. Defaults give ~0.9M parameters (1.7 MB in fp16)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 64


@dataclass(frozen=True)
class Schedule:
    """One training run: AdamW with linear warm-up then cosine decay to 10 %."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    weight_decay: float = 0.0
    seq_len: int = 64  # pre-training only: rows of packed text


def set_determinism(seed: int, threads: int) -> None:
    """Seed every generator and pin the thread count: CPU kernels split work by thread,
    so a different count can change floating-point summation order."""
    import os

    import torch

    # The tokenizer's own thread pool would compete with torch's for the same cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def make_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _lr_at(step: int, schedule: Schedule) -> float:
    if step < schedule.warmup:
        return schedule.lr * (step + 1) / schedule.warmup
    progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
    return schedule.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: torch.nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay, betas=(0.9, 0.98)
    )


Batch = list[tuple["torch.Tensor", "torch.Tensor"]]


def _run(
    model: torch.nn.Module,
    schedule: Schedule,
    next_batch: Callable[[int], Batch],
    log: Log | None,
    label: str,
) -> list[float]:
    """The shared loop. ``next_batch(step)`` returns the step's micro-batches, each
    (input_ids, labels), both (B, T) int64 with -100 in labels where no loss is taken;
    their losses are averaged over every labelled token of the step (micro-batches keep
    short rows from being padded to the width of long ones). Returns each step's loss."""
    import torch

    optimizer = _optimizer(model, schedule)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(schedule.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, schedule)
        parts = next_batch(step)
        counts = [int((labels[:, 1:] != -100).sum()) for _, labels in parts]
        total = sum(counts)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for (input_ids, labels), count in zip(parts, counts, strict=True):
            # The model's loss is a mean over this part's tokens; weight it by its share.
            loss = model(input_ids=input_ids, labels=labels).loss * (count / total)
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(step_loss)
        if log is not None and (step % 100 == 0 or step == schedule.steps - 1):
            recent = sum(losses[-50:]) / len(losses[-50:])
            log(
                f"{label} step {step + 1}/{schedule.steps} loss {recent:.3f} "
                f"({time.perf_counter() - start:.0f}s)"
            )
    model.eval()
    return losses


def pretrain(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    lines: Sequence[str],
    schedule: Schedule,
    seed: int,
    log: Log | None = None,
) -> list[float]:
    """Causal-LM training on ``lines`` packed into rows of ``seq_len`` tokens.

    Each line becomes ``<s> line </s>``; lines are shuffled once per epoch and
    concatenated, so no compute is spent on padding."""
    import torch

    encoded = tokenizer(list(lines), add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    rng = random.Random(seed)
    rows_per_step = schedule.batch_size
    need = schedule.steps * rows_per_step * schedule.seq_len
    stream: list[int] = []
    while len(stream) < need:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for i in order:
            stream.extend(encoded[i])
            stream.append(eos)
    data = torch.tensor(stream[:need], dtype=torch.long).view(schedule.steps, rows_per_step, schedule.seq_len)

    def next_batch(step: int) -> Batch:
        return [(data[step], data[step])]

    return _run(model, schedule, next_batch, log, "pretrain")


def finetune(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    schedule: Schedule,
    seed: int,
    log: Log | None = None,
    label: str = "finetune",
    replay: Sequence[str] = (),
    replay_rows: int = 0,
) -> list[float]:
    """Supervised fine-tuning on (prompt, answer) pairs: one example per row, loss only on
    the answer and the closing ``</s>``.

    ``replay_rows`` of every batch's ``schedule.batch_size`` rows are lines of
    ``replay`` (the base's own pre-training text, loss on every token), as instruction
    tuning mixes in general data: it keeps the fine-tune near the base."""
    import torch

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = tokenizer([p for p, _ in examples], add_special_tokens=True)["input_ids"]
    answers = tokenizer([a for _, a in examples], add_special_tokens=False)["input_ids"]
    # (prompt ids without loss, ids with loss)
    rows = [(p, [*a, eos]) for p, a in zip(prompts, answers, strict=True)]
    replay_ids = (
        tokenizer(list(replay), add_special_tokens=True, truncation=False)["input_ids"] if replay_rows else []
    )
    # Replayed lines are cut to the context pre-training used (its rows of seq_len tokens).
    replayed = [(ids[:1], [*ids[1:], eos][: schedule.seq_len - 1]) for ids in replay_ids]
    if replay_rows and not replayed:
        raise ValueError("replay_rows > 0 needs replay lines")
    task_rows = schedule.batch_size - replay_rows
    rng = random.Random(seed)
    order: list[int] = []
    replay_order: list[int] = []

    def padded(picked: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids and labels; the loss is on each row's second part."""
        width = max(len(p) + len(a) for p, a in picked)
        ids = torch.full((len(picked), width), pad, dtype=torch.long)
        labels = torch.full((len(picked), width), -100, dtype=torch.long)
        for r, (p, a) in enumerate(picked):
            ids[r, : len(p) + len(a)] = torch.tensor(p + a)
            labels[r, len(p) : len(p) + len(a)] = torch.tensor(a)
        return ids, labels

    def next_batch(step: int) -> Batch:
        nonlocal order, replay_order
        if len(order) < task_rows:
            order = list(range(len(rows)))
            rng.shuffle(order)
        batch = [padded([rows[order.pop()] for _ in range(task_rows)])]
        if replay_rows:
            if len(replay_order) < replay_rows:
                replay_order = list(range(len(replayed)))
                rng.shuffle(replay_order)
            batch.append(padded([replayed[replay_order.pop()] for _ in range(replay_rows)]))
        return batch

    return _run(model, schedule, next_batch, log, label)
