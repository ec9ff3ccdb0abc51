"""The garbage-collector policy: imports done with the collector paused and their objects
moved out of its reach, the collector left as it was."""

from __future__ import annotations

import gc
import sys

from mergestudio import collector


def test_import_long_lived_freezes_what_it_imported_and_restores_the_collector() -> None:
    sys.modules.pop("colorsys", None)
    gc.unfreeze()
    tracked_before = len(gc.get_objects())
    try:
        collector.import_long_lived(["colorsys", "mergestudio_no_such_module"])  # a missing one is skipped
        assert "colorsys" in sys.modules
        assert gc.isenabled()
        # Everything alive went to the permanent generation: the collector no longer walks
        # the new module's functions, nor (nearly all of) what was tracked before.
        function = sys.modules["colorsys"].rgb_to_hls
        assert not any(obj is function for obj in gc.get_objects())
        assert gc.get_freeze_count() >= 0.9 * tracked_before
    finally:
        gc.unfreeze()
    assert any(obj is function for obj in gc.get_objects())  # unfrozen: tracked again


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
