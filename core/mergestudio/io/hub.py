"""The Hugging Face Hub as a source: one cache for the window, the CLI and the API, with
byte progress and cancel for every download.

The Hub cache is, in order: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``<studio cache>/hub``
(the studio cache is ``cache_root``: the window's Settings folder, which the window puts
in ``$MERGESTUDIO_CACHE_DIR`` for its own process and its children, else the platform's
user cache folder). Every Hub download passes this folder to ``huggingface_hub``
explicitly, so a model the window added is the model a merge, an analysis or a search
opens: no second download, no "not in the cache".

Downloads happen deep inside opening a model, which many jobs reach (a merge's plan, an
analysis, a search's baselines and trials). Rather than add an event sink and a cancel
token to every function between a job and ``open_model``, a job opens a
``hub_transfer(events, cancel)`` scope: downloads in it report ``Progress("download", …)``
with byte counts and stop with ``Cancelled`` when the token is set. The scope is a context
variable, so it is per thread: a window job's scope never leaks into another job.

``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read when a download starts (huggingface_hub
reads them once, at import), so tests and users can point the studio at a mirror.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergestudio.errors import Cancelled, SourceError
from mergestudio.events import CancelToken, EventSink, Progress, emit

# Files a merge needs from a Hub repo: weights, configs and tokenizer files. Never pickles.
HUB_ALLOW_PATTERNS = ("*.safetensors", "*.json", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja")
DOWNLOAD_JOB = "download"
_TRUE = {"1", "true", "yes", "on"}
# models--org--name/snapshots/<commit>: the layout of huggingface_hub's cache
_SNAPSHOT = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


@dataclass(frozen=True)
class _Transfer:
    events: EventSink | None
    cancel: CancelToken | None


_TRANSFER: contextvars.ContextVar[_Transfer | None] = contextvars.ContextVar("hub_transfer", default=None)


@contextlib.contextmanager
def hub_transfer(events: EventSink | None, cancel: CancelToken | None) -> Iterator[None]:
    """Hub downloads started in this block (this thread) report to ``events`` and stop
    when ``cancel`` is set."""
    token = _TRANSFER.set(_Transfer(events, cancel))
    try:
        yield
    finally:
        _TRANSFER.reset(token)


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The one Hub cache folder (see the module's docstring); ``cache_dir`` stands for the
    studio cache folder. Not created here."""
    from mergestudio.analysis.cache import cache_root

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return cache_root(cache_dir) / "hub"


def hub_id_of_path(path: str | Path) -> str | None:
    """``org/name`` when ``path`` lies in a snapshot of a Hub cache
    (``…/models--org--name/snapshots/<commit>/…``), else None."""
    parts = Path(path).expanduser().absolute().parts
    for index in range(len(parts) - 2):
        match = _SNAPSHOT.match(parts[index])
        if match and parts[index + 1] == "snapshots":
            return f"{match['org']}/{match['name']}"
    return None


def download_snapshot(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, str]:
    """Fetch (or find in the Hub cache) ``repo_id``'s weights, configs and tokenizer files.
    Returns the snapshot folder and its commit hash. Progress and cancel come from the
    enclosing ``hub_transfer`` scope. Errors are one sentence a person can act on, then
    the library's own text on the next line."""
    from huggingface_hub import snapshot_download

    transfer = _TRANSFER.get() or _Transfer(None, None)
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                cache_dir=hub_cache_dir(cache_dir),
                allow_patterns=list(HUB_ALLOW_PATTERNS),
                token=token,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                local_files_only=os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE,
                tqdm_class=progress_bar_class(transfer.events, transfer.cancel),
            )
        )
    except Cancelled:
        raise
    except Exception as error:  # huggingface_hub raises many kinds; each becomes a SourceError
        raise SourceError(_failure_message(repo_id, revision, error)) from error
    return folder, folder.name


def _failure_message(repo_id: str, revision: str | None, error: Exception) -> str:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, LocalEntryNotFoundError):
        summary = (f"{repo_id}: the Hugging Face Hub cannot be reached and the model is not in the "
                   f"cache ({hub_cache_dir()}). Check the network connection, then try again.")
    elif isinstance(error, GatedRepoError):
        summary = f"{repo_id}: the repository is gated. Accept its terms on the Hub and sign in."
    elif isinstance(error, RepositoryNotFoundError):
        summary = f"{repo_id}: no such repository on the Hub, or it is private (sign in first)."
    elif isinstance(error, RevisionNotFoundError):
        summary = f"{repo_id}: the Hub has no revision {revision!r}."
    elif isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        summary = f"{repo_id}: the Hub refused the download{f' (HTTP {status})' if status else ''}."
    else:
        summary = f"{repo_id}: cannot download the model."
    detail = " ".join(f"{type(error).__name__}: {error}".split())
    return f"{summary}\n{detail}"


def progress_bar_class(events: EventSink | None, cancel: CancelToken | None) -> type:
    """A tqdm class for huggingface_hub: byte bars report ``Progress("download", …)`` to
    ``events``; every update raises ``Cancelled`` once ``cancel`` is set, which stops the
    download (the partial blob stays in the cache's ``.incomplete`` file, resumed later)."""
    from tqdm import tqdm

    started = time.perf_counter()

    class _Bar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # snapshot_download keeps two byte bars: bytes written (reported) and network
            # bytes (".transfer", its total a growing guess: not reported).
            self.reports = not str(kwargs.pop("name", "") or "").endswith("transfer")
            kwargs["file"] = io.StringIO()  # the engine's events are the only output
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            result: bool | None = super().update(n)
            if self.unit == "B" and self.reports:
                done, total = int(self.n), int(self.total or 0)
                elapsed = time.perf_counter() - started
                emit(events, Progress(DOWNLOAD_JOB, done, total, elapsed, done, total, current="Hub download"))
            return result

    return _Bar


def published_model_id(reference: str) -> str | None:
    """The Hub id a model card may name for an input: ``org/name`` of a Hub reference
    (without its ``@revision``) or of a folder inside a Hub cache snapshot; None for any
    other local path (a local path is never published) and for ``BASE+ADAPTER``."""
    from mergestudio.io.sources import is_hub_reference

    if "+" in reference:
        return None
    if is_hub_reference(reference):
        return reference.partition("@")[0]
    return hub_id_of_path(reference)
