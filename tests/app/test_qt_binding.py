"""The Qt binding the studio is pinned to keeps Python's reference counts intact.

PySide6 6.12.0 dropped one reference to ``None`` too many, about 850 times for every
pyqtgraph plot shown and closed; a test session (or a long day in the studio) then
aborted with "Fatal Python error: none_dealloc". pyproject.toml excludes that release."""

from __future__ import annotations

import gc
import sys

import pyqtgraph as pg


def _show_and_close_a_plot(qtbot) -> None:
    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    widget.close()


def test_plots_do_not_drop_references_to_none(qtbot) -> None:
    _show_and_close_a_plot(qtbot)  # first-use caches are filled here, not below
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(10):
        _show_and_close_a_plot(qtbot)
    gc.collect()
    # Objects freed meanwhile may release a few honest references; 6.12.0 lost over 3,000.
    assert sys.getrefcount(None) > before - 1000
