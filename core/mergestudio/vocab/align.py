"""The output vocabulary of a merge and each input's row map, from tokenizer files only.

Rules (docs/tokenizers.md):
- ``base`` / ``<model>``: the output vocabulary is that model's tokenizer; every input's
  rows are looked up by token string.
- ``union``: the base's (or first model's) vocabulary, then each other model's tokens it
  lacks, model by model in id order. An added special token keeps its id: when it cannot
  (the id is taken, or two models give the string different ids) the plan is refused.
- Rows: the output vocabulary size, never fewer than the source model's embedding rows
  (its padding is kept), rounded up to ``pad_to_multiple_of``.
- A model that lacks a token contributes, for that row, the weighted mean of the rows of
  the inputs that have it (``weight`` from the recipe, 1 without): a linear merge then
  gives the renormalised weighted mean over the models that have the token, and any
  other method sees the lacking models agree with the rest. Rows no model has are zero.
- ``tokens:`` overrides copy a token's row from one model (or zero) after the merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mergestudio.architecture import is_embedding
from mergestudio.errors import PlanError, RecipeError
from mergestudio.vocab.tokenizer_files import SLOW_TOKENIZER_FILES, AddedToken, TokenizerFiles, read_tokenizer

if TYPE_CHECKING:
    import torch

    from mergestudio.io.sources import ModelSource
    from mergestudio.recipe.model import Recipe

# The input embedding's name ends with one of these; its first dimension is the model's
# row count, and every embedding-like tensor with that many rows is aligned.
INPUT_EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
    "embed_in.weight",
)


@dataclass(frozen=True)
class RowMap:
    """``rows[i]``: the input's embedding row for output row ``i``, -1 where it has none."""

    rows: tuple[int, ...]

    def is_identity(self, count: int) -> bool:
        return len(self.rows) == count and all(r == i for i, r in enumerate(self.rows))


@dataclass(frozen=True)
class RowOverride:
    """Output row ``out_row`` is copied from ``model``'s row ``row`` (zero when model is None)."""

    token: str
    out_row: int
    model: str | None
    row: int


@dataclass
class VocabPlan:
    source: str  # 'union' or the model reference whose tokenizer the output takes
    files_from: str  # the model whose tokenizer files the output starts from
    vocab: dict[str, int]
    new_tokens: tuple[AddedToken, ...]  # added on top of files_from's tokenizer (union)
    rows: int  # output embedding rows
    row_maps: dict[str, RowMap]
    embedding_rows: dict[str, int]
    overrides: tuple[RowOverride, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)  # per model, for the preflight

    @property
    def needs_alignment(self) -> bool:
        """False when every input's rows already are the output's: nothing to gather."""
        return bool(self.overrides) or not all(
            m.is_identity(self.rows) and self.embedding_rows[ref] == self.rows
            for ref, m in self.row_maps.items()
        )

    def describe(self) -> dict[str, object]:
        """Plain data for dry runs: the source, sizes, the tokens added, and per model
        what happens to its tokens."""
        return {
            "source": self.source,
            "tokens": len(self.vocab),
            "rows": self.rows,
            "aligned_by_token": self.needs_alignment,
            "added_tokens": [t.content for t in self.new_tokens],
            "overrides": [o.token for o in self.overrides],
            "models": dict(self.notes),
        }

    def aligned_tensor(self, model: str, name: str, shape: tuple[int, ...]) -> bool:
        rows = self.embedding_rows.get(model)
        return rows is not None and len(shape) == 2 and shape[0] == rows and is_embedding(name)


def embedding_rows(source: ModelSource) -> int | None:
    for name, info in source.tensors.items():
        if name.endswith(INPUT_EMBEDDING_SUFFIXES) and len(info.shape) == 2:
            return info.shape[0]
    return None


def tokenizer_choice(recipe: Recipe) -> str | None:
    if recipe.tokenizer is not None:
        return recipe.tokenizer.source
    return recipe.tokenizer_source


