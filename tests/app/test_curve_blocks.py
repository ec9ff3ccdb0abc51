"""The curve editor follows the base model's family: an SD 1.5 UNet gets one point and
one named slider per SuperMerger block (BASE, IN00 … OUT11) and block presets; lanes
are the family's (self-attention, cross-attention, feed-forward, other)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="module")
def sd15_unets(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    pytest.importorskip("diffusers")
    from tests.families import unet_cases

    return unet_cases()[0].save(tmp_path_factory.mktemp("unets"), (0, 1))


def test_sd_unet_curve_has_named_block_sliders_and_presets(window, add_models, sd15_unets) -> None:
    add_models(window, *sd15_unets)
    window.go_to("recipe")
    page = window.page("recipe")
    page.method_combo.setCurrentIndex(page.method_combo.findData("linear"))
    page.show_curve(("weight", 0))
    curve = page.curve_editor
    labels = curve.block_labels
    assert labels[:3] == ["BASE", "IN00", "IN01"] and labels[12:15] == ["IN11", "M00", "OUT00"]
    assert len(labels) == 26 and labels[-1] == "OUT11"
    assert not curve.block_row.isHidden()
    assert [curve.lane_combo.itemData(i) for i in range(curve.lane_combo.count())] == [
        "all", "self-attention", "cross-attention", "feed-forward", "other"
    ]

    curve.apply_family_preset("IN only")
    weight = yaml.safe_load(page.yaml.text())["models"][0]["parameters"]["weight"]
    assert weight == [1.0 if label.startswith("IN") else 0.0 for label in labels]

    curve.block_combo.setCurrentIndex(labels.index("M00"))
    curve.block_slider.setValue(curve.block_slider.maximum() // 2)
    weight = yaml.safe_load(page.yaml.text())["models"][0]["parameters"]["weight"]
    assert weight[labels.index("M00")] == pytest.approx(0.5, abs=0.01)
    assert weight[labels.index("IN04")] == 1.0 and weight[labels.index("OUT03")] == 0.0


def test_llm_curve_keeps_layers_and_gets_family_lanes(window, add_models, family) -> None:
    add_models(window, family["base"], family["ft1"])
    window.go_to("recipe")
    page = window.page("recipe")
    page.method_combo.setCurrentIndex(page.method_combo.findData("linear"))
    page.show_curve(("weight", 0))
    curve = page.curve_editor
    assert curve.block_labels == [] and curve.block_row.isHidden()
    assert [curve.lane_combo.itemData(i) for i in range(curve.lane_combo.count())] == [
        "all", "attention", "mlp", "norm", "embedding"
    ]
    curve.lane_combo.setCurrentIndex(curve.lane_combo.findData("mlp"))
    curve.apply_preset("ramp up")
    weight = yaml.safe_load(page.yaml.text())["models"][0]["parameters"]["weight"]
    assert weight[0] == {"filter": "self_attn", "value": 1.0}
    assert weight[1]["filter"] == "mlp" and weight[1]["value"][0] == 0.0
    assert weight[-1] == {"value": 1.0}


def test_evolve_setup_offers_the_family_lanes(window, add_models, sd15_unets) -> None:
    add_models(window, *sd15_unets)
    window.go_to("evolve")
    setup = window.page("evolve").setup
    combo = setup.genome.cellWidget(0, 4)
    choices = [combo.itemData(i) for i in range(combo.count())]
    assert choices == [None, ["self-attention", "cross-attention", "feed-forward", "other"]]
    combo.setCurrentIndex(1)
    data = setup.spec_dict()
    assert data["genome"][0]["lanes"] == ["self-attention", "cross-attention", "feed-forward", "other"]
    from mergestudio.recipe.model import Recipe
    from mergestudio.search.genome import Genome
    from mergestudio.search.spec import GeneSpec

    genome = Genome.build([GeneSpec(**g) for g in data["genome"]], Recipe.from_dict(data["recipe"]))
    assert any(name.endswith(".cross-attention") for name in genome.names)  # the engine accepts them


def test_inspect_heatmap_rows_are_lanes_and_columns_named_blocks(window, sd15_unets, tmp_path) -> None:
    from mergestudio.analysis import analyze

    report = analyze(sd15_unets[0], sd15_unets[1:], cache_dir=tmp_path / "cache")
    page = window.page("inspect")
    page.show_report(report)
    heatmap = page.heatmap
    assert heatmap.groups() == ["self-attention", "cross-attention", "feed-forward", "other"]
    assert heatmap.grid().shape == (4, 26)
    ticks = heatmap.plot.getPlotItem().getAxis("bottom")._tickLevels[0]
    assert ticks[:3] == [(0, "BASE"), (3, "IN02"), (6, "IN05")]  # block labels, not numbers
