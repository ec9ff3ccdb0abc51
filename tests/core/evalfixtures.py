"""Fixtures for evaluation tests: a hand-built Llama whose outputs are known exactly.

With every attention and MLP weight zero, a Llama's hidden state is its input
embedding (the residual stream carries it through unchanged), so the model is a bigram
table: logits(next | current) = lm_head @ rmsnorm(embed[current]). With one-hot
embeddings (hidden_size >= vocab) rmsnorm(e_i) = sqrt(hidden) * e_i, so column i of
lm_head, times sqrt(hidden), is the logit vector after token i. Tests compute expected
log-likelihoods, generations and perplexities from the same table by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from mergestudio.demo.tokenizer import save_tokenizer

HIDDEN = 96  # one-hot embeddings: at least the demo tokenizer's vocabulary (86)


def bigram_logits(vocab: int, successor: dict[int, int], strength: float = 4.0) -> torch.Tensor:
    """(vocab, vocab) float32: row i = logits of the token after token i. The successor
    gets ``strength``, everything else 0 (tokens without a successor: all 0)."""
    table = torch.zeros(vocab, vocab)
    for current, nxt in successor.items():
        table[current, nxt] = strength
    return table


def write_bigram_model(folder: Path, successor_chars: dict[str, str], max_len: int = 64) -> torch.Tensor:
    """Save a bigram Llama + the demo character tokenizer in ``folder``. Keys of
    ``successor_chars`` may be single characters or the special tokens ``<s>``/``</s>``.
    Returns the logit table (vocab, vocab) the model implements."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder, model_max_length=max_len)
    tok = AutoTokenizer.from_pretrained(str(folder))
    vocab = len(tok)
    assert vocab <= HIDDEN
    ids = {t: tok.convert_tokens_to_ids(t) for t in [*successor_chars, *successor_chars.values()]}
    table = bigram_logits(vocab, {ids[a]: ids[b] for a, b in successor_chars.items()})
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_len,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-12,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        # lm_head (vocab, hidden): logits = lm_head @ (sqrt(hidden) * e_i) = sqrt(h) * column i.
        model.lm_head.weight[:, :vocab] = table.T / math.sqrt(HIDDEN)
    model.save_pretrained(str(folder))
    return table


def log_softmax_row(table: torch.Tensor, current: int) -> torch.Tensor:
    return torch.log_softmax(table[current].double(), dim=-1)
