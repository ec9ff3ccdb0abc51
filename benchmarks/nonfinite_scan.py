"""The cost of the non-finite scan: the same merge with the scan and with it switched off,
alternating, on a synthetic Llama family (134M parameters by default, bf16). Reports the
median CPU time of the process (steadier than wall time on a shared machine) and wall time.

    python benchmarks/nonfinite_scan.py --shape 134m --methods linear,ties --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, write_family
from benchmarks.merge_speed import WORK, recipe_for


def _timed_merge(recipe: dict[str, object], out: Path, scan: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one merge."""
    from mergestudio.engine import execute
    from mergestudio.engine.merge import merge

    original = execute._NonFiniteGuard.wants_input_scan, execute._NonFiniteGuard.check_result
    if not scan:
        execute._NonFiniteGuard.wants_input_scan = lambda *_: False  # type: ignore[method-assign]
        execute._NonFiniteGuard.check_result = lambda *_: None  # type: ignore[method-assign]
    try:
        shutil.rmtree(out, ignore_errors=True)
        cpu, wall = time.process_time(), time.perf_counter()
        merge(recipe, out, device="cpu", overwrite=True)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        execute._NonFiniteGuard.wants_input_scan, execute._NonFiniteGuard.check_result = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="134m")
    parser.add_argument("--methods", default="linear,ties")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    folders = write_family(args.work / args.shape, SHAPES[args.shape])
    out = args.work / "scan-out"
    for method in args.methods.split(","):
        recipe = recipe_for(method, folders)
        _timed_merge(recipe, out, scan=True)  # warm the page cache
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(args.repeats):
            for scan in (False, True):
                times[scan].append(_timed_merge(recipe, out, scan))
        for index, what in ((0, "CPU"), (1, "wall")):
            off = statistics.median(t[index] for t in times[False])
            on = statistics.median(t[index] for t in times[True])
            print(
                f"{method:16} {what:4} scan off {off:6.2f} s  on {on:6.2f} s  cost {100 * (on - off) / off:+5.1f} %"
            )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
