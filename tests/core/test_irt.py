"""IRT calibration and estimation on synthetic answers drawn from a known 2PL model: the
fit recovers the abilities and item parameters, the anchors stand for the task, the
estimates from the anchors alone land near each new model's accuracy, a run's anchors
are shared among its tasks where they cut the error most, a genome prior (regression from
the candidate's genome to its ability) beats the population prior when the genome decides
the ability, the adaptive round asks the most informative items, and graded scores (the
reference answer's log-probability) place a new model's ability better than its right/wrong
answers alone."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import numpy as np
import pytest
from mergestudio.search.irt import (
    AbilityRegression,
    Anchors,
    CalibrationError,
    GradedItems,
    ItemParameters,
    TaskCalibration,
    allocate_anchors,
    answer_spread,
    calibrate_task,
    calibrate_tasks,
    estimate_ability,
    fit_2pl,
    graded_logit,
    select_anchors,
)

N_ITEMS = 100


def _population(rng: np.random.Generator, n_subjects: int, a: np.ndarray, b: np.ndarray):
    theta = rng.normal(size=n_subjects)
    p = 1.0 / (1.0 + np.exp(-(np.outer(theta, a) - b)))  # (S, I)
    return theta, p, (rng.random(p.shape) < p).astype(np.float64)


@pytest.fixture(scope="module")
def truth():
    rng = np.random.default_rng(7)
    a = rng.uniform(0.7, 2.0, N_ITEMS)
    b = rng.normal(0.0, 1.2, N_ITEMS)
    theta, _, answers = _population(rng, 150, a, b)
    return rng, a, b, theta, answers


def test_fit_recovers_known_parameters(truth):
    _, a, b, theta, answers = truth
    fit = fit_2pl(answers)
    got_b = np.asarray(fit.items.difficulty)
    got_a = np.asarray(fit.items.discrimination)
    assert np.corrcoef(fit.abilities, theta)[0, 1] > 0.95
    assert np.corrcoef(got_b, b)[0, 1] > 0.95
    assert np.corrcoef(got_a, a)[0, 1] > 0.6
    # The N(0, 1) ability prior fixes the scale to the generating one: values, not only ranks.
    assert np.abs(got_b - b).mean() < 0.25  # ~0.18; the start values alone are ~0.30 off
    assert np.abs(got_a - a).mean() < 0.4


def test_ability_estimate_from_answers_follows_the_truth():
    items = ItemParameters(tuple([1.5] * 40), tuple(np.linspace(-2, 2, 40)))
    rng = np.random.default_rng(1)
    for theta in (-1.5, 0.0, 1.5):
        p = items.probabilities(theta)
        answers = (rng.random((20, 40)) < p).astype(float)
        estimates = [estimate_ability(items, range(40), row) for row in answers]
        assert abs(np.mean(estimates) - theta) < 0.35


def test_anchors_cover_the_task_and_weights_sum_to_one(truth):
    _, a, b, _, _ = truth
    anchors = select_anchors(ItemParameters(tuple(a), tuple(b)), 12)
    assert len(anchors.indices) == 12 == len(set(anchors.indices))
    assert sum(anchors.weights) == pytest.approx(1.0)
    assert min(b[list(anchors.indices)]) < -1.0 < 1.0 < max(b[list(anchors.indices)])
    everything = select_anchors(ItemParameters(tuple(a[:5]), tuple(b[:5])), 12)
    assert everything.indices == (0, 1, 2, 3, 4)


def test_estimates_from_anchors_beat_random_items_of_the_same_count(truth):
    rng, a, b, _, answers = truth
    calibration = calibrate_task("synthetic", [f"i{k}" for k in range(N_ITEMS)], answers, anchors_per_task=10)
    assert 0.0 <= calibration.lam <= 1.0
    _, p_new, new = _population(rng, 400, a, b)
    expected = p_new.mean(axis=1)  # each new model's true expected accuracy
    anchors = list(calibration.anchors.indices)
    errors = {name: [] for name in ("anchor", "p-irt", "gp-irt")}
    for row, target in zip(new, expected, strict=True):
        for name, value in calibration.estimates(row[anchors]).items():
            errors[name].append(abs(value - target))
    random_error = [
        abs(row[rng.choice(N_ITEMS, 10, replace=False)].mean() - target)
        for row, target in zip(new, expected, strict=True)
    ]
    # Ten right/wrong answers bound any estimate; p-IRT gets within ~8 points here.
    assert np.mean(errors["p-irt"]) < 0.1
    assert np.mean(errors["gp-irt"]) < np.mean(random_error)
    assert np.mean(errors["p-irt"]) < 0.8 * np.mean(random_error)


def test_calibration_round_trips_and_refuses_bad_input(truth):
    _, _, _, _, answers = truth
    calibration = calibrate_task("t", [str(k) for k in range(N_ITEMS)], answers[:20], anchors_per_task=5)
    again = TaskCalibration.from_dict(calibration.to_dict())
    assert again == calibration
    assert again.anchor_ids == tuple(str(i) for i in calibration.anchors.indices)
    with pytest.raises(CalibrationError, match="right/wrong"):
        fit_2pl(np.full((3, 4), 0.5))
    with pytest.raises(CalibrationError, match="at least 2 models"):
        fit_2pl(np.ones((1, 4)))
    with pytest.raises(CalibrationError, match="5 anchors but 2 answers"):
        calibration.estimates([1.0, 0.0])


def _anchor_variance(spreads, sizes, counts):
    """The sum over tasks of an anchor sample's variance, σ² (N − n) / (n (N − 1))."""
    return sum(
        s**2 * (n_all - n) / (n * (n_all - 1)) for s, n_all, n in zip(spreads, sizes, counts, strict=True)
    )


