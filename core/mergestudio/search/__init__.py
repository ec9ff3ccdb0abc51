"""Evolutionary search over merge recipes, on Optuna.

- ``spec``: the search spec (YAML) and its validation
- ``genome``: the evolved numbers and how they become a recipe
- ``objectives``: which evaluation metrics are optimised, and the fitness estimator
- ``pareto``: non-dominated sorting and exact hypervolume
- ``store``: the run folder (spec, Optuna study, per-trial item results)
- ``runner``: the ask/tell loop around the resident evaluator; resume after a crash
- ``events`` / ``control``: what a search reports, and pause/resume/stop
- ``export``: any trial to a merged model folder with its provenance

Importing this package does not import optuna or torch.
"""

from __future__ import annotations

from mergestudio.search.control import SearchControl
from mergestudio.search.runner import SearchOutcome, resume_search, start_search
from mergestudio.search.spec import SearchSpec, SpecError, load_spec

__all__ = [
    "SearchControl",
    "SearchOutcome",
    "SearchSpec",
    "SpecError",
    "load_spec",
    "resume_search",
    "start_search",
]
