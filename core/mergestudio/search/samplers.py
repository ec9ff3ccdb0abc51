"""Optuna samplers for the spec's algorithm.

A fresh sampler, seeded from the spec's seed and the draw's index, is made for every trial. Optuna's
samplers keep their real state in the study (NSGA-II's generations, CMA-ES's pickled
optimiser, TPE's history), so nothing is lost; what this buys is that a resumed run
draws the same candidates as an uninterrupted one would, instead of restarting each
sampler's random stream from the seed.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING

from mergestudio.search.spec import AlgorithmSpec

if TYPE_CHECKING:
    import optuna


def make_sampler(algorithm: AlgorithmSpec, draw: int, worker: int | None = None) -> optuna.samplers.BaseSampler:
    """``worker``: a worker's index when several share the run. They may take the same
    draw at once, and must not propose the same candidate."""
    import optuna

    seed = trial_seed(algorithm.seed, draw, worker)
    with warnings.catch_warnings():
        # Multivariate TPE is marked experimental; we accept that.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if algorithm.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if algorithm.name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=algorithm.population_size, multivariate=True
            )
        if algorithm.name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=algorithm.population_size, seed=seed)
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            popsize=algorithm.population_size,
            sigma0=algorithm.sigma0,
            n_startup_trials=0,
            warn_independent_sampling=False,
        )


def trial_seed(seed: int, draw: int, worker: int | None = None) -> int:
    """A 32-bit seed for one draw (of one worker). Hashed, because numpy generators seeded
    with consecutive integers draw visibly correlated first numbers."""
    key = f"{seed}:{draw}" if worker is None else f"{seed}:{draw}:worker{worker}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
