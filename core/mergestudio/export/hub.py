"""A merged model folder uploaded to the Hugging Face Hub in one commit, through
``huggingface_hub``: the repo is created when missing, every file's bytes are reported as
``Progress("upload", …)`` and a cancel stops the upload before the commit (the Hub shows
nothing of it), and the model card is made publishable.

Publishable means: the card's ``base_model:`` lists Hub ids only (``engine/card.py`` writes
it so), and every local path in the card and the recipe files is replaced, by the Hub id
when it lies in a Hub cache snapshot, else by its folder name. Local paths say where a
user keeps files; they are never published.

Why a commit built here rather than ``upload_folder``/``upload_large_folder``: those read
files by path, leaving no place to count bytes or stop. Each file is handed to
``huggingface_hub`` as a reading object that reports and checks the cancel token on every
read. ``huggingface_hub`` then sends large files over the HTTP LFS protocol (its Xet path
takes paths only); the Hub accepts both.

The token is ``huggingface_hub``'s own (``hf auth login``, the window's sign-in, or
``HF_TOKEN``); it is never printed, logged or written by the studio.
"""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import yaml

from mergestudio.errors import Cancelled, ExportError, MergeStudioError
from mergestudio.events import CancelToken, EventSink, Progress, emit, log
from mergestudio.io.hub import hub_id_of_path, published_model_id

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

JOB = "upload"
CARD = "README.md"
# Text files that may name the inputs by path: the card and the recipe copies.
_REDACTED_SUFFIXES = (".md", ".yml", ".yaml")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class UploadResult:
    repo_url: str
    commit: str
    files: int
    bytes_uploaded: int


