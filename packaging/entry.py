"""Entry point of the frozen Merge Studio: the ``mergestudio`` command.

Started without arguments from a desktop (double-click, Start menu, Dock: no terminal),
it opens the studio window; from a terminal it behaves exactly like the pip-installed
command.
"""

from __future__ import annotations

import multiprocessing
import sys


def _arguments() -> list[str]:
    args = [a for a in sys.argv[1:] if not a.startswith("-psn_")]  # macOS Finder adds -psn_…
    if not args and not (sys.stdin and sys.stdin.isatty()):
        return ["studio"]
    return args


if __name__ == "__main__":
    multiprocessing.freeze_support()  # torch/transformers may start worker processes
    from mergestudio.cli.main import main

    sys.exit(main(_arguments()))
