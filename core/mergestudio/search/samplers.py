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


def make_sampler(algorithm: AlgorithmSpec, draw: int) -> optuna.samplers.BaseSampler:
    import optuna

    seed = trial_seed(algorithm.seed, draw)
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


def trial_seed(seed: int, draw: int) -> int:
    """A 32-bit seed for one draw. Hashed, because numpy generators seeded with
    consecutive integers draw visibly correlated first numbers."""
    digest = hashlib.sha256(f"{seed}:{draw}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
