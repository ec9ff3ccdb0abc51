"""``mergestudio merge RECIPE OUT [--dry-run]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mergestudio.cli.args import (
    DEVICE_HELP,
    add_output_options,
    compute_dtype,
    device_name,
    parse_size,
    positive_int,
)
from mergestudio.cli.progress import TerminalProgress, format_bytes, format_seconds
from mergestudio.cli.signals import cancel_on_stop
from mergestudio.events import CancelToken


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "merge",
        help="merge models as a recipe says",
        description="Merge models from a mergekit-style YAML recipe.",
    )
    parser.add_argument("recipe", type=Path, help="recipe YAML (mergekit format)")
    parser.add_argument("out", type=Path, help="output folder (Hugging Face layout)")
    parser.add_argument("--dry-run", action="store_true", help="plan and estimate only; read no tensor data")
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--compute-dtype", type=compute_dtype, default="float32", help="dtype to compute in (default: float32)"
    )
    parser.add_argument("--threads", type=positive_int, help="CPU threads for tensor math (default: 1)")
    parser.add_argument(
        "--max-memory",
        type=parse_size,
        metavar="SIZE",
        help="memory the merge may use (e.g. 2GB); refused before writing when it cannot fit, "
        "and --dry-run says whether it does",
    )
    parser.add_argument(
        "--chunk-size",
        type=parse_size,
        metavar="SIZE",
        help="working memory of one streamed step (default: 64MB for the sparsifiers, 8MB for the "
        "others, or what --max-memory leaves); the output does not depend on it",
    )
    parser.add_argument(
        "--allow-no-config",
        action="store_true",
        help="merge even though the base (config source) has no config.json; the output will have none",
    )
    parser.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="merge inputs that hold NaN/Inf (with a warning) instead of refusing them",
    )
    parser.add_argument(
        "--output-adapter",
        action="store_true",
        help="write a PEFT LoRA adapter instead of a full model (every input an adapter of one base)",
    )
    parser.add_argument(
        "--adapter-rank", type=int, help="rank of re-factorised adapter modules (default: sum of input ranks)"
    )
    parser.add_argument(
        "--keep-intermediates",
        type=Path,
        metavar="DIR",
        help="multi-stage recipes: write each intermediate stage to DIR/<stage> (default: kept in memory)",
    )
    add_output_options(parser, shard_size=True, allow_pickle=True, json_help="print the dry run or result as JSON")
    parser.set_defaults(func=run)


def _merge_options(args: argparse.Namespace, cancel: CancelToken) -> dict[str, Any]:
    """The keyword arguments a single- or multi-stage merge takes from the command line."""
    return {
        "device": args.device,
        "compute_dtype": args.compute_dtype,
        "shard_size": args.shard_size,
        "overwrite": args.overwrite,
        "allow_pickle": args.allow_pickle,
        "allow_no_config": args.allow_no_config,
        "allow_nonfinite": args.allow_nonfinite,
        "threads": args.threads,
        "events": TerminalProgress(quiet=args.quiet),
        "cancel": cancel,
    }


def run(args: argparse.Namespace) -> int:
    from mergestudio.recipe.multi import is_multi_stage

    if args.recipe.is_file() and is_multi_stage(args.recipe.read_text()):
        return _run_multi(args)
    if args.output_adapter:
        args.recipe = _with_adapter_output(args)
    if args.dry_run:
        return _dry_run(args)
    if _writes_adapter(args.recipe):
        return _merge_to_adapter(args)
    from mergestudio.engine.merge import merge

    with cancel_on_stop() as cancel:
        result = merge(
            args.recipe,
            args.out,
            max_memory=args.max_memory,
            chunk_bytes=args.chunk_size,
            **_merge_options(args, cancel),
        )
    stats = result.stats
    summary = {
        "output": str(result.output),
        "tensors": stats.tensors,
        "shards": result.shards,
        "bytes_read": stats.bytes_read,
        "bytes_written": stats.bytes_written,
        "seconds": round(stats.seconds, 3),
        "device": stats.device,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"merged {stats.tensors} tensors into {result.output} in {format_seconds(stats.seconds)} "
            f"({format_bytes(stats.bytes_read / max(stats.seconds, 1e-9))}/s read)"
        )
    return 0


def _with_adapter_output(args: argparse.Namespace) -> Any:
    """``--output-adapter [--adapter-rank N]`` as the recipe's ``output`` key."""
    from mergestudio.engine.merge import load_recipe

    recipe = load_recipe(args.recipe).to_dict()
    recipe["output"] = {"format": "adapter", **({"rank": args.adapter_rank} if args.adapter_rank else {})}
    return recipe


