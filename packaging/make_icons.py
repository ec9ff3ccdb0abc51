"""Render ``resources/icons/mergestudio.svg`` to the PNG sizes the desktop menus, the window
and the installers use, with Qt's own SVG renderer (no network, no extra tools).

Run from the repository root: ``.venv/bin/python packaging/make_icons.py``. The PNGs are
committed, so this only runs again when the SVG changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(svg: Path, size: int, out: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out)):  # format from the suffix (.png, .ico)
        raise SystemExit(f"cannot write {out}")


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication(sys.argv[:1])  # QPainter on QImage needs a GUI application for fonts
    svg = ICONS / "mergestudio.svg"
    for size in SIZES:
        render(svg, size, ICONS / f"mergestudio-{size}.png")
    # The Windows installer and the .exe want one .ico holding several sizes; Qt writes a
    # single-size .ico, so the 256 px image is used (Windows scales it down well).
    render(svg, 256, ICONS / "mergestudio.ico")
    print(f"wrote {len(SIZES) + 1} icons to {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
