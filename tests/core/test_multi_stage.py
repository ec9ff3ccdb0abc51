"""Multi-stage recipes: stages fed in memory give bit-identical models to running each
stage through files; graph errors are found by the dry run, before anything is written."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import pytest
import yaml
from mergestudio.engine import merge
from mergestudio.engine.graph import close_stages, intermediate_peak_bytes, merge_multi, plan_stages
from mergestudio.errors import Cancelled, PlanError, RecipeError
from mergestudio.events import CancelToken, LogLine
from mergestudio.recipe.multi import parse_multi
from safetensors.torch import load_file


def _stages(family: dict[str, Path]) -> list[dict]:
    base, ft1, ft2, ft3 = (str(family[k]) for k in ("base", "ft1", "ft2", "ft3"))
    return [
        {
            "name": "pair",
            "merge_method": "task_arithmetic",
            "base_model": base,
            "models": [
                {"model": ft1, "parameters": {"weight": 0.7}},
                {"model": ft2, "parameters": {"weight": [0.2, 0.9]}},
            ],
        },
        {
            "name": "trio",
            "merge_method": "ties",
            "base_model": base,
            "models": [
                {"model": "pair", "parameters": {"weight": 1.0, "density": 0.6}},
                {"model": ft3, "parameters": {"weight": 0.5, "density": 0.6}},
            ],
        },
        {
            "merge_method": "slerp",
            "base_model": "pair",
            "models": [{"model": "pair"}, {"model": "trio"}],
            "parameters": {"t": [0.1, 0.8]},
        },
    ]


def _text(stages: list[dict]) -> str:
    return yaml.safe_dump_all(stages, sort_keys=False)


def _one_by_one(stages: list[dict], folder: Path) -> Path:
    """Each stage merged to its own folder with the plain merge, names replaced by paths."""
    written: dict[str, str] = {}
    out = folder
    for index, stage in enumerate(stages):
        recipe = copy.deepcopy(stage)
        recipe["base_model"] = written.get(recipe["base_model"], recipe["base_model"])
        for model in recipe.get("models", []):
            model["model"] = written.get(model["model"], model["model"])
        name = recipe.pop("name", f"stage{index}")
        out = folder / name
        merge(recipe, out, device="cpu")
        written[name] = str(out)
    return out


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("count", [2, 3])
def test_stages_in_memory_match_stages_through_files(model_family, tmp_path: Path, count: int) -> None:
    stages = _stages(model_family)[:count]
    if count == 2:
        del stages[1]["name"]  # the final stage goes without a name
    expected = _weights(_one_by_one(stages, tmp_path / "files"))
    logs: list[str] = []
    result = merge_multi(
        parse_multi(_text(stages)),
        tmp_path / "out",
        device="cpu",
        events=lambda e: logs.append(e.message) if isinstance(e, LogLine) else None,
    )
    actual = _weights(result.output)
    assert set(actual) == set(expected)
    for name in expected:
        assert actual[name].dtype == expected[name].dtype
        assert actual[name].equal(expected[name]), name
    assert [name for name, _ in result.stages] == [s.get("name", "final") for s in stages]
    assert sum("stage " in line and f"/{count}:" in line for line in logs) == count
    assert not result.intermediates
    # nothing else written: no intermediate folder beside the inputs and the outputs
    assert {p.name for p in tmp_path.iterdir()} - set(model_family) == {"files", "out"}


def test_keep_intermediates_writes_each_stage_and_gives_the_same_model(model_family, tmp_path: Path) -> None:
    stages = _stages(model_family)
    in_memory = merge_multi(parse_multi(_text(stages)), tmp_path / "a", device="cpu")
    kept = merge_multi(
        parse_multi(_text(stages)), tmp_path / "b", device="cpu", keep_intermediates=tmp_path / "mid"
    )
    assert set(kept.intermediates) == {"pair", "trio"}
    assert (tmp_path / "mid" / "pair" / "config.json").is_file()
    first, second = _weights(in_memory.output), _weights(kept.output)
    assert all(first[name].equal(second[name]) for name in first)


def test_intermediates_over_the_memory_limit_go_to_a_temporary_folder(model_family, tmp_path: Path) -> None:
    stages = _stages(model_family)
    in_memory = merge_multi(parse_multi(_text(stages)), tmp_path / "a", device="cpu")
    staged = plan_stages(parse_multi(_text(stages)))
    peak = intermediate_peak_bytes(staged)
    close_stages(staged)
    # While "trio" runs, "pair" (read again by the final stage) and "trio" are both held.
    sizes = {s.stage.name: sum(p.out_bytes for p in s.plan.tensors) for s in staged}
    assert peak == sizes["pair"] + sizes["trio"]
    seen: list[str] = []
    written: list[Path] = []

    def watch(event: object) -> None:
        if isinstance(event, LogLine):
            seen.append(event.message)
            written.extend(p for p in (tmp_path / "b").parent.glob(".mergestudio-stages-*/*") if p.is_dir())

    forced = merge_multi(parse_multi(_text(stages)), tmp_path / "b", device="cpu", memory_limit=peak - 1, events=watch)
    assert any("over the" in line and "temporary folder" not in line for line in seen)
    assert {p.name for p in written} >= {"pair", "trio"}  # the stages went through files
    assert not list(tmp_path.glob(".mergestudio-stages-*"))  # and the folder is gone
    assert not forced.intermediates
    first, second = _weights(in_memory.output), _weights(forced.output)
    assert set(first) == set(second)
    assert all(first[name].equal(second[name]) for name in first)
    # At the limit, nothing is spilled.
    seen.clear()
    merge_multi(parse_multi(_text(stages)), tmp_path / "c", device="cpu", memory_limit=peak, events=watch)
    assert not any("over the" in line for line in seen)


def test_a_cycle_is_a_clear_error(model_family) -> None:
    stages = _stages(model_family)
    stages[0]["models"][0]["model"] = "trio"  # pair <- trio <- pair
    with pytest.raises(RecipeError, match="cycle: .*pair.*trio|cycle: .*trio.*pair"):
        parse_multi(_text(stages))


def test_a_missing_stage_name_is_a_clear_error(model_family) -> None:
    stages = _stages(model_family)
    stages[2]["models"][1]["model"] = "tiro"
    with pytest.raises(
        RecipeError, match="stage 'final' names 'tiro', which is no stage \\(pair, trio, final\\)"
    ):
        parse_multi(_text(stages))


def test_unnamed_middle_stage_and_duplicate_names_are_errors(model_family) -> None:
    stages = _stages(model_family)
    del stages[0]["name"]
    with pytest.raises(RecipeError, match="only the final stage may go without one"):
        parse_multi(_text(stages))
    stages = _stages(model_family)
    stages[1]["name"] = "pair"
    with pytest.raises(RecipeError, match="'pair' is used by another stage"):
        parse_multi(_text(stages))


def test_a_stage_no_one_uses_is_an_error(model_family) -> None:
    stages = _stages(model_family)
    stages[1]["models"][0]["model"] = str(model_family["ft1"])  # trio no longer reads pair
    stages[2]["models"] = [{"model": "trio"}, {"model": str(model_family["ft2"])}]
    stages[2]["base_model"] = "trio"
    with pytest.raises(RecipeError, match="stage 'pair' feeds no later stage"):
        parse_multi(_text(stages))


def test_shape_mismatch_across_stages_fails_at_planning(
    model_family, make_checkpoint, tmp_path: Path
) -> None:
    wide = make_checkpoint("wide", seed=5, hidden=24)
    stages = _stages(model_family)[:2]
    stages[1]["models"][1]["model"] = str(wide)
    with pytest.raises((PlanError, RecipeError), match="stage 'trio'"):
        plan_stages(parse_multi(_text(stages)))
    assert not (tmp_path / "out").exists()


def test_cancel_stops_between_and_within_stages(model_family, tmp_path: Path) -> None:
    token = CancelToken()
    seen: list[str] = []

    def events(event: object) -> None:
        if isinstance(event, LogLine) and event.message.startswith("stage 2/"):
            seen.append(event.message)
            token.cancel()

    with pytest.raises(Cancelled):
        merge_multi(
            parse_multi(_text(_stages(model_family))),
            tmp_path / "out",
            device="cpu",
            events=events,
            cancel=token,
        )
    assert seen and not (tmp_path / "out").exists()


def test_a_memory_cap_applies_to_every_stage(model_family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The module (``mergestudio.engine.merge`` is also the name of its function there).
    merge_module = importlib.import_module("mergestudio.engine.merge")
    stages = _stages(model_family)
    default = merge_multi(parse_multi(_text(stages)), tmp_path / "a", device="cpu")
    steps: list[int | None] = []
    run_plan = merge_module.execute_plan

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(kwargs.get("chunk_bytes"))
        return run_plan(*args, **kwargs)

    monkeypatch.setattr(merge_module, "execute_plan", spy)
    seen: list[str] = []
    capped = merge_multi(
        parse_multi(_text(stages)),
        tmp_path / "b",
        device="cpu",
        max_memory=8 << 30,
        chunk_bytes=64 << 10,
        events=lambda e: seen.append(e.message) if isinstance(e, LogLine) else None,
    )
    # Under a cap the intermediates go through a temporary folder, removed at the end.
    assert any("max_memory: intermediate stages are written to" in line for line in seen)
    assert steps == [64 << 10] * 3  # every stage ran in the small steps
    assert not list(tmp_path.glob(".mergestudio-stages-*"))
    first, second = _weights(default.output), _weights(capped.output)
    assert set(first) == set(second)
    assert all(first[name].equal(second[name]) for name in first)
    # A cap no stage can meet is refused, naming the stage, before anything is written.
    with pytest.raises(PlanError, match="stage 'pair': max_memory: this merge needs about"):
        merge_multi(parse_multi(_text(stages)), tmp_path / "c", device="cpu", max_memory=64 << 20)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".mergestudio-stages-*"))


def test_cli_dry_run_of_stages_says_whether_each_fits(
    model_family, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from mergestudio.cli.main import main as cli_main

    recipe = tmp_path / "stages.yml"
    recipe.write_text(_text(_stages(model_family)))
    out = str(tmp_path / "out")
    assert cli_main(["merge", str(recipe), out, "--dry-run", "--json", "--max-memory", "64MB"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert [row["fits"] for row in stages] == [False, False, False]
    assert all(row["peak_memory_bytes"] > 64 * 10**6 for row in stages)
    assert cli_main(["merge", str(recipe), out, "--dry-run", "--max-memory", "4GB"]) == 0
    assert "does NOT fit" not in capsys.readouterr().out
    assert cli_main(["merge", str(recipe), out, "-q", "--device", "cpu", "--max-memory", "4GB", "--chunk-size", "256KB"]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
