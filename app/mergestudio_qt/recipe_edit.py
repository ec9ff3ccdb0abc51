"""Editing a recipe held as a plain mergekit dict: reading and writing one parameter,
switching methods, keeping the model list in step, and layer curves.

No Qt here: the widgets call these functions and the tests check them directly. Every
function returns a new dict and leaves its argument alone, so undo can keep the old one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mergestudio.methods.registry import MethodSpec, Param

Setting = Any  # a scalar, a gradient list, a condition dict or a list of them


@dataclass(frozen=True)
class CurveLane:
    """A lane of the curve: its family lane's ``filters`` (none for the last, the
    fallback) and a tensor name of the lane, which stands for it when conditions are
    matched (first match wins, as in the engine), so a curve read from YAML means what
    the merge will do."""

    name: str
    filters: tuple[str, ...]
    sample: str


# When no model is known: Llama's names, the attention / MLP / rest split.
DEFAULT_LANES: tuple[CurveLane, ...] = (
    CurveLane("attention", ("self_attn",), "model.layers.0.self_attn.q_proj.weight"),
    CurveLane("mlp", ("mlp",), "model.layers.0.mlp.up_proj.weight"),
    CurveLane("other", (), "model.layers.0.input_layernorm.weight"),
)
LANES: tuple[str, ...] = tuple(lane.name for lane in DEFAULT_LANES)
LANE_TITLES: dict[str, str] = {"attention": "attention", "mlp": "MLP", "other": "other"}


def lane_title(name: str) -> str:
    """How a lane is written in summaries: 'MLP', 'attention', 'cross-attention', 'expert 3'."""
    return LANE_TITLES.get(name, name)


def curve_lanes(layout: Any) -> tuple[CurveLane, ...]:
    """The lanes of a ``ModelLayout`` (``mergestudio.architectures``) as curve lanes."""
    samples: dict[str, str] = {}
    for name, role in layout.roles.items():
        samples.setdefault(role.lane, name)
    lanes = tuple(CurveLane(lane.name, lane.filters, samples.get(lane.name, "")) for lane in layout.lanes)
    return lanes if len(lanes) > 0 else DEFAULT_LANES


# ---- values ---------------------------------------------------------------------------


def clean_number(param: Param, value: float) -> int | float:
    """What a slider, spin box or curve point writes: ``value`` on the parameter's
    declared step (``density: 0.48``, never ``0.476`` or ``0.2999``)."""
    return param.rounded(float(value))


def is_numeric(param: Param) -> bool:
    return param.kind in ("float", "int")


def initial_value(param: Param) -> bool | int | float | str:
    """The value a new recipe starts with: the declared default, or for a required
    parameter 1.0 when its slider reaches it (weights), else the slider's middle."""
    if param.default is not None:
        return param.default
    if param.kind == "bool":
        return False
    if param.kind == "choice":
        return param.choices[0]
    low, high = param.slider_range
    value = 1.0 if low <= 1.0 <= high else (low + high) / 2
    return clean_number(param, value)


def get_setting(recipe: dict[str, Any], name: str, model_index: int | None = None) -> Setting | None:
    """The setting as written at one level: a model's own parameters or the global ones."""
    if model_index is None:
        return (recipe.get("parameters") or {}).get(name)
    models = recipe.get("models") or []
    if model_index >= len(models):
        return None
    return (models[model_index].get("parameters") or {}).get(name)


def effective_setting(recipe: dict[str, Any], param: Param, model_index: int | None = None) -> Setting:
    """What applies: the model's own setting, else the global one, else the default."""
    if model_index is not None:
        own = get_setting(recipe, param.name, model_index)
        if own is not None:
            return own
    shared = get_setting(recipe, param.name)
    return shared if shared is not None else initial_value(param)


def set_setting(
    recipe: dict[str, Any], name: str, value: Setting | None, model_index: int | None = None
) -> dict[str, Any]:
    """A copy of ``recipe`` with the setting written (None removes it)."""
    updated = copy.deepcopy(recipe)
    holder = updated if model_index is None else updated["models"][model_index]
    block = dict(holder.get("parameters") or {})
    if value is None:
        block.pop(name, None)
    else:
        block[name] = value
    if block:
        holder["parameters"] = block
    else:
        holder.pop("parameters", None)
    return updated


def scalar_of(setting: Setting) -> bool | int | float | str | None:
    """The setting's value when it is one value for every tensor, else None."""
    if isinstance(setting, bool | int | float | str):
        return setting
    curve = LayerCurve.from_setting(setting)
    if curve is not None and curve.is_flat():
        return curve.lanes["other"][0]
    return None


