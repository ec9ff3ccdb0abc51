"""The dry run's time estimate against the merge's measured time: three methods from
three families (linear: averaging; ties: sparse task arithmetic; tsv: spectral) on two
synthetic Llama sizes, in one process (imports and numba compilation done before timing).

    python benchmarks/estimate_accuracy.py --shapes tiny,30m --methods linear,ties,tsv

Calibration runs first, in a fresh cache folder (its time is printed); each merge is then
timed from ``merge()``'s call to its return (plan, read, compute, write, rename) with the
inputs in the page cache, as the calibration assumes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, LlamaShape, write_family

WORK = Path(__file__).resolve().parent / "_work"
# A size between "tiny" and "134m" at which a spectral merge still takes seconds, not minutes.
SIZES = {**SHAPES, "30m": LlamaShape("30m", 512, 8, 1376, 8000, 8, 8)}
_PARAMETERS = {
    "linear": {"weight": 0.5},
    "ties": {"weight": 0.5, "density": 0.5},
    "tsv": {},
}


def recipe_for(method: str, folders: list[Path]) -> dict[str, object]:
    models = [{"model": str(f), "parameters": _PARAMETERS.get(method, {})} for f in folders[1:]]
    if not _PARAMETERS.get(method):
        models = [{"model": str(f)} for f in folders[1:]]
    recipe: dict[str, object] = {"merge_method": method, "models": models, "dtype": "bfloat16"}
    if method != "linear":
        recipe["base_model"] = str(folders[0])
    return recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,30m", help=f"any of {', '.join(SIZES)}")
    parser.add_argument("--methods", default="linear,ties,tsv")
    args = parser.parse_args()

    import os

    cache = Path(tempfile.mkdtemp(prefix="estimate-cache-"))
    os.environ["MERGESTUDIO_CACHE_DIR"] = str(cache)
    from mergestudio.engine.estimate import calibrated, estimate_time
    from mergestudio.engine.merge import merge, plan_folder_merge
    from mergestudio.methods.registry import get_method

    methods = args.methods.split(",")
    for method in methods:
        started = time.perf_counter()
        calibrated(get_method(method))
        print(f"calibration for {method}: {time.perf_counter() - started:.1f} s")
    rows = []
    for shape_name in args.shapes.split(","):
        folders = write_family(WORK / f"estimate-{shape_name}", SIZES[shape_name], fine_tunes=2)
        for method in methods:
            recipe = recipe_for(method, folders)
            out = WORK / f"estimate-out-{shape_name}-{method}"
            shutil.rmtree(out, ignore_errors=True)
            merge(recipe, out, device="cpu", overwrite=True)  # warm-up: page cache, lazy imports
            shutil.rmtree(out)
            plan = plan_folder_merge(recipe, None)
            predicted = estimate_time(plan)
            plan.close()
            started = time.perf_counter()
            merge(recipe, out, device="cpu")
            actual = time.perf_counter() - started
            shutil.rmtree(out)
            rows.append((shape_name, method, predicted, actual))
            print(f"{shape_name:6} {method:8} predicted {predicted.describe():60} actual {actual:7.2f} s "
                  f"ratio {predicted.total_s / actual:.2f}")
    print("\n| shape | method | predicted (read / compute / write) | actual | predicted ÷ actual |")
    print("|---|---|---|---|---|")
    for shape_name, method, predicted, actual in rows:
        print(f"| {shape_name} | {method} | {predicted.total_s:.2f} s ({predicted.read_s:.2f} / "
              f"{predicted.compute_s:.2f} / {predicted.write_s:.2f}) | {actual:.2f} s | "
              f"{predicted.total_s / actual:.2f} |")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