def test_anchor_allocation_is_the_least_variance_split():
    spreads, sizes = [0.4, 0.1, 0.25, 0.0], [50, 200, 30, 80]
    counts = allocate_anchors(24, spreads, sizes, minimum=2)
    assert sum(counts) == 24 and min(counts) >= 2
    best = min(
        (c for c in itertools.product(*[range(2, 21)] * 4) if sum(c) == 24),
        key=lambda c: _anchor_variance(spreads, sizes, c),
    )
    assert _anchor_variance(spreads, sizes, counts) == pytest.approx(_anchor_variance(spreads, sizes, best))
    assert counts[3] == 2 and counts[0] > counts[2] > counts[1]  # nothing to learn on an all-wrong task
    assert allocate_anchors(12, [0.3, 0.3, 0.3], [40, 40, 40], minimum=1) == [4, 4, 4]
    assert allocate_anchors(12, [0.0, 0.0], [40, 40], minimum=1) == [6, 6]
    assert allocate_anchors(20, [0.5, 0.1], [3, 40], minimum=2) == [3, 17]  # a task of 3 items holds 3
    with pytest.raises(CalibrationError, match="2 spreads for 3 tasks"):
        allocate_anchors(6, [0.1, 0.2], [5, 5, 5], minimum=1)


def test_answer_spread_is_the_mean_bernoulli_spread():
    answers = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=float)
    assert answer_spread(answers) == pytest.approx(np.sqrt((0.25 + 0 + 0 + 0.1875) / 4))


def test_shared_anchors_go_where_models_differ_and_estimate_better_than_an_even_split():
    """Two tasks of a run: on one the models land all over (accuracies 10-90 %), on the
    other every model fails almost everything. The shared calibration gives the first most
    of the anchors, and estimates new models' accuracies better than ten anchors each."""
    rng = np.random.default_rng(3)
    a_mid, b_mid = rng.uniform(0.8, 2.0, N_ITEMS), rng.normal(0.0, 1.2, N_ITEMS)
    a_hard, b_hard = rng.uniform(0.8, 2.0, N_ITEMS), rng.normal(6.0, 0.5, N_ITEMS)
    theta = rng.normal(size=60)
    answers = {}
    for name, a, b in (("mid", a_mid, b_mid), ("hard", a_hard, b_hard)):
        p = 1.0 / (1.0 + np.exp(-(np.outer(theta, a) - b)))
        answers[name] = (rng.random(p.shape) < p).astype(float)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    shared = calibrate_tasks({n: (ids, y) for n, y in answers.items()}, anchors_per_task=10)
    even = calibrate_tasks({n: (ids, y) for n, y in answers.items()}, anchors_per_task=10, share=False)
    assert [len(shared[n].anchors.indices) for n in ("mid", "hard")] == [15, 5]
    assert [len(even[n].anchors.indices) for n in ("mid", "hard")] == [10, 10]
    new_theta = rng.normal(size=300)
    errors = {"shared": [], "even": []}
    for name, a, b in (("mid", a_mid, b_mid), ("hard", a_hard, b_hard)):
        p = 1.0 / (1.0 + np.exp(-(np.outer(new_theta, a) - b)))
        new = (rng.random(p.shape) < p).astype(float)
        for label, calibrations in (("shared", shared), ("even", even)):
            chosen = list(calibrations[name].anchors.indices)
            errors[label] += [
                abs(calibrations[name].estimates(row[chosen])["gp-irt"] - row.mean()) for row in new
            ]
    assert np.mean(errors["shared"]) < 0.9 * np.mean(errors["even"])


