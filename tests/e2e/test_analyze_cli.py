"""``mergestudio analyze`` driven as a user drives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mergestudio.cli.main import main


def test_analyze_prints_a_summary_and_writes_json(model_family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report" / "analysis.json"
    env = {**os.environ, "MERGESTUDIO_CACHE_DIR": str(tmp_path / "cache")}
    models = [str(model_family[name]) for name in ("ft1", "ft2", "ft3")]
    command = [sys.executable, "-m", "mergestudio.cli.main", "analyze", "--base", str(model_family["base"])]
    done = subprocess.run(
        [*command, *models, "--density", "0.3", "--json", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    for heading in ("cosine similarity", "sign conflicts after trimming", "per module group", "per layer"):
        assert heading in done.stdout
    assert "analyze: 21/21" in done.stderr  # the progress bar
    report = json.loads(out.read_text())
    assert report["density"] == 0.3 and len(report["models"]) == 3
    assert len(report["cosine"]["matrix"]) == 3 and len(report["layers"]) == 2
    assert list((tmp_path / "cache" / "analysis").glob("*.json"))


def test_analyze_in_process_uses_the_cache_and_reports_errors(
    model_family: dict[str, Path], tmp_path: Path, capsys
) -> None:
    args = ["analyze", "--base", str(model_family["base"]), str(model_family["ft1"]), "-q"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--spectra", "none"]
    assert main(args) == 0
    assert main(args) == 0
    assert "from the cache" in capsys.readouterr().out
    assert main(["analyze", "--base", str(tmp_path / "missing"), str(model_family["ft1"])]) == 1
    assert "no such file" in capsys.readouterr().err
