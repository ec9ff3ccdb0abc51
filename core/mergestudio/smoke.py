"""``mergestudio --smoke``: prove in a few seconds that an installation works end to end.

It imports the heavy libraries, builds the studio's main window offscreen, starts a
child process the way a search does, merges two demo models in memory, evaluates one
task item on the merge, and prints one line with versions and timings. The same command
runs on the frozen (PyInstaller) binary, where it catches what only breaks there: a
module or Qt plugin left out of the bundle, data files not found, a missing system
library, child processes that cannot start.

A failure anywhere prints the stage and the reason and exits 1. The engine never imports
Qt: the window stage runs what the front end registered under the ``mergestudio.smoke``
entry point (``mergestudio_qt.smoke_window``).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mergestudio import __version__
from mergestudio.plugins import SMOKE_GROUP, entry_points

if TYPE_CHECKING:
    import torch

# (label, distribution name, import name) of what the one-line report shows.
REPORTED_LIBRARIES = (
    ("torch", "torch", "torch"),
    ("transformers", "transformers", "transformers"),
    ("numpy", "numpy", "numpy"),
    ("numba", "numba", "numba"),
    ("PySide6", "PySide6-Essentials", "PySide6"),
    ("pyqtgraph", "pyqtgraph", "pyqtgraph"),
)
HEAVY_MODULES = (
    "numpy",
    "torch",
    "safetensors",
    "transformers",
    "tokenizers",
    "PySide6.QtWidgets",
    "pyqtgraph",
)


class SmokeFailure(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass
class SmokeReport:
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; turn any exception in it into a ``SmokeFailure`` naming it."""
        start = time.perf_counter()
        try:
            yield
        except SmokeFailure:
            raise
        except BaseException as error:  # SystemExit from a library counts as a failure too
            raise SmokeFailure(name, f"{type(error).__name__}: {error}") from error
        finally:
            self.timings[name] = time.perf_counter() - start

    def line(self) -> str:
        versions = " ".join(f"{k} {v}" for k, v in self.facts.items() if k.startswith("v:")).replace("v:", "")
        facts = " ".join(f"{k}={v}" for k, v in self.facts.items() if not k.startswith("v:"))
        timings = " ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        return f"mergestudio {__version__} smoke ok | {versions} | {facts} | {timings}"


def library_versions(libraries: tuple[tuple[str, str, str], ...] = REPORTED_LIBRARIES) -> dict[str, str]:
    """Version of each (label, distribution, module). Package metadata first (cheap, no
    import); then the module's ``__version__`` (a frozen bundle may lack metadata)."""
    versions: dict[str, str] = {}
    for label, distribution, module in libraries:
        try:
            versions[label] = metadata.version(distribution)
            continue
        except metadata.PackageNotFoundError:
            pass
        try:
            versions[label] = str(getattr(importlib.import_module(module), "__version__", "?"))
        except ImportError:
            versions[label] = "missing"
    return versions


