"""How long a merge will take, before it runs: reading, the method's arithmetic, writing.

The rates come from this machine, measured once and kept in the studio cache
(``<cache>/estimate/calibration.json``, keyed by host, cores and torch version):

- the engine itself, by real ``linear`` merges in the cache folder (the files in the page
  cache, as after a download or a previous merge): 8 and 128 tiny tensors give a folder
  merge's fixed cost (plan, staging folder, side files, rename) and the executor's cost
  per tensor; 8 tensors of 512×512 bfloat16 from two models give the cost per element
  read (map, convert, stack) or written (convert, write), one rate for both;
- each method, the first time a dry run uses it: its function on three 256×1024 float32
  models and a base with its default parameters (density 0.5 where it has one) after a
  warm-up call (numba's compilation does not count, though the first dry run waits for
  it), giving seconds per input element, and on a tiny tensor, the fixed cost per tensor.

A merge's time is the fixed cost + reading (input elements) + compute (tensors, and the
method's ``per_tensor + per_element × inputs × elements``, the matrix families —
spectral decompositions, KnOTS — scaled by the tensor's smaller side over the
calibration's, as an SVD costs m·n·min(m, n)) + writing (output elements). Measured from
whole merges, the engine terms already include how reading ahead and the writer thread
overlap. Compute runs on one CPU thread, as merges do by default; other devices are
estimated as the CPU; a cold disk reads slower than estimated.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.engine.device import torch_threads

if TYPE_CHECKING:
    from mergestudio.engine.plan import MergePlan
    from mergestudio.methods.registry import MethodSpec

FORMAT = 3
_PROBE_BYTES = 32 * 1024 * 1024
_ROWS, _COLS = 256, 1024  # the calibration tensor
_MODELS = 3
_PROBE_SIDE = 512  # the engine probe's large tensors
# Families whose methods decompose each matrix: cost grows with its smaller side too.
MATRIX_FAMILIES = frozenset({"spectral", "adapter space"})


@dataclass(frozen=True)
class MethodRate:
    seconds_per_element: float  # per input element (models and base)
    seconds_per_tensor: float


@dataclass(frozen=True)
class EngineRates:
    merge_s: float  # a folder merge's fixed cost: plan, staging folder, side files, rename
    tensor_s: float  # the executor's cost per tensor beyond the method's
    input_element_s: float  # per element of each input: map, convert, stack
    output_element_s: float  # per output element: convert, hand to the writer, write (measured as the same rate)


@dataclass(frozen=True)
class Calibration:
    machine: str
    engine: EngineRates
    methods: dict[str, MethodRate]


@dataclass(frozen=True)
class TimeEstimate:
    read_s: float
    compute_s: float  # the method's arithmetic and the executor's per-tensor work
    write_s: float
    overhead_s: float = 0.0  # fixed: planning, the staging folder, side files

    @property
    def total_s(self) -> float:
        return self.overhead_s + self.read_s + self.compute_s + self.write_s

    def describe(self) -> str:
        """One line: ``≈ 12 s (read 4.1 s, compute 6.0 s, write 2.2 s)``."""
        parts = [f"read {_seconds(self.read_s)}", f"compute {_seconds(self.compute_s)}"]
        if self.write_s:
            parts.append(f"write {_seconds(self.write_s)}")
        return f"≈ {_seconds(self.total_s)} ({', '.join(parts)})"


def combined(estimates: Sequence[TimeEstimate]) -> TimeEstimate:
    """Stages run one after another: their times add up."""
    return TimeEstimate(
        read_s=sum(e.read_s for e in estimates),
        compute_s=sum(e.compute_s for e in estimates),
        write_s=sum(e.write_s for e in estimates),
        overhead_s=sum(e.overhead_s for e in estimates),
    )


def estimate_time(plan: MergePlan, *, write: bool = True, cache_dir: str | Path | None = None) -> TimeEstimate:
    """The plan's time on this machine; ``write=False`` for a merge held in memory (an
    Evolve candidate). Calibrates first when this machine or the method has no rates."""
    calibration = calibrated(plan.method, cache_dir)
    rate, engine = calibration.methods[plan.method.name], calibration.engine
    compute = engine.tensor_s * len(plan.tensors)
    input_elements = output_elements = 0
    for planned in plan.tensors:
        input_elements += len(planned.all_inputs()) * planned.numel
        output_elements += planned.numel
        if planned.copy_from is not None:
            continue
        inputs = len(planned.all_inputs())
        scale = _matrix_scale(planned.shape) if plan.method.family in MATRIX_FAMILIES else 1.0
        compute += rate.seconds_per_tensor + rate.seconds_per_element * inputs * planned.numel * scale
    read_s = engine.input_element_s * input_elements
    if not write:  # in memory: no folder, nothing written
        return TimeEstimate(read_s, compute, 0.0, 0.0)
    return TimeEstimate(read_s, compute, engine.output_element_s * output_elements, engine.merge_s)


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
        calibration = Calibration(machine_key(), measure_engine(path.parent), {})
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
        return Calibration(data["machine"], EngineRates(**data["engine"]), methods)
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


def measure_engine(folder: Path) -> EngineRates:
    """The engine's own rates from real ``linear`` merges in ``folder`` (each timed once,
    after a warm-up): see the module's docstring."""
    with tempfile.TemporaryDirectory(dir=_made(folder), prefix=".probe-") as temporary:
        root = Path(temporary)
        few = _probe_merge(root, models=2, tensors=8, side=8)
        many = _probe_merge(root, models=2, tensors=128, side=8)
        large = _probe_merge(root, models=2, tensors=8, side=_PROBE_SIDE)
    per_tensor = max(many - few, 0.0) / 120
    # Each element is touched three times (two inputs read, one output written); one
    # rate for all three: separate rates from two more merges were mostly noise here.
    per_element = max(large - few, 0.0) / (3 * 8 * _PROBE_SIDE * _PROBE_SIDE)
    return EngineRates(max(few - 8 * per_tensor, 0.0), per_tensor, per_element, per_element)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _probe_merge(root: Path, *, models: int, tensors: int, side: int) -> float:
    """Seconds of a ``linear`` merge of ``models`` bfloat16 models of ``tensors`` side×side
    tensors, written and read in ``root``."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from mergestudio.engine.merge import merge

    entries = []
    for seed in range(models):
        model = root / f"m{models}-{tensors}-{side}-{seed}"
        model.mkdir(parents=True)
        generator = torch.Generator().manual_seed(seed)
        weights = {f"t{i}": torch.randn(side, side, generator=generator).to(torch.bfloat16) for i in range(tensors)}
        save_file(weights, str(model / "model.safetensors"))
        entries.append({"model": str(model), "parameters": {"weight": 1.0 / models}})
    recipe = {"merge_method": "linear", "models": entries}
    best = 0.0
    for attempt in range(2):
        out = root / f"out-{attempt}"
        start = time.perf_counter()
        merge(recipe, out, device="cpu", allow_no_config=True)
        if attempt:  # the first warms lazy imports and the page cache
            best = time.perf_counter() - start
        shutil.rmtree(out)
    return best


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
