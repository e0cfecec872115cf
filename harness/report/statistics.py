"""Uncertainty for leaderboard cells and comparisons: statistics that say whether a difference is real.

Sources of variation. A cell is a method trained with n seeds, each scored on the same N test items.
Its mean over seeds varies with (a) the training seed and (b) the finite test set. Items are *crossed*
with seeds: every seed scores the same items, so an item's difficulty (or, for a difference, a
method × item interaction) is shared by all seeds and does not average out over seeds. The model is
the two-way random-effects decomposition of a per-item score y[s, i] (a correct-answer indicator for
accuracy, or a per-item difference of two methods on the same seed and item),
    y[s, i] = μ + σ_s + τ_i + ε_si,
    Var(ȳ) = Var(σ)/n + Var(τ)/N + Var(ε)/(nN),
estimated by moments from the two-way mean squares (MS_seed, MS_item, MS_error with n − 1, N − 1 and
(n − 1)(N − 1) degrees of freedom): Var(ȳ) = (MS_seed + max(MS_item − MS_error, 0))/(nN), the item
part floored at 0. The interval is ȳ ± t_{df, 0.975}·SE and the p-value that of t = ȳ/SE with
Welch–Satterthwaite degrees of freedom df = (Σ MS)²/Σ MS²/df_MS over the same terms, with one
small-sample correction: the seed term's degrees of freedom are counted as n − 2, and df is at least
n − 1 (the seeds-alone t). Plain Satterthwaite is liberal when the seed part is large but not all:
estimated seed variance and df move together (a low MS_seed gives both a short interval and a high df).
With two seeds (n − 2 = 0) df is 1, the seeds-alone t: conservative where items dominate.
Simulated (docs/statistics.md, tests/report/test_statistics.py; Gaussian tables with the variance
components of each of the committed official records' 48 paired differences and 30 cells, 4,000 tables
each), the test of a null difference rejects in 4.2–5.7 % (mean 4.9 %; 3 seeds 4.9 %, 10 seeds 4.7 %;
plain Satterthwaite reaches 5.9 % at 5 seeds and 7.9 % at 3 where the seed part is 50–80 %), and cell
intervals cover the population mean in 94.8–95.7 %; the previous t with n − 1 degrees of freedom
rejected in 0.4–4.8 % (mean 1.9 %) and covered 95.3–99.6 % (mean 99.1 %).
Kenward–Roger would not change this: in a balanced layout whose variance estimate is linear in the
mean squares, its variance adjustment is zero and its degrees of freedom are Satterthwaite's.
With one seed, the items alone give the interval (a one-sample t over items, N − 1 degrees of freedom).
Without per-item scores (records without predictions, or a metric that is not a mean over items such
as MCC or macro F1) only the seed part is used: exactly the paired t-test over seeds
(scipy.stats.ttest_rel) for differences and the one-sample t interval for a cell.

Why not a percentile bootstrap over seeds then items: at 3–5 seeds its 95 % interval of a null
difference covers 0 in only 78–83 % of tables when seed variation dominates (a bootstrap over five
values cannot know that five is few), and a bootstrap of items nested within seeds shrinks the item
variance n-fold. The bootstrap is kept where it is right: across tasks (stratified by task, many
runs), through scipy.stats.bootstrap.

Across tasks: scores normalised per task to 0 = head-only and 1 = full fine-tuning, aggregated per
method by mean and interquartile mean (IQM, Agarwal et al. 2021) with a stratified bootstrap interval
that draws the method's runs and the head-only and full fine-tuning runs within each task, and
normalises each draw by its drawn reference means (`aggregate`); it covers seeds, not test items.
rliable would be the library for this, but rliable 1.2 imports `arch`, which fails at import under
pandas 3 (`deprecate_kwarg` signature); scipy.stats.bootstrap with one sample per stratum is the same
stratified bootstrap.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval: `low`/`high` at `level`, `std` over seeds, `n` seeds, `items` per
    seed (None: the interval covers seed variation only), a two-sided `p_value` of mean = 0."""

    mean: float
    low: float
    high: float
    std: float
    n: int
    items: Optional[int]
    p_value: float
    level: float = LEVEL


