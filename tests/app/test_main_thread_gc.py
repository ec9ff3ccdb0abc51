"""Cyclic garbage is collected on the GUI thread, never in a worker thread."""

from __future__ import annotations

import gc
import threading

from mergestudio_qt.main_thread_gc import collect_on_main_thread


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_worker_thread_that_makes_cyclic_garbage_never_collects_it(qtbot, qapp) -> None:
    collect_on_main_thread(qapp)
    collected_in: list[str] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected_in.append(threading.current_thread().name)

    def make_garbage() -> None:
        for _ in range(20 * gc.get_threshold()[0]):  # far past the threshold
            _Cycle()

    gc.callbacks.append(record)
    try:
        worker = threading.Thread(target=make_garbage, name="worker")
        worker.start()
        worker.join()
        assert "worker" not in collected_in
        qtbot.waitUntil(lambda: threading.main_thread().name in collected_in, timeout=5_000)
    finally:
        gc.callbacks.remove(record)


def test_installing_twice_keeps_one_collector_and_stop_restores_the_automatic_one(qapp) -> None:
    first = collect_on_main_thread(qapp)
    assert collect_on_main_thread(qapp) is first
    assert not gc.isenabled()
    first.stop()
    assert gc.isenabled()
    collect_on_main_thread(qapp)
    assert not gc.isenabled()
