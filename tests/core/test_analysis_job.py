"""The streaming analysis job on real (tiny) checkpoints: reductions, events, cancel,
the JSON report, the cache, and per-tensor details."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mergestudio.analysis import (
    CACHE_ENV,
    AnalysisReport,
    LayerAnalyzed,
    analysis_cache_dir,
    analyze,
    tensor_details,
)
from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken, Progress
from safetensors.torch import save_file


def _write(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def _run(family: dict[str, Path], tmp_path: Path, **options) -> AnalysisReport:
    options.setdefault("cache_dir", tmp_path / "cache")
    return analyze(family["base"], [family["ft1"], family["ft2"], family["ft3"]], 0.2, **options)


def test_report_reductions_are_exact(model_family: dict[str, Path], tmp_path: Path) -> None:
    report = _run(model_family, tmp_path)
    assert len(report.tensors) == 21 and report.n_models == 3
    overall = report.overall_sums()
    layers = report.layer_sums()
    groups = report.group_sums()
    assert sorted(layers) == [0, 1]
    assert sum(s.numel for s in groups.values()) == overall.numel
    assert np.allclose(sum(s.gram for s in groups.values()), overall.gram)
    assert (
        sum(s.conflicts for s in layers.values())
        + sum(t.sums.conflicts for t in report.tensors if t.layer is None)
        == overall.conflicts
    )
    # The overall cosine is that of the concatenated task vectors.
    from safetensors.torch import load_file

    base = load_file(model_family["base"] / "model.safetensors")
    flats = []
    for name in ("ft1", "ft2"):
        tuned = load_file(model_family[name] / "model.safetensors")
        flats.append(torch.cat([(tuned[k] - base[k]).flatten() for k in sorted(base)]).double())
    expected = float(flats[0] @ flats[1] / (flats[0].norm() * flats[1].norm()))
    assert report.overall()["cosine"]["matrix"][0][1] == pytest.approx(expected, abs=1e-6)
    assert set(report.groups()) == {"attention", "mlp", "embedding", "norm"}


def test_json_schema_and_round_trip(model_family: dict[str, Path], tmp_path: Path) -> None:
    report = _run(model_family, tmp_path)
    data = json.loads(report.to_json())
    for key in (
        "models",
        "density",
        "cosine",
        "sign_conflict_rate",
        "layers",
        "groups",
        "overall",
        "tensors",
    ):
        assert key in data
    assert data["density"] == 0.2 and len(data["models"]) == 3
    assert len(data["cosine"]["matrix"]) == 3 and isinstance(data["cosine"]["overall"], float)
    assert 0.0 <= data["sign_conflict_rate"]["overall"] <= 1.0
    assert [layer["layer"] for layer in data["layers"]] == [0, 1]
    assert {"attention", "mlp", "norm"} <= set(data["layers"][0]["groups"])
    assert len(data["histogram_edges"]) + 1 == len(data["overall"]["histogram"]["counts"][0])
    assert data["spectra"]["mode"] == "all" and len(data["spectra"]["results"]) == 16
    again = AnalysisReport.from_json(report.to_json())
    assert again.to_dict() == report.to_dict()


def test_events_per_tensor_and_layer(model_family: dict[str, Path], tmp_path: Path) -> None:
    events: list[object] = []
    _run(model_family, tmp_path, events=events.append)
    layers = [e for e in events if isinstance(e, LayerAnalyzed)]
    assert [e.layer for e in layers] == [0, 1] and layers[-1].layers_done == 2 == layers[-1].layers_total
    assert 0.0 <= layers[0].summary["sign_conflict_rate"]["overall"] <= 1.0
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 21 and progress[-1].job == "analyze"


def test_cancel_between_tensors(model_family: dict[str, Path], tmp_path: Path) -> None:
    cancel = CancelToken()

    def sink(event: object) -> None:
        # The first finished layer (sent for every layer, unlike throttled Progress events).
        if isinstance(event, LayerAnalyzed):
            cancel.cancel()

    with pytest.raises(Cancelled):
        _run(model_family, tmp_path, events=sink, cancel=cancel)
    assert not list((tmp_path / "cache").glob("**/*.json"))  # nothing half-done is cached


def test_cache_hit_key_and_env(model_family: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    first = _run(model_family, tmp_path)
    assert not first.from_cache
    second = _run(model_family, tmp_path)
    assert second.from_cache and second.to_dict() == first.to_dict()
    other_density = analyze(model_family["base"], [model_family["ft1"]], 0.5, cache_dir=tmp_path / "cache")
    assert other_density.cache_key != first.cache_key and not other_density.from_cache
    assert not _run(model_family, tmp_path, use_cache=False).from_cache
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    assert analysis_cache_dir() == tmp_path / "env-cache" / "analysis"
    assert not _run(model_family, tmp_path, cache_dir=None).from_cache
    assert list((tmp_path / "env-cache" / "analysis").glob("*.json"))
    assert analysis_cache_dir(tmp_path / "arg") == tmp_path / "arg" / "analysis"


def test_changed_weights_miss_the_cache(tmp_path: Path) -> None:
    base = _write(tmp_path / "base", {"w": torch.zeros(8, 8)})
    tuned = _write(tmp_path / "ft", {"w": torch.ones(8, 8)})
    first = analyze(base, [tuned], 0.5, cache_dir=tmp_path / "cache")
    _write(tuned, {"w": torch.full((8, 8), 2.0)})
    second = analyze(base, [tuned], 0.5, cache_dir=tmp_path / "cache")
    assert not second.from_cache and second.overall()["norm"][0] == pytest.approx(16.0)
    assert first.overall()["norm"][0] == pytest.approx(8.0)


def test_mismatched_tensors_are_skipped_with_a_reason(tmp_path: Path) -> None:
    base = _write(tmp_path / "base", {"a": torch.zeros(4, 4), "b": torch.zeros(3), "c": torch.zeros(2)})
    tuned = _write(tmp_path / "ft", {"a": torch.ones(4, 4), "b": torch.ones(5), "d": torch.ones(2)})
    report = analyze(base, [tuned], 0.5, cache_dir=tmp_path / "cache")
    assert [t.name for t in report.tensors] == ["a"]
    reasons = {s["name"]: s["reason"] for s in report.skipped}
    assert "shape" in reasons["b"] and "missing" in reasons["c"] and "not in the base" in reasons["d"]
    with pytest.raises(MergeStudioError, match="density"):
        analyze(base, [tuned], 1.5, cache_dir=tmp_path / "cache")


def test_tensor_details_find_the_conflicting_rows(tmp_path: Path) -> None:
    rows, cols = 12, 20
    first = torch.ones(rows, cols)
    second = torch.ones(rows, cols)
    second[7] = -1.0  # row 7 fights everywhere
    second[2, :5] = -1.0  # row 2 a little
    base = _write(tmp_path / "base", {"m.weight": torch.zeros(rows, cols)})
    models = [_write(tmp_path / "a", {"m.weight": first}), _write(tmp_path / "b", {"m.weight": second})]
    details = tensor_details(base, models, "m.weight", density=1.0, top_rows=3)
    assert [(r.row, r.conflicts, r.contested) for r in details.top_rows] == [(7, 20, 20), (2, 5, 20)]
    assert details.top_rows[0].rate == 1.0
    assert details.row_conflict_rate[0] == 0.0 and details.row_conflict_rate[7] == 1.0
    assert details.summary["sign_conflict_rate"]["overall"] == pytest.approx(25 / 240)
    assert details.histograms.shape == (2, len(details.histogram_edges) + 1)
    assert details.spectra is not None and details.spectra[0]["effective_rank"] == 1


def test_analysis_is_qt_free_and_its_cli_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import mergestudio.cli.analyze_cmd\n"
        "print('torch' in sys.modules)\n"
        "import mergestudio.analysis\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'PySide6', 'pyqtgraph', 'mergestudio_qt'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["False", "[]"]
