"""How long a merge will take, before it runs: reading, the method's arithmetic, writing.

The rates come from this machine, measured once and kept in the studio cache
(``<cache>/estimate/calibration.json``, keyed by host, cores and torch version):

- reading: a 32 MB bfloat16 safetensors file read as the executor reads (memory map,
  conversion into a float32 buffer); writing: the same bytes written as the shard writer
  writes them, left to the OS to flush as merges do. Both run on the cache folder's disk
  with the file in the page cache, so reading from a cold disk is slower than estimated.
- each method, the first time a dry run uses it: its function on three 256×1024 float32
  models and a base with its default parameters (density 0.5 where it has one) after a
  warm-up call (numba's compilation does not count, though the first dry run waits for
  it), giving seconds per input element, and on a tiny tensor, the fixed cost per tensor.

- the engine around the methods: real ``linear`` merges of 8 and of 128 tiny tensors,
  giving a folder merge's fixed cost (plan, staging folder, side files, rename) and the
  executor's cost per tensor.

A merge's time is its fixed cost plus its slowest stage (reading ahead, compute and the
shard writer's thread overlap): reading is the bytes to read over the read rate, writing the output bytes
over the write rate, compute the sum over merged tensors of ``per_tensor + per_element ×
inputs × elements``, with the matrix families (spectral decompositions, KnOTS) scaled by the
tensor's smaller side over the calibration's (an SVD costs m·n·min(m, n)). Compute runs
on one CPU thread, as merges do by default; other devices are estimated as the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.engine.device import torch_threads

if TYPE_CHECKING:
    from mergestudio.engine.plan import MergePlan
    from mergestudio.methods.registry import MethodSpec

FORMAT = 2
_PROBE_BYTES = 32 * 1024 * 1024
_ROWS, _COLS = 256, 1024  # the calibration tensor
_MODELS = 3
# Families whose methods decompose each matrix: cost grows with its smaller side too.
MATRIX_FAMILIES = frozenset({"spectral", "adapter space"})


@dataclass(frozen=True)
class MethodRate:
    seconds_per_element: float  # per input element (models and base)
    seconds_per_tensor: float


@dataclass(frozen=True)
class Calibration:
    machine: str
    read_bytes_per_s: float
    write_bytes_per_s: float
    merge_overhead_s: float  # a folder merge's fixed cost: plan, staging folder, side files, rename
    tensor_overhead_s: float  # the executor's cost per tensor beyond the method's
    methods: dict[str, MethodRate]


@dataclass(frozen=True)
class TimeEstimate:
    read_s: float
    compute_s: float  # the method's arithmetic and the executor's per-tensor work
    write_s: float
    overhead_s: float = 0.0  # fixed: planning, the staging folder, side files

    @property
    def total_s(self) -> float:
        """The fixed cost plus the slowest stage: the executor reads ahead while it
        computes, and the shard writer writes on its own thread, so the three overlap."""
        return self.overhead_s + max(self.read_s, self.compute_s, self.write_s)

    def describe(self) -> str:
        """One line: ``≈ 12 s (read 4.1 s, compute 6.0 s, write 2.2 s)``."""
        parts = [f"read {_seconds(self.read_s)}", f"compute {_seconds(self.compute_s)}"]
        if self.write_s:
            parts.append(f"write {_seconds(self.write_s)}")
        return f"≈ {_seconds(self.total_s)} ({', '.join(parts)})"


def estimate_time(plan: MergePlan, *, write: bool = True, cache_dir: str | Path | None = None) -> TimeEstimate:
    """The plan's time on this machine; ``write=False`` for a merge held in memory (an
    Evolve candidate). Calibrates first when this machine or the method has no rates."""
    calibration = calibrated(plan.method, cache_dir)
    rate = calibration.methods[plan.method.name]
    estimate = plan.estimate()
    compute = calibration.tensor_overhead_s * len(plan.tensors)
    for planned in plan.tensors:
        if planned.copy_from is not None:
            continue
        inputs = len(planned.all_inputs())
        scale = _matrix_scale(planned.shape) if plan.method.family in MATRIX_FAMILIES else 1.0
        compute += rate.seconds_per_tensor + rate.seconds_per_element * inputs * planned.numel * scale
    write_s = estimate.output_bytes / calibration.write_bytes_per_s if write else 0.0
    overhead = calibration.merge_overhead_s if write else 0.0
    return TimeEstimate(estimate.bytes_to_read / calibration.read_bytes_per_s, compute, write_s, overhead)


def _matrix_scale(shape: tuple[int, ...]) -> float:
    if len(shape) < 2:
        return 1.0
    return min(shape[0], math.prod(shape[1:])) / min(_ROWS, _COLS)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# ---- calibration ----------------------------------------------------------------------------


def calibration_path(cache_dir: str | Path | None = None) -> Path:
    from mergestudio.analysis.cache import cache_root

    return cache_root(cache_dir) / "estimate" / "calibration.json"


def machine_key() -> str:
    import torch

    return f"{platform.node()}|{os.cpu_count()}|torch {torch.__version__}|format {FORMAT}"


def calibrated(method: MethodSpec, cache_dir: str | Path | None = None) -> Calibration:
    """This machine's rates, measuring what is missing (I/O once, each method once) and
    storing them; an unreadable or foreign file is measured again."""
    path = calibration_path(cache_dir)
    calibration = _load(path)
    if calibration is None:
        read, write = measure_io(path.parent)
        merge_overhead, tensor_overhead = measure_engine(path.parent)
        calibration = Calibration(machine_key(), read, write, merge_overhead, tensor_overhead, {})
    if method.name not in calibration.methods:
        methods = {**calibration.methods, method.name: measure_method(method)}
        calibration = replace(calibration, methods=methods)
        _store(path, calibration)
    return calibration


def _load(path: Path) -> Calibration | None:
    try:
        data = json.loads(path.read_text())
        if data.get("machine") != machine_key():
            return None
        methods = {name: MethodRate(**rate) for name, rate in data["methods"].items()}
        return Calibration(**{**data, "methods": methods})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, calibration: Calibration) -> None:
    """Atomically (a temp file renamed), so two dry runs at once never see half a file;
    a cache folder that cannot be written just means measuring again next time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
            json.dump(asdict(calibration), handle, indent=2)
        os.replace(handle.name, path)


