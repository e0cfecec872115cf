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


REFERENCE_ROLES = {"head": "floor", "full": "ceiling"}


def reference_triples(part: pd.DataFrame, method: str) -> list[tuple[list, list, list]] | None:
    """Per task of `normalised_runs`' frame, the raw scores of (method's runs, head-only's, full fine-tuning's),
    as statistics.normalised_bootstrap draws them; None where the method lacks a task."""
    scores = {key: group["score"].tolist() for key, group in part.groupby(["method", "task"])}
    tasks = sorted(part["task"].unique())
    if any((method, task) not in scores for task in tasks):
        return None
    return [(scores[(method, task)], scores[("head", task)], scores[("full", task)]) for task in tasks]


def across_tasks_frame(runs: pd.DataFrame, summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per method with runs on every normalisable task: the mean and IQM of the normalised scores over
    all runs of all tasks, with stratified-bootstrap 95 % intervals that draw the head-only and full
    fine-tuning runs too (statistics.aggregate; they cover seeds, not test items), and the method's
    adapter params (the median over its runs, summary_frame's `method_adapter_params`)."""
    part = normalised_runs(runs, summary, model)
    params = summary[summary["model"] == model].groupby("method")["method_adapter_params"].first()
    rows = []
    for method in sorted(part["method"].unique()):
        per_task = reference_triples(part, method)
        if per_task is None:
            continue
        role = REFERENCE_ROLES.get(method)
        mean, iqm = aggregate(per_task, "mean", role), aggregate(per_task, "iqm", role)
        rows.append(
            {
                "model": model,
                "method": method,
                "tasks": len(per_task),
                "runs": sum(len(own) for own, _, _ in per_task),
                "adapter_params": int(params[method]),
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
