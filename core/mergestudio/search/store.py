"""The run folder: the search spec, Optuna's study and every trial's item-level results.

Layout::

    spec.yml            the resolved spec (absolute paths); the run's source of truth
    study.db            Optuna's SQLite storage (``optuna-dashboard sqlite:///…/study.db``)
    trials/00037.json   trial 37's evaluation report with every item's result

The study is the store: trial parameters, objective values, state, and our user
attributes (genome, recipe YAML, every objective, timings, generation). Item-level
results are too large for attributes, so they go to one JSON file per trial, written
atomically (temporary file, then rename) before the trial is told to the study: a trial
the study calls complete always has its file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import MergeStudioError
from mergestudio.search.spec import Direction, SearchSpec, SpecError, load_spec

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "mergestudio-search"
SPEC_FILE = "spec.yml"
DB_FILE = "study.db"
TRIALS_DIR = "trials"
INTERRUPTED_ATTR = "interrupted"  # a failed trial that a crash or a cancel cut short


class RunError(MergeStudioError):
    """A run folder is missing, incomplete, or not what the command expects."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the run folder holds it."""

    number: int
    state: str  # "complete", "failed", "interrupted" (runs again on resume), "running", "waiting"
    genome: dict[str, float]
    objectives: dict[str, float]
    study_values: tuple[float, ...]
    generation: int
    duration_s: float
    merge_s: float
    eval_s: float
    recipe_yaml: str
    error: str


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.db_path.resolve()}"

    def exists(self) -> bool:
        return self.spec_path.is_file() and self.db_path.is_file()

    def create(self, spec: SearchSpec) -> None:
        """Start a new run here; refuse a folder that already holds one."""
        if self.exists():
            raise RunError(
                f"{self.path}: already holds a search run; resume it with --resume, or pick a new folder"
            )
        if self.path.exists() and any(self.path.iterdir()):
            raise RunError(f"{self.path}: folder is not empty; pick a new folder for the run")
        (self.path / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
        write_atomic(self.spec_path, spec.to_yaml())

    def require(self) -> None:
        if not self.exists():
            raise RunError(f"{self.path}: not a search run (no {SPEC_FILE} and {DB_FILE})")

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
        storage = optuna.storages.RDBStorage(
            self.storage_url,
            # Waiting beats failing when optuna-dashboard reads the file at the same time.
            engine_kwargs={"connect_args": {"timeout": 60}},
        )
        _journal_in_wal(storage)
        if directions is None:
            return optuna.load_study(study_name=STUDY_NAME, storage=storage)
        return optuna.create_study(
            study_name=STUDY_NAME, storage=storage, directions=directions, load_if_exists=True
        )

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


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Trials a killed process left RUNNING: mark them failed (and interrupted), and
    return their numbers. Finished trials are never touched, so none is repeated.

    The candidate runs again without being queued: samplers are reseeded per draw and
    ignore failed trials, so the next draw proposes exactly the candidate that was cut
    short. (Queuing its parameters instead would bypass the sampler, and NSGA-II would
    not count the re-run in its generation.)"""
    import optuna
    from optuna.trial import TrialState

    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in interrupted:
        optuna.Trial(study, frozen._trial_id).set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(frozen.number, state=TrialState.FAIL)
    return [t.number for t in interrupted]


def record_of(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    timings = attrs.get("timings", {})
    state = trial.state.name.lower().replace("fail", "failed")
    if state == "failed" and attrs.get(INTERRUPTED_ATTR):
        state = "interrupted"
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
    )


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
