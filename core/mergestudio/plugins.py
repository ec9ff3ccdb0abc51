"""What other packages add to the engine, found through package entry points.

The engine never names its front ends: the studio window registers its ``studio``
command and its smoke-test stage here (``pyproject.toml``), so ``mergestudio`` knows of
them only through the installed distribution's metadata and imports none of their code
until a user runs them.

- ``mergestudio.commands``: ``add_parser(subparsers)`` functions, like ``cli/*_cmd.py``.
- ``mergestudio.smoke``: functions run by ``mergestudio --smoke`` after the imports; each
  returns ``(platform, what it built)``.
"""

from __future__ import annotations

from importlib import metadata

COMMANDS_GROUP = "mergestudio.commands"
SMOKE_GROUP = "mergestudio.smoke"


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points of ``group`` in name order (stable help and smoke output)."""
    return sorted(metadata.entry_points(group=group), key=lambda point: point.name)
