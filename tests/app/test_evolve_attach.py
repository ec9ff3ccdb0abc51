"""The Evolve page opening a run that ``mergestudio evolve --workers 2`` is running in
another process: it attaches read-only, follows the trials of both workers live, shows
which worker runs which trial, changes nothing, and becomes resumable when the run ends
(Ctrl-C in the run's terminal: its workers finish their trials and it releases the run)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mergestudio.search.baselines import BASELINES_FILE
from mergestudio.search.store import RunFolder
from mergestudio_qt.context import Studio
from mergestudio_qt.pages.evolve_page import EvolvePage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState

from tests.core.test_search import lengthen_tasks, write_search_fixture, write_spec

BUDGET = 500  # more than the test waits for: it stops the run itself (Ctrl-C)
RUN_TIMEOUT_MS = 400_000


def _complete(run: Path) -> int:
    """Complete trials, read with plain sqlite3 while the run writes its study."""
    db = run / "study.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_the_page_follows_a_running_run_read_only(qtbot, tmp_path: Path) -> None:
    root = write_search_fixture(tmp_path / "fixture")
    lengthen_tasks(root, 120)
    spec = write_spec(root, budget={"evaluations": BUDGET}, evaluation={"batch_size": 4})
    run = tmp_path / "run"
    controller = subprocess.Popen(
        [sys.executable, "-m", "mergestudio.cli.main", "evolve", str(spec), str(run), "--workers", "2", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while _complete(run) < 2:
            assert controller.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)

        page = EvolvePage(Studio(StudioState(), Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache"))))
        qtbot.addWidget(page)
        page.resize(1024, 700)
        page.show()
        with qtbot.waitSignal(page.run_opened, timeout=60_000) as opened:
            page.open_run(run)
        assert opened.args == [True]
        assert page.follow_job is not None and page.engine_state == "attached"
        assert "read-only" in page.run_label.full_text() and "read-only" in page.status.full_text()
        assert f"pid {controller.pid}" in page.status.full_text()
        assert not page.resume_button.isEnabled() and not page.stop_button.isEnabled()
        page.resume()  # refused while another process controls the run
        assert page.search_job is None

        # Trials of both workers arrive live, and the page says who runs what.
        with qtbot.waitSignal(page.trial_added, timeout=RUN_TIMEOUT_MS):
            pass
        qtbot.waitUntil(
            lambda: page.workers_label.isVisible()
            and all(f"w{i} → trial" in page.workers_label.full_text() for i in (0, 1)),
            timeout=RUN_TIMEOUT_MS,
        )
        page.grab().save(str(tmp_path / "attached-1024x700.png"))

        controller.send_signal(signal.SIGINT)
        with qtbot.waitSignal(page.follow_ended, timeout=RUN_TIMEOUT_MS):
            pass
        assert controller.wait(60) == 0
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()

    records = RunFolder(run).records()
    complete = sorted(r.number for r in records if r.state == "complete")
    assert 2 < len(complete) < BUDGET and not [r for r in records if r.state == "running"]
    assert page.history is not None and sorted(int(n) for n in page.history.numbers) == complete
    assert {r.worker for r in records if r.state == "complete"} == {"w0", "w1"}
    assert not (run / BASELINES_FILE).exists()  # the page wrote nothing into the run
    assert page.follow_job is None and page.resume_button.isEnabled()
    assert not page.workers_label.isVisible()
    assert "controller ended" in page.status.full_text()

