"""Entry point of the frozen Merge Studio: the ``mergestudio`` command.

On Windows and macOS, started without arguments from the desktop (double-click in
Explorer or Finder: no terminal), it opens the studio window; everywhere else it behaves
exactly like the pip-installed command (Linux menus start ``mergestudio studio``).
"""

from __future__ import annotations

import multiprocessing
import sys


def _arguments() -> list[str]:
    args = [a for a in sys.argv[1:] if not a.startswith("-psn_")]  # macOS Finder adds -psn_…
    from_desktop = sys.platform in ("win32", "darwin") and not (sys.stdin and sys.stdin.isatty())
    if not args and from_desktop:
        return ["studio"]
    return args


if __name__ == "__main__":
    multiprocessing.freeze_support()  # torch/transformers may start worker processes
    from mergestudio.cli.main import main

    sys.exit(main(_arguments()))