def plan_vocabulary(recipe: Recipe, sources: Mapping[str, ModelSource], first_model: str) -> VocabPlan | None:
    """The vocabulary plan, or None when the recipe names no tokenizer source and the
    models' embeddings have the same rows (merged by index, as before).
    Raises RecipeError/PlanError naming the model and token for every refusal."""
    choice = tokenizer_choice(recipe) or "base"
    settings = recipe.tokenizer
    if choice == "base":
        choice = first_model
    elif choice != "union" and choice not in sources:
        models = ", ".join(sources)
        raise RecipeError(f"tokenizer_source: {choice!r} is not one of the recipe's models ({models})")
    rows_of = {ref: n for ref, src in sources.items() if (n := embedding_rows(src)) is not None}
    if settings is None and recipe.tokenizer_source is None and len(set(rows_of.values())) <= 1:
        return None  # nothing asked and the rows agree: merged by index, as mergekit does
    tokenizers = {ref: read_tokenizer(src.root) for ref, src in sources.items()}
    files_from = first_model if choice == "union" else choice
    if choice == "union":
        # Slow-only tokenizers (a SentencePiece tokenizer.model) are converted by transformers.
        tokenizers = {ref: tok or read_tokenizer(sources[ref].root, convert=True) for ref, tok in tokenizers.items()}
        missing = [ref for ref, tok in tokenizers.items() if tok is None]
        if missing:
            raise PlanError(
                f"tokenizer_source: union needs every model's tokenizer (tokenizer.json, or files transformers "
                f"converts: {', '.join(SLOW_TOKENIZER_FILES)}); {', '.join(missing)} has none"
            )
        vocab, new_tokens = union_vocabulary(list(sources), tokenizers, first_model)
    else:
        source_tokenizer = tokenizers[choice]
        if source_tokenizer is None:
            if settings is not None and settings.tokens:
                raise PlanError(f"tokenizer.tokens: {choice} has no tokenizer.json to find the tokens in")
            return _by_index(choice, rows_of, settings.pad_to_multiple_of if settings else None)
        vocab, new_tokens = dict(source_tokenizer.vocab), ()
    pad = settings.pad_to_multiple_of if settings is not None else None
    rows = _row_count(len(vocab) and max(vocab.values()) + 1, rows_of.get(files_from, 0), pad)
    row_maps = {ref: _row_map(ref, vocab, rows, tokenizers[ref], count) for ref, count in rows_of.items()}
    overrides = _overrides(recipe, sources, tokenizers, vocab)
    plan = VocabPlan(choice, files_from, vocab, new_tokens, rows, row_maps, rows_of, overrides)
    plan.notes = _notes(plan, tokenizers, first_model)
    return plan


def _by_index(choice: str, rows_of: Mapping[str, int], pad: int | None) -> VocabPlan:
    """The source has no tokenizer.json: its files are copied and rows merged by index,
    which needs every embedding to have the same rows."""
    if len(set(rows_of.values())) > 1:
        listing = ", ".join(f"{ref} {n}" for ref, n in rows_of.items())
        raise PlanError(
            f"tokenizer_source: {choice} has no tokenizer.json to match rows by token, and the embeddings "
            f"differ in rows ({listing})"
        )
    count = rows_of.get(choice, 0)
    rows = _row_count(count, count, pad)
    identity = RowMap(tuple(range(count)) + (-1,) * (rows - count))
    maps = {ref: identity for ref in rows_of}
    notes = {ref: "no tokenizer.json used: rows merged by index" for ref in rows_of}
    return VocabPlan(choice, choice, {}, (), rows, maps, dict(rows_of), (), notes)