def crossed(per_item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, variance of the mean, degrees of freedom) of seeds × items matrices (the last two axes;
    any leading axes are a batch): the crossed-components variance and its corrected Satterthwaite
    degrees of freedom (module docstring). One seed: the items alone (N − 1 degrees of freedom)."""
    per_item = np.asarray(per_item, dtype=float)
    n, items = per_item.shape[-2:]
    mean = per_item.mean(axis=(-2, -1))
    if n == 1:
        return mean, per_item[..., 0, :].var(axis=-1, ddof=1) / items, np.full(mean.shape, items - 1.0)
    seed_means, item_means = per_item.mean(axis=-1), per_item.mean(axis=-2)
    seed_square = items * seed_means.var(axis=-1, ddof=1)
    if items == 1:
        return mean, seed_square / n, np.full(mean.shape, n - 1.0)
    item_square = n * item_means.var(axis=-1, ddof=1)
    residual = per_item - seed_means[..., :, None] - item_means[..., None, :] + mean[..., None, None]
    error_square = (residual**2).sum(axis=(-2, -1)) / ((n - 1) * (items - 1))
    item_part = np.maximum(item_square - error_square, 0.0)  # N·n·Var(τ)/N, floored at 0
    total = seed_square + item_part
    if n == 2:  # the seed term's n − 2 = 0 degrees of freedom: t with n − 1 = 1, as over seeds alone
        return mean, total / (n * items), np.full(mean.shape, 1.0)
    shares = seed_square**2 / (n - 2) + np.where(
        item_part > 0, item_square**2 / (items - 1) + error_square**2 / ((n - 1) * (items - 1)), 0.0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(shares > 0, total**2 / shares, n - 1.0)
    return mean, total / (n * items), np.maximum(dof, n - 1.0)


def estimate(
    seed_scores: Sequence[float] | None = None, per_item: Optional[np.ndarray] = None, level: float = LEVEL
) -> Estimate:
    """The mean over seeds with its `level` interval, from per-seed scores (a t interval over seeds) or
    from a seeds × items matrix of per-item scores whose row means are the seed scores (`crossed`)."""
    if per_item is not None:
        per_item = np.asarray(per_item, dtype=float)
        seed_scores, items = per_item.mean(axis=1), per_item.shape[1]
    else:
        seed_scores, items = np.asarray(seed_scores, dtype=float), None
    n = len(seed_scores)
    if n == 0:
        raise ValueError("an estimate needs at least one seed")
    std = float(seed_scores.std(ddof=1)) if n > 1 else float("nan")
    if items is not None and (n > 1 or items > 1):
        mean, variance, dof = (float(value) for value in crossed(per_item))
    elif n > 1:
        mean, variance, dof = float(seed_scores.mean()), seed_scores.var(ddof=1) / n, n - 1
    else:
        mean = float(seed_scores.mean())
        return Estimate(mean, float("nan"), float("nan"), std, n, items, float("nan"), level)
    if variance == 0:  # no spread to judge by (e.g. two seeds with the same difference): no test
        return Estimate(mean, mean, mean, std, n, items, 1.0 if mean == 0 else float("nan"), level)
    se, quantile = np.sqrt(variance), stats.t.ppf(0.5 + level / 2, dof)
    p_value = float(2 * stats.t.sf(abs(mean) / se, dof))
    return Estimate(mean, mean - quantile * se, mean + quantile * se, std, n, items, p_value, level)


def prob_better(scores: Sequence[float], reference: Sequence[float], higher_is_better: bool = True) -> float:
    """P(method > reference) over all pairs of one seed of each (ties count half)."""
    a, b = np.asarray(scores, dtype=float)[:, None], np.asarray(reference, dtype=float)[None, :]
    wins = (a > b) if higher_is_better else (a < b)
    return float((wins + 0.5 * (a == b)).mean())


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(running, 1.0)
    return adjusted


def normalise(score: float, floor: float, ceiling: float) -> float:
    """0 at `floor` (head-only), 1 at `ceiling` (full fine-tuning)."""
    return (score - floor) / (ceiling - floor)


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50 % (scipy.stats.trim_mean at 25 %)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def stratified_bootstrap(
    per_task: Sequence[Sequence[float]], statistic, level: float = LEVEL, resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, low, high) of `statistic` over all tasks' runs, with a percentile bootstrap interval whose
    resamples draw runs within each task (scipy.stats.bootstrap with one sample per task; a task with
    a single run enters every resample as it is). `statistic(tasks)` takes one array per task whose
    last axis holds the runs and returns a value (or a vector, on a new last axis) per leading index."""
    samples = [np.asarray(task, dtype=float) for task in per_task if len(task)]
    value = np.asarray(statistic(samples), dtype=float)
    varying = [i for i, sample in enumerate(samples) if len(sample) > 1]
    if not varying:
        return value, np.full_like(value, np.nan), np.full_like(value, np.nan)

    def resampled(*drawn, axis=-1):
        batch = drawn[0].shape[:-1]
        tasks = [np.broadcast_to(sample, (*batch, len(sample))) for sample in samples]
        for i, sample in zip(varying, drawn):
            tasks[i] = sample
        result = np.asarray(statistic(tasks))
        return np.moveaxis(result, -1, 0) if result.ndim > len(batch) else result

    result = stats.bootstrap(
        [samples[i] for i in varying],
        resampled,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return value, np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


Triple = tuple[Sequence[float], Sequence[float], Sequence[float]]  # a task's (runs, floor runs, ceiling runs)


def normalised_bootstrap(
    tasks: Sequence[Triple], statistic, role: Optional[str], level: float, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`stratified_bootstrap` of `statistic(per_task)` over a method's raw scores normalised per task to 0 =
    the floor's mean and 1 = the ceiling's (head-only and full fine-tuning): the runs of all three are drawn
    within each task and each draw is normalised by its drawn floor and ceiling means. `per_task` holds one
    array of normalised runs per task (runs on the last axis). `role` "floor" or "ceiling": the method is
    that reference, whose runs are then drawn once, not twice."""
    samples, layout = [], []
    for runs, floor, ceiling in tasks:
        samples += [floor, ceiling]
        references = {"floor": len(samples) - 2, "ceiling": len(samples) - 1}
        if role not in references:
            samples.append(runs)
        layout.append((references.get(role, len(samples) - 1), references["floor"], references["ceiling"]))

    def normalised(drawn):
        return statistic(
            [
                normalise(drawn[r], drawn[f].mean(axis=-1, keepdims=True), drawn[c].mean(axis=-1, keepdims=True))
                for r, f, c in layout
            ]
        )

    return stratified_bootstrap(samples, normalised, level, resamples, seed)


def aggregate(
    tasks: Sequence[Triple],
    statistic: str = "iqm",
    role: Optional[str] = None,
    level: float = LEVEL,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(value, low, high) of the mean or IQM over all runs of all tasks of a method's normalised scores,
    with the interval of `normalised_bootstrap` (references drawn too)."""
    reduce = {"iqm": iqm, "mean": np.mean}[statistic]
    value, low, high = normalised_bootstrap(
        tasks, lambda per_task: reduce(np.concatenate(per_task, axis=-1), axis=-1), role, level, resamples, seed
    )
    return float(value), float(low), float(high)


def performance_profile(
    tasks: Sequence[Triple],
    thresholds: Sequence[float],
    role: Optional[str] = None,
    level: float = LEVEL,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The score distribution of Agarwal et al. (2021): for each threshold τ, the fraction of a method's
    runs whose normalised score exceeds τ, averaged over tasks (each task weighs the same), with the band
    of `normalised_bootstrap` (references drawn too)."""
    thresholds = np.asarray(thresholds, dtype=float)

    def profile(per_task):
        return np.mean([(task[..., None] > thresholds).mean(axis=-2) for task in per_task], axis=0)

    return normalised_bootstrap(tasks, profile, role, level, resamples, seed)


def expected_max(values: Sequence[float], trials: int, higher_is_better: bool = True) -> float:
    """Expected best validation score of `trials` draws (with replacement) from the observed trials
    (Dodge et al. 2019, "Show your work", eq. 1): Σ_i v_(i)·((i/N)^k − ((i−1)/N)^k)."""
    ordered = worst_first(values, higher_is_better)
    return float((max_weights(len(ordered), trials) * ordered).sum())


def expected_max_std(values: Sequence[float], trials: int, higher_is_better: bool = True) -> float:
    """The standard deviation of the best of `trials` draws (the band of Dodge et al.'s plots):
    √(Σ_i w_i·v_(i)² − E[max]²) with the weights of `expected_max`."""
    ordered = worst_first(values, higher_is_better)
    weights = max_weights(len(ordered), trials)
    mean = (weights * ordered).sum()
    return float(np.sqrt(max((weights * ordered**2).sum() - mean**2, 0.0)))


def worst_first(values: Sequence[float], higher_is_better: bool) -> np.ndarray:
    ordered = np.sort(np.asarray(values, dtype=float))
    return ordered if higher_is_better else ordered[::-1]


def max_weights(n: int, trials: int) -> np.ndarray:
    """P(the best of `trials` draws with replacement from n sorted values is the i-th): (i/n)^k − ((i−1)/n)^k."""
    ranks = np.arange(1, n + 1)
    return (ranks / n) ** trials - ((ranks - 1) / n) ** trials
