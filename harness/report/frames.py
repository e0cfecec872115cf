"""Records to frames: one row per run (the score on the report split, cost, counts, its setting), and the
summary of each cell (harness/report/cells.py: mean, interval, paired comparisons)."""

from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.cells import Cell, cell_of, item_scores, with_comparisons, with_significance
from harness.store.clean_items import CleanItems, applies
from harness.store.identity import semantic_config
from harness.store.records import record_label, reported_adapter_params

METRIC_RANGE = {"accuracy": (0.0, 100.0), "f1": (0.0, 100.0), "macro_f1": (0.0, 100.0)}  # ×100


def setting_of(record: dict) -> dict:
    """The record's config as flat `a.b` keys, without what varies between seeds of one setting."""
    config = semantic_config(record.get("config") or {})
    config.pop("seed", None)
    return pd.json_normalize(config, sep=".").iloc[0].to_dict() if config else {}


def separate_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of one (model, method, task) that differ in more than the seed are different rows: the
    keys that differ are appended to the method label, so they are never averaged together."""
    runs = runs.copy()
    for _, group in runs.groupby(["model", "method", "task"]):
        settings = pd.DataFrame(list(group["setting"]), index=group.index).astype(str)
        differing = [key for key in settings.columns if settings[key].nunique() > 1]
        for index in group.index if differing else []:
            detail = ", ".join(f"{key}={settings.at[index, key]}" for key in differing)
            runs.at[index, "method"] = f"{runs.at[index, 'method']} ({detail})"
    return runs.drop(columns="setting")


def runs_frame(
    records: list[dict],
    which: str = "final",
    metric: str | None = None,
    split: str | None = None,
    runs_dir: Path | None = None,
) -> pd.DataFrame:
    """One row per successful run: its score ×100 in the primary metric (or `metric`, where the
    run recorded it) on the report split (or `split`, e.g. MNLI's validation_mismatched); with `runs_dir`,
    its per-item scores read from its predictions over the task's clean items
    (harness/store/clean_items.py), and the score is then their mean (the run rescored); `items_lost` says
    why a run has none where its predictions file is missing or no longer matches its record ("" elsewhere)."""
    rows = []
    for record in records:
        if record["status"] != "success":
            continue
        metrics, params = record["metrics"], record["params"]
        where = split or metrics["report_split"]
        values = (metrics.get(which) or {}).get(where) or {}
        name = metric or metrics["primary"]
        if name not in values:
            continue
        entry = record.get("predictions")
        step = (entry or {}).get("steps", {}).get(which)
        best = ((metrics.get("best") or {}).get(where) or {}).get(name)
        clean = applies((record.get("config") or {}).get("task") or {})
        items, lost = (None, "") if runs_dir is None else item_scores(entry, runs_dir, where, step, name, clean)
        rows.append(
            {
                "model": record["model"],
                "method": record_label(record),
                "task": record["task"],
                "seed": record["seed"],
                "metric": name,
                "split": where,
                "higher_is_better": metrics["higher_is_better"],
                "score": 100 * values[name] if items is None or clean is None else float(items.mean()),
                "best_score": float("nan") if best is None else 100 * best,
                "last_gain": last_gain(metrics, name, where),
                "items": items,
                "clean_items": clean_note(clean, where, items),
                "items_lost": lost,
                "adapter_params": reported_adapter_params(params),
                "adapter_params_initial": params["adapter"],
                "backbone_params": params["backbone"],
                "sweep": record.get("sweep"),
                "setting": setting_of(record),
            }
        )
    columns = [
        "model",
        "method",
        "task",
        "seed",
        "metric",
        "split",
        "higher_is_better",
        "score",
        "best_score",
        "last_gain",
        "items",
        "clean_items",
        "items_lost",
        "adapter_params",
        "adapter_params_initial",
        "backbone_params",
        "sweep",
        "setting",
    ]
    return separate_settings(pd.DataFrame(rows, columns=columns))


def clean_note(clean: CleanItems | None, split: str, items: pd.Series | None) -> str:
    """What the run's score covers, for the caption: its clean items (rescored from its predictions), or
    why it is the recorded score over every item ("" where the task has no clean-items set)."""
    if clean is None:
        return ""
    if items is None:
        return f"{clean.task} {split}: recorded scores over every item (no usable per-item predictions to rescore)"
    return clean.describe(split)


def last_gain(metrics: dict, name: str, report_split: str) -> float:
    """What the run's last evaluation interval added (×100, in the better direction) on the selection split
    (validation where the curve has it, else the report split): well above 0, the curve was still rising
    when the budget ended. NaN where the run was evaluated fewer than twice."""
    curve = metrics.get("curve") or []
    splits = {point["split"] for point in curve if name in point["values"]}
    split = "validation" if "validation" in splits else report_split
    values = [
        point["values"][name]
        for point in sorted(curve, key=lambda point: point["step"])
        if point["split"] == split and name in point["values"]
    ]
    sign = 1 if metrics["higher_is_better"] else -1
    return 100 * sign * (values[-1] - values[-2]) if len(values) > 1 else float("nan")


def summary_frame(runs: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """One row per (model, method, task): n, mean with its 95 % interval, std, median, the chosen
    centre, the paired comparisons with full fine-tuning and LoRA (harness/report/cells.py); adapter
    params are the median over the cell's runs, and `method_adapter_params` (`_initial`) the median over
    all the method's runs of the model, the one value a method's row (table, across tasks, plots) shows."""
    grouped = runs.groupby(["model", "method", "task"], sort=True)
    summary = grouped.agg(
        metric=("metric", "first"),
        split=("split", "first"),
        higher_is_better=("higher_is_better", "first"),
        n=("score", "size"),
        mean=("score", "mean"),
        std=("score", "std"),
        median=("score", "median"),
        best_mean=("best_score", "mean"),
        last_gain=("last_gain", "mean"),
        adapter_params=("adapter_params", "median"),
        adapter_params_initial=("adapter_params_initial", "median"),
        backbone_params=("backbone_params", "median"),
        clean_items=("clean_items", lambda notes: "; ".join(sorted(set(notes) - {""}))),
        items_lost=("items_lost", lambda notes: "; ".join(sorted(set(notes) - {""}))),
    ).reset_index()
    cells = cells_of(runs)
    estimates = [cells[(row.model, row.method, row.task)].estimate() for row in summary.itertuples()]
    bounds = [
        METRIC_RANGE.get(metric, (-np.inf, np.inf)) for metric in summary["metric"]
    ]  # an interval never leaves the metric's range
    summary["low"] = [max(e.low, low) for e, (low, _) in zip(estimates, bounds)]
    summary["high"] = [min(e.high, high) for e, (_, high) in zip(estimates, bounds)]
    summary["items"] = [e.items for e in estimates]
    summary["score"] = summary[stat]
    summary = with_significance(with_comparisons(summary, cells), cells)
    summary["pct_backbone"] = 100 * summary["adapter_params"] / summary["backbone_params"]
    params = ["adapter_params", "adapter_params_initial"]
    per_method = runs.groupby(["model", "method"])[params].median().add_prefix("method_")  # one value per row
    summary = summary.join(per_method, on=["model", "method"])
    for column in (*params, *per_method.columns):
        summary[column] = summary[column].astype(int)
    return summary


def cells_of(runs: pd.DataFrame) -> dict[tuple, Cell]:
    """The cell (harness/report/cells.py) of every (model, method, task) of a runs frame, by that key: what
    `summary_frame` summarises, for views that compare any two cells (the site's compare page)."""
    return {key: cell_of(group) for key, group in runs.groupby(["model", "method", "task"], sort=True)}
