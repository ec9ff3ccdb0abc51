"""The studio's project model: the one source of truth for what the user is editing.

One ``StudioState`` per window. It holds the model list (with each model's Merge tick),
the base and the recipe, and keeps them consistent: the recipe's ``base_model`` is the
base shown on the Models page, and its ``models`` are the ticked models other than the
base. Pages read it and change it only through its commands (``add_model``,
``set_base``, ``set_recipe``, ...); each command records the whole consistent state
before and after on the undo stack, so undo and redo can never split the truth. The
recipe's verdict (``verdict()``) comes from the engine's own validation and planning,
the same checks a merge runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtGui import QUndoCommand, QUndoStack

from mergestudio_qt import recipe_edit

if TYPE_CHECKING:
    from mergestudio.io.sources import ModelSource
    from mergestudio.methods.registry import MethodSpec
    from mergestudio.preflight import PreflightReport

DEFAULT_METHOD = "task_arithmetic"
VERDICT_DELAY_MS = 120  # a slider drag plans once per pause, not once per pixel


@dataclass
class ModelEntry:
    """A model the user added, described from its headers (no tensor data read)."""

    reference: str  # as the recipe writes it: a path or org/name[@revision]
    name: str
    kind: str  # "folder", "file" or "hub"
    architecture: str | None
    layers: int
    parameters: int
    dtypes: dict[str, int]
    disk_bytes: int
    revision: str | None = None
    source: ModelSource | None = field(default=None, repr=False)  # closed; headers only
    include: bool = True  # a view of the project model's ticks; set only by StudioState
    description: str | None = None  # from the model card or the demo zoo's metadata
    adapter: str | None = None  # "adapter of BASE · r 8 · q_proj, v_proj" for a LoRA adapter

    @property
    def dtype_text(self) -> str:
        from mergestudio.io.dtypes import torch_dtype_name

        codes = sorted(self.dtypes, key=lambda c: -self.dtypes[c])
        return ", ".join(torch_dtype_name(code) for code in codes)

    @property
    def source_text(self) -> str:
        """Where the model comes from: the Hub id and revision, or the local path."""
        if self.kind == "hub":
            repo = self.reference.partition("@")[0]
            return f"Hub: {repo} @ {self.revision[:10]}" if self.revision else f"Hub: {repo}"
        return self.reference

    @property
    def kind_text(self) -> str:
        return {"hub": "Hugging Face Hub", "file": "local file", "folder": "local folder"}.get(self.kind, self.kind)


@dataclass
class MergeSettings:
    out_dir: str = ""
    out_dtype: str = "bfloat16"  # "" keeps each tensor's input dtype
    device: str = "auto"
    shard_mb: int = 2000
    overwrite: bool = False  # replacing a folder is asked each time unless ticked
    max_memory: int | None = None  # bytes the merge may use (``merge(max_memory=)``); None: no cap

    def changed_fields(self, other: MergeSettings) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name))


# How an undo step names a change of each merge setting.
MERGE_SETTING_NAMES = {"out_dir": "output folder", "out_dtype": "output dtype", "device": "device",
                       "shard_mb": "shard size", "overwrite": "replace folder", "max_memory": "memory cap"}


@dataclass(frozen=True)
class EvolveSettings:
    """The Evolve page's settings kept in the project (a search's own settings are its spec)."""

    workers: int = 1  # local worker processes a search started from the window runs


@dataclass(frozen=True)
class ProjectSnapshot:
    """What one undo step restores. Consistent by construction (``_consistent``): the
    recipe merges exactly the ticked models onto exactly this base."""

    entries: tuple[ModelEntry, ...]
    included: frozenset[str]
    base: str | None
    recipe: dict[str, Any]  # never mutated once in a snapshot
    # A multi-stage recipe: every stage's recipe in document order, ``stages[current]``
    # being ``recipe`` (the stage the pages edit). Empty for a one-stage recipe.
    stages: tuple[dict[str, Any], ...] = ()
    current: int = 0

    @property
    def references(self) -> list[str]:
        return [e.reference for e in self.entries]

    def same_models(self, other: ProjectSnapshot) -> bool:
        return self.references == other.references and self.included == other.included

    def other_stage_names(self) -> list[str]:
        """Names the edited stage may use as models: every other stage's."""
        return [stage_name(s, i, len(self.stages)) for i, s in enumerate(self.stages) if i != self.current]


