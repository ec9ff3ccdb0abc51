"""mergekit-moe's YAML: a base model whose attention, embeddings and norms are kept, and
expert models whose MLPs become the experts of one mixture-of-experts model, each with
prompts that say which tokens its router should send to it.

Unknown keys are errors naming the key, as in recipes: a typo must not silently change
the routing of a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergestudio.errors import RecipeError
from mergestudio.recipe.model import describe_validation_error

GateMode = Literal["hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random"]
# Modes whose router rows come from the experts' prompts (the rest are random).
PROMPT_MODES = frozenset({"hidden", "hidden_avg", "hidden_last", "cheap_embed"})
# Modes that run the base model in transformers to read its hidden states.
HIDDEN_MODES = frozenset({"hidden", "hidden_avg", "hidden_last"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expert(_Strict):
    """One expert: the model whose MLP it is and the prompts that describe its tokens.
    ``noise_scale`` adds seeded Gaussian noise to its MLP weights; ``residual_scale``
    scales its down projection (both mergekit's)."""

    source_model: str
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    noise_scale: float | None = None
    residual_scale: float | None = None


class MoEConfig(_Strict):
    """mergekit-moe's configuration. ``architecture`` picks the output (``mixtral`` or
    ``qwen``); by default it follows the base (Qwen2 → Qwen2-MoE, Llama/Mistral →
    Mixtral). ``shared_experts`` (exactly one) is for Qwen2-MoE's shared expert."""

    base_model: str
    experts: list[Expert] = Field(min_length=1)
    gate_mode: GateMode = "hidden"
    dtype: str | None = None
    experts_per_token: int = 2
    shared_experts: list[Expert] | None = None
    architecture: Literal["mixtral", "qwen"] | None = None
    name: str | None = None  # ours: the model card's title

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "moe config") -> MoEConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise RecipeError(describe_validation_error(error, source)) from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "moe config") -> MoEConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: invalid YAML: {error}") from error
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a MoE config must be a YAML mapping with base_model and experts")
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> MoEConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise RecipeError(f"{path}: cannot read the MoE config ({error.strerror})") from error
        return cls.from_yaml(text, str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def all_experts(self) -> list[tuple[str, Expert]]:
        """Every expert with the key path a message names it by."""
        named = [(f"experts[{i}]", expert) for i, expert in enumerate(self.experts)]
        named += [(f"shared_experts[{i}]", expert) for i, expert in enumerate(self.shared_experts or [])]
        return named


def load_moe_config(config: MoEConfig | str | Path | dict[str, Any]) -> MoEConfig:
    """A MoEConfig from itself, a path to YAML, a YAML string, or a dict."""
    if isinstance(config, MoEConfig):
        return config
    if isinstance(config, dict):
        return MoEConfig.from_dict(config)
    text = str(config)
    if "\n" not in text and (text.endswith((".yml", ".yaml")) or Path(text).is_file()):
        return MoEConfig.load(text)
    return MoEConfig.from_yaml(text)
