"""A merged model as one GGUF file for llama.cpp and Ollama, written with the ``gguf``
package: its writer, its tensor-name maps and its quantizers.

Conventions follow llama.cpp's ``convert_hf_to_gguf`` (read, not copied):

- Tensor names come from ``gguf.get_tensor_name_map(arch, blocks)``; a tensor the map does
  not know is an error before anything is written (rotary caches are skipped).
- Llama-architecture files (Llama, Mistral) store q/k rows in GGML's interleaved rotary
  order: each head's rows ``[x0..x(d/2-1), y0..y(d/2-1)]`` (Hugging Face's rotate-half
  halves) become ``[x0, y0, x1, y1, …]``. Qwen2/Qwen3 use the NeoX rotary in llama.cpp and
  keep Hugging Face's order.
- ``f16``: matrices in F16, vectors (norms, biases) in F32. ``q8_0``: matrices whose rows
  are a multiple of 32 in Q8_0 (``gguf.quants``), other matrices F16, vectors F32.
- The tokenizer: BPE (``tokenizer.json``, byte-level: model ``gpt2`` with merges and a
  pre-tokenizer name), Llama's byte-fallback BPE (model ``llama``, scores and types), or a
  SentencePiece ``tokenizer.model``; special token ids, add_bos/add_eos and the chat
  template from ``gguf.vocab.SpecialVocab``. Rows past the tokenizer (embedding padding)
  get ``[PADn]`` tokens of type UNUSED.

The file is written to a hidden ``.NAME.partial-PID`` beside the target and renamed into
place when complete; an error or a cancel removes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mergestudio.errors import ExportError
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.io.hub import hub_transfer

if TYPE_CHECKING:
    import gguf
    import numpy as np
    import torch

    from mergestudio.io.sources import ModelSource

GgufType = Literal["f16", "q8_0"]
GGUF_TYPES: tuple[GgufType, ...] = ("f16", "q8_0")
JOB = "export-gguf"
_SKIPPED = re.compile(r"(rotary_emb\.inv_freq|\.rotary_emb\.|_float_tensor)$")


@dataclass(frozen=True)
class GgufFamily:
    """What llama.cpp needs to know about a Hugging Face ``model_type``: its GGUF
    architecture name, whether q/k rows are permuted to the interleaved rotary order, and
    the pre-tokenizer name of its byte-level BPE tokenizers."""

    arch: str
    permute_qk: bool
    bpe_pre: str


# Keyed by config.json's model_type. Adding a family whose tensors gguf's map knows is one line.
GGUF_FAMILIES: dict[str, GgufFamily] = {
    "llama": GgufFamily("llama", permute_qk=True, bpe_pre="llama-bpe"),
    "mistral": GgufFamily("llama", permute_qk=True, bpe_pre="llama-bpe"),
    "qwen2": GgufFamily("qwen2", permute_qk=False, bpe_pre="qwen2"),
    "qwen3": GgufFamily("qwen3", permute_qk=False, bpe_pre="qwen2"),
}


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of the file: its Hugging Face name, GGUF name, shape (Hugging Face
    order: rows first) and storage type; ``heads`` set for q/k rows to permute."""

    source_name: str
    name: str
    shape: tuple[int, ...]
    qtype: str  # a gguf.GGMLQuantizationType name: F32, F16, Q8_0
    heads: int | None = None  # heads of a q (attention heads) or k (kv heads) matrix to permute


@dataclass(frozen=True)
class GgufResult:
    output: Path
    tensors: int
    bytes_written: int
    types: dict[str, int]  # tensors per storage type


@dataclass
class _Vocabulary:
    model: str  # tokenizer.ggml.model: gpt2, llama
    pre: str | None
    tokens: list[bytes] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)


def export_gguf(
    model: str | Path,
    out: str | Path,
    *,
    qtype: GgufType = "f16",
    overwrite: bool = False,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> GgufResult:
    """Write ``model`` (a folder, file or Hub id) as a GGUF file at ``out``. Everything is
    checked (family, rotary scaling, every tensor's name, the tokenizer) before the file
    is created; nothing appears at ``out`` unless the export completes."""
    from mergestudio.io.sources import open_model

    if qtype not in GGUF_TYPES:
        raise ExportError(f"--type: {qtype!r} is not one of {', '.join(GGUF_TYPES)}")
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise ExportError("GGUF export needs the gguf package: pip install 'mergestudio[gguf]'") from error
    target = Path(out)
    if target.exists() and not overwrite:
        raise ExportError(f"{target}: exists (pass --overwrite to replace it)")
    if not target.parent.is_dir():
        raise ExportError(f"{target.parent}: no such folder")
    with hub_transfer(events, cancel):
        source = open_model(model)
    try:
        family = gguf_family(source)
        config = source.config or {}
        tensors = plan_gguf_tensors(source, family, qtype)
        vocabulary = read_vocabulary(source.root, family, _vocab_rows(source))
        with _staged_file(target) as staging:
            written = _write(staging, source, family, config, tensors, vocabulary, qtype, events, cancel)
    finally:
        source.close()
    log(events, f"wrote {target} ({len(tensors)} tensors, {qtype})")
    types: dict[str, int] = {}
    for tensor in tensors:
        types[tensor.qtype] = types.get(tensor.qtype, 0) + 1
    return GgufResult(target, len(tensors), written, types)


def gguf_family(source: ModelSource) -> GgufFamily:
    model_type = str((source.config or {}).get("model_type", ""))
    try:
        return GGUF_FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(GGUF_FAMILIES))
        raise ExportError(
            f"{source.reference}: GGUF export knows the model types {known}; config.json says "
            f"model_type {model_type!r}"
        ) from None


