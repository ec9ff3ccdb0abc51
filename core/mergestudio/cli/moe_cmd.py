"""``mergestudio moe CONFIG OUT [--dry-run]``: mergekit-moe's YAML → a Mixtral or
Qwen2-MoE model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mergestudio.cli.args import DEVICE_HELP, add_output_options, device_name
from mergestudio.cli.progress import TerminalProgress, format_bytes, format_seconds
from mergestudio.cli.signals import cancel_on_stop


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "moe",
        help="build a mixture-of-experts model from fine-tunes (mergekit-moe's YAML)",
        description="Build a Mixtral (Llama/Mistral base) or Qwen2-MoE (Qwen2 base) model whose experts are "
        "the MLPs of fine-tuned models, routed by prompts (mergekit-moe's YAML).",
    )
    parser.add_argument("config", type=Path, help="MoE config YAML (mergekit-moe format)")
    parser.add_argument("out", type=Path, help="output folder (Hugging Face layout)")
    parser.add_argument("--dry-run", action="store_true", help="plan and check only; read no tensor data")
    parser.add_argument("--seed", type=int, default=0, help="seed of random gates and expert noise (default: 0)")
    parser.add_argument("--device", type=device_name, default="cpu",
                        help=f"where the base runs on the prompts (hidden gates); {DEVICE_HELP}")
    add_output_options(parser, shard_size=True, allow_pickle=True, json_help="print the dry run or result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    from mergestudio.moe import build_moe

    with cancel_on_stop() as cancel:
        result = build_moe(
            args.config,
            args.out,
            seed=args.seed,
            device=args.device,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            allow_pickle=args.allow_pickle,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    summary = {
        "output": str(result.output),
        "tensors": result.tensors,
        "shards": result.shards,
        "bytes_read": result.bytes_read,
        "bytes_written": result.bytes_written,
        "gate_seconds": round(result.gate_seconds, 3),
        "write_seconds": round(result.write_seconds, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"built {result.output}: {result.tensors} tensors, {format_bytes(result.bytes_written)} "
            f"(routers {format_seconds(result.gate_seconds)}, tensors {format_seconds(result.write_seconds)})"
        )
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from mergestudio.moe import plan_moe

    plan = plan_moe(args.config, args.out, overwrite=args.overwrite, allow_pickle=args.allow_pickle)
    try:
        report = plan.report()
    finally:
        plan.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(describe_report(report)))
    return 0


def describe_report(report: dict[str, Any]) -> list[str]:
    """The dry run as lines of text (the CLI and the window's log print these)."""
    lines = [
        f"output: {report['architecture']}, {len(report['experts'])} experts, {report['experts_per_token']} per "
        f"token, {report['layers']} layers, hidden size {report['hidden_size']}, {report['dtype']}",
        f"routers: gate_mode {report['gate_mode']}",
        f"base: {report['base']} (attention, embeddings, norms)",
    ]
    for index, expert in enumerate(report["experts"]):
        prompts = f"{expert['positive_prompts']} positive, {expert['negative_prompts']} negative prompt(s)"
        lines.append(f"expert {index}: {expert['model']} ({prompts})")
    if report["shared_expert"]:
        lines.append(f"shared expert: {report['shared_expert']}")
    lines.append(
        f"{report['tensors']} tensors, {report['parameters'] / 1e6:.1f} M parameters: reads "
        f"{format_bytes(report['bytes_to_read'])}, writes {format_bytes(report['bytes_to_write'])}"
    )
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    return lines
