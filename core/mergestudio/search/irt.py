"""Item response theory for cheap fitness: fit a 2PL model on the items of a task, pick
anchor items from the fitted parameters, and estimate a new model's accuracy on the whole
task from its answers on the anchors only (tinyBenchmarks, arXiv:2402.14992; MERGE³,
arXiv:2502.10436).

The model: subject ``s`` (a model) answers item ``i`` correctly with probability
``σ(a_i · θ_s − b_i)``, where ``θ_s`` is the subject's ability, ``a_i > 0`` the item's
discrimination and ``b_i`` its difficulty (slope-intercept form). Abilities have a
standard normal prior, which fixes the scale; the item parameters have weak priors, so an
item every calibration model got right (or wrong) still gets finite parameters.

Three estimates of a task's accuracy from the anchors' answers ``y``:

- ``anchor``: the anchors' answers weighted by the share of items each anchor stands
  for (its cluster's size);
- ``p-irt``: the anchors' answers plus, for every other item, its predicted probability of
  being right at the ability ``θ̂`` fitted to the anchors (maximum a posteriori, under
  a normal prior with the calibration models' mean and spread of abilities);
- ``gp-irt``: ``λ · anchor + (1 − λ) · p-irt``, ``λ`` chosen per task at calibration
  from how far each estimate was off on the calibration models.

How many anchors each task gets: a run asks for ``anchors_per_task`` on average, and
``calibrate_tasks`` shares the ``anchors_per_task × tasks`` anchors out like a stratified
sample (Neyman allocation): a task's anchor estimate has variance about
``σ² (N − n) / (n (N − 1))`` for ``n`` of its ``N`` items, where ``σ² = mean p(1 − p)`` over
the calibration models' accuracies ``p`` on it, and the anchors go where they cut the sum
of those variances most. A task every calibration model passes or fails (σ = 0) needs few
anchors; one where they land in the middle needs many. Every task keeps at least half of
``anchors_per_task``, since a search may move to merges the calibration never saw.

Two optional ways to get more out of the same item budget:

- a **genome prior** (latent regression): per task, a Gaussian process from the
  candidate's genome (each gene scaled to [0, 1] by its bounds) to the ability, fitted
  on the calibration trials (whose θ the 2PL fit gives from every item). A candidate's
  ability prior is then the GP's prediction at its genome instead of the calibration
  models' population;
- an **adaptive second round** (computerized adaptive testing): part of a task's items
  are fixed anchors; after they are answered, θ is estimated and the rest are the
  task's not-yet-asked items with the most Fisher information ``a² p (1 − p)`` at that
  θ. ``p-irt`` then uses every answered item; the ``anchor`` estimate (and the anchor
  part of ``gp-irt``) only the fixed first round, the one design-unbiased sample.

The fit is a few hundred L-BFGS steps in torch on a (subjects × items) matrix; the
estimate is a grid search over ``θ`` in numpy: about a second per task to fit, and
milliseconds per estimate, for the hundreds of items and tens of models a search
calibrates on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mergestudio.errors import MergeStudioError

IrtEstimate = Literal["gp-irt", "p-irt", "anchor"]
IRT_ESTIMATES: tuple[IrtEstimate, ...] = ("gp-irt", "p-irt", "anchor")

# Priors of the fit (in the slope-intercept form): log a ~ N(0, 0.5²) keeps the slopes
# near 1 unless the data insist; b ~ N(0, 3²) lets an item everyone got right drift far
# out without running off to infinity.
LOG_DISCRIMINATION_SD = 0.5
DIFFICULTY_SD = 3.0
FIT_STEPS = 300
# θ grid for the ability estimate: wider than any fitted ability (a specialist reaches ~6).
THETA_GRID = np.linspace(-8.0, 8.0, 1601)
MIN_ABILITY_SD = 1.0

FloatArray = npt.NDArray[np.float64]


class CalibrationError(MergeStudioError):
    """An IRT calibration cannot be fitted or does not match the task it is used on."""


@dataclass(frozen=True)
class ItemParameters:
    """Fitted 2PL parameters of one task's items, in item order."""

    discrimination: tuple[float, ...]  # a_i > 0
    difficulty: tuple[float, ...]  # b_i (intercept form: logit = a·θ − b)

    def probabilities(self, theta: float | FloatArray) -> FloatArray:
        """P(correct) of every item at ``theta``: shape (n_items,) for a scalar, or
        (len(theta), n_items) for a vector of abilities."""
        a = np.asarray(self.discrimination)
        b = np.asarray(self.difficulty)
        t = np.asarray(theta, dtype=np.float64)
        logits = np.multiply.outer(t, a) - b
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


@dataclass(frozen=True)
class Fit:
    items: ItemParameters
    abilities: tuple[float, ...]  # θ of each calibration subject, in row order


