"""Who works on a run, read from its study: each process that recorded itself on a trial,
what it does now (running, late, idle, ended), its trial, its finished trials and how long
ago it last beat, from real Optuna storages (SQLite's heartbeat table; a journal file's beat files)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from mergestudio.search.store import WORKER_ATTR, RunFolder, worker_identity
from mergestudio.search.worker_status import WorkerWatch, live_workers, workers_of
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

GRACE_S = 30.0


def _dead_pid() -> int:
    """A pid of this machine that no process has now (a child that has exited)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _owner(name: str, host: str, pid: int) -> dict[str, object]:
    """What ``worker_identity`` records, for a process of ``host``."""
    return {**worker_identity(), "name": name or f"{host}:{pid}", "host": host, "pid": pid}


def _trial(number: int, state: TrialState, owner: dict[str, object], start: datetime, end: datetime | None) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"x": 0.1},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        user_attrs={WORKER_ATTR: owner},
    )
    trial.number = number
    trial.datetime_start = start
    trial.datetime_complete = end
    return trial


def test_workers_are_told_apart_by_what_their_trials_show() -> None:
    here, now = socket.gethostname(), datetime.now()
    stamp = now.timestamp()
    alive = _owner("w0", here, os.getpid())  # this test's own process: alive
    dead = _owner("w1", here, _dead_pid())
    remote = _owner("", "other-machine", 4242)
    gone_remote = _owner("", "far-machine", 77)
    long_ago = now - timedelta(seconds=600)
    trials = [
        _trial(0, TrialState.COMPLETE, alive, long_ago, now - timedelta(seconds=20)),
        _trial(1, TrialState.COMPLETE, dead, long_ago, now - timedelta(seconds=50)),
        _trial(2, TrialState.COMPLETE, alive, long_ago, now - timedelta(seconds=5)),
        _trial(3, TrialState.RUNNING, remote, now - timedelta(seconds=3), None),
        _trial(4, TrialState.COMPLETE, gone_remote, long_ago, now - timedelta(seconds=300)),
        _trial(5, TrialState.RUNNING, dead, now - timedelta(seconds=100), None),
    ]
    # Trial 5's last heartbeat is older than the grace period: its worker is late.
    statuses = workers_of(trials, {5: 95.0}, GRACE_S, stamp)
    by_name = {s.name: s for s in statuses}
    assert [s.state for s in statuses] == ["running", "late", "idle", "ended"]
    w0, w1 = by_name["w0"], by_name["w1"]
    assert (w0.state, w0.trial, w0.complete, w0.pid) == ("idle", None, 2, os.getpid())
    assert abs((w0.last_seen_s or 0) - 5.0) < 1.0  # since its last trial ended
    assert (w1.state, w1.trial, w1.complete, w1.last_seen_s) == ("late", 5, 1, 95.0)
    running = by_name["other-machine:4242"]
    # No heartbeat known for trial 3: its age is the trial's.
    assert (running.state, running.trial, running.process) == ("running", 3, "other-machine:4242")
    assert abs((running.last_seen_s or 0) - 3.0) < 1.0
    # Another machine's worker, silent for longer than the grace period, has ended.
    assert by_name["far-machine:77"].state == "ended"


def test_a_finished_worker_of_this_machine_has_ended() -> None:
    now = datetime.now()
    trial = _trial(0, TrialState.COMPLETE, _owner("w0", socket.gethostname(), _dead_pid()), now, now)
    (status,) = workers_of([trial], {}, GRACE_S, now.timestamp())
    assert (status.state, status.complete, status.trial) == ("ended", 1, None)


def _run_with_running_trial(run: RunFolder) -> tuple[optuna.Study, optuna.Trial]:
    study = run.open_study(["maximize"])
    finished = study.ask()
    finished.set_user_attr(WORKER_ATTR, _owner("w0", socket.gethostname(), _dead_pid()))
    study.tell(finished, 0.25)
    running = study.ask()
    running.set_user_attr(WORKER_ATTR, worker_identity("w1"))
    return study, running


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_heartbeats_of_a_sqlite_run_are_read_with_their_age(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run", heartbeat_s=2)
    run.path.mkdir()
    study, running = _run_with_running_trial(run)
    storage = study._storage
    time.sleep(2.5)
    storage.record_heartbeat(running._trial_id)  # what a worker's beat thread does
    time.sleep(1.0)
    watch = WorkerWatch(run)
    try:
        statuses = {s.name: s for s in watch.poll()}
        assert set(statuses) == {"w0", "w1"}
        w1 = statuses["w1"]
        assert (w1.state, w1.trial, w1.pid) == ("running", running.number, os.getpid())
        # The beat's age on the database's clock, not the trial's (3.5 s and more).
        assert w1.last_seen_s is not None and 0.9 <= w1.last_seen_s < 2.5
        assert (statuses["w0"].state, statuses["w0"].complete, statuses["w0"].trial) == ("ended", 1, None)
        # Past the grace period (3 beats of 2 s) without a beat; SQLite's clock counts
        # whole seconds, so the age read is 7 s, never 6.
        time.sleep(7.0)
        assert {s.name: s.state for s in watch.poll()}["w1"] == "late"
        storage.record_heartbeat(running._trial_id)
        assert {s.name: s.state for s in watch.poll()}["w1"] == "running"  # beating again
        study.tell(running, 0.5)
        after = {s.name: s for s in watch.poll()}
        assert (after["w1"].state, after["w1"].complete) == ("idle", 1)  # this process is alive
    finally:
        watch.close()


def test_a_journal_run_lists_its_workers_and_reads_their_beat_files(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run", heartbeat_s=1)
    run.path.mkdir()
    run.use_storage(f"journal:{tmp_path / 'study.log'}")
    study, running = _run_with_running_trial(run)
    statuses = {s.name: s for s in live_workers(str(run.path))}
    assert statuses["w1"].state == "running" and statuses["w1"].trial == running.number
    assert statuses["w1"].last_seen_s is not None and statuses["w1"].last_seen_s < 60  # since it started
    storage = study._storage
    storage.record_heartbeat(running._trial_id)  # what a worker's beat thread does: a beat file
    watch = WorkerWatch(run)
    try:
        assert {s.name: s.state for s in watch.poll()}["w1"] == "running"
        # Past the grace period (3 beats of 1 s) with the beat file unchanged: late.
        time.sleep(3.5)
        late = {s.name: s for s in watch.poll()}["w1"]
        assert late.state == "late" and late.last_seen_s is not None and late.last_seen_s >= 3.0
        storage.record_heartbeat(running._trial_id)
        beating = {s.name: s for s in watch.poll()}["w1"]
        assert beating.state == "running" and beating.last_seen_s is not None and beating.last_seen_s < 1.0
    finally:
        watch.close()
