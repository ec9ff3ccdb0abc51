"""The references every trial is compared with: the parents and the default merges,
scored on the run's own estimator (drawn as labelled points in the plots), and the run's
estimator in words. The table's mean column marks the trials that beat the unmerged base;
the details give a trial's normalized accuracy (its score over each task's specialist's)."""

from __future__ import annotations

import math

from mergestudio.search.baselines import Baseline
from mergestudio.search.standing import References, references


class BaselineReferences:
    """Mixed into ``EvolvePage``: ``baselines``, ``references`` and ``fitness_text``."""

    def _on_baselines(self, baselines: list[Baseline]) -> None:
        self.baselines = list(baselines)
        if baselines:
            self._log(f"baselines ({baselines[0].estimator}): " + ", ".join(b.label for b in baselines))
        self._update_references()
        for line in self.baseline_lines():
            self._log(line)
        self._mark_dirty()
        self.baselines_changed.emit()

    def _load_fitness_files(self) -> None:
        """The run's estimator in words and its trials re-scored on the full selection
        split (read from the run folder: a calibration and a small JSON file)."""
        from mergestudio.search.baselines import load_full_dev_evaluations
        from mergestudio.search.fitness import run_fitness_label

        spec, run_dir = self.spec, self.run_dir
        self.fitness_text = "" if spec is None else run_fitness_label(run_dir, spec)
        estimated = spec is not None and spec.fitness.estimator != "full" and run_dir is not None
        self.full_dev_evaluations = load_full_dev_evaluations(run_dir) if estimated and run_dir else {}

    def standing_text(self, values: dict[str, float]) -> str:
        """Mean accuracy, Δ vs the base and normalized accuracy, in one line."""
        history = self.history
        if history is None:
            return ""
        result = self.references.compare(values)
        if math.isnan(result.mean_raw):
            return ""
        return f"mean {result.mean_raw:.3g}: {result.verdict(percent_scale=False)}"

    def baseline_lines(self) -> list[str]:
        """One line per baseline: what it is and how it stands (the references themselves)."""
        lines = []
        for baseline in self.baselines:
            role = "base" if baseline.label == self._base_label() else baseline.kind
            text = self.standing_text(baseline.objectives)
            lines.append(f"{baseline.label} ({role}): {text}" if text else f"{baseline.label} ({role})")
        return lines

    def _base_label(self) -> str | None:
        return next((b.label for b in self.baselines if b.is_base), None)

    def _update_references(self) -> None:
        history = self.history
        self.references = (
            References() if history is None else references(self.baselines, history.objectives)
        )
        self.inspector.table_model.set_references(self.references)
        if self.selected is None:
            self._show_details(None)