@dataclass(frozen=True)
class RecipeVerdict:
    """The engine's opinion of the recipe: validated and planned against the models'
    headers, as a dry run or a merge would. ``message`` names the key when not ok."""

    ok: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


def describe_source(source: ModelSource, reference: str, kind: str) -> ModelEntry:
    """A ``ModelEntry`` from an open source (closes its memory maps: headers stay)."""
    from mergestudio.io.adapters import AdapterSource, adapter_summary

    disk = sum(path.stat().st_size for path in source.files if path.exists())
    if isinstance(source, AdapterSource) and source.adapter is not None:
        disk = source.adapter.file.stat().st_size  # the adapter's own file, not its base's
    entry = ModelEntry(
        reference=reference,
        name=display_name(reference),
        kind=kind,
        architecture=source.architecture,
        layers=source.num_layers,
        parameters=source.parameter_count,
        dtypes=source.dtypes,
        disk_bytes=disk,
        revision=source.revision,
        source=source,
        description=_description(source),
        adapter=adapter_summary(source),
    )
    source.close()
    return entry


def _description(source: ModelSource) -> str | None:
    from mergestudio_qt.demo import model_description

    return model_description(Path(source.root))


def display_name(reference: str) -> str:
    """A short name: a folder's or file's own name, or a Hub id's repo name."""
    path = Path(reference)
    if path.suffix == ".safetensors":
        return path.parent.name + "/" + path.name if path.name == "model.safetensors" else path.stem
    return path.name or reference


def stage_name(recipe: dict[str, Any], index: int, count: int) -> str:
    """A stage's name as the engine knows it: its ``name``, else "final" for the last."""
    from mergestudio.recipe.multi import FINAL_NAME

    return str(recipe.get("name") or (FINAL_NAME if index == count - 1 else f"stage {index + 1}"))


def check_stages(stages: Sequence[dict[str, Any]], sources: dict[str, ModelSource]) -> RecipeVerdict:
    """Check a multi-stage recipe as the engine's dry run does: the graph (cycles, names),
    then every stage planned against the models' headers and the earlier stages' plans."""
    import yaml
    from mergestudio.engine.graph import close_stages, plan_stages
    from mergestudio.errors import MergeStudioError
    from mergestudio.recipe.multi import parse_multi

    try:
        staged = plan_stages(parse_multi(yaml.safe_dump_all(list(stages), sort_keys=False)), sources=sources)
    except MergeStudioError as error:
        return RecipeVerdict(False, str(error))
    warnings = tuple(f"stage {item.stage.name!r}: {w}" for item in staged for w in item.plan.warnings)
    close_stages(staged)
    return RecipeVerdict(True, "", warnings)


def check_recipe(recipe: dict[str, Any], sources: dict[str, ModelSource]) -> RecipeVerdict:
    """Validate and plan ``recipe`` with the engine (headers only, no tensor read): the
    checks ``merge`` runs before it writes anything."""
    from mergestudio.engine.plan import build_plan
    from mergestudio.errors import MergeStudioError
    from mergestudio.recipe import Recipe

    try:
        plan = build_plan(Recipe.from_dict(recipe), sources=sources)
    except MergeStudioError as error:
        return RecipeVerdict(False, str(error))
    warnings = tuple(plan.warnings)
    opened_here = set(plan.sources) - set(sources)
    for reference in opened_here:
        plan.sources[reference].close()
    return RecipeVerdict(True, "", warnings)


