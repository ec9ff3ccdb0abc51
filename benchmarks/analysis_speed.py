"""Time ``mergestudio analyze`` (base + 3 fine-tunes) on the synthetic Llama family of
merge_speed.py: wall time, the analysis's own time, peak anonymous memory, and how many
matrices got a spectrum. The cache is bypassed (--no-cache, a fresh cache folder). CPU seconds are reported too:
on a machine shared with other work they are closer to what an idle machine's wall
time would be.

    python benchmarks/analysis_speed.py --shape 134m
    python benchmarks/analysis_speed.py --shape 1.1b --spectra none --spectra auto
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, write_family
from benchmarks.merge_speed import WORK, run_timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="134m")
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument(
        "--spectra", action="append", choices=("auto", "all", "sample", "none"),
        help="spectra modes to time, one run each (default: none and auto)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    family = write_family(args.work / args.shape, shape)
    mergestudio = str(Path(sys.executable).with_name("mergestudio"))
    print(f"{shape.name}: {shape.parameters / 1e9:.2f}B parameters, base + {len(family) - 1} fine-tunes, bf16, "
          f"{args.threads} thread(s)")
    results = []
    for spectra in args.spectra or ["none", "auto"]:
        with tempfile.TemporaryDirectory() as scratch:
            report_path = Path(scratch) / "analysis.json"
            command = [
                mergestudio, "analyze", "--base", str(family[0]), *map(str, family[1:]),
                "--density", str(args.density), "--spectra", spectra, "--threads", str(args.threads),
                "--json", str(report_path), "--no-cache", "--cache-dir", scratch, "-q",
            ]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            timing = run_timed(command, "mergestudio", f"analyze/{spectra}", None)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds tell more than wall time on a machine shared with other work.
            cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            report = json.loads(report_path.read_text()) if timing.returncode == 0 else {}
        row = {
            "shape": shape.name,
            "spectra": spectra,
            "wall_s": round(timing.seconds, 2),
            "cpu_s": round(cpu_s, 2),
            "analysis_s": round(report.get("elapsed_s", float("nan")), 2),
            "peak_anon_mb": round(timing.peak_anon_mb),
            "spectra_matrices": len(report.get("spectra", {}).get("results", [])),
            "sign_conflict_rate": report.get("sign_conflict_rate", {}).get("overall"),
            "returncode": timing.returncode,
        }
        results.append(row)
        print(f"  spectra={spectra:6} wall {row['wall_s']:7.2f} s  cpu {row['cpu_s']:7.2f} s  "
              f"analysis {row['analysis_s']:7.2f} s  "
              f"peak anon {row['peak_anon_mb']:6} MB  spectra of {row['spectra_matrices']} matrices", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
