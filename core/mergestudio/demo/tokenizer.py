"""A character-level tokenizer built with `tokenizers`, saved so that
``transformers.AutoTokenizer.from_pretrained(folder)`` loads it offline.

One token per character keeps digits and letters separate, which is what the skills
(last letters, ciphers, digits, symbols) need from a model this small.
"""

from __future__ import annotations

import string
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARACTERS = string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,!?'+-=:\n@#$%^&*()"


def build_tokenizer(characters: str = CHARACTERS) -> object:
    """A `tokenizers.Tokenizer`: BPE with no merges over single characters, a BOS token
    prepended to every sequence, and a decoder that joins characters without spaces."""
    from tokenizers import Tokenizer, decoders, models, processors

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in characters:
        vocab.setdefault(ch, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def save_tokenizer(folder: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=build_tokenizer(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(folder))


def vocab_size() -> int:
    return len(set(SPECIAL_TOKENS) | set(CHARACTERS))
