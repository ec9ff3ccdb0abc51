"""``mergestudio --smoke``: the installation check that the installers run. Here on the
source tree; packaging/test_linux.sh runs the same command on the installed .deb."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from mergestudio import smoke


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mergestudio.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})},
    )


@pytest.mark.slow
def test_smoke_builds_window_merges_evaluates_and_prints_one_line() -> None:
    result = _run_cli("--smoke")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    line = lines[0]
    assert line.startswith("mergestudio ") and " smoke ok " in line
    for expected in (
        "torch ", "PySide6 ", "pyqtgraph ", "window=MainWindow", "platform=offscreen", "search-process=optuna-",
        "merged=", "eval=",
    ):
        assert expected in line
    for stage in ("import", "window", "search-process", "zoo", "merge", "eval", "total"):
        assert f" {stage} " in line


def test_a_failing_stage_exits_non_zero_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "HEAVY_MODULES", ("numpy", "a_module_that_is_not_installed"))
    out, err = io.StringIO(), io.StringIO()
    assert smoke.run_smoke(out, err) == 1
    assert out.getvalue() == ""
    last = err.getvalue().strip().splitlines()[-1]
    assert "smoke FAILED at import" in last and "a_module_that_is_not_installed" in last


def test_smoke_module_does_not_import_qt() -> None:
    code = "import sys, mergestudio.smoke, mergestudio.cli.main; print(sorted(m for m in sys.modules if 'PySide6' in m or 'pyqtgraph' in m or 'mergestudio_qt' in m))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_library_versions_fall_back_to_the_module_and_report_missing() -> None:
    versions = smoke.library_versions(
        (("yaml", "no-such-distribution", "yaml"), ("nothing", "no-such-distribution", "no_such_module"))
    )
    assert versions["yaml"] not in ("?", "missing")
    assert versions["nothing"] == "missing"
