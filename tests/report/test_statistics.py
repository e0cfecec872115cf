"""The statistics of harness/report/statistics.py, checked against scipy on fixed data and by
simulation (interval coverage, power) at the official sizes: 5 seeds, 335 test items (bbc_news)."""

import numpy as np
import pytest
from scipy import stats

from harness.report.statistics import (
    aggregate,
    crossed,
    estimate,
    expected_max,
    expected_max_std,
    holm,
    iqm,
    performance_profile,
    prob_better,
)

SEEDS, ITEMS = 5, 335


def correct_answers(rng, difficulty, seeds, seed_sd, shift=0.0, interaction=None):
    """Seeds × items indicators of a correct answer: logit = item easiness + seed effect + shift."""
    logit = difficulty + rng.normal(0, seed_sd, (seeds, 1)) + shift + (0 if interaction is None else interaction)
    return (rng.random((seeds, len(difficulty))) < 1 / (1 + np.exp(-logit))).astype(float)


def test_seed_level_estimate_is_the_t_interval_and_test_of_scipy():
    scores = np.array([0.912, 0.935, 0.921, 0.940, 0.918])
    ours = estimate(scores)
    reference = stats.ttest_1samp(scores, 0.0)
    low, high = reference.confidence_interval(0.95)
    assert (ours.low, ours.high, ours.p_value) == pytest.approx((low, high, reference.pvalue), rel=1e-12)
    assert ours.mean == pytest.approx(scores.mean()) and ours.std == pytest.approx(scores.std(ddof=1)) and ours.n == 5


def test_paired_difference_over_seeds_is_scipys_paired_t_test():
    a, b = np.array([0.91, 0.93, 0.92, 0.95, 0.90]), np.array([0.90, 0.90, 0.93, 0.91, 0.89])
    ours = estimate(a - b)
    reference = stats.ttest_rel(a, b)
    assert (ours.low, ours.high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-12)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-12)


def test_one_seed_uses_the_items_and_agrees_with_scipys_bootstrap_and_permutation_test():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(2.0, 1.5, ITEMS)
    a, b = correct_answers(rng, difficulty, 1, 0.0, shift=0.4), correct_answers(rng, difficulty, 1, 0.0)
    ours = estimate(per_item=a - b)
    assert ours.n == 1 and ours.items == ITEMS
    boot = stats.bootstrap(
        (a[0], b[0]),
        lambda x, y, axis=-1: (x - y).mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert ours.low == pytest.approx(boot.low, abs=0.004) and ours.high == pytest.approx(boot.high, abs=0.004)
    permutation = stats.permutation_test(
        (a[0], b[0]),
        lambda x, y, axis=-1: (x - y).mean(axis=axis),
        vectorized=True,
        permutation_type="samples",
        n_resamples=20000,
        random_state=np.random.default_rng(2),
    )
    assert ours.p_value == pytest.approx(permutation.pvalue, abs=0.01)


def test_item_part_is_added_only_for_what_seeds_do_not_cover():
    """Per-item scores equal across seeds: the seed and residual parts are 0 and the whole interval is
    the item part, the variance of the item means over N, with the item term's N − 1 degrees of freedom."""
    item_scores = np.tile(np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]), (4, 1))
    ours = estimate(per_item=item_scores)
    se = item_scores[0].std(ddof=1) / np.sqrt(8)
    assert ours.high - ours.mean == pytest.approx(stats.t.ppf(0.975, 7) * se)


def test_one_seed_is_scipys_one_sample_t_test_over_items():
    scores = np.random.default_rng(12).normal(0.3, 1.0, (1, 50))
    ours, reference = estimate(per_item=scores), stats.ttest_1samp(scores[0], 0.0)
    assert (ours.low, ours.high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-12)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-12)


def mean_squares(y):
    """The two-way ANOVA mean squares (seed, item, residual) of a seeds × items table, by explicit sums."""
    n, items = y.shape
    grand = y.sum() / (n * items)
    seed_means = [sum(row) / items for row in y]
    item_means = [sum(y[s, i] for s in range(n)) / n for i in range(items)]
    seed_ss = items * sum((m - grand) ** 2 for m in seed_means)
    item_ss = n * sum((m - grand) ** 2 for m in item_means)
    total_ss = sum((y[s, i] - grand) ** 2 for s in range(n) for i in range(items))
    return seed_ss / (n - 1), item_ss / (items - 1), (total_ss - seed_ss - item_ss) / ((n - 1) * (items - 1))


