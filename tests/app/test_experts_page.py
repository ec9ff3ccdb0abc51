"""The Experts page: expert rows with a model picker and prompt boxes become
mergekit-moe's YAML; Dry run and Build run as background jobs; a bad config is refused by
the dry run; Cancel leaves nothing; nothing on the page is clipped at 1024x700."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mergestudio.events import Progress
from mergestudio_qt.pages.experts_page import ExpertRow, ExpertsPage

from tests.app.layout_check import clipping_problems

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "models"


@pytest.fixture
def page(window, add_models, tmp_path) -> ExpertsPage:
    add_models(window, DEMO / "base", DEMO / "last", DEMO / "max")
    window.go_to("moe")
    page = window.page("moe")
    page.out_edit.setText(str(tmp_path / "out" / "moe"))
    page.gate_combo.setCurrentIndex(page.gate_combo.findData("cheap_embed"))
    page.per_token_spin.setValue(1)
    page.add_expert(ExpertRow(str(DEMO / "last"), ["end abc=", "end hello="]))
    page.add_expert(ExpertRow(str(DEMO / "max")))
    page.positive_edit.setPlainText("top 4132=\ntop 907=")  # typed into the selected row
    return page


def test_rows_and_prompt_boxes_make_the_mergekit_config(page) -> None:
    config = page.config()
    assert config["base_model"] == str(DEMO / "base")
    assert config["gate_mode"] == "cheap_embed" and config["experts_per_token"] == 1
    assert config["experts"] == [
        {"source_model": str(DEMO / "last"), "positive_prompts": ["end abc=", "end hello="]},
        {"source_model": str(DEMO / "max"), "positive_prompts": ["top 4132=", "top 907="]},
    ]
    assert "top 907=" in page.yaml_view.toPlainText()
    page.load_config({**config, "experts": config["experts"][::-1]})
    assert [row.model for row in page.experts] == [str(DEMO / "max"), str(DEMO / "last")]
    assert page.positive_edit.toPlainText() == "top 4132=\ntop 907="


def test_dry_run_then_build_writes_a_mixtral_model(qtbot, page, tmp_path) -> None:
    with qtbot.waitSignal(page.dry_run_finished, timeout=20_000) as blocker:
        page.dry_button.click()
    assert blocker.args == [True]
    assert page.last_report["architecture"] == "MixtralForCausalLM"
    assert "expert 1:" in page.log_view.toPlainText()
    assert not (tmp_path / "out").exists()  # the dry run writes nothing
    seen: list[Progress] = []
    with qtbot.waitSignal(page.build_finished, timeout=60_000) as blocker:
        page.build_button.click()
        page.build_job.progress.connect(seen.append)
        assert page.cancel_button.isEnabled()
    assert blocker.args == ["succeeded"]
    config = json.loads((tmp_path / "out" / "moe" / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"] and config["num_local_experts"] == 2
    assert page.progress.format() == "done"


def test_missing_prompts_are_refused_by_the_dry_run(qtbot, page, tmp_path) -> None:
    page.expert_list.setCurrentRow(1)
    page.positive_edit.setPlainText("")
    with qtbot.waitSignal(page.dry_run_finished, timeout=20_000) as blocker:
        page.dry_button.click()
    assert blocker.args == [False]
    assert "experts[1].positive_prompts" in page.log_view.toPlainText()
    assert not (tmp_path / "out").exists()


def test_cancel_leaves_nothing(qtbot, page, tmp_path, monkeypatch) -> None:
    from mergestudio_qt.pages import experts_page

    original = experts_page.MoEBuildJob.events

    def cancel_on_first_event(self, event):  # the user presses Cancel as the build starts
        self.cancel()
        original(self, event)

    monkeypatch.setattr(experts_page.MoEBuildJob, "events", cancel_on_first_event)
    with qtbot.waitSignal(page.build_finished, timeout=60_000) as blocker:
        page.build_button.click()
    assert blocker.args == ["cancelled"]
    assert not (tmp_path / "out" / "moe").exists()
    assert not [p for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else True


def test_nothing_is_clipped_at_1024x700(qtbot, window, page) -> None:
    window.resize(1024, 700)
    qtbot.wait(50)  # lets posted layout events run; not a timing assertion
    assert clipping_problems(page) == []