# ---- genome prior and adaptive round ----------------------------------------------------------

GENES = [("w.attention", 0.0, 1.0), ("w.mlp", 0.0, 1.0), ("w.other", -1.0, 1.0)]


def _ability_of(genome: dict[str, float]) -> float:
    """A known, smooth genome → θ map: mostly the MLP weight, bent by the attention one."""
    return 4.0 * (genome["w.mlp"] - 0.5) + 1.5 * np.sin(3.0 * genome["w.attention"]) - 0.5


def _genomes(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    return [{name: float(rng.uniform(low, high)) for name, low, high in GENES} for _ in range(n)]


def _answers(rng: np.random.Generator, theta: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(np.outer(theta, a) - b)))  # (S, I)
    return (rng.random(p.shape) < p).astype(np.float64), p.mean(axis=1)


def test_genome_prior_recovers_ability_and_accuracy_better_than_the_population_prior(truth):
    """Calibration trials with genomes, θ a known function of the genome: new candidates'
    θ from the regression alone is close, and their accuracy estimated from 4 anchors with
    the genome prior is well below the population prior's error."""
    _, a, b, _, _ = truth
    rng = np.random.default_rng(11)
    train = _genomes(rng, 40)
    answers, _ = _answers(rng, np.array([_ability_of(g) for g in train]), a, b)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    with_prior = calibrate_task("t", ids, answers, 4, genes=GENES, genomes=train)
    without = calibrate_task("t", ids, answers, 4)
    assert with_prior.anchors == without.anchors and with_prior.regression is not None
    new = _genomes(rng, 200)
    theta = np.array([_ability_of(g) for g in new])
    rows, expected = _answers(rng, theta, a, b)
    # The fit's θ scale is its own (N(0, 1) prior over the calibration models): compare ranks.
    predicted = np.array([with_prior.regression.predict(g)[0] for g in new])
    assert np.corrcoef(predicted, theta)[0, 1] > 0.95
    anchors = list(with_prior.anchors.indices)
    error = {
        name: np.mean(
            [
                abs(calibration.estimates(row[anchors], genome)["p-irt"] - target)
                for row, target, genome in zip(rows, expected, new, strict=True)
            ]
        )
        for name, calibration in (("genome", with_prior), ("population", without))
    }
    assert error["genome"] < 0.6 * error["population"]  # ~0.03 vs ~0.12 here
    # A task every calibration trial failed alike keeps the population prior.
    failed = np.zeros((40, N_ITEMS))
    failed[:3] = answers[:3]  # baselines (no genome) that got some right
    flat = calibrate_task("t", ids, failed, 4, genes=GENES, genomes=[None] * 3 + train[3:])
    assert flat.regression is None and flat.ability_prior(new[0]) == (flat.ability_mean, flat.ability_sd)


def test_ability_regression_round_trips_and_refuses_bad_input():
    rng = np.random.default_rng(2)
    train = _genomes(rng, 12)
    regression = AbilityRegression.fit(GENES, train, [_ability_of(g) for g in train])
    assert AbilityRegression.from_dict(json.loads(json.dumps(asdict(regression)))) == regression
    mean, sd = regression.predict(train[0])
    assert abs(mean - _ability_of(train[0])) < 0.5 and sd > 0
    # An earlier candidate observed at a new genome pulls the prediction there toward it.
    far = {"w.attention": 0.05, "w.mlp": 0.97, "w.other": 0.9}
    alone = regression.predict(far)
    learned = regression.predict(far, [(far, alone[0] + 3.0, 0.01)])
    assert learned[0] > alone[0] + 2.0 and learned[1] < alone[1]
    with pytest.raises(CalibrationError, match="at least 3 calibration trials"):
        AbilityRegression.fit(GENES, train[:2], [0.0, 1.0])
    with pytest.raises(CalibrationError, match="gene 'w.other'"):
        regression.predict({"w.attention": 0.5, "w.mlp": 0.5})


