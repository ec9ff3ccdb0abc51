"""Router rows: for each layer, one row per expert that the router multiplies with a
token's hidden state (logits = hidden @ rows.T).

- ``hidden`` / ``hidden_last``: the base model's hidden state entering each layer at a
  prompt's last token (mergekit's ``hidden``), averaged over the expert's prompts;
- ``hidden_avg``: the same, averaged over every token of the prompt first;
- ``cheap_embed``: the sum of the prompts' token embeddings, the same row for every layer;
- ``random``: standard normal; ``uniform_random``: U(±1/sqrt(hidden)), like nn.Linear.

Prompt modes subtract the negative prompts' vector from the positive one and scale each
row to unit length. Prompts are tokenized as mergekit does: the BOS token's text, then
the prompt, with no other special tokens. They run one at a time (mergekit batches them,
padded on the left, where padding can shift a short prompt's positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.moe.config import HIDDEN_MODES, Expert
from mergestudio.moe.plan import EMBEDDING, MoEPlan

if TYPE_CHECKING:
    import torch

# Gate rows of one layer whose condition number passes this are nearly parallel: their
# experts would hardly ever be told apart (mergekit warns at the same value).
DEGENERATE_CONDITION = 5.0


@dataclass(frozen=True)
class GateRows:
    """``experts``: (layers, experts, hidden) float32; ``shared``: (layers, 1, hidden)
    float32 for an architecture with a shared expert, else None."""

    experts: torch.Tensor
    shared: torch.Tensor | None


def compute_gate_rows(
    plan: MoEPlan,
    *,
    seed: int = 0,
    device: str = "cpu",
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> GateRows:
    import torch

    moe = plan.config
    shared_experts = moe.shared_experts or []
    if moe.gate_mode in ("random", "uniform_random"):
        generator = torch.Generator().manual_seed(seed)
        experts = _random_rows(plan, len(moe.experts), generator)
        shared = _random_rows(plan, 1, generator) if plan.architecture.needs_shared_expert else None
        return GateRows(experts, shared)
    encode, combine = _prompt_encoder(plan, device)
    prompts = sum(len(e.positive_prompts or []) + len(e.negative_prompts or []) for _, e in moe.all_experts())
    reporter = ProgressReporter(events, "moe gates", prompts)
    reporter.start()

    def rows(group: list[Expert]) -> torch.Tensor:
        return torch.stack([_expert_row(expert, encode, combine, reporter, cancel) for expert in group], dim=1)

    experts = rows(moe.experts)
    shared = rows(shared_experts) if plan.architecture.needs_shared_expert else None
    for layer in _degenerate_layers(experts):
        log(events, f"layer {layer}: the experts' router rows are nearly parallel (prompts too similar): "
                    "some experts will rarely be chosen there", "warning")
    return GateRows(experts, shared)


def _random_rows(plan: MoEPlan, count: int, generator: torch.Generator) -> torch.Tensor:
    import torch

    shape = (plan.layers, count, plan.hidden)
    if plan.config.gate_mode == "random":
        return torch.randn(shape, generator=generator)
    bound = plan.hidden ** -0.5
    uniform: torch.Tensor = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return uniform


def _expert_row(
    expert: Expert,
    encode: Callable[[str], torch.Tensor],
    combine: Callable[[list[torch.Tensor]], torch.Tensor],
    reporter: ProgressReporter,
    cancel: CancelToken | None,
) -> torch.Tensor:
    """(layers, hidden) float32, unit rows: the positive prompts' vector minus the
    negative prompts'."""

    def vector_of(prompts: list[str]) -> torch.Tensor:
        vectors = []
        for prompt in prompts:
            check_cancel(cancel)
            vectors.append(encode(prompt))
            reporter.advance(current=prompt[:40])
        return combine(vectors)

    row = vector_of(expert.positive_prompts or [])
    if expert.negative_prompts:
        row = row - vector_of(expert.negative_prompts)
    unit: torch.Tensor = row / row.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return unit


Encoder = tuple[Callable[[str], "torch.Tensor"], Callable[[list["torch.Tensor"]], "torch.Tensor"]]


def _prompt_encoder(plan: MoEPlan, device: str) -> Encoder:
    """For the plan's gate mode: prompt → (layers, hidden) float32, and how one group's
    prompt vectors combine into one."""
    tokenizer = _tokenizer(plan)
    mode = plan.config.gate_mode
    if mode in HIDDEN_MODES:
        return _hidden_encoder(plan, tokenizer, device, average=mode == "hidden_avg"), _mean
    return _embedding_encoder(plan, tokenizer), _unit_sum


def _mean(vectors: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.stack(vectors).mean(dim=0)


def _unit_sum(vectors: list[torch.Tensor]) -> torch.Tensor:
    # mergekit sums the embeddings of every token of every prompt, then scales the sum
    # to unit length before any subtraction.
    import torch

    total = torch.stack(vectors).sum(dim=0)
    unit: torch.Tensor = total / total.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return unit


def _tokenizer(plan: MoEPlan) -> Any:
    from transformers import AutoTokenizer

    from mergestudio.errors import PlanError

    try:
        return AutoTokenizer.from_pretrained(str(plan.base.root))
    except Exception as error:  # transformers raises many kinds; the message says which
        raise PlanError(f"base_model: {plan.base.reference}: cannot load its tokenizer ({error})") from error


def _token_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer((tokenizer.bos_token or "") + prompt, add_special_tokens=False)["input_ids"]
    return list(ids)


def _hidden_encoder(plan: MoEPlan, tokenizer: Any, device: str, *, average: bool) -> Callable[[str], torch.Tensor]:
    import torch
    from transformers import AutoModelForCausalLM

    from mergestudio.io.dtypes import to_torch

    stored = max(plan.base.dtypes, key=lambda code: plan.base.dtypes[code])
    model: Any = AutoModelForCausalLM.from_pretrained(str(plan.base.root), dtype=to_torch(stored))
    model = model.to(device).eval()

    def encode(prompt: str) -> torch.Tensor:
        ids = torch.tensor([_token_ids(tokenizer, prompt)], device=device)
        with torch.no_grad():
            output = model(input_ids=ids, output_hidden_states=True)
        # hidden_states[i] enters layer i; the last entry (after the final norm) has no router.
        states = torch.stack(output.hidden_states[: plan.layers]).float()[:, 0]  # (layers, tokens, hidden)
        vector = states.mean(dim=1) if average else states[:, -1]
        return vector.cpu()

    return encode


def _embedding_encoder(plan: MoEPlan, tokenizer: Any) -> Callable[[str], torch.Tensor]:
    import torch

    embedding = plan.base.read(EMBEDDING)  # (vocab, hidden), a read-only view

    def encode(prompt: str) -> torch.Tensor:
        ids = torch.tensor(_token_ids(tokenizer, prompt))
        summed = embedding.index_select(0, ids).float().sum(dim=0)
        return summed.expand(plan.layers, -1).clone()  # the same row for every layer

    return encode


def _degenerate_layers(rows: torch.Tensor) -> list[int]:
    import torch

    if rows.shape[1] < 2:
        return []
    conditions = torch.linalg.cond(rows)
    return [layer for layer, value in enumerate(conditions.tolist()) if value > DEGENERATE_CONDITION]
