"""PEFT LoRA adapters as model sources.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), a single
adapter ``.safetensors`` file with its config beside it, or a Hub repo holding both, is
read header-first like a model. ``BASE+ADAPTER`` (mergekit's spelling) opens the base
with the adapter applied: an ``AdapterSource`` lists the base's tensors and yields
``W + scale·B·A`` for every adapted one as it is read, so no merged copy is ever
written. An adapter on its own opens the base its config names
(``base_model_name_or_path``).

Every check (PEFT type, options we cannot honour, target modules and shapes against the
base) runs on headers and the config, before any tensor data is read.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mergestudio.errors import SourceError
from mergestudio.io.safetensors_file import MappedFiles, TensorInfo, read_header
from mergestudio.io.sources import ModelSource

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# peft saves every key under the wrapped model's prefix.
PEFT_PREFIX = "base_model.model."
# Config switches whose effect on the weights we do not reproduce; refused, not ignored.
_UNSUPPORTED_SWITCHES = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "lora_bias": "LoRA biases on lora_B",
    "use_qalora": "QA-LoRA",
    "layer_replication": "layer replication",
    "trainable_token_indices": "trainable token indices",
    "target_parameters": "LoRA on raw parameters (target_parameters)",
}
_LORA_PARTS = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")

ModuleKind = Literal["linear", "embedding"]


@dataclass(frozen=True)
class LoraModule:
    """One adapted weight. ``a``: (r, in) — (r, num_embeddings) for embeddings;
    ``b``: (out, r) — (embedding_dim, r) for embeddings. ``transposed``: the base weight is
    stored as (in, out), so its delta is (B·A)ᵀ (embeddings, ``fan_in_fan_out`` Conv1D)."""

    module: str  # the module's path in the model, e.g. model.layers.0.self_attn.q_proj
    target: str  # the base tensor it changes, e.g. model.layers.0.self_attn.q_proj.weight
    a: TensorInfo
    b: TensorInfo
    alpha: float
    use_rslora: bool
    kind: ModuleKind
    transposed: bool

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def scale(self) -> float:
        """alpha/r, or alpha/√r with rank-stabilised LoRA (rsLoRA)."""
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    @property
    def delta_shape(self) -> tuple[int, int]:
        out_features, in_features = self.b.shape[0], self.a.shape[1]
        return (in_features, out_features) if self.transposed else (out_features, in_features)


@dataclass
class LoraAdapter:
    """A LoRA adapter's config and tensor headers; tensors are read lazily."""

    reference: str
    root: Path
    config: dict[str, Any]
    file: Path
    modules: dict[str, LoraModule]  # by target tensor name
    replacements: dict[str, TensorInfo]  # full tensors (modules_to_save, saved embeddings) by name
    revision: str | None = None
    # Replacements that are peft's copies of base layers (saved beside an embedding LoRA in
    # case the vocabulary was resized), not trained modules_to_save.
    base_layer_copies: frozenset[str] = frozenset()
    _header: bytes = b""
    _mapped: MappedFiles = field(default_factory=MappedFiles, repr=False)

    @property
    def base_reference(self) -> str | None:
        name = self.config.get("base_model_name_or_path")
        return str(name) if name else None

    @property
    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.modules.values()})

    @property
    def target_modules(self) -> list[str]:
        """Distinct last names of the adapted modules (q_proj, v_proj, …)."""
        return sorted({m.module.rsplit(".", 1)[-1] for m in self.modules.values()})

    @property
    def modules_to_save(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[0] for name in self.trained_replacements})

    @property
    def trained_replacements(self) -> list[str]:
        """Tensors the adapter replaces with trained values (modules_to_save)."""
        return [name for name in self.replacements if name not in self.base_layer_copies]

    @property
    def total_bytes(self) -> int:
        infos = [*self.replacements.values()] + [i for m in self.modules.values() for i in (m.a, m.b)]
        return sum(info.nbytes for info in infos)

    def factors(self, target: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale·B, A) in float32: (out, r) and (r, in) in peft's orientation."""
        module = self.modules[target]
        a = self._mapped.tensor(module.a).float()
        b = self._mapped.tensor(module.b).float() * module.scale
        return b, a

    def delta(self, target: str) -> torch.Tensor:
        """scale·B·A in float32, laid out like the base tensor (transposed where it is)."""
        b, a = self.factors(target)
        product = b @ a
        return product.T if self.modules[target].transposed else product

    def read_replacement(self, name: str) -> torch.Tensor:
        return self._mapped.tensor(self.replacements[name])

    def prefetch(self, target: str, populate: bool = False) -> None:
        module = self.modules.get(target)
        if module is not None:
            self._mapped.prefetch(module.a, populate)
            self._mapped.prefetch(module.b, populate)
        if target in self.replacements:
            self._mapped.prefetch(self.replacements[target], populate)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self._header)
        digest.update(json.dumps(self.config, sort_keys=True).encode())
        digest.update(str(self.file.stat().st_size).encode())
        return digest.hexdigest()

    def close(self) -> None:
        self._mapped.close()


