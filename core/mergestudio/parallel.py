"""A pool of one thread per core for work that releases the GIL (compiled kernels, torch
copies), shared by the engine and the methods."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
_pool: ThreadPoolExecutor | None = None
_THREAD_PREFIX = "mergestudio-worker"


def run_parallel(work: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """``[work(item) for item in items]`` on a pool of one thread per core: compiled kernels
    and torch's copies release the GIL, and each item's result depends on it alone, so the results are the
    same as in order. (Plain threads that block when idle: unlike OpenMP's spinning
    workers, they do not stall when another program holds a core.)"""
    global _pool
    items = list(items)
    workers = min(len(items), os.cpu_count() or 1)
    # From inside the pool, run in place: waiting on the pool there could deadlock it.
    if workers <= 1 or threading.current_thread().name.startswith(_THREAD_PREFIX):
        return [work(item) for item in items]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix=_THREAD_PREFIX)
    return list(_pool.map(work, items))


__all__ = ["run_parallel"]
