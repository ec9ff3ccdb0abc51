"""The engine never imports Qt: checked in a fresh interpreter after importing every
engine module a merge touches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ENGINE_MODULES = [
    "mergestudio",
    "mergestudio.engine",
    "mergestudio.methods",
    "mergestudio.recipe",
    "mergestudio.io",
    "mergestudio.cli.main",
    "mergestudio.smoke",
]
QT = {"PySide6", "pyqtgraph", "shiboken6"}


def _modules_after(code: str) -> set[str]:
    """Top-level-qualified module names loaded by ``code`` in a fresh interpreter."""
    script = f"import importlib, sys\n{code}\nprint(','.join(sorted(sys.modules)))\n"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=True)
    return set(result.stdout.strip().split(","))


def test_engine_does_not_import_qt() -> None:
    loaded = _modules_after(
        f"for name in {ENGINE_MODULES!r}: importlib.import_module(name)\n"
        "from mergestudio.methods import all_methods; all_methods()"
    )
    assert not {m for m in loaded if m.split(".")[0] in QT | {"mergestudio_qt"}}


def test_the_cli_finds_the_studio_through_its_entry_point_without_qt() -> None:
    """The ``studio`` command is the front end's plugin (``mergestudio.commands``):
    building the parser loads its small command module and no Qt binding."""
    loaded = _modules_after("from mergestudio.cli.main import build_parser; build_parser()")
    assert not {m for m in loaded if m.split(".")[0] in QT}
    assert {m for m in loaded if m.startswith("mergestudio_qt")} == {"mergestudio_qt", "mergestudio_qt.cli"}
    from mergestudio.cli.main import build_parser

    assert build_parser().parse_args(["studio", "--demo"]).demo


def test_importing_the_package_is_cheap() -> None:
    """``import mergestudio`` must not pull in torch: the CLI's --help stays fast."""
    code = "import sys, mergestudio; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