def test_interval_uses_welch_satterthwaite_degrees_of_freedom_of_the_crossed_components():
    """Var(ȳ) = (MS_seed + MS_item − MS_error)/(nN); degrees of freedom (Σ MS)² / Σ MS²/df, the seed term's
    counted as n − 2 (statistics.py's small-sample correction), at least n − 1."""
    rng = np.random.default_rng(13)
    y = rng.normal(0, 0.5, (5, 1)) + rng.normal(0, 4.0, (1, 40)) + rng.normal(0, 3.0, (5, 40))
    seed, item, error = mean_squares(y)
    assert item > error  # the item part is there
    variance = (seed + item - error) / (5 * 40)
    dof = (seed + item - error) ** 2 / (seed**2 / 3 + item**2 / 39 + error**2 / (4 * 39))
    assert 4 < dof < 39  # neither the seeds' nor the items' alone
    ours = estimate(per_item=y)
    assert ours.high - ours.mean == pytest.approx(stats.t.ppf(0.975, dof) * np.sqrt(variance), rel=1e-10)
    assert ours.p_value == pytest.approx(2 * stats.t.sf(abs(y.mean()) / np.sqrt(variance), dof), rel=1e-10)


def test_without_an_item_component_it_is_scipys_t_test_over_the_seed_means():
    """MS_item ≤ MS_error (no item effect shown): the item part is 0 and the interval is the one-sample t
    over the seeds' means (n − 1 degrees of freedom); with two seeds, always the t over seeds."""
    rng = np.random.default_rng(14)
    y = rng.normal(0, 1.0, (4, 1)) + rng.normal(0, 3.0, (4, 60))
    seed, item, error = mean_squares(y)
    assert item <= error
    ours, reference = estimate(per_item=y), stats.ttest_1samp(y.mean(axis=1), 0.0)
    assert (ours.low, ours.high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-10)
    two = rng.normal(0, 1.0, (2, 1)) + rng.normal(0, 3.0, (1, 60)) + rng.normal(0, 1.0, (2, 60))
    seed, item, error = mean_squares(two)
    half = stats.t.ppf(0.975, 1) * np.sqrt((seed + item - error) / 120)
    assert estimate(per_item=two).high - two.mean() == pytest.approx(half, rel=1e-10)


# Variance components of per-item scores (×100, so in points²) in the committed official records
# (results/official, commit 210cfa2, 5 seeds, every test item), moment estimates of the two-way crossed
# layout: Var(σ) = (MS_seed − MS_error)/N, Var(τ) = (MS_item − MS_error)/n, Var(ε) = MS_error, found once
# from harness.report.board.assemble("results/official", "official").runs by a script that applied these
# formulas to each cell's seeds × items matrix and to each paired difference (cell − reference on the
# same seeds and items). Values: (N, Var(σ), Var(τ), Var(ε)); negative estimates at 0.
DIFFERENCES = {
    "minilm lora − full, bbc_news": (335, 0.009, 11.16, 167.2),
    "minilm head − full, bbc_news": (335, 0.760, 457.6, 172.4),
    "minilm rac_lora − full, tweet_sentiment": (5725, 0.053, 688.5, 1147.9),
    "minilm dora − full, tweet_sentiment": (5725, 0.659, 89.4, 1140.5),
    "minilm adalora − lora, tweet_sentiment": (5725, 0.004, 112.0, 1018.9),
    "minilm lora_xs − full, tweet_sentiment": (5725, 1.104, 727.4, 1236.5),
    "efficientnet_lite0 lora − full, mnist5k": (751, 0.0, 50.3, 165.2),
}
CELLS = {
    "minilm full, tweet_sentiment": (5725, 0.236, 1265.2, 598.2),
    "minilm dora, tweet_sentiment": (5725, 0.990, 1262.2, 596.7),
    "minilm surm, tweet_sentiment": (5725, 1.275, 1694.4, 429.8),
    "minilm head, bbc_news": (335, 0.652, 656.7, 115.8),
    "efficientnet_lite0 lora, digits": (271, 0.027, 0.0, 22.1),
}
SIMULATED_ITEMS, SIMULATED_TABLES = 335, 4000  # a 5 % rate is known to ± 0.34 % (one standard error)


