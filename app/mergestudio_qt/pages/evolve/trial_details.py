"""The selected trial: one selection in every plot, the trial table and the details
(its objectives, its standing against the baselines, its recipe and genome)."""

from __future__ import annotations

from mergestudio.search.dashboard import best_trial


class TrialDetails:
    """Mixed into ``EvolvePage``: ``selected`` and what the inspector shows of it."""

    def select_trial(self, number: int | None) -> None:
        """Select trial ``number`` (None: nothing) in every plot, the table and the details."""
        history = self.history
        if number is not None and (history is None or history.row_of(number) is None):
            return
        self.selected = number
        for plot in self.plots:
            plot.set_selected(number)
        if history is not None:
            self.inspector.select_row(history, number)
        self._show_details(number)
        self._update_trial_buttons()

    def describe_trial(self, number: int) -> str:
        """The hover text: a trial's objectives (and full-set scores when known); for runs
        that estimate fitness, the estimate beside the full selection split's value."""
        history = self.history
        if history is None or history.row_of(number) is None:
            return ""
        row = history.row_of(number)
        assert row is not None
        front = " · on the Pareto front" if number in history.front else ""
        lines = [f"trial {number} · generation {int(history.generations[row])}{front}"]
        if self.fitness_text:
            lines.append(f"fitness: {self.fitness_text}")
        full = self.full_evaluations.get(number, {})
        # With held-out test files the full set is the test split, so the dev split the
        # estimate is of was scored in full too; without them the full set is that split.
        dev = self.full_dev_evaluations.get(number, {})
        held_out = self.spec is not None and any(o.test for o in self.spec.objectives)
        estimated = self.spec is not None and self.spec.fitness.estimator != "full"
        for objective, value in zip(history.objectives, history.values[row], strict=True):
            extra = [f"full dev split {dev[objective.name]:.4g}"] if held_out and objective.name in dev else []
            if objective.name in full:
                extra.append(f"full set {full[objective.name]:.4g}")
            estimate = "estimate " if estimated else ""
            suffix = f"  ({', '.join(extra)})" if extra else ""
            lines.append(f"{objective.name}: {estimate}{value:.4g} {objective.unit}{suffix}")
        verdict = self.standing_text(history.objectives_of(number))
        if verdict:
            lines.append(verdict)
        return "\n".join(lines)

    def recipe_yaml(self, number: int) -> str:
        """The trial's recipe: as stored, or rebuilt from its genome exactly as the engine
        built it (Genome.recipe is deterministic), so no store read is needed."""
        history = self.history
        if history is None:
            return ""
        if number in history.recipes:
            return history.recipes[number]
        if self._genome_builder is None:
            return ""
        text = str(self._genome_builder.recipe(history.genome_of(number)).to_yaml())
        history.recipes[number] = text
        return text

    def _show_details(self, number: int | None) -> None:
        history = self.history
        if history is None or number is None:
            self.inspector.clear_trial(self.baseline_lines())
            self.inspector.show_genome(history, None if history is None else best_trial(history), best=True)
            return
        self.inspector.show_trial(self.describe_trial(number), self.recipe_yaml(number))
        self.inspector.show_genome(history, number, best=False)

    def _update_trial_buttons(self) -> None:
        has = self.selected is not None and self.run_dir is not None
        subset = self.spec is not None and self.spec.fitness.estimator != "full"  # subset or irt
        self.inspector.export_button.setEnabled(has and self.export_job is None)
        self.inspector.recipe_button.setEnabled(self.selected is not None)
        self.inspector.try_button.setEnabled(self.selected is not None)
        self.inspector.full_button.setEnabled(has and subset and self.full_job is None and self.search_job is None)
        self.inspector.full_button.setToolTip(
            "Re-score this trial on every item of every task"
            if subset
            else "This run scored every item already (full estimator)"
        )

