"""``mergestudio extract-lora --base BASE --model FINETUNE (--rank R | --energy E) OUT``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mergestudio.cli.args import add_output_options
from mergestudio.cli.progress import TerminalProgress, format_bytes, format_seconds
from mergestudio.cli.signals import cancel_on_stop


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "extract-lora",
        help="extract a LoRA adapter (PEFT folder) from a fine-tune and its base",
        description="Factorise each task matrix (fine-tune minus base) by truncated SVD and write "
        "a PEFT LoRA folder plus lora_report.json (per module: rank, energy kept).",
    )
    parser.add_argument("out", type=Path, help="output folder (PEFT adapter)")
    parser.add_argument("--base", required=True, help="the base model (folder, file or Hub id)")
    parser.add_argument("--model", required=True, help="the fine-tune (folder, file, Hub id or BASE+ADAPTER)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--rank", type=int, help="the same rank for every module")
    size.add_argument(
        "--energy", type=float, help="per module, the smallest rank keeping this share of ‖Δ‖² (e.g. 0.9)"
    )
    parser.add_argument("--max-rank", type=int, help="cap on ranks chosen by --energy")
    parser.add_argument(
        "--embeddings",
        choices=("save", "lora", "skip"),
        default="save",
        help="embeddings and LM head: saved whole (modules_to_save, default), low-rank, or left out",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    parser.add_argument("--dtype", help="adapter dtype, e.g. bf16 or f32 (default: the fine-tune's)")
    parser.add_argument("--threads", type=int, help="CPU threads for the SVDs (default: 1)")
    add_output_options(parser, json_help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.lora.extract import ExtractSettings, extract_lora

    settings = ExtractSettings(
        rank=args.rank, energy=args.energy, max_rank=args.max_rank, embeddings=args.embeddings
    )
    with cancel_on_stop() as cancel:
        result = extract_lora(
            args.base,
            args.model,
            args.out,
            settings,
            device=args.device,
            dtype=args.dtype,
            overwrite=args.overwrite,
            threads=args.threads,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    if args.json:
        print(json.dumps(result.report(), indent=2))
        return 0
    lora = result.lora_modules
    saved = [m for m in result.modules if m.action == "saved"]
    energies = [m.energy for m in lora]
    ranks = [m.rank for m in lora]
    print(
        f"wrote {result.output}: {len(lora)} LoRA modules"
        + (f" (rank {min(ranks)}–{max(ranks)}, energy kept ≥ {min(energies):.3f})" if lora else "")
        + f", {len(saved)} tensors saved whole, {format_bytes(result.adapter_bytes)} "
        f"in {format_seconds(result.seconds)}"
    )
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0