def crossed_tables(components, seeds=SEEDS, shift=0.0, rng_seed=0):
    """SIMULATED_TABLES seeds × items tables of y = shift + σ_s + τ_i + ε_si (Gaussian) with the given
    components; the test set is SIMULATED_ITEMS items with Var(τ) and Var(ε) scaled by SIMULATED_ITEMS/N,
    which keeps each part of Var(ȳ) as at N items (only the item term's degrees of freedom shrink)."""
    items, seed_var, item_var, error_var = components
    scale, rng = SIMULATED_ITEMS / items, np.random.default_rng(rng_seed)
    return (
        shift
        + rng.normal(0, np.sqrt(seed_var), (SIMULATED_TABLES, seeds, 1))
        + rng.normal(0, np.sqrt(item_var * scale), (SIMULATED_TABLES, 1, SIMULATED_ITEMS))
        + rng.normal(0, np.sqrt(error_var * scale), (SIMULATED_TABLES, seeds, SIMULATED_ITEMS))
    )


def intervals(tables):
    """Each table's 95 % interval by `crossed` (what `estimate` computes; checked on the first tables)."""
    mean, variance, dof = crossed(tables)
    half = stats.t.ppf(0.975, dof) * np.sqrt(variance)
    for index in range(3):
        one = estimate(per_item=tables[index])
        assert (one.low, one.high) == pytest.approx((mean[index] - half[index], mean[index] + half[index]), rel=1e-9)
    return mean - half, mean + half


@pytest.mark.parametrize("scenario", DIFFERENCES)
def test_paired_test_holds_its_level_under_the_committed_variance_components(scenario):
    low, high = intervals(crossed_tables(DIFFERENCES[scenario]))
    false_positives = np.mean((low > 0) | (high < 0))
    assert 0.04 <= false_positives <= 0.06


@pytest.mark.parametrize("seeds", [3, 10])
def test_paired_test_holds_its_level_with_three_and_ten_seeds(seeds):
    """Where plain Satterthwaite is least accurate, the seed part 50–80 % (lora_xs − full: 67 %); plain
    Satterthwaite (the seed term with n − 1 degrees of freedom) rejects 7.0 % here at 3 seeds."""
    low, high = intervals(crossed_tables(DIFFERENCES["minilm lora_xs − full, tweet_sentiment"], seeds))
    assert 0.04 <= np.mean((low > 0) | (high < 0)) <= 0.06


def test_two_seeds_never_claim_more_than_their_level():
    """Two seeds cannot estimate the seed part: t with 1 degree of freedom, conservative where items dominate."""
    low, high = intervals(crossed_tables(DIFFERENCES["minilm rac_lora − full, tweet_sentiment"], 2))
    assert np.mean((low > 0) | (high < 0)) <= 0.05


@pytest.mark.parametrize("scenario", CELLS)
def test_cell_interval_covers_the_population_mean_95_percent_of_the_time(scenario):
    """Seeds and items drawn afresh per table: the truth is the mean over both populations (here 70)."""
    low, high = intervals(crossed_tables(CELLS[scenario], shift=70.0))
    assert 0.93 <= np.mean((low <= 70.0) & (70.0 <= high)) <= 0.97


@pytest.mark.parametrize(
    "scenario, power",
    [
        ("minilm lora − full, bbc_news", 0.99),
        ("minilm head − full, bbc_news", 0.34),
        ("minilm dora − full, tweet_sentiment", 0.93),
        ("minilm rac_lora − full, tweet_sentiment", 0.99),
    ],
)
def test_power_to_detect_a_true_two_points(scenario, power):
    """The stated power (docs/statistics.md) of the paired test for a true +2 points at 5 seeds."""
    low, _ = intervals(crossed_tables(DIFFERENCES[scenario], shift=2.0))
    assert np.mean(low > 0) == pytest.approx(power, abs=0.02)


def null_tables(seed_sd, seeds=SEEDS, rng_seed=0, interaction_sd=0.0, tables=SIMULATED_TABLES):
    """Correct-answer indicators (0/1) of two methods equal on average, as (tables, seeds, items)."""
    rng = np.random.default_rng(rng_seed)
    difficulty = rng.normal(2.0, 1.5, (tables, 1, ITEMS))
    interaction = rng.normal(0, interaction_sd, (tables, 1, ITEMS))
    answers = [
        rng.random((tables, seeds, ITEMS))
        < 1 / (1 + np.exp(-(difficulty + sign * interaction + rng.normal(0, seed_sd, (tables, seeds, 1)))))
        for sign in (1, -1)
    ]
    return answers[0].astype(float) - answers[1]


