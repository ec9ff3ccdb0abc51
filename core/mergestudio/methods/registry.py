"""The method registry. A method is a pure function over tensors plus a declaration of
its parameters; the declaration is the one source for recipe validation, the CLI's
help, the methods table in the docs, and the sliders in the window."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from mergestudio.errors import RecipeError

if TYPE_CHECKING:
    import torch

ParamKind = Literal["float", "int", "bool", "choice"]
ScalarValue: TypeAlias = float | int | bool | str


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    ``per_model`` parameters take one value per input model (a weight, a density);
    the others take one value for the whole merge. ``low``/``high`` are hard bounds,
    checked when a recipe is validated; ``ui_low``/``ui_high`` the slider's range when it
    differs (a weight may be any number, but its slider runs from -1 to 2). ``step`` is
    the increment a slider writes; None picks a round one (``ui_step``).
    """

    name: str
    kind: ParamKind
    doc: str
    default: ScalarValue | None = None  # None: required
    per_model: bool = False
    low: float | None = None
    high: float | None = None
    ui_low: float | None = None
    ui_high: float | None = None
    choices: tuple[str, ...] = ()
    step: float | None = None

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def slider_range(self) -> tuple[float, float]:
        low = self.ui_low if self.ui_low is not None else self.low
        high = self.ui_high if self.ui_high is not None else self.high
        return (0.0 if low is None else low, 1.0 if high is None else high)

    @property
    def ui_step(self) -> float:
        """The slider's increment: the declared ``step``, else 1 for whole numbers and
        the power of ten giving 100 to 1000 positions over the slider's range (0.01 for
        a density in [0, 1] or a weight in [-1, 2])."""
        if self.step is not None:
            return self.step
        if self.kind == "int":
            return 1.0
        low, high = self.slider_range
        span = high - low
        return 10.0 ** math.floor(math.log10(span / 100)) if span > 0 else 0.01

    def rounded(self, value: float) -> int | float:
        """``value`` on the slider's grid (a multiple of ``ui_step``), without float noise
        such as 0.30000000000000004."""
        if self.kind == "int":
            return round(value)
        step = self.ui_step
        digits = max(0, -math.floor(math.log10(step))) + 2
        return round(round(value / step) * step, digits)

    def check(self, value: ScalarValue, where: str) -> None:
        """Raise RecipeError (naming ``where``) if ``value`` does not fit this parameter."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise RecipeError(f"{where}: {self.name} must be true or false, got {value!r}")
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise RecipeError(
                    f"{where}: {self.name} must be one of {', '.join(self.choices)}; got {value!r}"
                )
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{where}: {self.name} must be a number, got {value!r}")
        if self.kind == "int" and float(value) != int(value):
            raise RecipeError(f"{where}: {self.name} must be a whole number, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise RecipeError(f"{where}: {self.name}={value} is outside its range [{self.low}, {self.high}]")


@dataclass(frozen=True)
class MergeInputs:
    """What a method sees for one output tensor (or one row-chunk of it).

    ``tensors``: (n_models, *shape) in the compute dtype; the non-base inputs, in recipe
    order. ``base``: (*shape,) or None. Both are read-only for the method.
    ``generator``: seeded per output tensor for stochastic methods, else None.
    ``scratch``: optionally, a (numel,) buffer in the compute dtype that the method may
    return its result in (the caller copies it out before the next call); fresh
    memory is zeroed page by page by the OS, which cost more than a sparsifying
    merge's arithmetic.
    """

    name: str
    tensors: torch.Tensor
    base: torch.Tensor | None
    generator: torch.Generator | None = None
    scratch: torch.Tensor | None = None

    @property
    def n_models(self) -> int:
        return int(self.tensors.shape[0])

    def task_vectors(self) -> torch.Tensor:
        """(n_models, *shape): each input minus the base."""
        if self.base is None:
            raise RecipeError(f"{self.name}: this method needs a base_model")
        return self.tensors - self.base


# ``fn(inputs: MergeInputs, **params) -> Tensor``: keyword parameters as declared.
MethodFunction: TypeAlias = Callable[..., "torch.Tensor"]
# ``fn(chunks: FlatChunks, generator, shape, **params) -> None``: the same method over an
# output tensor's inputs read range by range, writing its result through ``chunks``
# (``methods.chunks``); bit for bit what ``MethodFunction`` returns, in bounded memory.
StreamedFunction: TypeAlias = Callable[..., None]
# ``fn(rows, base, out, **params) -> int``: an elementwise method's one-pass form on bf16
# data as stored (``methods.bf16_kernels``): ``rows`` a sequence of n (L,) uint16 arrays
# of bf16 bits, ``base`` one or None, ``out`` (L,) uint16 for the result's bits. It must
# write exactly the bits of ``MethodFunction`` in float32 rounded to bf16 by torch, and
# returns how many results were NaN/Inf (the executor then redoes the rows in torch).
FusedFunction: TypeAlias = Callable[..., int]
# A parameter constraint across parameters, checked at plan time for every output tensor:
# ``check(params)`` gets the tensor's resolved values (per-model ones as tuples) and
# returns None, or a sentence saying what is wrong ("weights sum to 0 and normalize …").
ParamValues: TypeAlias = Mapping[str, "ScalarValue | tuple[ScalarValue, ...]"]
ParamCheck: TypeAlias = Callable[[ParamValues], "str | None"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function and everything the rest of the studio needs to
    know about it without calling it."""

    name: str
    function: MethodFunction
    family: str
    summary: str
    params: tuple[Param, ...]
    math: str = ""
    paper: str | None = None
    needs_base: bool = False
    # A base_model is used when the recipe names one (interpolating task vectors), and
    # the method also works without.
    optional_base: bool = False
    # The value at each entry depends only on the inputs at that entry, so the executor
    # may split a large tensor into row chunks.
    elementwise: bool = False
    stochastic: bool = False
    min_models: int = 1
    max_models: int | None = None
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())
    # Constraints between parameters that bounds alone cannot say (DELLA's density ± ε
    # inside (0, 1)); run by the plan, so a dry run finds them before any tensor is read.
    check: ParamCheck | None = None
    # Every NaN/Inf entry of an input makes the output non-finite (sums and scalings): the
    # executor then checks only the result for NaN/Inf and looks at the inputs only when
    # it is not finite, instead of scanning every input (which cost 15-25 % of a linear
    # merge's CPU time).
    propagates_nonfinite: bool = False
    # The family module that declared it (orders ``all_methods``).
    module: str = ""
    # The method's two-pass form over flat ranges, for tensors too large to hold whole
    # (sparsifiers: statistics, then combining); None when it needs whole tensors.
    streamed: StreamedFunction | None = None
    # The working memory of one read range a streamed method takes by default, when it
    # differs from the executor's: methods whose statistics are a few scalars (Gram
    # matrices) gain nothing from large ranges, and every byte counts in their peak.
    stream_bytes: int | None = None
    # The method's one-pass bf16 form for the CPU (``FusedFunction``), for elementwise
    # methods that propagate NaN/Inf: it skips converting every input to float32 and
    # back, which was most of a linear merge's CPU time. None: the torch path only.
    fused: FusedFunction | None = None

    def takes_base(self, base_model: str | None) -> bool:
        """Whether the base model is handed to the function (and kept out of the inputs)."""
        return bool(base_model) and (self.needs_base or self.optional_base)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def global_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.per_model)

    @property
    def model_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.per_model)


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    family: str,
    summary: str,
    params: Sequence[Param] = (),
    math: str = "",
    paper: str | None = None,
    needs_base: bool = False,
    optional_base: bool = False,
    elementwise: bool = False,
    stochastic: bool = False,
    min_models: int = 1,
    max_models: int | None = None,
    notes: str = "",
    aliases: Sequence[str] = (),
    check: ParamCheck | None = None,
    propagates_nonfinite: bool = False,
    streamed: StreamedFunction | None = None,
    stream_bytes: int | None = None,
    fused: FusedFunction | None = None,
) -> Callable[[MethodFunction], MethodFunction]:
    """Declare a merge method. See ``MethodSpec`` for the meaning of each field."""
    # The declaring module, whichever module defined the function (consensus registers
    # variants built elsewhere): it orders ``all_methods`` the same however imported.
    module = str(sys._getframe(1).f_globals.get("__name__", ""))

    if fused is not None and not (elementwise and propagates_nonfinite):
        # The executor checks only a fused form's results for NaN/Inf.
        raise ValueError(f"{name}: a fused form needs an elementwise method that propagates NaN/Inf")

    def decorate(function: MethodFunction) -> MethodFunction:
        spec = MethodSpec(
            name=name,
            function=function,
            family=family,
            summary=summary,
            params=tuple(params),
            math=math,
            paper=paper,
            needs_base=needs_base,
            optional_base=optional_base,
            elementwise=elementwise,
            stochastic=stochastic,
            min_models=min_models,
            max_models=max_models,
            notes=notes,
            aliases=tuple(aliases),
            check=check,
            propagates_nonfinite=propagates_nonfinite,
            module=module,
            streamed=streamed,
            stream_bytes=stream_bytes,
            fused=fused,
        )
        for key in (name, *aliases):
            if key in _REGISTRY:
                raise ValueError(f"merge method {key!r} registered twice")
            _REGISTRY[key] = spec
        return function

    return decorate


def get_method(name: str) -> MethodSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(spec.name for spec in all_methods()))
        raise RecipeError(f"merge_method: unknown method {name!r}; valid methods: {valid}") from None


def all_methods() -> list[MethodSpec]:
    """Every registered method once (aliases folded): family modules in their listed
    order, each module's methods in registration order. Not plain registration order,
    which depends on which module some caller imported first."""
    from mergestudio.methods import FAMILY_MODULES

    _load_all()
    unique = list({id(spec): spec for spec in _REGISTRY.values()}.values())
    rank = {module: index for index, module in enumerate(FAMILY_MODULES)}
    return sorted(unique, key=lambda spec: rank.get(spec.module, len(rank)))


def _load_all() -> None:
    # Importing the family modules runs their @register decorators.
    from mergestudio.methods import load_families

    load_families()
