"""Look and feel: the Fusion style with a light or dark palette that follows the system,
a small style sheet for spacing and emphasis, and pyqtgraph colours to match."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from mergestudio_qt.about import app_icon, resources_dir

STYLE_SHEET: Path = resources_dir() / "styles" / "studio.qss"
ACCENT = QColor("#2563eb")


def system_is_dark(app: QGuiApplication) -> bool:
    scheme = app.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown (some platforms, offscreen): judge the platform's own window colour.
    return app.palette().color(QPalette.ColorRole.Window).lightness() < 128


def apply_style(app: QApplication, dark: bool | None = None) -> None:
    """Style ``app``; ``dark`` None follows the system and keeps following it."""
    app.setStyle("Fusion")
    use_dark = system_is_dark(app) if dark is None else dark
    app.setPalette(dark_palette() if use_dark else light_palette())
    if STYLE_SHEET.exists():
        app.setStyleSheet(STYLE_SHEET.read_text())
    icon = app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)
    _style_plots(app.palette())
    if dark is None:
        hints = app.styleHints()
        if not getattr(app, "_mergestudio_follows_scheme", False):
            hints.colorSchemeChanged.connect(lambda _s: apply_style(app))
            app._mergestudio_follows_scheme = True  # type: ignore[attr-defined]


def light_palette() -> QPalette:
    palette = QPalette()
    colors = {
        QPalette.ColorRole.Window: "#f5f6f8",
        QPalette.ColorRole.WindowText: "#1f2328",
        QPalette.ColorRole.Base: "#ffffff",
        QPalette.ColorRole.AlternateBase: "#eef0f3",
        QPalette.ColorRole.Text: "#1f2328",
        QPalette.ColorRole.Button: "#f0f1f4",
        QPalette.ColorRole.ButtonText: "#1f2328",
        QPalette.ColorRole.ToolTipBase: "#ffffff",
        QPalette.ColorRole.ToolTipText: "#1f2328",
        QPalette.ColorRole.PlaceholderText: "#6b7280",
        QPalette.ColorRole.Mid: "#c4c8cf",
        QPalette.ColorRole.Midlight: "#e2e5ea",
        QPalette.ColorRole.Link: "#1d4ed8",
    }
    palette = _palette(palette, colors)
    # Without a disabled group, a disabled button (Cancel when nothing runs) looks enabled.
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#a0a6ae"))
    return palette


def dark_palette() -> QPalette:
    palette = QPalette()
    colors = {
        QPalette.ColorRole.Window: "#1e1f22",
        QPalette.ColorRole.WindowText: "#e6e7ea",
        QPalette.ColorRole.Base: "#16171a",
        QPalette.ColorRole.AlternateBase: "#26282c",
        QPalette.ColorRole.Text: "#e6e7ea",
        QPalette.ColorRole.Button: "#2b2d31",
        QPalette.ColorRole.ButtonText: "#e6e7ea",
        QPalette.ColorRole.ToolTipBase: "#2b2d31",
        QPalette.ColorRole.ToolTipText: "#e6e7ea",
        QPalette.ColorRole.PlaceholderText: "#9aa0a8",
        QPalette.ColorRole.Mid: "#4a4d52",
        QPalette.ColorRole.Midlight: "#34373c",
        QPalette.ColorRole.Dark: "#101113",
        QPalette.ColorRole.Light: "#3a3d42",
        QPalette.ColorRole.Link: "#7aa7ff",
    }
    palette = _palette(palette, colors)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b6f76"))
    return palette


def _palette(palette: QPalette, colors: dict[QPalette.ColorRole, str]) -> QPalette:
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    palette.setColor(QPalette.ColorRole.Highlight, ACCENT)
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    return palette


def _style_plots(palette: QPalette) -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(
        background=palette.color(QPalette.ColorRole.Base),
        foreground=palette.color(QPalette.ColorRole.WindowText),
        antialias=True,
    )