def fit_2pl(responses: npt.ArrayLike, steps: int = FIT_STEPS, seed: int = 0) -> Fit:
    """Maximum a posteriori 2PL fit of ``responses``: (n_subjects, n_items), each 1.0
    (right), 0.0 (wrong) or NaN (not asked). Float64 throughout; deterministic for a given
    ``seed``."""
    import torch

    y = np.asarray(responses, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 1:
        raise CalibrationError(f"IRT calibration needs at least 2 models and 1 item, got shape {y.shape}")
    observed = ~np.isnan(y)
    if ((y[observed] != 0.0) & (y[observed] != 1.0)).any():
        raise CalibrationError("IRT calibration needs right/wrong answers (1.0 or 0.0 per item)")
    generator = torch.Generator().manual_seed(seed)
    target = torch.from_numpy(np.where(observed, y, 0.0))  # (S, I) float64
    mask = torch.from_numpy(observed.astype(np.float64))  # (S, I)
    # Start abilities at the standardised share of right answers: L-BFGS then only refines.
    share = np.nanmean(np.where(observed, y, np.nan), axis=1)
    start = (share - share.mean()) / (share.std() + 1e-6)
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    log_a = (0.01 * torch.randn(y.shape[1], generator=generator, dtype=torch.float64)).requires_grad_()
    item_share = np.nan_to_num(np.nanmean(np.where(observed, y, np.nan), axis=0), nan=0.5)
    b = torch.tensor(-np.log((item_share + 0.05) / (1.05 - item_share)), dtype=torch.float64)
    b.requires_grad_()
    optimizer = torch.optim.LBFGS(
        [theta, log_a, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.exp(log_a)[None, :] * theta[:, None] - b[None, :]  # (S, I)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=mask, reduction="sum"
        )
        prior = (
            0.5 * (theta**2).sum()
            + 0.5 * ((log_a / LOG_DISCRIMINATION_SD) ** 2).sum()
            + 0.5 * ((b / DIFFICULTY_SD) ** 2).sum()
        )
        total = nll + prior
        total.backward()  # type: ignore[no-untyped-call]
        return total

    optimizer.step(loss)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        items = ItemParameters(tuple(float(v) for v in torch.exp(log_a)), tuple(float(v) for v in b))
        return Fit(items, tuple(float(v) for v in theta))


def estimate_ability(
    items: ItemParameters,
    indices: Sequence[int],
    answers: Sequence[float],
    prior_mean: float = 0.0,
    prior_sd: float = 1.0,
    graded: GradedItems | None = None,
    scores: Sequence[float] | None = None,
) -> float:
    """MAP ability from the answers (1.0/0.0) to items ``indices``, under a normal prior
    (by default the fit's N(0, 1)); with ``graded`` and ``scores`` (the same items'
    graded scores), their likelihood joins the answers'."""
    if len(indices) != len(answers):
        raise CalibrationError(f"{len(indices)} anchor items but {len(answers)} answers")
    p = items.probabilities(THETA_GRID)[:, list(indices)]  # (grid, anchors)
    y = np.asarray(answers, dtype=np.float64)
    eps = 1e-12
    log_prior = -0.5 * ((THETA_GRID - prior_mean) / prior_sd) ** 2
    log_posterior = (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)).sum(axis=1) + log_prior
    if graded is not None and scores is not None:
        if len(scores) != len(indices):
            raise CalibrationError(f"{len(indices)} items but {len(scores)} graded scores")
        log_posterior = log_posterior + graded.log_likelihood(indices, scores, THETA_GRID)
    return float(THETA_GRID[int(np.argmax(log_posterior))])


def item_information(items: ItemParameters, theta: float) -> FloatArray:
    """Fisher information of every item about θ at ``theta``: a² p (1 − p), shape (n_items,)."""
    a = np.asarray(items.discrimination, dtype=np.float64)
    p = items.probabilities(theta)
    return np.asarray(a**2 * p * (1.0 - p), dtype=np.float64)


# ---- graded scores: a continuous measurement of each asked item ------------------------------

# Graded scores enter as the logit of the reference answer's probability, clipped: a
# (per-token) log-probability ℓ ≤ 0 becomes ℓ − log(1 − e^ℓ), which keeps growing for a
# model that is sure of the right answer instead of saturating at 0.
GRADED_LOGIT_LIMIT = 12.0
# Floor on an item's residual sd (logit units): a few calibration models fitted almost
# exactly must not make one item's graded score decisive.
MIN_GRADED_NOISE_SD = 0.3
# Prior sd of the slope d_j (ridge): with ~20 calibration models per item an item whose
# score barely moves with θ keeps a slope near 0 rather than a noisy one.
GRADED_SLOPE_SD = 2.0


def graded_logit(log_probability: float | FloatArray) -> FloatArray:
    """The measurement a graded score enters the model as: logit(exp(ℓ)), clipped to
    ±GRADED_LOGIT_LIMIT (shape of the input; NaN stays NaN)."""
    lp = np.minimum(np.asarray(log_probability, dtype=np.float64), -1e-12)
    with np.errstate(invalid="ignore"):
        logit = lp - np.log(-np.expm1(lp))
    return np.asarray(np.clip(logit, -GRADED_LOGIT_LIMIT, GRADED_LOGIT_LIMIT), dtype=np.float64)


@dataclass(frozen=True)
class GradedItems:
    """A linear-Gaussian measurement model of every item's graded score ``s``:
    ``graded_logit(s_j) = c_j + d_j · θ + ε_j``, ``ε_j ~ N(0, σ_j²)``, independent given θ.
    Why this one: the 2PL's log-odds of a right answer is linear in θ, and the logit of
    the reference's probability is the same quantity measured without the right/wrong
    rounding, so a line in θ per item is the smallest model that says so. Fitted per item
    by (ridge) least squares on the calibration models' θ from the 2PL fit (a
    factor-analysis step with the factor scores held fixed); each asked item adds
    ``d_j² / σ_j²`` of Fisher information about θ (a right/wrong answer at most a²/4).
    A per-model offset shared by all items (correlated residuals, which the demo zoo's
    calibration models do show) was tried and measured worse (docs/search.md)."""

    intercept: tuple[float, ...]  # c_j
    slope: tuple[float, ...]  # d_j
    noise_sd: tuple[float, ...]  # σ_j

    @classmethod
    def fit(cls, scores: npt.ArrayLike, abilities: Sequence[float]) -> GradedItems:
        """``scores``: (models × items) graded scores (log-probabilities, NaN where
        missing); ``abilities``: the models' θ."""
        x = graded_logit(np.asarray(scores, dtype=np.float64))  # (S, I)
        theta = np.asarray(abilities, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(theta):
            raise CalibrationError(f"graded scores of shape {x.shape} for {len(theta)} calibration models")
        intercept, slope = [], []
        for column in x.T:
            seen = ~np.isnan(column)
            if seen.sum() < 3:
                raise CalibrationError("graded scores: every item needs at least 3 calibration models' scores")
            t, y = theta[seen], column[seen]
            t_mean, y_mean = t.mean(), y.mean()
            # Ridge on the slope: σ² / GRADED_SLOPE_SD² with σ² taken from y's own spread.
            ridge = max(float(y.var()), MIN_GRADED_NOISE_SD**2) / GRADED_SLOPE_SD**2
            d = float(((t - t_mean) * (y - y_mean)).sum() / (((t - t_mean) ** 2).sum() + ridge))
            intercept.append(float(y_mean - d * t_mean))
            slope.append(d)
        residual = x - np.asarray(intercept)[None, :] - np.outer(theta, slope)  # (S, I)
        # σ_j: the item's residual spread once each model's mean residual over the items
        # (how sure it is of everything, beyond its θ) is taken out: the noise of one
        # item's score about the model's line. Measured on the demo zoo this beats the
        # raw residual spread, and a model that also integrates the offset out.
        within = residual - np.nanmean(residual, axis=1)[:, None]
        counts = (~np.isnan(within)).sum(axis=0)
        noise = np.sqrt(np.maximum(np.nansum(within**2, axis=0) / np.maximum(counts - 1, 1), MIN_GRADED_NOISE_SD**2))
        return cls(tuple(intercept), tuple(slope), tuple(float(v) for v in noise))

    def log_likelihood(self, indices: Sequence[int], scores: Sequence[float], theta: FloatArray) -> FloatArray:
        """Σ over the asked items of log N(graded_logit(s_j); c_j + d_j θ, σ_j²), up to a
        constant, at every ``theta`` (shape (len(theta),))."""
        index = list(indices)
        x = graded_logit(np.asarray(scores, dtype=np.float64))  # (n,)
        c = np.asarray(self.intercept)[index]
        d = np.asarray(self.slope)[index]
        sd = np.asarray(self.noise_sd)[index]
        z = (x[None, :] - c[None, :] - np.multiply.outer(theta, d)) / sd[None, :]  # (grid, n)
        return np.asarray(-0.5 * (z**2).sum(axis=1), dtype=np.float64)

    def information(self) -> FloatArray:
        """Fisher information of every item's graded score about θ: d² / σ² (n_items,)."""
        return np.asarray(np.asarray(self.slope) ** 2 / np.asarray(self.noise_sd) ** 2, dtype=np.float64)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradedItems:
        return cls(
            tuple(float(v) for v in data["intercept"]),
            tuple(float(v) for v in data["slope"]),
            tuple(float(v) for v in data["noise_sd"]),
        )


# ---- the genome prior: a Gaussian process from genome to ability ---------------------------

# An earlier candidate's genome, its estimated θ and that estimate's variance: what the
# genome prior may learn from besides the calibration trials.
Observation = tuple[Mapping[str, float], float, float]

# Length scales tried, in units of sqrt(genes) (the typical distance between two random
# genomes grows with it), and noise variances as a share of the signal's.
LENGTH_SCALE_GRID = tuple(float(v) for v in np.geomspace(0.1, 5.0, 15))
NOISE_RATIO_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MIN_REGRESSION_POINTS = 3


@dataclass(frozen=True)
class AbilityRegression:
    """θ of a task as a function of the candidate's genome: a Gaussian process with a
    squared-exponential kernel over genes scaled to [0, 1] by their bounds, a constant
    mean, and noise (the calibration models' θ are fitted, and the map need not be
    smooth). Hyperparameters by maximum marginal likelihood over a small grid (length
    scale, noise share; the mean and signal variance in closed form), so the choice is
    deterministic and needs no tuning per run. Fitted on the calibration models that
    have a genome (the calibration trials)."""

    genes: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    points: tuple[tuple[float, ...], ...]  # scaled genomes of the training models
    abilities: tuple[float, ...]
    length_scale: float
    noise_ratio: float  # noise variance / signal variance
    signal_variance: float
    mean: float

    @classmethod
    def fit(
        cls,
        genes: Sequence[tuple[str, float, float]],
        genomes: Sequence[Mapping[str, float]],
        abilities: Sequence[float],
    ) -> AbilityRegression:
        """``genes``: (name, low, high) of every gene; ``genomes``: the training models'
        gene values; ``abilities``: their θ."""
        if len(genomes) != len(abilities):
            raise CalibrationError(f"{len(genomes)} genomes for {len(abilities)} abilities")
        if len(genomes) < MIN_REGRESSION_POINTS:
            raise CalibrationError(
                f"the genome prior needs at least {MIN_REGRESSION_POINTS} calibration trials, got {len(genomes)}"
            )
        names = tuple(g[0] for g in genes)
        low = tuple(float(g[1]) for g in genes)
        high = tuple(float(g[2]) for g in genes)
        x = np.array([_scaled(genome, names, low, high) for genome in genomes])  # (n, genes)
        y = np.asarray(abilities, dtype=np.float64)
        distances = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)  # (n, n)
        best: tuple[float, float, float, float, float] | None = None
        for scale in LENGTH_SCALE_GRID:
            length = scale * math.sqrt(len(names))
            correlation = np.exp(-0.5 * distances / length**2)
            for ratio in NOISE_RATIO_GRID:
                fitted = _profile_likelihood(correlation + ratio * np.eye(len(y)), y)
                if fitted is not None and (best is None or fitted[0] > best[0]):
                    best = (fitted[0], length, ratio, fitted[1], fitted[2])
        if best is None:
            raise CalibrationError("the genome prior could not be fitted (the calibration abilities are all equal)")
        _, length, ratio, variance, mean = best
        return cls(
            names, low, high, tuple(tuple(float(v) for v in row) for row in x), tuple(float(v) for v in y),
            length, ratio, variance, mean,
        )

    def predict(self, genome: Mapping[str, float], observed: Sequence[Observation] = ()) -> tuple[float, float]:
        """(mean, sd) of θ at ``genome``: the GP's prediction, its sd including the noise.
        ``observed``: earlier candidates' (genome, θ, variance of θ) join the calibration
        models as noisier points (their θ are estimates); the hyperparameters stay."""
        x = np.asarray(self.points, dtype=np.float64)  # (n, genes)
        y = np.asarray(self.abilities, dtype=np.float64)
        noise = np.full(len(y), self.noise_ratio)
        if observed:
            x = np.vstack([x, [self._point(g) for g, _, _ in observed]])
            y = np.concatenate([y, [theta for _, theta, _ in observed]])
            noise = np.concatenate([noise, [self.noise_ratio + v / self.signal_variance for _, _, v in observed]])
        point = np.asarray(self._point(genome))
        correlation = np.exp(-0.5 * ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2) / self.length_scale**2)
        k = np.exp(-0.5 * ((x - point) ** 2).sum(axis=1) / self.length_scale**2)  # (n,)
        system = correlation + np.diag(noise)
        mean = self.mean + float(k @ np.linalg.solve(system, y - self.mean))
        variance = self.signal_variance * (1.0 - float(k @ np.linalg.solve(system, k)) + self.noise_ratio)
        return mean, math.sqrt(max(variance, 1e-6))

    def _point(self, genome: Mapping[str, float]) -> list[float]:
        missing = [g for g in self.genes if g not in genome]
        if missing:
            raise CalibrationError(f"the genome prior needs gene {missing[0]!r}, which this candidate lacks")
        return _scaled(genome, self.genes, self.low, self.high)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AbilityRegression:
        return cls(
            genes=tuple(str(g) for g in data["genes"]),
            low=tuple(float(v) for v in data["low"]),
            high=tuple(float(v) for v in data["high"]),
            points=tuple(tuple(float(v) for v in row) for row in data["points"]),
            abilities=tuple(float(v) for v in data["abilities"]),
            length_scale=float(data["length_scale"]),
            noise_ratio=float(data["noise_ratio"]),
            signal_variance=float(data["signal_variance"]),
            mean=float(data["mean"]),
        )