@dataclass
class AdapterSource(ModelSource):
    """The base model with a LoRA adapter applied, tensor by tensor as it is read.

    ``tensors`` are the base's (replaced where the adapter saves a full tensor); reading an
    adapted tensor returns ``W + scale·B·A`` in the base tensor's dtype (computed in
    float32), like ``peft``'s ``merge_and_unload``.
    """

    base: ModelSource | None = None
    adapter: LoraAdapter | None = None

    def read(self, name: str) -> torch.Tensor:
        base, adapter = self._parts()
        # peft saves full embeddings beside an embedding LoRA: they replace the base's,
        # and the LoRA update still applies on top.
        weight = adapter.read_replacement(name) if name in adapter.replacements else base.read(name)
        if name not in adapter.modules:
            return weight
        return (weight.float() + adapter.delta(name)).to(weight.dtype)

    def input_bytes(self, name: str) -> int:
        """The base tensor (or the adapter's saved replacement) plus the LoRA factors."""
        base, adapter = self._parts()
        stored = adapter.replacements[name].nbytes if name in adapter.replacements else base.input_bytes(name)
        module = adapter.modules.get(name)
        return stored + (module.a.nbytes + module.b.nbytes if module is not None else 0)

    def prefetch(self, name: str, populate: bool = False) -> None:
        base, adapter = self._parts()
        if name not in adapter.replacements:
            base.prefetch(name, populate)
        adapter.prefetch(name, populate)

    def fingerprint(self) -> str:
        base, adapter = self._parts()
        return hashlib.sha256(f"{base.fingerprint()}+{adapter.fingerprint()}".encode()).hexdigest()

    def close(self) -> None:
        base, adapter = self._parts()
        base.close()
        adapter.close()

    def _parts(self) -> tuple[ModelSource, LoraAdapter]:
        assert self.base is not None and self.adapter is not None
        return self.base, self.adapter


# ---- recognising adapter references ------------------------------------------------------


def split_adapter_reference(reference: str) -> tuple[str, str] | None:
    """``BASE+ADAPTER`` → (BASE, ADAPTER); None for anything else (a path that exists,
    even with a '+' in its name, is a plain path)."""
    if "+" not in reference or Path(reference).expanduser().exists():
        return None
    base, _, adapter = reference.rpartition("+")
    if not base or not adapter:
        raise SourceError(f"{reference}: write an adapted model as BASE+ADAPTER")
    return base, adapter


def is_adapter_path(path: Path) -> bool:
    """A folder with an adapter config, or a safetensors file of LoRA tensors."""
    if path.is_dir():
        return (path / ADAPTER_CONFIG).exists()
    if path.is_file() and path.suffix == ".safetensors":
        return (path.parent / ADAPTER_CONFIG).exists() or _has_lora_tensors(read_header(path).tensors)
    return False


def _has_lora_tensors(names: Any) -> bool:
    return any(part in name for name in names for part in _LORA_PARTS)


# ---- opening -----------------------------------------------------------------------------


