"""Byte counts for people, in the units disks and the Hub use (powers of 1000): the CLI,
the engine's messages and the window all write sizes the same way."""

from __future__ import annotations


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KB'."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
