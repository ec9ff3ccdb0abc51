"""The Merge page's quiet defaults: Replace unticked, Cancel enabled only while a merge
runs, buttons that stay put after a dry run, and an ETA from measured throughput."""

from __future__ import annotations

import pytest
from mergestudio_qt.format import MeasuredEta


def test_replace_is_unticked_and_cancel_only_acts_while_merging(qtbot, merge_page) -> None:
    assert not merge_page.overwrite_check.isChecked()
    assert not merge_page.cancel_button.isEnabled()
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.start_merge()
        assert merge_page.cancel_button.isEnabled()
    assert blocker.args == ["succeeded"]
    assert not merge_page.cancel_button.isEnabled()


def test_buttons_do_not_move_after_a_dry_run(qtbot, window, merge_page) -> None:
    before = merge_page.merge_button.mapTo(merge_page, merge_page.merge_button.rect().topLeft())
    window.state.set_method("slerp")  # two models besides the base: the dry run fails, with a long reason
    with qtbot.waitSignal(merge_page.dry_run_finished, timeout=10_000):
        merge_page.dry_button.click()
    qtbot.wait(50)  # let the layout settle
    after = merge_page.merge_button.mapTo(merge_page, merge_page.merge_button.rect().topLeft())
    assert after == before
    assert "slerp" in merge_page.dry_note.toolTip()


def test_eta_comes_from_measured_throughput_not_the_start_up() -> None:
    eta = MeasuredEta(min_span_s=0.5)
    # the first report arrives after 1.0 s of start-up, with 1 % done
    assert eta.update(1, 100, 1.0) is None
    assert eta.update(5, 100, 1.2) is None  # too little measured to promise anything
    # 20 units in 0.5 s since the first report: 79 left at 40 units/s
    assert eta.update(21, 100, 1.5) == pytest.approx(79 / 40)
    # a restarted job (elapsed going back) restarts the measurement
    assert eta.update(1, 50, 0.1) is None
