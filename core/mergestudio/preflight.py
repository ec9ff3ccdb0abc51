"""Compatibility preflight: can these models be merged tensor by tensor with this base?

Compares headers and configs only (no tensor data), so it runs in milliseconds and can
be shown before any merge: architecture, layer count, tensor names, shapes, dtypes and
vocabulary size. Each finding is a ``Check`` a person can read; errors are what would
make a merge fail, warnings what would make it surprising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mergestudio.architectures import ModelLayout, config_depths
from mergestudio.io.dtypes import torch_dtype_name
from mergestudio.io.safetensors_file import TensorInfo

Status = Literal["ok", "warning", "error"]
TOPICS = ("adapter", "architecture", "family", "layers", "tensor names", "shapes", "dtypes", "vocabulary")
_SHOWN = 3  # names listed in a message before "…"
_VOCAB_KEYS = ("vocab_size", "n_vocab", "padded_vocab_size")


class ModelHeaders(Protocol):
    """What the preflight needs from a model: ``ModelSource`` satisfies it."""

    reference: str
    tensors: dict[str, TensorInfo]
    config: dict[str, Any] | None

    @property
    def architecture(self) -> str | None: ...

    @property
    def num_layers(self) -> int: ...

    @property
    def layout(self) -> ModelLayout: ...


@dataclass(frozen=True)
class Check:
    model: str
    topic: str
    status: Status
    message: str


@dataclass(frozen=True)
class PreflightReport:
    base: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return all(c.status != "error" for c in self.checks)

    @property
    def errors(self) -> list[Check]:
        return [c for c in self.checks if c.status == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warning"]

    def for_model(self, model: str) -> list[Check]:
        return [c for c in self.checks if c.model == model]

    def status_of(self, model: str) -> Status:
        statuses = {c.status for c in self.for_model(model)}
        return "error" if "error" in statuses else "warning" if "warning" in statuses else "ok"

    def to_text(self) -> str:
        """A plain-text report, one block per model."""
        marks = {"ok": "ok  ", "warning": "warn", "error": "FAIL"}
        lines = [f"Compatibility with base {self.base}"]
        for model in dict.fromkeys(c.model for c in self.checks):
            lines.append("")
            lines.append(f"{model}: {self.status_of(model)}")
            lines += [f"  [{marks[c.status]}] {c.topic}: {c.message}" for c in self.for_model(model)]
        return "\n".join(lines)


def preflight(
    base: ModelHeaders, others: Sequence[ModelHeaders], tokenizer_source: str | None = None
) -> PreflightReport:
    """Compare every model in ``others`` with ``base``; the base itself is checked for
    what the merged folder takes from it (its config.json). ``tokenizer_source`` (the
    recipe's: base, union or a model) decides what happens to tokens a model adds."""
    checks: list[Check] = []
    if base.config is None:
        checks.append(
            Check(
                base.reference,
                "config",
                "error",
                "no config.json: the merged folder would have none, so no loader could open it "
                "(the merge refuses it unless told --allow-no-config)",
            )
        )
    for other in others:
        if other.reference != base.reference:
            checks += compare(base, other, tokenizer_source)
    return PreflightReport(base.reference, tuple(checks))


def compare(base: ModelHeaders, other: ModelHeaders, tokenizer_source: str | None = None) -> list[Check]:
    """Every topic's finding for one model against the base, in ``TOPICS`` order; a LoRA
    adapter is first checked against the chosen base."""
    model = other.reference
    adapter = _adapter(base, other)
    return [
        *([Check(model, "adapter", *adapter)] if adapter else []),
        Check(model, "architecture", *_architecture(base, other)),
        Check(model, "family", *_family(base, other)),
        Check(model, "layers", *_layers(base, other)),
        Check(model, "tensor names", *_names(base.tensors, other.tensors)),
        Check(model, "shapes", *_shapes(base.tensors, other.tensors, _rows_by_token(base, other))),
        Check(model, "dtypes", *_dtypes(base.tensors, other.tensors)),
        Check(model, "vocabulary", *_vocabulary(base, other, tokenizer_source)),
    ]


def _adapter(base: ModelHeaders, other: ModelHeaders) -> tuple[Status, str] | None:
    """For an adapter: do its modules exist in the chosen base with fitting shapes, and is
    the chosen base the one it is applied to?"""
    from mergestudio.errors import SourceError
    from mergestudio.io.adapters import AdapterSource, adapter_summary, check_adapter_against_base
    from mergestudio.io.sources import ModelSource

    if not isinstance(other, AdapterSource) or other.adapter is None or other.base is None:
        return None
    summary = adapter_summary(other) or ""
    if isinstance(base, ModelSource):
        try:
            check_adapter_against_base(other.adapter, base)
        except SourceError as error:
            return "error", str(error)
        same = {p.resolve() for p in base.files} == {p.resolve() for p in other.base.files}
        if not same:
            return "warning", (
                f"{summary}; it is applied to {other.base.reference}, not to the chosen base "
                "(the shapes fit, but the update was learned on another model)"
            )
    return "ok", summary


def _architecture(base: ModelHeaders, other: ModelHeaders) -> tuple[Status, str]:
    ours, theirs = base.architecture, other.architecture
    if ours is None or theirs is None:
        return "warning", "unknown (no config.json); judged from tensor names only"
    if ours != theirs:
        return "error", f"{theirs}, but the base is {ours}"
    return "ok", ours


def _family(base: ModelHeaders, other: ModelHeaders) -> tuple[Status, str]:
    """The detected family, its blocks and lanes: what gradients and lanes will follow."""
    ours, theirs = base.layout, other.layout
    if ours.family is not theirs.family:
        return "error", (
            f"{theirs.family.title}, but the base is {ours.family.title}: tensor names differ, so "
            "blocks and tensors cannot be paired"
        )
    warnings = list(theirs.warnings) + _depth_warnings(other)
    return ("warning" if warnings else "ok"), "; ".join([theirs.describe(), *warnings])


def _depth_warnings(model: ModelHeaders) -> list[str]:
    layout = model.layout
    found = {stack: len(layout.stack(stack)) for stack in layout.stacks}
    return [
        f"config.json says {stack} has {depth} blocks, the tensor names show {found.get(stack, 0)}"
        for stack, depth in config_depths(layout.family, model.config).items()
        if found.get(stack, 0) != depth
    ]


def _layers(base: ModelHeaders, other: ModelHeaders) -> tuple[Status, str]:
    ours, theirs = [b.label for b in base.layout.blocks], [b.label for b in other.layout.blocks]
    if ours != theirs and base.layout.family is other.layout.family:
        return "error", (
            f"{len(theirs)} blocks, the base has {len(ours)}: a whole-model merge needs the same "
            "blocks (use slices to stack layers)"
        )
    if base.num_layers != other.num_layers:
        return "error", (
            f"{other.num_layers} layers, the base has {base.num_layers}: a whole-model merge needs "
            "the same depth (use slices to stack layers)"
        )
    return "ok", f"{other.num_layers} layers"


def _names(base: Mapping[str, TensorInfo], other: Mapping[str, TensorInfo]) -> tuple[Status, str]:
    missing = [name for name in base if name not in other]
    extra = [name for name in other if name not in base]
    if missing:
        return "error", f"{len(missing)} tensor(s) of the base are missing: {_listing(missing)}"
    if extra:
        return "warning", f"{len(extra)} extra tensor(s) the merge will ignore: {_listing(extra)}"
    return "ok", f"all {len(base)} tensor names match"


def _shapes(
    base: Mapping[str, TensorInfo], other: Mapping[str, TensorInfo], rows_by_token: bool = False
) -> tuple[Status, str]:
    """Shared tensors whose shapes differ; with ``rows_by_token``, an embedding-like
    tensor may differ in its row count (the merge matches its rows by token string)."""
    from mergestudio.architecture import is_embedding

    differing = []
    realigned = []
    for name, info in base.items():
        if name not in other or other[name].shape == info.shape:
            continue
        theirs = other[name].shape
        if rows_by_token and is_embedding(name) and len(theirs) == 2 and theirs[1:] == info.shape[1:]:
            realigned.append(name)
            continue
        differing.append(f"{name} {list(theirs)} vs {list(info.shape)}")
    if differing:
        return "error", f"{len(differing)} tensor(s) differ in shape: {_listing(differing)}"
    if realigned:
        return "ok", f"every shared tensor has the base's shape but {_listing(realigned)} (rows matched by token)"
    return "ok", "every shared tensor has the base's shape"


def _rows_by_token(base: ModelHeaders, other: ModelHeaders) -> bool:
    """Both models have a tokenizer.json, so embedding rows can be matched by token."""
    roots = [getattr(model, "root", None) for model in (base, other)]
    return all(root is not None and (root / "tokenizer.json").is_file() for root in roots)


def _dtypes(base: Mapping[str, TensorInfo], other: Mapping[str, TensorInfo]) -> tuple[Status, str]:
    ours, theirs = _dtype_set(base), _dtype_set(other)
    if ours != theirs:
        return "warning", (
            f"stored as {', '.join(theirs)}, the base as {', '.join(ours)}: values are converted "
            "to the compute dtype, so this works but may round"
        )
    return "ok", ", ".join(theirs)


def _vocabulary(base: ModelHeaders, other: ModelHeaders, tokenizer_source: str | None) -> tuple[Status, str]:
    """Sizes, the tokens ``other`` adds over the base, and what the tokenizer source does
    with them. Rows are matched by token string when both have a tokenizer.json."""
    from mergestudio.errors import PlanError
    from mergestudio.vocab.align import union_vocabulary
    from mergestudio.vocab.tokenizer_files import read_tokenizer

    ours, theirs = vocabulary_size(base), vocabulary_size(other)
    base_root, other_root = getattr(base, "root", None), getattr(other, "root", None)
    base_tok = read_tokenizer(base_root) if base_root is not None else None
    other_tok = read_tokenizer(other_root) if other_root is not None else None
    source = tokenizer_source or "base"
    if base_tok is None or other_tok is None:
        if source == "union":
            return "error", "no tokenizer.json on this model or the base: tokenizer_source union needs both"
        if ours is None or theirs is None:
            return "warning", "vocabulary size unknown (no config and no embedding tensor)"
        if ours != theirs:
            return "error", (
                f"{theirs} tokens, the base has {ours}, and no tokenizer.json to match rows by token: "
                "embeddings cannot be merged row by row"
            )
        return "ok", f"{theirs} tokens"
    extra = [t for t in sorted(other_tok.vocab, key=other_tok.vocab.__getitem__) if t not in base_tok.vocab]
    size = f"{len(other_tok)} tokens (base {len(base_tok)}), rows matched by token"
    if not extra:
        return "ok", size
    shown = _listing([repr(t) for t in extra])
    if source == "union":
        try:
            union_vocabulary([base.reference, other.reference], {base.reference: base_tok, other.reference: other_tok}, base.reference)
        except PlanError as error:
            return "error", f"{size}; adds {len(extra)}: {shown}; {error}"
        return "ok", f"{size}; adds {len(extra)}: {shown}; union adds them to the output"
    if source == other.reference:
        return "ok", f"{size}; adds {len(extra)}: {shown}; kept (the output takes this model's tokenizer)"
    return "warning", (
        f"{size}; adds {len(extra)}: {shown}; dropped: the output keeps "
        f"{'the base' if source == 'base' else source}'s vocabulary (tokenizer_source: union keeps them)"
    )


def vocabulary_size(model: ModelHeaders) -> int | None:
    """From the config when it says, else from the input embedding's first dimension."""
    config = model.config or {}
    for scope in (config, config.get("text_config") or {}):
        for key in _VOCAB_KEYS:
            value = scope.get(key)
            if isinstance(value, int):
                return value
    for name, info in model.tensors.items():
        if "embed_tokens" in name or name.endswith(("wte.weight", "word_embeddings.weight")):
            return info.shape[0] if info.shape else None
    return None


def _dtype_set(tensors: Mapping[str, TensorInfo]) -> list[str]:
    """Readable names ('bfloat16'), as users write them in recipes."""
    return sorted({_dtype_name(info.dtype) for info in tensors.values()})


def _dtype_name(code: str) -> str:
    try:
        return torch_dtype_name(code)
    except KeyError:  # a code newer than our table: show it as stored
        return code


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (" …" if len(items) > _SHOWN else "")