def test_adaptive_round_picks_the_most_informative_items_by_brute_force():
    """Eight items, two of them anchors: the two adaptive items are the pair with the most
    Fisher information at the ability the anchors' answers give, over every pair."""
    a = np.array([1.0, 1.2, 0.6, 2.0, 1.5, 0.9, 1.8, 1.1])
    b = np.array([0.0, 0.5, -2.0, 2.5, -1.0, 1.0, -2.5, 3.0])
    items = ItemParameters(tuple(a), tuple(b))
    calibration = TaskCalibration(
        "t", tuple(f"i{k}" for k in range(8)), items, Anchors((0, 1), (0.5, 0.5)), 0.3, 0.0, 1.5, adaptive_items=2
    )
    chosen_by_answers = set()
    for answers in ([1.0, 1.0], [0.0, 0.0], [1.0, 0.0]):
        chosen = calibration.second_round(answers)
        theta = estimate_ability(items, [0, 1], answers, 0.0, 1.5)
        p = 1.0 / (1.0 + np.exp(-(a * theta - b)))
        information = a**2 * p * (1 - p)
        best = max(itertools.combinations(range(2, 8), 2), key=lambda pair: information[list(pair)].sum())
        assert set(chosen) == set(best)
        chosen_by_answers.add(frozenset(chosen))
        # Estimates use the anchors and the adaptive items' answers.
        estimate = calibration.estimates(answers, second=[1.0, 0.0])
        assert 0.0 <= estimate["p-irt"] <= 1.0
        assert estimate["anchor"] == pytest.approx(np.mean(answers))  # the fixed round only
    assert len(chosen_by_answers) > 1  # strong and weak answers ask different items
    with pytest.raises(CalibrationError, match="adaptive round's answers are missing"):
        calibration.estimates([1.0, 1.0])


def test_adaptive_round_estimates_better_than_anchors_alone_at_the_same_item_count(truth):
    rng, a, b, _, answers = truth
    ids = [f"i{k}" for k in range(N_ITEMS)]
    fixed = calibrate_task("t", ids, answers, 10)
    adaptive = calibrate_task("t", ids, answers, 10, adaptive=True)
    assert (len(adaptive.anchors.indices), adaptive.adaptive_items) == (5, 5) and adaptive.items_per_candidate == 10
    theta = rng.normal(0.0, 1.5, 400)  # wider than the calibration: where choosing items pays
    rows, expected = _answers(rng, theta, a, b)
    errors = {"fixed": [], "adaptive": []}
    for row, target in zip(rows, expected, strict=True):
        errors["fixed"].append(abs(fixed.estimates(row[list(fixed.anchors.indices)])["p-irt"] - target))
        first = row[list(adaptive.anchors.indices)]
        second = row[list(adaptive.second_round(first))]
        errors["adaptive"].append(abs(adaptive.estimates(first, second=second)["p-irt"] - target))
    assert np.mean(errors["adaptive"]) < 0.9 * np.mean(errors["fixed"])


def test_calibrations_written_before_the_options_still_load(truth):
    _, _, _, _, answers = truth
    calibration = calibrate_task("t", [str(k) for k in range(N_ITEMS)], answers[:20], anchors_per_task=5)
    old = calibration.to_dict()
    del old["adaptive_items"], old["regression"]
    again = TaskCalibration.from_dict(old)
    assert again == calibration and again.adaptive_items == 0 and again.regression is None


# ---- graded scores --------------------------------------------------------------------------