@pytest.mark.parametrize("seed_sd, interaction_sd", [(0.05, 0.0), (0.3, 0.0), (1.0, 0.0), (0.05, 0.5)])
def test_level_holds_for_correct_answer_indicators(seed_sd, interaction_sd):
    """Discrete scores (a difference of two 0/1 answers), per-seed accuracy SD ≈ 0.8, 4 and 13 points,
    and methods that differ by item but not on average."""
    low, high = intervals(null_tables(seed_sd, interaction_sd=interaction_sd))
    assert 0.04 <= np.mean((low > 0) | (high < 0)) <= 0.06


def test_holm_adjusts_step_down_and_keeps_order():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_prob_better_counts_seed_pairs_and_ties():
    assert prob_better([0.9, 0.8], [0.85, 0.8]) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert prob_better([0.1], [0.2], higher_is_better=False) == 1.0


def test_expected_maximum_matches_simulation():
    values = np.array([0.71, 0.80, 0.78, 0.90, 0.65])
    assert expected_max(values, 1) == pytest.approx(values.mean())
    rng = np.random.default_rng(5)
    simulated = rng.choice(values, size=(200000, 3)).max(axis=1).mean()
    assert expected_max(values, 3) == pytest.approx(simulated, abs=2e-3)
    assert expected_max(values, 200) == pytest.approx(values.max(), abs=1e-6)
    assert expected_max([0.3, 0.2, 0.5], 50, higher_is_better=False) == pytest.approx(0.2, abs=1e-6)


def test_expected_maximum_spread_matches_simulation():
    values = np.array([0.71, 0.80, 0.78, 0.90, 0.65])
    best_of_three = np.random.default_rng(6).choice(values, size=(200000, 3)).max(axis=1)
    assert expected_max_std(values, 3) == pytest.approx(best_of_three.std(), abs=2e-3)
    assert expected_max_std(values, 1) == pytest.approx(values.std())
    assert expected_max_std(values, 300) == pytest.approx(0.0, abs=1e-4)
    worst_of_two = np.random.default_rng(7).choice(values, size=(200000, 2)).min(axis=1)
    assert expected_max_std(values, 2, higher_is_better=False) == pytest.approx(worst_of_two.std(), abs=2e-3)


def already_normalised(per_task):
    """(runs, floor, ceiling) per task with single-run references at 0 and 1: normalising changes nothing."""
    return [(runs, [0.0], [1.0]) for runs in per_task]


def test_performance_profile_averages_each_tasks_fraction_above_the_threshold():
    tasks = [[0.1, 0.5, 0.9, 1.3], [0.4, 0.6]]
    thresholds = [0.0, 0.45, 0.55, 1.0, 2.0]
    value, low, high = performance_profile(already_normalised(tasks), thresholds)
    expected = [(4 / 4 + 2 / 2) / 2, (3 / 4 + 1 / 2) / 2, (2 / 4 + 1 / 2) / 2, (1 / 4 + 0 / 2) / 2, 0.0]
    assert value == pytest.approx(expected)
    assert np.all(low <= value + 1e-12) and np.all(value <= high + 1e-12)
    assert low[0] == high[0] == 1.0 and low[-1] == high[-1] == 0.0  # every resample agrees there
    assert high[2] - low[2] > 0.2  # three of six runs decide it: resamples disagree
    single, single_low, _ = performance_profile(already_normalised([[0.3], [0.7]]), thresholds)
    assert single == pytest.approx([1.0, 0.5, 0.5, 0.0, 0.0]) and np.isnan(single_low).all()


def test_performance_profile_band_covers_the_true_profile_by_simulation():
    rng = np.random.default_rng(11)
    thresholds = [0.5]  # both tasks' runs are normal around 0.5: the true profile there is 0.5
    covered = 0
    for _ in range(200):
        tasks = [rng.normal(0.5, 0.2, size=10), rng.normal(0.5, 0.4, size=10)]
        _, low, high = performance_profile(
            already_normalised(tasks), thresholds, resamples=400, seed=int(rng.integers(1 << 30))
        )
        covered += low[0] <= 0.5 <= high[0]
    assert 0.88 <= covered / 200 <= 0.99


