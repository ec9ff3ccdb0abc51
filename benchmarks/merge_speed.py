"""Time ``mergestudio merge`` per method on a synthetic Llama family, with wall time,
start-up to first tensor, and peak anonymous memory; the I/O floor of the same merge
(a process that only reads the recipe's input files and writes an output of the same
size); optionally the same recipe through mergekit (given by path, run as a separate
process; never a dependency of ours) and through another checkout of this studio
(``--compare-to``, e.g. main before a change); and a Markdown table of the ratios.

Every timed run starts from the same state, so the floor and the tools are compared
fairly: before each one (floor, ours, the other checkout, mergekit) the recipe's input
files are read once, untimed, so they are in the page cache, and ``sync`` writes out
dirty pages left by earlier runs, whose writeback would otherwise slow this run's
writes. (The floor used to run first, on a cold cache, and read slower than a merge.)

    python benchmarks/merge_speed.py --shape 134m --methods linear,task_arithmetic,slerp
    python benchmarks/merge_speed.py --shape 1.1b --methods all --mergekit /path/to/venv/bin/mergekit-yaml
    python benchmarks/merge_speed.py --shape 1.1b --methods linear --compare-to /path/to/main
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, write_family

WORK = Path(__file__).resolve().parent / "_work"

# One recipe per method: three fine-tunes on a base, the parameters users typically pick.
_PER_MODEL = {
    "linear": {"weight": 1.0},
    "task_arithmetic": {"weight": 0.33},
    "ties": {"weight": 1.0, "density": 0.5},
    "dare_ties": {"weight": 1.0, "density": 0.5},
    "dare_linear": {"weight": 0.33, "density": 0.5},
    "breadcrumbs": {"weight": 0.33, "density": 0.9, "gamma": 0.01},
    "breadcrumbs_ties": {"weight": 1.0, "density": 0.9, "gamma": 0.01},
    "della": {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
    "della_linear": {"weight": 0.33, "density": 0.5, "epsilon": 0.1},
    "model_stock": {},  # takes no per-model parameter
}
_TWO_MODEL = {"slerp": {"t": 0.5}, "nuslerp": {"weight": 0.5}}
# Methods mergekit has too, so both tools run the same recipe ("--methods all").
MERGEKIT_METHODS = (
    "linear,task_arithmetic,slerp,nuslerp,ties,dare_ties,dare_linear,breadcrumbs,breadcrumbs_ties,"
    "della,della_linear,model_stock,karcher"
)
# A Python program that reads every input file in 8 MB reads and writes an output file of
# the given size from what it read: the least any merge of these files has to do.
_FLOOR = """
import os, sys
out, size, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
buffer = bytearray(8 << 20)
view = memoryview(buffer)
for path in paths:
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
with open(out, "wb", buffering=0) as handle:
    left = size
    while left > 0:
        left -= handle.write(view[: min(left, len(buffer))])
