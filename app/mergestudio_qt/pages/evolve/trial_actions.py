"""What the selected trial's buttons do: export it as a model folder, open its recipe in
the Recipe editor, try it in the generation window (merged in memory), or score it on
every item of every task (runs that estimate fitness)."""

from __future__ import annotations

from pathlib import Path

from mergestudio.errors import MergeStudioError
from PySide6.QtWidgets import QFileDialog

from mergestudio_qt import jobs
from mergestudio_qt.widgets.evolve_jobs import ExportTrialJob, FullEvalJob
from mergestudio_qt.widgets.generate_panel import Candidate, recipe_parents, show_generation


class TrialActions:
    """Mixed into ``EvolvePage``: ``export_job``, ``full_job`` and the generation window."""

    def export_selected(self, out_dir: Path | None = None) -> None:
        """Merge the selected trial into ``out_dir``; None: ask where, starting from the
        run's exports/trial-N."""
        if self.selected is None or self.run_dir is None or self.export_job is not None:
            return
        target = out_dir or self._ask_export_folder(self.selected, self.run_dir)
        if target is None:
            return  # the user cancelled the dialog
        job = ExportTrialJob(self.run_dir, self.selected, target)
        job.succeeded.connect(self._on_exported)
        job.failed.connect(self._on_export_failed)
        job.log.connect(self._on_log)
        job.finished.connect(self._on_export_finished)
        self.export_job = job
        self._export_result = ""
        self._log(f"exporting trial {self.selected} to {target}")
        self._update_trial_buttons()
        jobs.start(job)

    def _ask_export_folder(self, number: int, run_dir: Path) -> Path | None:
        default = run_dir / "exports" / f"trial-{number:05d}"
        chosen, _ = QFileDialog.getSaveFileName(
            self, f"Export trial {number} as a model folder", str(default), "Model folder (*)"
        )
        return Path(chosen) if chosen else None

    def _on_exported(self, path: Path) -> None:
        self._export_result = str(path)
        self._log(f"exported {path}")
        self.inspector.show_export(self.selected, path)
        self.studio.show_message(f"exported the merged model to {path}")

    def _on_export_failed(self, message: str) -> None:
        self._export_result = ""
        self._log(f"export failed: {message}")
        self.inspector.show_export_failed(message)

    def _on_export_finished(self) -> None:
        self.export_job = None
        self._update_trial_buttons()
        self.export_finished.emit(self._export_result)

    def open_in_recipe_editor(self) -> None:
        if self.selected is None:
            return
        from mergestudio.recipe.model import Recipe

        try:
            recipe = Recipe.from_yaml(self.recipe_yaml(self.selected), f"trial {self.selected}'s recipe")
        except MergeStudioError as error:
            self._log(str(error))
            return
        self.state.set_recipe(recipe.to_dict(), "load", f"recipe of trial {self.selected}")
        self.studio.show_message(f"the Recipe page shows trial {self.selected}'s recipe (Ctrl+Z undoes)")
        self.studio.go_to("recipe")

    def try_selected(self) -> None:
        """The generation window for the selected trial, merged in memory into a resident
        model (nothing written), beside the models its recipe merges."""
        from mergestudio.recipe.model import Recipe

        if self.selected is None:
            return
        try:
            recipe = Recipe.from_yaml(self.recipe_yaml(self.selected), f"trial {self.selected}'s recipe").to_dict()
        except MergeStudioError as error:
            self._log(str(error))
            return
        candidate = Candidate(f"trial {self.selected} (in memory)", recipe, f"trial {self.selected}, merged in memory")
        self.generation = show_generation(self, self.studio, self.generation, [candidate],
                                          recipe_parents(recipe), f"Try trial {self.selected}")

    def evaluate_full(self) -> None:
        if self.selected is None or self.run_dir is None or self._busy():
            return
        job = FullEvalJob(self.run_dir, self.selected)
        job.succeeded.connect(self._on_full_done)
        job.failed.connect(self._on_full_failed)
        job.log.connect(self._on_log)
        job.finished.connect(self._on_full_finished)
        self.full_job = job
        self._full_ok = False
        self._log(f"scoring trial {self.selected} on the full task sets")
        self._update_trial_buttons()
        self._update_controls()
        jobs.start(job)

    def _on_full_done(self, result: tuple[int, dict[str, float]]) -> None:
        number, values = result
        self.full_evaluations[number] = values
        self._load_fitness_files()
        self._full_ok = True
        self._log(f"trial {number} on the full sets: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if number == self.selected:
            self._show_details(number)

    def _on_full_failed(self, message: str) -> None:
        self._log(f"full-set evaluation failed: {message}")

    def _on_full_finished(self) -> None:
        self.full_job = None
        self._update_trial_buttons()
        self._update_controls()
        self.full_eval_finished.emit(self._full_ok)

