"""One tensor in detail, computed on demand (for the Inspect page's drill-down): its
metrics, per-model histograms, the rows of its matrix where signs fight most, and its
task matrices' spectra."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mergestudio.analysis.histogram import histogram_edges
from mergestudio.analysis.job import (
    DEFAULT_DENSITY,
    DEFAULT_TALL_LAMBDA,
    AnalysisError,
    ModelLike,
    open_source,
)
from mergestudio.analysis.kernel import TensorAnalyzer, as_matrix
from mergestudio.analysis.spectra import is_task_matrix, singular_values, spectrum_record
from mergestudio.analysis.sums import StatSums, summarize
from mergestudio.io.sources import ModelSource


@dataclass
class RowConflict:
    """A row of the tensor's matrix view: entries whose surviving values disagree in
    sign, out of the entries where at least two survive."""

    row: int
    conflicts: int
    contested: int

    @property
    def rate(self) -> float | None:
        return self.conflicts / self.contested if self.contested else None


@dataclass
class TensorDetails:
    name: str
    shape: tuple[int, ...]
    density: float
    sums: StatSums
    summary: dict[str, Any]  # same schema as a layer or overall summary
    histogram_edges: list[float]
    thresholds: list[float]  # per model: the smallest kept |τ|
    top_rows: list[RowConflict]  # most conflicting rows first
    row_conflict_rate: np.ndarray  # (rows,) float64, NaN where no entry is contested
    spectra: list[dict[str, Any]] | None  # per model, for 2-D tensors when asked

    @property
    def histograms(self) -> np.ndarray:
        """(n_models, bins + 2) int64 counts of |τ| (see histogram.py for the bins)."""
        return self.sums.histogram


def tensor_details(
    base: ModelLike,
    models: Sequence[ModelLike],
    tensor_name: str,
    density: float = DEFAULT_DENSITY,
    *,
    tall_lambda: float = DEFAULT_TALL_LAMBDA,
    top_rows: int = 10,
    spectra: bool = True,
) -> TensorDetails:
    """Analyse one tensor of ``base`` and ``models`` (shapes must match)."""
    import torch

    opened: list[ModelSource] = []
    try:
        base_source = open_source(base, opened, allow_pickle=False)
        sources = [open_source(m, opened, allow_pickle=False) for m in models]
        base_tensor = base_source.read(tensor_name)
        tensors = [source.read(tensor_name) for source in sources]
        for source, tensor in zip(sources, tensors, strict=True):
            if tensor.shape != base_tensor.shape:
                raise AnalysisError(
                    f"{tensor_name}: shape {list(tensor.shape)} in {source.reference}, "
                    f"{list(base_tensor.shape)} in the base"
                )
        with torch.inference_mode():
            analyzer = TensorAnalyzer(len(sources), tall_lambda=tall_lambda)
            result = analyzer.analyze(base_tensor, tensors, density, rows=True)
            spectra_records = _spectra(base_tensor, tensors) if spectra else None
    finally:
        for source in opened:
            source.close()
    assert result.row_conflicts is not None and result.row_contested is not None
    return TensorDetails(
        name=tensor_name,
        shape=tuple(base_tensor.shape),
        density=density,
        sums=result.sums,
        summary=summarize(result.sums, density),
        histogram_edges=histogram_edges(),
        thresholds=result.thresholds,
        top_rows=_top_rows(result.row_conflicts, result.row_contested, top_rows),
        row_conflict_rate=_row_rates(result.row_conflicts, result.row_contested),
        spectra=spectra_records,
    )


def _top_rows(conflicts: np.ndarray, contested: np.ndarray, count: int) -> list[RowConflict]:
    """Rows with the most sign conflicts (ties: lower row first); rows without any left out."""
    count = min(count, int(np.count_nonzero(conflicts)))
    if count <= 0:
        return []
    order = np.lexsort((np.arange(conflicts.size), -conflicts))[:count]
    return [RowConflict(int(r), int(conflicts[r]), int(contested[r])) for r in order]


def _row_rates(conflicts: np.ndarray, contested: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = conflicts / contested
    return np.where(contested > 0, rates, np.nan)


def _spectra(base: Any, tensors: Sequence[Any]) -> list[dict[str, Any]] | None:
    import torch

    if not is_task_matrix(tuple(as_matrix(base).shape)) or base.dim() != 2:
        return None
    base32 = base.to(torch.float32)
    return [spectrum_record(singular_values(t.to(torch.float32) - base32)) for t in tensors]