def run_smoke(out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run every stage; print the report line (exit 0) or the failing stage (exit 1)."""
    out = out or sys.stdout
    err = err or sys.stderr
    # One line is the contract: no download/loading progress bars from the HF libraries.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    report = SmokeReport()
    report.timings["boot"] = _seconds_since_process_start()
    try:
        _run_stages(report)
    except SmokeFailure as failure:
        traceback.print_exception(failure.__cause__ or failure, file=err)
        print(f"mergestudio {__version__} smoke FAILED at {failure.stage}: {failure.reason}", file=err)
        return 1
    report.timings["total"] = report.timings["boot"] + sum(
        v for k, v in report.timings.items() if k != "boot"
    )
    print(report.line(), file=out, flush=True)
    return 0


def _run_stages(report: SmokeReport) -> None:
    with report.stage("import"):
        for module in HEAVY_MODULES:
            importlib.import_module(module)
        report.facts["python"] = ".".join(map(str, sys.version_info[:3]))
        report.facts.update({f"v:{k}": v for k, v in library_versions().items()})
        report.facts["frozen"] = "yes" if getattr(sys, "frozen", False) else "no"
    with report.stage("window"):
        report.facts["platform"], report.facts["window"] = _build_window()
    with report.stage("search-process"):
        from mergestudio.search.process import check_child_process

        report.facts["search-process"] = check_child_process().replace(" ", "-")
    with tempfile.TemporaryDirectory(prefix="mergestudio-smoke-") as scratch:
        with report.stage("zoo"):
            zoo, report.facts["zoo"] = _find_or_make_zoo(Path(scratch))
        with report.stage("merge"):
            merged = _merge_two(zoo)
            report.facts["merged"] = f"{'+'.join(merged.models)}({len(merged.tensors)}t)"
        with report.stage("eval"):
            report.facts["eval"] = _evaluate_one_item(zoo, merged)


# -- window -------------------------------------------------------------------------------


def _build_window() -> tuple[str, str]:
    """Run the front end's smoke stages (building and painting its windows). Returns the
    platform and what was built; an installation without a front end fails here, since
    the smoke test vouches for the studio."""
    stages = entry_points(SMOKE_GROUP)
    if not stages:
        raise RuntimeError("no front end registered (install 'mergestudio[app]')")
    results = [point.load()() for point in stages]
    return results[0][0], "+".join(built for _, built in results)


# -- demo zoo, merge, evaluation -------------------------------------------------------------


@dataclass(frozen=True)
class MergedInMemory:
    base: Path
    models: list[str]  # the specialists' folder names
    tensors: dict[str, torch.Tensor]


def _find_or_make_zoo(scratch: Path) -> tuple[Path, str]:
    """The bundled demo zoo, or (when it is not there, e.g. a checkout without it) a
    miniature zoo built in ``scratch`` by the same pipeline. The second value says which."""
    from mergestudio.demo import paths

    zoo = paths.default_zoo_dir()
    if _specialists(zoo):
        return zoo, "demo"
    from mergestudio.demo.build import ZooConfig, build_zoo

    build_zoo(scratch, ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return scratch, f"generated(no demo zoo at {zoo})"


def _specialists(zoo: Path) -> list[Path]:
    from mergestudio.demo import paths

    models = paths.models_dir(zoo)
    if not (models / "base").is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and p.name != "base")


def _merge_two(zoo: Path) -> MergedInMemory:
    """TIES of the first two specialists on the base, into memory: a sparsifying method,
    so the compiled kernels (numba) are proven to work in this installation."""
    from mergestudio.demo import paths
    from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe

    base = paths.models_dir(zoo) / "base"
    chosen = _specialists(zoo)[:2]
    if len(chosen) < 2:
        raise RuntimeError(f"{zoo}: fewer than two specialist models to merge")
    recipe = load_recipe(
        {
            "merge_method": "ties",
            "base_model": str(base),
            "models": [{"model": str(p), "parameters": {"weight": 1.0, "density": 0.5}} for p in chosen],
            "dtype": "float32",
        }
    )
    plan = build_plan(recipe)
    target = DictTarget()
    try:
        execute_plan(plan, target, device="cpu")
    finally:
        plan.close()
    return MergedInMemory(base, [p.name for p in chosen], target.tensors)


def _evaluate_one_item(zoo: Path, merged: MergedInMemory) -> str:
    """Load the base's architecture, overwrite its weights with the merge, and score the
    first item of the first merged specialist's evaluation task."""
    from mergestudio.demo import paths
    from mergestudio.evaluate import CausalLM, evaluate_tasks, load_task
    from mergestudio.evaluate.resident import ModuleTarget

    task_files = paths.eval_task_files(zoo)
    if not task_files:
        raise RuntimeError(f"{paths.tasks_dir(zoo)}: no *.test.jsonl task files")
    skill_file = paths.task_file(zoo, merged.models[0], "test").name
    task_file = next((f for f in task_files if f.name == skill_file), task_files[0])
    lm = CausalLM.load(merged.base, device="cpu", dtype="float32")
    target = ModuleTarget(lm.model)
    for name, tensor in merged.tensors.items():
        target.accept(name, tensor)
    if target.missing():
        raise RuntimeError(f"the merge left parameters unset: {target.missing()[:3]}")
    result = evaluate_tasks(lm, [load_task(task_file)], limit=1, batch_size=1).tasks[0]
    metric = result.primary_metric
    return f"{result.task}[{result.items[0].id}]:{metric}={result.metrics[metric]:.3g}"


def _seconds_since_process_start() -> float:
    """Time from the process's creation to here: interpreter start-up, or the frozen
    bootloader unpacking and starting Python."""
    try:
        import psutil

        return max(0.0, time.time() - float(psutil.Process().create_time()))
    except Exception:  # psutil missing or no /proc: the number is informative only
        return 0.0
