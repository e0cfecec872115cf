"""Leaderboard cells with uncertainty, from the runs' per-example predictions where they exist.

A cell is one (model, method, task): its seeds' scores and, when every seed kept its predictions and
the primary metric is a mean over examples (accuracy), the seeds × test-items matrix of per-item
scores, aligned on the examples' stable ids. Estimates and paired comparisons come from
harness/report/statistics.py: the item part of the interval is added only with that matrix; without
it (older records, MCC, F1, correlations) the interval covers seed variation only, and the table says so.
Significance is one rule (`with_significance`): per model, Holm's correction over every pair of cells on
the same task, each unordered pair once; the ▲/▼ marks against full fine-tuning and LoRA and the bold
(the best cell and every cell no cell of its task beats) both read it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from harness.report.statistics import Estimate, estimate, holm, prob_better
from harness.store.clean_items import CleanItems
from harness.store.records import predictions_problem

PER_ITEM_METRICS = {"accuracy", "exact_match"}  # primary metrics that are the mean of a per-example score
REFERENCES = ("full", "lora")
ALPHA = 0.05


def item_scores(
    entry: Optional[dict],
    runs_dir: Path,
    split: str,
    step: Optional[int],
    metric: str,
    clean: Optional[CleanItems] = None,
) -> tuple[Optional[pd.Series], str]:
    """×100 per-example scores of one run (index: example id) at `step`, over the task's clean items
    where it has a clean-items set (harness/store/clean_items.py), or None when the metric is not a
    per-example mean or the run kept no prediction file or one that cannot be used; and, in that last
    case, why (the file missing, or its SHA-256 not the record's), else ""."""
    if metric not in PER_ITEM_METRICS or not entry or step is None:
        return None, ""
    if (lost := predictions_problem(entry, runs_dir)) is not None:
        return None, lost
    table = pd.read_parquet(runs_dir / entry["file"], columns=["split", "step", "example_id", "label", "prediction"])
    table = table[(table["split"].astype(str) == split) & (table["step"] == step)]
    if clean is not None:
        table = table[[clean.keeps(example_id) for example_id in table["example_id"]]]
    if table.empty:
        return None, ""
    scores = 100.0 * (table["label"].to_numpy() == table["prediction"].to_numpy())
    return pd.Series(scores, index=table["example_id"].to_numpy()), ""


@dataclass
class Cell:
    seeds: list[int]
    scores: np.ndarray  # per seed, ×100
    items: Optional[pd.DataFrame]  # seeds × example ids, ×100; None without predictions for every seed

    def estimate(self) -> Estimate:
        if self.items is not None:
            return estimate(per_item=self.items.to_numpy())
        return estimate(self.scores)


def cell_of(runs: pd.DataFrame) -> Cell:
    """The cell of one (model, method, task)'s runs (columns seed, score, items)."""
    runs = runs.sort_values("seed")
    items = None
    if runs["items"].map(lambda s: s is not None).all():
        aligned = pd.DataFrame({seed: series for seed, series in zip(runs["seed"], runs["items"])}).T.dropna(axis=1)
        items = aligned if aligned.shape[1] > 0 else None
    return Cell(list(runs["seed"]), runs["score"].to_numpy(dtype=float), items)


def compare(cell: Cell, reference: Cell, higher_is_better: bool) -> Optional[dict]:
    """The paired difference cell − reference on the seeds (and items) both have: estimate, interval,
    p-value and P(cell better than reference) over seed pairs; None without a shared seed."""
    seeds = sorted(set(cell.seeds) & set(reference.seeds))
    if not seeds:
        return None
    if cell.items is not None and reference.items is not None:
        common = cell.items.columns.intersection(reference.items.columns)
        difference = estimate(per_item=(cell.items.loc[seeds, common] - reference.items.loc[seeds, common]).to_numpy())
    else:
        ours, theirs = pd.Series(cell.scores, cell.seeds), pd.Series(reference.scores, reference.seeds)
        difference = estimate(ours[seeds].to_numpy() - theirs[seeds].to_numpy())
    return {
        "diff": difference.mean,
        "diff_low": difference.low,
        "diff_high": difference.high,
        "p": difference.p_value,
        "p_better": prob_better(cell.scores, reference.scores, higher_is_better),
    }


def mark(diff: float, p_adjusted: float, higher_is_better: bool) -> str:
    """▲ significantly better, ▼ significantly worse (Holm-adjusted p < 0.05), ≈ no difference shown."""
    if np.isnan(p_adjusted) or p_adjusted >= ALPHA:
        return "≈"
    return "▲" if (diff > 0) == higher_is_better else "▼"


def with_comparisons(summary: pd.DataFrame, cells: dict[tuple, Cell]) -> pd.DataFrame:
    """Adds, per reference (full, lora), the paired difference to it, its interval, p and P(better)."""
    summary = summary.copy()
    for reference in REFERENCES:
        results = []
        for row in summary.itertuples():
            other = cells.get((row.model, reference, row.task))
            own = cells[(row.model, row.method, row.task)]
            results.append(
                None if other is None or row.method == reference else compare(own, other, row.higher_is_better)
            )
        for key in ("diff", "diff_low", "diff_high", "p", "p_better"):
            summary[f"{key}_{reference}"] = [np.nan if r is None else r[key] for r in results]
    return summary


def pairs_of(summary: pd.DataFrame, cells: dict[tuple, Cell]) -> dict[tuple, tuple[float, str]]:
    """Every unordered pair of cells on one (model, task) that share a seed, keyed (model, task, frozenset
    of the two methods): the raw p of their paired difference (NaN: nothing to judge by) and the method
    whose cell is worse on the seeds (and items) they share."""
    found = {}
    for (model, task), part in summary.groupby(["model", "task"]):
        methods, higher_is_better = sorted(part["method"]), bool(part["higher_is_better"].iloc[0])
        for i, first in enumerate(methods):
            for second in methods[i + 1 :]:
                result = compare(cells[(model, first, task)], cells[(model, second, task)], higher_is_better)
                if result is not None:
                    worse = second if (result["diff"] > 0) == higher_is_better else first
                    found[(model, task, frozenset((first, second)))] = (result["p"], worse)
    return found


def holm_per_model(pairs: dict[tuple, tuple[float, str]]) -> dict[tuple, float]:
    """Holm-adjusted p of each pair, one family per model (each unordered pair of its table once)."""
    adjusted = {}
    for model in {key[0] for key in pairs}:
        family = [key for key in pairs if key[0] == model]
        adjusted.update(zip(family, holm([pairs[key][0] for key in family])))
    return adjusted


def with_significance(summary: pd.DataFrame, cells: dict[tuple, Cell]) -> pd.DataFrame:
    """One test for the marks and the bold: per model, one Holm family of every pair of cells on the same
    task, each unordered pair once (full vs LoRA and LoRA vs full are one comparison with one adjusted p).
    Adds p_holm and the mark (▲/▼/≈) per reference, and `best`: "best" for the task's best mean, "tied"
    for every other cell testably compared with it (a p-value, not NaN) that no cell of its task beats
    significantly (so a cell marked ▼ is never bold), else ""."""
    summary = summary.copy()
    pairs = pairs_of(summary, cells)
    adjusted = holm_per_model(pairs)
    keys = [(row["model"], row["task"], row["method"]) for _, row in summary.iterrows()]
    for reference in REFERENCES:
        shown = ~summary[f"diff_{reference}"].isna()
        summary[f"p_holm_{reference}"] = [
            adjusted.get((m, t, frozenset((method, reference))), np.nan) if compared else np.nan
            for (m, t, method), compared in zip(keys, shown)
        ]
        summary[f"mark_{reference}"] = [
            mark(row[f"diff_{reference}"], row[f"p_holm_{reference}"], row["higher_is_better"]) if compared else ""
            for (_, row), compared in zip(summary.iterrows(), shown)
        ]
    beaten = {(key[0], key[1], pairs[key][1]) for key, p in adjusted.items() if p < ALPHA}
    sign = np.where(summary["higher_is_better"], 1.0, -1.0)
    leader = summary.assign(_key=sign * summary["mean"]).groupby(["model", "task"])["_key"].transform("idxmax")
    summary["best"] = [
        "best"
        if leader[index] == index
        else "tied"
        if not np.isnan(pairs.get((m, t, frozenset((method, summary.at[leader[index], "method"]))), (np.nan,))[0])
        and (m, t, method) not in beaten
        else ""
        for index, (m, t, method) in zip(summary.index, keys)
    ]
    return summary
