"""A family applied to one model's tensor names: its blocks in order, its lanes, and the
role of every tensor. Built from names (and the config) alone, in one pass."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from mergestudio.architectures.schema import BlockRule, Family, KeyPart, LaneRule


@dataclass(frozen=True)
class Block:
    """A unit a gradient runs over.

    ``position`` counts the blocks of its ``stack``; ``t`` is its relative depth there
    (position / (size − 1), 1.0 in a one-block stack, as mergekit does for one-layer
    slices); ``order`` counts all blocks of the model, stacks one after another.
    """

    label: str
    stack: str
    position: int
    t: float
    order: int


@dataclass(frozen=True)
class Lane:
    """A module group present in the model. ``filters`` select it as mergekit
    ``filter`` conditions do (substrings, tried in lane order); the fallback lane has none."""

    name: str
    filters: tuple[str, ...]


@dataclass(frozen=True)
class TensorRole:
    block: Block | None  # None: outside every block (embeddings, final norm, heads)
    lane: str
    merge: bool  # False: a buffer copied from one model, never merged elementwise
    pre: bool  # outside the blocks and before them


@dataclass(frozen=True)
class LayerSlot:
    """A tensor of the sliceable stack split around its layer index."""

    index: int
    head: str
    tail: str

    def with_index(self, index: int) -> str:
        return f"{self.head}{index}{self.tail}"


@dataclass
class ModelLayout:
    family: Family
    blocks: tuple[Block, ...]
    lanes: tuple[Lane, ...]
    roles: dict[str, TensorRole]
    warnings: tuple[str, ...] = ()
    _keys: dict[str, list[tuple[int, ...]]] = field(default_factory=dict, repr=False)

    def role(self, name: str) -> TensorRole:
        """The role of ``name``; a name the model lacks is placed by the same rules."""
        found = self.roles.get(name)
        if found is not None:
            return found
        return _roles(self.family, [name], self)[name]

    def stack(self, name: str) -> list[Block]:
        return [b for b in self.blocks if b.stack == name]

    @property
    def stacks(self) -> list[str]:
        return list(dict.fromkeys(b.stack for b in self.blocks))

    @property
    def layer_count(self) -> int:
        """Blocks of the stack ``slices`` count; 0 when the family cannot be sliced."""
        stack = self.family.slice_stack
        return len(self.stack(stack)) if stack else 0

    def layer_slot(self, name: str) -> LayerSlot | None:
        """``name`` split around its layer index when it sits in the sliceable stack."""
        stack = self.family.slice_stack
        if stack is None:
            return None
        for rule, pattern in _compiled_blocks(self.family):
            match = pattern.search(name)
            if match is None:
                continue
            if rule.stack != stack or "i" not in match.groupdict():
                return None
            start, end = match.span("i")
            return LayerSlot(int(match["i"]), name[:start], name[end:])
        return None

    def lane(self, name: str) -> Lane | None:
        return next((lane for lane in self.lanes if lane.name == name), None)

    def describe(self) -> str:
        """One line: family, blocks (first … last), lanes."""
        shown = describe_blocks([b.label for b in self.blocks])
        return f"{self.family.title}: {shown}; lanes {', '.join(lane.name for lane in self.lanes)}"


def describe_blocks(labels: list[str]) -> str:
    """``26 blocks (BASE … OUT11)``, ``2 blocks (0, 1)``, ``1 block (0)``, ``no blocks``."""
    if not labels:
        return "no blocks"
    shown = f"{labels[0]} … {labels[-1]}" if len(labels) > 2 else ", ".join(labels)
    return f"{len(labels)} block{'s' if len(labels) > 1 else ''} ({shown})"


def build_layout(family: Family, names: Iterable[str], warnings: Iterable[str] = ()) -> ModelLayout:
    names = list(names)
    keys = _stack_keys(family, names)
    layout = ModelLayout(family, _blocks(keys), (), {}, tuple(warnings))
    layout._keys = {stack: list(rules) for stack, rules in keys.items()}
    layout.roles = _roles(family, names, layout)
    layout.lanes = _lanes(family, layout.roles.values(), names)
    return layout


# ---- blocks -------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _compiled_blocks(family: Family) -> tuple[tuple[BlockRule, re.Pattern[str]], ...]:
    return tuple((rule, re.compile(rule.pattern)) for rule in family.blocks)


@lru_cache(maxsize=64)
def _compiled_lanes(family: Family) -> tuple[tuple[LaneRule, re.Pattern[str] | None], ...]:
    return tuple((rule, re.compile(rule.pattern) if rule.pattern else None) for rule in family.lanes)


def _block_key(name: str, family: Family) -> tuple[BlockRule, tuple[int, ...]] | None:
    for rule, pattern in _compiled_blocks(family):
        match = pattern.search(name)
        if match is not None:
            return rule, tuple(_key_part(part, match) for part in rule.key)
    return None


def _key_part(part: KeyPart, match: re.Match[str]) -> int:
    return part if isinstance(part, int) else int(match[part])


def _stack_keys(family: Family, names: list[str]) -> dict[str, dict[tuple[int, ...], BlockRule]]:
    """Each stack's block keys (from non-joining rules), stacks in rule order, keys sorted."""
    keys: dict[str, dict[tuple[int, ...], BlockRule]] = {}
    for name in names:
        found = _block_key(name, family)
        if found is not None and not found[0].joins_previous:
            keys.setdefault(found[0].stack, {})[found[1]] = found[0]
    stacks = [s for s in dict.fromkeys(rule.stack for rule in family.blocks) if s in keys]
    return {stack: dict(sorted(keys[stack].items())) for stack in stacks}


