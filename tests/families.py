"""Tiny random models of every registered family, built from the real transformers and
diffusers config classes and saved in their own formats: a base and fine-tunes (the base
plus a seeded perturbation). Each ``FamilyCase`` knows how to load a folder back with
its library and run a forward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_LM = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
           num_key_value_heads=1, vocab_size=64, max_position_embeddings=32)


@dataclass(frozen=True)
class FamilyCase:
    family: str  # the registry's family name
    build: Callable[[], Any]  # a fresh randomly initialised model
    depths: Callable[[Any], dict[str, int]]  # stack → depth, from the library's config
    forward: Callable[[Any], torch.Tensor]

    def save(self, folder: Path, seeds: tuple[int, ...]) -> list[Path]:
        """One folder per seed: seed 0 the base, others the base plus noise."""
        torch.manual_seed(0)
        model = self.build()
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        paths = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for name, tensor in model.state_dict().items():
                    if tensor.is_floating_point():
                        noise = torch.randn(tensor.shape, generator=generator) * 0.02 if seed else 0.0
                        tensor.copy_(base[name] + noise)
            path = folder / f"{self.family}-{seed}"
            model.save_pretrained(path)
            paths.append(path)
        return paths

    def load(self, folder: Path) -> Any:
        return type(self.build()).from_pretrained(folder).eval()


def _ids(model: Any) -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 3]])


def _logits(model: Any) -> torch.Tensor:
    return model(input_ids=_ids(model)).logits


def _lm(config_class: str, model_class: str, family: str, **extra: Any) -> FamilyCase:
    import transformers

    def build() -> Any:
        config = getattr(transformers, config_class)(**{**_LM, **extra})
        return getattr(transformers, model_class)(config)

    return FamilyCase(family, build, lambda m: {"layers": m.config.num_hidden_layers}, _logits)


def transformers_cases() -> list[FamilyCase]:
    import transformers as tf

    def t5() -> Any:
        return tf.T5ForConditionalGeneration(tf.T5Config(d_model=16, d_ff=32, num_layers=2, num_decoder_layers=3,
                                                         num_heads=2, d_kv=8, vocab_size=64))

    def clip() -> Any:
        text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                    vocab_size=64, max_position_embeddings=16)
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                      image_size=8, patch_size=4)
        return tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))

    return [
        _lm("LlamaConfig", "LlamaForCausalLM", "llama"),
        _lm("MistralConfig", "MistralForCausalLM", "mistral"),
        _lm("Qwen2Config", "Qwen2ForCausalLM", "qwen2"),
        _lm("Qwen3Config", "Qwen3ForCausalLM", "qwen3", head_dim=8),
        _lm("Gemma2Config", "Gemma2ForCausalLM", "gemma2", head_dim=8),
        _lm("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3", head_dim=8),
        _lm("Phi3Config", "Phi3ForCausalLM", "phi3", pad_token_id=0),
        _lm("MixtralConfig", "MixtralForCausalLM", "mixtral", num_local_experts=3, num_experts_per_tok=2),
        FamilyCase(
            "gpt2",
            lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=64, n_positions=32)),
            lambda m: {"layers": m.config.n_layer},
            _logits,
        ),
        FamilyCase(
            "bert",
            lambda: tf.BertForMaskedLM(tf.BertConfig(**{**_LM, "num_key_value_heads": None})),
            lambda m: {"layers": m.config.num_hidden_layers},
            _logits,
        ),
        FamilyCase(
            "bert",  # RoBERTa: the same table
            lambda: tf.RobertaForMaskedLM(tf.RobertaConfig(**{**_LM, "num_key_value_heads": None, "pad_token_id": 0})),
            lambda m: {"layers": m.config.num_hidden_layers},
            _logits,
        ),
        FamilyCase(
            "t5",
            t5,
            lambda m: {"encoder": m.config.num_layers, "decoder": m.config.num_decoder_layers},
            lambda m: m(input_ids=_ids(m), decoder_input_ids=torch.tensor([[0, 4]])).logits,
        ),
        FamilyCase(
            "vit",
            lambda: tf.ViTForImageClassification(tf.ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                                              num_attention_heads=2, image_size=8, patch_size=4,
                                                              num_labels=3)),
            lambda m: {"layers": m.config.num_hidden_layers},
            lambda m: m(pixel_values=torch.ones(1, 3, 8, 8)).logits,
        ),
        FamilyCase(
            "clip",
            clip,
            lambda m: {"text": m.config.text_config.num_hidden_layers, "vision": m.config.vision_config.num_hidden_layers},
            lambda m: m(input_ids=_ids(m), pixel_values=torch.ones(1, 3, 8, 8)).logits_per_image,
        ),
    ]


# SD 1.5's and SDXL's block layout at toy width: 4 (3) down blocks of 2 layers each.
SD15_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 8, 16, 16),
    norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SDXL_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 16),
    norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 2), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=4, projection_class_embeddings_input_dim=8 + 6 * 4,
)


def _unet_forward(model: Any) -> torch.Tensor:
    kwargs: dict[str, Any] = {}
    if model.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.ones(1, 8), "time_ids": torch.ones(1, 6)}
    return model(torch.ones(1, 4, 16, 16), 10, encoder_hidden_states=torch.ones(1, 3, 8), **kwargs).sample


def unet_cases() -> list[FamilyCase]:
    from diffusers import UNet2DConditionModel

    return [
        # SuperMerger's blocks: BASE + IN00–IN11 + M00 + OUT00–OUT11 (SDXL: 9 IN and 9 OUT).
        FamilyCase("sd15-unet", lambda: UNet2DConditionModel(**SD15_UNET), lambda m: {"unet": 26}, _unet_forward),
        FamilyCase("sdxl-unet", lambda: UNet2DConditionModel(**SDXL_UNET), lambda m: {"unet": 20}, _unet_forward),
    ]


def diffusers_to_single_file(name: str, layers_per_block: int = 2) -> str:
    """A diffusers UNet tensor name in the original ``model.diffusion_model.*`` naming
    (the inverse of diffusers' single-file conversion, for SD-shaped UNets)."""
    import re

    stride = layers_per_block + 1
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}

    def inner(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return f"{resnet.get(head, head)}.{tail}" if tail else rest

    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in fixed.items():
        if name.startswith(old + "."):
            return f"model.diffusion_model.{new}{name[len(old):]}"
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        where = f"input_blocks.{stride * block + layer + 1}"
        return f"model.diffusion_model.{where}.0.{inner(rest)}" if kind == "resnets" else \
            f"model.diffusion_model.{where}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
        return f"model.diffusion_model.input_blocks.{stride * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name):
        if m[1] == "attentions":
            return f"model.diffusion_model.middle_block.1.{m[3]}"
        return f"model.diffusion_model.middle_block.{2 * int(m[2])}.{inner(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        where = f"output_blocks.{stride * block + layer}"
        return f"model.diffusion_model.{where}.0.{inner(rest)}" if kind == "resnets" else \
            f"model.diffusion_model.{where}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", name):
        # The up-sampler follows the block's last layer: after its attention when it has one.
        return f"model.diffusion_model.output_blocks.{stride * int(m[1]) + layers_per_block}.UPSAMPLER.{m[2]}"
    raise ValueError(f"no single-file name for {name}")


def single_file_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole diffusers UNet state dict renamed to the original single-file naming."""
    renamed = {}
    for name, tensor in tensors.items():
        new = diffusers_to_single_file(name)
        if ".UPSAMPLER." in new:
            block = name.split(".")[1]
            has_attention = any(n.startswith(f"up_blocks.{block}.attentions.") for n in tensors)
            new = new.replace(".UPSAMPLER.", ".2.conv." if has_attention else ".1.conv.")
            new = new.replace(".conv.conv.", ".conv.")
        renamed[new] = tensor
    return renamed
