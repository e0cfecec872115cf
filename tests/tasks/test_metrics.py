"""GLUE and packaged-task metrics on small inputs whose values were worked out by hand."""

import math

import numpy as np
import pytest

from tasks import metrics
from tasks.glue import GLUE_TASKS


def test_accuracy_and_binary_f1():
    preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # TP=2, FP=1, FN=1: precision 2/3, recall 2/3, F1 2/3; 3 of 5 right
    values = metrics.accuracy_binary_f1(preds, labels)
    assert values["accuracy"] == pytest.approx(0.6)
    assert values["f1"] == pytest.approx(2 / 3)


def test_matthews_correlation():
    preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2·1 − 1·1)/√(3·3·2·2) = 1/6
    assert metrics.matthews(preds, labels)["matthews_correlation"] == pytest.approx(1 / 6)
    assert metrics.matthews(labels, labels)["matthews_correlation"] == pytest.approx(1.0)


def test_pearson_and_spearman():
    preds, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    # Pearson: centred x = (-1.5,-.5,.5,1.5), y = (-1.5,.5,-.5,1.5): Σxy = 4, Σx² = Σy² = 5 → 0.8
    # Spearman on ranks (1,2,3,4) vs (1,3,2,4): 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8
    values = metrics.correlations(preds, labels)
    assert values["pearson"] == pytest.approx(0.8)
    assert values["spearman"] == pytest.approx(0.8)
    assert values["corr_mean"] == pytest.approx(0.8)


def test_constant_predictions_give_zero_correlation_not_nan():
    values = metrics.correlations(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert values["pearson"] == 0.0 and not math.isnan(values["spearman"])


def test_macro_f1_three_classes():
    preds, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    # class 0: F1 1; class 1: P 1, R 1/2, F1 2/3; class 2: P 1/2, R 1, F1 2/3 → mean 7/9
    assert metrics.accuracy_macro_f1(preds, labels)["macro_f1"] == pytest.approx(7 / 9)


@pytest.mark.parametrize(
    "task,primary,keys",
    [
        ("cola", "matthews_correlation", {"matthews_correlation", "accuracy"}),
        ("sst2", "accuracy", {"accuracy"}),
        ("mrpc", "accuracy", {"accuracy", "f1"}),
        ("qqp", "accuracy", {"accuracy", "f1"}),
        ("stsb", "pearson", {"pearson", "spearman", "corr_mean"}),
        ("mnli", "accuracy", {"accuracy"}),
        ("qnli", "accuracy", {"accuracy"}),
        ("rte", "accuracy", {"accuracy"}),
    ],
)
def test_each_glue_task_has_its_standard_metrics(task, primary, keys):
    spec = GLUE_TASKS[task]
    preds = np.array([0.0, 1.0, 1.0, 0.0]) if spec.num_labels != 1 else np.array([0.1, 2.0, 3.5, 4.9])
    labels = np.array([0.0, 1.0, 0.0, 0.0]) if spec.num_labels != 1 else np.array([0.0, 2.5, 3.0, 5.0])
    values = spec.metric_fn(preds, labels)
    assert set(values) == keys and spec.primary == primary
    assert (spec.num_labels == 1) == (task == "stsb")


@pytest.mark.parametrize("seed", range(20))
def test_accuracy_and_macro_f1_are_bit_for_bit_scikit_learns(seed):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 12))
    labels = rng.integers(0, classes, int(rng.integers(5, 400)))
    preds = np.where(
        rng.random(len(labels)) < 0.6, labels, rng.integers(0, classes + 2, len(labels))
    )  # also unseen labels
    assert metrics.accuracy(preds, labels)["accuracy"] == float(accuracy_score(labels, preds))
    assert metrics.macro_f1(preds, labels) == float(f1_score(labels, preds, average="macro"))
