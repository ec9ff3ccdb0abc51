"""The Setup tab follows the studio: the recipe being edited, the project's evaluation
tasks, and on the demo project the README's demo search (resources/demo/search.yml)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mergestudio.search.spec import SpecError

DEMO_SPEC_SOURCE = "the demo search (resources/demo/search.yml)"
DEMO_SPEC_NAME = "search.yml"


def demo_search_spec(base: str | None, project_path: Path | None) -> Path | None:
    """The demo zoo's search spec when the project is the demo (no project file, its base
    one of the zoo's models), else None."""
    from mergestudio_qt.demo import zoo_dir

    if base is None or project_path is not None:
        return None
    zoo = zoo_dir()
    spec = zoo / DEMO_SPEC_NAME
    try:
        in_zoo = Path(base).resolve().parent == (zoo / "models").resolve()
    except OSError:
        return None
    return spec if in_zoo and spec.is_file() else None


def spec_folder(project_path: Path | None) -> Path | None:
    """Where "Load spec…" opens: the project's folder, or the demo folder (the README's spec)."""
    from mergestudio_qt.demo import zoo_dir

    if project_path is not None:
        return project_path.parent
    zoo = zoo_dir()
    return zoo if zoo.is_dir() else None


class StudioLink:
    """Mixed into ``EvolvePage``: keeps its Setup tab in step with the studio's state."""

    def _studio_recipe_changed(self, _origin: str) -> None:
        self.setup.set_studio_recipe(self.state.recipe)

    def _project_changed(self, _path: object) -> None:
        demo_spec = demo_search_spec(self.state.base, self.state.project_path)
        self.setup.spec_folder = spec_folder(self.state.project_path)
        if demo_spec is not None and not self._busy():
            self._load_demo_spec(demo_spec)
        elif self.setup.spec_source == DEMO_SPEC_SOURCE:  # another project after the demo
            self.setup.use_studio_recipe()
            self.setup.set_tasks(list(self.state.eval_tasks))
        if self.setup.objectives.rowCount() == 0 and self.state.eval_tasks:
            self.setup.set_tasks(list(self.state.eval_tasks))
        if not self.setup.run_edit.text() or demo_spec is not None:
            self.setup.run_edit.setText(str(self.default_run_dir()))

    def _evolve_settings_changed(self) -> None:
        """The Workers box shows the project's number (the state is the one truth; an
        edit of the box goes to the state, undoably)."""
        self.setup.set_workers(self.state.evolve.workers)

    def _load_demo_spec(self, path: Path) -> None:
        """The README's demo search, so Start on the demo project runs what it describes."""
        from mergestudio.search.spec import load_spec

        try:
            self.setup.load_spec(load_spec(path), DEMO_SPEC_SOURCE)
        except SpecError as error:  # a damaged zoo: say so, keep the studio's recipe
            self.setup.show_check(str(error), False)

    def default_run_dir(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = str(self.setup.recipe().get("name") or self.state.recipe.get("name") or "search")
        if self.setup.spec_source == DEMO_SPEC_SOURCE:
            name = "demo-skills"
        if self.state.project_path is not None:
            return self.state.project_path.parent / "runs" / f"{name}-{stamp}"
        return self.studio.preferences.effective_cache_dir() / "runs" / f"{name}-{stamp}"

    def _setup_changed(self) -> None:
        self._update_controls()
        self._check_timer.start()