def open_adapter(reference: str, *, token: str | bool | None = None) -> LoraAdapter:
    """Read an adapter's config and weight headers (no tensor data). Raises SourceError
    for a missing config, a PEFT type other than LoRA, or options we cannot apply."""
    path = Path(reference).expanduser()
    revision = None
    if not path.exists():
        from mergestudio.io.sources import _HUB_REFERENCE, _download_from_hub

        match = _HUB_REFERENCE.match(reference)
        if match is None:
            raise SourceError(f"{reference}: no such adapter file or folder, and not a Hub id")
        path, revision = _download_from_hub(match["repo"], match["revision"], token)
    root, weights = _adapter_files(reference, path)
    config = _read_adapter_config(root / ADAPTER_CONFIG, reference)
    header = read_header(weights)
    modules, replacements, copies = _parse_tensors(reference, config, header.tensors)
    return LoraAdapter(
        reference=reference,
        root=root,
        config=config,
        file=weights,
        modules=modules,
        replacements=replacements,
        revision=revision,
        base_layer_copies=copies,
        _header=header.header_bytes,
    )


def open_adapted_model(
    base_reference: str | None,
    adapter_reference: str,
    *,
    allow_pickle: bool = False,
    token: str | bool | None = None,
    reference: str | None = None,
) -> AdapterSource:
    """The base (given, or the one the adapter's config names) with the adapter applied.
    The adapter is checked against the base before anything is read."""
    from mergestudio.io.sources import open_model

    adapter = open_adapter(adapter_reference, token=token)
    base_name = base_reference or adapter.base_reference
    if not base_name:
        raise SourceError(
            f"{adapter_reference}: {ADAPTER_CONFIG} names no base_model_name_or_path; "
            "write the model as BASE+ADAPTER"
        )
    base = open_model(base_name, allow_pickle=allow_pickle, token=token)
    if isinstance(base, AdapterSource):
        base.close()
        raise SourceError(f"{base_name}: the base of an adapter must be a full model, not an adapter")
    try:
        check_adapter_against_base(adapter, base)
        rows = resized_vocabulary(adapter, base)
    except SourceError:
        base.close()
        raise
    tensors = dict(base.tensors)
    tensors.update(adapter.replacements)
    root, config = base.root, base.config
    if rows is not None:
        # The adapter's embeddings have another row count: its own tokenizer says what
        # the rows mean (the vocabulary plan aligns them by token), and the adapted
        # model's config says the new size.
        root, config = adapter.root, {**(base.config or {}), "vocab_size": rows}
    return AdapterSource(
        reference=reference or _written_reference(base_reference, adapter_reference),
        root=root,
        tensors=tensors,
        config=config,
        files=base.files,
        revision=base.revision,
        base=base,
        adapter=adapter,
    )


def _written_reference(base_reference: str | None, adapter_reference: str) -> str:
    """As the user writes it: the adapter alone, or BASE+ADAPTER."""
    return f"{base_reference}+{adapter_reference}" if base_reference else adapter_reference


def check_adapter_against_base(adapter: LoraAdapter, base: ModelSource) -> None:
    """Every adapted module and saved tensor must exist in the base with a fitting shape:
    otherwise the adapter was trained on another model. Saved embeddings (input embedding,
    LM head) may have other rows: a resized vocabulary (``resized_vocabulary``)."""
    problems: list[str] = []
    for target, module in adapter.modules.items():
        info = adapter.replacements.get(target) or base.tensors.get(target)
        if info is None:
            problems.append(f"adapts {module.module!r}, but the base has no tensor {target!r}")
        elif tuple(info.shape) != module.delta_shape:
            problems.append(
                f"{module.module!r}: LoRA gives a {list(module.delta_shape)} update, the base "
                f"tensor {target!r} is {list(info.shape)}"
            )
    for name, replacement in adapter.replacements.items():
        info = base.tensors.get(name)
        if info is None:
            problems.append(f"saves {name!r}, which the base does not have")
        elif info.shape != replacement.shape and not _resized_rows(name, replacement, info):
            problems.append(f"saves {name!r} as {list(replacement.shape)}, the base has {list(info.shape)}")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; … {len(problems) - 4} more" if len(problems) > 4 else "")
        raise SourceError(
            f"{adapter.reference} does not fit base {base.reference} (an adapter for another model?): {shown}"
        )