def _scaled(
    genome: Mapping[str, float], names: Sequence[str], low: Sequence[float], high: Sequence[float]
) -> list[float]:
    return [(float(genome[n]) - lo) / (hi - lo) for n, lo, hi in zip(names, low, high, strict=True)]


def _profile_likelihood(system: FloatArray, y: FloatArray) -> tuple[float, float, float] | None:
    """(log marginal likelihood, signal variance, mean) of ``y`` under covariance
    ``s² · system`` and a constant mean, both at their maximum (closed form)."""
    try:
        chol = np.linalg.cholesky(system)
    except np.linalg.LinAlgError:
        return None
    ones = np.ones(len(y))
    inv_ones, inv_y = np.linalg.solve(system, ones), np.linalg.solve(system, y)
    mean = float(inv_y.sum() / inv_ones.sum())
    residual = y - mean
    variance = float(residual @ np.linalg.solve(system, residual)) / len(y)
    if variance <= 1e-12:
        return None
    log_likelihood = -0.5 * len(y) * math.log(variance) - float(np.log(np.diag(chol)).sum())
    return log_likelihood, variance, mean


# ---- anchors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchors:
    """Items chosen to stand for a task: ``indices`` into the task's items, and the share
    of the task's items each stands for (``weights``, summing to 1)."""

    indices: tuple[int, ...]
    weights: tuple[float, ...]


