"""Workers sharing a run, and one controller per run, as a user runs them: real
``mergestudio evolve`` / ``worker`` processes on tiny bigram models."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mergestudio.cli.main import main
from mergestudio.search.store import RunFolder, TrialRecord
from optuna.trial import FrozenTrial, TrialState

from tests.core.test_search import lengthen_tasks, write_search_fixture, write_spec

BUDGET = 8
HEARTBEAT = "2"  # seconds: a dead worker's trial is stale after 6 (a busy machine beats late)


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mergestudio.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout_s: float = 400) -> str:
    output, _ = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, output
    return output


def study_rows(run: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the study's SQLite file, read while the run writes it (plain
    sqlite3: cheaper than opening Optuna's storage several times a second)."""
    db = run / "study.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _shared_trials(run: Path) -> list[FrozenTrial] | None:
    """The trials of a run kept in a storage of its own (``--storage``), through Optuna;
    None for a run in its folder's study.db."""
    if not (run / "storage.url").is_file():
        return None
    try:
        return RunFolder(run).open_study().get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def _complete_count(run: Path) -> int:
    trials = _shared_trials(run)
    if trials is not None:
        return sum(1 for t in trials if t.state == TrialState.COMPLETE)
    rows = study_rows(run, "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
    return int(rows[0][0]) if rows else 0


def being_evaluated(run: Path) -> list[tuple[int, dict[str, Any]]]:
    """Running trials whose recipe is stored (being evaluated): number and worker."""
    trials = _shared_trials(run)
    if trials is not None:
        return [
            (t.number, t.user_attrs["worker"])
            for t in trials
            if t.state == TrialState.RUNNING and "recipe" in t.user_attrs
        ]
    rows = study_rows(
        run,
        "SELECT t.number, w.value_json FROM trials t JOIN trial_user_attributes w ON w.trial_id = t.trial_id "
        "AND w.key = 'worker' WHERE t.state = 'RUNNING' AND EXISTS (SELECT 1 FROM trial_user_attributes a "
        "WHERE a.trial_id = t.trial_id AND a.key = 'recipe')",
    )
    return [(int(number), json.loads(worker)) for number, worker in rows]


def _wait_for(
    predicate: Any, process: subprocess.Popen[str], what: str, timeout_s: float = 240
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the process ended before {what}:\n{process.stdout.read() if process.stdout else ''}")
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting until {what}")


def _assert_budget_spent_once(records: list[TrialRecord]) -> list[TrialRecord]:
    """Exactly BUDGET complete trials, each with its results file, none left running or
    waiting, no candidate evaluated twice; returns the complete ones."""
    complete = [r for r in records if r.state == "complete"]
    assert len(complete) == BUDGET
    assert not [r for r in records if r.state in ("running", "waiting")]
    genomes = [tuple(sorted(r.genome.items())) for r in complete]
    assert len(set(genomes)) == BUDGET  # no duplicate: workers draw apart
    return complete


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_search_fixture(tmp_path_factory.mktemp("workers"))
    # Longer tasks, so a trial lasts long enough to be killed in the middle of one.
    lengthen_tasks(root, 120)
    # Random sampling: two workers proposing the same candidate would show as a duplicate
    # genome (NSGA-II's crossover repeats parents on its own).
    return write_spec(
        root,
        budget={"evaluations": BUDGET},
        evaluation={"batch_size": 4},
        algorithm={"name": "random", "population_size": 4, "seed": 3},
    )


def test_two_local_workers_spend_the_budget_once(spec: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    output = _finish(_cli("evolve", str(spec), str(run), "--workers", "2", "--heartbeat", HEARTBEAT))
    assert "2 workers started" in output
    assert f"search finished: evaluation budget spent ({BUDGET} trials)" in output
    folder = RunFolder(run)
    complete = _assert_budget_spent_once(folder.records())
    assert {r.worker for r in complete} == {"w0", "w1"}  # both worked
    for record in complete:
        assert folder.read_items(record.number)["objectives"] == record.objectives
    # Every trial reached the controller's printout, once.
    for record in complete:
        assert output.count(f"trial {record.number:>4} [gen") == 1


@pytest.mark.parametrize("storage", ["study.db", "journal"])
def test_a_killed_workers_trial_runs_again(spec: Path, tmp_path: Path, storage: str) -> None:
    """kill -9 of a worker mid-trial, in the run folder's SQLite study (Optuna's RDB
    heartbeats) and in a journal file (``search.heartbeat``'s beat files)."""
    run = tmp_path / "run"
    shared = ["--storage", f"journal:{tmp_path / 'study.journal'}"] if storage == "journal" else []
    controller = _cli("evolve", str(spec), str(run), "--workers", "2", "--heartbeat", HEARTBEAT, *shared)

    def w1_mid_trial() -> Any:
        if _complete_count(run) < 2:
            return None
        return next(((n, w) for n, w in being_evaluated(run) if w["name"] == "w1"), None)

    number, worker = _wait_for(w1_mid_trial, controller, "worker w1 was in the middle of a trial")
    pid = int(worker["pid"])
    os.kill(pid, signal.SIGKILL)
    output = _finish(controller)

    assert f"worker w1 (pid {pid}) died (signal 9)" in output
    assert f"trial {number} lost its worker (no heartbeat)" in output
    records = RunFolder(run).records()
    assert records[number].state == "interrupted"
    complete = _assert_budget_spent_once(records)
    trials = RunFolder(run).open_study().get_trials(deepcopy=False)
    reruns = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(reruns) == 1  # queued again once, with its genome, and run to the end
    rerun = records[reruns[0].number]
    assert rerun.state == "complete" and rerun.genome == records[number].genome
    assert rerun.worker == "w0"  # the survivor ran it
    assert rerun in complete


def test_a_second_resume_is_refused_and_the_first_finishes(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the run lock, the second resume marked the first's running trial failed and
    the first died with UpdateFinishedTrialError."""
    run = tmp_path / "run"
    # A budget that outlasts the second resume's start by many trials, on a quiet machine
    # too (with BUDGET, the first resume could finish before the second asked).
    budget = 5 * BUDGET
    assert main(["evolve", str(spec), str(run), "--evaluations", "2", "-q"]) == 0
    first = _cli("evolve", "--resume", str(run), "--evaluations", str(budget), "-q")
    _wait_for(
        lambda: _complete_count(run) >= 3 and being_evaluated(run),
        first,
        "the first resume was in the middle of a trial",
    )
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--evaluations", "20"]) == 1
    refusal = capsys.readouterr().err
    assert f"this run is already running (pid {first.pid} on " in refusal
    assert "nothing was changed" in refusal
    _finish(first)
    records = RunFolder(run).records()
    assert [r.state for r in records] == ["complete"] * budget  # nothing failed, budget unchanged


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_a_worker_joins_through_shared_storage(spec: Path, tmp_path: Path, kind: str) -> None:
    """``mergestudio worker RUN --storage URL`` beside a run kept outside its folder: a
    journal file, or an RDB URL through SQLAlchemy (``sqlite:///``: the same
    ``RDBStorage`` code as PostgreSQL and MySQL, which cannot run here)."""
    run, shared = tmp_path / "run", tmp_path / "shared"
    shared.mkdir()
    study = shared / ("study.journal" if kind == "journal" else "study.sqlite")
    url = f"journal:{study}" if kind == "journal" else f"sqlite:///{study}"
    controller = _cli("evolve", str(spec), str(run), "--workers", "1", "--storage", url)
    _wait_for(lambda: (run / "storage.url").is_file() and study.is_file(), controller, "the study existed")
    joined = _cli("worker", str(run), "--name", "joiner", "--storage", url)
    output = _finish(joined)
    _finish(controller)
    assert "worker joiner: finished" in output
    assert (run / "storage.url").read_text().strip() == url
    assert not (run / "study.db").exists()
    records = RunFolder(run).records()
    assert records == RunFolder(run, url).records()  # the run's record and the URL: one study
    complete = _assert_budget_spent_once(records)
    assert {r.worker for r in complete} <= {"w0", "joiner"}
