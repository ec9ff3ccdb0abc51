"""Encoders and encoder-decoders: BERT/RoBERTa, T5, ViT, CLIP (text and vision towers)."""

from __future__ import annotations

from mergestudio.architectures.schema import BlockRule, Family, LaneRule

# BERT-style layers: the FFN is ``intermediate.dense`` then ``output.dense``; the
# attention's own ``attention.output.dense`` is taken by the attention lane first.
_BERT_LANES = (
    LaneRule("norm", ("LayerNorm", "layernorm")),
    LaneRule("attention", ("attention.",)),
    LaneRule("mlp", ("intermediate.", "output.dense")),
    LaneRule("embedding", ("embeddings.",)),
)

BERT = Family(
    name="bert",
    title="BERT / RoBERTa",
    blocks=(BlockRule(r"(?:^|\.)encoder\.layer\.(?P<i>\d+)\.", "layers"),),
    lanes=_BERT_LANES,
    architectures=(
        "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForPreTraining",
        "RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
    ),
    model_types=("bert", "roberta", "xlm-roberta"),
    marker=(r"encoder\.layer\.\d+\.attention\.self\.query\.",),
    pre=("embeddings.",),
    tied=(("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
          ("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight")),
    keep=(r"embeddings\.position_ids$", r"embeddings\.token_type_ids$"),
    slice_stack="layers",
    depth_keys={"layers": "num_hidden_layers"},
)

VIT = Family(
    name="vit",
    title="ViT",
    blocks=(BlockRule(r"(?:^|\.)encoder\.layer\.(?P<i>\d+)\.", "layers"),),
    lanes=(
        LaneRule("norm", ("layernorm",)),
        LaneRule("attention", ("attention.",)),
        LaneRule("mlp", ("intermediate.", "output.dense")),
        LaneRule("patch embedding", ("patch_embeddings",)),
        LaneRule("embedding", ("embeddings.",)),
        LaneRule("head", ("classifier", "pooler")),
    ),
    architectures=("ViTModel", "ViTForImageClassification", "ViTForMaskedImageModeling"),
    model_types=("vit",),
    marker=(r"embeddings\.patch_embeddings\.projection\.", r"encoder\.layer\.\d+\.layernorm_before\."),
    pre=("embeddings.",),
    slice_stack="layers",
    depth_keys={"layers": "num_hidden_layers"},
)

T5 = Family(
    name="t5",
    title="T5 (encoder-decoder)",
    blocks=(
        BlockRule(r"^encoder\.block\.(?P<i>\d+)\.", "encoder", "encoder {n}"),
        BlockRule(r"^decoder\.block\.(?P<i>\d+)\.", "decoder", "decoder {n}"),
    ),
    lanes=(
        LaneRule("cross-attention", ("EncDecAttention",)),
        LaneRule("attention", ("SelfAttention",)),
        LaneRule("mlp", ("DenseReluDense",)),
        LaneRule("norm", ("layer_norm",)),
        LaneRule("embedding", ("shared", "embed_tokens", "lm_head")),
    ),
    architectures=("T5ForConditionalGeneration", "T5Model", "T5EncoderModel", "MT5ForConditionalGeneration"),
    model_types=("t5", "mt5"),
    marker=(r"^encoder\.block\.\d+\.layer\.0\.SelfAttention\.",),
    pre=("shared", "embed_tokens"),
    tied=(
        ("encoder.embed_tokens.weight", "shared.weight"),
        ("decoder.embed_tokens.weight", "shared.weight"),
        ("lm_head.weight", "shared.weight"),
    ),
    depth_keys={"encoder": "num_layers", "decoder": "num_decoder_layers"},
)

CLIP = Family(
    name="clip",
    title="CLIP (text and vision towers)",
    blocks=(
        BlockRule(r"(?:^|\.)text_model\.encoder\.layers\.(?P<i>\d+)\.", "text", "text {n}"),
        BlockRule(r"(?:^|\.)vision_model\.encoder\.layers\.(?P<i>\d+)\.", "vision", "vision {n}"),
    ),
    lanes=(
        LaneRule("attention", ("self_attn",)),
        LaneRule("mlp", ("mlp",)),
        LaneRule("norm", ("layer_norm", "layernorm", "layrnorm")),
        LaneRule("embedding", ("embedding",)),
        LaneRule("projection", ("projection", "logit_scale")),
    ),
    architectures=(
        "CLIPModel", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModel",
        "CLIPVisionModelWithProjection",
    ),
    model_types=("clip", "clip_text_model", "clip_vision_model"),
    marker=(r"(?:text|vision)_model\.encoder\.layers\.\d+\.self_attn\.",),
    pre=("embeddings.",),
    keep=(r"embeddings\.position_ids$",),
    depth_keys={"text": "text_config.num_hidden_layers", "vision": "vision_config.num_hidden_layers"},
)

ENCODERS = (BERT, VIT, T5, CLIP)
