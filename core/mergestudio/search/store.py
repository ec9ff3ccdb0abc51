"""The run folder: the search spec, Optuna's study and every trial's item-level results.

Layout::

    spec.yml            the resolved spec (absolute paths); the run's source of truth
    study.db            Optuna's SQLite storage (``optuna-dashboard sqlite:///…/study.db``)
    storage.url         instead of study.db: the shared storage's URL (an RDB URL such as
                        ``postgresql://…``, or ``journal:/path/to/file`` for a journal file)
    controller.lock     who runs the run now (``search.lock``)
    trials/00037.json   trial 37's evaluation report with every item's result

Workers (``search.workers``) share the study: each records a heartbeat per running
trial (Optuna's RDB heartbeats; for a journal file, ``search.heartbeat``'s), so a
worker that dies mid-trial is noticed by the others (and the ``--workers`` controller)
once its heartbeat is older than the grace period; the trial is failed and queued again
with its genome (Optuna's ``RetryHeartbeatStaleTrialCallback``).

The study is the store: trial parameters, objective values, state, and our user
attributes (genome, recipe YAML, every objective, timings, generation). Item-level
results are too large for attributes, so they go to one JSON file per trial, written
atomically (temporary file, then rename) before the trial is told to the study: a trial
the study calls complete always has its file.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import MergeStudioError
from mergestudio.search.lock import LOCK_FILE
from mergestudio.search.spec import Direction, SearchSpec, SpecError, load_spec

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "mergestudio-search"
SPEC_FILE = "spec.yml"
DB_FILE = "study.db"
STORAGE_FILE = "storage.url"
TRIALS_DIR = "trials"
INTERRUPTED_ATTR = "interrupted"  # a failed trial that a crash or a cancel cut short
WORKER_ATTR = "worker"  # who runs a trial: {"name", "host", "pid", "boot"}
SURPLUS_ATTR = "surplus"  # asked for by a worker after the budget was claimed: never run
JOURNAL_PREFIX = "journal:"
# Heartbeats of running trials, in seconds; a trial whose last heartbeat is older than
# the grace period belongs to a dead worker. Short enough that a lost trial is re-run
# within a minute, long enough that a busy machine's late heartbeat is not taken for a
# death.
HEARTBEAT_S = 10
GRACE_PERIODS = 3  # grace period = this many heartbeats


class RunError(MergeStudioError):
    """A run folder is missing, incomplete, or not what the command expects."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the run folder holds it."""

    number: int
    # "complete", "failed", "interrupted" (runs again), "running", "waiting", "surplus"
    # (asked for after the budget was claimed by other workers; never evaluated)
    state: str
    genome: dict[str, float]
    objectives: dict[str, float]
    study_values: tuple[float, ...]
    generation: int
    duration_s: float
    merge_s: float
    eval_s: float
    recipe_yaml: str
    error: str
    worker: str = ""  # "host:pid" (or the local worker's name) that ran or runs it


