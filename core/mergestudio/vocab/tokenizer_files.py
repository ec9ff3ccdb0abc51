"""What a model folder's tokenizer says: its vocabulary (string -> id, added tokens
included), which tokens were added on top of the model's vocabulary, and its chat
template. Read from tokenizer.json and tokenizer_config.json only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergestudio.errors import PlanError


@dataclass(frozen=True)
class AddedToken:
    content: str
    id: int
    special: bool


@dataclass(frozen=True)
class TokenizerFiles:
    """``vocab`` maps every token string to its id; ``added`` lists the added tokens
    (special ones included) in id order."""

    root: Path
    vocab: dict[str, int]
    added: tuple[AddedToken, ...]
    chat_template: str | None

    def __len__(self) -> int:
        return max(self.vocab.values(), default=-1) + 1

    def added_by_content(self) -> dict[str, AddedToken]:
        return {token.content: token for token in self.added}


# A tokenizer without tokenizer.json: SentencePiece models, GPT-2 style BPE, WordPiece.
SLOW_TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def read_tokenizer(root: Path, *, convert: bool = False) -> TokenizerFiles | None:
    """The tokenizer of the folder ``root``, or None when it has no tokenizer.json (the
    only format whose vocabulary can be read without loading a tokenizer class).
    ``convert``: a folder with only slow tokenizer files gets the fast tokenizer
    `transformers` converts them to (SentencePiece needs the sentencepiece and protobuf
    packages); when it cannot, a PlanError says why."""
    path = root / "tokenizer.json"
    if not path.is_file():
        if convert and any((root / name).is_file() for name in SLOW_TOKENIZER_FILES):
            return _files_of(root, _converted(root))
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own Exception subclass
        raise PlanError(f"{path}: cannot read the tokenizer ({error})") from error
    return _files_of(root, tokenizer)


def _converted(root: Path) -> Any:
    """The `tokenizers.Tokenizer` transformers builds from ``root``'s slow files."""
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(root))
    except Exception as error:  # transformers raises many kinds (ImportError for sentencepiece)
        raise PlanError(
            f"{root}: has no tokenizer.json, and transformers cannot build one from its tokenizer files "
            f"({type(error).__name__}: {error}). SentencePiece models (tokenizer.model) need the "
            "sentencepiece and protobuf packages; or save the tokenizer with a fast tokenizer first"
        ) from error
    backend = getattr(loaded, "backend_tokenizer", None)
    if backend is None:
        raise PlanError(f"{root}: has no tokenizer.json, and transformers loads only a slow "
                        f"{type(loaded).__name__}, which it cannot convert")
    return backend


def _files_of(root: Path, tokenizer: Any) -> TokenizerFiles:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    added = tuple(
        AddedToken(token.content, token_id, bool(token.special))
        for token_id, token in sorted(tokenizer.get_added_tokens_decoder().items())
    )
    return TokenizerFiles(root, vocab, added, _chat_template(root))


def _chat_template(root: Path) -> str | None:
    """The template in chat_template.jinja, else tokenizer_config.json's (a string; the
    list form of named templates keeps its 'default' entry)."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config_path = root / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PlanError(f"{config_path}: cannot read ({error})") from error
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None