def select_anchors(items: ItemParameters, count: int, seed: int = 0) -> Anchors:
    """``count`` anchors by k-means over the items' (a, b) parameters (tinyBenchmarks'
    "anchor-IRT"): the item nearest each centroid, weighted by its cluster's size. Items
    that behave alike in the calibration models fall in one cluster, so one of them
    answers for all."""
    points = np.column_stack([items.discrimination, items.difficulty]).astype(np.float64)  # (I, 2)
    n = len(points)
    if count >= n:
        return Anchors(tuple(range(n)), tuple([1.0 / n] * n))
    # Standardise so a unit of difficulty and of discrimination count alike.
    scaled = (points - points.mean(axis=0)) / (points.std(axis=0) + 1e-9)
    labels = _kmeans(scaled, count, np.random.default_rng(seed))
    indices, weights = [], []
    for cluster in range(count):
        members = np.flatnonzero(labels == cluster)
        if len(members) == 0:
            continue
        centre = scaled[members].mean(axis=0)
        nearest = members[int(np.argmin(((scaled[members] - centre) ** 2).sum(axis=1)))]
        indices.append(int(nearest))
        weights.append(len(members) / n)
    order = np.argsort(indices)
    return Anchors(tuple(indices[i] for i in order), tuple(weights[i] for i in order))


