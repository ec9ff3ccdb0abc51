"""``mergestudio generate MODEL_OR_RECIPE --prompt TEXT [--chat/--no-chat]
[--max-new-tokens N] [--seed S] [--temperature T] [--top-p P] [--compare PARENT ...]``.

Tokens are printed as they are made. A recipe (.yml/.yaml) is merged in memory into a
resident model and never written. ``--compare`` generates from each parent afterwards
with the same prompt and seed, under a header per model; ``--json`` prints one object
instead of the streamed text.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from mergestudio.cli.args import DEVICE_HELP, device_name, float_at_least, non_negative_int, positive_int
from mergestudio.cli.signals import cancel_on_stop

if TYPE_CHECKING:
    from mergestudio.evaluate.generate import Generation


def _top_p(text: str) -> float:
    value = float_at_least(0.0, strict=True)(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "generate",
        help="generate text from a model folder or a recipe merged in memory",
        description=(
            "Generate text from a model folder, or from a recipe merged in memory (nothing "
            "is written), streaming tokens as they are made. Greedy unless --temperature "
            "is above 0. --compare generates from other models with the same prompt and seed."
        ),
    )
    parser.add_argument("model", metavar="MODEL_OR_RECIPE", help="a causal LM folder or a recipe .yml")
    parser.add_argument("--prompt", required=True, help="the prompt (one user turn when the chat template is used)")
    chat = parser.add_mutually_exclusive_group()
    chat.add_argument(
        "--chat", dest="chat", action="store_true", default=True,
        help="wrap the prompt in the tokenizer's chat template when it has one (default)",
    )
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="use the prompt as plain text")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="at most N new tokens (default: 64)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the sampler (default: 0)")
    parser.add_argument(
        "--temperature", type=float_at_least(0.0), default=0.0, help="0 is greedy (default); above 0 samples"
    )
    parser.add_argument("--top-p", type=_top_p, default=1.0, help="nucleus sampling mass in (0, 1] (default: 1)")
    parser.add_argument(
        "--compare", nargs="+", default=[], metavar="PARENT",
        help="also generate from these model folders or recipes, same prompt and seed",
    )
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
        help="auto (float32 on CPU, bfloat16 elsewhere), float32, float16 or bfloat16",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with every model's result")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.evaluate.generate import LoadedModels, SamplingOptions, Token, generate
    from mergestudio.evaluate.lm import quiet_transformers

    quiet_transformers()
    options = SamplingOptions(args.max_new_tokens, args.temperature, args.top_p, args.seed, args.chat)
    references = [args.model, *args.compare]
    headers = len(references) > 1 and not args.json
    models = LoadedModels(device=args.device, dtype=args.dtype)
    results: dict[str, Generation] = {}

    def show(token: Token) -> None:
        sys.stdout.write(token.text)
        sys.stdout.flush()

    try:
        with cancel_on_stop() as cancel:
            for reference in references:
                if headers:
                    print(f"== {reference}", flush=True)
                lm = models.model(reference, cancel)
                results[reference] = generate(lm, args.prompt, options, None if args.json else show, cancel)
                if not args.json:
                    print(flush=True)
                cancel.raise_if_cancelled()
    finally:
        models.close()
    if args.json:
        print(json.dumps({ref: _as_dict(g) for ref, g in results.items()}, indent=2))
    return 0


def _as_dict(generation: Generation) -> dict[str, object]:
    return {
        "text": generation.text,
        "token_ids": list(generation.token_ids),
        "prompt_tokens": generation.prompt_tokens,
        "stop_reason": generation.stop_reason,
        "chat_template": generation.chat_template,
        "seconds": round(generation.seconds, 4),
    }
