"""Streaming statistics over task vectors: norms, cosine similarity and kinship, sign
conflicts after trimming, what sparsifiers keep, log-magnitude histograms, mask
overlap and singular spectra, reduced exactly per tensor, layer, module group and model,
and cached by the inputs' content fingerprints.

    from mergestudio.analysis import analyze
    report = analyze("base/", ["ft1/", "ft2/"], density=0.2)
    report.overall()["sign_conflict_rate"]["overall"]
"""

from __future__ import annotations

from mergestudio.analysis.cache import CACHE_ENV, analysis_cache_dir
from mergestudio.analysis.details import RowConflict, TensorDetails, tensor_details
from mergestudio.analysis.histogram import histogram_edges
from mergestudio.analysis.job import AnalysisError, LayerAnalyzed, analyze, shared_tensors
from mergestudio.analysis.report import AnalysisReport, SpectrumResult, TensorRecord
from mergestudio.analysis.suggest import DensitySuggestion, suggest_density
from mergestudio.analysis.sums import StatSums, summarize

__all__ = [
    "CACHE_ENV",
    "AnalysisError",
    "AnalysisReport",
    "DensitySuggestion",
    "LayerAnalyzed",
    "RowConflict",
    "SpectrumResult",
    "StatSums",
    "TensorDetails",
    "TensorRecord",
    "analysis_cache_dir",
    "analyze",
    "histogram_edges",
    "shared_tensors",
    "suggest_density",
    "summarize",
    "tensor_details",
]