def _graded(rng: np.random.Generator, theta: np.ndarray, c: np.ndarray, d: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Log-probabilities of the reference whose logit is c + d·θ + N(0, sd²): (S, I)."""
    logit = c[None, :] + np.outer(theta, d) + rng.normal(size=(len(theta), len(c))) * sd[None, :]
    return -np.log1p(np.exp(-logit))


def test_graded_logit_inverts_the_log_sigmoid_and_clips():
    x = np.array([-5.0, -0.3, 0.0, 2.0, 9.0])
    assert np.allclose(graded_logit(-np.log1p(np.exp(-x))), x)
    assert graded_logit(0.0) == pytest.approx(12.0) and graded_logit(-1e6) == pytest.approx(-12.0)


def test_graded_scores_recover_ability_and_accuracy_better_than_answers_alone(truth):
    rng, a, b, theta, answers = truth
    ids = [f"i{k}" for k in range(N_ITEMS)]
    # The graded model: the reference's logit rises with θ, about as fast as the 2PL's
    # (d near a) with noise of about one logit, as a soft right/wrong would.
    c, d, sd = -b + rng.normal(0, 0.3, N_ITEMS), a * rng.uniform(0.6, 1.2, N_ITEMS), rng.uniform(0.6, 1.2, N_ITEMS)
    binary = calibrate_task("t", ids, answers, 10)
    graded = calibrate_task("t", ids, answers, 10, graded_scores=_graded(rng, theta, c, d, sd))
    assert binary.anchors == graded.anchors and graded.graded is not None
    fitted = graded.graded
    assert np.corrcoef(fitted.slope, d)[0, 1] > 0.6 and np.corrcoef(fitted.intercept, c)[0, 1] > 0.9
    new_theta = rng.normal(0.0, 1.0, 300)
    rows, expected = _answers(rng, new_theta, a, b)
    scores = _graded(rng, new_theta, c, d, sd)
    anchors = list(graded.anchors.indices)
    errors: dict[str, list[float]] = {"binary θ": [], "graded θ": [], "binary": [], "graded": []}
    for row, score, target, true_theta in zip(rows, scores, expected, new_theta, strict=True):
        errors["binary θ"].append(abs(binary.ability(row[anchors])[2] - true_theta))
        errors["graded θ"].append(abs(graded.ability(row[anchors], scores=score[anchors])[2] - true_theta))
        errors["binary"].append(abs(binary.estimates(row[anchors])["p-irt"] - target))
        errors["graded"].append(abs(graded.estimates(row[anchors], scores=score[anchors])["p-irt"] - target))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["graded θ"] < 0.7 * mean["binary θ"], mean
    assert mean["graded"] < 0.8 * mean["binary"], mean
    with pytest.raises(CalibrationError, match="graded scores"):
        graded.estimates(rows[0][anchors])  # a graded calibration needs the scores


def test_graded_calibration_round_trips_and_old_files_load_without_it(truth):
    rng, a, b, theta, answers = truth
    ids = [str(k) for k in range(N_ITEMS)]
    scores = _graded(rng, theta, -b, a, np.ones(N_ITEMS))
    calibration = calibrate_task("t", ids, answers, 6, adaptive=True, graded_scores=scores)
    again = TaskCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration and isinstance(again.graded, GradedItems)
    row, score = answers[0], scores[0]
    first = list(again.anchors.indices)
    extra = list(again.second_round(row[first], anchor_scores=score[first]))
    assert again.estimates(row[first], second=row[extra], scores=score[first], second_scores=score[extra]) == (
        calibration.estimates(row[first], second=row[extra], scores=score[first], second_scores=score[extra])
    )
    old = calibration.to_dict()
    del old["graded"]
    assert TaskCalibration.from_dict(old).graded is None
    with pytest.raises(CalibrationError, match="shape"):
        calibrate_task("t", ids, answers, 6, graded_scores=scores[:, :10])


def test_graded_model_leaves_out_calibration_models_whose_ability_is_only_a_bound(truth):
    """Models that got every item wrong have θ pinned by the prior, not by their answers;
    their graded scores (far below the line at that θ) must not bend the fitted lines."""
    rng, a, b, theta, answers = truth
    ids = [f"i{k}" for k in range(N_ITEMS)]
    c, d, sd = -b, a, np.full(N_ITEMS, 0.8)
    failing = np.full(12, -9.0)  # true θ far below what the answers can tell
    responses = np.vstack([answers, np.zeros((len(failing), N_ITEMS))])
    scores = np.vstack([_graded(rng, theta, c, d, sd), _graded(rng, failing, c, d, sd)])
    fitted = calibrate_task("t", ids, responses, 10, graded_scores=scores).graded
    on_every_model = GradedItems.fit(scores, fit_2pl(responses).abilities)
    assert fitted is not None
    error = {
        name: float(np.abs(np.asarray(model.intercept) - c).mean())
        for name, model in (("identified", fitted), ("every model", on_every_model))
    }
    assert error["identified"] < 0.5 * error["every model"], error
