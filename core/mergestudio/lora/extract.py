"""Extracting a LoRA adapter from a fine-tune: per weight matrix, a truncated SVD of the
task matrix Δ = W_finetune − W_base, at a fixed rank or at the smallest rank that keeps a
share of Δ's energy (‖·‖²_F). Embeddings and the LM head are saved whole
(``modules_to_save``), factorised like the other matrices, or left out, as asked; other
changed tensors (norms, biases) are saved whole with their module.

The two models are streamed tensor by tensor (memory-mapped, headers checked first); the
adapter is written into a staging folder and moved into place only when complete.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from mergestudio.architecture import is_embedding
from mergestudio.engine.device import resolve_device, torch_threads
from mergestudio.errors import PlanError, RecipeError
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.io.dtypes import FLOAT_CODES, ITEM_SIZE, to_torch
from mergestudio.io.model_folder import staged_folder
from mergestudio.io.safetensors_file import TensorInfo
from mergestudio.io.sources import ModelSource, open_model
from mergestudio.lora.factorize import LowRank, svd_for_energy, truncated_svd
from mergestudio.lora.peft_folder import LoraFactors, lora_from_weight_layout, write_peft_folder

EmbeddingChoice = Literal["save", "lora", "skip"]
# Families whose linear layers are transformers' Conv1D, weights stored (in, out): the
# adapter needs fan_in_fan_out. Data, keyed by config model_type.
FAN_IN_FAN_OUT_MODEL_TYPES = frozenset({"gpt2"})


@dataclass(frozen=True)
class ModuleChoice:
    """What extraction did with one tensor: ``lora`` (with its rank and energy kept),
    ``saved`` (whole, in modules_to_save), ``unchanged`` or ``skipped``."""

    tensor: str
    shape: tuple[int, ...]
    action: Literal["lora", "saved", "unchanged", "skipped"]
    rank: int = 0
    energy: float = 1.0


@dataclass
class ExtractResult:
    output: Path
    modules: list[ModuleChoice]
    adapter_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def lora_modules(self) -> list[ModuleChoice]:
        return [m for m in self.modules if m.action == "lora"]

    def report(self) -> dict[str, object]:
        return {
            "modules": [asdict(m) for m in self.modules],
            "adapter_bytes": self.adapter_bytes,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class ExtractSettings:
    """``rank`` or ``energy`` (one of them); ``max_rank`` caps energy-chosen ranks."""

    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None
    embeddings: EmbeddingChoice = "save"

    def check(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise RecipeError("extract-lora: give exactly one of --rank or --energy")
        if self.rank is not None and self.rank < 1:
            raise RecipeError(f"extract-lora: --rank must be at least 1, got {self.rank}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise RecipeError(f"extract-lora: --energy must be in (0, 1], got {self.energy}")


def lora_size_bytes(shapes: list[tuple[int, int]], rank: int, item_size: int = 2) -> int:
    """Bytes of a rank-``rank`` adapter over matrices of these shapes: r·(m + n) each."""
    return sum(min(rank, m, n) * (m + n) for m, n in shapes) * item_size


def extract_lora(
    base: str | ModelSource,
    finetune: str | ModelSource,
    out_dir: str | Path,
    settings: ExtractSettings,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> ExtractResult:
    """Write a PEFT LoRA folder at ``out_dir`` that turns ``base`` into (an approximation
    of) ``finetune``, with ``lora_report.json`` (per tensor: action, rank, energy kept).
    ``dtype``: the adapter's dtype (default: the fine-tune's dominant float dtype)."""
    settings.check()
    started = time.perf_counter()
    base_source = base if isinstance(base, ModelSource) else open_model(base)
    tune_source = finetune if isinstance(finetune, ModelSource) else open_model(finetune)
    try:
        names = _check_pair(base_source, tune_source)
        out_dtype = to_torch(dtype.upper() if dtype else _dominant_float(tune_source))
        transposed = (base_source.config or {}).get("model_type") in FAN_IN_FAN_OUT_MODEL_TYPES
        extractor = _Extractor(
            base_source, tune_source, settings, resolve_device(device), bool(transposed), out_dtype
        )
        with staged_folder(Path(out_dir), overwrite) as staging:
            with torch.inference_mode(), torch_threads(threads or 1):
                extractor.run(names, events, cancel)
            result = ExtractResult(Path(out_dir), extractor.choices, 0, 0.0, extractor.warnings)
            result.seconds = time.perf_counter() - started
            write_peft_folder(
                staging,
                base_model=base_source.reference,
                factors=extractor.factors,
                saved=extractor.saved,
                dtype=out_dtype,
                fan_in_fan_out=bool(transposed),
            )
            result.adapter_bytes = (staging / "adapter_model.safetensors").stat().st_size
            (staging / "lora_report.json").write_text(_report_json(result, settings))
        log(events, f"wrote {out_dir}: {len(result.lora_modules)} LoRA modules")
        return result
    finally:
        if not isinstance(base, ModelSource):
            base_source.close()
        if not isinstance(finetune, ModelSource):
            tune_source.close()


def _report_json(result: ExtractResult, settings: ExtractSettings) -> str:
    import json

    report = result.report()
    report["settings"] = asdict(settings)
    return json.dumps(report, indent=2)


def _check_pair(base: ModelSource, tune: ModelSource) -> list[str]:
    """Tensor names of the fine-tune, after checking the base has each with its shape."""
    missing = [name for name in tune.tensors if name not in base.tensors]
    if missing:
        raise PlanError(
            f"{tune.reference} has tensors {base.reference} lacks ({', '.join(missing[:3])}"
            f"{' …' if len(missing) > 3 else ''}): not a fine-tune of this base"
        )
    for name, info in tune.tensors.items():
        if base.tensors[name].shape != info.shape:
            raise PlanError(
                f"tensor {name!r} is {list(info.shape)} in {tune.reference} but "
                f"{list(base.tensors[name].shape)} in {base.reference}: not a fine-tune of this base"
            )
    return list(tune.tensors)


def _dominant_float(source: ModelSource) -> str:
    return _dominant_float_code(source.tensors)


class _Extractor:
    def __init__(
        self,
        base: ModelSource,
        tune: ModelSource,
        settings: ExtractSettings,
        device: torch.device,
        conv1d: bool,
        out_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.out_dtype = out_dtype  # factors are kept in it: the adapter holds them until written
        self.base = base
        self.tune = tune
        self.settings = settings
        self.device = device
        self.conv1d = conv1d
        self.choices: list[ModuleChoice] = []
        self.factors: list[LoraFactors] = []
        self.saved: dict[str, torch.Tensor] = {}
        self.warnings: list[str] = []

    def run(self, names: list[str], events: EventSink | None, cancel: CancelToken | None) -> None:
        total_bytes = sum(self.tune.tensors[n].nbytes * 2 for n in names)
        reporter = ProgressReporter(events, "extract", len(names), total_bytes)
        reporter.start()
        for name in names:
            check_cancel(cancel)
            self.choices.append(self._one(name))
            reporter.advance(1, self.tune.tensors[name].nbytes * 2, name)
        self._save_whole_modules()

    def _one(self, name: str) -> ModuleChoice:
        info = self.tune.tensors[name]
        shape = tuple(info.shape)
        if info.dtype not in FLOAT_CODES:
            return ModuleChoice(name, shape, "unchanged")
        embedding = is_embedding(name)
        if (embedding and self.settings.embeddings != "lora") or len(shape) != 2:
            # Saved whole or skipped: compare as stored, without a float32 delta (for an
            # embedding that delta would be the largest allocation of the whole run).
            if torch.equal(self.tune.read(name), self.base.read(name)):
                return ModuleChoice(name, shape, "unchanged")
            if embedding and self.settings.embeddings == "skip":
                self.warnings.append(f"{name} differs from the base and was left out (--embeddings skip)")
                return ModuleChoice(name, shape, "skipped")
            return ModuleChoice(name, shape, "saved")
        delta = self._delta(name)
        if not bool(delta.any()):
            return ModuleChoice(name, shape, "unchanged")
        if embedding and self.settings.embeddings == "skip":
            self.warnings.append(f"{name} differs from the base and was left out (--embeddings skip)")
            return ModuleChoice(name, shape, "skipped")
        if (
            delta.dim() != 2
            or not name.endswith(".weight")
            or (embedding and self.settings.embeddings == "save")
        ):
            return ModuleChoice(name, shape, "saved")
        return self._factorise(name, delta, embedding)

    def _delta(self, name: str) -> torch.Tensor:
        """Δ (*shape,) float32 on the device. The copy is explicit: a float32 read is a
        read-only memory map, and subtracting in place would write to it."""
        tuned = self.tune.read(name).to(self.device, torch.float32, copy=True)
        # The base is subtracted as stored (promoted element by element): no float32 copy.
        return tuned.sub_(self.base.read(name).to(self.device))

    def _factorise(self, name: str, delta: torch.Tensor, embedding: bool) -> ModuleChoice:
        module = name.removesuffix(".weight")
        # peft's factors are (out, r)·(r, in); embeddings and Conv1D store (in, out).
        is_input_embedding = embedding and not module.endswith("lm_head")
        transposed = is_input_embedding or (self.conv1d and not embedding)
        low_rank = self._low_rank(delta)
        kind: Literal["linear", "embedding"] = "embedding" if is_input_embedding else "linear"
        left, right = (x.to("cpu", self.out_dtype) for x in (low_rank.left, low_rank.right))
        self.factors.append(lora_from_weight_layout(module, kind, left, right, transposed))
        return ModuleChoice(name, tuple(delta.shape), "lora", low_rank.rank, low_rank.energy)

    def _low_rank(self, delta: torch.Tensor) -> LowRank:
        settings = self.settings
        if settings.rank is not None:
            return truncated_svd(delta, settings.rank)
        assert settings.energy is not None
        return svd_for_energy(delta, settings.energy, max_rank=settings.max_rank)

    def _save_whole_modules(self) -> None:
        """Tensors that differ and cannot be low-rank go whole into modules_to_save, with
        every other tensor of their module (peft swaps the whole module)."""
        modules = {c.tensor.rsplit(".", 1)[0] for c in self.choices if c.action == "saved"}
        for index, choice in enumerate(self.choices):
            module = choice.tensor.rsplit(".", 1)[0]
            if module not in modules:
                continue
            if choice.action == "lora":
                self.factors = [f for f in self.factors if f.module != module]
                self.warnings.append(
                    f"{choice.tensor}: saved whole, because other tensors of {module} changed"
                )
            if choice.action in ("lora", "unchanged"):
                self.choices[index] = ModuleChoice(choice.tensor, choice.shape, "saved")
            # A memory-mapped view, not a copy: the sources stay open until the adapter is
            # written, and saved embeddings are the largest part of an adapter.
            self.saved[choice.tensor] = self.tune.read(choice.tensor)


def estimate_adapter_bytes(
    tensors: dict[str, TensorInfo],
    *,
    rank: int | None = None,
    energy: float | None = None,
    spectra: list[tuple[list[float], int]] | None = None,
    embeddings: EmbeddingChoice = "save",
) -> int:
    """What an extraction will write, from the base's headers: r·(m + n) per weight matrix
    at ``rank``; at ``energy``, each matrix at the share of its rank that the sampled
    ``spectra`` (leading singular values, full rank) needed on average. Embeddings and the
    LM head add their full size when saved whole. An estimate: energy ranks are chosen
    per matrix at extraction time."""
    matrices = [
        info
        for name, info in tensors.items()
        if len(info.shape) == 2 and info.dtype in FLOAT_CODES and not is_embedding(name)
    ]
    item_size = ITEM_SIZE[_dominant_float_code(tensors)]
    if rank is None:
        fraction = _energy_rank_fraction(spectra or [], energy if energy is not None else 0.9)
    total = 0
    for info in matrices:
        rows, columns = info.shape
        chosen = rank if rank is not None else max(1, math.ceil(fraction * min(rows, columns)))
        total += min(chosen, rows, columns) * (rows + columns) * item_size
    if embeddings == "save":
        total += sum(info.nbytes for name, info in tensors.items() if is_embedding(name))
    return total


def _energy_rank_fraction(spectra: list[tuple[list[float], int]], energy: float) -> float:
    """Mean share of the full rank needed to keep ``energy`` in the sampled spectra."""
    shares = []
    for values, full_rank in spectra:
        squares = [v * v for v in values]
        total = sum(squares)
        if total <= 0 or full_rank <= 0:
            continue
        kept, needed = 0.0, len(squares)
        for index, square in enumerate(squares):
            kept += square
            if kept >= energy * total:
                needed = index + 1
                break
        shares.append(needed / full_rank)
    return sum(shares) / len(shares) if shares else 1.0


def _dominant_float_code(tensors: dict[str, TensorInfo]) -> str:
    counts: dict[str, int] = {}
    for info in tensors.values():
        if info.dtype in FLOAT_CODES:
            counts[info.dtype] = counts.get(info.dtype, 0) + info.numel
    return max(counts, key=lambda code: counts[code]) if counts else "F32"
