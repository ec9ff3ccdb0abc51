"""One controller per run: a lock file in the run folder.

Whoever starts or resumes a run (``evolve``, ``evolve --resume``, the window's Start
and Resume) holds ``controller.lock`` until it ends. A second controller is refused
with a message naming the holder, before it reads or writes anything in the run; the
window opens a locked run read-only and follows it (``search.follow``). Workers that
join a run (``mergestudio worker``) take no lock: many workers share one study.

The lock is an OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on the
file, which the kernel drops when its process dies however it dies: a lock left by a
killed controller is free for the next one, and no two takers can race for it. The
file's text only says who holds it (host, boot, pid, command) for messages: a holder
that did not clear it (it was killed) is reported as the stale lock taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from mergestudio.errors import MergeStudioError

LOCK_FILE = "controller.lock"


class RunLocked(MergeStudioError):
    """Another live process controls the run. ``owner`` says which (None: unknown)."""

    def __init__(self, message: str, owner: LockOwner | None) -> None:
        super().__init__(message)
        self.owner = owner


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    boot_id: str
    started: float  # Unix time the lock was taken
    command: str

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} since {since} ({self.command})"

    def alive_here(self) -> bool:
        """Whether this owner is a live process of this machine in this boot (a pid
        from another boot or host, or of a process that ended, is not)."""
        if self.host != socket.gethostname() or self.boot_id != boot_id():
            return False
        return pid_alive(self.pid)


def current_owner() -> LockOwner:
    return LockOwner(os.getpid(), socket.gethostname(), boot_id(), time.time(), _command_line())


def boot_id() -> str:
    """This boot of this machine (Linux: the kernel's random boot id); "" where unknown."""
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    return ""


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:  # Windows: os.kill(pid, 0) is not a probe; assume alive
        return True
    return True


def _command_line() -> str:
    args = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return " ".join(args)[:200]


# Locks this process holds, by resolved folder: taking one again nests (the window's
# search request holds the lock around its baselines and the search it then starts).
_held: dict[Path, tuple[RunLock, int]] = {}
_held_guard = threading.Lock()


class RunLock:
    """``with RunLock(run_dir):`` holds the run's controller lock, or raises RunLocked.

    ``stale_owner`` is set when the lock was taken over from a process that ended
    without releasing it (it was killed, or its machine rebooted)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.stale_owner: LockOwner | None = None
        self._stream: IO[str] | None = None
        self._key = self.run_dir.resolve()

    def acquire(self) -> RunLock:
        with _held_guard:
            held = _held.get(self._key)
            if held is not None:
                _held[self._key] = (held[0], held[1] + 1)
                return held[0]
            self._take()
            _held[self._key] = (self, 1)
            return self

    def release(self) -> None:
        with _held_guard:
            lock, count = _held.get(self._key, (self, 1))
            if count > 1:
                _held[self._key] = (lock, count - 1)
                return
            _held.pop(self._key, None)
            lock._give_back()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    # ---- the file ------------------------------------------------------------------------

    def _take(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stream = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        locked = _try_lock(stream)
        previous = _read_owner(stream)
        if locked is None:  # a file system without locks: judge by the owner's record
            locked = previous is None or not _may_be_alive(previous)
        if not locked:
            stream.close()
            raise RunLocked(locked_message(self.run_dir, previous), previous)
        # The holder on record is gone (killed, or another boot): a live holder keeps
        # the OS lock and we would not be here.
        self.stale_owner = previous
        stream.seek(0)
        stream.truncate()
        stream.write(json.dumps(asdict(current_owner())) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
        self._stream = stream

    def _give_back(self) -> None:
        stream = self._stream
        if stream is None:
            return
        self._stream = None
        # Cleared, never deleted: deleting a locked file lets a second process lock a
        # new file of the same name while a third still waits on the old one.
        with contextlib.suppress(OSError):
            stream.seek(0)
            stream.truncate()
            stream.flush()
        _unlock(stream)
        stream.close()


def locked_message(run_dir: Path, owner: LockOwner | None) -> str:
    who = owner.describe() if owner is not None else "another process"
    return (
        f"{run_dir}: this run is already running ({who}); nothing was changed. Wait for it "
        "to end or stop it first; the window can open it read-only to follow it, and "
        "`mergestudio worker RUN` adds workers to it."
    )


def run_owner(run_dir: str | Path) -> LockOwner | None:
    """Who controls the run now: the live holder of its lock, or None when it is free
    (no lock file, a cleared one, or one whose holder is gone)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        stream = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    with stream:
        owner = _read_owner(stream)
        if owner is None:
            return None
        if _lock_is_free(path):
            return None
        return owner


def _lock_is_free(path: Path) -> bool:
    """Probe the OS lock without keeping it (a lock this process holds counts as taken)."""
    with _held_guard:
        if path.parent.resolve() in _held:
            return False
    try:
        stream = open(path, "a+", encoding="utf-8")  # noqa: SIM115
    except OSError:
        return True
    with stream:
        locked = _try_lock(stream)
        if locked is None:
            owner = _read_owner(stream)
            return owner is None or not _may_be_alive(owner)
        if locked:
            _unlock(stream)
        return locked


def _may_be_alive(owner: LockOwner) -> bool:
    """Without OS locks: a holder on another machine cannot be checked, so it counts as
    alive; one of this machine is alive when its pid is, in this boot."""
    return owner.host != socket.gethostname() or owner.alive_here()


def _read_owner(stream: IO[str]) -> LockOwner | None:
    stream.seek(0)
    text = stream.read().strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return LockOwner(
            int(data["pid"]), str(data["host"]), str(data["boot_id"]), float(data["started"]), str(data["command"])
        )
    except (ValueError, KeyError, TypeError):  # written by something else: still a holder
        return LockOwner(0, "?", "", 0.0, f"unreadable lock file {text[:60]!r}")


if sys.platform == "win32":
    import msvcrt

    def _try_lock(stream: IO[str]) -> bool | None:
        """True: locked; False: another process holds it; None: no locks here."""
        stream.seek(0)
        try:
            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        except PermissionError:
            return False
        except OSError:
            return None
        return True

    def _unlock(stream: IO[str]) -> None:
        stream.seek(0)
        with contextlib.suppress(OSError):
            msvcrt.locking(stream.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(stream: IO[str]) -> bool | None:
        """True: locked; False: another process holds it; None: no locks here (some
        network and FUSE file systems)."""
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return None
        return True

    def _unlock(stream: IO[str]) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
