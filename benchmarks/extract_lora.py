"""Time ``mergestudio extract-lora`` on a synthetic Llama base and fine-tune, with wall time
and peak anonymous memory; optionally ``mergekit-extract-lora`` at the same rank (given by
path, installed in its own environment; never a dependency of ours) and the ratios.

    python benchmarks/extract_lora.py --shape 134m --rank 32
    python benchmarks/extract_lora.py --shape 1.1b --rank 32 --mergekit /path/to/bin/mergekit-extract-lora

The synthetic fine-tune is the base plus Gaussian noise, so its task matrices are full
rank: the energy a rank-r adapter keeps is small, but the work per matrix is the same as
for a real fine-tune. Both tools save embeddings and the LM head whole (modules_to_save),
mergekit's default.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, write_family
from benchmarks.merge_speed import Timing, run_timed

WORK = Path(__file__).resolve().parent / "_work"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="134m")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=1, help="our CPU threads (mergekit uses torch's default)"
    )
    parser.add_argument("--mergekit", help="path to a mergekit-extract-lora executable to compare against")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    base, tune = write_family(args.work / args.shape, shape, fine_tunes=1)
    print(
        f"{shape.name}: {shape.parameters / 1e9:.2f}B parameters, base + 1 fine-tune, bf16, rank {args.rank}"
    )
    out = args.work / f"lora-{args.shape}"
    results: list[Timing] = []
    shutil.rmtree(out, ignore_errors=True)
    ours = run_timed(
        [
            sys.executable,
            "-m",
            "mergestudio.cli.main",
            "extract-lora",
            "--base",
            str(base),
            "--model",
            str(tune),
            "--rank",
            str(args.rank),
            "--threads",
            str(args.threads),
            "-q",
            str(out),
        ],
        "mergestudio",
        "extract-lora",
        None,
    )
    results.append(ours)
    _print(ours, out)
    shutil.rmtree(out, ignore_errors=True)
    if args.mergekit:
        theirs = run_timed(
            [
                args.mergekit,
                "--model",
                str(tune),
                "--base-model",
                str(base),
                "--out-path",
                str(out),
                "--max-rank",
                str(args.rank),
            ],
            "mergekit",
            "extract-lora",
            None,
        )
        results.append(theirs)
        _print(theirs, out)
        if theirs.returncode == 0 and ours.returncode == 0:
            print(
                f"    ratio mergestudio/mergekit: time {ours.seconds / theirs.seconds:.2f}, "
                f"peak anon {ours.peak_anon_mb / max(theirs.peak_anon_mb, 1e-9):.2f}"
            )
        shutil.rmtree(out, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.returncode == 0 for r in results) else 1


def _print(timing: Timing, out: Path) -> None:
    files = sorted(out.glob("*.safetensors")) if out.exists() else []
    size = sum(f.stat().st_size for f in files) / 1e6
    status = "" if timing.returncode == 0 else f"  FAILED (exit {timing.returncode})"
    print(
        f"  {timing.tool:12} {timing.seconds:7.2f} s  peak anon {timing.peak_anon_mb:7.0f} MB  "
        f"adapter {size:7.1f} MB{status}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
