"""``mergestudio evolve`` as a user runs it: killed with SIGKILL mid-run, resumed, shown,
exported."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mergestudio.cli.main import main
from mergestudio.search import start_search
from mergestudio.search.store import RunFolder

from tests.core.test_search import lengthen_tasks, write_search_fixture, write_spec

BUDGET = 10


def _evolve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mergestudio.cli.main", "evolve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _trial_states(run: Path) -> dict[str, int]:
    """Trials by state, read straight from the study's SQLite file while evolve writes it;
    a running trial counts only once its recipe is stored (it is being evaluated)."""
    db = run / "study.db"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT state, COUNT(*) FROM trials t WHERE state != 'RUNNING' OR EXISTS "
                "(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'recipe') "
                "GROUP BY state"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return {str(state): int(count) for state, count in rows}


def _wait_until_mid_trial(
    run: Path, complete: int, process: subprocess.Popen[str], timeout_s: float = 120
) -> None:
    """Until ``complete`` trials are done and the next one is being evaluated."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"evolve ended before it could be killed:\n{process.stdout.read() if process.stdout else ''}"
            )
        states = _trial_states(run)
        if states.get("COMPLETE", 0) >= complete and states.get("RUNNING", 0):
            return
        time.sleep(0.01)
    pytest.fail("evolve did not finish trials in time")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_search_fixture(tmp_path_factory.mktemp("evolve"))
    # Longer tasks, so a trial takes long enough to be killed in the middle of one.
    lengthen_tasks(root, 120)
    return write_spec(root, budget={"evaluations": BUDGET}, evaluation={"batch_size": 4})


def test_kill_9_then_resume_loses_and_repeats_nothing(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    process = _evolve(str(spec), str(run))
    _wait_until_mid_trial(run, 3, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    before = RunFolder(run).records()
    finished = {r.number: r for r in before if r.state == "complete"}
    unfinished = [r for r in before if r.state == "running"]
    assert 3 <= len(finished) < BUDGET
    assert len(unfinished) == 1 and unfinished[0].genome  # killed in the middle of a trial

    assert main(["evolve", "--resume", str(run)]) == 0
    output = capsys.readouterr().err
    assert f"resuming nsga2 search in {run} ({len(finished)} trials done)" in output

    after = RunFolder(run).records()
    complete = [r for r in after if r.state == "complete"]
    assert len(complete) == BUDGET  # nothing finished ran twice: the budget counts every complete trial
    assert not [r for r in after if r.state in ("running", "waiting")]
    for number, record in finished.items():  # nothing finished was lost or changed
        assert after[number] == record
    killed = unfinished[0]  # the interrupted trial ran again, once, with its genome
    assert after[killed.number].state == "interrupted"
    rerun = next(r for r in complete if r.number > killed.number)
    assert rerun.genome == killed.genome
    for record in complete:
        assert RunFolder(run).read_items(record.number)["objectives"] == record.objectives

    # The crash changed nothing: an uninterrupted run finds the same trials, in order.
    start_search(spec, tmp_path / "straight")
    straight = [(r.genome, r.objectives) for r in RunFolder(tmp_path / "straight").records()]
    assert [(r.genome, r.objectives) for r in complete] == straight


def test_runs_show_and_export(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["evolve", str(spec), str(run), "--evaluations", "4", "-q"]) == 0
    capsys.readouterr()
    assert main(["runs", "show", str(run)]) == 0
    text = capsys.readouterr().out
    assert "Pareto front (ta, tb)" in text and "best per objective" in text
    assert main(["runs", "show", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2, 3]
    trial = summary["front"][0]
    assert main(["export", str(run), "--trial", str(trial), str(tmp_path / "model"), "-q"]) == 0
    assert "**trial**: " + str(trial) in (tmp_path / "model" / "README.md").read_text()
    assert main(["export", str(run), "--trial", "99", str(tmp_path / "other"), "-q"]) == 1
    assert "no trial 99" in capsys.readouterr().err
    assert main(["evolve", "--resume", str(tmp_path / "nothing")]) == 1
