"""The analysis job: stream over the tensors shared by a base and its fine-tunes, one
tensor (times the number of models, in chunks) in memory at a time, emitting progress
per tensor and a ``LayerAnalyzed`` event as each block completes, and cache the result.
Blocks (layers, UNet blocks …) and lanes come from the base model's family.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergestudio.analysis import cache
from mergestudio.analysis.kernel import DEFAULT_CHUNK_ELEMENTS, TensorAnalyzer
from mergestudio.analysis.report import AnalysisReport, SpectrumResult, TensorRecord
from mergestudio.analysis.spectra import (
    DEFAULT_SPECTRUM_BUDGET,
    ENERGY_FRACTION,
    SPECTRA_MODES,
    SpectraMode,
    plan_spectra,
    singular_values,
    spectrum_record,
)
from mergestudio.analysis.sums import StatSums, summarize, total
from mergestudio.architectures import ModelLayout
from mergestudio.engine.device import torch_threads
from mergestudio.errors import MergeStudioError
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, emit, log
from mergestudio.io.hub import hub_transfer
from mergestudio.io.sources import ModelSource, open_model

READ_AHEAD = 2  # tensors whose pages are requested before they are needed
DEFAULT_DENSITY = 0.2  # TIES keeps the top 20 % by default
DEFAULT_TALL_LAMBDA = 0.4  # middle of the 0.2-0.6 range the TALL-mask paper searches
_FLOAT_CODES = {"F64", "F32", "F16", "BF16"}

ModelLike = ModelSource | str | Path


class AnalysisError(MergeStudioError):
    """The inputs cannot be analysed together (no shared tensors, bad options)."""


@dataclass(frozen=True)
class LayerAnalyzed:
    """Emitted when every tensor of a layer has been analysed: that layer's metrics
    (the same schema as one entry of the report's ``layers``)."""

    layer: int
    summary: dict[str, Any]
    layers_done: int
    layers_total: int


def analyze(
    base: ModelLike,
    models: Sequence[ModelLike],
    density: float = DEFAULT_DENSITY,
    *,
    tall_lambda: float = DEFAULT_TALL_LAMBDA,
    spectra: SpectraMode = "auto",
    spectrum_budget: float = DEFAULT_SPECTRUM_BUDGET,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    threads: int | None = 1,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    allow_pickle: bool = False,
) -> AnalysisReport:
    """Analyse the task vectors τᵢ = modelᵢ - base of ``models`` against ``base``.

    ``density``: fraction of each task vector trimming keeps (TIES' top-k), in [0, 1].
    ``threads``: CPU threads for tensor math (None leaves torch's setting).
    A finished report is cached (see ``cache``); ``use_cache=False`` recomputes and
    overwrites. Raises ``Cancelled`` when ``cancel`` is set between tensors.
    """
    _check_options(density, tall_lambda, spectra, models)
    opened: list[ModelSource] = []
    try:
        with hub_transfer(events, cancel):  # Hub models download with progress and cancel
            base_source = open_source(base, opened, allow_pickle)
            sources = [open_source(m, opened, allow_pickle) for m in models]
        options = {
            "tall_lambda": float(tall_lambda),
            "spectra": spectra,
            "spectrum_budget": float(spectrum_budget),
            "energy_fraction": ENERGY_FRACTION,
        }
        fingerprints = {"base": base_source.fingerprint(), "models": [s.fingerprint() for s in sources]}
        key = cache.cache_key(fingerprints, float(density), options)
        folder = cache.analysis_cache_dir(cache_dir)
        if use_cache:
            cached = cache.load(folder, key)
            if cached is not None:
                log(events, f"analysis loaded from the cache ({folder / key}.json)")
                emit_done(events, len(cached.tensors))
                return cached
        job = _AnalysisJob(base_source, sources, float(density), options, events, cancel, chunk_elements)
        with torch_threads(threads):
            report = job.run()
        report.fingerprints, report.cache_key = fingerprints, key
        cache.store(folder, key, report)
        return report
    finally:
        for source in opened:
            source.close()


def emit_done(events: EventSink | None, total_items: int) -> None:
    reporter = ProgressReporter(events, "analyze", total_items)
    reporter.advance(total_items)


def _check_options(density: float, tall_lambda: float, spectra: str, models: Sequence[ModelLike]) -> None:
    if not models:
        raise AnalysisError("analysis needs at least one model besides the base")
    if not 0.0 <= density <= 1.0:
        raise AnalysisError(f"density must lie in [0, 1], got {density}")
    if tall_lambda < 0:
        raise AnalysisError(f"tall_lambda must be non-negative, got {tall_lambda}")
    if spectra not in SPECTRA_MODES:
        raise AnalysisError(f"spectra must be one of {', '.join(SPECTRA_MODES)}, got {spectra!r}")


def open_source(reference: ModelLike, opened: list[ModelSource], allow_pickle: bool) -> ModelSource:
    if isinstance(reference, ModelSource):
        return reference
    source = open_model(reference, allow_pickle=allow_pickle)
    opened.append(source)
    return source



def shared_tensors(
    base: ModelSource, models: Sequence[ModelSource]
) -> tuple[list[str], list[dict[str, str]]]:
    """Tensors every model has with the base's shape, in stream order (embeddings, layers
    in index order, the rest), and the others with the reason each was skipped."""
    chosen: list[str] = []
    skipped: list[dict[str, str]] = []
    layout = base.layout
    for name, info in base.tensors.items():
        reason = _skip_reason(name, info.dtype, info.shape, models)
        if not reason and not layout.role(name).merge:
            reason = f"a buffer, not a weight ({layout.family.title} keeps it from one model)"
        if reason:
            skipped.append({"name": name, "reason": reason})
        else:
            chosen.append(name)
    for source in models:
        for name in source.tensors.keys() - base.tensors.keys():
            skipped.append({"name": name, "reason": f"not in the base (only in {source.reference})"})
    position = {name: i for i, name in enumerate(chosen)}
    chosen.sort(key=lambda name: (*_stream_rank(layout, name), position[name]))
    return chosen, skipped


def _skip_reason(name: str, dtype: str, shape: tuple[int, ...], models: Sequence[ModelSource]) -> str:
    if dtype not in _FLOAT_CODES:
        return f"not a float tensor ({dtype})"
    for source in models:
        info = source.tensors.get(name)
        if info is None:
            return f"missing in {source.reference}"
        if info.shape != shape:
            return f"shape {list(info.shape)} in {source.reference}, {list(shape)} in the base"
        if info.dtype not in _FLOAT_CODES:
            return f"not a float tensor in {source.reference} ({info.dtype})"
    return ""


def _stream_rank(layout: ModelLayout, name: str) -> tuple[int, int]:
    role = layout.role(name)
    if role.block is not None:
        return (1, role.block.order)
    return (0, 0) if role.pre else (2, 0)


def _block_index(layout: ModelLayout, name: str) -> int | None:
    block = layout.role(name).block
    return block.order if block is not None else None


class _AnalysisJob:
    def __init__(
        self,
        base: ModelSource,
        models: list[ModelSource],
        density: float,
        options: dict[str, Any],
        events: EventSink | None,
        cancel: CancelToken | None,
        chunk_elements: int,
    ) -> None:
        self.base, self.models, self.density, self.options = base, models, density, options
        self.events, self.cancel = events, cancel
        self.analyzer = TensorAnalyzer(
            len(models), tall_lambda=options["tall_lambda"], chunk_elements=chunk_elements
        )

    def run(self) -> AnalysisReport:
        import torch

        started = time.perf_counter()
        names, skipped = shared_tensors(self.base, self.models)
        if not names:
            raise AnalysisError(
                f"{self.base.reference}: shares no float tensor of equal shape with the models"
            )
        shapes = {name: self.base.tensors[name].shape for name in names}
        plan = plan_spectra(
            shapes, self.options["spectra"], self.options["spectrum_budget"], len(self.models)
        )
        log(
            self.events,
            f"analyzing {len(names)} tensors of {len(self.models)} models at density {self.density:g}",
        )
        if plan.mode == "sample":
            log(self.events, f"spectra: {len(plan.matrices)} matrices, {plan.rule}")
        reporter = ProgressReporter(self.events, "analyze", len(names), sum(self._bytes(n) for n in names))
        reporter.start()
        layout = self.base.layout
        last_of_layer = {_block_index(layout, name): i for i, name in enumerate(names)}
        layers_total = sum(1 for index in last_of_layer if index is not None)
        records: list[TensorRecord] = []
        spectra: list[SpectrumResult] = []
        wanted_spectra = set(plan.matrices)
        with torch.inference_mode():
            for position, name in enumerate(names):
                check_cancel(self.cancel)
                for ahead in names[position + 1 : position + 1 + READ_AHEAD]:
                    self._prefetch(ahead)
                records.append(self._tensor(name))
                if name in wanted_spectra:
                    spectra.append(self._spectrum(name))
                index = _block_index(layout, name)
                if index is not None and last_of_layer[index] == position:
                    self._layer_done(index, records, layers_total)
                reporter.advance(1, self._bytes(name), name)
        return AnalysisReport(
            base=self.base.reference,
            models=[m.reference for m in self.models],
            density=self.density,
            options=self.options,
            tensors=records,
            spectra=spectra,
            spectra_plan={
                "mode": plan.mode,
                "rule": plan.rule,
                "sampled_layers": list(plan.sampled_layers),
                "matrices": list(plan.matrices),
            },
            skipped=skipped,
            elapsed_s=time.perf_counter() - started,
            family=layout.family.title,
            blocks=[block.label for block in layout.blocks],
            lanes=[lane.name for lane in layout.lanes],
        )

    def _bytes(self, name: str) -> int:
        return self.base.tensors[name].nbytes + sum(m.tensors[name].nbytes for m in self.models)

    def _prefetch(self, name: str) -> None:
        self.base.prefetch(name)
        for source in self.models:
            source.prefetch(name)

    def _tensor(self, name: str) -> TensorRecord:
        base = self.base.read(name)
        tensors = [source.read(name) for source in self.models]
        result = self.analyzer.analyze(base, tensors, self.density)
        role = self.base.layout.role(name)
        return TensorRecord(
            name=name,
            layer=role.block.order if role.block else None,
            group=role.lane,
            shape=tuple(base.shape),
            sums=result.sums,
            thresholds=result.thresholds,
        )

    def _spectrum(self, name: str) -> SpectrumResult:
        import torch

        base = self.base.read(name).to(torch.float32)
        records = []
        for source in self.models:
            check_cancel(self.cancel)
            task_matrix = source.read(name).to(torch.float32) - base
            records.append(spectrum_record(singular_values(task_matrix)))
        role = self.base.layout.role(name)
        layer = role.block.order if role.block else None
        return SpectrumResult(name, layer, role.lane, tuple(base.shape), records)

    def _layer_done(self, index: int, records: list[TensorRecord], layers_total: int) -> None:
        parts: list[StatSums] = [r.sums for r in records if r.layer == index]
        by_group: dict[str, list[StatSums]] = {}
        for record in records:
            if record.layer == index:
                by_group.setdefault(record.group, []).append(record.sums)
        n = len(self.models)
        summary = summarize(total(parts, n), self.density)
        summary["groups"] = {g: summarize(total(p, n), self.density) for g, p in by_group.items()}
        done = len({r.layer for r in records if r.layer is not None})
        label = self.base.layout.blocks[index].label
        emit(self.events, LayerAnalyzed(index, {"layer": index, "block": label, **summary}, done, layers_total))