def _writes_adapter(recipe: Any) -> bool:
    from mergestudio.engine.merge import load_recipe

    return load_recipe(recipe).writes_adapter


def _merge_to_adapter(args: argparse.Namespace) -> int:
    from mergestudio.engine.merge import load_recipe
    from mergestudio.lora.merge import merge_to_adapter

    with cancel_on_stop() as cancel:
        result = merge_to_adapter(
            load_recipe(args.recipe),
            args.out,
            rank=args.adapter_rank,
            device=args.device,
            overwrite=args.overwrite,
            threads=args.threads,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    if args.json:
        print(json.dumps(result.report(), indent=2))
    else:
        routes = sorted({m.route for m in result.modules})
        print(
            f"wrote adapter {result.output}: {len(result.modules)} tensors ({', '.join(routes)}), "
            f"largest re-factorisation error {result.max_relative_error:.2e}"
        )
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    """Every check the merge would make (arguments, output path, recipe, headers), then
    the estimate."""
    from dataclasses import asdict

    from mergestudio.engine.estimate import estimate_time
    from mergestudio.engine.memory import compute_item_bytes, memory_verdict
    from mergestudio.engine.merge import plan_folder_merge
    from mergestudio.engine.plan import describe_sources
    from mergestudio.io.hub import hub_transfer

    with cancel_on_stop() as cancel, hub_transfer(TerminalProgress(quiet=args.quiet), cancel):
        plan = plan_folder_merge(
            args.recipe,
            args.out,
            device=args.device,
            compute_dtype=args.compute_dtype,
            shard_size=args.shard_size,
            threads=args.threads,
            overwrite=args.overwrite,
            allow_pickle=args.allow_pickle,
            allow_no_config=args.allow_no_config,
        )
    try:
        # In the compute dtype the merge would use, as its own memory check does.
        compute_bytes = compute_item_bytes(args.compute_dtype)
        estimate = plan.estimate(compute_bytes, chunk_bytes=args.chunk_size, max_memory=args.max_memory)
        report = {
            "method": plan.method.name,
            "inputs": describe_sources(plan),
            "tensors": estimate.tensor_count,
            "output_layers": plan.output_layers,
            "bytes_to_read": estimate.bytes_to_read,
            "output_bytes": estimate.output_bytes,
            "estimated_peak_memory_bytes": estimate.peak_memory_bytes,
            "estimated_seconds": asdict(estimate_time(plan)),
            "largest_tensor": estimate.largest_tensor,
            "whole_tensor_memory_bytes": estimate.whole_tensor_bytes,
            "step_memory_bytes": estimate.chunk_bytes,
            "max_memory_bytes": estimate.max_memory,
            "fits": estimate.fits,
            "memory_advice": memory_verdict(plan, args.max_memory, args.compute_dtype).advice(),
            "warnings": plan.warnings,
            "vocabulary": plan.vocab.describe() if plan.vocab is not None else None,
            "chat_template": plan.chat_template,
        }
    finally:
        plan.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print_dry_run(report, args.out)
    return 0


def _family_line(row: dict[str, Any]) -> str:
    """What gradients and lanes will follow: the family, its blocks and lanes."""
    from mergestudio.architectures.layout import describe_blocks

    return f"{row['family']}: {describe_blocks(row['blocks'])}; lanes {', '.join(row['lanes'])}"


def _print_dry_run(report: dict[str, Any], out: Path) -> None:
    write = sys.stdout.write
    write(f"dry run: {report['method']} -> {out} (nothing read, nothing written)\n\n")
    write(f"{'model':40} {'role':6} {'arch':24} {'layers':>6} {'params':>10} {'size':>10}\n")
    for row in report["inputs"]:
        write(
            f"{row['model'][-40:]:40} {row['role']:6} {str(row['architecture'])[:24]:24} "
            f"{row['layers']:>6} {row['parameters'] / 1e6:>9.1f}M {format_bytes(row['bytes']):>10}\n"
        )
    for family in dict.fromkeys(_family_line(row) for row in report["inputs"]):
        write(f"family                 {family}\n")
    write("\n")
    depth = f"{report['output_layers']} layers" if report["output_layers"] else f"{len(report['inputs'][0]['blocks'])} blocks"
    write(f"tensors to write       {report['tensors']} ({depth})\n")
    write(f"bytes to read          {format_bytes(report['bytes_to_read'])}\n")
    write(f"output size            {format_bytes(report['output_bytes'])}\n")
    write(
        f"estimated peak memory  {format_bytes(report['estimated_peak_memory_bytes'])} "
        f"(largest step: {report['largest_tensor']})\n"
    )
    write(f"estimated time         {_time_line(report['estimated_seconds'])}\n")
    if report["whole_tensor_memory_bytes"]:
        write(
            f"held whole             {format_bytes(report['whole_tensor_memory_bytes'])} for the largest tensor "
            f"{report['method']} cannot stream\n"
        )
    if report["max_memory_bytes"] is not None:
        verdict = "fits" if report["fits"] else "does NOT fit (the merge would be refused)"
        write(f"max memory             {format_bytes(report['max_memory_bytes'])}: {verdict}\n")
        if report["memory_advice"]:
            write(f"                       {report['memory_advice']}\n")
    _print_vocabulary(report["vocabulary"], report["chat_template"])
    for warning in report["warnings"]:
        write(f"warning: {warning}\n")


def _time_line(seconds: dict[str, float]) -> str:
    from mergestudio.engine.estimate import TimeEstimate

    return f"{TimeEstimate(**seconds).describe()}, calibrated on this machine"


def _print_vocabulary(vocab: dict[str, Any] | None, chat_template: str | None) -> None:
    write = sys.stdout.write
    if vocab is not None:
        how = "rows matched by token" if vocab["aligned_by_token"] else "rows already aligned"
        write(f"vocabulary             {vocab['source']}: {vocab['tokens']} tokens, {vocab['rows']} rows, {how}\n")
        for model, note in vocab["models"].items():
            write(f"  {model[-40:]:40} {note}\n")
    if chat_template is not None:
        write(f"chat template          {len(chat_template)} characters, written to tokenizer_config.json\n")


def _run_multi(args: argparse.Namespace) -> int:
    """A multi-stage recipe: the dry run plans every stage (checking the whole graph);
    the merge runs them in order, the final one into ``args.out``."""
    from mergestudio.engine.graph import close_stages, merge_multi, plan_stages
    from mergestudio.recipe.multi import load_multi

    multi = load_multi(args.recipe)
    if args.dry_run:
        staged = plan_stages(multi, allow_pickle=args.allow_pickle)
        try:
            report: list[dict[str, Any]] = []
            for item in staged:
                estimate = item.plan.estimate(chunk_bytes=args.chunk_size, max_memory=args.max_memory)
                report.append(
                    {
                        "stage": item.stage.name,
                        "method": item.plan.method.name,
                        "needs": list(item.stage.needs),
                        "tensors": len(item.plan.tensors),
                        "output_bytes": estimate.output_bytes,
                        "peak_memory_bytes": estimate.peak_memory_bytes,
                        "fits": estimate.fits,
                        "warnings": item.plan.warnings,
                    }
                )
        finally:
            close_stages(staged)
        if args.json:
            print(json.dumps({"stages": report}, indent=2))
            return 0
        print(f"dry run: {len(report)} stages -> {args.out} (nothing read, nothing written)")
        for row in report:
            needs = f" <- {', '.join(row['needs'])}" if row["needs"] else ""
            fits = "" if row["fits"] else f" (does NOT fit in {format_bytes(args.max_memory)})"
            peak = f"peak ~{format_bytes(row['peak_memory_bytes'])}{fits}"
            print(f"  {row['stage']:16} {row['method']:16} {row['tensors']:>6} tensors  {peak}{needs}")
            for warning in row["warnings"]:
                print(f"    warning: {warning}")
        return 0
    with cancel_on_stop() as cancel:
        result = merge_multi(
            multi,
            args.out,
            keep_intermediates=args.keep_intermediates,
            max_memory=args.max_memory,
            chunk_bytes=args.chunk_size,
            **_merge_options(args, cancel),
        )
    summary = {
        "output": str(result.output),
        "stages": [
            {"stage": name, "seconds": round(stats.seconds, 3) if stats else None} for name, stats in result.stages
        ],
        "intermediates": {name: str(path) for name, path in result.intermediates.items()},
    }
    print(json.dumps(summary, indent=2) if args.json else f"merged {len(result.stages)} stages into {result.output}")
    return 0
