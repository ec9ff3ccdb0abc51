"""Throughput of the demo search with 1 and with 2 local workers (``evolve --workers N``),
one torch thread each.

    python benchmarks/search_workers.py [--spec resources/demo/search.yml] [--evaluations 24]
        [--workers 1 2] [--backend local|ray] [--json out.json]

For each worker count: the wall time of the whole command (worker start-up included), and
the steady rate: complete trials per minute between the first and the last trial's end,
read from the study's timestamps (start-up, which is mostly importing torch and loading
the models once per worker, left out). On a machine with fewer free cores than workers the
second worker only shares the first one's core: the rate then cannot double.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=Path("resources/demo/search.yml"))
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="ray: a local Ray")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()

    results = [_measure(args.spec, args.evaluations, count, args.backend) for count in args.workers]
    report: dict[str, Any] = {
        "evaluations": args.evaluations,
        "backend": args.backend,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "runs": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _measure(spec: Path, evaluations: int, workers: int, backend: str) -> dict[str, Any]:
    from mergestudio.search.store import RunFolder

    run = Path(tempfile.mkdtemp(prefix=f"workers{workers}-")) / "run"
    command = [
        sys.executable, "-m", "mergestudio.cli.main", "evolve", str(spec), str(run),
        "--workers", str(workers), "--threads", "1", "--evaluations", str(evaluations), "-q", "--json",
        "--backend", backend,
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    trials = RunFolder(run).open_study().get_trials(deepcopy=False)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.state.name == "COMPLETE" and t.datetime_complete)
    complete = len(ends)
    span_s = ends[-1] - ends[0] if complete > 1 else float("nan")
    per_worker: dict[str, int] = {}
    for t in trials:
        if t.state.name == "COMPLETE":
            name = str(t.user_attrs.get("worker", {}).get("name", "?"))
            per_worker[name] = per_worker.get(name, 0) + 1
    shutil.rmtree(run.parent, ignore_errors=True)
    return {
        "workers": workers,
        "complete_trials": complete,
        "wall_s": round(wall_s, 1),
        "steady_trials_per_min": round(60 * (complete - 1) / span_s, 1) if complete > 1 else None,
        "trials_per_worker": per_worker,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


if __name__ == "__main__":
    main()
