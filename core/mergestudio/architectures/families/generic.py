"""The fallbacks: models no table describes.

``GUESSED`` keeps what Merge Studio did before families existed: per-layer tensors of the
common ``<prefix>.<layers|h|blocks|block|layer>.<N>.<rest>`` form are one stack, and
lanes come from common words. ``UNKNOWN`` has no blocks and one lane: everything merges
with the recipe's values at the first point of any gradient. Both come with a warning.
"""

from __future__ import annotations

from mergestudio.architectures.schema import BlockRule, Family, LaneRule

GUESSED = Family(
    name="guessed",
    title="unknown, layers guessed from tensor names",
    # Greedy: the last ``layers.N`` of a name, as before.
    blocks=(BlockRule(r"^(?:.*\.)?(?:layers|h|blocks|block|layer)\.(?P<i>\d+)\.", "layers"),),
    lanes=(
        LaneRule("embedding", ("embed", "wte", "wpe", "lm_head")),
        LaneRule("norm", ("norm", "ln_", "ln.")),
        LaneRule("attention", ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj")),
        LaneRule("mlp", ("mlp", "feed_forward", "ffn", "gate_proj", "up_proj", "down_proj", "fc1", "fc2")),
    ),
    pre=("embed", "wte", "wpe", "word_embeddings", "tok_embeddings", "position_embeddings"),
    slice_stack="layers",
    depth_keys={"layers": "num_hidden_layers"},
)

UNKNOWN = Family(name="unknown", title="unknown, no layers", blocks=(), lanes=(), fallback_lane="all")
