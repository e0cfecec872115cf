"""Scores normalised across tasks: per task, 0 = head-only and 1 = full fine-tuning (their cell means),
so that methods can be aggregated over tasks (mean, IQM) and profiled (harness/report/plots.py)."""

import pandas as pd

from harness.report.statistics import aggregate, normalise

AGGREGATE_COLUMNS = [
    "model",
    "method",
    "tasks",
    "runs",
    "adapter_params",
    "higher_is_better",
    "mean",
    "mean_low",
    "mean_high",
    "iqm",
    "iqm_low",
    "iqm_high",
]


def normalised_runs(runs: pd.DataFrame, summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """The model's runs on tasks with both references, each score normalised per task to 0 = head-only
    and 1 = full fine-tuning (their cell means) in a `normalised` column."""
    cells = summary[summary["model"] == model].set_index(["method", "task"])["mean"]
    part = runs[runs["model"] == model]
    tasks = [
        t
        for t in sorted(part["task"].unique())
        if ("head", t) in cells.index and ("full", t) in cells.index and cells[("full", t)] != cells[("head", t)]
    ]
    part = part[part["task"].isin(tasks)].copy()
    part["normalised"] = [
        normalise(score, cells[("head", task)], cells[("full", task)])
        for score, task in zip(part["score"], part["task"])
    ]
    return part


def per_task_lists(group: pd.DataFrame, tasks: list[str]) -> list[list[float]]:
    return [group.loc[group["task"] == task, "normalised"].tolist() for task in tasks]


def across_tasks_frame(runs: pd.DataFrame, summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per method with runs on every normalisable task: the mean and IQM of the normalised scores over
    all runs of all tasks, with stratified-bootstrap 95 % intervals (harness/report/statistics.py),
    and the method's adapter params."""
    part = normalised_runs(runs, summary, model)
    tasks = sorted(part["task"].unique())
    rows = []
    for method, group in part.groupby("method"):
        per_task = per_task_lists(group, tasks)
        if any(len(values) == 0 for values in per_task):
            continue
        mean, iqm = aggregate(per_task, "mean"), aggregate(per_task, "iqm")
        rows.append(
            {
                "model": model,
                "method": method,
                "tasks": len(tasks),
                "runs": sum(map(len, per_task)),
                "adapter_params": int(group["adapter_params"].max()),
                "higher_is_better": True,
                "mean": mean[0],
                "mean_low": mean[1],
                "mean_high": mean[2],
                "iqm": iqm[0],
                "iqm_low": iqm[1],
                "iqm_high": iqm[2],
            }
        )
    return (
        pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
        .sort_values(["mean", "method"], ascending=[False, True])
        .reset_index(drop=True)
    )
