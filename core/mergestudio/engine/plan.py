"""The plan: for every output tensor, which input tensors and which method call, with
parameters resolved for that tensor. Built from headers alone, so it can be estimated
(the dry run) before a byte of tensor data is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mergestudio.architectures import TensorRole
from mergestudio.engine.checks import check_plan
from mergestudio.errors import PlanError, RecipeError
from mergestudio.io.dtypes import FLOAT_CODES, ITEM_SIZE, dtype_code
from mergestudio.io.safetensors_file import TensorInfo
from mergestudio.io.sources import ModelSource
from mergestudio.methods.registry import MethodSpec, ScalarValue
from mergestudio.recipe.model import InputSlice, OutputSlice, Parameters, Recipe
from mergestudio.recipe.parameters import resolve
from mergestudio.recipe.validate import validate_recipe
from mergestudio.vocab.align import VocabPlan, plan_vocabulary
from mergestudio.vocab.templates import resolve_chat_template
from mergestudio.vocab.tokenizer_files import read_tokenizer


@dataclass(frozen=True)
class TensorInput:
    model: str  # the model reference as the recipe writes it
    tensor: str  # the tensor's name in that model


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor and how to make it.

    ``inputs`` are the non-base inputs in recipe order (for methods without a base, every
    input); ``model_params`` holds one value per input for each per-model parameter.
    ``copy_from`` is set for tensors that are copied, not merged (integer buffers).
    """

    name: str
    shape: tuple[int, ...]
    out_dtype: str
    inputs: tuple[TensorInput, ...]
    base: TensorInput | None
    global_params: Mapping[str, ScalarValue]
    model_params: Mapping[str, tuple[ScalarValue, ...]]
    layer: int | None
    t: float
    copy_from: TensorInput | None = None
    align_rows: bool = False  # embedding-like: gather rows by token (plan.vocab) first

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def out_bytes(self) -> int:
        return self.numel * ITEM_SIZE[self.out_dtype]

    def all_inputs(self) -> tuple[TensorInput, ...]:
        if self.copy_from is not None:
            return (self.copy_from,)
        return self.inputs + ((self.base,) if self.base else ())


@dataclass
class PlanEstimate:
    tensor_count: int
    bytes_to_read: int
    output_bytes: int
    peak_memory_bytes: int
    largest_tensor: str  # the tensor whose step needs the most working memory
    # The peak of the tensors that must be held whole (SVD-based and other whole-matrix
    # methods, vocabulary alignment, post-processes); 0 when every step streams.
    whole_tensor_bytes: int = 0
    chunk_bytes: int = 0  # the working memory of one streamed step this estimate assumes
    max_memory: int | None = None  # the cap it was made for, if any

    @property
    def fits(self) -> bool:
        """Whether the estimated peak stays within the cap (True without one)."""
        return self.max_memory is None or self.peak_memory_bytes <= self.max_memory


# What the engine holds besides its buffers: the interpreter, torch, numba and the
# compiled kernels (measured on Linux as anonymous memory at the first tensor: ~180 MB).
RUNTIME_BYTES = 200 << 20
# Streamed steps: default working memory, and the least a memory cap may leave them.
STREAM_BYTES = 64 << 20
MIN_STREAM_BYTES = 1 << 20
# Shard-writer queue: results waiting to be written, besides the one being made.
_QUEUED_OUTPUTS = 2


