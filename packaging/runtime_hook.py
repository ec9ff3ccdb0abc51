"""PyInstaller runtime hook: runs in the frozen app before any Merge Studio code.

Data files live under ``sys._MEIPASS/resources`` in the bundle, not at the repository
root that ``mergestudio.demo.paths`` derives from ``__file__``; its environment override
points it at the bundled demo zoo (a user's own MERGESTUDIO_DEMO_DIR still wins).
"""

from __future__ import annotations

import os
import sys

_bundle = getattr(sys, "_MEIPASS", os.path.dirname(sys.executable))
_demo = os.path.join(_bundle, "resources", "demo")
if os.path.isdir(_demo):
    os.environ.setdefault("MERGESTUDIO_DEMO_DIR", _demo)
