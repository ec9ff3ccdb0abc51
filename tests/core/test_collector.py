"""The garbage-collector policy: imports done with the collector paused and their objects
moved out of its reach, the collector left as it was."""

from __future__ import annotations

import gc
import sys

from mergestudio import collector


def test_import_long_lived_freezes_what_it_imported_and_restores_the_collector() -> None:
    sys.modules.pop("colorsys", None)
    gc.unfreeze()
    try:
        collector.import_long_lived(["colorsys", "mergestudio_no_such_module"])  # a missing one is skipped
        assert "colorsys" in sys.modules
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_paused_keeps_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
