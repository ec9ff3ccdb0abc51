"""Different vocabularies: two tiny Llama fine-tunes whose tokenizers differ (one lists
its characters in another order, adds 8 special tokens and pads its embedding) merged
with each tokenizer source; rows are checked by token string against the inputs."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from mergestudio.cli.main import main as cli_main
from mergestudio.demo.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, UNK
from mergestudio.engine.merge import merge, plan_folder_merge
from mergestudio.errors import MergeStudioError
from mergestudio.io import open_model
from safetensors.torch import load_file

from tests.checkpoints import tiny_llama_model

# 47 characters: with the 4 special tokens, 51 tokens (fixed here, not the demo's alphabet)
CHARACTERS = string.ascii_lowercase + string.digits + " .,!?'+-=:\n"
ADDED = (*(f"<|tool_{i}|>" for i in range(6)), "<|im_start|>", "<|im_end|>")
HIDDEN = 16
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


def _save_tokenizer(
    folder: Path, characters: str, added: tuple[str, ...], template: str | None = None
) -> None:
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in characters:
        vocab.setdefault(ch, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    if added:
        fast.add_special_tokens({"additional_special_tokens": list(added)})
    if template:
        fast.chat_template = template
    fast.save_pretrained(str(folder))


def _save_model(folder: Path, rows: int, seed: int) -> None:
    tiny_llama_model(rows, hidden=HIDDEN, intermediate=32, seed=seed).save_pretrained(str(folder))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a: 51 tokens, 52 rows. b: the same characters in reverse order (every shared
    character at another id), 8 added special tokens (59 tokens) and 64 rows."""
    root = tmp_path_factory.mktemp("vocab")
    a, b = root / "a", root / "b"
    _save_model(a, 52, seed=1)
    _save_tokenizer(a, CHARACTERS, ())
    _save_model(b, 64, seed=2)
    _save_tokenizer(b, CHARACTERS[::-1], ADDED, template="{{ messages[0]['content'] }}!")
    return {"a": a, "b": b, "root": root}


def _vocab(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    return dict(Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True))


