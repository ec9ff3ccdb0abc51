"""Merge Studio's Qt front end (PySide6 + pyqtgraph). Only UI lives here: every merge,
plan and evaluation is the engine's (``mergestudio``), run in worker threads."""

from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    from mergestudio_qt.app import main as _main

    return _main()
