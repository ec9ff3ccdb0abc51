"""The cost of the non-finite scan: the same merge with the scan and with it switched off,
alternating, on a synthetic Llama family (134M parameters by default, bf16).

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


def _timed_merge(recipe: dict[str, object], out: Path, scan: bool) -> float:
    from mergestudio.engine import execute
    from mergestudio.engine.merge import merge

    original = execute._NonFiniteGuard.scan_inputs, execute._NonFiniteGuard.check_result
    if not scan:
        execute._NonFiniteGuard.scan_inputs = lambda *_: None  # type: ignore[method-assign]
        execute._NonFiniteGuard.check_result = lambda *_: None  # type: ignore[method-assign]
    try:
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        merge(recipe, out, device="cpu", overwrite=True)
        return time.perf_counter() - started
    finally:
        execute._NonFiniteGuard.scan_inputs, execute._NonFiniteGuard.check_result = original


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
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for scan in (False, True):
                times[scan].append(_timed_merge(recipe, out, scan))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"{method:16} scan off {off:6.2f} s  scan on {on:6.2f} s  cost {100 * (on - off) / off:+5.1f} %"
            f"  (runs: off {[round(t, 2) for t in times[False]]}, on {[round(t, 2) for t in times[True]]})"
        )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
