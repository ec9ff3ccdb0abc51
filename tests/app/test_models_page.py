"""The Models page, driven as a person would: add folders and files, drop them, add a
Hub id (offline: the download is faked), choose the base, read the preflight."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from tests.checkpoints import TinyLlama, write_checkpoint


def cell(page, row: int, column: str) -> str:
    from mergestudio_qt.pages.models_page import COLUMNS

    return page.table.item(row, COLUMNS.index(column)).text()


def test_add_folders_shows_details_and_preflight(window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"], family["ft2"])
    page = window.page("models")
    assert page.table.rowCount() == 3
    assert cell(page, 0, "Name") == "base"
    assert cell(page, 0, "Role") == "base"
    assert cell(page, 1, "Architecture") == "LlamaForCausalLM"
    assert cell(page, 1, "Layers") == "4"
    assert cell(page, 1, "Dtype") == "float32"
    assert cell(page, 1, "Source") == str(family["ft1"])  # the path, elided in the middle when narrow
    assert str(family["ft1"]) in page.table.item(1, 1).toolTip()
    assert cell(page, 1, "Size on disk").endswith("KB")
    assert "compatible" in cell(page, 1, "Role")
    assert window.state.base == str(family["base"])
    text = page.preflight_view.toPlainText()
    assert "ft1" in text and "vocabulary" in text and "48 tokens" in text
    # the recipe merges the two fine-tunes onto the base
    assert window.state.recipe["base_model"] == str(family["base"])
    assert [m["model"] for m in window.state.recipe["models"]] == [str(family["ft1"]), str(family["ft2"])]


def test_choose_base_and_untick_a_model(window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"], family["ft2"])
    page = window.page("models")
    page.base_combo.setCurrentIndex(page.base_combo.findData(str(family["ft1"])))
    assert window.state.base == str(family["ft1"])
    assert window.state.recipe["base_model"] == str(family["ft1"])
    row = 2
    page.table.item(row, 0).setCheckState(Qt.CheckState.Unchecked)
    assert str(family["ft2"]) not in [m["model"] for m in window.state.recipe["models"]]


def test_add_single_safetensors_file(window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"] / "model.safetensors")
    page = window.page("models")
    assert cell(page, 1, "Source") == str(family["ft1"] / "model.safetensors")
    assert "local file" in page.table.item(1, 1).toolTip()


def test_incompatible_model_is_an_error_in_the_preflight(window, family, add_models, tmp_path) -> None:
    other = write_checkpoint(tmp_path / "other", TinyLlama(layers=4, vocab=64), seed=5)
    add_models(window, family["base"], other)
    page = window.page("models")
    assert "error" in cell(page, 1, "Role")
    assert "64 tokens, the base has 48" in page.preflight_view.toPlainText()


def test_drop_folders_on_the_page(qtbot, window, family) -> None:
    page = window.page("models")
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(family["base"])), QUrl.fromLocalFile(str(family["ft1"]))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(page.queue_empty, timeout=10_000):
        page.dropEvent(event)
    assert [m.name for m in window.state.models] == ["base", "ft1"]


def test_unknown_path_fails_with_a_message(qtbot, window) -> None:
    page = window.page("models")
    with qtbot.waitSignal(page.load_failed, timeout=10_000) as blocker:
        page.add_reference("/no/such/model")
    assert "no such file" in blocker.args[0]
    assert not window.state.models


def _fake_download(folder: Path, steps: int):
    """Stands in for huggingface_hub.snapshot_download: bytes reported through the tqdm
    class the engine passes (io.hub), the folder returned by name of its commit."""

    def download(repo_id: str, **options) -> str:
        bar_class = options["tqdm_class"]
        bar = bar_class(total=steps * 1000, unit="B")
        for _ in range(steps):
            bar.update(1000)
        bar.close()
        snapshot = folder.parent / "snapshots" / "0123456789abcdef"
        if not snapshot.exists():
            snapshot.parent.mkdir(parents=True)
            snapshot.symlink_to(folder)
        return str(snapshot)

    return download


def test_hub_model_downloads_with_progress(qtbot, window, family, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_download(family["ft1"], 5))
    page = window.page("models")
    page.hub_edit.setText("someorg/tiny-llama@main")
    progress = []
    page.progress.valueChanged.connect(progress.append)
    with qtbot.waitSignals([page.model_added, page.queue_empty], timeout=10_000):
        page.hub_button.click()
    assert progress and max(progress) == page.progress.maximum()
    entry = window.state.model("someorg/tiny-llama@main")
    assert entry is not None and entry.kind == "hub"
    assert entry.source_text == "Hub: someorg/tiny-llama @ 0123456789"
    assert not page.cancel_button.isVisibleTo(page)


def test_hub_download_can_be_cancelled(qtbot, window, family, monkeypatch) -> None:
    import threading

    started = threading.Event()

    def slow_download(repo_id, **options):
        bar = options["tqdm_class"](total=10**9, unit="B")
        started.set()
        while True:  # a download that never ends unless cancelled (update raises)
            bar.update(1)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", slow_download)
    page = window.page("models")
    page.hub_edit.setText("someorg/huge-model")
    page.hub_button.click()
    qtbot.waitUntil(started.is_set, timeout=10_000)
    assert page.cancel_button.isVisibleTo(page)
    with qtbot.waitSignal(page.queue_empty, timeout=10_000):
        page.cancel_button.click()
    assert not window.state.models


def test_bad_hub_id_is_refused(qtbot, window) -> None:
    page = window.page("models")
    page.hub_edit.setText("not a hub id")
    with qtbot.waitSignal(page.load_failed, timeout=2000):
        page.hub_button.click()


def test_remove_model(window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"])
    page = window.page("models")
    page.table.selectRow(1)
    page.remove_button.click()
    assert [m.name for m in window.state.models] == ["base"]
    assert window.state.recipe["models"] == []


def test_base_can_be_none_and_models_have_tooltips(window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"])
    page = window.page("models")
    assert page.base_combo.itemText(0) == "(none)"
    page.base_combo.setCurrentIndex(0)
    assert window.state.base is None
    assert "base_model" not in window.state.recipe
    # the former base is merged like the other ticked models (appended after them)
    assert [m["model"] for m in window.state.recipe["models"]] == [str(family["ft1"]), str(family["base"])]
    assert cell(page, 0, "Role") == "merged"
    for column in range(page.table.columnCount()):
        assert page.table.horizontalHeaderItem(column).toolTip()
    page.table.selectRow(1)
    assert str(family["ft1"]) in page.details_label.text()


def test_demo_models_have_descriptions(tmp_path) -> None:
    from mergestudio_qt.demo import model_description

    zoo = tmp_path / "zoo"
    write_checkpoint(zoo / "models" / "base", TinyLlama())
    write_checkpoint(zoo / "models" / "cipher", TinyLlama(), seed=1)
    (zoo / "README.md").write_text(
        "# Demo zoo\n\n- `models/base`: a 4-layer Llama,\n  pre-trained on synthetic sentences.\n"
        "- `models/<skill>`: the base fine-tuned on one skill.\n"
    )
    assert model_description(zoo / "models" / "base") == (
        "Demo base: a 4-layer Llama, pre-trained on synthetic sentences.")
    from mergestudio.demo.skills import SKILLS

    assert SKILLS["cipher"].description in model_description(zoo / "models" / "cipher")
    # a model card's first paragraph wins; no card and no zoo: no description
    card = write_checkpoint(tmp_path / "other" / "tuned", TinyLlama())
    assert model_description(card) is None
    (card / "README.md").write_text("---\nlicense: mit\n---\n# Tuned\n\nA Llama tuned on recipes.\nSecond line.\n\nMore.")
    assert model_description(card) == "A Llama tuned on recipes. Second line."


def test_a_failed_hub_add_says_why_briefly_and_keeps_the_text(qtbot, window, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*_args, **_kwargs):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub and we cannot find the "
            "requested files in the local cache. Got: ConnectError: [Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    page = window.page("models")
    page.hub_edit.setText("someorg/tiny-llama")
    preflight_before = page.preflight_view.toPlainText()
    with qtbot.waitSignal(page.load_failed, timeout=10_000):
        page.hub_button.click()
    assert page.hub_edit.text() == "someorg/tiny-llama"  # kept, to fix and retry
    assert page.add_error.isVisibleTo(page)
    shown = page.add_error.text()
    assert "cannot be reached" in shown and "ConnectError" not in shown
    assert "ConnectError" in page.add_error.toolTip()  # the library's text, on demand
    assert page.preflight_view.toPlainText() == preflight_before  # not under Compatibility
    page.hub_edit.setText("someorg/other")
    page.hub_edit.textEdited.emit("someorg/other")
    assert not page.add_error.isVisibleTo(page)
