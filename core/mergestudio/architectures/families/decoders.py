"""Decoder-only language models: Llama and its relatives, Mixtral, GPT-2."""

from __future__ import annotations

from mergestudio.architectures.schema import BlockRule, Family, LaneRule

# Hugging Face decoder layers: ``model.layers.N.`` (or ``model.language_model.layers.N.``
# in multimodal checkpoints); never a vision tower's encoder layers.
_DECODER_PREFIX = r"^(?:model\.|model\.language_model\.|language_model\.model\.)?layers\."
DECODER_LAYERS = BlockRule(_DECODER_PREFIX + r"(?P<i>\d+)\.", "layers")
ROTARY_CACHE = r"rotary_emb\.inv_freq$"
LM_HEAD_TIED = (("lm_head.weight", "model.embed_tokens.weight"),)

LLAMA_LANES = (
    LaneRule("attention", ("self_attn",)),
    LaneRule("mlp", ("mlp",)),
    LaneRule("norm", ("norm",)),
    LaneRule("embedding", ("embed_tokens", "lm_head")),
)


def _llama_like(name: str, title: str, architectures: tuple[str, ...], model_types: tuple[str, ...],
                marker: tuple[str, ...]) -> Family:
    return Family(
        name=name,
        title=title,
        blocks=(DECODER_LAYERS,),
        lanes=LLAMA_LANES,
        architectures=architectures,
        model_types=model_types,
        marker=marker,
        pre=("embed_tokens",),
        tied=LM_HEAD_TIED,
        keep=(ROTARY_CACHE,),
        slice_stack="layers",
        depth_keys={"layers": "num_hidden_layers"},
    )


MIXTRAL = Family(
    name="mixtral",
    title="Mixtral (mixture of experts)",
    blocks=(DECODER_LAYERS,),
    lanes=(
        LaneRule("attention", ("self_attn",)),
        LaneRule("expert {k}", ("experts.{k}.",), pattern=r"experts\.(?P<k>\d+)\."),
        LaneRule("router", ("block_sparse_moe.gate.",)),
        LaneRule("norm", ("norm",)),
        LaneRule("embedding", ("embed_tokens", "lm_head")),
    ),
    architectures=("MixtralForCausalLM",),
    model_types=("mixtral",),
    marker=(_DECODER_PREFIX + r"\d+\.block_sparse_moe\.experts\.\d+\.",),
    pre=("embed_tokens",),
    tied=LM_HEAD_TIED,
    keep=(ROTARY_CACHE,),
    slice_stack="layers",
    depth_keys={"layers": "num_hidden_layers"},
)

# Gemma 2 and 3 norm around both the attention and the feed-forward
# (pre/post_feedforward_layernorm); the norm lane holds all of them. Gemma 3's
# multimodal checkpoints add a SigLIP vision tower: a stack of its own.
GEMMA2 = _llama_like("gemma2", "Gemma 2", ("Gemma2ForCausalLM",), ("gemma2",), (_DECODER_PREFIX + r"\d+\.pre_feedforward_layernorm",))
GEMMA3 = Family(
    name="gemma3",
    title="Gemma 3",
    blocks=(
        BlockRule(r"vision_tower\.vision_model\.encoder\.layers\.(?P<i>\d+)\.", "vision", "vision {n}"),
        DECODER_LAYERS,
    ),
    lanes=LLAMA_LANES,
    architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    model_types=("gemma3_text", "gemma3"),
    marker=(_DECODER_PREFIX + r"\d+\.self_attn\.q_norm\.", _DECODER_PREFIX + r"\d+\.pre_feedforward_layernorm"),
    pre=("embed_tokens",),
    tied=LM_HEAD_TIED,
    keep=(ROTARY_CACHE,),
    slice_stack="layers",
    depth_keys={"layers": "num_hidden_layers"},
)
PHI3 = _llama_like("phi3", "Phi-3", ("Phi3ForCausalLM",), ("phi3",), (_DECODER_PREFIX + r"\d+\.self_attn\.qkv_proj\.",))
QWEN3 = _llama_like("qwen3", "Qwen3", ("Qwen3ForCausalLM",), ("qwen3",), (_DECODER_PREFIX + r"\d+\.self_attn\.q_norm\.",))
QWEN2 = _llama_like("qwen2", "Qwen2", ("Qwen2ForCausalLM",), ("qwen2",), (_DECODER_PREFIX + r"\d+\.self_attn\.q_proj\.bias",))
MISTRAL = _llama_like("mistral", "Mistral", ("MistralForCausalLM",), ("mistral",), ())
LLAMA = _llama_like("llama", "Llama", ("LlamaForCausalLM",), ("llama",), (_DECODER_PREFIX + r"\d+\.self_attn\.q_proj\.",))

GPT2 = Family(
    name="gpt2",
    title="GPT-2",
    blocks=(BlockRule(r"^(?:transformer\.)?h\.(?P<i>\d+)\.", "layers"),),
    lanes=(
        LaneRule("attention", ("attn",)),
        LaneRule("mlp", ("mlp",)),
        LaneRule("norm", ("ln_",)),
        LaneRule("embedding", ("wte", "wpe", "lm_head")),
    ),
    architectures=("GPT2LMHeadModel", "GPT2Model"),
    model_types=("gpt2",),
    marker=(r"^(?:transformer\.)?h\.\d+\.attn\.c_attn\.",),
    pre=("wte", "wpe"),
    tied=(("lm_head.weight", "transformer.wte.weight"),),
    # Old GPT-2 files store the causal mask as attn.bias / attn.masked_bias buffers.
    keep=(r"\.attn\.(?:masked_)?bias$",),
    slice_stack="layers",
    depth_keys={"layers": "n_layer"},
)

DECODERS = (MIXTRAL, GEMMA3, GEMMA2, PHI3, QWEN3, QWEN2, MISTRAL, LLAMA, GPT2)
