"""Metrics computed with scikit-learn/scipy (no hub metrics: `evaluate` cannot load them offline).

Every function takes predictions and references as numpy arrays and returns plain floats in the
metric's natural range (accuracy in [0, 1]); the leaderboard shows them ×100.
"""
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def accuracy(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(labels, preds))}


def accuracy_macro_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {**accuracy(preds, labels), "macro_f1": float(f1_score(labels, preds, average="macro"))}


def accuracy_binary_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {**accuracy(preds, labels), "f1": float(f1_score(labels, preds, average="binary"))}


def matthews(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"matthews_correlation": float(matthews_corrcoef(labels, preds)), **accuracy(preds, labels)}


def correlations(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """STS-B: Pearson (LoRA's reported metric), Spearman, and their mean (AdaLoRA's)."""
    if np.std(preds) == 0 or np.std(labels) == 0:  # undefined correlation: report 0, not NaN
        pearson = spearman = 0.0
    else:
        pearson, spearman = float(pearsonr(preds, labels)[0]), float(spearmanr(preds, labels)[0])
    return {"pearson": pearson, "spearman": spearman, "corr_mean": (pearson + spearman) / 2}
