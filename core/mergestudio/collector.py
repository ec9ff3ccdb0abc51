"""When Python's cyclic garbage collector runs.

A full collection walks every tracked object: with torch, transformers and optuna
loaded that is millions of them and 40-230 ms, during which no other thread runs (it
holds the GIL). Lazy imports create long-lived objects by the hundred thousand and so
trigger such collections one after another; in the studio that froze the window for
up to a third of a second while a search started."""

from __future__ import annotations

import contextlib
import gc
import importlib
import threading
from collections.abc import Iterator, Sequence

# transformers' lazy top-level module is not thread-safe: while one thread imports its
# submodules (the window's warm-up), ``from transformers import X`` in another (a quick
# eval) can fail with "cannot import name X". Early imports and such lazy imports take
# this lock in turn.
IMPORT_LOCK = threading.RLock()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off inside the block (reference counting still frees
    everything that forms no cycle)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def import_long_lived(modules: Sequence[str]) -> None:
    """Import ``modules`` with the collector paused, then move every object alive now
    (modules, classes, functions: they live as long as the process) out of the
    collector's reach, so that later full collections walk only what came after. A
    module that cannot be imported is skipped: this only does early what the code
    that needs it would do, and that code reports the error."""
    with IMPORT_LOCK, paused():
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
        # Before the collector is back on: its first collection would walk them all.
        gc.freeze()


def freeze_for_exit() -> None:
    """For a process about to end: move every object out of the collector's reach, so
    the interpreter's last full collection at exit does not walk them all (with torch
    and numba loaded it took 0.5-1 s of a command's wall time, more than a 134M merge)."""
    gc.freeze()
