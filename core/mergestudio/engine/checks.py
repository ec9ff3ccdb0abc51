"""Checks that depend only on the recipe, the headers and the arguments. They run before
any tensor is read and before any folder is made, so a dry run (CLI, Merge page) reports
exactly what a real merge would refuse.

Three groups: ``check_plan`` (recipe against the models, run by ``build_plan`` for every
target), ``check_folder_output`` (what a Hugging Face folder needs: a config source) and
``check_run_options``/``check_output_path`` (device, dtypes, threads, the output path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mergestudio.errors import MergeError, PlanError, RecipeError
from mergestudio.io.dtypes import FLOAT_CODES, dtype_code, torch_dtype_name

if TYPE_CHECKING:
    from mergestudio.engine.plan import MergePlan
    from mergestudio.methods.registry import ParamValues

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
COMPUTE_CODES = ("F32", "BF16", "F16", "F64")  # float8 stores, but torch cannot compute in it


# ---- the recipe against the models ----------------------------------------------------------


def check_plan(plan: MergePlan) -> None:
    """Raise RecipeError for a constraint the recipe breaks on some tensor (naming the
    tensor and the key). Tokenizer sources and chat templates are checked while planning
    (mergestudio.vocab)."""
    _check_output_dtype(plan)
    _check_method_constraints(plan)


def _check_output_dtype(plan: MergePlan) -> None:
    """Merged values are real numbers: an integer output dtype would truncate them."""
    key, name = ("out_dtype", plan.recipe.out_dtype) if plan.recipe.out_dtype else ("dtype", plan.recipe.dtype)
    if name is not None and dtype_code(name) not in FLOAT_CODES:
        raise RecipeError(f"{key}: {name!r} is not a floating-point type (try bfloat16 or float32)")


def _check_method_constraints(plan: MergePlan) -> None:
    """The method's cross-parameter check on every tensor's resolved values (once per
    distinct set of values: gradients make a few dozen, not one per tensor)."""
    check = plan.method.check
    if check is None:
        return
    seen: set[tuple[tuple[str, object], ...]] = set()
    for planned in plan.tensors:
        if planned.copy_from is not None:
            continue
        values: ParamValues = {**planned.global_params, **planned.model_params}
        key = tuple(sorted(values.items()))
        if key in seen:
            continue
        seen.add(key)
        problem = check(values)
        if problem is not None:
            raise RecipeError(f"{plan.method.name}: {problem} (tensor {planned.name})")


# ---- what a model folder needs ----------------------------------------------------------------


def check_folder_output(plan: MergePlan, *, allow_no_config: bool = False) -> None:
    """A merged folder is loadable only with a config.json, copied from the base (or the
    first model without a base). Without one, refuse unless the user accepts it."""
    source = plan.sources[plan.config_model]
    if source.config is None and not allow_no_config:
        raise PlanError(
            f"{plan.config_model}: has no config.json, so the merged folder would have none and "
            "no loader could open it; add a config.json there, or pass --allow-no-config "
            "(Python: allow_no_config=True) to write the weights anyway"
        )


# ---- the arguments -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """Validated execution settings."""

    device: str
    compute_dtype: str  # a safetensors float code, e.g. "F32"
    threads: int | None
    shard_size: int


def check_run_options(
    device: str, compute_dtype: str, threads: int | None, shard_size: int
) -> RunOptions:
    """Raise MergeError naming the argument if a setting cannot work on this machine."""
    return RunOptions(
        check_device(device), check_compute_dtype(compute_dtype), check_threads(threads), _shard(shard_size)
    )


def check_device(name: str) -> str:
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', available here."""
    from mergestudio.engine.device import resolve_device

    base, _, index = name.partition(":")
    if base not in DEVICE_NAMES or (index and not (base == "cuda" and index.isdigit())):
        raise MergeError(f"device: unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")
    resolve_device(name)  # raises when the device is not available
    if index:
        import torch

        if int(index) >= torch.cuda.device_count():
            raise MergeError(f"device: {name} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return name


def check_compute_dtype(name: str) -> str:
    try:
        code = dtype_code(name)
    except ValueError as error:
        raise MergeError(f"compute dtype: {error}") from None
    if code not in COMPUTE_CODES:
        valid = ", ".join(torch_dtype_name(c) for c in COMPUTE_CODES)
        raise MergeError(f"compute dtype: cannot compute in {name!r}; valid: {valid}")
    return code


def check_threads(threads: int | None) -> int | None:
    if threads is not None and threads < 1:
        raise MergeError(f"threads: must be at least 1, got {threads}")
    return threads


def _shard(size: int) -> int:
    if size < 1:
        raise MergeError(f"shard size: must be positive, got {size}")
    return size


def check_output_path(target: Path, overwrite: bool) -> None:
    """The output folder can be made and is free: it is not a file, is empty unless
    ``overwrite``, and its nearest existing parent is a writable folder. Nothing is
    created here."""
    if target.exists() and not target.is_dir():
        raise MergeError(f"{target}: exists and is not a folder")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise MergeError(f"{target}: already exists and is not empty; pass --overwrite to replace it")
    parent = _nearest_existing(target.absolute().parent)
    if not parent.is_dir():
        raise MergeError(f"{target}: cannot create it, because {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MergeError(f"{target}: cannot create it, because {parent} is not writable")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
