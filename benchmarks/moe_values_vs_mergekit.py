"""Our MoE output against mergekit-moe's (given by path; never a dependency of ours) for the
same config, on the demo zoo (a base and four skill fine-tunes): router rows per layer and
expert, expert matrices (mergekit 0.1.5 writes transformers 5's fused
``experts.gate_up_proj`` / ``experts.down_proj``; we write one tensor per expert matrix),
and every other tensor.

    python benchmarks/moe_values_vs_mergekit.py --mergekit-bin /path/to/venv/bin --gate-mode cheap_embed
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo" / "models"
PROMPTS = {
    "last": (["end abc=", "end hello="], ["top 4132="]),
    "max": (["top 4132=", "top 907="], []),
    "cipher": (["key abc="], []),
    "symbol": (["sym 12=", "sym 7="], []),
}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit-bin", type=Path, required=True)
    parser.add_argument("--gate-mode", default="cheap_embed")
    args = parser.parse_args()
    config = {
        "base_model": str(DEMO / "base"), "gate_mode": args.gate_mode, "dtype": "float32", "experts_per_token": 2,
        "experts": [{"source_model": str(DEMO / name), "positive_prompts": positive,
                     **({"negative_prompts": negative} if negative else {})}
                    for name, (positive, negative) in PROMPTS.items()],
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "moe.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([str(args.mergekit_bin / "mergekit-moe"), str(work / "moe.yml"), str(work / "mk"), "--quiet"],
                       check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "mergestudio.cli.main", "moe", str(work / "moe.yml"),
                        str(work / "ours"), "-q"], check=True)
        theirs, ours = _tensors(work / "mk"), _tensors(work / "ours")
    layers = sum(1 for name in ours if name.endswith("block_sparse_moe.gate.weight"))
    for layer in range(layers):
        mine = ours[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        other = theirs[f"model.layers.{layer}.mlp.gate.weight"]
        cosine = torch.nn.functional.cosine_similarity(mine, other.float(), dim=1)
        print(f"layer {layer}: router max |difference| {(mine - other).abs().max():.3g}, "
              f"cosine per expert {[round(c, 4) for c in cosine.tolist()]}")
    same_experts = all(
        torch.equal(theirs[f"model.layers.{layer}.mlp.experts.gate_up_proj"][expert],
                    torch.cat([ours[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight"],
                               ours[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight"]]))
        and torch.equal(theirs[f"model.layers.{layer}.mlp.experts.down_proj"][expert],
                        ours[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight"])
        for layer in range(layers) for expert in range(len(PROMPTS))
    )
    rest = [name for name in ours if "block_sparse_moe" not in name]
    print(f"expert matrices identical: {same_experts}; other {len(rest)} tensors identical: "
          f"{all(torch.equal(ours[n], theirs[n]) for n in rest)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