class RunFolder:
    def __init__(self, path: str | Path, storage: str | None = None, heartbeat_s: int = HEARTBEAT_S) -> None:
        """``storage``: the study's URL when it is not the folder's own (a worker joining
        from another machine); ``heartbeat_s``: how often running trials beat."""
        self.path = Path(path)
        self._storage_override = storage
        self.heartbeat_s = heartbeat_s
        self.requeued: list[tuple[int, int]] = []  # (dead trial, its re-run) seen by this process

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def storage_url(self) -> str:
        if self._storage_override:
            return self._storage_override
        recorded = self.path / STORAGE_FILE
        if recorded.is_file():
            return recorded.read_text(encoding="utf-8").strip()
        return f"sqlite:///{self.db_path.resolve()}"

    def exists(self) -> bool:
        return self.spec_path.is_file() and (self.db_path.is_file() or (self.path / STORAGE_FILE).is_file())

    def use_storage(self, url: str) -> None:
        """Keep this new run's study in ``url`` instead of study.db (before the first open)."""
        write_atomic(self.path / STORAGE_FILE, normalize_storage_url(url) + "\n")

    def create(self, spec: SearchSpec) -> None:
        """Start a new run here; refuse a folder that already holds one."""
        if self.exists():
            raise RunError(
                f"{self.path}: already holds a search run; resume it with --resume, or pick a new folder"
            )
        if self.path.exists() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise RunError(f"{self.path}: folder is not empty; pick a new folder for the run")
        (self.path / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
        write_atomic(self.spec_path, spec.to_yaml())

    def require(self) -> None:
        if not self.exists():
            raise RunError(f"{self.path}: not a search run (no {SPEC_FILE} and {DB_FILE} or {STORAGE_FILE})")

    def load_spec(self) -> SearchSpec:
        self.require()
        try:
            return load_spec(self.spec_path)
        except SpecError as error:
            raise RunError(f"{self.path}: the run's spec no longer validates: {error}") from None

    # ---- the study ---------------------------------------------------------------------

    def open_study(self, directions: list[Direction] | None = None) -> optuna.Study:
        """The run's study; created when ``directions`` is given and it does not exist."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = self._storage()
        if directions is None:
            return optuna.load_study(study_name=STUDY_NAME, storage=storage)
        return optuna.create_study(
            study_name=STUDY_NAME, storage=storage, directions=directions, load_if_exists=True
        )

    def _storage(self) -> optuna.storages.BaseStorage:
        import optuna

        url = self.storage_url
        if url.startswith(JOURNAL_PREFIX):
            # Optuna's heartbeats are RDB-only; ours beat in files beside the journal.
            from optuna.storages.journal import JournalFileBackend

            from mergestudio.search.heartbeat import BeatingJournalStorage, beats_dir

            journal = url.removeprefix(JOURNAL_PREFIX)
            return BeatingJournalStorage(
                JournalFileBackend(journal),
                beats_dir(journal),
                interval_s=self.heartbeat_s,
                grace_s=self.heartbeat_s * GRACE_PERIODS,
                on_stale=_RequeueStale(self.requeued),
            )
        sqlite = url.startswith("sqlite:")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are marked experimental
            storage = optuna.storages.RDBStorage(
                url,
                # Waiting beats failing when optuna-dashboard or a worker holds the file.
                engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                heartbeat_interval=self.heartbeat_s,
                grace_period=self.heartbeat_s * GRACE_PERIODS,
                heartbeat_stale_trial_callback=_RequeueStale(self.requeued),
            )
        if sqlite:
            _journal_in_wal(storage)
        return storage

    def records(self, study: optuna.Study | None = None) -> list[TrialRecord]:
        study = study or self.open_study()
        return [record_of(t) for t in study.get_trials(deepcopy=False)]

    # ---- item-level results ------------------------------------------------------------

    def items_path(self, number: int) -> Path:
        return self.path / TRIALS_DIR / f"{number:05d}.json"

    def write_items(self, number: int, data: dict[str, Any]) -> Path:
        path = self.items_path(number)
        write_atomic(path, json.dumps(data, indent=1) + "\n")
        return path

    def read_items(self, number: int) -> dict[str, Any]:
        path = self.items_path(number)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise RunError(f"{path}: cannot read trial results ({error.strerror})") from error
        return data


def _journal_in_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging without an fsync per commit: a trial then costs a few
    milliseconds of bookkeeping instead of a few hundred. A killed process loses
    nothing (committed pages are in the OS's cache); a power cut may lose the last
    trials but never corrupts the file. Readers (optuna-dashboard) do not block us."""
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened before the listener reconnect with it


def normalize_storage_url(url: str) -> str:
    """A journal file's path made absolute (workers may start elsewhere); other URLs as given."""
    if url.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(Path(url.removeprefix(JOURNAL_PREFIX)).expanduser().resolve())
    return url


class _RequeueStale:
    """Optuna's heartbeat callback: a dead worker's trial runs again with its genome
    (``RetryHeartbeatStaleTrialCallback`` queues it), and this process remembers which
    trial replaced which, for its log."""

    def __init__(self, requeued: list[tuple[int, int]]) -> None:
        self.requeued = requeued

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        RetryHeartbeatStaleTrialCallback()(study, trial)
        reruns = [t.number for t in study.get_trials(deepcopy=False) if _retry_of(t) == trial.number]
        if reruns:
            self.requeued.append((trial.number, max(reruns)))


def _retry_of(trial: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one re-runs (the last in Optuna's retry history), if any."""
    history = trial.system_attrs.get("retry_history")
    return int(history[-1]) if isinstance(history, list) and history else None


def worker_identity(name: str = "") -> dict[str, object]:
    """What a trial records about the process that runs it (``WORKER_ATTR``)."""
    from mergestudio.search.lock import boot_id

    host, pid = socket.gethostname(), os.getpid()
    return {"name": name or f"{host}:{pid}", "host": host, "pid": pid, "boot": boot_id()}


def owner_is_gone(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the process that runs ``trial`` is certainly dead: it recorded no owner
    (a run from a single process), or it was this machine's, in this or another boot,
    and its pid is gone. Another machine's worker is judged by its heartbeats instead."""
    from mergestudio.search.lock import LockOwner

    owner = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(owner, dict):
        return True
    if owner.get("host") != socket.gethostname():
        return False
    record = LockOwner(int(owner.get("pid", 0)), str(owner["host"]), str(owner.get("boot", "")), 0.0, "")
    return not record.alive_here()


def recover_interrupted(study: optuna.Study, requeue: bool = False) -> list[int]:
    """Trials a killed process left RUNNING: mark them failed (and interrupted), and
    return their numbers. Finished trials are never touched, so none is repeated; nor are
    running trials of live workers (``owner_is_gone``).

    A single process re-runs the candidate without queueing it: samplers are reseeded
    per draw and ignore failed trials, so the next draw proposes exactly the candidate
    that was cut short. (Queuing its parameters instead would bypass the sampler, and
    NSGA-II would not count the re-run in its generation.) Workers draw apart, so with
    ``requeue`` the trial is queued again with its genome instead."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    interrupted = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if owner_is_gone(t)
    ]
    recovered = []
    for frozen in interrupted:
        try:
            optuna.Trial(study, frozen._trial_id).set_user_attr(INTERRUPTED_ATTR, True)
            study.tell(frozen.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # a worker's heartbeat check failed it first, and queued its re-run
        recovered.append(frozen.number)
        if requeue:
            RetryHeartbeatStaleTrialCallback()(study, study.get_trials(deepcopy=False)[frozen.number])
    return recovered


def record_of(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    timings = attrs.get("timings", {})
    state = trial.state.name.lower().replace("fail", "failed")
    if state == "failed" and attrs.get(SURPLUS_ATTR):
        state = "surplus"
    elif state == "failed" and (attrs.get(INTERRUPTED_ATTR) or "error" not in attrs):
        state = "interrupted"  # cut short (a crash, a cancel, a dead worker), not an error
    return TrialRecord(
        number=trial.number,
        state=state,
        genome=dict(attrs.get("genome", trial.params)),
        objectives=dict(attrs.get("objectives", {})),
        study_values=tuple(trial.values or ()),
        generation=int(attrs.get("generation", -1)),
        duration_s=float(timings.get("total_s", 0.0)),
        merge_s=float(timings.get("merge_s", 0.0)),
        eval_s=float(timings.get("eval_s", 0.0)),
        recipe_yaml=str(attrs.get("recipe", "")),
        error=str(attrs.get("error", "")),
        worker=_worker_name(attrs.get(WORKER_ATTR)),
    )


def _worker_name(owner: object) -> str:
    return str(owner.get("name", "")) if isinstance(owner, dict) else ""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader (or a crash) sees the old file or the new
    one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
