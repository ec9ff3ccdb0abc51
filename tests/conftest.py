"""Fixtures shared by every test tier: tiny real checkpoints written to a temp folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tests.checkpoints import TinyLlama, write_checkpoint


@pytest.fixture(autouse=True)
def isolated_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Caches (evaluations, analyses) go to a temp folder, never the user's, and a test
    never reuses another test's results."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("MERGESTUDIO_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``make_checkpoint(name, seed=…, **shape)`` writes a tiny Llama-shaped model folder."""

    def make(name: str, seed: int = 0, **shape: int) -> Path:
        return write_checkpoint(tmp_path / name, TinyLlama(**shape), seed=seed)

    return make


@pytest.fixture
def model_family(make_checkpoint: Callable[..., Path]) -> dict[str, Path]:
    """A base and three fine-tunes of it (base + small seeded perturbations)."""
    return {
        "base": make_checkpoint("base", seed=0),
        "ft1": make_checkpoint("ft1", seed=1),
        "ft2": make_checkpoint("ft2", seed=2),
        "ft3": make_checkpoint("ft3", seed=3),
    }
