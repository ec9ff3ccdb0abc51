"""Mixture-of-experts assembly: tiny Llama fine-tunes (each trained on one kind of text)
become the experts of a Mixtral model that transformers loads, runs and routes; a Qwen2
base becomes Qwen2-MoE; every bad config is refused by the dry run with nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.cli.main import main as cli_main
from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken, Progress
from mergestudio.moe import build_moe, plan_moe
from safetensors.torch import load_file

from tests.families import transformers_cases
from tests.moe_models import KINDS, build_family, prompts


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_family(tmp_path_factory.mktemp("moe-family"))


def _config(family: dict[str, Path], kinds: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "base_model": str(family["base"]),
        "gate_mode": "hidden",
        "dtype": "float32",
        "experts_per_token": 2 if len(kinds) > 2 else 1,
        "experts": [
            {"source_model": str(family[kind]), "positive_prompts": prompts(kind, 4, seed=0)} for kind in kinds
        ],
        **extra,
    }


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _routed_expert(model: Any, tokenizer: Any, text: str) -> int:
    """The expert with the highest router logit, averaged over the tokens and layers."""
    with torch.no_grad():
        output = model(**tokenizer(text, return_tensors="pt"), output_router_logits=True)
    logits = torch.stack(list(output.router_logits))  # (layers, tokens, experts)
    return int(logits.mean(dim=(0, 1)).argmax())


@pytest.mark.parametrize("kinds", [["digits", "upper"], list(KINDS)], ids=["2-experts", "4-experts"])
def test_hidden_gates_route_held_out_prompts_to_their_expert(
    family: dict[str, Path], kinds: list[str], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "moe"
    build_moe(_config(family, kinds), out)
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == len(kinds)
    for index, kind in enumerate(kinds):
        for text in prompts(kind, 4, seed=1):  # held out: another seed than the gates'
            assert _routed_expert(model, tokenizer, text) == index, (kind, text)
    generated = model.generate(**tokenizer("12 34", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 3


def test_experts_are_the_fine_tunes_mlps_and_the_rest_is_the_base(family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "moe"
    config = _config(family, ["digits", "lower"], gate_mode="cheap_embed")
    config["experts"][1]["residual_scale"] = 0.5
    build_moe(config, out)
    merged, base = _tensors(out), _tensors(family["base"])
    digits, lower = _tensors(family["digits"]), _tensors(family["lower"])
    for layer in range(2):
        prefix, moe = f"model.layers.{layer}.mlp.", f"model.layers.{layer}.block_sparse_moe."
        assert torch.equal(merged[moe + "experts.0.w1.weight"], digits[prefix + "gate_proj.weight"])
        assert torch.equal(merged[moe + "experts.0.w3.weight"], digits[prefix + "up_proj.weight"])
        assert torch.equal(merged[moe + "experts.0.w2.weight"], digits[prefix + "down_proj.weight"])
        assert torch.equal(merged[moe + "experts.1.w1.weight"], lower[prefix + "gate_proj.weight"])
        assert torch.allclose(merged[moe + "experts.1.w2.weight"], 0.5 * lower[prefix + "down_proj.weight"])
        gate = merged[moe + "gate.weight"]
        assert gate.shape == (2, 32)
        assert torch.allclose(gate.norm(dim=1), torch.ones(2))  # unit rows
        assert torch.equal(gate, merged["model.layers.0.block_sparse_moe.gate.weight"])  # cheap_embed: every layer
    for name, tensor in base.items():
        if ".mlp." not in name:
            assert torch.equal(merged[name], tensor), name
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["architectures"] == ["MixtralForCausalLM"]
    assert config_json["num_experts_per_tok"] == 1
    assert (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "expert 1" in card and "cheap_embed" in card


def test_random_gates_are_seeded(family: dict[str, Path], tmp_path: Path) -> None:
    config = _config(family, ["digits", "lower"], gate_mode="random")
    gates = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        build_moe(config, tmp_path / name, seed=seed)
        gates.append(_tensors(tmp_path / name)["model.layers.1.block_sparse_moe.gate.weight"])
    assert torch.equal(gates[0], gates[1])
    assert not torch.equal(gates[0], gates[2])


def test_qwen2_base_becomes_qwen2_moe_with_a_shared_expert(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    case = next(c for c in transformers_cases() if c.family == "qwen2")
    base, tune_a, tune_b, shared = case.save(tmp_path, (0, 1, 2, 3))
    config = {
        "base_model": str(base),
        "gate_mode": "random",
        "experts": [{"source_model": str(tune_a)}, {"source_model": str(tune_b)}],
        "shared_experts": [{"source_model": str(shared)}],
    }
    out = tmp_path / "qwen-moe"
    build_moe(config, out)
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(model).__name__ == "Qwen2MoeForCausalLM"
    assert model.config.num_experts == 2 and model.config.moe_intermediate_size == 32
    logits = model(input_ids=torch.tensor([[1, 5, 9, 3]])).logits
    assert torch.isfinite(logits).all()
    merged, shared_tensors = _tensors(out), _tensors(shared)
    assert torch.equal(
        merged["model.layers.2.mlp.shared_expert.up_proj.weight"], shared_tensors["model.layers.2.mlp.up_proj.weight"]
    )
    assert merged["model.layers.2.mlp.shared_expert_gate.weight"].shape == (1, 16)
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.bias"], _tensors(base)["model.layers.0.self_attn.q_proj.bias"])


def test_progress_reaches_the_end_and_cancel_leaves_nothing(family: dict[str, Path], tmp_path: Path) -> None:
    events: list[object] = []
    build_moe(_config(family, ["digits", "lower"]), tmp_path / "done", events=events.append)
    finals = {e.job: e for e in events if isinstance(e, Progress) and e.done == e.total}
    assert set(finals) == {"moe gates", "moe"}
    assert finals["moe gates"].total == 8  # 4 prompts per expert
    for job in ("moe gates", "moe"):  # while the routers are computed; once the staging folder exists
        cancel = CancelToken()

        def cancel_at_start(event: object, job: str = job, cancel: CancelToken = cancel) -> None:
            if isinstance(event, Progress) and event.job == job:
                cancel.cancel()

        with pytest.raises(Cancelled):
            build_moe(_config(family, ["digits", "lower"]), tmp_path / "cancelled", events=cancel_at_start,
                      cancel=cancel)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]  # no output, no staging folder


# ---- every refusal: found by the dry run, named clearly, nothing written -------------------


def _other_shape(root: Path) -> Path:
    """A Llama whose MLP is wider than the family's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = root / "wide"
    config = LlamaConfig(vocab_size=77, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def _qwen(root: Path) -> Path:
    return next(c for c in transformers_cases() if c.family == "qwen2").save(root, (0,))[0]


def _no_tokenizer(root: Path) -> Path:
    import shutil

    folder = root / "bare-base"
    shutil.copytree(root / "base", folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


Edit = Callable[[dict[str, Any], dict[str, Path], Path], None]

BAD_CONFIGS: list[tuple[str, Edit, str]] = [
    ("unknown key", lambda c, f, t: c.update(experts_per_tok=2), "unknown key 'experts_per_tok'"),
    ("unknown expert key", lambda c, f, t: c["experts"][0].update(prompts=["x"]), "unknown key 'experts[0].prompts'"),
    ("unknown gate mode", lambda c, f, t: c.update(gate_mode="learned"), "gate_mode"),
    ("too many per token", lambda c, f, t: c.update(experts_per_token=3), "experts_per_token: 3 is more than"),
    ("missing prompts", lambda c, f, t: c["experts"][1].pop("positive_prompts"), "experts[1].positive_prompts"),
    ("identical prompts", lambda c, f, t: c["experts"][1].update(positive_prompts=c["experts"][0]["positive_prompts"]),
     "same positive and negative prompts"),
    ("bad dtype", lambda c, f, t: c.update(dtype="float12"), "dtype: unknown dtype 'float12'"),
    ("missing model", lambda c, f, t: c["experts"][0].update(source_model=str(t / "nowhere")), "nowhere"),
    ("expert shape", lambda c, f, t: c["experts"][1].update(source_model=str(_other_shape(t))),
     "experts[1].source_model: " ),
    ("expert family", lambda c, f, t: c["experts"][0].update(source_model=str(_qwen(t))), "is a 'qwen2' model"),
    ("no tokenizer", lambda c, f, t: c.update(base_model=str(_no_tokenizer(f["base"].parent))), "no tokenizer files"),
    ("shared on mixtral", lambda c, f, t: c.update(shared_experts=[c["experts"][0]]), "has no shared expert"),
    ("qwen without shared", lambda c, f, t: (c.update(base_model=str(_qwen(t)), gate_mode="random"),
                                              [e.update(source_model=c["base_model"]) for e in c["experts"]]),
     "shared_experts: Qwen2-MoE"),
    ("architecture mismatch", lambda c, f, t: c.update(architecture="qwen"), "architecture: Qwen2-MoE"),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _, e, m in BAD_CONFIGS], ids=[n for n, _, _ in BAD_CONFIGS])
def test_bad_configs_are_refused_by_the_dry_run_with_nothing_written(
    family: dict[str, Path], tmp_path: Path, edit: Edit, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(family, ["digits", "lower"])
    edit(config, family, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(MergeStudioError, match=message.replace("(", r"\(").replace("[", r"\[")):
        plan_moe(config, out)
    with pytest.raises(MergeStudioError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_moe(config, out)
    import yaml

    path = tmp_path / "moe.yml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["moe", str(path), str(out), "--dry-run"]) == 1
    assert message.split("'")[0] in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_output_is_refused_before_any_work(family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeStudioError, match="taken"):
        plan_moe(_config(family, ["digits", "lower"]), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_dry_run_reports_the_plan(family: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "moe.yml"
    path.write_text(yaml.safe_dump(_config(family, list(KINDS))))
    assert cli_main(["moe", str(path), str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "MixtralForCausalLM"
    assert [e["model"] for e in report["experts"]] == [str(family[k]) for k in KINDS]
    # 4 experts × 3 matrices × 2 layers + 2 routers + the base's 15 other tensors
    assert report["tensors"] == 24 + 2 + 15
    assert report["bytes_to_write"] > report["bytes_to_read"] > 0
    assert not (tmp_path / "out").exists()
