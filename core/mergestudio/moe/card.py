"""The model card (README.md) of a built MoE model: the config, each input with its role,
revision and content fingerprint, and how its routers were made."""

from __future__ import annotations

import yaml

from mergestudio import __version__
from mergestudio.moe.plan import MoEPlan

_GATE_WORDS = {
    "hidden": "the base's hidden state at each prompt's last token, per layer",
    "hidden_last": "the base's hidden state at each prompt's last token, per layer",
    "hidden_avg": "the base's hidden states averaged over each prompt's tokens, per layer",
    "cheap_embed": "the sum of the prompts' token embeddings (the same for every layer)",
    "random": "random normal rows (seeded)",
    "uniform_random": "random uniform rows, as nn.Linear initialises them (seeded)",
}


def moe_card(plan: MoEPlan) -> str:
    """Markdown with YAML front matter (Hub metadata)."""
    rows = _input_rows(plan)
    front = {
        "library_name": "transformers",
        "tags": ["merge", "mergestudio", "moe", plan.architecture.model_type],
        "base_model": list(dict.fromkeys(row[0] for row in rows)),
    }
    config = plan.config
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {config.name or 'Mixture of experts'}",
        "",
        f"A {plan.architecture.title} mixture of {len(config.experts)} experts "
        f"({config.experts_per_token} per token) built with "
        f"[Merge Studio](https://pypi.org/project/mergestudio/) {__version__}. Attention, embeddings and "
        "norms come from the base; each expert is the MLP of one model. Routers: "
        f"`{config.gate_mode}`, {_GATE_WORDS[config.gate_mode]}.",
        "",
        "## Inputs",
        "",
        "| model | role | revision | fingerprint (sha256 of headers and sampled data) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {model} | {role} | {revision} | `{fingerprint[:16]}` |" for model, role, revision, fingerprint in rows]
    lines += ["", "## Configuration", "", "```yaml", config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def _input_rows(plan: MoEPlan) -> list[tuple[str, str, str, str]]:
    roles: dict[int, list[str]] = {0: ["base"]}
    for index, model in enumerate(plan.expert_models):
        roles.setdefault(model, []).append(f"expert {index}")
    if plan.shared_model is not None:
        roles.setdefault(plan.shared_model, []).append("shared expert")
    return [
        (source.reference, ", ".join(roles.get(i, [])), source.revision or "local", source.fingerprint())
        for i, source in enumerate(plan.sources)
    ]