@dataclass
class MergePlan:
    recipe: Recipe
    method: MethodSpec
    sources: dict[str, ModelSource]
    tensors: list[PlannedTensor]
    base_model: str | None
    config_model: str  # whose config.json and tokenizer the output starts from
    output_layers: int
    warnings: list[str] = field(default_factory=list)
    vocab: VocabPlan | None = None  # the output vocabulary and row maps, when tokenizers say
    chat_template: str | None = None  # Jinja text for the output's tokenizer_config.json

    def tensor_info(self, tensor_input: TensorInput) -> TensorInfo:
        return self.sources[tensor_input.model].tensors[tensor_input.tensor]

    def estimate(
        self, compute_bytes: int = 4, chunk_bytes: int | None = None, max_memory: int | None = None
    ) -> PlanEstimate:
        """Bytes to read and write, and the peak memory of a streaming run.

        Per tensor, the working memory of its step: streamed methods (sparsifiers) and
        elementwise ones hold ``chunk_bytes`` of converted inputs plus their statistics
        (under 1 byte per input entry: bit-packed masks, the entries near a threshold);
        other methods hold the stacked inputs and the result in the compute dtype plus
        two temporaries of that size. Around it: the runtime (``RUNTIME_BYTES``) and the
        results queued for the writer. With ``max_memory`` and no ``chunk_bytes``, the
        step size is what the cap leaves (``chunk_bytes_for``).
        """
        if chunk_bytes is None:
            chunk_bytes = self.chunk_bytes_for(max_memory, compute_bytes) if max_memory else self.step_bytes
        bytes_to_read = 0
        step_peak = 0
        whole_peak = 0
        largest = ""
        for planned in self.tensors:
            inputs = planned.all_inputs()
            bytes_to_read += sum(self.sources[i.model].input_bytes(i.tensor) for i in inputs)
            working, whole = self._step_memory(planned, compute_bytes, chunk_bytes)
            whole_peak = max(whole_peak, working if whole else 0)
            if working > step_peak:
                step_peak, largest = working, planned.name
        output_bytes = sum(p.out_bytes for p in self.tensors)
        peak = RUNTIME_BYTES + step_peak + self._queued_output_bytes(chunk_bytes)
        return PlanEstimate(
            len(self.tensors), bytes_to_read, output_bytes, peak, largest, whole_peak, chunk_bytes, max_memory
        )

    def _step_memory(self, planned: PlannedTensor, compute_bytes: int, chunk_bytes: int) -> tuple[int, bool]:
        """(working bytes of this tensor's step besides its output, whether it is held
        whole)."""
        if planned.copy_from is not None:
            return 0, False
        inputs = len(planned.all_inputs())
        whole = planned.numel * (inputs + 3) * compute_bytes
        post = self.recipe.post_process is not None
        if planned.align_rows or post:
            return whole, True
        if self.method.elementwise:
            return min(whole, chunk_bytes), False
        if self.method.streamed is not None:
            # Bands of entries near each threshold (a few % of them, float32) and
            # bit-packed masks: well under a byte per input entry.
            statistics = planned.numel * inputs // 4
            return min(whole, chunk_bytes + statistics), False
        return whole, True

    def _queued_output_bytes(self, chunk_bytes: int) -> int:
        """The most result bytes that can wait for the writer at once (its queue and the
        one being made): whole results, or parts for the tensors made in parts."""
        sizes = sorted((self._held_output_bytes(p, chunk_bytes) for p in self.tensors), reverse=True)
        return sum(sizes[: _QUEUED_OUTPUTS + 1])

    def _held_output_bytes(self, planned: PlannedTensor, chunk_bytes: int) -> int:
        """Bytes of one queued result: elementwise and streamed methods hand a folder's
        writer parts of a step's result (under half a step: the step also holds the
        inputs in the compute dtype), the others whole tensors."""
        in_parts = (
            planned.copy_from is None
            and not planned.align_rows
            and self.recipe.post_process is None
            and bool(planned.shape)
            and (self.method.elementwise or self.method.streamed is not None)
        )
        return min(planned.out_bytes, chunk_bytes // 2) if in_parts else planned.out_bytes

    def chunk_bytes_for(self, max_memory: int | None, compute_bytes: int = 4) -> int:
        """The working memory of a streamed step under ``max_memory``: what the runtime
        and the queued outputs leave, at most ``step_bytes`` and at least
        ``MIN_STREAM_BYTES`` (a cap below that is reported by ``estimate`` as not met)."""
        if max_memory is None:
            return self.step_bytes
        left = max_memory - RUNTIME_BYTES - self._queued_output_bytes(self.step_bytes)
        statistics = max(
            (p.numel * len(p.all_inputs()) // 4 for p in self.tensors if p.copy_from is None), default=0
        )
        return max(MIN_STREAM_BYTES, min(self.step_bytes, left - statistics))

    @property
    def step_bytes(self) -> int:
        """The default working memory of a streamed step: the method's own
        (``MethodSpec.stream_bytes``), else ``STREAM_BYTES``."""
        return self.method.stream_bytes or STREAM_BYTES

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def build_plan(
    recipe: Recipe,
    *,
    sources: Mapping[str, ModelSource] | None = None,
    allow_pickle: bool = False,
) -> MergePlan:
    """Validate ``recipe``, open its models (metadata only) and plan every output tensor.

    ``sources`` may hold models already open (by reference); the rest are opened here.
    """
    method = validate_recipe(recipe)
    opened = dict(sources or {})
    from mergestudio.io.sources import open_model

    try:
        for reference in recipe.referenced_models():
            if reference not in opened:
                opened[reference] = open_model(reference, allow_pickle=allow_pickle)
        plan = _Planner(recipe, method, opened).plan()
        check_plan(plan)
        if recipe.writes_adapter:
            # Imported here: the adapter merge is built on this module.
            from mergestudio.lora.merge import adapters_of_one_base

            adapters_of_one_base(plan)  # every input an adapter of one base
    except BaseException:
        for reference, source in opened.items():  # close what this call opened, not the caller's
            if reference not in (sources or {}):
                source.close()
        raise
    return plan


class _Planner:
    def __init__(self, recipe: Recipe, method: MethodSpec, sources: dict[str, ModelSource]) -> None:
        self.recipe = recipe
        self.method = method
        self.sources = sources
        self.warnings: list[str] = []
        self.slices = self._output_slices()
        self.out_dtype_override = _optional_dtype(recipe.out_dtype or recipe.dtype, "out_dtype")
        self.first_model = recipe.base_model or self.slices[0].sources[0].model
        # Tokenizer and chat-template problems surface here, before any tensor is planned.
        self.vocab = plan_vocabulary(recipe, sources, self.first_model)
        self.chat_template = resolve_chat_template(recipe.chat_template, self._model_templates())

    def _model_templates(self) -> list[tuple[str, str | None]]:
        if self.recipe.chat_template != "auto":
            return []
        templates = []
        for reference, source in self.sources.items():
            files = read_tokenizer(source.root)
            templates.append((reference, files.chat_template if files else None))
        return templates

    # ---- shape of the output ----------------------------------------------------------

    def _output_slices(self) -> list[OutputSlice]:
        """mergekit's normalisation: a ``models`` recipe is one slice over all layers;
        the base joins the inputs when the method needs it."""
        recipe = self.recipe
        if recipe.slices:
            return recipe.slices
        assert recipe.models is not None
        sources = [
            InputSlice(
                model=m.model,
                layer_range=(0, max(1, self.sources[m.model].num_layers)),
                parameters=m.parameters,
            )
            for m in recipe.models
        ]
        base = recipe.base_model
        if base and self.method.takes_base(base) and all(s.model != base for s in sources):
            sources.append(InputSlice(model=base, layer_range=(0, max(1, self.sources[base].num_layers))))
        return [OutputSlice(sources=sources)]

    def plan(self) -> MergePlan:
        self._check_architectures()
        first = self.slices[0]
        if self.recipe.slices:
            tensors, output_layer = self._plan_slices()
        else:
            tensors, output_layer = self._plan_whole_models(first)
        self._warn_unused_tensors(tensors)
        return MergePlan(
            recipe=self.recipe,
            method=self.method,
            sources=self.sources,
            tensors=tensors,
            base_model=self.recipe.base_model,
            config_model=self.first_model,
            output_layers=output_layer,
            warnings=self.warnings,
            vocab=self.vocab,
            chat_template=self.chat_template,
        )

    def _check_architectures(self) -> None:
        seen: dict[str, str] = {}
        families: dict[str, str] = {}
        for reference in self.recipe.referenced_models():
            source = self.sources[reference]
            if source.architecture:
                seen.setdefault(source.architecture, reference)
            families.setdefault(source.layout.family.title, reference)
            for warning in source.layout.warnings:
                self._warn_once(f"{reference}: {warning}")
        if len(seen) > 1:
            listing = "; ".join(f"{ref} is {arch}" for arch, ref in seen.items())
            raise PlanError(f"the models have different architectures: {listing}")
        if len(families) > 1:
            listing = "; ".join(f"{ref} is {title}" for title, ref in families.items())
            raise PlanError(f"the models are of different families or tensor namings: {listing}")

    # ---- a whole-model merge (``models``): every tensor of the reference model --------

    def _plan_whole_models(self, output_slice: OutputSlice) -> tuple[list[PlannedTensor], int]:
        """Output names are input names; a tensor's gradient position ``t`` is its block's
        relative depth in its stack (0 outside the blocks, as mergekit does for embeddings
        and heads), so LLM recipes keep mergekit's meaning and UNets get block weights."""
        reference_model = self._reference_model(output_slice)
        layout = self.sources[reference_model].layout
        order = {name: i for i, name in enumerate(self.sources[reference_model].tensors)}
        names = sorted(order, key=lambda n: (*_stream_rank(layout.role(n)), order[n]))
        planned = []
        for name in names:
            role = layout.role(name)
            t = role.block.t if role.block else 0.0
            layer = role.block.order if role.block else None
            input_names = {src.model: self._tied_name(src.model, name) for src in output_slice.sources}
            planned.append(self._plan_tensor(output_slice, name, input_names, layer, t, role, "models"))
        return planned, layout.layer_count

    def _tied_name(self, model: str, name: str) -> str:
        """``name``, or the tensor it is tied to when ``model`` stores only that one."""
        source = self.sources[model]
        if name in source.tensors:
            return name
        for tensor, tied_to in source.layout.family.tied:
            if name == tensor and tied_to in source.tensors:
                return tied_to
        return name

    # ---- mergekit slices: layer ranges of the sliceable stack -------------------------

    def _plan_slices(self) -> tuple[list[PlannedTensor], int]:
        tensors: list[PlannedTensor] = []
        first, last = self.slices[0], self.slices[-1]
        tensors += self._plan_non_layer(first, pre=True)
        output_layer = 0
        for index, output_slice in enumerate(self.slices):
            length = self._slice_length(output_slice, index)
            for offset in range(length):
                t = offset / (length - 1) if length > 1 else 1.0
                tensors += self._plan_layer(output_slice, offset, output_layer, t, index)
                output_layer += 1
        tensors += self._plan_non_layer(last, pre=False)
        return tensors, output_layer

    def _slice_length(self, output_slice: OutputSlice, index: int) -> int:
        lengths = {src.layer_range[1] - src.layer_range[0] for src in output_slice.sources}
        if len(lengths) != 1:
            ranges = ", ".join(f"{s.model} {list(s.layer_range)}" for s in output_slice.sources)
            raise RecipeError(f"slices[{index}]: every source of a slice must span as many layers ({ranges})")
        for src in output_slice.sources:
            source = self.sources[src.model]
            family = source.layout.family
            if family.slice_stack is None:
                raise RecipeError(
                    f"slices[{index}]: {src.model} is a {family.title}, whose blocks cannot be sliced "
                    "by layer_range; merge it with `models` (and a block-weight gradient) instead"
                )
            available = source.num_layers
            if src.layer_range[1] > available:
                raise RecipeError(
                    f"slices[{index}]: layer_range {list(src.layer_range)} of {src.model} goes past its "
                    f"{available} layers"
                )
        return lengths.pop()

    # ---- tensors -----------------------------------------------------------------------

    def _reference_model(self, output_slice: OutputSlice) -> str:
        base = self._slice_base(output_slice)
        models = [s.model for s in output_slice.sources]
        return base if base in models else models[0]

    def _slice_base(self, output_slice: OutputSlice) -> str | None:
        return output_slice.base_model or self.recipe.base_model

    def _plan_non_layer(self, output_slice: OutputSlice, *, pre: bool) -> list[PlannedTensor]:
        layout = self.sources[self._reference_model(output_slice)].layout
        names = [
            name for name in layout.roles if layout.layer_slot(name) is None and layout.role(name).pre == pre
        ]
        # mergekit (0.1.x) evaluates gradients at t = 0 for every non-layer tensor,
        # before and after the layers alike.
        t = 0.0
        where = "slices[0]" if pre else f"slices[{len(self.slices) - 1}]"
        return [
            self._plan_tensor(
                output_slice, name, {src.model: self._tied_name(src.model, name) for src in output_slice.sources},
                None, t, layout.role(name), where,
            )
            for name in names
        ]

    def _plan_layer(
        self, output_slice: OutputSlice, offset: int, output_layer: int, t: float, index: int
    ) -> list[PlannedTensor]:
        reference_model = self._reference_model(output_slice)
        reference_src = next(s for s in output_slice.sources if s.model == reference_model)
        reference_index = reference_src.layer_range[0] + offset
        layout = self.sources[reference_model].layout
        planned = []
        for name in self.sources[reference_model].tensors:
            slot = layout.layer_slot(name)
            if slot is None or slot.index != reference_index:
                continue
            input_names = {}
            for src in output_slice.sources:
                input_names[src.model] = slot.with_index(src.layer_range[0] + offset)
            planned.append(
                self._plan_tensor(
                    output_slice, slot.with_index(output_layer), input_names, output_layer, t,
                    layout.role(name), f"slices[{index}]",
                )
            )
        return planned

    def _plan_tensor(
        self,
        output_slice: OutputSlice,
        output_name: str,
        input_names: dict[str, str],
        layer: int | None,
        t: float,
        role: TensorRole,
        where: str,
    ) -> PlannedTensor:
        """``where`` names the recipe part the tensor comes from (``models``, ``slices[1]``)
        for error messages."""
        reference_model = self._reference_model(output_slice)
        reference = self._input_info(reference_model, input_names[reference_model], where)
        align = self._aligns_rows(input_names, where)
        for model, name in input_names.items():
            info = self._input_info(model, name, where)
            if align and info.shape[1:] == reference.shape[1:]:
                continue  # rows are matched by token string, not by index
            if info.shape != reference.shape:
                raise PlanError(
                    f"{where}: tensor {name!r} has shape {list(info.shape)} in {model} but "
                    f"{list(reference.shape)} in {reference_model}: these models cannot be merged "
                    "tensor by tensor (different sizes or vocabularies)"
                )
            if info.dtype != reference.dtype:
                self._warn_once(
                    f"dtype mismatch: {model} stores {info.dtype}, {reference_model} {reference.dtype}"
                )
        out_dtype = self.out_dtype_override or reference.dtype
        # Integer buffers, and buffers the family says are not weights (rotary caches,
        # position ids), are copied from the reference model.
        if reference.dtype not in FLOAT_CODES or not role.merge:
            source = TensorInput(reference_model, input_names[reference_model])
            return PlannedTensor(
                output_name, reference.shape, reference.dtype, (), None, {}, {}, layer, t, copy_from=source
            )
        base = self._slice_base(output_slice)
        takes_base = self.method.takes_base(base)
        if takes_base:
            if base not in input_names:
                raise RecipeError(f"base_model: {base} is not among the inputs of this slice")
            inputs = [m for m in input_names if m != base]
        else:
            inputs = list(input_names)
        self._check_input_count(len(inputs), output_name)
        block = role.block.label if role.block else None
        global_params = self._global_params(output_slice, output_name, t, block)
        model_params = self._model_params(output_slice, inputs, input_names, t, block)
        shape = (self.vocab.rows, *reference.shape[1:]) if align and self.vocab else reference.shape
        return PlannedTensor(
            name=output_name,
            shape=shape,
            out_dtype=out_dtype,
            inputs=tuple(TensorInput(m, input_names[m]) for m in inputs),
            base=TensorInput(base, input_names[base]) if takes_base and base else None,
            global_params=global_params,
            model_params=model_params,
            layer=layer,
            t=t,
            align_rows=align,
        )

    def _aligns_rows(self, input_names: dict[str, str], where: str) -> bool:
        """Whether this tensor is embedding-like in every input and the vocabulary plan
        moves rows (an output with the inputs' own rows needs no gathering)."""
        vocab = self.vocab
        if vocab is None or not vocab.needs_alignment:
            return False
        return all(
            vocab.aligned_tensor(model, name, self._input_info(model, name, where).shape)
            for model, name in input_names.items()
        )

    def _input_info(self, model: str, name: str, where: str) -> TensorInfo:
        info = self.sources[model].tensors.get(name)
        if info is None:
            raise PlanError(f"{where}: tensor {name!r} is missing from model {model}")
        return info

    def _check_input_count(self, count: int, output_name: str) -> None:
        method = self.method
        if count < method.min_models or (method.max_models is not None and count > method.max_models):
            wanted = (
                f"exactly {method.min_models}"
                if method.min_models == method.max_models
                else f"at least {method.min_models}"
                if method.max_models is None
                else f"{method.min_models} to {method.max_models}"
            )
            besides = " besides the base" if method.takes_base(self.recipe.base_model) else ""
            raise RecipeError(
                f"merge_method {method.name!r} takes {wanted} input model(s){besides} per tensor, "
                f"got {count} for {output_name}"
            )

    # ---- parameters --------------------------------------------------------------------

    def _global_params(
        self, output_slice: OutputSlice, tensor_name: str, t: float, block: str | None
    ) -> dict[str, ScalarValue]:
        blocks = [output_slice.parameters, self.recipe.parameters]
        values: dict[str, ScalarValue] = {}
        for param in self.method.global_params:
            value = resolve(param.name, blocks, tensor_name, t, block)
            if value is None:
                if param.required:
                    raise RecipeError(f"parameters.{param.name}: required by {self.method.name!r}, not set")
                value = param.default
            assert value is not None
            values[param.name] = value
        return values

    def _model_params(
        self,
        output_slice: OutputSlice,
        models: list[str],
        input_names: dict[str, str],
        t: float,
        block: str | None,
    ) -> dict[str, tuple[ScalarValue, ...]]:
        values: dict[str, tuple[ScalarValue, ...]] = {}
        for param in self.method.model_params:
            per_model: list[ScalarValue] = []
            for model in models:
                blocks: list[Parameters | None] = [
                    src.parameters for src in output_slice.sources if src.model == model
                ]
                blocks += [output_slice.parameters, self.recipe.parameters]
                value = resolve(param.name, blocks, input_names[model], t, block)
                if value is None:
                    if param.required:
                        raise RecipeError(
                            f"models: {param.name!r} is required by {self.method.name!r} and not "
                            f"set for {model} (tensor {input_names[model]})"
                        )
                    value = param.default
                assert value is not None
                per_model.append(value)
            values[param.name] = tuple(per_model)
        return values

    # ---- warnings ----------------------------------------------------------------------

    def _warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _warn_unused_tensors(self, planned: list[PlannedTensor]) -> None:
        if self.recipe.slices:
            return  # slices drop layers on purpose
        used: dict[str, set[str]] = {}
        for p in planned:
            for tensor_input in p.all_inputs():
                used.setdefault(tensor_input.model, set()).add(tensor_input.tensor)
        for model, names in used.items():
            extra = sorted(set(self.sources[model].tensors) - names)
            if extra:
                shown = ", ".join(extra[:3]) + (" …" if len(extra) > 3 else "")
                self._warn_once(f"{model} has {len(extra)} tensor(s) the output does not use: {shown}")


def _stream_rank(role: TensorRole) -> tuple[int, int]:
    """Outside tensors before the blocks first, then blocks in order, then the rest."""
    if role.block is not None:
        return (1, role.block.order)
    return (0, 0) if role.pre else (2, 0)


def _optional_dtype(name: str | None, key: str) -> str | None:
    if name is None:
        return None
    try:
        return dtype_code(name)
    except ValueError as error:
        raise RecipeError(f"{key}: {error}") from None


def describe_sources(plan: MergePlan) -> list[dict[str, Any]]:
    """Plain data about every input model, for dry runs and model cards."""
    rows = []
    for reference, source in plan.sources.items():
        rows.append(
            {
                "model": reference,
                "role": "base" if reference == plan.base_model else "input",
                "architecture": source.architecture,
                "family": source.layout.family.title,
                "blocks": [block.label for block in source.layout.blocks],
                "lanes": [lane.name for lane in source.layout.lanes],
                "layers": source.num_layers,
                "parameters": source.parameter_count,
                "bytes": source.total_bytes,
                "dtypes": source.dtypes,
                "revision": source.revision,
                "fingerprint": source.fingerprint(),
            }
        )
    return rows
