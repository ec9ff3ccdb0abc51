"""GGUF export read back with gguf's own reader: every tensor (names from gguf's map,
shapes, values; q/k rows in llama.cpp's interleaved rotary order), the hyperparameters,
and the tokenizer (tokens, types, merges, special ids, chat template) equal the source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mergestudio.errors import Cancelled, ExportError
from mergestudio.events import CancelToken, Progress
from mergestudio.export.gguf import export_gguf
from safetensors.torch import load_file

from tests.checkpoints import TinyLlama, write_checkpoint

gguf = pytest.importorskip("gguf")

SPEC = TinyLlama(layers=2, hidden=64, intermediate=128, heads=4, vocab=320)
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
# Hugging Face name → gguf name, written out here (not taken from gguf's map); layer 1 stands
# for every layer
EXPECTED_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.layers.1.self_attn.q_proj.weight": "blk.1.attn_q.weight",
    "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
    "model.layers.1.self_attn.v_proj.weight": "blk.1.attn_v.weight",
    "model.layers.1.self_attn.o_proj.weight": "blk.1.attn_output.weight",
    "model.layers.1.mlp.gate_proj.weight": "blk.1.ffn_gate.weight",
    "model.layers.1.mlp.up_proj.weight": "blk.1.ffn_up.weight",
    "model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight",
    "model.layers.1.input_layernorm.weight": "blk.1.attn_norm.weight",
    "model.layers.1.post_attention_layernorm.weight": "blk.1.ffn_norm.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _gguf_name(hf_name: str) -> str:
    for hf_pattern, gguf_pattern in EXPECTED_NAMES.items():
        for layer in range(SPEC.layers):
            if hf_pattern.replace(".1.", f".{layer}.") == hf_name:
                return gguf_pattern.replace(".1.", f".{layer}.")
    raise KeyError(hf_name)


def _write_bpe_tokenizer(folder: Path) -> None:
    """A real byte-level BPE tokenizer (tokenizers' trainer) with <s>/</s> and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["hello world, merge studio merges models"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_checkpoint(tmp_path_factory.mktemp("gguf") / "tiny-llama", SPEC, seed=1)
    _write_bpe_tokenizer(folder)
    return folder


def _fields(reader) -> dict[str, object]:
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _interleaved(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary order, by rows: per head, row i of the first half goes to 2i and
    row i of the second half to 2i+1."""
    out = np.empty_like(weight)
    size = weight.shape[0] // heads
    for head in range(heads):
        for i in range(size // 2):
            out[head * size + 2 * i] = weight[head * size + i]
            out[head * size + 2 * i + 1] = weight[head * size + size // 2 + i]
    return out


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_export_reads_back_equal_to_the_source(llama_folder: Path, tmp_path: Path, qtype: str) -> None:
    out = tmp_path / f"tiny.{qtype}.gguf"
    events: list[object] = []
    result = export_gguf(llama_folder, out, qtype=qtype, events=events.append)  # type: ignore[arg-type]
    assert result.output == out and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no staging file left
    reader = gguf.GGUFReader(out)
    source = load_file(str(llama_folder / "model.safetensors"))

    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(source)
    for hf_name, weight in source.items():
        tensor = tensors[_gguf_name(hf_name)]
        assert tuple(reversed(tensor.shape.tolist())) == tuple(weight.shape), hf_name
        expected = weight.float().numpy()
        if "q_proj" in hf_name or "k_proj" in hf_name:
            expected = _interleaved(expected, SPEC.heads)
        stored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(expected.shape)
        if weight.dim() == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(stored, expected)
        elif qtype == "q8_0":
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
            # Q8_0: 32 values share one scale d = max|x|/127, stored in f16: rounding to the
            # nearest step is off by d/2, the f16 scale by up to 127·d·2⁻¹¹ more
            blocks = np.abs(expected.reshape(-1, 32)).max(axis=1, keepdims=True)
            error = np.abs(stored.reshape(-1, 32) - expected.reshape(-1, 32))
            assert np.all(error <= blocks / 127 * 0.5 + blocks * 2**-11 + 1e-7), hf_name
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_array_equal(stored, expected.astype(np.float16).astype(np.float32))

    fields = _fields(reader)
    config = json.loads((llama_folder / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["llama.embedding_length"] == config["hidden_size"]
    assert fields["llama.feed_forward_length"] == config["intermediate_size"]
    assert fields["llama.attention.head_count"] == config["num_attention_heads"]
    assert fields["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.rope.dimension_count"] == config["hidden_size"] // config["num_attention_heads"]
    assert fields["general.file_type"] == (7 if qtype == "q8_0" else 1)

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(llama_folder)
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[: len(hf)] == hf.convert_ids_to_tokens(list(range(len(hf))))
    assert tokens[len(hf):] == [f"[PAD{i}]" for i in range(len(hf), SPEC.vocab)]
    assert len(tokens) == SPEC.vocab == fields["llama.vocab_size"]
    types = fields["tokenizer.ggml.token_type"]
    assert types[hf.bos_token_id] == types[hf.eos_token_id] == gguf.TokenType.CONTROL
    assert types[len(hf)] == gguf.TokenType.UNUSED and types[len(hf) - 1] == gguf.TokenType.NORMAL
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "llama-bpe"
    merges = json.loads((llama_folder / "tokenizer.json").read_text())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in merges]
    assert fields["tokenizer.ggml.bos_token_id"] == hf.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == hf.eos_token_id
    assert fields["tokenizer.chat_template"] == TEMPLATE

    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == len(source)


def test_cancel_and_errors_leave_no_file(llama_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.gguf"
    cancel = CancelToken()

    def cancel_after_first(event: object) -> None:
        if isinstance(event, Progress) and event.done >= 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        export_gguf(llama_folder, out, events=cancel_after_first, cancel=cancel)
    assert list(tmp_path.iterdir()) == []

    config = json.loads((llama_folder / "config.json").read_text())
    other = write_checkpoint(tmp_path / "gpt-like", SPEC)
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt_bigcode"}))
    with pytest.raises(ExportError, match="model_type 'gpt_bigcode'"):
        export_gguf(other, out)
    with pytest.raises(ExportError, match="no tokenizer GGUF can store"):
        export_gguf(write_checkpoint(tmp_path / "no-tokenizer", SPEC), out)
    assert not out.exists()
    out.write_text("keep")
    with pytest.raises(ExportError, match="exists"):
        export_gguf(llama_folder, out)
    assert out.read_text() == "keep"


def test_unknown_tensor_is_named_before_writing(llama_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "extra"
    folder.mkdir()
    for file in llama_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.0.mystery.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ExportError, match="model.layers.0.mystery.weight"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_qwen2_keeps_rotary_order_and_maps_biases(tmp_path: Path) -> None:
    """A real Qwen2 (transformers' class, toy size, grouped kv heads): attention biases get
    gguf's names, q/k rows stay in Hugging Face's order (llama.cpp's NeoX rotary)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path / "qwen2"
    Qwen2ForCausalLM(config).save_pretrained(folder)
    _write_bpe_tokenizer(folder)
    out = tmp_path / "qwen2.gguf"
    export_gguf(folder, out)
    reader = gguf.GGUFReader(out)
    tensors = {t.name: t for t in reader.tensors}
    source = load_file(str(folder / "model.safetensors"))
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    for hf_name, gguf_name in (("model.layers.1.self_attn.q_proj.bias", "blk.1.attn_q.bias"),
                               ("model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight"),
                               ("model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight")):
        stored = gguf.quants.dequantize(tensors[gguf_name].data, tensors[gguf_name].tensor_type)
        expected = source[hf_name].float().numpy()
        np.testing.assert_allclose(stored.reshape(expected.shape), expected, rtol=1e-3, atol=1e-4)
    fields = _fields(reader)
    assert fields["general.architecture"] == "qwen2" and fields["tokenizer.ggml.pre"] == "qwen2"
    assert fields["qwen2.attention.head_count_kv"] == 2
