"""Merging LoRA adapters into a LoRA adapter.

When every input of a recipe is an adapter of one base, the result can be written as a
PEFT folder instead of a full model. Per adapted tensor, one of three routes:

- ``concatenation`` (linear, task_arithmetic): the merge is Σ cᵢ·Bᵢ·Aᵢ, so
  B = [c₁B₁ … c_nB_n], A = [A₁; …; A_n]: exact, rank Σ rᵢ;
- ``knots``: the adapters' factors give the SVD of the joined updates without forming
  them (QR of the factors, SVD of a small core); coordinates merged there: exact, rank ≤ Σ rᵢ;
- ``svd`` (every other method): the method runs on the full tensors (base + each
  adapter's update), the base is subtracted, and the merged update is re-factorised by
  a truncated SVD at the requested rank; its relative error is reported.

A ``rank`` below an exact route's rank truncates it the same way (reported too). Tensors
that an adapter replaces whole (``modules_to_save``) are merged whole and saved whole.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from mergestudio.engine.device import resolve_device, torch_threads

# The executor's per-tensor merge (reads, conversion, the method call, the NaN/Inf policy),
# reused so that a re-factorised module is exactly what a full-model merge would compute.
from mergestudio.engine.execute import TensorMerge
from mergestudio.engine.plan import MergePlan, PlannedTensor, build_plan
from mergestudio.errors import RecipeError
from mergestudio.events import CancelToken, EventSink, ProgressReporter, check_cancel, log
from mergestudio.io.adapters import AdapterSource, LoraAdapter, LoraModule
from mergestudio.io.model_folder import staged_folder
from mergestudio.lora.factorize import LowRank, product_svd, truncate_product, truncated_svd
from mergestudio.lora.peft_folder import LoraFactors, lora_from_weight_layout, write_peft_folder
from mergestudio.recipe.model import Recipe

Route = Literal["concatenation", "knots", "svd", "saved"]


@dataclass(frozen=True)
class AdapterModuleReport:
    tensor: str
    route: Route
    rank: int
    relative_error: float  # ‖merged update − written factors‖_F / ‖merged update‖_F


@dataclass
class AdapterMergeResult:
    output: Path
    modules: list[AdapterModuleReport]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def max_relative_error(self) -> float:
        return max((m.relative_error for m in self.modules), default=0.0)

    def report(self) -> dict[str, object]:
        return {
            "modules": [asdict(m) for m in self.modules],
            "max_relative_error": self.max_relative_error,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


def merge_to_adapter(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    rank: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    overwrite: bool = False,
    threads: int | None = None,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> AdapterMergeResult:
    """Merge a recipe whose inputs are all LoRA adapters of one base into a PEFT folder
    at ``out_dir`` (with ``lora_report.json``). ``rank``: the rank of re-factorised
    modules (default: the recipe's ``output.rank``, else the sum of the inputs' ranks),
    and a cap on exact ones."""
    if rank is not None and rank < 1:
        raise RecipeError(f"adapter output: rank must be at least 1, got {rank}")
    if rank is None and recipe.output is not None:
        rank = recipe.output.rank
    started = time.perf_counter()
    plan = build_plan(recipe)
    try:
        adapters, base_reference = adapters_of_one_base(plan)
        torch_device = resolve_device(device)
        merger = _AdapterMerger(plan, adapters, rank, torch_device, events)
        with staged_folder(Path(out_dir), overwrite) as staging:
            with torch.inference_mode(), torch_threads(threads or 1):
                merger.run(events, cancel)
            result = AdapterMergeResult(Path(out_dir), merger.reports, time.perf_counter() - started)
            write_peft_folder(
                staging,
                base_model=base_reference,
                factors=merger.factors,
                saved=merger.saved,
                dtype=getattr(torch, dtype),
                fan_in_fan_out=any(a.config.get("fan_in_fan_out") for a in adapters.values()),
                report=result.report(),
            )
        log(
            events,
            f"wrote adapter {out_dir} (largest re-factorisation error {result.max_relative_error:.2e})",
        )
        return result
    finally:
        plan.close()


def adapters_of_one_base(plan: MergePlan) -> tuple[dict[str, LoraAdapter], str]:
    """The recipe's adapters by model reference, after checking they share one base and
    the recipe moves no layers (an adapter output keeps the base's tensor names): the
    adapter output's check, made by its dry run (headers only)."""
    adapters: dict[str, LoraAdapter] = {}
    bases: dict[tuple[str, ...], str] = {}
    for planned in plan.tensors:
        for tensor_input in planned.inputs:
            source = plan.sources[tensor_input.model]
            if not isinstance(source, AdapterSource) or source.adapter is None or source.base is None:
                raise RecipeError(
                    f"output.format adapter: every input must be a LoRA adapter; {tensor_input.model} is "
                    "a full model (write the result as a model, or give BASE+ADAPTER inputs)"
                )
            if tensor_input.tensor != planned.name:
                raise RecipeError(
                    "an adapter output keeps the base's layers; slices that move layers "
                    f"({tensor_input.tensor} → {planned.name}) need a full-model output"
                )
            adapters[tensor_input.model] = source.adapter
            files = tuple(str(p.resolve()) for p in source.base.files)
            bases.setdefault(files, source.base.reference)
    if plan.base_model:
        base_source = plan.sources[plan.base_model]
        if isinstance(base_source, AdapterSource):
            raise RecipeError(f"base_model: {plan.base_model} is an adapter; name the full base model")
        bases.setdefault(tuple(str(p.resolve()) for p in base_source.files), plan.base_model)
    if len(bases) != 1:
        raise RecipeError(
            "output.format adapter: every adapter (and base_model) must be on the same base; found "
            + ", ".join(sorted(bases.values()))
        )
    return adapters, next(iter(bases.values()))


class _AdapterMerger:
    def __init__(
        self,
        plan: MergePlan,
        adapters: dict[str, LoraAdapter],
        rank: int | None,
        device: torch.device,
        events: EventSink | None,
    ) -> None:
        self.plan = plan
        self.adapters = adapters
        self.rank = rank
        self.device = device
        self.full = TensorMerge(plan, device, events=events)
        self.factors: list[LoraFactors] = []
        self.saved: dict[str, torch.Tensor] = {}
        self.reports: list[AdapterModuleReport] = []

    def run(self, events: EventSink | None, cancel: CancelToken | None) -> None:
        touched = [p for p in self.plan.tensors if self._touched(p)]
        whole = {_module_of(p.name) for p in touched if self._replaced(p)}
        reporter = ProgressReporter(events, "merge", len(touched))
        reporter.start()
        for planned in self.plan.tensors:
            if planned not in touched and _module_of(planned.name) not in whole:
                continue
            check_cancel(cancel)
            if _module_of(planned.name) in whole:
                self._save_whole(planned)
            else:
                self._merge_lora(planned)
            reporter.advance(1, 0, planned.name)

    # ---- which tensors ------------------------------------------------------------------

    def _touched(self, planned: PlannedTensor) -> bool:
        return planned.copy_from is None and any(
            planned.name in self.adapters[i.model].modules
            or planned.name in self.adapters[i.model].trained_replacements
            for i in planned.inputs
        )

    def _replaced(self, planned: PlannedTensor) -> bool:
        return any(planned.name in self.adapters[i.model].trained_replacements for i in planned.inputs)

    def _lora_modules(self, planned: PlannedTensor) -> list[LoraModule | None]:
        """Each input's LoRA module for this tensor (None where that adapter leaves it)."""
        found = [self.adapters[i.model].modules.get(planned.name) for i in planned.inputs]
        return found if any(found) else []

    # ---- routes -------------------------------------------------------------------------

    def _save_whole(self, planned: PlannedTensor) -> None:
        self.saved[planned.name] = self._full_merge(planned)
        self.reports.append(AdapterModuleReport(planned.name, "saved", 0, 0.0))

    def _merge_lora(self, planned: PlannedTensor) -> None:
        modules = self._lora_modules(planned)
        reference = next(m for m in modules if m is not None)
        name = self.plan.method.name
        coefficients = _concatenation_coefficients(name, planned)
        route: Route
        if coefficients is not None:
            route, low_rank = "concatenation", self._concatenate(planned, coefficients)
        elif name == "knots":
            route, low_rank = "knots", self._knots(planned)
        else:
            route = "svd"
            base = self._base_weight(planned)
            delta = self._full_merge(planned).sub_(base)
            default = sum(m.rank for m in modules if m is not None)
            low_rank = truncated_svd(delta, self.rank or default)
        self.factors.append(
            lora_from_weight_layout(
                reference.module,
                reference.kind,
                low_rank.left.cpu(),
                low_rank.right.cpu(),
                reference.transposed,
            )
        )
        self.reports.append(AdapterModuleReport(planned.name, route, low_rank.rank, low_rank.relative_error))

    def _weight_factors(self, planned: PlannedTensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per input, its update as (left, right) with left @ right laid out like the
        weight; None for an input that leaves the tensor alone."""
        factors: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for tensor_input in planned.inputs:
            adapter = self.adapters[tensor_input.model]
            module = adapter.modules.get(planned.name)
            if module is None:
                factors.append(None)
                continue
            b, a = (t.to(self.device) for t in adapter.factors(planned.name))
            factors.append((a.T, b.T) if module.transposed else (b, a))
        return factors

    def _concatenate(self, planned: PlannedTensor, coefficients: Sequence[float]) -> LowRank:
        pairs = [
            (c * left, right)
            for c, pair in zip(coefficients, self._weight_factors(planned), strict=True)
            if pair is not None
            for left, right in [pair]
        ]
        left = torch.cat([p[0] for p in pairs], dim=1)
        right = torch.cat([p[1] for p in pairs], dim=0)
        return truncate_product(left, right, self.rank)

    def _knots(self, planned: PlannedTensor) -> LowRank:
        """The joined updates [L₁R₁ … L_nR_n] = [L₁ … L_n]·blockdiag(R₁ … R_n): its SVD from
        the factors; inputs without this module contribute a zero block."""
        columns = planned.shape[1]
        pairs = self._weight_factors(planned)
        n = len(pairs)
        lefts = [p[0] for p in pairs if p is not None]
        joined_right = torch.zeros(sum(x.shape[1] for x in lefts), n * columns, device=self.device)
        offset = 0
        for index, pair in enumerate(pairs):
            if pair is None:
                continue
            rank = pair[1].shape[0]
            joined_right[offset : offset + rank, index * columns : (index + 1) * columns] = pair[1]
            offset += rank
        # Imported here, after build_plan loaded every method family: importing a family
        # module first would change the registry's order (the docs table follows it).
        from mergestudio.methods.knots import merge_in_shared_basis

        u, s, vh = product_svd(torch.cat(lefts, dim=1), joined_right)
        params = {**planned.global_params, **planned.model_params}
        left, right = merge_in_shared_basis(
            planned.name,
            u,
            s,
            vh,
            n,
            generator=self.full.generator(planned),
            weight=params["weight"],  # type: ignore[arg-type]
            density=params["density"],  # type: ignore[arg-type]
            sparsification=str(params["sparsification"]),
            normalize=bool(params["normalize"]),
            scale=float(params["lambda"]),  # type: ignore[arg-type]
            present=[pair is not None for pair in pairs],
        )
        return truncate_product(left, right, self.rank)

    def _full_merge(self, planned: PlannedTensor) -> torch.Tensor:
        """The method's result on the full tensors, float32 on the device."""
        merged = self.full.merge(replace(planned, out_dtype="F32"))
        assert merged is not None  # this merger has no target to hand parts to
        return merged.to(self.device, torch.float32, copy=True)

    def _base_weight(self, planned: PlannedTensor) -> torch.Tensor:
        """The base tensor (every adapter's base is the same model; checked above)."""
        first = self.plan.sources[planned.inputs[0].model]
        assert isinstance(first, AdapterSource) and first.base is not None
        return first.base.read(planned.name).to(self.device, torch.float32)


def _concatenation_coefficients(method: str, planned: PlannedTensor) -> list[float] | None:
    """cᵢ with merge = base + Σ cᵢ·updateᵢ, for the methods linear in the task vectors;
    None for any other method (or a linear whose weights do not keep the base)."""
    params = {**planned.global_params, **planned.model_params}
    weights = [float(w) for w in params.get("weight", ())]  # type: ignore[union-attr]
    total = sum(weights)
    if method == "task_arithmetic":
        divisor = (total if abs(total) >= 1e-8 else 1.0) if params.get("normalize") else 1.0
        return [w * float(params.get("lambda", 1.0)) / divisor for w in weights]  # type: ignore[arg-type]
    if method == "linear":
        if params.get("normalize"):
            return [w / total for w in weights]
        return weights if abs(total - 1.0) < 1e-6 else None
    return None


def _module_of(tensor: str) -> str:
    return tensor.rsplit(".", 1)[0]