def resized_vocabulary(adapter: LoraAdapter, base: ModelSource) -> int | None:
    """The adapter's embedding rows when it saves embeddings with another row count than
    the base's (trained after ``resize_token_embeddings``), else None. Every embedding-like
    tensor of the base must then be saved at that count, and the adapter's folder must
    hold the tokenizer that gives the rows their tokens."""
    from mergestudio.architectures.names import is_embedding
    from mergestudio.vocab.tokenizer_files import read_tokenizer

    resized = {
        name: info.shape[0]
        for name, info in adapter.replacements.items()
        if name in base.tensors and _resized_rows(name, info, base.tensors[name])
    }
    if not resized:
        return None
    counts = set(resized.values())
    left = [
        name for name, info in base.tensors.items()
        if is_embedding(name) and len(info.shape) == 2 and name not in resized
        and info.shape[0] == base.tensors[next(iter(resized))].shape[0]
    ]
    if len(counts) > 1 or left:
        shown = ", ".join(f"{n} {r} rows" for n, r in resized.items())
        kept = f"; it leaves {', '.join(left)} at the base's rows" if left else ""
        raise SourceError(
            f"{adapter.reference}: resizes the vocabulary inconsistently ({shown}{kept}): every "
            "embedding and LM head must be saved at the new size (modules_to_save)"
        )
    rows = counts.pop()
    if read_tokenizer(adapter.root) is None:
        base_rows = base.tensors[next(iter(resized))].shape[0]
        raise SourceError(
            f"{adapter.reference}: resizes the vocabulary ({base_rows} -> {rows} rows) but its folder "
            f"has no tokenizer.json to say what the new rows are: save the tokenizer with the adapter "
            "(tokenizer.save_pretrained(ADAPTER_FOLDER))"
        )
    return rows


def _resized_rows(name: str, saved: TensorInfo, base: TensorInfo) -> bool:
    """``saved`` is ``base`` with another number of rows, on an embedding-like tensor."""
    from mergestudio.architectures.names import is_embedding

    return (
        is_embedding(name)
        and len(saved.shape) == 2
        and len(base.shape) == 2
        and saved.shape[1] == base.shape[1]
        and saved.shape[0] != base.shape[0]
    )


def _adapter_files(reference: str, path: Path) -> tuple[Path, Path]:
    """(folder holding the config, the weights file)."""
    if path.is_file():
        if path.suffix != ".safetensors":
            raise SourceError(f"{path}: adapters are read from .safetensors files only")
        root = path.parent
        if not (root / ADAPTER_CONFIG).exists():
            raise SourceError(
                f"{path}: LoRA weights without {ADAPTER_CONFIG} beside them; rank, alpha and "
                "scaling cannot be known (put the adapter's config next to the file)"
            )
        return root, path
    weights = path / ADAPTER_WEIGHTS
    if not (path / ADAPTER_CONFIG).exists():
        raise SourceError(f"{path}: no {ADAPTER_CONFIG} in this adapter folder")
    if not weights.exists():
        pickled = path / "adapter_model.bin"
        hint = " (only adapter_model.bin, a pickle: convert it to safetensors)" if pickled.exists() else ""
        raise SourceError(f"{path}: no {ADAPTER_WEIGHTS}{hint}")
    return path, weights


def _read_adapter_config(path: Path, reference: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise SourceError(f"{path}: expected a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise SourceError(
            f"{reference}: peft_type {config.get('peft_type')!r} is not supported; only LoRA adapters "
            "change weights in a way that can be merged (prefix and prompt tuning add virtual tokens)"
        )
    for key, what in _UNSUPPORTED_SWITCHES.items():
        if config.get(key):
            raise SourceError(f"{path}: {key} is set; {what} is not supported")
    if config.get("bias", "none") != "none":
        raise SourceError(f"{path}: bias={config['bias']!r} is not supported (only 'none')")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float):
            raise SourceError(f"{path}: {key} must be a number")
    return config


