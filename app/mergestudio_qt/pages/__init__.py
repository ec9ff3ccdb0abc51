"""The window's pages, in order. A page is registered with a key, a title and a factory
taking the shared ``Studio`` context; the window builds one tab per registered page.

Another part of the studio adds its page by calling ``register_page`` before the window
is built (a page with an existing key replaces it, so Inspect and Evolve replace their
placeholders)::

    from mergestudio_qt.pages import PageSpec, register_page
    register_page(PageSpec("inspect", "Inspect", "Where task vectors conflict", InspectPage))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from mergestudio_qt.context import Studio

PageFactory = Callable[["Studio"], QWidget]


@dataclass(frozen=True)
class PageSpec:
    key: str
    title: str
    summary: str  # one line: the sidebar's tooltip and the placeholder's text
    factory: PageFactory


_PAGES: list[PageSpec] = []
# The order of the sidebar, whatever order the page modules are imported in; pages not
# listed come after these, in registration order.
PAGE_ORDER = ("models", "recipe", "merge", "moe", "inspect", "evolve")
# Modules that register pages when imported; a missing one (an issue not merged yet) is
# skipped and its placeholder stays.
PAGE_MODULES = (
    "mergestudio_qt.pages.models_page",
    "mergestudio_qt.pages.recipe_page",
    "mergestudio_qt.pages.merge_page",
    "mergestudio_qt.pages.experts_page",
    "mergestudio_qt.pages.placeholders",
    "mergestudio_qt.pages.inspect_page",
    "mergestudio_qt.pages.evolve_page",
)


def register_page(spec: PageSpec, *, replace_only: bool = False) -> None:
    """Add ``spec`` at the end, or in place of the page with the same key.
    ``replace_only``: do nothing when the key is already taken (placeholders use it)."""
    for index, existing in enumerate(_PAGES):
        if existing.key == spec.key:
            if not replace_only:
                _PAGES[index] = spec
            return
    _PAGES.append(spec)


def pages() -> list[PageSpec]:
    for name in PAGE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    def rank(spec: PageSpec) -> int:
        return PAGE_ORDER.index(spec.key) if spec.key in PAGE_ORDER else len(PAGE_ORDER)

    return sorted(_PAGES, key=rank)  # stable: unlisted pages keep their order


__all__ = ["PageSpec", "pages", "register_page"]
