"""Post-processing plug-ins: a step applied to the output of any merge method, tensor by
tensor, declared like a method (parameters, paper) so recipes, the CLI's help, the docs
and the window learn about it from the declaration.

A recipe names one under ``post_process`` (``{name: svc, parameters: {alpha: 0.1}}``);
the executor calls it with the method's inputs and result for every merged tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from mergestudio.errors import RecipeError
from mergestudio.methods.registry import MergeInputs, Param

if TYPE_CHECKING:
    import torch

# ``fn(inputs: MergeInputs, merged: Tensor, **params) -> Tensor``: ``merged`` has the
# shape of one input, in the compute dtype; the result replaces it.
PostProcessFunction: TypeAlias = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class PostProcessSpec:
    """A registered post-processing step."""

    name: str
    function: PostProcessFunction
    summary: str
    params: tuple[Param, ...]
    math: str = ""
    paper: str | None = None
    needs_base: bool = True
    notes: str = ""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def apply(self, inputs: MergeInputs, merged: torch.Tensor, params: dict[str, object]) -> torch.Tensor:
        full: dict[str, object] = {p.name: p.default for p in self.params}
        full.update(params)
        return self.function(inputs, merged, **full)


_PLUGINS: dict[str, PostProcessSpec] = {}


def register_post_process(
    name: str,
    *,
    summary: str,
    params: Sequence[Param] = (),
    math: str = "",
    paper: str | None = None,
    needs_base: bool = True,
    notes: str = "",
) -> Callable[[PostProcessFunction], PostProcessFunction]:
    """Declare a post-processing plug-in. Its parameters may not be per model."""

    def decorate(function: PostProcessFunction) -> PostProcessFunction:
        if name in _PLUGINS:
            raise ValueError(f"post-process {name!r} registered twice")
        if any(p.per_model for p in params):
            raise ValueError(f"post-process {name!r}: parameters are one value for the whole merge")
        _PLUGINS[name] = PostProcessSpec(
            name, function, summary, tuple(params), math, paper, needs_base, notes
        )
        return function

    return decorate


def get_post_process(name: str) -> PostProcessSpec:
    _load_all()
    try:
        return _PLUGINS[name]
    except KeyError:
        valid = ", ".join(sorted(_PLUGINS)) or "none"
        raise RecipeError(f"post_process.name: unknown post-process {name!r}; valid: {valid}") from None


def all_post_processes() -> list[PostProcessSpec]:
    _load_all()
    return list(_PLUGINS.values())


def _load_all() -> None:
    from mergestudio.methods import load_families

    load_families()
