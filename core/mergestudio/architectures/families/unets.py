"""Stable Diffusion UNets, SD 1.5 and SDXL, in diffusers naming (``down_blocks.0.…``) and
in the original single-file naming (``model.diffusion_model.input_blocks.1.…``).

Blocks are SuperMerger's: BASE (time/label embeddings, and in a full single-file
checkpoint the text encoder and VAE), IN00…, M00, OUT00…: SD 1.5 has IN00–IN11 and
OUT00–OUT11, SDXL IN00–IN08 and OUT00–OUT08. Both namings give the same blocks, so a
block-weight curve means the same in either.
"""

from __future__ import annotations

from mergestudio.architectures.schema import BlockRule, Family, LaneRule

_STACK = "unet"
# Key (section, …): BASE 0, IN 1, M 2, OUT 3, the final norm/conv 4 (joins OUT's last).
_DIFFUSERS_BLOCKS = (
    BlockRule(r"^(?:time_embedding|add_embedding|class_embedding)\.", _STACK, "BASE", (0,)),
    BlockRule(r"^conv_in\.", _STACK, "IN{n:02d}", (1, -1, 0)),
    BlockRule(r"^down_blocks\.(?P<b>\d+)\.(?:resnets|attentions)\.(?P<i>\d+)\.", _STACK, "IN{n:02d}", (1, "b", "i")),
    BlockRule(r"^down_blocks\.(?P<b>\d+)\.downsamplers\.", _STACK, "IN{n:02d}", (1, "b", 999)),
    BlockRule(r"^mid_block\.", _STACK, "M{n:02d}", (2,)),
    BlockRule(r"^up_blocks\.(?P<b>\d+)\.(?:resnets|attentions)\.(?P<i>\d+)\.", _STACK, "OUT{n:02d}", (3, "b", "i")),
    BlockRule(r"^up_blocks\.(?P<b>\d+)\.upsamplers\.", _STACK, "OUT{n:02d}", (3, "b", 999), joins_previous=True),
    BlockRule(r"^(?:conv_norm_out|conv_out)\.", _STACK, "OUT{n:02d}", (4,), joins_previous=True),
)
_LDM = r"^(?:model\.diffusion_model\.)?"
_SINGLE_FILE_BLOCKS = (
    BlockRule(_LDM + r"(?:time_embed|label_emb)\.", _STACK, "BASE", (0,)),
    # A full checkpoint's text encoder(s) and VAE count as BASE, as in SuperMerger.
    BlockRule(r"^(?:cond_stage_model|conditioner|first_stage_model)\.", _STACK, "BASE", (0,)),
    BlockRule(_LDM + r"input_blocks\.(?P<i>\d+)\.", _STACK, "IN{n:02d}", (1, "i")),
    BlockRule(_LDM + r"middle_block\.", _STACK, "M{n:02d}", (2,)),
    BlockRule(_LDM + r"output_blocks\.(?P<i>\d+)\.", _STACK, "OUT{n:02d}", (3, "i")),
    BlockRule(_LDM + r"out\.", _STACK, "OUT{n:02d}", (4,), joins_previous=True),
)
# The same words in both namings: attn1 is self-attention, attn2 cross-attention
# (to the text), ff the transformer's feed-forward; resnets, convs, norms, projections
# and embeddings are the rest.
_LANES = (
    LaneRule("self-attention", ("attn1",)),
    LaneRule("cross-attention", ("attn2",)),
    LaneRule("feed-forward", (".ff.",)),
)
# SuperMerger-style presets over the block sections (value × the curve's peak).
_PRESETS = {
    "IN only": {"BASE": 0.0, "IN": 1.0, "M": 0.0, "OUT": 0.0},
    "M only": {"BASE": 0.0, "IN": 0.0, "M": 1.0, "OUT": 0.0},
    "OUT only": {"BASE": 0.0, "IN": 0.0, "M": 0.0, "OUT": 1.0},
    "IN + M": {"BASE": 0.0, "IN": 1.0, "M": 1.0, "OUT": 0.0},
    "M + OUT": {"BASE": 0.0, "IN": 0.0, "M": 1.0, "OUT": 1.0},
    "all but BASE": {"BASE": 0.0, "IN": 1.0, "M": 1.0, "OUT": 1.0},
}
_SDXL_MARKER = r"(?:^add_embedding\.|label_emb\.)"
_CLASS_NAMES = ("UNet2DConditionModel",)


def _unet(name: str, title: str, blocks: tuple[BlockRule, ...], marker: tuple[str, ...],
          requires: str | None, weights_stem: str) -> Family:
    return Family(
        name=name,
        title=title,
        blocks=blocks,
        lanes=_LANES,
        class_names=_CLASS_NAMES if blocks is _DIFFUSERS_BLOCKS else (),
        marker=marker,
        requires=requires,
        presets=_PRESETS,
        weights_stem=weights_stem,
    )


SDXL_UNET = _unet(
    "sdxl-unet", "SDXL UNet (diffusers names)", _DIFFUSERS_BLOCKS,
    (r"^down_blocks\.\d+\.resnets\.", _SDXL_MARKER), _SDXL_MARKER, "diffusion_pytorch_model",
)
SD15_UNET = _unet(
    "sd15-unet", "SD 1.5 UNet (diffusers names)", _DIFFUSERS_BLOCKS,
    (r"^down_blocks\.\d+\.resnets\.",), None, "diffusion_pytorch_model",
)
SDXL_UNET_SINGLE_FILE = _unet(
    "sdxl-unet-single-file", "SDXL UNet (single-file names)", _SINGLE_FILE_BLOCKS,
    (_LDM + r"input_blocks\.\d+\.", _SDXL_MARKER), None, "model",
)
SD15_UNET_SINGLE_FILE = _unet(
    "sd15-unet-single-file", "SD 1.5 UNet (single-file names)", _SINGLE_FILE_BLOCKS,
    (_LDM + r"input_blocks\.\d+\.",), None, "model",
)

UNETS = (SDXL_UNET, SD15_UNET, SDXL_UNET_SINGLE_FILE, SD15_UNET_SINGLE_FILE)