def test_the_profile_band_draws_the_references_too():
    """Normalised by drawn references, a run near the middle crosses τ in some draws: the band widens where
    fixed references (single runs at their means) would let every draw agree."""
    floor, ceiling, runs = [58.0, 60.0, 62.0], [78.0, 80.0, 82.0], [70.5, 71.0, 71.5]
    drawn = performance_profile([(runs, floor, ceiling)], [0.5], seed=1)
    fixed = performance_profile([(runs, [60.0], [80.0])], [0.5], seed=1)
    assert drawn[0] == fixed[0] == pytest.approx([1.0])  # 0.525, 0.55 and 0.575 all exceed 0.5
    assert fixed[1][0] == fixed[2][0] == 1.0 and drawn[1][0] < 1.0  # floor 62, ceiling 82: (71.5 - 62) / 20 < 0.5
    assert performance_profile([(ceiling, floor, ceiling)], [1.0], role="ceiling")[0] == pytest.approx([1 / 3])


def test_aggregate_iqm_with_a_stratified_bootstrap_interval():
    tasks = [[0.2, 0.9, 1.0, 1.1, 5.0], [0.8, 0.85, 0.9, 0.95, -3.0]]
    value, low, high = aggregate(already_normalised(tasks), "iqm")
    assert value == pytest.approx(iqm(np.concatenate(tasks))) and low <= value <= high
    mean, low_mean, high_mean = aggregate(already_normalised(tasks), "mean")
    assert mean == pytest.approx(np.mean(np.concatenate(tasks)))
    assert high - low < high_mean - low_mean  # the IQM ignores the outlying runs


def test_aggregate_keeps_single_run_tasks_fixed():
    value, low, high = aggregate(already_normalised([[0.5, 0.7, 0.9], [2.0]]), "mean")
    assert value == pytest.approx(np.mean([0.5, 0.7, 0.9, 2.0]))
    assert (0.5 + 0.5 + 0.5 + 2.0) / 4 <= low < value < high <= (0.9 * 3 + 2.0) / 4
    assert np.isnan(aggregate(already_normalised([[1.0], [2.0]]), "mean")[1])


def test_aggregate_normalises_by_the_reference_means_and_draws_a_reference_method_once():
    floor, ceiling = [60.0, 62.0, 64.0], [80.0, 84.0, 88.0]  # means 62 and 84
    value, _, _ = aggregate([([73.0, 95.0], floor, ceiling)], "mean")
    assert value == pytest.approx(np.mean([(73 - 62) / 22, (95 - 62) / 22]))
    # full fine-tuning's own normalised mean is 1 in every draw: its runs are the ceiling's draw
    assert aggregate([(ceiling, floor, ceiling)], "mean", role="ceiling") == pytest.approx((1.0, 1.0, 1.0))
    assert aggregate([(floor, floor, ceiling)], "mean", role="floor") == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def across_tasks_coverage(fixed_references: bool, tables: int = 300) -> float:
    """Two tasks, 5 runs each of the method, head-only and full fine-tuning (sd 1.5 points around 60, 80
    and 75 on one task, 40, 90 and 70 on the other): how often the 95 % interval of the normalised mean
    covers the truth, mean((75 − 60)/(80 − 60), (70 − 40)/(90 − 40)) = 0.675."""
    rng, covered = np.random.default_rng(15), 0
    for _ in range(tables):
        tasks = []
        for method, floor, ceiling in ((75, 60, 80), (70, 40, 90)):
            runs, floors, ceilings = (rng.normal(centre, 1.5, 5) for centre in (method, floor, ceiling))
            tasks.append((runs, [floors.mean()], [ceilings.mean()]) if fixed_references else (runs, floors, ceilings))
        _, low, high = aggregate(tasks, "mean", resamples=400, seed=int(rng.integers(1 << 30)))
        covered += low <= 0.675 <= high
    return covered / tables


def test_across_tasks_interval_covers_more_when_the_references_are_drawn_too():
    """Measured over 1,000 tables: 0.875 drawing the references, 0.768 holding their means fixed (as the
    leaderboard did before); still under 0.95, as a percentile bootstrap over 5 runs per stratum is narrow."""
    drawn, fixed = across_tasks_coverage(False), across_tasks_coverage(True)
    assert drawn >= fixed + 0.08 and drawn >= 0.84