# ---- methods and models ------------------------------------------------------------------


def with_method(recipe: dict[str, Any], method: MethodSpec) -> dict[str, Any]:
    """Switch to ``method``: keep the settings it understands, drop the others, and give
    every required parameter a value so the recipe stays valid."""
    updated = copy.deepcopy(recipe)
    updated["merge_method"] = method.name
    known = {p.name for p in method.params}
    for holder in [updated, *(updated.get("models") or [])]:
        block = {k: v for k, v in (holder.get("parameters") or {}).items() if k in known}
        if block:
            holder["parameters"] = block
        else:
            holder.pop("parameters", None)
    return fill_required(updated, method)


def fill_required(recipe: dict[str, Any], method: MethodSpec) -> dict[str, Any]:
    updated = copy.deepcopy(recipe)
    for param in method.global_params:
        if param.required and get_setting(updated, param.name) is None:
            updated = set_setting(updated, param.name, initial_value(param))
    for param in method.model_params:
        if not param.required or get_setting(updated, param.name) is not None:
            continue
        for index in range(len(updated.get("models") or [])):
            if get_setting(updated, param.name, index) is None:
                updated = set_setting(updated, param.name, initial_value(param), index)
    return updated


def with_models(
    recipe: dict[str, Any], base: str | None, references: Sequence[str], method: MethodSpec
) -> dict[str, Any]:
    """The recipe merging ``references`` onto ``base``: models keep their parameters and
    their order in the recipe, new ones are appended with the defaults. Slice recipes
    are left as they are (edited in YAML)."""
    if recipe.get("slices"):
        return copy.deepcopy(recipe)
    updated = copy.deepcopy(recipe)
    previous = {m["model"]: m for m in updated.get("models") or []}
    wanted = set(references)
    kept = [ref for ref in previous if ref in wanted]
    order = kept + [ref for ref in references if ref not in previous]
    updated["models"] = [copy.deepcopy(previous.get(ref, {"model": ref})) for ref in order]
    if base:
        updated["base_model"] = base
    else:
        updated.pop("base_model", None)
    return fill_required(updated, method)


def new_recipe(method: MethodSpec, base: str | None, references: Sequence[str]) -> dict[str, Any]:
    return with_models({"merge_method": method.name}, base, references, method)


# ---- layer curves ------------------------------------------------------------------------


@dataclass
class LayerCurve:
    """A parameter's value along the layers, one lane per module group. Each lane is a
    mergekit gradient: values evenly spaced from the first layer to the last."""

    lanes: dict[str, list[float]]
    lane_specs: tuple[CurveLane, ...] = DEFAULT_LANES

    @classmethod
    def flat(cls, value: float, points: int = 5, lanes: tuple[CurveLane, ...] = DEFAULT_LANES) -> LayerCurve:
        return cls({lane.name: [float(value)] * points for lane in lanes}, lanes)

    @classmethod
    def from_setting(
        cls, setting: Setting, points: int = 5, lanes: tuple[CurveLane, ...] = DEFAULT_LANES
    ) -> LayerCurve | None:
        """The curve a setting describes, or None when it is not a curve of numbers
        (a choice, a bool, or conditions on other module names)."""
        found: dict[str, list[float]] = {}
        for spec in lanes:
            lane = spec.name
            value = _lane_value(setting, spec.sample)
            if isinstance(value, bool) or value is None:
                return None
            if isinstance(value, int | float):
                found[lane] = [float(value)] * points
            elif isinstance(value, list) and value and all(_is_number(v) for v in value):
                found[lane] = [float(v) for v in value]
            else:
                return None
        return cls(found, lanes)

    def is_flat(self) -> bool:
        values = {v for lane in self.lanes.values() for v in lane}
        return len(values) == 1

    @property
    def points(self) -> int:
        return max(len(values) for values in self.lanes.values())

    def resampled(self, points: int) -> LayerCurve:
        return LayerCurve({lane: resample(values, points) for lane, values in self.lanes.items()}, self.lane_specs)

    def to_setting(self, param: Param) -> Setting:
        """The shortest mergekit form: a scalar, a gradient list, or ``filter`` conditions
        per lane, in the family's lane order (trailing lanes equal to the fallback, the
        last lane, get no condition of their own)."""
        compact = {lane: _compact(param, values) for lane, values in self.lanes.items()}
        *filtered, last = self.lane_specs
        fallback = compact[last.name]
        if all(value == fallback for value in compact.values()):
            return fallback
        conditions: list[dict[str, Any]] = [
            {"filter": pattern, "value": compact[lane.name]} for lane in filtered for pattern in lane.filters
        ]
        while conditions and conditions[-1]["value"] == fallback:
            conditions.pop()
        conditions.append({"value": fallback})
        return conditions