def _blocks(keys: dict[str, dict[tuple[int, ...], BlockRule]]) -> tuple[Block, ...]:
    blocks: list[Block] = []
    for stack, rules in keys.items():
        counters: dict[str, int] = {}
        for position, rule in enumerate(rules.values()):
            number = counters.get(rule.label, 0)
            counters[rule.label] = number + 1
            t = position / (len(rules) - 1) if len(rules) > 1 else 1.0
            blocks.append(Block(rule.label.format(n=number), stack, position, t, len(blocks)))
    return tuple(blocks)


def _block_of(name: str, family: Family, layout: ModelLayout) -> Block | None:
    found = _block_key(name, family)
    if found is None:
        return None
    rule, key = found
    ordered = layout._keys.get(rule.stack, [])
    stack = layout.stack(rule.stack)
    position = bisect.bisect_left(ordered, key)
    if rule.joins_previous:
        # The last block whose key sorts before this one (the first when none does).
        return stack[max(0, position - 1)] if stack else None
    return stack[position] if position < len(ordered) and ordered[position] == key else None


# ---- roles and lanes ---------------------------------------------------------------------


def lane_of(name: str, family: Family) -> str:
    for rule, pattern in _compiled_lanes(family):
        if pattern is not None:
            match = pattern.search(name)
            if match is not None:
                return rule.name.format(**match.groupdict())
        elif any(f in name for f in rule.filters):
            return rule.name
    return family.fallback_lane


def _roles(family: Family, names: list[str], layout: ModelLayout) -> dict[str, TensorRole]:
    keep = [re.compile(p) for p in family.keep]
    roles = {}
    for name in names:
        block = _block_of(name, family, layout)
        roles[name] = TensorRole(
            block=block,
            lane=lane_of(name, family),
            merge=not any(p.search(name) for p in keep),
            pre=block is None and any(word in name for word in family.pre),
        )
    return roles


def _lanes(family: Family, roles: Iterable[TensorRole], names: list[str]) -> tuple[Lane, ...]:
    present = {role.lane for role in roles}
    lanes: list[Lane] = []
    for rule, pattern in _compiled_lanes(family):
        if pattern is None:
            if rule.name in present:
                lanes.append(Lane(rule.name, rule.filters))
            continue
        values = sorted({m["k"] for n in names for m in [pattern.search(n)] if m}, key=int)
        for k in values:
            lane = rule.name.format(k=k)
            if lane in present:
                lanes.append(Lane(lane, tuple(f.format(k=k) for f in rule.filters)))
    if family.fallback_lane in present or not lanes:
        lanes.append(Lane(family.fallback_lane, ()))
    return tuple(lanes)
