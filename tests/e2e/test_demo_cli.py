"""``mergestudio demo build --miniature`` and ``demo info`` driven as a user types them: the
toy zoo appears where asked, its fine-tunes share the base's tensors, its recipes merge
through ``mergestudio merge``. Checks only what any zoo must satisfy, whatever its skills
and sizes (the zoo's contents are tested in tests/core/test_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mergestudio.cli.main import main
from mergestudio.io import open_model

pytestmark = pytest.mark.slow


def _mergestudio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mergestudio.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_demo_build_miniature_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = tmp_path / "zoo"
    built = _mergestudio("demo", "build", "--miniature", "--no-eval", "--out", str(zoo))
    assert built.returncode == 0, built.stderr
    assert str(zoo) in built.stdout  # the summary names the new zoo, not resources/demo
    base = _shapes(zoo / "models" / "base")
    tunes = [_shapes(f) for f in sorted((zoo / "models").iterdir()) if f.name != "base"]
    assert tunes, "at least one fine-tune"
    assert all(tune == base for tune in tunes)  # fine-tunes of the base, mergeable with it
    info = _mergestudio("demo", "info", "--dir", str(zoo), "--json")
    assert info.returncode == 0, info.stderr
    skills = json.loads(info.stdout)["skills"]
    assert skills, "at least one skill"
    for files in skills.values():  # split hygiene: three distinct, existing files per skill
        splits = [Path(files[split]) for split in ("train", "dev", "test")]
        assert all(s.is_file() and s.parent == zoo / "tasks" for s in splits), files
        assert len({s.read_text() for s in splits}) == 3, files
    recipes = sorted((zoo / "recipes").glob("*.yml"))
    assert recipes
    # Every shipped recipe plans against this zoo; the first one merges (the same entry
    # point as the command, in this process: the build above already ran as a command).
    for recipe in recipes:
        assert main(["merge", str(recipe), str(tmp_path / "dry"), "--dry-run"]) == 0, recipe.name
    assert main(["merge", str(recipes[0]), str(tmp_path / "merged"), "-q"]) == 0
    assert _shapes(tmp_path / "merged") == base
    capsys.readouterr()
    assert main(["demo", "info", "--dir", str(zoo)]) == 0
    assert str(zoo / "models" / "base") in capsys.readouterr().out


def _shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    return {name: tuple(info.shape) for name, info in open_model(folder).tensors.items()}