def _row_count(vocab_size: int, source_rows: int, pad: int | None) -> int:
    rows = max(vocab_size, source_rows)
    if pad is not None:
        if pad < 1:
            raise RecipeError(f"tokenizer.pad_to_multiple_of: must be a positive integer, got {pad}")
        rows = -(-rows // pad) * pad
    return rows


def union_vocabulary(
    models: Sequence[str], tokenizers: Mapping[str, TokenizerFiles | None], first: str
) -> tuple[dict[str, int], tuple[AddedToken, ...]]:
    """The union's vocabulary (``first``'s, then each other model's new tokens) and the
    tokens added over ``first``'s tokenizer; PlanError when an added special token
    cannot keep its id."""
    base = tokenizers[first]
    assert base is not None
    _check_special_ids(tokenizers)
    vocab = dict(base.vocab)
    new_tokens: list[AddedToken] = []
    for ref in [first, *(r for r in models if r != first)]:
        tok = tokenizers[ref]
        assert tok is not None
        added = tok.added_by_content()
        for content, token_id in sorted(tok.vocab.items(), key=lambda item: item[1]):
            if content in vocab:
                continue
            special = content in added and added[content].special
            next_id = max(vocab.values(), default=-1) + 1
            if special and token_id != next_id:
                holder = next((c for c, i in vocab.items() if i == token_id), None)
                reason = (
                    f"id {token_id} is {holder!r} already"
                    if holder
                    else f"the output has {next_id} tokens before it"
                )
                raise PlanError(
                    f"tokenizer_source: union: {ref} adds special token {content!r} at id {token_id}, "
                    f"which the output cannot keep ({reason})"
                )
            vocab[content] = next_id
            new_tokens.append(AddedToken(content, next_id, special))
    return vocab, tuple(new_tokens)


def _check_special_ids(tokenizers: Mapping[str, TokenizerFiles | None]) -> None:
    """The same added special token at different ids in two models: both ids cannot be kept."""
    seen: dict[str, tuple[str, int]] = {}
    for ref, tok in tokenizers.items():
        for token in tok.added if tok else ():
            if not token.special:
                continue
            first = seen.setdefault(token.content, (ref, token.id))
            if first[1] != token.id:
                raise PlanError(
                    f"conflicting token ids: special token {token.content!r} is id {first[1]} in "
                    f"{first[0]} but id {token.id} in {ref}"
                )


def _row_map(
    ref: str,
    vocab: Mapping[str, int],
    rows: int,
    tok: TokenizerFiles | None,
    count: int,
) -> RowMap:
    """Rows by token string; rows past the vocabulary (padding) by index where the input has them."""
    if tok is None:
        if count != rows:
            raise PlanError(
                f"{ref}: has no tokenizer.json and {count} embedding rows, the output {rows}: its rows "
                "cannot be matched to tokens"
            )
        return RowMap(tuple(range(rows)))
    mapping = [-1] * rows
    for content, out_id in vocab.items():
        row = tok.vocab.get(content)
        if row is not None and row < count:
            mapping[out_id] = row
    token_ids = set(tok.vocab.values())
    for index in range(max(vocab.values(), default=-1) + 1, rows):
        if index < count and index not in token_ids:
            mapping[index] = index
    return RowMap(tuple(mapping))


def _overrides(
    recipe: Recipe,
    sources: Mapping[str, ModelSource],
    tokenizers: Mapping[str, TokenizerFiles | None],
    vocab: Mapping[str, int],
) -> tuple[RowOverride, ...]:
    settings = recipe.tokenizer
    if settings is None or not settings.tokens:
        return ()
    result = []
    for token, override in settings.tokens.items():
        if token not in vocab:
            raise RecipeError(f"tokenizer.tokens: {token!r} is not in the output vocabulary")
        src = override.source
        if isinstance(src, str):
            model, wanted = src, token
        elif src.kind == "zero":
            result.append(RowOverride(token, vocab[token], None, -1))
            continue
        else:
            model, wanted = src.model, src.token or token
        if model not in sources:
            raise RecipeError(f"tokenizer.tokens.{token}: {model!r} is not one of the recipe's models")
        tok = tokenizers[model]
        row = tok.vocab.get(wanted) if tok else None
        if row is None:
            raise PlanError(f"tokenizer.tokens.{token}: {model} has no token {wanted!r}")
        result.append(RowOverride(token, vocab[token], model, row))
    return tuple(result)


def _notes(plan: VocabPlan, tokenizers: Mapping[str, TokenizerFiles | None], first: str) -> dict[str, str]:
    """Per model: its vocabulary size, the tokens it adds over the base, and their fate."""
    base = tokenizers[first]
    notes = {}
    for ref, tok in tokenizers.items():
        if tok is None:
            notes[ref] = "no tokenizer.json: rows matched by index"
            continue
        extra = [c for c in tok.vocab if base is None or c not in base.vocab]
        text = f"{len(tok)} tokens"
        if extra and ref != first:
            shown = ", ".join(repr(c) for c in sorted(extra, key=tok.vocab.__getitem__)[:4])
            more = " …" if len(extra) > 4 else ""
            if plan.source == "union" or plan.source == ref:
                fate = "kept in the output"
            else:
                fate = f"dropped (the output uses {plan.source}'s vocabulary)"
            text += f"; adds {len(extra)} over the base ({shown}{more}): {fate}"
        notes[ref] = text
    return notes


# ---- applying the plan to tensors (the executor calls these) --------------------------------


def gather_rows(
    plan: VocabPlan, models: Sequence[str], tensors: Sequence[torch.Tensor], weights: Sequence[float]
) -> list[torch.Tensor]:
    """Every input's (rows, hidden) tensor aligned to the output vocabulary, in its dtype.

    ``models``/``tensors``: the merge's inputs, then the base if any; ``weights``: one per
    non-base input. A row an input lacks is the weighted mean of the inputs that have it
    (the base's row when no input has it, zero when no model has it), computed in float32
    for those rows only: one gather per input is the whole cost when vocabularies agree."""
    import torch

    aligned, present = [], []
    for model, tensor in zip(models, tensors, strict=True):
        index = torch.tensor(plan.row_maps[model].rows, dtype=torch.long)
        aligned.append(tensor.index_select(0, index.clamp_min(0)))
        present.append(index >= 0)
    masks = torch.stack(present)  # (models, rows) bool
    gaps = (~masks).any(0).nonzero().squeeze(1)  # rows some model lacks
    if gaps.numel() == 0:
        return aligned
    n_inputs = len(weights)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if float(w.sum()) <= 0:
        w = torch.ones(n_inputs)
    has = masks[:n_inputs, gaps].to(torch.float32) * w[:, None]  # (inputs, gaps)
    total = has.sum(0)
    rows = torch.stack([a[gaps].to(torch.float32) for a in aligned[:n_inputs]])  # (inputs, gaps, hidden)
    fill = torch.einsum("ig,igh->gh", has, rows) / total.clamp_min(1e-12)[:, None]
    if len(aligned) > n_inputs:  # the base fills rows no input has
        from_base = masks[-1, gaps] & (total == 0)
        fill[from_base] = aligned[-1][gaps[from_base]].to(torch.float32)
    fill[~masks[:, gaps].any(0)] = 0.0  # no model has these rows
    for out, mask in zip(aligned, present, strict=True):
        lacking = ~mask[gaps]
        out[gaps[lacking]] = fill[lacking].to(out.dtype)
    return aligned


def apply_overrides(plan: VocabPlan, result: torch.Tensor, rows_of_model: Mapping[str, torch.Tensor]) -> None:
    """Write each ``tokens:`` override into ``result`` (rows, hidden), in place."""
    for override in plan.overrides:
        if override.model is None:
            result[override.out_row].zero_()
        else:
            result[override.out_row].copy_(rows_of_model[override.model][override.row])
