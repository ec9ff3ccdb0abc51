"""What every page is given: the shared state, the preferences and a few window services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mergestudio_qt.preferences import Preferences, save_preferences
from mergestudio_qt.state import StudioState


def _ignore(_text: str) -> None:
    return None


@dataclass
class Studio:
    state: StudioState
    preferences: Preferences = field(default_factory=Preferences)
    show_message: Callable[[str], None] = _ignore  # a transient status-bar message
    go_to: Callable[[str], None] = _ignore  # switch to the page with this key

    def save_preferences(self) -> None:
        save_preferences(self.preferences)
