"""One Hub cache: a model added from the Hub (here a pre-populated cache in the Settings
cache folder, offline) dry-runs, merges and is inspected from that same cache, and the
merged model's card names it by its Hub id."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.hubcache import populate_hub_cache

REPOS = {"base": "acme/tiny-base", "ft1": "acme/tiny-ft1", "ft2": "acme/tiny-ft2"}


def _add_from_hub(qtbot, window, family: dict[str, Path]) -> None:
    hub = Path(window.preferences.cache_dir) / "hub"  # the Settings folder's Hub cache
    page = window.page("models")
    for key, repo in REPOS.items():
        populate_hub_cache(hub, repo, family[key])
        with qtbot.waitSignal(page.model_added, timeout=10_000):
            page.add_reference(repo)
    assert [m.kind for m in window.state.models] == ["hub"] * 3


def test_hub_models_dry_run_merge_and_inspect_from_the_one_cache(qtbot, window, family, tmp_path) -> None:
    _add_from_hub(qtbot, window, family)
    assert window.state.base == REPOS["base"]
    merge_page = window.page("merge")
    window.go_to("merge")
    with qtbot.waitSignal(merge_page.dry_run_finished, timeout=20_000) as blocker:
        merge_page.dry_button.click()
    assert blocker.args == [True], merge_page.dry_note.text()

    out = tmp_path / "out" / "merged"
    merge_page.out_edit.setText(str(out))
    merge_page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(merge_page.merge_finished, timeout=60_000) as blocker:
        merge_page.merge_button.click()
    assert blocker.args == ["succeeded"], merge_page.log_view.toPlainText()
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert sorted(front["base_model"]) == sorted(REPOS.values())
    assert str(tmp_path) not in yaml.safe_dump(front)

    inspect_page = window.page("inspect")
    window.go_to("inspect")
    with qtbot.waitSignal(inspect_page.analysis_finished, timeout=60_000) as blocker:
        inspect_page.start_analysis()
    assert blocker.args == ["succeeded"]
