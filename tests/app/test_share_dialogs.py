"""Merge → Export GGUF… and Upload to Hub…: the dialogs run the engine's export off the GUI
thread with progress, Cancel commits nothing, and closing while running cancels first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import write_checkpoint
from tests.core.test_export_gguf import SPEC, _write_bpe_tokenizer
from tests.hub_server import serve_fake_hub


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    folder = write_checkpoint(tmp_path / "merged", SPEC, seed=4)
    _write_bpe_tokenizer(folder)
    return folder


def test_export_gguf_dialog_writes_the_file_with_progress(qtbot, window, merged: Path) -> None:
    import gguf

    window.page("merge").last_output = merged
    dialog = window.open_share_dialog("gguf")
    qtbot.addWidget(dialog)
    assert dialog.model_edit.text() == str(merged)
    dialog.type_combo.setCurrentIndex(dialog.type_combo.findData("q8_0"))
    assert dialog.out_edit.text() == f"{merged}.q8_0.gguf"
    values: list[int] = []
    dialog.progress.valueChanged.connect(values.append)
    with qtbot.waitSignal(dialog.start_button.clicked, timeout=1000):
        dialog.start_button.click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=60_000)
    assert dialog.status.text().startswith("Wrote "), dialog.status.text()
    assert values and values[-1] == 1000
    reader = gguf.GGUFReader(f"{merged}.q8_0.gguf")
    assert reader.fields["general.architecture"].contents() == "llama"
    dialog.close()


def test_upload_dialog_uploads_and_closing_mid_upload_cancels(
    qtbot, window, merged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the stand-in is local
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with serve_fake_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        window.page("merge").last_output = merged
        dialog = window.open_share_dialog("upload")
        qtbot.addWidget(dialog)
        dialog.repo_edit.setText("me/merged")
        dialog.private_check.setChecked(True)
        dialog.start_button.click()
        qtbot.waitUntil(lambda: dialog.job is None, timeout=60_000)
        published = {p.name for p in merged.iterdir()} | {"README.md"}  # a card is written for it
        assert dialog.status.text() == f"Uploaded {len(published)} files to {hub.url}/me/merged."
        assert hub.created == {"me/merged": True}
        assert set(hub.repos["me/merged"]) == published

        # Closing while the upload runs: cancelled, nothing committed, the dialog closes after.
        second = window.open_share_dialog("upload")
        qtbot.addWidget(second)
        second.repo_edit.setText("me/never")
        second.start_button.click()
        assert second.job is not None
        second.reject()
        assert second.isVisible()  # waits for the job
        qtbot.waitUntil(lambda: not second.isVisible(), timeout=60_000)
        assert [c["repo"] for c in hub.commits] == ["me/merged"]