def _consistent(entries: Sequence[ModelEntry], included: Iterable[str], base: str | None,
                recipe: dict[str, Any], stages: Sequence[dict[str, Any]] = (),
                current: int = 0) -> ProjectSnapshot:
    """A snapshot whose recipe says what the model list says: ``base_model`` is the base,
    ``models`` the ticked models besides it (each keeping its parameters). In a
    multi-stage recipe the other stages' names count as models too."""
    names = [stage_name(s, i, len(stages)) for i, s in enumerate(stages) if i != current]
    references = [e.reference for e in entries] + [n for n in names if n not in {e.reference for e in entries}]
    base = base if base in references else None
    ticked = frozenset(r for r in included if r in references)
    if not recipe.get("slices"):
        merged = [r for r in references if r in ticked and r != base]
        recipe = recipe_edit.with_models(recipe, base, merged, method_of(recipe))
    recipe = copy.deepcopy(recipe)
    all_stages = tuple(copy.deepcopy(recipe) if i == current else copy.deepcopy(s) for i, s in enumerate(stages))
    return ProjectSnapshot(tuple(entries), ticked, base, recipe, all_stages, current if all_stages else 0)


def method_of(recipe: dict[str, Any]) -> MethodSpec:
    from mergestudio.errors import RecipeError
    from mergestudio.methods import get_method

    try:
        return get_method(str(recipe.get("merge_method", DEFAULT_METHOD)))
    except RecipeError:
        return get_method(DEFAULT_METHOD)


class _ProjectChange(QUndoCommand):
    """One command on the project model: the whole snapshot before and after.
    Consecutive changes with the same ``merge_key`` (one slider drag) are one step."""

    def __init__(self, state: StudioState, old: ProjectSnapshot, new: ProjectSnapshot, text: str,
                 merge_key: str | None) -> None:
        super().__init__(text)
        self._state = state
        self.old = old
        self.new = new
        self.merge_key = merge_key
        self._first = True

    def id(self) -> int:
        return 1 if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, _ProjectChange) or other.merge_key != self.merge_key:
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        if self._first:  # the change is already applied when pushed
            self._first = False
            return
        self._state._apply(self.new, "undo")

    def undo(self) -> None:
        self._state._apply(self.old, "undo")


class _EvolveSettingsChange(QUndoCommand):
    """One undo step for the Evolve settings; consecutive changes (a spin box's arrows
    held down) are one step."""

    def __init__(self, state: StudioState, old: EvolveSettings, new: EvolveSettings, text: str) -> None:
        super().__init__(text)
        self._state, self.old, self.new = state, old, new

    def id(self) -> int:
        return 2

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, _EvolveSettingsChange):
            return False
        self.new = other.new
        self.setText(other.text())
        return True

    def redo(self) -> None:
        self._state._apply_evolve(self.new)

    def undo(self) -> None:
        self._state._apply_evolve(self.old)


class _MergeSettingsChange(QUndoCommand):
    """One undo step for the Merge page's settings (the whole ``MergeSettings`` before and
    after); consecutive changes of the same setting (a spin box's arrows) are one step."""

    def __init__(self, state: StudioState, old: MergeSettings, new: MergeSettings) -> None:
        self.changed = new.changed_fields(old)
        super().__init__("merge settings: " + ", ".join(MERGE_SETTING_NAMES.get(n, n) for n in self.changed))
        self._state, self.old, self.new = state, old, new

    def id(self) -> int:
        return 3

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, _MergeSettingsChange) or other.changed != self.changed:
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        self._state._apply_merge(self.new)

    def undo(self) -> None:
        self._state._apply_merge(self.old)


