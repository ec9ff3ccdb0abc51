"""A corpus of bad inputs and abuse, tried against the CLI as a careless or unlucky user
would: every case must exit non-zero with an ``error:`` line that names the file, tensor
or key, print no traceback, change nothing in its folder (no output, no staging or parent
folder beside it, inputs byte-identical) and never hang.

Most cases run ``main()`` in-process (fast); signals, kill -9 and a closed pipe run the
real command in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from mergestudio.cli.main import main
from safetensors.torch import save_file

from tests.checkpoints import TinyLlama, tiny_tensors, write_checkpoint

SPEC = TinyLlama(layers=2, hidden=8, intermediate=16, vocab=16, heads=2)
EMBED = "model.embed_tokens.weight"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: write_checkpoint(folder / name, SPEC, seed=seed) for name, seed in
            (("base", 0), ("ft1", 1), ("ft2", 2))}


# ---- building bad inputs --------------------------------------------------------------------


@dataclass
class Case:
    argv: list[str]
    codes: tuple[int, ...]  # acceptable exit codes
    patterns: list[str]  # substrings the error output must contain
    out: Path | None = None
    dry_run_too: bool = False  # a plan-time check: --dry-run must refuse it as well
    skip: str = field(default="")


@dataclass
class Context:
    tmp: Path
    zoo: dict[str, Path]

    @property
    def out(self) -> Path:
        return self.tmp / "outputs" / "merged"  # "outputs" must not appear either

    def recipe(self, method: str = "linear", models: list[Path] | None = None,
               weights: list[float] | None = None, **extra: object) -> Path:
        models = models if models is not None else [self.zoo["ft1"], self.zoo["ft2"]]
        weights = weights if weights is not None else [0.5] * len(models)
        recipe = {
            "merge_method": method,
            "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, weights, strict=True)],
            **extra,
        }
        path = self.tmp / "recipe.yml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    def merge(self, recipe: Path, *flags: str) -> list[str]:
        return ["merge", str(recipe), str(self.out), "-q", *flags]

    def model_copy(self, name: str, source: str = "ft1") -> Path:
        folder = self.tmp / name
        shutil.copytree(self.zoo[source], folder)
        return folder

    def merge_with(self, model: Path, *patterns: str) -> Case:
        """A linear merge of ft1 and ``model``, which must be refused naming ``patterns``
        (by the dry run too)."""
        return Case(self.merge(self.recipe(models=[self.zoo["ft1"], model])), (1,), list(patterns), self.out, True)


def _raw_safetensors(path: Path, header: dict[str, object], data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _two_tensor_file(ctx: Context, offsets_a: list[int], offsets_b: list[int], data_len: int,
                     shape_b: list[int] | None = None, dtype_b: str = "F32") -> Path:
    """A model folder whose weights file holds tensors 'a' (2×2 F32) and 'b' as given."""
    folder = ctx.model_copy("broken")
    header = {
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": offsets_a},
        "b": {"dtype": dtype_b, "shape": shape_b or [2, 2], "data_offsets": offsets_b},
    }
    _raw_safetensors(folder / "model.safetensors", header, bytes(data_len))
    return folder


def _corrupt(ctx: Context, patterns: list[str], **kwargs: object) -> Case:
    return ctx.merge_with(_two_tensor_file(ctx, **kwargs), "broken/model.safetensors", *patterns)  # type: ignore[arg-type]


def _with_nonfinite(ctx: Context, value: float) -> Path:
    folder = ctx.model_copy("poisoned")
    tensors = tiny_tensors(SPEC, seed=1)
    tensors[EMBED][3, :2] = value
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _large(ctx: Context, name: str) -> Path:
    """Entries of 4e4: finite in float16 (max 65504), but their sum is not."""
    folder = ctx.model_copy(name)
    save_file({n: torch.full_like(t, 4e4) for n, t in tiny_tensors(SPEC, seed=1).items()},
              str(folder / "model.safetensors"))
    return folder


def _without_config(ctx: Context) -> Path:
    folder = ctx.model_copy("bare", source="base")
    (folder / "config.json").unlink()
    return folder


def _file_parent(ctx: Context) -> Case:
    (ctx.tmp / "afile").write_text("x")
    out = ctx.tmp / "afile" / "merged"
    return Case(["merge", str(ctx.recipe()), str(out)], (1,), ["afile", "is a file"], out, True)


def _readonly_parent(ctx: Context) -> Case:
    locked = ctx.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    out = locked / "merged"
    return Case(["merge", str(ctx.recipe()), str(out)], (1,), ["locked", "not writable"], out, True,
                skip="root ignores permissions" if os.geteuid() == 0 else "")


def _existing_output(ctx: Context) -> Case:
    ctx.out.mkdir(parents=True)
    (ctx.out / "keep.txt").write_text("mine")
    return Case(ctx.merge(ctx.recipe()), (1,), ["merged", "--overwrite"], None, True)


def _index(ctx: Context, text: str) -> Path:
    folder = ctx.model_copy("sharded")
    (folder / "model.safetensors.index.json").write_text(text)
    return folder


def _duplicate_across_shards(ctx: Context) -> Path:
    folder = ctx.model_copy("twice")
    tensors = tiny_tensors(SPEC, seed=1)
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "a.safetensors"))
    save_file({EMBED: tensors[EMBED]}, str(folder / "b.safetensors"))
    return folder


def _reshaped(ctx: Context) -> Path:
    folder = ctx.model_copy("wide")
    tensors = tiny_tensors(SPEC, seed=1)
    tensors["model.norm.weight"] = torch.zeros(9)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _missing_tensor(ctx: Context) -> Path:
    folder = ctx.model_copy("holey")
    tensors = tiny_tensors(SPEC, seed=1)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _other_architecture(ctx: Context) -> Path:
    folder = ctx.model_copy("mistral")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _pickle(ctx: Context) -> Path:
    folder = ctx.tmp / "pickled"
    folder.mkdir()
    torch.save(tiny_tensors(SPEC, seed=1), folder / "pytorch_model.bin")
    return folder


def _bad_recipe(ctx: Context, text: str, *patterns: str) -> Case:
    path = ctx.tmp / "recipe.yml"
    path.write_text(text.replace("FT1", str(ctx.zoo["ft1"])).replace("FT2", str(ctx.zoo["ft2"]))
                    .replace("BASE", str(ctx.zoo["base"])))
    return Case(ctx.merge(path), (1,), list(patterns), ctx.out, True)


def _ties(ctx: Context, **params: object) -> Path:
    return ctx.recipe("ties", base_model=str(ctx.zoo["base"]), parameters=params)


def _eval(ctx: Context, model: Path, *flags: str) -> list[str]:
    task = ctx.tmp / "task.jsonl"
    task.write_text(json.dumps({"prompt": "a", "choices": ["b", "c"], "answer": 0}) + "\n")
    return ["eval", str(model), "--task", str(task), "-q", *flags]


CaseBuilder = Callable[[Context], Case]


CASES: dict[str, CaseBuilder] = {
    # -- safetensors headers (class 1, and the ones that already passed) --
    "overlapping-offsets": lambda c: _corrupt(c, ["'b'", "overlaps"], offsets_a=[0, 16], offsets_b=[8, 24],
                                              data_len=24),
    "gap-between-tensors": lambda c: _corrupt(c, ["'b'", "belong to no tensor"], offsets_a=[0, 16],
                                              offsets_b=[20, 36], data_len=36),
    "bytes-after-last-tensor": lambda c: _corrupt(c, ["bytes after the last tensor", "'b'"],
                                                  offsets_a=[0, 16], offsets_b=[16, 32], data_len=40),
    "offsets-end-before-begin": lambda c: _corrupt(c, ["'b'", "end before they begin"], offsets_a=[0, 16],
                                                   offsets_b=[32, 16], data_len=32),
    "span-not-shape-times-dtype": lambda c: _corrupt(c, ["'b'", "needs 16"], offsets_a=[0, 16],
                                                     offsets_b=[16, 24], data_len=24),
    "tensor-past-end-of-file": lambda c: _corrupt(c, ["truncated", "'b'"], offsets_a=[0, 16],
                                                  offsets_b=[16, 32], data_len=20),
    "unknown-dtype": lambda c: _corrupt(c, ["'b'", "unknown dtype"], offsets_a=[0, 16], offsets_b=[16, 32],
                                        data_len=32, dtype_b="F12"),
    "negative-shape": lambda c: _corrupt(c, ["'b'", "invalid shape"], offsets_a=[0, 16], offsets_b=[16, 32],
                                         data_len=32, shape_b=[-2, -2]),
    "truncated-file": lambda c: _truncated(c),
    "garbage-header": lambda c: _garbage(c, b"\x00" * 8 + b"garbage garbage"),
    "header-longer-than-file": lambda c: _garbage(c, struct.pack("<Q", 10**6) + b"{}"),
    "empty-file": lambda c: _garbage(c, b""),
    "header-not-an-object": lambda c: _garbage(c, struct.pack("<Q", 2) + b"[]"),
    # -- folders, indexes, pickles, missing things --
    "index-not-json": lambda c: c.merge_with(_index(c, "{nope"), "index.json", "not a valid safetensors index"),
    "index-lists-missing-shard": lambda c: c.merge_with(
        _index(c, json.dumps({"weight_map": {EMBED: "gone.safetensors"}})), "gone.safetensors", "missing"),
    "tensor-in-two-shards": lambda c: c.merge_with(_duplicate_across_shards(c), EMBED, "also stored in"),
    "pickle-refused": lambda c: c.merge_with(_pickle(c), "pytorch_model.bin", "--allow-pickle"),
    "model-path-missing": lambda c: c.merge_with(c.tmp / "nowhere", "nowhere"),
    "shape-mismatch": lambda c: c.merge_with(_reshaped(c), "model.norm.weight", "wide", "shape"),
    "tensor-name-missing": lambda c: c.merge_with(_missing_tensor(c), "model.layers.1.mlp.up_proj.weight", "holey"),
    "different-architecture": lambda c: c.merge_with(_other_architecture(c), "MistralForCausalLM"),
    # -- recipe typos and plan-time constraints (class 5) --
    "unknown-method": lambda c: _bad_recipe(c, "merge_method: lineer\nmodels: [{model: FT1}, {model: FT2}]",
                                            "lineer"),
    "unknown-parameter": lambda c: _bad_recipe(
        c, "merge_method: linear\nmodels: [{model: FT1, parameters: {wieght: 1}}, {model: FT2}]", "wieght"),
    "parameter-out-of-range": lambda c: _bad_recipe(
        c, "merge_method: ties\nbase_model: BASE\nmodels: [{model: FT1, parameters: {weight: 1, density: 1.5}}]",
        "density"),
    "recipe-not-yaml": lambda c: _bad_recipe(c, "merge_method: [linear\n", "invalid YAML"),
    "recipe-file-missing": lambda c: Case(c.merge(c.tmp / "nope.yml"), (1,), ["nope.yml"], c.out),
    "tokenizer-source-unknown": lambda c: Case(c.merge(c.recipe(tokenizer_source="ft9")), (1,),
                                               ["tokenizer_source", "ft9"], c.out, True),
    "della-density-epsilon": lambda c: Case(c.merge(c.recipe(
        "della", base_model=str(c.zoo["base"]), parameters={"density": 0.9, "epsilon": 0.2})), (1,),
        ["epsilon", "density ± epsilon", "tensor"], c.out, True),
    "ties-inverse-density": lambda c: Case(c.merge(_ties(c, density=0.5, rescale=True,
                                                         rescale_norm="inverse_density")), (1,),
                                           ["rescale_norm", "inverse_density"], c.out, True),
    "linear-zero-weight-sum": lambda c: Case(c.merge(c.recipe(weights=[1.0, -1.0])), (1,),
                                             ["normalize", "sum of the weights", "tensor model."], c.out, True),
    "multislerp-zero-weight-sum": lambda c: Case(c.merge(c.recipe("multislerp", weights=[1.0, -1.0])), (1,),
                                                 ["normalize_weights", "tensor model."], c.out, True),
    "integer-out-dtype": lambda c: Case(c.merge(c.recipe(out_dtype="int8")), (1,), ["out_dtype", "int8"], c.out,
                                        True),
    "layer-range-past-model": lambda c: _bad_recipe(
        c, "merge_method: passthrough\nslices: [{sources: [{model: FT1, layer_range: [0, 5]}]}]",
        "layer_range", "2 layers"),
    # -- non-finite values (class 2) --
    "nan-in-input": lambda c: Case(c.merge(c.recipe(models=[c.zoo["ft1"], _with_nonfinite(c, float("nan"))])),
                                   (1,), ["poisoned", EMBED, "2 NaN/Inf", "--allow-nonfinite"], c.out),
    "nan-in-input-ties": lambda c: Case(c.merge(c.recipe("ties", models=[c.zoo["ft1"], _with_nonfinite(c, float("nan"))],
                                                         base_model=str(c.zoo["base"]))),
                                        (1,), ["poisoned", EMBED, "2 NaN/Inf"], c.out),
    "nan-in-base": lambda c: Case(c.merge(c.recipe("task_arithmetic",
                                                   base_model=str(_with_nonfinite(c, float("nan"))))),
                                  (1,), ["poisoned", EMBED, "2 NaN/Inf"], c.out),
    "inf-in-input": lambda c: Case(c.merge(c.recipe(models=[c.zoo["ft1"], _with_nonfinite(c, float("inf"))])),
                                   (1,), ["poisoned", EMBED, "2 NaN/Inf"], c.out),
    "method-overflows": lambda c: Case(c.merge(c.recipe(models=[_large(c, "big1"), _large(c, "big2")],
                                                        weights=[1e35, 1e35], parameters={"normalize": False})),
                                       (1,), [f"{EMBED}: linear produced", "from finite inputs",
                                              "nothing was written"], c.out),
    "fp16-compute-overflows": lambda c: Case(c.merge(c.recipe(models=[_large(c, "big1"), _large(c, "big2")],
                                                              weights=[1.0, 1.0], parameters={"normalize": False}),
                                                     "--compute-dtype", "float16"), (1,),
                                             ["from finite inputs", "--compute-dtype float32"], c.out),
    # -- an output that would not be a model (class 3) --
    "base-without-config": lambda c: Case(c.merge(c.recipe(
        "task_arithmetic", base_model=str(_without_config(c)))), (1,), ["bare", "config.json",
                                                                        "--allow-no-config"], c.out, True),
    # -- arguments (class 4) --
    "compute-dtype-float12": lambda c: Case(c.merge(c.recipe(), "--compute-dtype", "float12"), (2,),
                                            ["--compute-dtype", "float12"], c.out, True),
    "compute-dtype-int8": lambda c: Case(c.merge(c.recipe(), "--compute-dtype", "int8"), (2,),
                                         ["--compute-dtype", "int8"], c.out, True),
    "threads-zero": lambda c: Case(c.merge(c.recipe(), "--threads", "0"), (2,), ["--threads"], c.out, True),
    "device-unknown": lambda c: Case(c.merge(c.recipe(), "--device", "tpu"), (2,), ["--device", "tpu"], c.out, True),
    "shard-size-zero": lambda c: Case(c.merge(c.recipe(), "--shard-size", "0"), (2,), ["--shard-size"], c.out, True),
    "output-parent-is-file": _file_parent,
    "output-parent-unwritable": _readonly_parent,
    "output-exists": _existing_output,
    "output-is-file": lambda c: _output_is_file(c),
    "eval-corrupt-header": lambda c: Case(_eval(c, _truncated_model(c)), (1,), ["model.safetensors", "truncated"]),
    "eval-limit-zero": lambda c: Case(_eval(c, c.zoo["ft1"], "--limit", "0"), (2,), ["--limit"]),
    "eval-json-parent-is-file": lambda c: _eval_json_in_file(c),
    "analyze-threads-zero": lambda c: Case(["analyze", "--base", str(c.zoo["base"]), str(c.zoo["ft1"]),
                                            "--threads", "0"], (2,), ["--threads"]),
    "analyze-density-above-one": lambda c: Case(["analyze", "--base", str(c.zoo["base"]), str(c.zoo["ft1"]),
                                                 "--density", "2"], (2,), ["--density"]),
    "runs-show-negative-last": lambda c: Case(["runs", "show", str(c.tmp), "--last", "-1"], (2,), ["--last"]),
    "evolve-zero-evaluations": lambda c: Case(["evolve", str(c.tmp / "s.yml"), str(c.tmp / "run"),
                                               "--evaluations", "0"], (2,), ["--evaluations"]),
    "export-negative-trial": lambda c: Case(["export", str(c.tmp), str(c.tmp / "x"), "--trial", "-1"], (2,),
                                            ["--trial"]),
    "demo-info-no-zoo": lambda c: Case(["demo", "info", "--dir", str(c.tmp / "nozoo")], (1,), ["nozoo"]),
    "methods-unknown": lambda c: Case(["methods", "tiess"], (1,), ["tiess"]),
    "clean-not-a-folder": lambda c: Case(["clean", str(c.tmp / "nowhere")], (2,), ["nowhere", "not a folder"]),
}


def _truncated_model(ctx: Context) -> Path:
    folder = ctx.model_copy("cut")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return folder


def _truncated(ctx: Context) -> Case:
    return ctx.merge_with(_truncated_model(ctx), "cut/model.safetensors", "truncated: tensor")


def _garbage(ctx: Context, content: bytes) -> Case:
    folder = ctx.model_copy("junk")
    (folder / "model.safetensors").write_bytes(content)
    return ctx.merge_with(folder, "junk/model.safetensors", "not a safetensors file")


def _output_is_file(ctx: Context) -> Case:
    out = ctx.tmp / "merged.bin"
    out.write_text("not a folder")
    return Case(["merge", str(ctx.recipe()), str(out)], (1,), ["merged.bin", "not a folder"], out, True)


def _eval_json_in_file(ctx: Context) -> Case:
    (ctx.tmp / "afile").write_text("x")
    return Case(_eval(ctx, ctx.zoo["ft1"], "--json", str(ctx.tmp / "afile" / "r.json")), (2,), ["--json", "afile"])


# ---- running one case ---------------------------------------------------------------------------


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` with its content hash ('' for folders)."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return found


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses with exit 2
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(
    name: str, zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = Context(tmp_path, zoo)
    case = CASES[name](ctx)
    if case.skip:
        pytest.skip(case.skip)
    runs = [case.argv] + ([[*case.argv, "--dry-run"]] if case.dry_run_too else [])
    for argv in runs:
        before = _snapshot(tmp_path, *zoo.values())
        code, output = _run(argv, capsys)
        assert code in case.codes, f"exit {code}, wanted {case.codes}:\n{output}"
        assert "error:" in output, output
        assert "Traceback" not in output, output
        for pattern in case.patterns:
            assert pattern in output, f"{pattern!r} not in:\n{output}"
        assert _snapshot(tmp_path, *zoo.values()) == before, "something was written, moved or changed"
    if (tmp_path / "locked").exists():
        (tmp_path / "locked").chmod(0o700)  # let pytest remove it


# ---- what the flags allow -----------------------------------------------------------------------


def test_allow_nonfinite_merges_with_a_warning(zoo: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Context(tmp_path, zoo)
    recipe = ctx.recipe(models=[zoo["ft1"], _with_nonfinite(ctx, float("nan"))])
    code, output = _run(ctx.merge(recipe, "--allow-nonfinite"), capsys)
    assert code == 0, output
    assert f"warning: {tmp_path / 'poisoned'}: tensor {EMBED!r} holds 2 NaN/Inf" in output
    from safetensors.torch import load_file

    merged = load_file(ctx.out / "model.safetensors")
    assert int(torch.isnan(merged[EMBED]).sum()) == 2
    assert all(bool(torch.isfinite(t).all()) for n, t in merged.items() if n != EMBED)


def test_allow_no_config_writes_weights_without_config(zoo: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Context(tmp_path, zoo)
    recipe = ctx.recipe("task_arithmetic", base_model=str(_without_config(ctx)))
    code, output = _run(ctx.merge(recipe, "--allow-no-config"), capsys)
    assert code == 0, output
    assert (ctx.out / "model.safetensors").exists() and not (ctx.out / "config.json").exists()


def test_models_preflight_reports_a_base_without_config(zoo: dict[str, Path], tmp_path: Path) -> None:
    from mergestudio.io.sources import open_model
    from mergestudio.preflight import preflight

    base = open_model(_without_config(Context(tmp_path, zoo)))
    report = preflight(base, [open_model(zoo["ft1"])])
    assert not report.ok
    assert [c.topic for c in report.errors] == ["config"]


def test_engine_refuses_bad_settings_before_any_folder(zoo: dict[str, Path], tmp_path: Path) -> None:
    """The Python API (and the window) get the same checks as the CLI's argparse types."""
    from mergestudio.engine import merge
    from mergestudio.errors import MergeError

    ctx = Context(tmp_path, zoo)
    for options, message in (({"compute_dtype": "float12"}, "float12"), ({"threads": 0}, "threads"),
                              ({"device": "tpu"}, "tpu"), ({"shard_size": 0}, "shard size")):
        with pytest.raises(MergeError, match=message):
            merge(ctx.recipe(), ctx.out, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "outputs").exists()


