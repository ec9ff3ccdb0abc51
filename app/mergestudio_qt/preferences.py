"""User preferences: a small versioned JSON file in the platform's config folder.

``QSettings`` keeps only window geometry and splitter state (``window_settings``). Hub
tokens are never stored here: ``huggingface_hub`` keeps them in its own store.
The folder can be moved with ``MERGESTUDIO_CONFIG_DIR`` (tests use a temp folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mergestudio.analysis.cache import CACHE_ENV, cache_root
from PySide6.QtCore import QSettings, QStandardPaths

VERSION = 1
ENV_VAR = "MERGESTUDIO_CONFIG_DIR"
MAX_RECENT = 8
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Preferences:
    version: int = VERSION
    device: str = "auto"
    compute_dtype: str = "float32"
    threads: int = 0  # 0: the engine's choice
    cache_dir: str = ""  # "" means the platform cache folder
    recent_projects: list[str] = field(default_factory=list)
    demo_opened: bool = False  # the first run opens the demo project once

    def add_recent(self, path: Path) -> None:
        text = str(path)
        self.recent_projects = [text] + [p for p in self.recent_projects if p != text]
        del self.recent_projects[MAX_RECENT:]

    def effective_cache_dir(self) -> Path:
        """The Settings folder, else the engine's own default (``cache_root``), so the
        window and the CLI share analyses, evaluations and Hub downloads."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return cache_root()  # never a folder share_cache_dir set: it restores the variable


# The engine's cache variable as it was before ``share_cache_dir`` set it (None: it did not).
_inherited_cache_env: list[str | None] = []


def share_cache_dir(preferences: Preferences) -> None:
    """Make the Settings cache folder the engine's cache root (``$MERGESTUDIO_CACHE_DIR``)
    in this process and the processes it starts (a search runs in a child): every job
    then finds Hub models where the Models page downloaded them (``io.hub``). An empty
    setting gives the variable back its value from before."""
    if preferences.cache_dir:
        if not _inherited_cache_env:
            _inherited_cache_env.append(os.environ.get(CACHE_ENV))
        os.environ[CACHE_ENV] = str(preferences.effective_cache_dir())
    elif _inherited_cache_env:
        inherited = _inherited_cache_env.pop()
        if inherited is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = inherited


def config_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppConfigLocation)
    return Path(location) if location else Path.home() / ".config" / "mergestudio"


def preferences_path() -> Path:
    return config_dir() / "preferences.json"


def load_preferences(path: Path | None = None) -> Preferences:
    """Read preferences; a missing, unreadable or newer file gives the defaults (and is
    not overwritten until the user changes something)."""
    path = path or preferences_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return Preferences()
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return Preferences()
    known = {f.name for f in fields(Preferences)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    try:
        return Preferences(**values)
    except TypeError:
        return Preferences()


def save_preferences(preferences: Preferences, path: Path | None = None) -> None:
    path = path or preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(preferences), indent=2))
    temporary.replace(path)  # atomic: a crash never leaves half a file


def window_settings() -> QSettings:
    """Geometry and splitter state, in an INI file beside the preferences."""
    return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)
