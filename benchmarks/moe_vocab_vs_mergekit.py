"""Side by side with mergekit (given by path; never a dependency of ours) on the synthetic
Llama family of ``merge_speed.py``: vocabulary alignment (a linear merge of the base and a
fine-tune whose tokenizer lists the same 32000 tokens in another order, so every row is
gathered by token string, ``tokenizer_source: union``) and mixture-of-experts assembly
(the base and three fine-tunes as four experts, random gates). Wall time and peak
anonymous memory of each tool; for union, our output's embedding and head rows are
compared by token string with mergekit's, and every other tensor by name.

    python benchmarks/moe_vocab_vs_mergekit.py --shape 1.1b --mergekit-bin /path/to/venv/bin

Outputs are removed after each run; the family stays in the work folder for reuse
(``--clean`` removes it too).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llama_family import SHAPES, write_family
from benchmarks.merge_speed import WORK, Timing, _print, run_timed

TOKENIZER_SEED = 7


def write_tokenizer(folder: Path, vocab_size: int, shuffled: bool) -> None:
    """A tokenizer of ``vocab_size`` tokens (4 specials, then ``t<i>``), in id order or
    with the non-special tokens shuffled (the same strings at other ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    words = [f"t{i}" for i in range(vocab_size - len(specials))]
    if shuffled:
        random.Random(TOKENIZER_SEED).shuffle(words)
    vocab = {token: index for index, token in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(folder))


def with_tokenizer(model: Path, folder: Path, vocab_size: int, shuffled: bool) -> Path:
    """``folder``: links to ``model``'s weights and config, plus its own tokenizer."""
    if not (folder / "tokenizer.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for item in model.iterdir():
            link = folder / item.name
            if not link.exists():
                link.symlink_to(item.resolve())
        write_tokenizer(folder, vocab_size, shuffled)
    return folder


def compare_union(ours: Path, theirs: Path) -> dict[str, float]:
    """Largest absolute difference per tensor, embedding-like rows matched by string."""
    import torch
    from safetensors import safe_open
    from tokenizers import Tokenizer

    def tensors(folder: Path) -> dict[str, tuple[Path, str]]:
        return {name: (path, name) for path in sorted(folder.glob("*.safetensors"))
                for name in safe_open(str(path), "pt").keys()}  # noqa: SIM118 (safe_open has no __iter__)

    def read(where: tuple[Path, str]) -> torch.Tensor:
        with safe_open(str(where[0]), "pt") as handle:
            return handle.get_tensor(where[1]).float()

    ours_at, theirs_at = tensors(ours), tensors(theirs)
    vocab_ours = Tokenizer.from_file(str(ours / "tokenizer.json")).get_vocab(with_added_tokens=True)
    vocab_theirs = Tokenizer.from_file(str(theirs / "tokenizer.json")).get_vocab(with_added_tokens=True)
    shared = sorted(set(vocab_ours) & set(vocab_theirs))
    rows_ours = torch.tensor([vocab_ours[t] for t in shared])
    rows_theirs = torch.tensor([vocab_theirs[t] for t in shared])
    differences = {"tokens only in ours": float(len(set(vocab_ours) - set(vocab_theirs))),
                   "tokens only in mergekit's": float(len(set(vocab_theirs) - set(vocab_ours)))}
    for name in sorted(ours_at):
        if name not in theirs_at:
            differences[f"{name} (missing in mergekit's)"] = float("nan")
            continue
        a, b = read(ours_at[name]), read(theirs_at[name])
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            a, b = a[rows_ours], b[rows_theirs]
        differences[name] = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--mergekit-bin", type=Path, help="folder with mergekit-yaml and mergekit-moe")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json", type=Path, help="also write the timings and differences here")
    parser.add_argument("--clean", action="store_true", help="remove the family and links at the end")
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    root = args.work / args.shape
    family = write_family(root, shape)
    ours_cli = [sys.executable, "-m", "mergestudio.cli.main"]
    results: list[Timing] = []
    report: dict[str, object] = {"shape": shape.name, "parameters": shape.parameters}

    # ---- vocabulary alignment: union over two tokenizers with the same strings, shuffled ids
    base_tok = with_tokenizer(family[0], root / "vocab-base", shape.vocab, shuffled=False)
    tune_tok = with_tokenizer(family[1], root / "vocab-ft1", shape.vocab, shuffled=True)
    for source in ("union", None):
        recipe = {"merge_method": "linear", "dtype": "bfloat16",
                  "models": [{"model": str(base_tok), "parameters": {"weight": 0.5}},
                             {"model": str(tune_tok), "parameters": {"weight": 0.5}}]}
        if source:
            recipe["tokenizer_source"] = source
        label = f"linear+{source or 'by-index'}"
        recipe_path = args.work / f"recipe-{label}.yml"
        recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        ours_out, theirs_out = args.work / "out-ours", args.work / "out-mergekit"
        for out in (ours_out, theirs_out):
            shutil.rmtree(out, ignore_errors=True)
        results.append(run_timed([*ours_cli, "merge", str(recipe_path), str(ours_out), "--device", "cpu", "-q"],
                                 "mergestudio", label, None))
        _print(results[-1])
        if args.mergekit_bin:
            results.append(run_timed([str(args.mergekit_bin / "mergekit-yaml"), str(recipe_path), str(theirs_out),
                                      "--lazy-unpickle", "--out-shard-size", "5B"], "mergekit", label, None))
            _print(results[-1])
            if source and all(r.returncode == 0 for r in results[-2:]):
                differences = compare_union(ours_out, theirs_out)
                report["union_max_abs_difference"] = differences
                worst = max(differences.items(), key=lambda item: item[1])
                print(f"    union, ours vs mergekit's: largest |difference| {worst[1]:.3g} ({worst[0]})")
        for out in (ours_out, theirs_out):
            shutil.rmtree(out, ignore_errors=True)

    # ---- MoE assembly: base + three fine-tunes as four experts, random gates
    moe_base = with_tokenizer(family[0], root / "moe-base", shape.vocab, shuffled=False)
    config = {"base_model": str(moe_base), "gate_mode": "random", "dtype": "bfloat16", "experts_per_token": 2,
              "experts": [{"source_model": str(folder)} for folder in family]}
    config_path = args.work / "moe.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = args.work / "out-moe"
    shutil.rmtree(out, ignore_errors=True)
    results.append(run_timed([*ours_cli, "moe", str(config_path), str(out), "-q"], "mergestudio", "moe-4x", None))
    _print(results[-1])
    shutil.rmtree(out, ignore_errors=True)
    if args.mergekit_bin:
        results.append(run_timed([str(args.mergekit_bin / "mergekit-moe"), str(config_path), str(out),
                                  "--lazy-unpickle", "--out-shard-size", "5B",
                                  "--i-understand-this-is-not-useful-without-training"],
                                 "mergekit", "moe-4x", None))
        _print(results[-1])
        shutil.rmtree(out, ignore_errors=True)

    report["timings"] = [vars(r) for r in results]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.clean:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