def measure_io(folder: Path) -> tuple[float, float]:
    """(read, write) bytes per second for 32 MB of bfloat16 in ``folder``, each done the
    engine's way: reading is a zero-copy view of a safetensors memory map converted into a
    reused float32 buffer; writing is the tensor's bytes handed to the file, as the shard
    writer does (no fsync: merges leave flushing to the OS). Best of two passes (the first
    faults the buffer in)."""
    import torch
    from safetensors.torch import save_file

    from mergestudio.io.sources import open_model

    folder.mkdir(parents=True, exist_ok=True)
    data = torch.randn(_PROBE_BYTES // 2 // 1024, 1024).to(torch.bfloat16)
    buffer = torch.empty(data.shape, dtype=torch.float32)
    raw = data.reshape(-1).view(torch.uint8).numpy().data
    read_s = write_s = math.inf
    with _probe_file(folder, ".safetensors") as probe, _probe_file(folder, ".bin") as written:
        save_file({"probe": data}, str(probe))
        source = open_model(probe)
        try:
            for _ in range(2):
                start = time.perf_counter()
                buffer.copy_(source.read("probe"))
                read_s = min(read_s, time.perf_counter() - start)
                start = time.perf_counter()
                with written.open("wb") as handle:
                    handle.write(raw)
                write_s = min(write_s, time.perf_counter() - start)
        finally:
            source.close()
    nbytes = data.numel() * data.element_size()
    return nbytes / max(read_s, 1e-6), nbytes / max(write_s, 1e-6)


def measure_engine(folder: Path) -> tuple[float, float]:
    """(seconds per folder merge, seconds per tensor) of the engine around the methods:
    real ``linear`` merges of two models with 8 and with 128 tiny tensors (best of two
    each, after a warm-up), the per-tensor cost from the difference."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from mergestudio.engine.merge import merge

    def merge_seconds(root: Path, tensors: int) -> float:
        models = []
        for seed in range(2):
            model = root / f"m{tensors}-{seed}"
            model.mkdir(parents=True)
            generator = torch.Generator().manual_seed(seed)
            save_file({f"t{i}": torch.randn(8, 8, generator=generator) for i in range(tensors)},
                      str(model / "model.safetensors"))
            models.append({"model": str(model), "parameters": {"weight": 0.5}})
        recipe = {"merge_method": "linear", "models": models}
        best = math.inf
        for attempt in range(3):
            out = root / f"out{tensors}-{attempt}"
            start = time.perf_counter()
            merge(recipe, out, device="cpu", allow_no_config=True)
            if attempt:
                best = min(best, time.perf_counter() - start)
            shutil.rmtree(out)
        return best

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".probe-") as temporary:
        few, many = merge_seconds(Path(temporary), 8), merge_seconds(Path(temporary), 128)
    per_tensor = max(many - few, 0.0) / 120
    return max(few - 8 * per_tensor, 0.0), per_tensor


@contextlib.contextmanager
def _probe_file(folder: Path, suffix: str) -> Iterator[Path]:
    probe = folder / f".probe-{os.getpid()}{suffix}"
    try:
        yield probe
    finally:
        probe.unlink(missing_ok=True)


def measure_method(method: MethodSpec) -> MethodRate:
    """Seconds per input element and per tensor of ``method`` with its default parameters,
    on one CPU thread (best of three, after a warm-up)."""
    import torch

    with torch.inference_mode(), torch_threads(1):
        large = _timed(method, (_ROWS, _COLS))
        small = _timed(method, (4, 4))
    inputs = _MODELS + (1 if method.needs_base or method.optional_base else 0)
    per_element = max(large - small, 0.0) / (inputs * _ROWS * _COLS)
    return MethodRate(per_element, small)


def _timed(method: MethodSpec, shape: tuple[int, int]) -> float:
    import torch

    from mergestudio.methods.registry import MergeInputs

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=generator)
    models = base + 0.01 * torch.randn((_MODELS, *shape), generator=generator)
    params = _default_params(method)
    best = math.inf
    for attempt in range(4):  # the first call compiles (numba) and warms caches
        inputs = MergeInputs("calibration", models, base, torch.Generator().manual_seed(attempt))
        start = time.perf_counter()
        method.function(inputs, **params)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return best


# Values a typical merge uses where the default would skip the work (density 1 keeps
# every entry, so TIES/DARE would not sparsify at all).
_TYPICAL = {"density": 0.5}


def _default_params(method: MethodSpec) -> dict[str, Any]:
    """Each parameter's default (a typical value where the default skips the work);
    required ones get weights 1/n and t = 0.5."""
    params: dict[str, Any] = {}
    for param in method.params:
        value = _TYPICAL.get(param.name, param.default)
        if value is None:
            value = 1.0 / _MODELS if param.per_model else 0.5
        params[param.name] = (value,) * _MODELS if param.per_model else value
    return params


def estimate_candidate_time(recipe: Any, cache_dir: str | Path | None = None) -> TimeEstimate:
    """The time to merge one search candidate of ``recipe`` into memory (read and compute,
    nothing written): what each Evolve trial pays before it is evaluated."""
    from mergestudio.engine.merge import load_recipe
    from mergestudio.engine.plan import build_plan

    plan = build_plan(load_recipe(recipe))
    try:
        return estimate_time(plan, write=False, cache_dir=cache_dir)
    finally:
        plan.close()
