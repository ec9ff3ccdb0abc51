"""The Evolve page's setup form: a search spec built from the studio's models and recipe
(or a spec file), its objectives, genome, algorithm, budget, estimator and run folder.
The form only collects values; the engine validates the spec and names the bad key."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from mergestudio.methods.registry import MethodSpec
from mergestudio.search.spec import KNOWN_METRICS, SearchSpec, objective_files, spec_from_dict
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.widgets.elide import ElidingComboBox
from mergestudio_qt.widgets.folder_row import folder_row

ALGORITHMS = (
    ("nsga2", "NSGA-II — keeps the trade-offs (Pareto front)"),
    ("tpe", "TPE — Bayesian, many or one objective"),
    ("random", "Random — the baseline search"),
    ("cmaes", "CMA-ES — one weighted score"),
)
LANE_CHOICES = (
    ("all tensors alike", None),
    ("attention, MLP, other", ["attention", "mlp", "other"]),
    ("attention, MLP", ["attention", "mlp"]),
)
HEADLINE = "headline"  # the task kind's own metric (the engine's default)
AUTO = "auto"


def max_workers() -> int:
    """The most local workers worth starting: one per CPU core."""
    return os.cpu_count() or 1


class SetupPanel(QScrollArea):
    """``changed`` fires on every edit, so the page can re-check the spec."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.studio_recipe: dict[str, Any] = {}
        self.spec_recipe: dict[str, Any] | None = None  # a loaded spec's recipe, overriding the studio's
        self.spec_source = ""
        self.spec_folder: Path | None = None  # where "Load spec…" opens (the demo folder on the demo)
        self.method: MethodSpec | None = None
        # Lane sets a gene can evolve: the fixed ones, plus every lane of the recipe's
        # model family (SD UNets: self-attention, cross-attention, feed-forward, other).
        self.lane_choices: list[tuple[str, list[str] | None]] = list(LANE_CHOICES)
        self._family_lanes: dict[str, list[str]] = {}  # model reference → its lane names
        body = QWidget(self)
        grid = QGridLayout(body)
        grid.setContentsMargins(4, 8, 12, 8)
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(10)
        grid.addWidget(self._build_recipe(), 0, 0)
        grid.addWidget(self._build_objectives(), 1, 0)
        grid.addWidget(self._build_genome(), 2, 0)
        right = QVBoxLayout()
        right.setSpacing(10)
        right.addWidget(self._build_algorithm())
        right.addWidget(self._build_fitness())
        right.addWidget(self._build_run())
        right.addStretch(1)
        grid.addLayout(right, 0, 1, 3, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        grid.setRowStretch(1, 1)
        grid.setRowStretch(2, 1)
        self.setWidget(body)

    # ---- building ----------------------------------------------------------------------

    def _build_recipe(self) -> QGroupBox:
        box = QGroupBox("Models and recipe", self)
        layout = QVBoxLayout(box)
        self.recipe_label = QLabel(box)
        self.recipe_label.setWordWrap(True)
        row = QHBoxLayout()
        self.load_spec_button = QPushButton("Load spec…", box)
        self.load_spec_button.setToolTip("Fill the form from a search spec YAML (e.g. resources/demo/search.yml)")
        self.load_spec_button.clicked.connect(self._choose_spec)
        self.save_spec_button = QPushButton("Save spec…", box)
        self.save_spec_button.setToolTip("Write this search as a spec file for `mergestudio evolve`")
        self.save_spec_button.clicked.connect(self._save_spec)
        self.studio_button = QPushButton("Use the Recipe page's recipe", box)
        self.studio_button.setToolTip("Search over the studio's current models and recipe instead of the spec's")
        self.studio_button.clicked.connect(self.use_studio_recipe)
        # The third button shows while a spec's recipe is in use: on a line of its own, so
        # the column does not widen into a horizontal scroll bar at 1024 px.
        row.addWidget(self.load_spec_button)
        row.addWidget(self.save_spec_button)
        row.addStretch(1)
        studio_row = QHBoxLayout()
        studio_row.addWidget(self.studio_button)
        studio_row.addStretch(1)
        layout.addWidget(self.recipe_label)
        layout.addLayout(row)
        layout.addLayout(studio_row)
        return box

    def _build_objectives(self) -> QGroupBox:
        box = QGroupBox("Objectives", self)
        layout = QVBoxLayout(box)
        self.objectives = QTableWidget(0, 3, box)
        self.objectives.setHorizontalHeaderLabels(["Task file", "Metric", "Direction"])
        self._table_style(self.objectives)
        self.objectives.setToolTip("Each objective is one metric on one task file (JSONL)")
        row = QHBoxLayout()
        add = QPushButton("Add task files…", box)
        add.clicked.connect(self._choose_tasks)
        remove = QPushButton("Remove", box)
        remove.clicked.connect(lambda: self.remove_selected(self.objectives))
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addWidget(self.objectives, 1)
        layout.addLayout(row)
        return box

    def _build_genome(self) -> QGroupBox:
        box = QGroupBox("Genome — what evolves", self)
        layout = QVBoxLayout(box)
        self.genome = QTableWidget(0, 5, box)
        self.genome.setHorizontalHeaderLabels(["Parameter", "Low", "High", "Layer groups", "Module lanes"])
        self._table_style(self.genome, stretch=4)
        self.genome.setToolTip(
            "Each row evolves one recipe parameter per model: layer groups spread values over the depth; "
            "lanes give attention, MLP and other tensors their own values"
        )
        row = QHBoxLayout()
        add = QPushButton("Add parameter", box)
        add.clicked.connect(lambda: self.add_gene())
        remove = QPushButton("Remove", box)
        remove.clicked.connect(lambda: self.remove_selected(self.genome))
        self.genome_note = QLabel(box)
        self.genome_note.setObjectName("hint")
        row.addWidget(add)
        row.addWidget(remove)
        row.addWidget(self.genome_note, 1)
        layout.addWidget(self.genome, 1)
        layout.addLayout(row)
        return box

    def _build_algorithm(self) -> QGroupBox:
        box = QGroupBox("Algorithm and budget", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        # Elides its long descriptions ("NSGA-II — keeps the trade-offs…") rather than
        # widening the form past a 1024-px window.
        self.algorithm = ElidingComboBox(box, shortest=14)
        for name, text in ALGORITHMS:
            self.algorithm.addItem(text, name)
        self.algorithm.currentIndexChanged.connect(self._algorithm_chosen)
        self.score = QCheckBox("Combine the objectives into one weighted score", box)
        self.score.setToolTip("CMA-ES optimises one number: the weighted sum of the objectives")
        self.population = self._spin(box, 2, 10_000, 8, "Trials per generation")
        self.seed = self._spin(box, 0, 2**31 - 1, 0, "Same spec and seed: same candidates and scores")
        self.evaluations = self._spin(box, 0, 1_000_000, 48, "Stop after this many complete trials (0: no limit)")
        self.evaluations.setSpecialValueText("no limit")
        self.wall_minutes = QDoubleSpinBox(box)
        self.wall_minutes.setRange(0.0, 100_000.0)
        self.wall_minutes.setDecimals(1)
        self.wall_minutes.setSuffix(" min")
        self.wall_minutes.setSpecialValueText("no limit")
        self.wall_minutes.setToolTip("Stop after this much search time (paused time does not count)")
        self.wall_minutes.valueChanged.connect(self.changed)
        form.addRow("Algorithm", self.algorithm)
        form.addRow("", self.score)
        form.addRow("Population", self.population)
        form.addRow("Seed", self.seed)
        form.addRow("Evaluations", self.evaluations)
        form.addRow("Wall time", self.wall_minutes)
        self.score.toggled.connect(self.changed)
        return box

    def _build_fitness(self) -> QGroupBox:
        box = QGroupBox("Fitness estimator and evaluation", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        self.estimator = QComboBox(box)
        self.estimator.addItem("full task sets", "full")
        self.estimator.addItem("fixed random subset", "subset")
        self.estimator.addItem("IRT anchors (calibrated on the baselines)", "irt")
        self.estimator.setToolTip(
            "A subset is cheaper; every candidate sees the same items. IRT scores each candidate on "
            "a few anchor items per task and estimates the whole task from them, calibrated on the "
            "parents' and default merges' answers to every item"
        )
        self.estimator.currentIndexChanged.connect(self._estimator_chosen)
        self.items = self._spin(box, 1, 1_000_000, 50, "Items per task in the subset")
        self.subset_seed = self._spin(box, 0, 2**31 - 1, 0, "Which items the subset keeps")
        self.batch = self._spin(box, 1, 4096, 32, "Items per forward pass")
        self.threads = self._spin(box, 1, 256, 1, "torch threads: fixed, so scores repeat exactly")
        self.device = QComboBox(box)
        self.device.addItems(["cpu", "cuda", "mps"])
        self.device.setToolTip("Where candidates are merged and evaluated")
        self.device.currentIndexChanged.connect(self.changed)
        form.addRow("Estimator", self.estimator)
        form.addRow("Items per task", self.items)
        form.addRow("Subset seed", self.subset_seed)
        form.addRow("Batch size", self.batch)
        form.addRow("Threads", self.threads)
        form.addRow("Device", self.device)
        self._estimator_chosen(0)
        return box

    def _build_run(self) -> QGroupBox:
        box = QGroupBox("Run", self)
        layout = QVBoxLayout(box)
        row, self.run_edit = folder_row(
            box,
            "a new, empty folder",
            "The run's store: spec, Optuna study, per-trial results, baselines, exports",
            self._browse_run,
        )
        self.run_edit.textChanged.connect(self.changed)
        layout.addLayout(row)
        layout.addLayout(self._build_workers(box))
        self.check_label = QLabel(box)
        self.check_label.setWordWrap(True)
        self.check_label.setObjectName("hint")
        layout.addWidget(self.check_label)
        return box

    def _build_workers(self, box: QGroupBox) -> QHBoxLayout:
        """The number of local worker processes (the project keeps it: the page sets the
        box from the studio's state and the state from the box)."""
        row = QHBoxLayout()
        label = QLabel("Workers", box)
        self.workers = QSpinBox(box)
        self.workers.setRange(1, max_workers())
        self.workers.setToolTip(
            "Local worker processes that evaluate candidates at once, each with its own copy of "
            "the model and the Threads above (mergestudio evolve --workers N)"
        )
        label.setBuddy(self.workers)
        self.workers_note = QLabel(box)
        self.workers_note.setObjectName("hint")
        self.workers_note.setWordWrap(True)
        self.workers.valueChanged.connect(self._workers_chosen)
        row.addWidget(label)
        row.addWidget(self.workers)
        row.addWidget(self.workers_note, 1)
        self._workers_chosen(self.workers.value())
        return row

    def set_workers(self, count: int) -> None:
        """Show ``count`` (at most one per core) without reporting it back as an edit."""
        self.workers.blockSignals(True)
        self.workers.setValue(count)
        self.workers.blockSignals(False)
        self._workers_chosen(self.workers.value())

    def _workers_chosen(self, count: int) -> None:
        self.workers_note.setText(
            "one process: Pause holds it" if count == 1 else f"{count} processes: Stop ends them, Resume continues"
        )

    def _spin(self, parent: QWidget, low: int, high: int, value: int, tip: str) -> QSpinBox:
        spin = QSpinBox(parent)
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setToolTip(tip)
        spin.valueChanged.connect(self.changed)
        return spin

    @staticmethod
    def _table_style(table: QTableWidget, stretch: int = 0) -> None:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        table.setMinimumHeight(110)

    # ---- the recipe --------------------------------------------------------------------

    def set_studio_recipe(self, recipe: dict[str, Any]) -> None:
        self.studio_recipe = copy.deepcopy(recipe)
        if self.spec_recipe is None:
            self._recipe_in_use_changed()

    def use_studio_recipe(self) -> None:
        self.spec_recipe = None
        self.spec_source = ""
        self._recipe_in_use_changed()

    def recipe(self) -> dict[str, Any]:
        return copy.deepcopy(self.spec_recipe if self.spec_recipe is not None else self.studio_recipe)

    def _recipe_in_use_changed(self) -> None:
        from mergestudio.errors import RecipeError
        from mergestudio.methods.registry import get_method

        recipe = self.recipe()
        try:
            self.method = get_method(str(recipe.get("merge_method", "")))
        except RecipeError:
            self.method = None
        models = recipe.get("models") or []
        origin = f"from {self.spec_source}" if self.spec_recipe is not None else "from the Recipe page"
        if not models:
            self.recipe_label.setText(
                "No models yet: add a base and fine-tunes on the Models page, or load a spec."
            )
        else:
            base = recipe.get("base_model")
            onto = f" onto {_short(str(base))}" if base else ""
            names = ", ".join(_short(str(m.get("model"))) for m in models if m.get("model") != base)
            self.recipe_label.setText(f"<b>{recipe.get('merge_method')}</b> of {names}{onto} — {origin}")
        self.studio_button.setVisible(self.spec_recipe is not None)
        self._refresh_param_choices()
        self._refresh_lane_choices(recipe)
        if self.genome.rowCount() == 0:
            self.add_gene()
        self.changed.emit()

    def _lane_names(self, recipe: dict[str, Any]) -> list[str]:
        """The lanes of the recipe's reference model (read from its headers once)."""
        from mergestudio.errors import MergeStudioError
        from mergestudio.recipe.model import Recipe
        from mergestudio.search.genome import reference_lanes

        reference = recipe.get("base_model") or next((m.get("model") for m in recipe.get("models") or []), None)
        if not reference:
            return []
        if str(reference) not in self._family_lanes:
            try:
                lanes = reference_lanes(Recipe.from_dict(recipe))
            except MergeStudioError:
                return []
            self._family_lanes[str(reference)] = [lane.name for lane in lanes]
        return self._family_lanes[str(reference)]

    def _refresh_lane_choices(self, recipe: dict[str, Any]) -> None:
        names = self._lane_names(recipe)
        choices = list(LANE_CHOICES)
        if names and names != ["attention", "mlp", "other"]:
            if not {"attention", "mlp"} <= set(names):
                choices = choices[:1]  # the attention/MLP sets do not exist in this family
            choices.append((f"each lane: {', '.join(names)}", names))
        self.lane_choices = choices
        for row in range(self.genome.rowCount()):
            combo = self.genome.cellWidget(row, 4)
            if isinstance(combo, QComboBox):
                self._fill_lane_combo(combo, combo.currentData())

    def _fill_lane_combo(self, combo: QComboBox, lanes: list[str] | None) -> None:
        choices = list(self.lane_choices)
        if lanes is not None and all(value != lanes for _, value in choices):
            choices.append((", ".join(lanes), lanes))  # a loaded spec's own lane set
        combo.blockSignals(True)
        combo.clear()
        for text, value in choices:
            combo.addItem(text, value)
        combo.setCurrentIndex(next((i for i, (_, v) in enumerate(choices) if v == lanes), 0))
        combo.blockSignals(False)

    def _float_params(self) -> list[str]:
        if self.method is None:
            return []
        return [p.name for p in self.method.params if p.kind == "float"]

    def _refresh_param_choices(self) -> None:
        names = self._float_params()
        for row in range(self.genome.rowCount()):
            combo = self.genome.cellWidget(row, 0)
            if isinstance(combo, QComboBox):
                current = combo.currentText()
                combo.blockSignals(True)
                combo.clear()
                combo.addItems(names)
                combo.setCurrentText(current if current in names else (names[0] if names else ""))
                combo.blockSignals(False)
        self.genome_note.setText("" if names else "this method has no float parameter to evolve")

    # ---- objectives ----------------------------------------------------------------------

    def set_tasks(self, paths: list[str]) -> None:
        """Replace the objectives by these task files (headline metric, automatic direction)."""
        self.objectives.setRowCount(0)
        for path in paths:
            self.add_objective(path)
        self.changed.emit()

    def add_objective(self, task: str, metric: str | None = None, direction: str | None = None) -> None:
        row = self.objectives.rowCount()
        self.objectives.insertRow(row)
        item = QTableWidgetItem(Path(task).name)
        item.setData(Qt.ItemDataRole.UserRole, task)
        item.setToolTip(task)
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
        self.objectives.setItem(row, 0, item)
        metrics = QComboBox(self.objectives)
        metrics.addItems([HEADLINE, *sorted(KNOWN_METRICS)])
        metrics.setToolTip("headline: the task kind's own metric (exact match, accuracy or perplexity)")
        metrics.setCurrentText(metric or HEADLINE)
        metrics.currentIndexChanged.connect(self.changed)
        directions = QComboBox(self.objectives)
        directions.addItems([AUTO, "maximize", "minimize"])
        directions.setToolTip("auto: maximise accuracies, minimise perplexities")
        directions.setCurrentText(direction or AUTO)
        directions.currentIndexChanged.connect(self.changed)
        self.objectives.setCellWidget(row, 1, metrics)
        self.objectives.setCellWidget(row, 2, directions)

    def task_files(self) -> list[str]:
        return [str(self.objectives.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(self.objectives.rowCount())]

    def _choose_tasks(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Task files", "", "Task files (*.jsonl);;All files (*)")
        for path in paths:
            self.add_objective(path)
        if paths:
            self.changed.emit()

    # ---- genome --------------------------------------------------------------------------

    def add_gene(
        self,
        param: str | None = None,
        low: float | None = None,
        high: float | None = None,
        groups: int = 1,
        lanes: list[str] | None = None,
    ) -> None:
        names = self._float_params()
        param = param or (names[0] if names else "")
        declared = self.method.param(param) if self.method is not None and param else None
        default_low, default_high = declared.slider_range if declared is not None else (0.0, 1.0)
        if declared is not None and declared.low is not None:
            default_low = max(default_low, declared.low)
        default_low = max(default_low, 0.0) if param == "weight" else default_low  # negative weights rarely help
        row = self.genome.rowCount()
        self.genome.insertRow(row)
        combo = QComboBox(self.genome)
        combo.addItems(names)
        combo.setCurrentText(param)
        combo.currentIndexChanged.connect(self.changed)
        self.genome.setCellWidget(row, 0, combo)
        for column, value in ((1, default_low if low is None else low), (2, default_high if high is None else high)):
            spin = QDoubleSpinBox(self.genome)
            spin.setRange(-1000.0, 1000.0)
            spin.setDecimals(3)
            spin.setSingleStep(0.05)
            spin.setValue(value)
            spin.valueChanged.connect(self.changed)
            self.genome.setCellWidget(row, column, spin)
        spin_groups = QSpinBox(self.genome)
        spin_groups.setRange(1, 64)
        spin_groups.setValue(groups)
        spin_groups.setToolTip("Values spread over the depth and interpolated between (a gradient)")
        spin_groups.valueChanged.connect(self.changed)
        self.genome.setCellWidget(row, 3, spin_groups)
        lane_combo = QComboBox(self.genome)
        self._fill_lane_combo(lane_combo, lanes)
        lane_combo.currentIndexChanged.connect(self.changed)
        self.genome.setCellWidget(row, 4, lane_combo)
        self.changed.emit()

    def _genes(self) -> list[dict[str, Any]]:
        genes = []
        for row in range(self.genome.rowCount()):
            param = self.genome.cellWidget(row, 0)
            low, high = self.genome.cellWidget(row, 1), self.genome.cellWidget(row, 2)
            groups, lanes = self.genome.cellWidget(row, 3), self.genome.cellWidget(row, 4)
            assert isinstance(param, QComboBox) and isinstance(low, QDoubleSpinBox)
            assert isinstance(high, QDoubleSpinBox) and isinstance(groups, QSpinBox)
            assert isinstance(lanes, QComboBox)
            gene: dict[str, Any] = {"param": param.currentText(), "low": low.value(), "high": high.value()}
            if groups.value() > 1:
                gene["layer_groups"] = groups.value()
            if lanes.currentData() is not None:
                gene["lanes"] = list(lanes.currentData())
            genes.append(gene)
        return genes

    # ---- algorithm, estimator ------------------------------------------------------------------

    def _algorithm_chosen(self, _index: int) -> None:
        if self.algorithm.currentData() == "cmaes" and self.objectives.rowCount() > 1:
            self.score.setChecked(True)
        self.changed.emit()

    def _estimator_chosen(self, _index: int) -> None:
        chosen = self.estimator.currentData()
        subset = chosen in ("subset", "irt")  # items per task: the subset's, or IRT's anchors
        self.items.setEnabled(subset)
        self.items.setToolTip("Anchor items per task (IRT)" if chosen == "irt" else "Items per task in the subset")
        self.subset_seed.setEnabled(subset)
        self.changed.emit()

    # ---- the spec ------------------------------------------------------------------------

    def spec_dict(self) -> dict[str, Any]:
        objectives = []
        for row in range(self.objectives.rowCount()):
            # A test split with a dev split beside it: search on dev, report on test.
            entry: dict[str, Any] = objective_files(self.task_files()[row])
            metric, direction = self.objectives.cellWidget(row, 1), self.objectives.cellWidget(row, 2)
            assert isinstance(metric, QComboBox) and isinstance(direction, QComboBox)
            if metric.currentText() != HEADLINE:
                entry["metric"] = metric.currentText()
            if direction.currentText() != AUTO:
                entry["direction"] = direction.currentText()
            objectives.append(entry)
        budget: dict[str, Any] = {}
        if self.evaluations.value():
            budget["evaluations"] = self.evaluations.value()
        if self.wall_minutes.value():
            budget["wall_time_s"] = round(self.wall_minutes.value() * 60, 1)
        fitness: dict[str, Any] = {"estimator": self.estimator.currentData()}
        if fitness["estimator"] == "subset":
            fitness.update(items_per_task=self.items.value(), seed=self.subset_seed.value())
        elif fitness["estimator"] == "irt":
            fitness.update(anchors_per_task=self.items.value(), seed=self.subset_seed.value())
        data: dict[str, Any] = {
            "name": Path(self.run_edit.text().strip() or "search").name,
            "recipe": self.recipe(),
            "genome": self._genes(),
            "objectives": objectives,
            "algorithm": {
                "name": self.algorithm.currentData(),
                "population_size": self.population.value(),
                "seed": self.seed.value(),
            },
            "budget": budget,
            "fitness": fitness,
            "evaluation": {
                "batch_size": self.batch.value(),
                "device": self.device.currentText(),
                "threads": self.threads.value(),
            },
        }
        if self.score.isChecked():
            data["score"] = {"name": "score", "direction": "maximize"}
        return data

    def build_spec(self) -> SearchSpec:
        """The validated spec; raises SpecError naming the key that is wrong."""
        return spec_from_dict(self.spec_dict(), "Evolve setup")

    def run_dir(self) -> Path | None:
        text = self.run_edit.text().strip()
        return Path(text).expanduser() if text else None

    def load_spec(self, spec: SearchSpec, source: str) -> None:
        """Fill the form from ``spec`` (its recipe replaces the studio's until told)."""
        self.spec_recipe = spec.recipe if isinstance(spec.recipe, dict) else None
        self.spec_source = source
        self._recipe_in_use_changed()
        self.objectives.setRowCount(0)
        for objective in spec.objectives:
            self.add_objective(objective.task, objective.metric, objective.direction)
        self.genome.setRowCount(0)
        for gene in spec.genome:
            self.add_gene(gene.param, gene.low, gene.high, gene.layer_groups, list(gene.lanes) if gene.lanes else None)
        self.algorithm.setCurrentIndex(max(0, self.algorithm.findData(spec.algorithm.name)))
        self.population.setValue(spec.algorithm.population_size)
        self.seed.setValue(spec.algorithm.seed)
        self.score.setChecked(spec.score is not None)
        self.evaluations.setValue(spec.budget.evaluations or 0)
        self.wall_minutes.setValue((spec.budget.wall_time_s or 0.0) / 60)
        self.estimator.setCurrentIndex(max(0, self.estimator.findData(spec.fitness.estimator)))
        self.items.setValue(spec.fitness.items_per_task or spec.fitness.anchors_per_task or self.items.value())
        self.subset_seed.setValue(spec.fitness.seed)
        self.batch.setValue(spec.evaluation.batch_size)
        self.threads.setValue(spec.evaluation.threads)
        self.device.setCurrentText(spec.evaluation.device)
        self.changed.emit()

    def show_check(self, text: str, ok: bool) -> None:
        self.check_label.setText(("✓ " if ok else "✗ ") + text)
        self.check_label.setObjectName("hint" if ok else "warningNote")
        self.check_label.style().unpolish(self.check_label)
        self.check_label.style().polish(self.check_label)

    def _choose_spec(self) -> None:
        from mergestudio.search.spec import SpecError, load_spec

        folder = str(self.spec_folder) if self.spec_folder is not None else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Search spec", folder, "Search specs (*.yml *.yaml);;All files (*)"
        )
        if not path:
            return
        try:
            self.load_spec(load_spec(path), Path(path).name)
        except SpecError as error:
            self.show_check(str(error), False)

    def _save_spec(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save search spec", "search.yml", "Search specs (*.yml)")
        if path:
            Path(path).write_text(yaml.safe_dump(self.spec_dict(), sort_keys=False), encoding="utf-8")

    def _browse_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Parent folder of the run")
        if folder:
            self.run_edit.setText(str(Path(folder) / "run"))

    def remove_selected(self, table: QTableWidget) -> None:
        rows = sorted({index.row() for index in table.selectedIndexes()}, reverse=True)
        for row in rows:
            table.removeRow(row)
        if rows:
            self.changed.emit()


def _short(reference: str) -> str:
    return reference.rstrip("/").rsplit("/", 1)[-1] or reference
