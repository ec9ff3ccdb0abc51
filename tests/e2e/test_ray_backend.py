"""``evolve --backend ray``: candidates evaluated by Ray actors on a local Ray
(``ray.init(num_cpus=2)``), the run kept in its folder as any other. Skipped where Ray
is not installed (it is an optional extra; ``make test`` installs it)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mergestudio.cli.main import main
from mergestudio.evaluate.resident import ResidentEvaluator
from mergestudio.events import LogLine
from mergestudio.search import SearchControl, resume_search
from mergestudio.search.objectives import Objectives
from mergestudio.search.report import summarize
from mergestudio.search.runner import SearchOutcome
from mergestudio.search.spec import build_genome, load_spec
from mergestudio.search.store import RunFolder, TrialRecord
from mergestudio.search.workers import WorkerPlan, run_with_workers

from tests.core.test_search import lengthen_tasks, write_search_fixture, write_spec
from tests.e2e.test_workers import being_evaluated, study_rows

ray = pytest.importorskip("ray")

BUDGET = 4
PLAN = WorkerPlan(2, backend="ray", heartbeat_s=2)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_search_fixture(tmp_path_factory.mktemp("ray"))
    # Longer tasks, so a trial lasts long enough to be killed or cancelled in the middle.
    lengthen_tasks(root, 400)
    return write_spec(
        root,
        budget={"evaluations": BUDGET},
        evaluation={"batch_size": 4},
        algorithm={"name": "random", "population_size": 2, "seed": 3},
    )


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: object) -> None:
        if isinstance(event, LogLine):
            self.lines.append(event.message)


def _in_thread(function: Callable[[], SearchOutcome]) -> tuple[threading.Thread, list[SearchOutcome]]:
    outcome: list[SearchOutcome] = []
    thread = threading.Thread(target=lambda: outcome.append(function()), daemon=True)
    thread.start()
    return thread, outcome


def _evaluated_now(run: Path) -> tuple[int, str] | None:
    """A trial being evaluated now, if any, and its worker's name."""
    return next(((number, str(owner["name"])) for number, owner in being_evaluated(run)), None)


def _state(run: Path, number: int) -> str:
    rows = study_rows(run, f"SELECT state FROM trials WHERE number = {number}")
    return str(rows[0][0]) if rows else ""


def _wait(predicate: Callable[[], Any], what: str, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found is not None and found is not False:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


def _actor_pid(worker: str) -> int:
    names = [n for n in ray.util.list_named_actors() if n.endswith(f"-{worker}")]
    assert len(names) == 1, names
    return int(ray.get(ray.get_actor(names[0]).ready.remote()))


def _assert_budget_spent_once(records: list[TrialRecord]) -> list[TrialRecord]:
    complete = [r for r in records if r.state == "complete"]
    assert len(complete) == BUDGET
    assert not [r for r in records if r.state in ("running", "waiting")]
    assert len({tuple(sorted(r.genome.items())) for r in complete}) == BUDGET
    return complete


def test_ray_workers_spend_the_budget_once_into_the_run_folder(local_ray: Any, spec: Path, tmp_path: Path) -> None:
    run, log = tmp_path / "run", _Log()
    outcome = run_with_workers(run, PLAN, spec=load_spec(spec), events=log)

    assert outcome.state == "finished", log.lines
    assert any(line.startswith("2 Ray workers started: ray0, ray1 (each an actor with 1 CPU(s), 0 GPU(s)") for line in log.lines)
    folder = RunFolder(run)
    complete = _assert_budget_spent_once(folder.records())
    assert {r.worker for r in complete} <= {"ray0", "ray1"}
    # What `runs show` and the Evolve page read: the run folder's study and items files.
    summary = summarize(run)
    assert [t.number for t in summary.trials if t.state == "complete"] == [r.number for r in complete]
    assert summary.front
    # The actor's scores are the candidate's: the same recipe evaluated here agrees.
    run_spec = folder.load_spec()
    objectives = Objectives.build(run_spec)
    with ResidentEvaluator(build_genome(run_spec).template_model(), objectives.tasks, batch_size=4, dtype="float32") as here:
        for record in complete[:2]:
            assert folder.read_items(record.number)["objectives"] == record.objectives
            expected = objectives.values(here.evaluate(record.recipe_yaml).report)
            assert record.objectives == pytest.approx(expected, rel=1e-5)
    # The actors went with the workers.
    _wait(lambda: not ray.util.list_named_actors() or None, "the actors were gone", 30)


def test_a_ray_task_that_dies_fails_its_trial_with_the_error(local_ray: Any, spec: Path, tmp_path: Path) -> None:
    run, log = tmp_path / "run", _Log()
    thread, outcome = _in_thread(lambda: run_with_workers(run, PLAN, spec=load_spec(spec), events=log))
    failed: TrialRecord | None = None
    while failed is None and thread.is_alive():
        # Kill the actor of a worker in the middle of a candidate (again if that trial
        # ended first).
        found = _wait(lambda: _evaluated_now(run) or (None if thread.is_alive() else (-1, "")), "a candidate ran")
        number, worker = found
        if number == -1:
            break
        os.kill(_actor_pid(worker), signal.SIGKILL)
        _wait(lambda n=number: _state(run, n) not in ("", "RUNNING"), "the killed trial ended")
        record = RunFolder(run).records()[number]
        failed = record if record.state == "failed" else None
    thread.join(300)

    assert failed is not None, "no trial was killed in the middle"
    assert f"the Ray actor of worker {failed.worker} died while evaluating this candidate" in failed.error
    assert outcome and outcome[0].state == "finished", log.lines
    records = RunFolder(run).records()
    _assert_budget_spent_once(records)
    assert f"[{failed.worker}] trial {failed.number} failed: {failed.error}" in log.lines
    # The worker went on (Ray restarted its actor) rather than ending with an error.
    assert not [line for line in log.lines if "ended with an error" in line]


def test_cancel_interrupts_the_ray_tasks_and_the_run_resumes(local_ray: Any, spec: Path, tmp_path: Path) -> None:
    run, log, control = tmp_path / "run", _Log(), SearchControl()
    thread, outcome = _in_thread(lambda: run_with_workers(run, PLAN, spec=load_spec(spec), events=log, control=control))
    number, _worker = _wait(lambda: _evaluated_now(run), "a candidate ran")
    control.cancel()
    thread.join(120)

    assert not thread.is_alive() and outcome[0].state == "stopped", log.lines
    records = RunFolder(run).records()
    assert records[number].state == "interrupted"
    assert not [r for r in records if r.state in ("running", "waiting")]
    _wait(lambda: not ray.util.list_named_actors() or None, "the actors were gone", 30)
    resumed = resume_search(run)  # in this process, without Ray
    assert resumed.state == "finished"
    _assert_budget_spent_once(RunFolder(run).records())


def test_a_cluster_without_the_gpus_asked_for_is_refused_before_the_run_is_written(
    local_ray: Any, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["evolve", str(spec), str(run), "--backend", "ray", "--gpus-per-worker", "1", "-q"]) == 1
    error = capsys.readouterr().err
    assert "each worker needs 1 GPU(s)" in error and "the Ray cluster has 0" in error
    assert not (run / "spec.yml").exists() and not (run / "study.db").exists()
    assert ray.is_initialized()  # the test's Ray: joined, not shut down
