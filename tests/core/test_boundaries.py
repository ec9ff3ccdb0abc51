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
]


def test_engine_does_not_import_qt() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {ENGINE_MODULES!r}: importlib.import_module(name)\n"
        "from mergestudio.methods import all_methods; all_methods()\n"
        "from mergestudio.cli.main import build_parser; build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'PySide6', 'pyqtgraph', 'mergestudio_qt', 'shiboken6'})\n"
        "print(','.join(bad))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert result.stdout.strip() == ""


def test_importing_the_package_is_cheap() -> None:
    """``import mergestudio`` must not pull in torch: the CLI's --help stays fast."""
    code = "import sys, mergestudio; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