def upload_model(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload a merge made with Merge Studio",
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> UploadResult:
    """Upload the model ``folder`` to ``repo_id`` (created when missing, ``private`` then)
    as one commit. The folder is checked (weights, config) before the Hub is called."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not _REPO_ID.match(repo_id):
        raise ExportError(f"{repo_id!r}: not a Hub repo id (expected org/name)")
    files = _model_files(folder)
    texts = publishable_texts(folder, files)
    names = sorted(set(files) | set(texts))
    total = sum(len(texts[n]) if n in texts else (folder / n).stat().st_size for n in names)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    meter = _Meter(events, cancel, total)
    readers: list[_MeteredFile] = []
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        operations = [_operation(folder, name, texts, meter, readers) for name in names]  # hashes each file
        meter.uploading = True
        info = api.create_commit(repo_id, operations, commit_message=commit_message, repo_type="model")
    except Cancelled:
        raise
    except MergeStudioError:
        raise
    except Exception as error:  # huggingface_hub raises many kinds; a cancel may arrive wrapped
        if cancel is not None and cancel.cancelled:
            raise Cancelled("upload cancelled by the user") from error
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise ExportError(f"{repo_id}: the upload failed.\n{detail}") from error
    finally:
        for reader in readers:
            reader.close()
    meter.finish()
    log(events, f"uploaded {len(names)} files to {url}")
    return UploadResult(str(url), info.oid, len(names), meter.done)


def _model_files(folder: Path) -> list[str]:
    """Every file of the folder (relative, sorted), hidden ones excepted; the folder must
    open as a model (safetensors headers, config.json)."""
    from mergestudio.io.sources import open_model

    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder}: has no config.json, so the Hub could not load it")
    open_model(folder).close()  # refuses a folder without valid weights, naming the file
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


# ---- the card -------------------------------------------------------------------------------


def publishable_texts(folder: Path, files: list[str]) -> dict[str, bytes]:
    """The card and recipe files as they are published (local paths replaced); a card is
    written when the folder has none."""
    recipe = _recipe_of(folder)
    replacements = _path_replacements(recipe)
    texts = {}
    for name in files:
        if name.endswith(_REDACTED_SUFFIXES):
            text = (folder / name).read_text(encoding="utf-8")
            for local, public in replacements.items():
                text = text.replace(local, public)
            texts[name] = text.encode()
    if CARD not in texts:
        texts[CARD] = _minimal_card(recipe, replacements).encode()
    card_front = _front_matter(texts[CARD].decode())
    if any(local in yaml.safe_dump(card_front) for local in replacements):
        raise ExportError(f"{folder / CARD}: its metadata still names a local path")  # never publish one
    return texts


def _recipe_of(folder: Path) -> dict[str, Any]:
    """The recipe the card (or recipe.yml) carries; {} when none."""
    candidates = []
    if (folder / CARD).is_file():
        match = re.search(r"```yaml\n(.*?)```", (folder / CARD).read_text(encoding="utf-8"), re.S)
        if match:
            candidates.append(match.group(1))
    for name in ("recipe.yml", "mergekit_config.yml"):
        if (folder / name).is_file():
            candidates.append((folder / name).read_text(encoding="utf-8"))
    for text in candidates:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(loaded, dict):
            return loaded
    return {}


def _recipe_models(recipe: dict[str, Any]) -> list[str]:
    models = [recipe.get("base_model")]
    models += [m.get("model") for m in recipe.get("models") or [] if isinstance(m, dict)]
    for slice_ in recipe.get("slices") or []:
        models += [s.get("model") for s in (slice_ or {}).get("sources") or [] if isinstance(s, dict)]
    return [str(m) for m in dict.fromkeys(models) if m]


def _path_replacements(recipe: dict[str, Any]) -> dict[str, str]:
    """Local path → what is published in its place (the Hub id, else the folder name);
    longest first so a path is never half-replaced by a shorter one it contains."""
    replacements = {}
    for reference in _recipe_models(recipe):
        if published_model_id(reference) == reference.partition("@")[0]:
            continue  # a Hub id already
        for part in reference.split("+"):  # BASE+ADAPTER: each half on its own
            if published_model_id(part) == part.partition("@")[0]:
                continue
            replacements[part] = hub_id_of_path(part) or Path(part).name or "model"
    return dict(sorted(replacements.items(), key=lambda item: -len(item[0])))


def _front_matter(card: str) -> dict[str, Any]:
    if not card.startswith("---"):
        return {}
    loaded = yaml.safe_load(card.split("---", 2)[1])
    return loaded if isinstance(loaded, dict) else {}


def _minimal_card(recipe: dict[str, Any], replacements: dict[str, str]) -> str:
    front: dict[str, Any] = {"library_name": "transformers", "tags": ["merge", "mergestudio"]}
    hub_ids = [published_model_id(m) for m in _recipe_models(recipe)]
    if any(hub_ids):
        front["base_model"] = [i for i in dict.fromkeys(hub_ids) if i]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", "# Merged model", "",
             "Uploaded with Merge Studio."]
    if recipe:
        text = yaml.safe_dump(recipe, sort_keys=False)
        for local, public in replacements.items():
            text = text.replace(local, public)
        lines += ["", "## Recipe", "", "```yaml", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


# ---- bytes, progress and cancel -------------------------------------------------------------


class _Meter:
    """Counts bytes read while uploading (not while hashing) and checks the cancel token
    on every read."""

    def __init__(self, events: EventSink | None, cancel: CancelToken | None, total: int) -> None:
        self.events, self.cancel, self.total = events, cancel, total
        self.done = 0
        self.uploading = False
        self._start = time.perf_counter()
        self._last = 0.0

    def read(self, nbytes: int, name: str) -> None:
        """``nbytes`` more of file ``name`` were read for the first time while uploading."""
        self.done = min(self.total, self.done + nbytes)
        now = time.perf_counter()
        if now - self._last >= 0.05:
            self._last = now
            self._emit(name)

    def check_cancel(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def finish(self) -> None:
        self.done = self.total
        self._emit("")

    def _emit(self, name: str) -> None:
        elapsed = time.perf_counter() - self._start
        emit(self.events, Progress(JOB, self.done, self.total, elapsed, self.done, self.total, current=name))


class _MeteredFile(io.BufferedIOBase):
    """A file (or bytes) read through the meter. Seekable, as huggingface_hub requires."""

    def __init__(self, raw: io.BufferedIOBase, name: str, meter: _Meter) -> None:
        super().__init__()
        self._raw, self._name, self._meter = raw, name, meter
        self._high_water = 0  # a retry that re-reads bytes does not count them twice

    def read(self, size: int | None = -1) -> bytes:
        self._meter.check_cancel()
        data = self._raw.read(size)
        if self._meter.uploading:  # reads before are huggingface_hub hashing the file
            position = self._raw.tell()
            self._meter.read(max(0, position - self._high_water), self._name)
            self._high_water = max(self._high_water, position)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def __iter__(self) -> Any:  # httpx streams a body by iterating it
        while chunk := self.read(1 << 20):
            yield chunk

    def close(self) -> None:
        self._raw.close()
        super().close()


def _operation(
    folder: Path, name: str, texts: dict[str, bytes], meter: _Meter, readers: list[_MeteredFile]
) -> CommitOperationAdd:
    """One file of the commit, read through the meter (the caller closes ``readers``)."""
    from huggingface_hub import CommitOperationAdd

    raw: io.BufferedIOBase = io.BytesIO(texts[name]) if name in texts else open(folder / name, "rb")  # noqa: SIM115
    reader = _MeteredFile(raw, name, meter)
    readers.append(reader)
    return CommitOperationAdd(path_in_repo=name, path_or_fileobj=cast(BinaryIO, reader))
