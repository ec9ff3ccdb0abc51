"""The Models page follows the recipe's tokenizer source: a fine-tune that adds special
tokens and pads its embedding is compatible under ``union``, and says why."""

from __future__ import annotations

from pathlib import Path

from tests.core.test_vocab import ADDED, CHARACTERS, _save_model, _save_tokenizer


def test_union_makes_the_padded_fine_tune_compatible(window, add_models, qtbot, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _save_model(a, 52, seed=1)
    _save_tokenizer(a, CHARACTERS, ())
    _save_model(b, 64, seed=2)
    _save_tokenizer(b, CHARACTERS[::-1], ADDED)
    add_models(window, a, b)
    window.state.set_base(str(a))
    page = window.page("models")
    assert "warning" in page.table.item(1, 2).text()  # base: b's 8 tokens would be dropped
    window.state.set_recipe(dict(window.state.recipe, tokenizer_source="union"), "widgets")
    assert "compatible" in page.table.item(1, 2).text()
    text = page.preflight_view.toPlainText()
    assert "adds 8: '<|tool_0|>'" in text
    assert "union adds them to the output" in text
