"""One controller per run: the run lock refuses a second controller with a message naming
the first, changes nothing, and is taken over once its holder is gone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mergestudio.search import lock as run_lock
from mergestudio.search import resume_search, start_search
from mergestudio.search.lock import LOCK_FILE, RunLock, RunLocked, boot_id, run_owner
from mergestudio.search.store import RunFolder

from .test_search import write_search_fixture, write_spec

# A process that takes the run's lock, says so, and holds it until killed.
HOLDER = """
import sys, time
from mergestudio.search.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_search_fixture(tmp_path_factory.mktemp("lock"))
    run = root / "run"
    start_search(write_spec(root, budget={"evaluations": 2}), run)
    return run


def _hold(run: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _fingerprint(run: Path) -> dict[str, str]:
    """Every file of the run but the lock, by content."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def test_a_second_controller_is_refused_and_changes_nothing(finished_run: Path) -> None:
    holder = _hold(finished_run)
    try:
        before = _fingerprint(finished_run)
        owner = run_owner(finished_run)
        assert owner is not None and owner.pid == holder.pid and owner.host == socket.gethostname()
        with pytest.raises(RunLocked, match=f"already running \\(pid {holder.pid} on ") as refused:
            resume_search(finished_run, evaluations=5)
        assert refused.value.owner == owner
        assert _fingerprint(finished_run) == before  # no trial, no budget, no clock written
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holders_lock_is_taken_over(finished_run: Path) -> None:
    holder = _hold(finished_run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The killed holder never cleared its record: the file still names it.
    assert json.loads((finished_run / LOCK_FILE).read_text())["pid"] == holder.pid
    assert run_owner(finished_run) is None
    with RunLock(finished_run) as lock:
        assert lock.stale_owner is not None and lock.stale_owner.pid == holder.pid
        assert run_owner(finished_run) is not None  # ours now
    assert (finished_run / LOCK_FILE).read_text() == ""  # released: cleared, not deleted
    assert run_owner(finished_run) is None


def test_resume_takes_over_a_stale_lock_and_says_so(finished_run: Path) -> None:
    (finished_run / LOCK_FILE).write_text(
        json.dumps({"pid": 999999, "host": socket.gethostname(), "boot_id": "a-boot-before-a-reboot",
                    "started": time.time() - 3600, "command": "mergestudio evolve --resume run"})
    )
    lines: list[str] = []
    outcome = resume_search(
        finished_run, evaluations=3, events=lambda e: lines.append(getattr(e, "message", ""))
    )
    assert outcome.complete_trials == 3
    assert any("took over the run from pid 999999" in line for line in lines)


def test_without_os_locks_the_owner_record_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without locks, a holder is alive if its pid is, on this machine
    in this boot; one on another machine cannot be checked and counts as alive."""
    monkeypatch.setattr(run_lock, "_try_lock", lambda stream: None)
    here, boot = socket.gethostname(), boot_id()

    def record(pid: int, host: str = here, boot_of: str = boot) -> None:
        (tmp_path / LOCK_FILE).write_text(
            json.dumps({"pid": pid, "host": host, "boot_id": boot_of, "started": 0.0, "command": "x"})
        )

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record(sleeper.pid)
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
        record(sleeper.pid, host="another-machine")
        with pytest.raises(RunLocked, match="another-machine"):
            RunLock(tmp_path).acquire()
        record(sleeper.pid, boot_of="another-boot")  # the same pid number, before a reboot
        RunLock(tmp_path).acquire().release()
    finally:
        sleeper.kill()
        sleeper.wait()
    record(sleeper.pid)  # the process is gone
    with RunLock(tmp_path) as lock:
        assert lock.stale_owner is not None and lock.stale_owner.pid == sleeper.pid


def test_the_lock_nests_within_a_process(tmp_path: Path) -> None:
    """The window's search request holds the lock around its baselines and the search."""
    with RunLock(tmp_path):
        with RunLock(tmp_path):
            assert run_owner(tmp_path) is not None
        assert run_owner(tmp_path) is not None
    assert run_owner(tmp_path) is None
    assert not RunFolder(tmp_path).exists()
