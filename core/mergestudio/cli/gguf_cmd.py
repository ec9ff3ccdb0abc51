"""``mergestudio export-gguf MODEL OUT.gguf --type f16|q8_0``: a model as one GGUF file for
llama.cpp and Ollama."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mergestudio.cli.progress import TerminalProgress
from mergestudio.cli.signals import cancel_on_stop
from mergestudio.export.gguf import GGUF_FAMILIES, GGUF_TYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export-gguf",
        help="write a model as one GGUF file (llama.cpp, Ollama)",
        description=(
            "Write a model folder, file or Hub id as one GGUF file with its tokenizer and chat "
            f"template. Model types: {', '.join(sorted(GGUF_FAMILIES))}. The file appears only "
            "when complete."
        ),
    )
    parser.add_argument("model", help="model folder, .safetensors file or Hub id (org/name[@revision])")
    parser.add_argument("out", type=Path, help="output .gguf file")
    parser.add_argument(
        "--type", dest="qtype", choices=GGUF_TYPES, default="f16",
        help="f16: matrices in float16; q8_0: 8-bit blocks of 32 (rows not a multiple of 32 stay f16)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.export.gguf import export_gguf

    with cancel_on_stop() as cancel:
        result = export_gguf(
            args.model,
            args.out,
            qtype=args.qtype,
            overwrite=args.overwrite,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    if args.json:
        print(json.dumps({"output": str(result.output), "tensors": result.tensors,
                          "bytes": result.bytes_written, "types": result.types}, indent=2))
    else:
        types = ", ".join(f"{count} {name}" for name, count in sorted(result.types.items()))
        print(f"wrote {result.output}: {result.tensors} tensors ({types}), {result.bytes_written} bytes")
    return 0