"""


@dataclass
class Timing:
    tool: str
    method: str
    seconds: float
    startup_s: float | None
    peak_anon_mb: float
    returncode: int
    load: float = 0.0  # the 1-minute load average when the run started
    cpu_s: float = 0.0  # user + system CPU time of the process tree: less load-dependent than wall


def recipe_for(method: str, folders: list[Path]) -> dict[str, object]:
    base, tunes = str(folders[0]), [str(f) for f in folders[1:]]
    if method == "nuslerp":
        # Two fine-tunes' task vectors (mergekit wants two inputs besides the base).
        recipe: dict[str, object] = {
            "merge_method": method,
            "base_model": base,
            "models": [{"model": t, "parameters": _TWO_MODEL[method]} for t in tunes[:2]],
        }
    elif method in _TWO_MODEL:
        recipe = {
            "merge_method": method,
            "base_model": base,
            "models": [{"model": base}, {"model": tunes[0]}],
            "parameters": _TWO_MODEL[method] or {},
        }
    else:
        per_model = _PER_MODEL.get(method, {"weight": 1.0})
        recipe = {"merge_method": method, "models": [{"model": t, "parameters": per_model} for t in tunes]}
        if method != "linear":
            recipe["base_model"] = base
    recipe["dtype"] = "bfloat16"
    return recipe


def _anon_kb(pid: int) -> int:
    total = 0
    try:
        import psutil

        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        total += int(line.split()[1])
    except (OSError, ImportError, Exception):  # the process may have just ended
        pass
    return total


def run_timed(
    command: list[str], tool: str, method: str, startup_marker: str | None, env: dict[str, str] | None = None
) -> Timing:
    load = os.getloadavg()[0]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = 0
    startup: list[float] = []
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if startup_marker and not startup and startup_marker in line:
                startup.append(time.perf_counter() - started)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, _anon_kb(process.pid))
        time.sleep(0.02)
    reader.join()
    seconds = time.perf_counter() - started
    if process.returncode:
        print("".join(output[-20:]), file=sys.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return Timing(tool, method, seconds, startup[0] if startup else None, peak / 1024, process.returncode, load, cpu)


def _model_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _recipe_models(recipe: dict[str, object]) -> list[str]:
    models = {str(m["model"]) for m in recipe["models"]}  # type: ignore[attr-defined, index]
    if recipe.get("base_model"):
        models.add(str(recipe["base_model"]))
    return sorted(models)


def warm(recipe: dict[str, object]) -> None:
    """Untimed, before every timed run: read the recipe's input files into the page
    cache and write out dirty pages left by earlier runs (``sync``)."""
    buffer = bytearray(8 << 20)
    for model in _recipe_models(recipe):
        for path in _model_files(Path(model)):
            with open(path, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
    os.sync()


def run_floor(method: str, recipe: dict[str, object], out: Path) -> Timing:
    """The I/O floor of ``recipe``: read each input file once, write one model's bytes."""
    models = _recipe_models(recipe)
    inputs = [str(p) for model in models for p in _model_files(Path(model))]
    size = sum(p.stat().st_size for p in _model_files(Path(models[0])))
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", _FLOOR, str(out / "model.safetensors"), str(size), *inputs]
    return run_timed(command, "io-floor", method, None)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="134m")
    parser.add_argument(
        "--methods", default="linear,task_arithmetic,slerp", help="comma-separated, or 'all' (mergekit's methods)"
    )
    parser.add_argument("--mergekit", help="path to a mergekit-yaml executable to compare against")
    parser.add_argument(
        "--mergekit-methods", help="run mergekit only for these (comma-separated; default: every method)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json", type=Path, help="also write the timings here")
    parser.add_argument("--table", type=Path, help="also write the Markdown table here")
    parser.add_argument("--max-memory", help="pass --max-memory to mergestudio")
    parser.add_argument(
        "--compare-to",
        type=Path,
        help="also time another checkout of this studio (its folder, e.g. main before a change) in the same run",
    )
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    family = write_family(args.work / args.shape, shape)
    mergestudio = str(Path(sys.executable).with_name("mergestudio"))
    results: list[Timing] = []
    print(
        f"{shape.name}: {shape.parameters / 1e9:.2f}B parameters, base + {len(family) - 1} fine-tunes, bf16"
    )
    methods = MERGEKIT_METHODS if args.methods == "all" else args.methods
    for method in methods.split(","):
        recipe_path = args.work / f"recipe-{method}.yml"
        import yaml

        recipe = recipe_for(method, family)
        recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        out = args.work / f"out-{method}"
        shutil.rmtree(out, ignore_errors=True)
        warm(recipe)
        floor = run_floor(method, recipe, out)
        results.append(floor)
        _print(floor)
        shutil.rmtree(out, ignore_errors=True)
        options = ["--device", args.device] + (["--max-memory", args.max_memory] if args.max_memory else [])
        warm(recipe)
        ours = run_timed([mergestudio, "merge", str(recipe_path), str(out), *options], "mergestudio", method, "merging ")
        results.append(ours)
        _print(ours)
        shutil.rmtree(out, ignore_errors=True)
        if args.compare_to:
            warm(recipe)
            before = run_timed(
                [sys.executable, "-m", "mergestudio.cli.main", "merge", str(recipe_path), str(out), *options],
                "before",
                method,
                "merging ",
                env={**os.environ, "PYTHONPATH": str(args.compare_to.resolve() / "core")},
            )
            results.append(before)
            _print(before)
            shutil.rmtree(out, ignore_errors=True)
        if args.mergekit and (not args.mergekit_methods or method in args.mergekit_methods.split(",")):
            warm(recipe)
            theirs = run_timed(
                [args.mergekit, str(recipe_path), str(out), "--lazy-unpickle", "--out-shard-size", "5B"],
                "mergekit",
                method,
                None,
            )
            results.append(theirs)
            _print(theirs)
            if theirs.returncode == 0 and ours.returncode == 0:
                print(f"    ratio mergestudio/mergekit: {ours.seconds / theirs.seconds:.2f}")
            shutil.rmtree(out, ignore_errors=True)
    table = markdown_table(shape.name, results)
    print(table)
    if args.table:
        args.table.write_text(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.returncode == 0 for r in results) else 1


def markdown_table(shape: str, results: list[Timing]) -> str:
    """One row per method: our wall time and peak, the I/O floor, mergekit's, the ratios."""
    by_method: dict[str, dict[str, Timing]] = {}
    for timing in results:
        by_method.setdefault(timing.method, {})[timing.tool] = timing
    compared = any("before" in tools for tools in by_method.values())
    rows = [
        f"| {shape} method | ours (s) | I/O floor (s) | ours/floor | ours peak (MB) | mergekit (s) | "
        "mergekit peak (MB) | time ratio | peak ratio |"
        + (" before (s) | before/floor | before peak (MB) |" if compared else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if compared else ""),
    ]
    for method, tools in by_method.items():
        ours, floor, theirs = tools.get("mergestudio"), tools.get("io-floor"), tools.get("mergekit")
        if ours is None or ours.returncode:
            continue
        cells = [method, f"{ours.seconds:.2f}"]
        cells += [f"{floor.seconds:.2f}", f"{ours.seconds / floor.seconds:.2f}"] if floor else ["", ""]
        cells.append(f"{ours.peak_anon_mb:.0f}")
        if theirs is not None and theirs.returncode == 0:
            cells += [
                f"{theirs.seconds:.2f}",
                f"{theirs.peak_anon_mb:.0f}",
                f"{ours.seconds / theirs.seconds:.2f}",
                f"{ours.peak_anon_mb / theirs.peak_anon_mb:.2f}",
            ]
        else:
            cells += ["failed" if theirs else "", "", "", ""]
        before = tools.get("before")
        if compared and before is not None and before.returncode == 0:
            ratio = f"{before.seconds / floor.seconds:.2f}" if floor else ""
            cells += [f"{before.seconds:.2f}", ratio, f"{before.peak_anon_mb:.0f}"]
        elif compared:
            cells += ["failed" if before else "", "", ""]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _print(timing: Timing) -> None:
    startup = f"{timing.startup_s:.2f} s" if timing.startup_s is not None else "n/a"
    status = "" if timing.returncode == 0 else f"  FAILED (exit {timing.returncode})"
    print(
        f"  {timing.tool:12} {timing.method:18} {timing.seconds:7.2f} s  start-up {startup:>7}  "
        f"peak anon {timing.peak_anon_mb:7.0f} MB  cpu {timing.cpu_s:6.2f} s  load {timing.load:4.1f}{status}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