# Full tensors peft saves, by the part of their key that says which copy they are: the
# trained copy of a module in modules_to_save wins over the module as saved plainly, which
# wins over a copy of the base layer (saved beside an embedding LoRA or a resized vocabulary).
_COPY_PARTS = ((".modules_to_save.", 2), (".original_module.", 0), (".base_layer.", 0))


def _parse_tensors(
    reference: str, config: dict[str, Any], infos: dict[str, TensorInfo]
) -> tuple[dict[str, LoraModule], dict[str, TensorInfo], frozenset[str]]:
    """Group LoRA pairs by module; every other tensor replaces the base's by name.
    Returns the modules, the replacements, and the replacements that are only copies of
    base layers."""
    pairs: dict[tuple[str, ModuleKind], dict[str, TensorInfo]] = {}
    replacements: dict[str, TensorInfo] = {}
    rank_of: dict[str, int] = {}
    for key, info in infos.items():
        name = key.removeprefix(PEFT_PREFIX)
        part = next((p for p in _LORA_PARTS if name.endswith(p)), None)
        if part is None:
            marker, rank = next(((m, r) for m, r in _COPY_PARTS if m in name), ("", 1))
            target = name.replace(marker, ".") if marker else name
            if rank >= rank_of.get(target, -1):
                replacements[target], rank_of[target] = info, rank
            continue
        kind: ModuleKind = "embedding" if "embedding" in part else "linear"
        pairs.setdefault((name.removesuffix(part), kind), {})["A" if "_A" in part else "B"] = info
    modules: dict[str, LoraModule] = {}
    for (module, kind), pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise SourceError(f"{reference}: module {module!r} has lora_{''.join(pair)} but not its pair")
        modules[f"{module}.weight"] = _lora_module(reference, config, module, kind, pair["A"], pair["B"])
    if not modules and not replacements:
        raise SourceError(f"{reference}: the adapter holds no LoRA tensors")
    return modules, replacements, frozenset(name for name, rank in rank_of.items() if rank == 0)


def _lora_module(
    reference: str, config: dict[str, Any], module: str, kind: ModuleKind, a: TensorInfo, b: TensorInfo
) -> LoraModule:
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise SourceError(
            f"{reference}: {module!r} has {len(a.shape)}-D LoRA factors; only linear and embedding "
            "layers are supported (not convolutions)"
        )
    if a.shape[0] != b.shape[1]:
        raise SourceError(f"{reference}: {module!r}: lora_A has rank {a.shape[0]} but lora_B {b.shape[1]}")
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, float(config["lora_alpha"]))
    return LoraModule(
        module=module,
        target=f"{module}.weight",
        a=a,
        b=b,
        alpha=alpha,
        use_rslora=bool(config.get("use_rslora")),
        kind=kind,
        transposed=kind == "embedding" or bool(config.get("fan_in_fan_out")),
    )


def _pattern_value(patterns: dict[str, Any], module: str, default: float) -> float:
    """peft's per-module alpha override: the pattern matching the module's name."""
    import re

    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(value)
    return default


def adapter_summary(source: ModelSource) -> str | None:
    """A one-line description of an adapted source (adapter of BASE · r 8 · q_proj, v_proj);
    None for a model."""
    if not isinstance(source, AdapterSource) or source.adapter is None or source.base is None:
        return None
    adapter = source.adapter
    base_name = Path(source.base.reference).name or source.base.reference
    ranks = "/".join(str(r) for r in adapter.ranks) or "–"
    parts = [f"adapter of {base_name}", f"r {ranks}", ", ".join(adapter.target_modules)]
    if adapter.modules_to_save:
        parts.append(f"+{len(adapter.modules_to_save)} saved")
    return " · ".join(part for part in parts if part)
