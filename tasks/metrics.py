"""Metrics computed with numpy, scikit-learn and scipy (no hub metrics: `evaluate` cannot load them offline).

Every function takes predictions and references as numpy arrays and returns plain floats in the
metric's natural range (accuracy in [0, 1]); the leaderboard shows them ×100. Accuracy and macro F1
(every packaged task's metrics) are numpy, bit for bit scikit-learn's (tested), so that a run need
not import scikit-learn; the GLUE metrics import it (and scipy) when they are used.
"""

import numpy as np


def accuracy(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(np.mean(np.asarray(labels) == np.asarray(preds)))}


def macro_f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 per label present in either array, 2·tp / (true + predicted), averaged over the labels."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    present = np.union1d(labels, preds)
    tp = np.array([np.sum((labels == value) & (preds == value)) for value in present], dtype=np.float64)
    true = np.array([np.sum(labels == value) for value in present], dtype=np.float64)
    predicted = np.array([np.sum(preds == value) for value in present], dtype=np.float64)
    return float(np.mean(2.0 * tp / (true + predicted)))


def accuracy_macro_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {**accuracy(preds, labels), "macro_f1": macro_f1(preds, labels)}


def accuracy_binary_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    return {**accuracy(preds, labels), "f1": float(f1_score(labels, preds, average="binary"))}


def matthews(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    return {"matthews_correlation": float(matthews_corrcoef(labels, preds)), **accuracy(preds, labels)}


def correlations(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """STS-B: Pearson (LoRA's reported metric), Spearman, and their mean (AdaLoRA's)."""
    from scipy.stats import pearsonr, spearmanr

    if np.std(preds) == 0 or np.std(labels) == 0:  # undefined correlation: report 0, not NaN
        pearson = spearman = 0.0
    else:
        pearson, spearman = float(pearsonr(preds, labels)[0]), float(spearmanr(preds, labels)[0])
    return {"pearson": pearson, "spearman": spearman, "corr_mean": (pearson + spearman) / 2}
