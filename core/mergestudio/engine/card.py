"""The model card (README.md) of a merged model: the recipe, the method and every input
with its revision or content fingerprint, so the merge can be traced and replayed."""

from __future__ import annotations

from typing import Any

import yaml

from mergestudio import __version__
from mergestudio.engine.plan import MergePlan, describe_sources
from mergestudio.io.hub import published_model_id


def model_card(plan: MergePlan, extra: dict[str, Any] | None = None) -> str:
    """Markdown with YAML front matter (Hub metadata). ``extra`` adds key/value lines
    under 'Provenance' (a search run and trial, say)."""
    recipe_yaml = plan.recipe.to_yaml()
    inputs = describe_sources(plan)
    front: dict[str, Any] = {
        "library_name": "transformers",
        "tags": ["merge", "mergestudio", plan.method.name],
    }
    # The Hub reads base_model as repo ids: inputs from the Hub only, never a local path.
    hub_ids = [published_model_id(str(row["model"])) for row in inputs]
    if any(hub_ids):
        front["base_model"] = list(dict.fromkeys(i for i in hub_ids if i))
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {plan.recipe.name or 'Merged model'}",
        "",
        f"Merged with [Merge Studio](https://pypi.org/project/mergestudio/) {__version__} using "
        f"**{plan.method.name}** ({plan.method.summary.rstrip('.')}).",
        "",
        "## Inputs",
        "",
        "| model | role | revision | fingerprint (sha256 of headers and sampled data) |",
        "|---|---|---|---|",
    ]
    for row in inputs:
        revision = row["revision"] or "local"
        lines.append(f"| {row['model']} | {row['role']} | {revision} | `{row['fingerprint'][:16]}` |")
    if extra:
        lines += ["", "## Provenance", ""]
        lines += [f"- **{key}**: {value}" for key, value in extra.items()]
    lines += ["", "## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    return "\n".join(lines)