def plan_gguf_tensors(source: ModelSource, family: GgufFamily, qtype: GgufType) -> list[GgufTensor]:
    """Every tensor's GGUF name, type and permutation, in the source's order; names gguf's
    map does not know are one error listing them."""
    import gguf

    config = source.config or {}
    blocks = int(config.get("num_hidden_layers", 0))
    name_map = gguf.get_tensor_name_map(_arch_enum(family.arch), blocks)
    heads, heads_kv = _heads(config)
    planned, unknown = [], []
    for name, info in source.tensors.items():
        if _SKIPPED.search(name):
            continue
        mapped = name_map.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            unknown.append(name)
            continue
        kind, gguf_name = mapped
        permute = None
        if family.permute_qk and name.endswith(".weight") and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            permute = heads if kind == gguf.MODEL_TENSOR.ATTN_Q else heads_kv
        planned.append(GgufTensor(name, gguf_name, info.shape, _storage_type(info.shape, qtype), permute))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ExportError(f"{source.reference}: gguf's {family.arch} tensor map has no name for {shown}")
    return planned


def _arch_enum(arch: str) -> gguf.MODEL_ARCH:
    import gguf

    by_name = {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}
    return by_name[arch]


def _heads(config: dict[str, Any]) -> tuple[int, int]:
    heads = int(config.get("num_attention_heads", 1))
    return heads, int(config.get("num_key_value_heads") or heads)


def _storage_type(shape: tuple[int, ...], qtype: GgufType) -> str:
    if len(shape) < 2:
        return "F32"  # norms and biases stay in full precision, as llama.cpp keeps them
    if qtype == "q8_0" and shape[-1] % 32 == 0:
        return "Q8_0"
    return "F16"


def permute_for_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """(heads·d, in) rows in Hugging Face's rotate-half order per head → GGML's interleaved
    order: within each head, rows [0..d/2) and [d/2..d) are zipped. Same shape and dtype."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _vocab_rows(source: ModelSource) -> int:
    config = source.config or {}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in source.tensors:
            return int(source.tensors[name].shape[0])
    return int(config.get("vocab_size", 0))


# ---- tokenizer ------------------------------------------------------------------------------


def read_vocabulary(root: Path, family: GgufFamily, rows: int) -> _Vocabulary:
    """The tokenizer's tokens, scores and types as llama.cpp stores them, padded to the
    embedding's ``rows``; an error names the folder when no supported tokenizer is there."""
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab

    kinds: list[tuple[type[Any], str, str | None]] = [(BpeVocab, "gpt2", family.bpe_pre), (LlamaHfVocab, "llama", None)]
    if (root / "tokenizer.model").is_file():
        kinds.append((SentencePieceVocab, "llama", None))
    reasons = []
    for kind, model, pre in kinds:
        try:
            vocab = kind(root)
        except (FileNotFoundError, TypeError, ImportError, KeyError, RuntimeError) as error:
            # RuntimeError: SentencePieceVocab without the sentencepiece package
            reasons.append(f"{kind.__name__}: {error}")
            continue
        result = _Vocabulary(model, pre)
        for text, score, token_type in vocab.all_tokens():
            result.tokens.append(text if isinstance(text, bytes) else str(text).encode())
            result.scores.append(float(score))
            result.types.append(int(token_type))
        _mark_special(result, root)
        return _padded(result, rows, root)
    raise ExportError(f"{root}: no tokenizer GGUF can store (tokenizer.json BPE or tokenizer.model): {'; '.join(reasons)}")


def _mark_special(vocab: _Vocabulary, root: Path) -> None:
    """Special added tokens (``<s>``, ``<|im_end|>``) are CONTROL tokens in llama.cpp, also
    when the BPE vocabulary lists them (gguf's BpeVocab marks those NORMAL)."""
    import json

    import gguf

    path = root / "tokenizer.json"
    if not path.is_file():
        return
    for added in json.loads(path.read_text(encoding="utf-8")).get("added_tokens", []):
        index = added.get("id")
        if added.get("special") and isinstance(index, int) and index < len(vocab.types):
            vocab.types[index] = int(gguf.TokenType.CONTROL)


