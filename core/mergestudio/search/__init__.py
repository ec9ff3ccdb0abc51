"""Evolutionary search over merge recipes, on Optuna.

- ``spec``: the search spec (YAML) and its validation
- ``genome``: the evolved numbers and how they become a recipe
- ``objectives``: which evaluation metrics are optimised, and the fitness estimator
- ``pareto``: non-dominated sorting and exact hypervolume
- ``store``: the run folder (spec, Optuna study, per-trial item results)
- ``runner``: the ask/tell loop around the resident evaluator; resume after a crash
- ``events`` / ``control``: what a search reports, and pause/resume/stop
- ``lock``: one controller per run; ``workers`` / ``follow``: worker processes sharing
  a run through its study, and following a study that others write
- ``export``: any trial to a merged model folder with its provenance

Importing this package does not import optuna or torch.
"""

from __future__ import annotations

from mergestudio import collector
from mergestudio.search.control import SearchControl
from mergestudio.search.runner import SearchOutcome, resume_search, start_search
from mergestudio.search.spec import SearchSpec, SpecError, load_spec

# What a search imports lazily on its way to the first trial: the evaluator's model,
# tokenizer and generation code, optuna and its SQLite storage (module names of those
# libraries' current versions).
SEARCH_IMPORTS = (
    "torch",
    "mergestudio.evaluate.resident",
    "mergestudio.search.runner",
    "transformers",
    "transformers.models.auto.tokenization_auto",
    "transformers.convert_slow_tokenizer",
    "transformers.models.llama.modeling_llama",
    "transformers.generation.utils",
    "optuna",
    "optuna.storages._rdb.models",
    "alembic.command",
    "alembic.config",
    "alembic.migration",
    "alembic.script",
    "sqlalchemy.dialects.sqlite",
)


def prepare_imports() -> None:
    """Import what a search will, ahead of it and out of the garbage collector's way
    (``collector.import_long_lived``): a search started from the window then does not
    freeze it with full collections while ~1,600 modules load (measured: up to 0.36 s)."""
    collector.import_long_lived(SEARCH_IMPORTS)


__all__ = [
    "SEARCH_IMPORTS",
    "SearchControl",
    "SearchOutcome",
    "SearchSpec",
    "SpecError",
    "load_spec",
    "prepare_imports",
    "resume_search",
    "start_search",
]
