"""Fixed, seeded, stratified train/validation/test splits for datasets that ship without them.

Fractions 70/15/15, stratified by label, seed `split_seed` (task config, default 42) that never
depends on the run seed: every run of a task sees the same splits. `stratified_split` is
scikit-learn's `train_test_split(..., stratify=labels, random_state=seed)` step for step (the same
indices; tested against it), in numpy, so that a run need not import scikit-learn (~2 s).
"""

import math
from collections import Counter

import numpy as np

from harness.errors import HarnessError
from tasks import metrics
from tasks.base import ImageSplit, Split, TaskData

TRAIN_FRACTION, VALIDATION_FRACTION = 0.70, 0.15


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Examples drawn per class: the floored proportional share, the rest given to the largest
    remainders (ties broken at random), as scikit-learn's `_approximate_mode`."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(
    labels: list, seed: int, train_size: float | int | None = None, test_size: float | None = None
) -> tuple[list[int], list[int]]:
    """Positions 0..n-1 split into (train, test) with each label's share kept, as
    `sklearn.model_selection.train_test_split(range(n), train_size=..., test_size=..., stratify=labels,
    random_state=seed)` (give one of the two; a fraction, or for train_size an int: that many examples)."""
    n = len(labels)
    if isinstance(train_size, int):
        n_train = train_size
    else:
        n_train = math.floor(train_size * n) if train_size is not None else n - math.ceil(test_size * n)
    n_test = n - n_train
    classes, y_indices, class_counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or min(n_train, n_test) < len(classes):
        raise ValueError(
            f"cannot stratify {n} examples of {len(classes)} labels (counts {class_counts.tolist()}) "
            f"into {n_train} and {n_test}"
        )
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = approximate_mode(class_counts, n_train, rng)
    t_i = approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        permuted = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(permuted[: n_i[i]])
        test.extend(permuted[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train).tolist(), rng.permutation(test).tolist()


def stratified_splits(whole: Split | ImageSplit, seed: int) -> dict[str, Split | ImageSplit]:
    labels = list(whole.labels)
    train, rest = stratified_split(labels, seed, train_size=TRAIN_FRACTION)
    validation_share = VALIDATION_FRACTION / (1 - TRAIN_FRACTION)
    validation, test = stratified_split([labels[i] for i in rest], seed, train_size=validation_share)
    return {
        "train": whole.subset(train),
        "validation": whole.subset([rest[i] for i in validation]),
        "test": whole.subset([rest[i] for i in test]),
    }


def stratified_classification(name: str, whole: Split | ImageSplit, label_names: list[str], seed: int) -> TaskData:
    """A single-label classification task split here, scored by accuracy (and macro F1) on test; a class
    too small to be in all three splits is one line naming it."""
    try:
        splits = stratified_splits(whole, seed)
    except ValueError:
        counts = Counter(whole.labels)
        label = min(range(len(label_names)), key=lambda value: counts[value])
        raise HarnessError(
            f"{name}: class '{label_names[label]}' has {counts[label]} of {len(whole)} examples, too few for "
            "stratified train/validation/test splits; every class must be present in every split"
        ) from None
    return TaskData(
        name=name,
        splits=splits,
        num_labels=len(label_names),
        metric_fn=metrics.accuracy_macro_f1,
        primary="accuracy",
        report_split="test",
        label_names=label_names,
    )


def limit_split(split: Split | ImageSplit, limit: int | None, seed: int, stratify: bool) -> Split | ImageSplit:
    """A fixed subset of `limit` examples (all of them when limit is None): stratified by label where
    `stratify` (classification) and every class can keep its share, else the first `limit` of a seeded
    permutation. The same for every run of the task: it depends on `split_seed` only."""
    if limit is None or limit >= len(split):
        return split
    if limit <= 0:
        raise HarnessError(f"task limit must be a positive number of examples or null, got {limit}")
    if stratify:
        try:
            kept, _ = stratified_split(split.labels, seed, train_size=int(limit))
            return split.subset(sorted(kept))
        except ValueError:  # a class too small to split, or fewer examples than classes
            pass
    order = np.random.default_rng(seed).permutation(len(split))[:limit]
    return split.subset(sorted(order.tolist()))