def _recipe(pair: dict[str, Path], **extra: object) -> dict[str, object]:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(pair["a"]), "parameters": {"weight": 0.25}},
            {"model": str(pair["b"]), "parameters": {"weight": 0.75}},
        ],
        "dtype": "float32",
        **extra,
    }


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def test_union_aligns_rows_by_token_string_and_generates(pair: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "union"
    merge(_recipe(pair, tokenizer_source="union"), out, device="cpu")
    va, vb, vo = _vocab(pair["a"]), _vocab(pair["b"]), _vocab(out)
    ta, tb, to = _tensors(pair["a"]), _tensors(pair["b"]), _tensors(out)
    # a's vocabulary, then b's 8 special tokens at the ids b gave them
    assert {t: vo[t] for t in va} == va
    assert {t: vo[t] for t in ADDED} == {t: vb[t] for t in ADDED}
    assert len(vo) == 59
    for name in EMBEDDINGS:
        assert to[name].shape == (59, HIDDEN)  # the union's size: a (the source) has fewer rows
        for token in ("a", "z", "7", EOS):
            expected = 0.25 * ta[name][va[token]] + 0.75 * tb[name][vb[token]]
            torch.testing.assert_close(to[name][vo[token]], expected)
        for token in ADDED:  # only b has them: the weighted mean over the models that have it
            torch.testing.assert_close(to[name][vo[token]], tb[name][vb[token]])
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 59

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == vb["<|im_end|>"]
    assert "<|im_start|>" in tokenizer.all_special_tokens
    ids = tokenizer("abc <|im_start|>", return_tensors="pt")
    assert vb["<|im_start|>"] in ids["input_ids"][0].tolist()
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5


def test_base_source_keeps_the_first_models_vocabulary(pair: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "base"
    merge(_recipe(pair, tokenizer_source="base"), out, device="cpu")
    va, vb = _vocab(pair["a"]), _vocab(pair["b"])
    assert _vocab(out) == va
    ta, tb, to = _tensors(pair["a"]), _tensors(pair["b"]), _tensors(out)
    assert to["lm_head.weight"].shape == (52, HIDDEN)
    torch.testing.assert_close(
        to["lm_head.weight"][va["q"]],
        0.25 * ta["lm_head.weight"][va["q"]] + 0.75 * tb["lm_head.weight"][vb["q"]],
    )


def test_model_source_takes_that_models_vocabulary(pair: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    recipe = _recipe(pair, tokenizer={"source": str(pair["b"]), "pad_to_multiple_of": 48})
    merge(recipe, out, device="cpu")
    va, vb = _vocab(pair["a"]), _vocab(pair["b"])
    assert _vocab(out) == vb
    ta, tb, to = _tensors(pair["a"]), _tensors(pair["b"]), _tensors(out)
    emb = to["model.embed_tokens.weight"]
    assert emb.shape == (96, HIDDEN)  # 64 rows padded to a multiple of 48
    torch.testing.assert_close(
        emb[vb["k"]],
        0.25 * ta["model.embed_tokens.weight"][va["k"]] + 0.75 * tb["model.embed_tokens.weight"][vb["k"]],
    )
    assert torch.count_nonzero(emb[64:]) == 0  # no model has these rows
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 96


def test_token_override_copies_the_row(pair: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "override"
    tokens = {"a": {"source": str(pair["a"])}, "<|im_end|>": {"source": {"kind": "zero"}}}
    merge(_recipe(pair, tokenizer={"source": "union", "tokens": tokens}), out, device="cpu")
    vo, va = _vocab(out), _vocab(pair["a"])
    to, ta = _tensors(out), _tensors(pair["a"])
    torch.testing.assert_close(to["lm_head.weight"][vo["a"]], ta["lm_head.weight"][va["a"]])
    assert torch.count_nonzero(to["lm_head.weight"][vo["<|im_end|>"]]) == 0


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("chatml", "<|im_start|>"),
        ("auto", "{{ messages[0]['content'] }}!"),
        ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "{{ m['content'] }}"),
    ],
)
def test_chat_template_round_trip(pair: dict[str, Path], tmp_path: Path, choice: str, expected: str) -> None:
    out = tmp_path / "chat"
    merge(_recipe(pair, tokenizer_source="union", chat_template=choice), out, device="cpu")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert expected in config["chat_template"]
    assert not (out / "chat_template.jinja").exists()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "hi" in text


def _without_tokenizer(pair: dict[str, Path]) -> Path:
    folder = pair["root"] / "no-tokenizer"
    if not folder.exists():
        folder.mkdir()
        for name in ("config.json", "model.safetensors"):
            (folder / name).write_bytes((pair["b"] / name).read_bytes())
    return folder


def _conflicting(pair: dict[str, Path]) -> Path:
    """c: a's characters, then the same special token as b's '<|im_end|>' but at another id."""
    folder = pair["root"] / "conflict"
    if not folder.exists():
        _save_model(folder, 54, seed=3)
        _save_tokenizer(folder, CHARACTERS, ("<|other|>", "<|im_end|>"))
    return folder


def _slow_only(pair: dict[str, Path], files: dict[str, str | bytes], tokenizer_class: str) -> Path:
    """a's weights with only slow tokenizer files (no tokenizer.json)."""
    import shutil

    folder = pair["root"] / f"slow-{tokenizer_class}"
    if not folder.exists():
        folder.mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(pair["a"] / name, folder / name)
        for name, content in files.items():
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        config = {"tokenizer_class": tokenizer_class, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
                  "pad_token": PAD}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _gpt2_style(pair: dict[str, Path]) -> Path:
    """a's vocabulary as GPT-2's vocab.json + merges.txt."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(pair["a"] / "tokenizer.json")).get_vocab(with_added_tokens=False)
    return _slow_only(pair, {"vocab.json": json.dumps(vocab), "merges.txt": "#version: 0.2\n"}, "GPT2Tokenizer")


def test_union_converts_a_tokenizer_without_tokenizer_json(pair: dict[str, Path], tmp_path: Path) -> None:
    """The same vocabulary given as vocab.json + merges.txt merges exactly like a's
    tokenizer.json; the output gets a tokenizer.json transformers loads."""
    from transformers import AutoTokenizer

    slow, fast = tmp_path / "slow", tmp_path / "fast"
    recipe = _recipe(pair, tokenizer_source="union")
    merge(recipe, fast, device="cpu")
    recipe["models"][0]["model"] = str(_gpt2_style(pair))
    merge(recipe, slow, device="cpu")
    for name in EMBEDDINGS:
        assert torch.equal(_tensors(slow)[name], _tensors(fast)[name])
    assert {t: _vocab(slow)[t] for t in ADDED} == {t: _vocab(fast)[t] for t in ADDED}
    assert len(AutoTokenizer.from_pretrained(str(slow))) == 59


ERRORS = {
    "union-sentencepiece-unreadable": (
        lambda p: {
            **_recipe(p, tokenizer_source="union"),
            "models": [{"model": str(p["b"])},
                       {"model": str(_slow_only(p, {"tokenizer.model": b"not a sentencepiece model"},
                                                "LlamaTokenizer"))}],
        },
        "has no tokenizer.json, and transformers cannot build one from its tokenizer files",
    ),
    "unknown-source": (
        lambda p: _recipe(p, tokenizer_source="ghost"),
        "tokenizer_source: 'ghost' is not one of",
    ),
    "union-without-tokenizer": (
        lambda p: {
            **_recipe(p, tokenizer_source="union"),
            "models": [{"model": str(p["a"])}, {"model": str(_without_tokenizer(p))}],
        },
        "union needs every model's tokenizer (tokenizer.json, or files transformers converts",
    ),
    "conflicting-ids": (
        lambda p: {
            **_recipe(p, tokenizer_source="union"),
            "models": [{"model": str(p["b"])}, {"model": str(_conflicting(p))}],
        },
        "conflicting token ids: special token '<|im_end|>' is id 58",
    ),
    "unknown-chat-template": (
        lambda p: _recipe(p, chat_template="chatmll"),
        "chat_template: unknown template 'chatmll'",
    ),
    "auto-template-none": (
        lambda p: {**_recipe(p, chat_template="auto"), "models": [{"model": str(p["a"])}]},
        "auto found no chat template",
    ),
    "override-unknown-token": (
        lambda p: _recipe(p, tokenizer={"tokens": {"<nope>": {"source": str(p["a"])}}}),
        "tokenizer.tokens: '<nope>' is not in the output vocabulary",
    ),
    "rows-differ-without-source": (
        lambda p: {**_recipe(p), "models": [{"model": str(p["a"])}, {"model": str(_without_tokenizer(p))}]},
        "has no tokenizer.json and 64 embedding rows",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_found_by_the_dry_run_and_nothing_is_written(
    pair: dict[str, Path], tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    make, message = ERRORS[case]
    recipe = make(pair)
    out = tmp_path / "out"
    with pytest.raises(MergeStudioError, match=_escape(message)):
        plan_folder_merge(recipe, out, device="cpu")
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli_main(["merge", str(path), str(out), "--dry-run", "--device", "cpu"]) != 0
    assert message in capsys.readouterr().err
    with pytest.raises(MergeStudioError):
        merge(recipe, out, device="cpu")
    assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_padded_embedding_with_same_tokenizer_is_no_longer_refused(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    """b's tokenizer on both, one embedding padded: rows matched by token, the padding kept."""
    padded = pair["root"] / "b-padded"
    if not padded.exists():
        _save_model(padded, 72, seed=4)
        _save_tokenizer(padded, CHARACTERS[::-1], ADDED)
    out = tmp_path / "padded"
    recipe = {
        "merge_method": "linear",
        "base_model": str(pair["b"]),
        "models": [
            {"model": str(pair["b"]), "parameters": {"weight": 1.0}},
            {"model": str(padded), "parameters": {"weight": 1.0}},
        ],
    }
    plan = plan_folder_merge(recipe, out, device="cpu")
    plan.close()
    merge(recipe, out, device="cpu")
    assert _tensors(out)["lm_head.weight"].shape == (64, HIDDEN)
    assert open_model(out).config["vocab_size"] == 64  # type: ignore[index]


def test_preflight_names_added_tokens_and_their_fate(pair: dict[str, Path]) -> None:
    from mergestudio.preflight import preflight

    a, b = open_model(pair["a"]), open_model(pair["b"])
    conflict = open_model(_conflicting(pair))
    try:
        kept = preflight(a, [b], "union").for_model(b.reference)
        vocab = next(c for c in kept if c.topic == "vocabulary")
        assert vocab.status == "ok"
        assert "59 tokens (base 51)" in vocab.message
        assert "adds 8: '<|tool_0|>'" in vocab.message
        assert "union adds them to the output" in vocab.message
        shapes = next(c for c in kept if c.topic == "shapes")
        assert shapes.status == "ok"  # the padded embedding is matched by token, not refused
        assert "lm_head.weight" in shapes.message
        dropped = next(c for c in preflight(a, [b], "base").checks if c.topic == "vocabulary")
        assert dropped.status == "warning"
        assert "dropped" in dropped.message
        taken = next(c for c in preflight(a, [b], b.reference).checks if c.topic == "vocabulary")
        assert "kept" in taken.message
        clash = next(c for c in preflight(b, [conflict], "union").checks if c.topic == "vocabulary")
        assert clash.status == "error"
        assert "conflicting token ids" in clash.message
    finally:
        for source in (a, b, conflict):
            source.close()


def test_dry_run_reports_the_vocabulary_plan(
    pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(_recipe(pair, tokenizer_source="union", chat_template="chatml")))
    out = tmp_path / "out"
    assert cli_main(["merge", str(path), str(out), "--dry-run", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "vocabulary             union: 59 tokens, 59 rows, rows matched by token" in text
    assert "adds 8 over the base ('<|tool_0|>'" in text
    assert "chat template" in text
    assert not out.exists()


def test_without_a_tokenizer_source_equal_rows_merge_by_index(pair: dict[str, Path]) -> None:
    """mergekit's default: no tokenizer_source and embeddings of one size: no alignment,
    even where the tokenizers order their tokens differently."""
    reordered = pair["root"] / "a-reordered"
    if not reordered.exists():
        _save_model(reordered, 52, seed=5)
        _save_tokenizer(reordered, CHARACTERS[::-1], ())
    recipe = {
        "merge_method": "linear",
        "parameters": {"weight": 1.0},
        "models": [{"model": str(pair["a"])}, {"model": str(reordered)}],
    }
    plan = plan_folder_merge(recipe, None, device="cpu")
    try:
        assert plan.vocab is None
        assert not any(p.align_rows for p in plan.tensors)
    finally:
        plan.close()
    plan = plan_folder_merge({**recipe, "tokenizer_source": "base"}, None, device="cpu")
    try:
        assert plan.vocab is not None
        assert {p.name for p in plan.tensors if p.align_rows} == set(EMBEDDINGS)
    finally:
        plan.close()