def _padded(vocab: _Vocabulary, rows: int, root: Path) -> _Vocabulary:
    import gguf

    if len(vocab.tokens) > rows:
        raise ExportError(f"{root}: the tokenizer has {len(vocab.tokens)} tokens but the embedding only {rows} rows")
    for index in range(len(vocab.tokens), rows):
        vocab.tokens.append(f"[PAD{index}]".encode())
        vocab.scores.append(-1000.0)
        vocab.types.append(int(gguf.TokenType.UNUSED))
    return vocab


# ---- writing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _staged_file(target: Path) -> Iterator[Path]:
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        yield staging
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _write(
    path: Path,
    source: ModelSource,
    family: GgufFamily,
    config: dict[str, Any],
    tensors: list[GgufTensor],
    vocabulary: _Vocabulary,
    qtype: GgufType,
    events: EventSink | None,
    cancel: CancelToken | None,
) -> int:
    import gguf

    writer = gguf.GGUFWriter(path, family.arch)
    try:
        _add_metadata(writer, source, config, qtype, vocabulary)
        sizes = []
        for tensor in tensors:
            raw = gguf.GGMLQuantizationType[tensor.qtype]
            shape, dtype = _stored_shape(tensor.shape, raw)
            nbytes = math.prod(shape) * dtype.itemsize
            sizes.append(nbytes)
            writer.add_tensor_info(tensor.name, shape, dtype, nbytes, raw_dtype=raw)
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        reporter = ProgressReporter(events, JOB, len(tensors), bytes_total=sum(sizes))
        reporter.start()
        for tensor, nbytes in zip(tensors, sizes, strict=True):
            check_cancel(cancel)
            writer.write_tensor_data(_converted(source.read(tensor.source_name), tensor))
            reporter.advance(1, nbytes, tensor.name)
    finally:
        writer.close()
    return path.stat().st_size


def _stored_shape(shape: tuple[int, ...], raw: gguf.GGMLQuantizationType) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The numpy shape and dtype a tensor is written as: floats as themselves, quantized
    rows as bytes (uint8)."""
    import gguf
    import numpy as np

    if raw == gguf.GGMLQuantizationType.F32:
        return shape, np.dtype(np.float32)
    if raw == gguf.GGMLQuantizationType.F16:
        return shape, np.dtype(np.float16)
    return gguf.quants.quant_shape_to_byte_shape(shape, raw), np.dtype(np.uint8)


def _converted(weight: torch.Tensor, tensor: GgufTensor) -> np.ndarray[Any, Any]:
    """The tensor as the bytes GGUF stores: float32 math, q/k rows permuted, then cast or
    quantized (``gguf.quants``)."""
    import gguf

    data = weight.float()
    if tensor.heads is not None:
        data = permute_for_rotary(data, tensor.heads)
    raw = gguf.GGMLQuantizationType[tensor.qtype]
    return gguf.quants.quantize(data.contiguous().numpy(), raw)


def _add_metadata(
    writer: gguf.GGUFWriter, source: ModelSource, config: dict[str, Any], qtype: GgufType, vocab: _Vocabulary
) -> None:
    import gguf
    from gguf.vocab import SpecialVocab

    heads, heads_kv = _heads(config)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_name(Path(str(source.reference)).name or str(source.reference))
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    theta, scaling = _rope(config, source.reference)
    if theta is not None:
        writer.add_rope_freq_base(theta)
    if scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling)
    writer.add_vocab_size(len(vocab.tokens))
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    SpecialVocab(source.root, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens)).add_to_gguf(
        writer, quiet=True
    )


def _rope(config: dict[str, Any], reference: str) -> tuple[float | None, float | None]:
    """(rope θ, linear scaling factor) from config.json, in either of transformers' spellings
    (``rope_theta``/``rope_scaling`` or ``rope_parameters``); a scaling GGUF export does not
    carry (YaRN, Llama 3's frequency table) is an error naming the key."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    theta = config.get("rope_theta", parameters.get("rope_theta"))
    kind = scaling.get("rope_type") or scaling.get("type") or parameters.get("rope_type") or "default"
    if kind == "default":
        return (float(theta) if theta is not None else None), None
    if kind == "linear":
        factor = scaling.get("factor", parameters.get("factor"))
        if factor is None:
            raise ExportError(f"{reference}: config.json linear rope scaling has no factor")
        return (float(theta) if theta is not None else None), float(factor)
    raise ExportError(f"{reference}: config.json rope scaling {kind!r} is not supported by GGUF export yet")