# ---- signals, kill -9 and closed pipes (subprocesses) -------------------------------------------

# The real command, with each tensor slowed down so a signal lands mid-merge.
_SLOW_MERGE = """
import sys, time
import mergestudio.engine.execute as execute
real = execute._TensorMerger.merge
def slow(self, planned):
    time.sleep(0.05)
    return real(self, planned)
execute._TensorMerger.merge = slow
from mergestudio.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'core'}{os.pathsep}{ROOT}"}


def _start_slow_merge(ctx: Context) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_MERGE, *ctx.merge(ctx.recipe())], env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for_staging(parent: Path, process: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in parent.glob(".merged.partial-*")] if parent.exists() else []
        if staging and any(staging[0].iterdir()):
            return staging[0]
        time.sleep(0.02)
    raise AssertionError(f"no staging folder appeared: {process.communicate()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_stop_signals_remove_the_staging_folder(signum: int, zoo: dict[str, Path], tmp_path: Path) -> None:
    ctx = Context(tmp_path, zoo)
    before = _snapshot(*zoo.values())
    process = _start_slow_merge(ctx)
    staging = _wait_for_staging(ctx.out.parent, process)
    assert f".partial-{process.pid}@" in staging.name  # the owner is in the name
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "nothing was written" in stderr and "Traceback" not in stderr
    assert not ctx.out.parent.exists()  # neither staging nor the parent it made
    assert _snapshot(*zoo.values()) == before


def test_kill_9_leftover_is_removed_by_the_next_merge_and_by_clean(
    zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = Context(tmp_path, zoo)
    process = _start_slow_merge(ctx)
    staging = _wait_for_staging(ctx.out.parent, process)
    process.kill()
    process.communicate(timeout=60)
    assert staging.exists()  # SIGKILL cannot be caught: this is what a crash leaves
    kept = shutil.copytree(staging, ctx.out.parent / staging.name.replace("partial", "old"))
    code, output = _run(["clean", str(ctx.out.parent), "--list"], capsys)
    assert code == 0 and f"would remove: {staging.name}" in output and "no longer running" in output
    assert staging.exists()
    code, output = _run(ctx.merge(ctx.recipe()), capsys)
    assert code == 0, output
    assert f"removed {staging.name}" in output and not staging.exists()
    assert (ctx.out / "model.safetensors").exists()
    assert kept.exists() is False  # the retired copy had the same dead owner
    foreign = ctx.out.parent / ".merged.partial-1@elsewhere~abc123"
    foreign.mkdir()
    code, output = _run(["clean", str(ctx.out.parent)], capsys)
    assert code == 0 and "keeping: .merged.partial-1@elsewhere" in output and foreign.exists()
    code, output = _run(["clean", str(ctx.out.parent), "--force"], capsys)
    assert code == 0 and not foreign.exists()


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    """``mergestudio methods | head -1``: the reader leaves before the output is written."""
    process = subprocess.Popen([sys.executable, "-m", "mergestudio.cli.main", "methods"], env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert process.returncode == 141


def test_unexpected_errors_are_one_line_with_a_debug_hint(
    zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergestudio.cli import methods_cmd

    def broken(_args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(methods_cmd, "run", broken)
    code, output = _run(["methods"], capsys)
    assert code == 1 and "error: ZeroDivisionError: a bug" in output and "--debug" in output
    assert "Traceback" not in output
    with pytest.raises(ZeroDivisionError):
        main(["methods", "--debug"])


@pytest.mark.parametrize("chunk_bytes", [64, 8 << 20], ids=["row-chunks", "whole-tensors"])
def test_nonfinite_scan_in_row_chunks(zoo: dict[str, Path], tmp_path: Path, chunk_bytes: int) -> None:
    """The NaNs sit in row 3: with tiny chunks they are found in a later chunk, counted over
    the whole tensor, and (when allowed) warned about once."""
    from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
    from mergestudio.errors import MergeError
    from mergestudio.events import LogLine

    ctx = Context(tmp_path, zoo)
    poisoned = _with_nonfinite(ctx, float("nan"))
    plan = build_plan(load_recipe(ctx.recipe(models=[zoo["ft1"], poisoned])))
    try:
        with pytest.raises(MergeError, match=rf"poisoned: tensor '{EMBED}' holds 2 NaN/Inf value\(s\) out of 128"):
            execute_plan(plan, DictTarget(), device="cpu", chunk_bytes=chunk_bytes)
        lines: list[LogLine] = []
        target = DictTarget()
        execute_plan(plan, target, device="cpu", chunk_bytes=chunk_bytes, allow_nonfinite=True,
                     events=lambda e: lines.append(e) if isinstance(e, LogLine) else None)
    finally:
        plan.close()
    assert [line.message for line in lines if line.level == "warning"] == [
        f"{poisoned}: tensor '{EMBED}' holds 2 NaN/Inf value(s) out of 128; merged anyway (--allow-nonfinite)"
    ]
    assert int(torch.isnan(target.tensors[EMBED]).sum()) == 2
