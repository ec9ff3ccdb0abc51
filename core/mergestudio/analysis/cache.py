"""A folder of finished analyses, keyed by the inputs' content fingerprints and the
options, so reopening an analysis of the same models is instant.

The cache root is, in order: the ``cache_dir`` argument, ``$MERGESTUDIO_CACHE_DIR``, the
platform's user cache folder. Analyses live in ``<root>/analysis/<key>.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mergestudio.analysis.report import FORMAT, AnalysisReport

CACHE_ENV = "MERGESTUDIO_CACHE_DIR"
_SUBFOLDER = "analysis"


def user_cache_root() -> Path:
    """The platform's cache folder for Merge Studio (no extra dependency for this)."""
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "MergeStudio" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "MergeStudio"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else home / ".cache") / "mergestudio"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The studio's cache folder: ``cache_dir`` when given, else ``$MERGESTUDIO_CACHE_DIR``,
    else the platform's user cache folder (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return user_cache_root()


def analysis_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where analyses are cached (not created here)."""
    return cache_root(cache_dir) / _SUBFOLDER


def cache_key(fingerprints: dict[str, Any], density: float, options: dict[str, Any]) -> str:
    """sha256 over the report format, the inputs' fingerprints (base, then models in
    order: order matters for per-model lists) and every option that changes a number."""
    payload = {"format": FORMAT, "fingerprints": fingerprints, "density": density, "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(folder: Path, key: str) -> AnalysisReport | None:
    """The cached report for ``key``, or None when absent or unreadable (a damaged entry
    is a miss, not an error: it is recomputed and overwritten)."""
    path = folder / f"{key}.json"
    try:
        report = AnalysisReport.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    report.from_cache = True
    return report


def store(folder: Path, key: str, report: AnalysisReport) -> Path | None:
    """Write atomically (temp file, then rename) so a reader never sees half a report.
    Returns the path, or None when the folder is not writable (caching is best effort)."""
    temp_name: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            out.write(report.to_json())
        target = folder / f"{key}.json"
        os.replace(temp_name, target)
    except OSError:
        if temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
        return None
    return target