class StudioState(QObject):
    models_changed = Signal()
    base_changed = Signal(object)  # str | None
    recipe_changed = Signal(str)  # who changed it: "widgets", "yaml", "curve", "models", "undo", "load"
    verdict_changed = Signal(object)  # RecipeVerdict
    recipe_refused = Signal(str)  # why set_recipe did not apply a recipe
    stages_changed = Signal()  # a stage added, removed, renamed or chosen for editing
    merge_settings_changed = Signal()
    evolve_settings_changed = Signal()
    preflight_changed = Signal()
    specialists_changed = Signal()
    project_changed = Signal(object)  # Path | None
    dirty_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._snapshot = _consistent([], (), None, {"merge_method": DEFAULT_METHOD})
        self.models: list[ModelEntry] = []
        self.base: str | None = None
        self.recipe: dict[str, Any] = copy.deepcopy(self._snapshot.recipe)
        self.merge = MergeSettings()
        self.evolve = EvolveSettings()
        self.eval_tasks: list[str] = []
        self.specialists: dict[str, str] = {}  # task name -> model reference (pinned)
        self.project_path: Path | None = None
        self.preflight: PreflightReport | None = None
        self.undo_stack = QUndoStack(self)
        self._dirty = False
        self._verdict: RecipeVerdict | None = None
        self._verdict_timer = QTimer(self)
        self._verdict_timer.setSingleShot(True)
        self._verdict_timer.setInterval(VERDICT_DELAY_MS)
        self._verdict_timer.timeout.connect(self._announce_verdict)
        self.undo_stack.indexChanged.connect(self._undo_index_changed)

    @Slot(int)
    def _undo_index_changed(self, _index: int) -> None:
        # A bound slot, not a lambda: Qt disconnects it when the state is destroyed.
        self.set_dirty(True)

    # ---- reading -------------------------------------------------------------------------

    def snapshot(self) -> ProjectSnapshot:
        return self._snapshot

    def model(self, reference: str) -> ModelEntry | None:
        return next((m for m in self.models if m.reference == reference), None)

    def merged_references(self) -> list[str]:
        """The models merged onto the base: every ticked model except the base."""
        return [m.reference for m in self.models if m.include and m.reference != self.base]

    def method(self) -> MethodSpec:
        return method_of(self.recipe)

    def verdict(self) -> RecipeVerdict:
        """The engine's verdict on the current recipe, or on the whole graph of a
        multi-stage one (computed now if stale)."""
        if self._verdict is None:
            sources = {m.reference: m.source for m in self.models if m.source is not None}
            stages = self._snapshot.stages
            self._verdict = check_stages(stages, sources) if stages else check_recipe(self.recipe, sources)
        return self._verdict

    # ---- stages of a multi-stage recipe --------------------------------------------------

    def stages(self) -> list[dict[str, Any]]:
        """Every stage's recipe in document order; empty for a one-stage recipe."""
        return [copy.deepcopy(s) for s in self._snapshot.stages]

    @property
    def current_stage(self) -> int:
        return self._snapshot.current

    def stage_names(self) -> list[str]:
        stages = self._snapshot.stages
        return [stage_name(s, i, len(stages)) for i, s in enumerate(stages)]

    def document(self) -> dict[str, Any] | list[dict[str, Any]]:
        """What a merge runs: the recipe, or the list of stages of a multi-stage one."""
        return self.stages() if self._snapshot.stages else copy.deepcopy(self.recipe)

    def select_stage(self, index: int) -> None:
        """Edit stage ``index``: the pages show its method, parameters and models. Not an
        undo step (nothing changes); undoing an edit returns to the stage it was made in."""
        current = self._snapshot
        if not current.stages or index == current.current or not 0 <= index < len(current.stages):
            return
        self._apply(self._stage_snapshot(current, list(current.stages), index), "stage")

    def add_stage(self) -> None:
        """A new final stage that takes the current final stage's output as its first
        model (with the same method and base); the old final stage gets a name."""
        current = self._snapshot
        stages = [copy.deepcopy(s) for s in current.stages] or [copy.deepcopy(self.recipe)]
        last = stages[-1]
        if not last.get("name"):
            taken = set(self.stage_names())
            last["name"] = next(f"stage{n}" for n in range(len(stages), len(stages) + 100) if f"stage{n}" not in taken)
        base = last.get("base_model") if last.get("base_model") in current.references else None
        method = method_of(last)
        stages.append(recipe_edit.with_models({"merge_method": method.name}, base, [str(last["name"])], method))
        self._commit_stages(stages, len(stages) - 1, f"add stage after {last['name']}")

    def remove_stage(self, index: int) -> str | None:
        """Remove stage ``index``; refused (returns why) while another stage reads it."""
        current = self._snapshot
        stages = [copy.deepcopy(s) for s in current.stages]
        if not 0 <= index < len(stages):
            return None
        name = self.stage_names()[index]
        readers = [self.stage_names()[i] for i, s in enumerate(stages) if name in _stage_inputs(s)]
        if readers:
            reason = f"stage {name!r} feeds {', '.join(readers)}: change that stage's models first"
            self.recipe_refused.emit(reason)
            return reason
        del stages[index]
        if len(stages) == 1:
            stages[0].pop("name", None)
        self._commit_stages(stages, min(current.current, len(stages) - 1), f"remove stage {name}")
        return None

    def _commit_stages(self, stages: list[dict[str, Any]], index: int, text: str) -> None:
        old = self._snapshot
        new = self._stage_snapshot(old, stages, index)
        if len(stages) == 1:  # one stage left: a plain recipe again
            new = _consistent(new.entries, new.included, new.base, new.recipe)
        self._apply(new, "stage")
        self.undo_stack.push(_ProjectChange(self, old, new, text, None))

    @staticmethod
    def _stage_snapshot(current: ProjectSnapshot, stages: list[dict[str, Any]], index: int) -> ProjectSnapshot:
        recipe = stages[index]
        base = recipe.get("base_model")
        included = set(_stage_inputs(recipe)) | ({base} if base else set())
        return _consistent(current.entries, included, base, recipe, stages, index)

    def verdict_pending(self) -> bool:
        """Whether the verdict is stale (it is announced after a short pause)."""
        return self._verdict is None

    @Slot()
    def _announce_verdict(self) -> None:
        self.verdict_changed.emit(self.verdict())

    # ---- commands on the models ------------------------------------------------------------

    def add_model(self, entry: ModelEntry) -> None:
        if self.model(entry.reference) is not None:
            return
        current = self._snapshot
        base = current.base if current.entries else entry.reference  # the first model is the base
        included = current.included | {entry.reference} if entry.include else current.included
        self._commit([*current.entries, entry], included, base, current.recipe, f"add {entry.name}")

    def remove_model(self, reference: str) -> None:
        current = self._snapshot
        entries = [e for e in current.entries if e.reference != reference]
        base = current.base
        if base == reference:
            base = entries[0].reference if entries else None
        entry = self.model(reference)
        self._commit(entries, current.included, base, current.recipe,
                     f"remove {entry.name if entry else reference}")

    def set_base(self, reference: str | None) -> None:
        """Choose the base (None: no base, for methods that average the models)."""
        current = self._snapshot
        if reference == current.base:
            return
        entry = self.model(reference) if reference else None
        included = current.included | {reference} if reference else current.included
        self._commit(current.entries, included, reference, current.recipe,
                     f"base {entry.name if entry else '(none)'}")

    def set_included(self, reference: str, include: bool) -> None:
        current = self._snapshot
        included = current.included | {reference} if include else current.included - {reference}
        entry = self.model(reference)
        name = entry.name if entry else reference
        self._commit(current.entries, included, current.base, current.recipe,
                     f"{'tick' if include else 'untick'} {name}")

    # ---- commands on the recipe ------------------------------------------------------------

    def set_method(self, name: str) -> None:
        from mergestudio.methods import get_method

        self.set_recipe(recipe_edit.with_method(self.recipe, get_method(name)), "widgets", f"method {name}")

    def set_recipe(self, recipe: dict[str, Any], origin: str, text: str = "edit recipe",
                   merge_key: str | None = None) -> str | None:
        """Apply ``recipe`` (from the widgets, the YAML pane, a trial or a file). Its
        ``base_model`` and ``models`` become the base and the ticks. Returns None, or why
        the recipe was refused (it names a model that is not on the Models page)."""
        current = self._snapshot
        mapped, unknown = self._known_references(recipe)
        if unknown:
            reason = (f"{unknown[0]} is not on the Models page: add it there first "
                      "(or use File → Import mergekit YAML, which adds the recipe's models)")
            self.recipe_refused.emit(reason)
            return reason
        if mapped.get("slices"):
            base = mapped.get("base_model") or current.base
            included = current.included
        else:
            base = mapped.get("base_model")
            # The base counts as ticked (the Models page shows it so): choosing "(none)"
            # later merges it like the other ticked models.
            included = frozenset(m["model"] for m in mapped.get("models") or []) | ({base} if base else set())
        self._commit(current.entries, included, base, mapped, text, merge_key, origin)
        return None

    def _stage_reference(self, reference: str) -> bool:
        return reference in self._snapshot.other_stage_names()

    def _known_references(self, recipe: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``recipe`` with each model reference spelled as on the Models page (a relative
        path that names a listed folder becomes its listed spelling), and the references
        that name no listed model."""
        by_path: dict[str, str] = {}
        for entry in self.models:
            by_path[entry.reference] = entry.reference
            if entry.kind != "hub":
                by_path[str(Path(entry.reference).expanduser().resolve())] = entry.reference
        unknown: list[str] = []

        def known(reference: str) -> str:
            if self._stage_reference(reference):
                return reference
            found = by_path.get(reference)
            if found is None and not Path(reference).is_absolute():
                found = by_path.get(str(Path(reference).expanduser().resolve()))
            if found is None:
                unknown.append(reference)
                return reference
            return found

        mapped = copy.deepcopy(recipe)
        if mapped.get("base_model"):
            mapped["base_model"] = known(str(mapped["base_model"]))
        for model in mapped.get("models") or []:
            model["model"] = known(str(model["model"]))
        for output_slice in mapped.get("slices") or []:
            if output_slice.get("base_model"):
                output_slice["base_model"] = known(str(output_slice["base_model"]))
            for source in output_slice.get("sources") or []:
                source["model"] = known(str(source["model"]))
        return mapped, unknown

    # ---- applying ---------------------------------------------------------------------------

    def _commit(self, entries: Sequence[ModelEntry], included: Iterable[str], base: str | None,
                recipe: dict[str, Any], text: str, merge_key: str | None = None,
                origin: str = "models") -> None:
        old = self._snapshot
        new = _consistent(entries, included, base, recipe, old.stages, old.current)
        if new.same_models(old) and new.base == old.base and new.recipe == old.recipe:
            if origin == "yaml":  # the text may differ from the recipe it means: show it
                self.recipe_changed.emit("normalized")
            return
        self._apply(new, origin)
        self.undo_stack.push(_ProjectChange(self, old, new, text, merge_key))

    def _apply(self, new: ProjectSnapshot, origin: str) -> None:
        """Make ``new`` the current state and tell every page what changed."""
        old = self._snapshot
        self._snapshot = new
        self.models = list(new.entries)
        for entry in self.models:
            entry.include = entry.reference in new.included or entry.reference == new.base
        self.base = new.base
        self.recipe = copy.deepcopy(new.recipe)
        models_changed = not new.same_models(old)
        base_changed = new.base != old.base
        tokenizer_changed = _tokenizer_choice(new.recipe) != _tokenizer_choice(old.recipe)
        if models_changed or base_changed or tokenizer_changed:
            self.update_preflight()
        self._verdict = None
        self._verdict_timer.start()
        if base_changed:
            self.base_changed.emit(new.base)
        if models_changed or base_changed:
            self.models_changed.emit()
        if new.recipe != old.recipe or origin in ("load", "undo", "stage"):
            self.recipe_changed.emit(origin)
        if (self.stage_names(), new.current) != ([stage_name(s, i, len(old.stages)) for i, s in enumerate(old.stages)],
                                                 old.current) or origin == "load":
            self.stages_changed.emit()

    def update_preflight(self) -> None:
        from mergestudio.preflight import preflight

        base = self.model(self.base) if self.base else None
        sources = [m.source for m in self.models if m.source is not None and m.reference != self.base]
        if base is None or base.source is None:
            self.preflight = None
        else:
            self.preflight = preflight(base.source, sources, _tokenizer_choice(self.recipe))
        self.preflight_changed.emit()

    # ---- merge settings and project ----------------------------------------------------------

    def set_merge_settings(self, settings: MergeSettings) -> None:
        """Change the Merge page's settings (one undo step)."""
        if settings != self.merge:
            self.undo_stack.push(_MergeSettingsChange(self, self.merge, replace(settings)))

    def _apply_merge(self, settings: MergeSettings) -> None:
        self.merge = replace(settings)  # a copy: the page's instance is never shared
        self.merge_settings_changed.emit()

    def set_search_workers(self, count: int) -> None:
        """How many local worker processes the Evolve page's Start and Resume run (undoable)."""
        if count != self.evolve.workers:
            new = replace(self.evolve, workers=count)
            self.undo_stack.push(_EvolveSettingsChange(self, self.evolve, new, f"search workers: {count}"))

    def _apply_evolve(self, settings: EvolveSettings) -> None:
        self.evolve = settings
        self.evolve_settings_changed.emit()

    def set_eval_tasks(self, tasks: list[str]) -> None:
        if tasks != self.eval_tasks:
            self.eval_tasks = list(tasks)
            self.set_dirty(True)

    def set_specialist(self, task: str, reference: str | None) -> None:
        """Pin ``reference`` as the specialist of ``task`` (None: the best-scoring parent)."""
        pins = dict(self.specialists)
        if reference is None:
            pins.pop(task, None)
        else:
            pins[task] = reference
        if pins != self.specialists:
            self.specialists = pins
            self.specialists_changed.emit()
            self.set_dirty(True)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def set_dirty(self, dirty: bool) -> None:
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)

    def set_project_path(self, path: Path | None) -> None:
        self.project_path = path
        self.project_changed.emit(path)

    def clear(self) -> None:
        """An empty project: no models, the default method, default merge settings."""
        self.load([], None, {"merge_method": DEFAULT_METHOD}, MergeSettings(), [], None)

    def load(self, models: list[ModelEntry], base: str | None, recipe: dict[str, Any],
             merge: MergeSettings, eval_tasks: list[str], path: Path | None,
             specialists: dict[str, str] | None = None,
             stages: Sequence[dict[str, Any]] = (), current_stage: int = 0,
             evolve: EvolveSettings | None = None) -> None:
        """Replace everything at once (opening a project, the demo, an imported recipe).
        The project's base and ticks win over a recipe that disagrees with them. With
        ``stages`` (a multi-stage recipe), ``recipe`` is ``stages[current_stage]``."""
        included = [m.reference for m in models if m.include]
        self.merge = merge
        self.evolve = evolve or EvolveSettings()
        self.eval_tasks = list(eval_tasks)
        self.specialists = dict(specialists or {})
        if len(stages) > 1:
            current_stage = min(max(current_stage, 0), len(stages) - 1)
            recipe = stages[current_stage]
            base = recipe.get("base_model")
            included = [*_stage_inputs(recipe), *([base] if base else [])]
        else:
            stages = ()
        self._apply(_consistent(models, included, base, recipe, stages, current_stage), "load")
        self.undo_stack.clear()
        self.base_changed.emit(self.base)
        self.models_changed.emit()
        self.merge_settings_changed.emit()
        self.evolve_settings_changed.emit()
        self.specialists_changed.emit()
        self.set_project_path(path)
        self.set_dirty(False)


def _stage_inputs(recipe: dict[str, Any]) -> list[str]:
    return [str(m.get("model")) for m in recipe.get("models") or []]


def _tokenizer_choice(recipe: object) -> str | None:
    """The recipe's tokenizer source (``tokenizer.source`` or ``tokenizer_source``)."""
    if not isinstance(recipe, dict):
        return None
    block = recipe.get("tokenizer")
    if isinstance(block, dict):
        return str(block.get("source", "union"))
    choice = recipe.get("tokenizer_source")
    return choice if isinstance(choice, str) else None