def _kmeans(points: FloatArray, k: int, rng: np.random.Generator, rounds: int = 8) -> npt.NDArray[np.int64]:
    """Labels of the best (least inertia) of ``rounds`` k-means++ runs. Duplicate points
    (items no calibration model told apart) are handled: a centre is never drawn twice."""
    best_labels: npt.NDArray[np.int64] | None = None
    best_inertia = math.inf
    for _ in range(rounds):
        centres = _kmeans_plus_plus(points, k, rng)
        labels = np.zeros(len(points), dtype=np.int64)
        for _ in range(100):
            distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # (I, k)
            new_labels = distances.argmin(axis=1)
            if (new_labels == labels).all() and _ > 0:
                break
            labels = new_labels
            for c in range(k):
                members = points[labels == c]
                if len(members):
                    centres[c] = members.mean(axis=0)
        inertia = float(((points - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_inertia, best_labels = inertia, labels
    assert best_labels is not None
    return best_labels


def _kmeans_plus_plus(points: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        if d2.sum() <= 0:  # fewer distinct points than clusters: any point will do
            centres.append(points[rng.integers(len(points))])
            continue
        centres.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    return np.array(centres, dtype=np.float64)


# ---- one task's calibration and its estimates -----------------------------------------------


@dataclass(frozen=True)
class TaskCalibration:
    """What estimating one task needs: its items' ids (the full task, in order), their
    fitted parameters, the anchors, the gp-IRT weight ``lam`` of the anchor estimate, and
    the ability prior of new models: the mean and spread of the calibration models'
    fitted abilities (merges of a few fine-tunes are far from N(0, 1): mostly weak, a few
    specialists very strong; the N(0, 1) prior pulled every estimate to the middle)."""

    task: str
    item_ids: tuple[str, ...]
    items: ItemParameters
    anchors: Anchors
    lam: float
    ability_mean: float = 0.0
    ability_sd: float = 1.0
    # Items asked in the adaptive second round (0: anchors only), and the genome → θ
    # regression giving each candidate its own ability prior (None: the population's).
    adaptive_items: int = 0
    regression: AbilityRegression | None = None
    # The graded scores' measurement model (None: right/wrong answers only).
    graded: GradedItems | None = None

    @property
    def anchor_ids(self) -> tuple[str, ...]:
        return tuple(self.item_ids[i] for i in self.anchors.indices)

    @property
    def items_per_candidate(self) -> int:
        return len(self.anchors.indices) + self.adaptive_items

    def ability_prior(
        self, genome: Mapping[str, float] | None = None, observed: Sequence[Observation] = ()
    ) -> tuple[float, float]:
        """(mean, sd) of a candidate's ability before its answers: the regression's
        prediction at ``genome`` (learning from the ``observed`` earlier candidates too)
        when there is one, else the calibration population's."""
        if self.regression is not None:
            if genome is None:
                raise CalibrationError(f"task {self.task!r}: the genome prior needs the candidate's genome")
            return self.regression.predict(genome, observed)
        return self.ability_mean, self.ability_sd

    def second_round(
        self,
        anchor_answers: Sequence[float],
        genome: Mapping[str, float] | None = None,
        observed: Sequence[Observation] = (),
        anchor_scores: Sequence[float] | None = None,
    ) -> tuple[int, ...]:
        """The adaptive round's items (indices into the task, most informative first):
        the ``adaptive_items`` items not among the anchors with the most Fisher
        information at the ability fitted to the anchors' answers and graded scores
        (ranked by the answers' information, ``_information``). Ties go to the earlier
        item, so the choice is the same on every machine."""
        if self.adaptive_items == 0:
            return ()
        y = self._answers(anchor_answers, len(self.anchors.indices), "anchors")
        mean, sd = self.ability_prior(genome, observed)
        scores = self._scores(anchor_scores, len(y), "anchors")
        theta = estimate_ability(self.items, self.anchors.indices, y, mean, sd, self.graded, scores)
        info = self._information(theta)
        info[list(self.anchors.indices)] = -np.inf
        order = np.argsort(-info, kind="stable")
        return tuple(int(i) for i in order[: self.adaptive_items])

    def estimates(
        self,
        answers: Sequence[float],
        genome: Mapping[str, float] | None = None,
        second: Sequence[float] | None = None,
        observed: Sequence[Observation] = (),
        scores: Sequence[float] | None = None,
        second_scores: Sequence[float] | None = None,
    ) -> dict[IrtEstimate, float]:
        """Every estimate of the task's accuracy from the anchors' answers (in anchor
        order) and, with an adaptive round, the answers to ``second_round``'s items (in
        its order). ``genome``: the candidate's, for the genome prior; ``observed``:
        earlier candidates it learns from; ``scores``/``second_scores``: the same items'
        graded scores, needed when the calibration has a graded model. Graded scores
        only place θ: an asked item still counts as its right/wrong answer."""
        asked, values, theta, _ = self.ability(answers, genome, second, observed, scores, second_scores)
        anchor = float(np.dot(self.anchors.weights, values[: len(self.anchors.indices)]))  # fixed round: unbiased
        predicted = self.items.probabilities(theta)  # (I,)
        predicted[asked] = values
        p_irt = float(predicted.mean())
        return {"anchor": anchor, "p-irt": p_irt, "gp-irt": self.lam * anchor + (1 - self.lam) * p_irt}

    def ability(
        self,
        answers: Sequence[float],
        genome: Mapping[str, float] | None = None,
        second: Sequence[float] | None = None,
        observed: Sequence[Observation] = (),
        scores: Sequence[float] | None = None,
        second_scores: Sequence[float] | None = None,
    ) -> tuple[list[int], list[float], float, float]:
        """(items asked, their answers, θ fitted to them, θ's variance): the anchors and
        the adaptive round's items; the variance from the information of the items (and
        their graded scores) and the prior (Laplace)."""
        y = self._answers(answers, len(self.anchors.indices), "anchors")
        first_scores = self._scores(scores, len(y), "anchors")
        asked = list(self.anchors.indices)
        values = list(y)
        graded = list(first_scores) if first_scores is not None else None
        if self.adaptive_items:
            extra = self.second_round(y, genome, observed, first_scores)
            if second is None:
                raise CalibrationError(f"task {self.task!r}: the adaptive round's answers are missing")
            asked += extra
            values += self._answers(second, len(extra), "adaptive items")
            more = self._scores(second_scores, len(extra), "adaptive items")
            if graded is not None and more is not None:
                graded += more
        mean, sd = self.ability_prior(genome, observed)
        theta = estimate_ability(self.items, asked, values, mean, sd, self.graded, graded)
        information = float(self._information(theta)[asked].sum())
        return asked, values, theta, 1.0 / (information + 1.0 / sd**2)

    def _information(self, theta: float) -> FloatArray:
        """Fisher information about θ of asking each item, what the adaptive round ranks
        by and θ's variance counts: its right/wrong answer's only, also with a graded
        model. Ranking by the graded scores' d²/σ² too picks the items whose σ the ~15
        calibration models happened to underestimate (winner's curse), and their
        residuals are correlated within a model, so the sum over items overstates what
        they tell: measured on the demo zoo at 20×, 3.31 points with it, 2.63 without."""
        return item_information(self.items, theta)

    def _scores(self, values: Sequence[float] | None, count: int, what: str) -> list[float] | None:
        """The graded scores as floats, checked; None without a graded model."""
        if self.graded is None:
            return None
        if values is None:
            raise CalibrationError(f"task {self.task!r}: the calibration uses graded scores, but the {what}' are missing")
        if len(values) != count:
            raise CalibrationError(f"task {self.task!r}: {count} {what} but {len(values)} graded scores")
        return [float(v) for v in values]

    def _answers(self, values: Sequence[float], count: int, what: str) -> list[float]:
        if len(values) != count:
            raise CalibrationError(f"task {self.task!r}: {count} {what} but {len(values)} answers")
        return [float(v) for v in values]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskCalibration:
        items = data["items"]
        anchors = data["anchors"]
        return cls(
            task=str(data["task"]),
            item_ids=tuple(str(i) for i in data["item_ids"]),
            items=ItemParameters(
                tuple(float(v) for v in items["discrimination"]), tuple(float(v) for v in items["difficulty"])
            ),
            anchors=Anchors(
                tuple(int(i) for i in anchors["indices"]), tuple(float(w) for w in anchors["weights"])
            ),
            lam=float(data["lam"]),
            ability_mean=float(data.get("ability_mean", 0.0)),
            ability_sd=float(data.get("ability_sd", 1.0)),
            # Calibrations written before the adaptive round and the genome prior: neither.
            adaptive_items=int(data.get("adaptive_items", 0)),
            regression=AbilityRegression.from_dict(data["regression"]) if data.get("regression") else None,
            # Calibrations written before graded scores: right/wrong answers only.
            graded=GradedItems.from_dict(data["graded"]) if data.get("graded") else None,
        )


def calibrate_task(
    task: str,
    item_ids: Sequence[str],
    responses: npt.ArrayLike,
    anchors_per_task: int,
    seed: int = 0,
    *,
    adaptive: bool = False,
    genes: Sequence[tuple[str, float, float]] | None = None,
    genomes: Sequence[Mapping[str, float] | None] | None = None,
    graded_scores: npt.ArrayLike | None = None,
) -> TaskCalibration:
    """Fit the task's items on ``responses`` (calibration models × items, right/wrong),
    choose its ``anchors_per_task`` items per candidate, and set the gp-IRT weight. With
    ``adaptive``, half of them (rounded up) are fixed anchors and the rest are chosen per
    candidate (``TaskCalibration.second_round``). With ``genes``, the ability prior is
    the genome regression fitted on the rows whose ``genomes`` entry is not None. With
    ``graded_scores`` (the same shape as ``responses``), each item also gets a graded
    measurement model (``GradedItems``) on the 2PL's abilities, used before λ is set."""
    y = np.asarray(responses, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != len(item_ids):
        raise CalibrationError(f"task {task!r}: responses of shape {y.shape} for {len(item_ids)} items")
    fit = fit_2pl(y, seed=seed)
    total = min(anchors_per_task, len(item_ids))
    fixed = (total + 1) // 2 if adaptive else total
    anchors = select_anchors(fit.items, fixed, seed=seed)
    abilities = np.asarray(fit.abilities)
    # A floor on the spread: a calibration of near-identical models must not pin θ.
    spread = max(float(abilities.std()), MIN_ABILITY_SD)
    scores = None if graded_scores is None else np.asarray(graded_scores, dtype=np.float64)
    if scores is not None and scores.shape != y.shape:
        raise CalibrationError(f"task {task!r}: graded scores of shape {scores.shape} for answers of shape {y.shape}")
    calibration = TaskCalibration(
        task, tuple(item_ids), fit.items, anchors, 0.5, float(abilities.mean()), spread,
        adaptive_items=total - len(anchors.indices),
        graded=_fit_graded(scores, y, fit.abilities) if scores is not None else None,
    )
    # λ from the population prior: a calibration trial's genome prior would be fitted on
    # its own θ and hide the p-IRT estimate's bias.
    calibration = replace(calibration, lam=_gp_weight(calibration, y, fit.abilities, scores))
    if genes is not None:
        rows = [(g, theta) for g, theta in zip(genomes or [], fit.abilities, strict=True) if g is not None]
        # A task on which every calibration trial answered alike (all failed, say) says
        # nothing about how the genome moves θ: it keeps the population prior, whose
        # spread has a floor, rather than a regression certain of one value.
        thetas = [t for _, t in rows]
        if thetas and max(thetas) - min(thetas) > 1e-6:
            regression = AbilityRegression.fit(genes, [g for g, _ in rows], thetas)
            calibration = replace(calibration, regression=regression)
    return calibration


def _fit_graded(scores: FloatArray, responses: FloatArray, abilities: Sequence[float]) -> GradedItems:
    """The graded model fitted on the calibration models whose θ the 2PL fit pins down:
    one that got every item of the task right (or wrong) has only a bound on θ (the
    prior decides where it sits), while its graded scores still say how far off it is; as
    points of the line in θ they would bend it (on the demo zoo they made graded scores
    worse than none). Needs 3 such models, else fits on all."""
    answered = np.where(np.isnan(responses), 0.5, responses)
    identified = answered.min(axis=1) < answered.max(axis=1)  # (S,): not all one answer
    if identified.sum() < 3:
        identified[:] = True
    theta = np.asarray(abilities, dtype=np.float64)
    return GradedItems.fit(scores[identified], theta[identified])


def _gp_weight(
    calibration: TaskCalibration,
    responses: FloatArray,
    abilities: Sequence[float],
    graded_scores: FloatArray | None = None,
) -> float:
    """λ = bias² / (bias² + variance) (tinyBenchmarks' heuristic): the anchor estimate is
    unbiased with variance Σ w_k² p_k(1 − p_k) (each anchor answering for its cluster);
    the p-IRT estimate has little variance but a bias, measured as its squared error on
    the calibration models (each put through the whole procedure, adaptive round
    included). The noisier the anchors, the more p-IRT counts."""
    anchors = calibration.anchors
    weights = np.asarray(anchors.weights)
    bias2, variance = [], []
    for s, (row, theta) in enumerate(zip(responses, abilities, strict=True)):
        if np.isnan(row).any():
            continue
        truth = float(row.mean())
        first = row[list(anchors.indices)]
        graded = graded_scores[s] if graded_scores is not None else None
        first_graded = graded[list(anchors.indices)] if graded is not None else None
        extra = list(calibration.second_round(first, anchor_scores=first_graded))
        second = row[extra]
        estimate = calibration.estimates(
            first, second=second, scores=first_graded, second_scores=graded[extra] if graded is not None else None
        )
        bias2.append((estimate["p-irt"] - truth) ** 2)
        p = calibration.items.probabilities(theta)[list(anchors.indices)]
        variance.append(float((weights**2 * p * (1 - p)).sum()))
    if not bias2:
        return 0.5
    b, v = float(np.mean(bias2)), float(np.mean(variance))
    return b / (b + v) if b + v > 0 else 0.5


# ---- every task of a run: anchors shared out by how much the answers vary -------------------


def answer_spread(responses: npt.ArrayLike) -> float:
    """σ of a task's answers: sqrt of the mean over models of p·(1 − p), ``p`` each model's
    accuracy on the task (rows: models, columns: items, right/wrong). The spread of one
    model's right/wrong answers around its accuracy, which is what an anchor sample of the
    task has to average out."""
    y = np.asarray(responses, dtype=np.float64)
    accuracy = np.nanmean(y, axis=1)
    return float(np.sqrt(np.mean(accuracy * (1.0 - accuracy))))


def allocate_anchors(total: int, spreads: Sequence[float], sizes: Sequence[int], minimum: int) -> list[int]:
    """Anchors per task, ``total`` in all (fewer only when the tasks have fewer items):
    each task first gets ``minimum`` (at most its size), then each further anchor goes to
    the task whose anchor-estimate variance ``σ² (N − n) / (n (N − 1))`` it lowers most
    (greedy, which is exact for this convex, separable sum). Equal spreads (for example
    all zero) share the anchors evenly."""
    if len(spreads) != len(sizes):
        raise CalibrationError(f"{len(spreads)} spreads for {len(sizes)} tasks")
    counts = [min(minimum, size) for size in sizes]

    def variance(task: int, n: int) -> float:
        size = sizes[task]
        if size <= 1 or n >= size:
            return 0.0
        return spreads[task] ** 2 * (size - n) / (n * (size - 1))

    for _ in range(total - sum(counts)):
        open_tasks = [t for t in range(len(sizes)) if counts[t] < sizes[t]]
        if not open_tasks:
            break
        # Largest variance cut first; ties to the task with fewest anchors, then by order.
        best = max(
            open_tasks,
            key=lambda t: (variance(t, counts[t]) - variance(t, counts[t] + 1), -counts[t], -t),
        )
        counts[best] += 1
    return counts


def calibrate_tasks(
    tasks: Mapping[str, tuple[Sequence[str], npt.ArrayLike]],
    anchors_per_task: int,
    seed: int = 0,
    share: bool = True,
    *,
    adaptive: bool = False,
    genes: Sequence[tuple[str, float, float]] | None = None,
    genomes: Sequence[Mapping[str, float] | None] | None = None,
    graded: Mapping[str, npt.ArrayLike] | None = None,
) -> dict[str, TaskCalibration]:
    """Calibrate every task of a run: ``tasks`` maps a task's name to its item ids and the
    calibration models' answers (models × items). With ``share`` the
    ``anchors_per_task × len(tasks)`` anchors are allocated by ``allocate_anchors`` (at
    least half of ``anchors_per_task`` each); without, every task gets
    ``anchors_per_task``. ``adaptive``, ``genes`` and ``genomes`` (one per calibration
    model, None for those without one): as ``calibrate_task``; ``graded``: per task, the
    calibration models' graded scores (``calibrate_task``'s ``graded_scores``; a task
    without them is calibrated on its answers alone)."""
    names = list(tasks)
    matrices = {name: np.asarray(tasks[name][1], dtype=np.float64) for name in names}
    counts = [anchors_per_task] * len(names)
    if share and len(names) > 1:
        counts = allocate_anchors(
            anchors_per_task * len(names),
            [answer_spread(matrices[name]) for name in names],
            [len(tasks[name][0]) for name in names],
            minimum=max(1, anchors_per_task // 2),
        )
    return {
        name: calibrate_task(
            name, tasks[name][0], matrices[name], count, seed=seed, adaptive=adaptive, genes=genes, genomes=genomes,
            graded_scores=graded.get(name) if graded is not None else None,
        )
        for name, count in zip(names, counts, strict=True)
    }
