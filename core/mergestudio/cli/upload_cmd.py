"""``mergestudio upload MODEL REPO_ID [--private]``: a merged model folder to the Hugging
Face Hub in one commit. The token is huggingface_hub's own (``hf auth login`` or
``HF_TOKEN``); it is never printed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mergestudio.cli.progress import TerminalProgress
from mergestudio.cli.signals import cancel_on_stop


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "upload",
        help="upload a merged model folder to the Hugging Face Hub",
        description=(
            "Upload a model folder to a Hub repo (created when missing) in one commit. The model "
            "card's base_model names Hub inputs by id; local paths in the card and recipe are "
            "replaced by folder names. Sign in first with `hf auth login` (or set HF_TOKEN)."
        ),
    )
    parser.add_argument("model", type=Path, help="model folder (a merge's output)")
    parser.add_argument("repo_id", help="Hub repo, org/name")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--message", default="Upload a merge made with Merge Studio", help="commit message")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.export.hub import upload_model

    with cancel_on_stop() as cancel:
        result = upload_model(
            args.model,
            args.repo_id,
            private=args.private,
            commit_message=args.message,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    if args.json:
        print(json.dumps({"repo_url": result.repo_url, "commit": result.commit, "files": result.files,
                          "bytes": result.bytes_uploaded}, indent=2))
    else:
        print(f"uploaded {result.files} files to {result.repo_url} (commit {result.commit[:12]})")
    return 0