def resample(values: Sequence[float], points: int) -> list[float]:
    """Piecewise-linear resampling of an evenly spaced gradient."""
    if points <= 1 or len(values) == 1:
        return [float(values[0])] * max(points, 1)
    out = []
    for i in range(points):
        scaled = i / (points - 1) * (len(values) - 1)
        left = min(int(scaled), len(values) - 2)
        frac = scaled - left
        out.append((1 - frac) * values[left] + frac * values[left + 1])
    return out


def preset(shape: str, points: int, low: float, high: float) -> list[float]:
    """A named curve shape from ``low`` to ``high`` over ``points`` values."""
    values = []
    for i in range(points):
        x = i / (points - 1) if points > 1 else 0.0
        values.append(low + (high - low) * PRESETS[shape](x))
    return values


def _flat(x: float) -> float:
    return 1.0


def _ramp_up(x: float) -> float:
    return x


def _ramp_down(x: float) -> float:
    return 1.0 - x


def _smoothstep(x: float) -> float:
    return x * x * (3 - 2 * x)


def _bell(x: float) -> float:
    # sin² peaks in the middle layers and is 0 at the first and last.
    import math

    return math.sin(math.pi * x) ** 2


PRESETS = {
    "flat": _flat,
    "ramp up": _ramp_up,
    "ramp down": _ramp_down,
    "smoothstep": _smoothstep,
    "bell": _bell,
}


def _compact(param: Param, values: Sequence[float]) -> Any:
    cleaned = [clean_number(param, v) for v in values]
    return cleaned[0] if len(set(cleaned)) == 1 else cleaned


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lane_value(setting: Setting, tensor_name: str) -> Setting | None:
    """The first condition matching ``tensor_name``, as the engine resolves it."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(c, dict) for c in setting):
        for condition in setting:
            pattern = condition.get("filter")
            if pattern in (None, "*") or pattern in tensor_name:
                return _lane_value(condition.get("value"), tensor_name)
        return None
    return setting


# ---- the post-processing plug-in --------------------------------------------------------


def post_process_name(recipe: dict[str, Any]) -> str | None:
    post = recipe.get("post_process")
    return str(post["name"]) if isinstance(post, dict) and post.get("name") else None


def with_post_process(recipe: dict[str, Any], name: str | None) -> dict[str, Any]:
    """``recipe`` running plug-in ``name`` on the method's output (None: none), with the
    plug-in's parameters left at their declared defaults."""
    updated = copy.deepcopy(recipe)
    if name is None:
        updated.pop("post_process", None)
    elif post_process_name(recipe) != name:
        updated["post_process"] = {"name": name}
    return updated


def post_process_value(recipe: dict[str, Any], param: Param) -> bool | int | float | str | None:
    """The value the plug-in runs with: the recipe's, else the declared default."""
    post = recipe.get("post_process") or {}
    value = (post.get("parameters") or {}).get(param.name)
    return param.default if value is None else value


def set_post_param(recipe: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    updated = copy.deepcopy(recipe)
    post = updated.get("post_process")
    if not isinstance(post, dict):
        return updated
    post.setdefault("parameters", {})[name] = value
    return updated


# ---- output --------------------------------------------------------------------------------


def writes_adapter(recipe: dict[str, Any]) -> bool:
    output = recipe.get("output")
    return isinstance(output, dict) and output.get("format") == "adapter"


def adapter_rank(recipe: dict[str, Any]) -> int | None:
    output = recipe.get("output")
    rank = output.get("rank") if isinstance(output, dict) else None
    return int(rank) if isinstance(rank, int) else None


def with_adapter_output(recipe: dict[str, Any], adapter: bool, rank: int | None = None) -> dict[str, Any]:
    """A copy of ``recipe`` written as a LoRA adapter (``output: {format: adapter,
    rank}``; no rank: the inputs' ranks summed) or as a model (no ``output`` key)."""
    updated = copy.deepcopy(recipe)
    if adapter:
        updated["output"] = {"format": "adapter", **({"rank": rank} if rank else {})}
    else:
        updated.pop("output", None)
    return updated
