"""Mixture-of-experts assembly from mergekit-moe's YAML: several fine-tunes of one base
become the experts of a Mixtral or Qwen2-MoE model, routed by prompts (see docs/moe.md)."""

from mergestudio.moe.build import MoEResult, build_moe
from mergestudio.moe.config import Expert, MoEConfig, load_moe_config
from mergestudio.moe.plan import MoEPlan, plan_moe

__all__ = ["Expert", "MoEConfig", "MoEPlan", "MoEResult", "build_moe", "load_moe_config", "plan_moe"]
