"""LoRA adapters on the Models page: added like models, shown as "adapter of X" with
rank and target modules, checked against the chosen base by the preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import TinyLlama, write_checkpoint
from tests.peft_adapters import make_lora

pytest.importorskip("peft")


def cell(page, row: int, column: str) -> str:
    from mergestudio_qt.pages.models_page import COLUMNS

    return page.table.item(row, COLUMNS.index(column)).text()


def test_adapter_rows_and_preflight(window, family, add_models, tmp_path: Path) -> None:
    adapter = make_lora(family["base"], tmp_path / "lora", seed=1, r=4, modules_to_save=["lm_head"])
    wide = write_checkpoint(tmp_path / "wide", TinyLlama(layers=4, hidden=24), seed=0)
    foreign = make_lora(wide, tmp_path / "foreign", seed=2)
    add_models(window, family["base"], adapter, foreign)
    page = window.page("models")
    shown = cell(page, 1, "Architecture")
    assert shown.startswith("adapter of base") and "r 4" in shown and "q_proj, v_proj" in shown
    assert "+1 saved" in shown
    assert cell(page, 1, "Size on disk").endswith("KB")
    assert "compatible" in cell(page, 1, "Role")
    assert "error" in cell(page, 2, "Role")
    text = page.preflight_view.toPlainText()
    assert "does not fit base" in text and "[24, 24]" in text
    # the recipe names the adapter like any model: the engine applies it to its base
    assert str(adapter) in [m["model"] for m in window.state.recipe["models"]]
    page.window().resize(1024, 700)
    page.grab().save(str(tmp_path / "models_adapters.png"))
