"""The Inspect page's "Extract LoRA" row: the size it announces, and an extraction run
from it in the background."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mergestudio.io import open_model
from mergestudio_qt.context import Studio
from mergestudio_qt.format import format_bytes
from mergestudio_qt.pages.inspect_page import InspectPage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState, describe_source

pytest.importorskip("peft")


def test_extract_lora_from_the_spectra_tab(qtbot, family, tmp_path: Path) -> None:
    state = StudioState()
    for name in ("base", "ft1"):
        state.add_model(describe_source(open_model(family[name]), str(family[name]), "folder"))
    studio = Studio(state, Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache")))
    page = InspectPage(studio)
    qtbot.addWidget(page)
    page.resize(1024, 700)
    page.show()
    with qtbot.waitSignal(page.analysis_finished, timeout=60_000):
        page.start_analysis()
    bar = page.extract_lora
    assert bar.model_choice.currentData() == str(family["ft1"])
    bar.rank.setValue(4)
    # 4 layers × (4 attention 16×16 + 3 MLP 16↔32 matrices) at rank 4, float32, plus the
    # embedding and LM head (48×16) saved whole
    expected = 4 * (4 * 4 * 32 + 3 * 4 * 48) * 4 + 2 * 48 * 16 * 4
    assert bar.estimate() == expected and bar.size.text() == format_bytes(expected)
    bar.mode.setCurrentIndex(bar.mode.findData("energy"))
    assert bar.size.text().startswith("≈") and not bar.rank.isVisible()
    page.tabs.setCurrentIndex(2)
    page.grab().save(str(tmp_path / "inspect_lora.png"))
    bar.mode.setCurrentIndex(bar.mode.findData("rank"))
    assert bar.extract_button.isEnabled()
    out = tmp_path / "ft1-lora"
    bar.extract_to(str(out))
    assert bar.job is not None and bar.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: bar.job is None, timeout=60_000)
    report = json.loads((out / "lora_report.json").read_text())
    assert {m["rank"] for m in report["modules"] if m["action"] == "lora"} == {4}
    written = (out / "adapter_model.safetensors").stat().st_size
    assert expected < written < expected + 20_000  # the file adds its header and the saved norms
