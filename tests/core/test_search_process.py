"""A search in a child process (``mergestudio.search.process``): the events that come back
are the run's, the baselines are scored and saved, the control words work across the
process boundary, and a child that dies is reported, never waited on forever."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from mergestudio.events import LogLine
from mergestudio.search import events as ev
from mergestudio.search.baselines import BASELINES_FILE, load_baselines
from mergestudio.search.process import (
    BaselinesScored,
    SearchProcess,
    SearchProcessError,
    SearchRequest,
    run_request,
)
from mergestudio.search.spec import spec_from_dict
from mergestudio.search.store import RunFolder
from mergestudio.search.workers import WorkerPlan

from .test_search import spec_dict, write_search_fixture


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search_fixture(tmp_path_factory.mktemp("search_process"))


def _spec(fixture_dir: Path, evaluations: int = 4):  # type: ignore[no-untyped-def]
    return spec_from_dict(spec_dict(budget={"evaluations": evaluations}), root=fixture_dir)


def _run_child(process: SearchProcess) -> list[object]:
    process.start()
    try:
        return list(process.events())
    finally:
        process.close()


def test_a_child_search_sends_the_runs_events_and_saves_its_baselines(fixture_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = SearchProcess(SearchRequest(run, _spec(fixture_dir)))
    events = _run_child(process)

    assert process.ended is not None and process.ended.how == "returned", process.ended
    outcome = process.ended.outcome
    assert outcome is not None and outcome.state == "finished" and outcome.complete_trials == 4
    kinds = [type(e) for e in events]
    # Baselines first (before the run folder exists), then the run announces itself.
    assert kinds.index(BaselinesScored) < kinds.index(ev.SearchStarted)
    scored = next(e for e in events if isinstance(e, BaselinesScored))
    assert [b.label for b in scored.baselines] == ["a", "b", "linear"]  # no base: no TA/TIES
    assert load_baselines(run, _spec(fixture_dir)) == list(scored.baselines)
    assert (run / BASELINES_FILE).is_file()
    finished = [e for e in events if isinstance(e, ev.TrialFinished) and e.state == "complete"]
    stored = {r.number: r.objectives for r in RunFolder(run).records() if r.state == "complete"}
    assert {e.number: e.objectives for e in finished} == stored
    assert isinstance(events[-1], ev.SearchStateChanged) and events[-1].state == "finished"
    assert any(isinstance(e, LogLine) for e in events)


def test_control_words_reach_the_child(fixture_dir: Path, tmp_path: Path) -> None:
    """Pause after the first trial, resume, then stop: the child obeys each in turn."""
    run = tmp_path / "run"
    process = SearchProcess(SearchRequest(run, _spec(fixture_dir, evaluations=8)))
    process.start()
    states: list[str] = []
    finished = 0
    try:
        for event in process.events():
            if isinstance(event, ev.TrialFinished) and not event.replayed:
                finished += 1
                if finished == 1:
                    process.pause()
            elif isinstance(event, ev.SearchStateChanged):
                states.append(event.state)
                if event.state == "paused":
                    process.resume()
                elif event.state == "running" and "paused" in states:
                    process.stop()
    finally:
        process.close()
    assert process.ended is not None and process.ended.outcome is not None
    assert process.ended.outcome.state == "stopped"
    assert states[-1] == "stopped" and "paused" in states
    assert 1 <= process.ended.outcome.complete_trials < 8


def test_a_stop_before_the_first_trial_ends_the_request(fixture_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = SearchProcess(SearchRequest(run, _spec(fixture_dir)))
    process.stop()  # waits in the pipe until the child listens
    events = _run_child(process)
    assert process.ended is not None and process.ended.how == "cancelled"
    assert not any(isinstance(e, ev.TrialFinished) for e in events)
    assert not RunFolder(run).exists()


def test_a_child_that_dies_is_reported_with_its_exit_code(fixture_dir: Path, tmp_path: Path) -> None:
    process = SearchProcess(SearchRequest(tmp_path / "run", _spec(fixture_dir, evaluations=50)))
    process.start()
    with pytest.raises(SearchProcessError, match=r"ended unexpectedly \(exit code -9\).*can be resumed"):
        try:
            for event in process.events():
                if isinstance(event, ev.TrialStarted):
                    assert process.pid is not None
                    os.kill(process.pid, signal.SIGKILL)
        finally:
            process.close()


def test_a_failing_request_says_why(fixture_dir: Path, tmp_path: Path) -> None:
    """Resuming a folder that holds no run fails in the child; the parent gets the reason."""
    process = SearchProcess(SearchRequest(tmp_path / "nothing-here"))
    _run_child(process)
    assert process.ended is not None and process.ended.how == "failed"
    assert "nothing-here" in process.ended.error


def test_run_request_in_this_thread_resumes_with_cached_baselines(fixture_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first: list[object] = []
    run_request(SearchRequest(run, _spec(fixture_dir, evaluations=2)), events=first.append)
    again: list[object] = []
    outcome = run_request(SearchRequest(run, None, evaluations=4), events=again.append)
    assert outcome.complete_trials == 4
    cached = next(e for e in again if isinstance(e, BaselinesScored))
    assert cached == next(e for e in first if isinstance(e, BaselinesScored))
    # Read from baselines.json, not scored again: no "baseline …: evaluating" lines.
    assert not any(isinstance(e, LogLine) and "evaluating" in e.message for e in again)


def test_a_child_search_runs_its_request_with_workers(fixture_dir: Path, tmp_path: Path) -> None:
    """``SearchRequest.workers``: the window's way to run a search with N worker processes.
    The child controls the run; its events are every worker's trials."""
    run = tmp_path / "run"
    process = SearchProcess(SearchRequest(run, _spec(fixture_dir), workers=WorkerPlan(2, heartbeat_s=2)))
    events = _run_child(process)

    assert process.ended is not None and process.ended.how == "returned", process.ended
    assert process.ended.outcome is not None and process.ended.outcome.state == "finished"
    assert any(isinstance(e, LogLine) and e.message.startswith("2 workers started: w0 (pid") for e in events)
    assert (run / BASELINES_FILE).is_file()
    complete = [r for r in RunFolder(run).records() if r.state == "complete"]
    assert len(complete) == 4 and {r.worker for r in complete} <= {"w0", "w1"}
    finished = {e.number for e in events if isinstance(e, ev.TrialFinished) and e.state == "complete"}
    assert finished == {r.number for r in complete}
    # Who runs what, when the controller's follower saw trials running (a quick machine
    # may finish these tiny trials between two of its polls).
    named = {w.name for e in events if isinstance(e, ev.WorkersChanged) for w in e.workers}
    assert named <= {"w0", "w1"}
