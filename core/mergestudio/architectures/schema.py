"""The shape of a family description: plain frozen data, no behaviour.

A ``Family`` says, for one architecture, how tensor names map to blocks (the units a
gradient runs over: decoder layers, encoder layers, a UNet's IN/M/OUT blocks), to lanes
(module groups that can get their own curve or gene: attention, MLP, norm, expert *k*,
cross-attention …), which tensors are tied to others, and which must never be merged
elementwise (buffers such as rotary caches). ``layout.py`` applies it to a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KeyPart = int | str  # an int is a constant; a str names an integer group of the pattern


@dataclass(frozen=True)
class BlockRule:
    """Tensor names that ``pattern`` finds (``re.search``) belong to a block of ``stack``.

    ``key`` orders blocks inside the stack; tensors with equal keys share a block.
    ``label`` names the block; ``{n}`` is its running number among the stack's blocks
    with the same label (so ``IN{n:02d}`` counts IN00, IN01 … whatever the key values).
    A ``joins_previous`` rule adds its tensors to the block just before its key (a
    UNet's up-sampler belongs to the OUT block of the resnet before it). Rules are
    tried in order; the first that matches wins.
    """

    pattern: str
    stack: str
    label: str = "{n}"
    key: tuple[KeyPart, ...] = ("i",)
    joins_previous: bool = False


@dataclass(frozen=True)
class LaneRule:
    """A module group. A tensor belongs to the first lane (in family order) one of whose
    ``filters`` is a substring of its name: exactly how mergekit's ``filter`` conditions
    match, so a lane's curve written as conditions means the same to mergekit.

    A lane with a ``pattern`` is a family of lanes, one per value of its group ``k``
    (``expert {k}`` with filter ``experts.{k}.``); the pattern and the filled-in filter
    must select the same names (the tests check it for every family)."""

    name: str
    filters: tuple[str, ...] = ()
    pattern: str | None = None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: each table is one object
class Family:
    """One architecture (or one naming of it) as data. See ``docs/architectures.md``."""

    name: str  # short id, e.g. "llama", "sd15-unet"
    title: str  # what people call it, e.g. "SD 1.5 UNet (diffusers names)"
    blocks: tuple[BlockRule, ...]
    lanes: tuple[LaneRule, ...]
    fallback_lane: str = "other"  # the lane of tensors no lane filter selects
    # Recognising the family: config.json "architectures" entries, "model_type" values,
    # diffusers' "_class_name"; for files without a config, regexes that each match some
    # tensor name of this family (and not all of them a family listed after it).
    architectures: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    marker: tuple[str, ...] = ()
    # When several families share a config class (SD 1.5 and SDXL UNets), ``requires``
    # picks between them: a regex some tensor name must match.
    requires: str | None = None
    # Tensors outside every block that come before the blocks (embeddings); the rest of
    # the outside tensors come after them (final norm, heads). Substrings of names.
    pre: tuple[str, ...] = ()
    # (tensor, the tensor it is tied to): when a model lacks the first, it reads the second.
    tied: tuple[tuple[str, str], ...] = ()
    # Regexes of buffers copied from one model, never merged elementwise (rotary caches,
    # position ids, attention masks).
    keep: tuple[str, ...] = ()
    # The stack whose blocks mergekit's ``slices`` / ``layer_range`` count, or None when
    # the family cannot be sliced (several stacks, or named blocks).
    slice_stack: str | None = None
    # Config keys that give each stack's depth ("text_config.num_hidden_layers"); the
    # preflight compares them with the blocks found in the names.
    depth_keys: Mapping[str, str] = field(default_factory=dict)
    # Named block-weight presets (SuperMerger style): label prefix → value (0..1 of the peak).
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # The weights file's stem in the library's own folder format.
    weights_stem: str = "model"
