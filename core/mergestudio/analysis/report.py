"""The result of an analysis: per-tensor sufficient statistics (the only numbers stored),
from which every layer, module-group and overall view is reduced exactly, plus spectra.

The JSON form (``to_json``) carries both the raw sums (so ``from_json`` is lossless)
and the derived views a reader wants; docs/analysis.md documents it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from mergestudio.analysis.histogram import histogram_edges
from mergestudio.analysis.sums import StatSums, summarize, total
from mergestudio.architecture import MODULE_GROUPS

FORMAT = "mergestudio-analysis/1"


@dataclass
class TensorRecord:
    """One analysed tensor: where it sits and its statistics."""

    name: str
    layer: int | None
    group: str
    shape: tuple[int, ...]
    sums: StatSums
    thresholds: list[float]  # per model: the smallest |τ| that trimming keeps (inf: none)

    def to_dict(self, density: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer": self.layer,
            "group": self.group,
            "shape": list(self.shape),
            "thresholds": [None if math.isinf(v) else v for v in self.thresholds],
            "summary": summarize(self.sums, density),
            "sums": self.sums.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorRecord:
        return cls(
            name=str(data["name"]),
            layer=None if data["layer"] is None else int(data["layer"]),
            group=str(data["group"]),
            shape=tuple(int(d) for d in data["shape"]),
            sums=StatSums.from_dict(data["sums"]),
            thresholds=[math.inf if v is None else float(v) for v in data["thresholds"]],
        )


@dataclass
class SpectrumResult:
    """Spectra of one matrix's task matrices, one record per model (see spectra.py)."""

    name: str
    layer: int | None
    group: str
    shape: tuple[int, ...]
    models: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer": self.layer,
            "group": self.group,
            "shape": list(self.shape),
            "models": self.models,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectrumResult:
        return cls(
            name=str(data["name"]),
            layer=None if data["layer"] is None else int(data["layer"]),
            group=str(data["group"]),
            shape=tuple(int(d) for d in data["shape"]),
            models=list(data["models"]),
        )


@dataclass
class AnalysisReport:
    """Everything an analysis found. Plain data; cheap to copy across threads."""

    base: str
    models: list[str]
    density: float
    options: dict[str, Any]
    tensors: list[TensorRecord]
    spectra: list[SpectrumResult] = field(default_factory=list)
    spectra_plan: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    cache_key: str = ""
    elapsed_s: float = 0.0
    from_cache: bool = False
    # The base model's family: ``TensorRecord.layer`` indexes ``blocks`` (labels such as
    # "3", "decoder 1", "IN04"); ``group`` is one of ``lanes``.
    family: str = ""
    blocks: list[str] = field(default_factory=list)
    lanes: list[str] = field(default_factory=list)

    @property
    def n_models(self) -> int:
        return len(self.models)

    # -- reductions -----------------------------------------------------------------------

    def overall_sums(self) -> StatSums:
        return total([t.sums for t in self.tensors], self.n_models)

    def layer_sums(self) -> dict[int, StatSums]:
        """Per layer index, the sums over that layer's tensors (layers in index order)."""
        grouped: dict[int, list[StatSums]] = {}
        for record in self.tensors:
            if record.layer is not None:
                grouped.setdefault(record.layer, []).append(record.sums)
        return {index: total(grouped[index], self.n_models) for index in sorted(grouped)}

    def group_sums(self) -> dict[str, StatSums]:
        """Per module group present (attention, mlp, embedding, norm, other), its sums."""
        grouped: dict[str, list[StatSums]] = {}
        for record in self.tensors:
            grouped.setdefault(record.group, []).append(record.sums)
        known = self.lanes or list(MODULE_GROUPS)
        order = [g for g in known if g in grouped] + sorted(set(grouped) - set(known))
        return {group: total(grouped[group], self.n_models) for group in order}

    def layer_group_sums(self) -> dict[tuple[int, str], StatSums]:
        """Sums per (layer, module group): the cells of the Inspect page's heatmaps."""
        grouped: dict[tuple[int, str], list[StatSums]] = {}
        for record in self.tensors:
            if record.layer is not None:
                grouped.setdefault((record.layer, record.group), []).append(record.sums)
        return {key: total(parts, self.n_models) for key, parts in sorted(grouped.items())}

    def overall(self) -> dict[str, Any]:
        return summarize(self.overall_sums(), self.density)

    def layers(self) -> list[dict[str, Any]]:
        cells = self.layer_group_sums()
        out = []
        for index, sums in self.layer_sums().items():
            groups = {g: summarize(s, self.density) for (i, g), s in cells.items() if i == index}
            block = {"block": self.blocks[index]} if index < len(self.blocks) else {}
            out.append({"layer": index, **block, **summarize(sums, self.density), "groups": groups})
        return out

    def groups(self) -> dict[str, dict[str, Any]]:
        return {group: summarize(sums, self.density) for group, sums in self.group_sums().items()}

    def tensor(self, name: str) -> TensorRecord:
        for record in self.tensors:
            if record.name == name:
                return record
        raise KeyError(name)

    # -- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        overall = self.overall()
        return {
            "format": FORMAT,
            "base": self.base,
            "models": self.models,
            "density": self.density,
            "options": self.options,
            "fingerprints": self.fingerprints,
            "cache_key": self.cache_key,
            "elapsed_s": self.elapsed_s,
            "family": self.family,
            "blocks": self.blocks,
            "lanes": self.lanes,
            "cosine": overall["cosine"],
            "sign_conflict_rate": overall["sign_conflict_rate"],
            "overall": overall,
            "groups": self.groups(),
            "layers": self.layers(),
            "histogram_edges": histogram_edges(),
            "spectra": {**self.spectra_plan, "results": [s.to_dict() for s in self.spectra]},
            "skipped": self.skipped,
            "tensors": [t.to_dict(self.density) for t in self.tensors],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisReport:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} report (format: {data.get('format')!r})")
        spectra = dict(data.get("spectra") or {})
        results = spectra.pop("results", [])
        return cls(
            base=str(data["base"]),
            models=[str(m) for m in data["models"]],
            density=float(data["density"]),
            options=dict(data["options"]),
            tensors=[TensorRecord.from_dict(t) for t in data["tensors"]],
            spectra=[SpectrumResult.from_dict(s) for s in results],
            spectra_plan=spectra,
            skipped=list(data.get("skipped", [])),
            fingerprints=dict(data.get("fingerprints", {})),
            cache_key=str(data.get("cache_key", "")),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            family=str(data.get("family", "")),
            blocks=[str(b) for b in data.get("blocks", [])],
            lanes=[str(lane) for lane in data.get("lanes", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> AnalysisReport:
        return cls.from_dict(json.loads(text))
