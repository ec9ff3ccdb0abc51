"""Writing the output's tokenizer: the source model's files, the tokens a union adds
(through `transformers`, so tokenizer.json, tokenizer_config.json and
special_tokens_map.json agree), the chat template, and config.json's vocab_size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mergestudio.errors import MergeError
from mergestudio.vocab.align import VocabPlan


def add_union_tokens(plan: VocabPlan, folder: Path) -> None:
    """Add ``plan.new_tokens`` to the tokenizer already copied into ``folder``, each at
    the id the plan gave it (checked after saving)."""
    if not plan.new_tokens:
        return
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for token in plan.new_tokens:  # in id order: each lands at len(tokenizer)
        added = AddedToken(token.content, special=token.special, normalized=not token.special)
        if token.special:  # listed among the special tokens, so skip_special_tokens drops it
            tokenizer.add_special_tokens(
                {"extra_special_tokens": [added]}, replace_extra_special_tokens=False
            )
        else:
            tokenizer.add_tokens([added])
    tokenizer.save_pretrained(str(folder))
    _check_ids(plan, folder)


def _check_ids(plan: VocabPlan, folder: Path) -> None:
    from tokenizers import Tokenizer

    written = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    wrong = [t for t in plan.new_tokens if written.get(t.content) != t.id]
    if wrong:
        token = wrong[0]
        raise MergeError(
            f"tokenizer: {token.content!r} was written at id {written.get(token.content)}, planned {token.id}"
        )


def write_chat_template(folder: Path, template: str) -> None:
    """Put ``template`` into tokenizer_config.json; a chat_template.jinja beside it would
    take precedence in `transformers`, so it is removed."""
    path = folder / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (folder / "chat_template.jinja").unlink(missing_ok=True)


def set_vocab_size(folder: Path, rows: int) -> None:
    """config.json's vocab_size (top level, or text_config's where the model nests it)."""
    path = folder / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    scope = (
        config["text_config"]
        if "vocab_size" not in config and isinstance(config.get("text_config"), dict)
        else config
    )
    scope["vocab_size"] = rows
    path.write_text(json.dumps(config, indent=2) + "\n")
