"""The leaderboard as Markdown: per model a table of cells (mean [interval], n, paired marks), the
across-task aggregates, the tuning table, the sanity flags and the convergence section."""

import numpy as np
import pandas as pd

from harness.report.cells import PER_ITEM_METRICS, REFERENCES
from harness.report.convergence import convergence_section
from harness.report.flags import flag_note, flags
from harness.report.statistics import expected_max


def cell(row: pd.Series, stat: str) -> str:
    """The cell's text; the best cell of its task and those tied with it start with `**` (bold)."""
    n = int(row["n"])
    centre = f"{row['median']:.2f}" if stat == "median" else f"{row['mean']:.2f}"
    if row["best"]:
        centre = f"**{centre}**"
    if stat == "median":
        return f"{centre} (n={n})"
    interval = "" if pd.isna(row["low"]) else f" [{row['low']:.2f}, {row['high']:.2f}]"
    return f"{centre}{interval} (n={n})"


def difference(row: pd.Series, reference: str) -> str:
    value = row[f"diff_{reference}"]
    return "—" if pd.isna(value) else f"{value:+.2f} {row[f'mark_{reference}']}"


def wide_table(summary: pd.DataFrame, model: str, stat: str) -> pd.DataFrame:
    """The printed table of one model: methods as rows, a score and a Δ column per task and reference."""
    part = summary[summary["model"] == model]
    tasks = sorted(part["task"].unique())
    rows = []
    for method, group in part.groupby("method"):
        by_task = group.set_index("task")
        kept, initial = (
            int(group[f"method_{column}"].iloc[0]) for column in ("adapter_params", "adapter_params_initial")
        )
        row = {
            "method": method,
            "adapter params": f"{kept:,}" + (f" (of {initial:,})" if initial != kept else ""),
            "% backbone": f"{100 * kept / group['backbone_params'].median():.3f}",
            "_sort": kept,
        }
        for task in tasks:
            present = task in by_task.index
            row[task] = cell(by_task.loc[task], stat) if present else "—"
            for reference in REFERENCES:
                row[f"Δ {reference} {task}"] = difference(by_task.loc[task], reference) if present else "—"
        if len(tasks) > 1:
            row["avg"] = f"{by_task['score'].mean():.2f}" if len(by_task) == len(tasks) else "—"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["_sort", "method"], ascending=[False, True])
    return table.drop(columns="_sort").reset_index(drop=True)


def tuning_table(tuned: pd.DataFrame) -> pd.DataFrame:
    """The tuned values with the trials and the expected maximum over 1..trials of them."""
    table = tuned.drop(columns=["search scores", "higher_is_better", "edge gain"]).copy()
    table["E[max] 1…k"] = [
        " / ".join(f"{expected_max(scores, k, higher):.2f}" for k in range(1, len(scores) + 1))
        for scores, higher in zip(tuned["search scores"], tuned["higher_is_better"])
    ]
    return table


def with_interval(value: float, low: float, high: float, digits: int) -> str:
    """`value [low, high]`, or the value alone where there is no interval (e.g. one run per task)."""
    fixed = lambda x: f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: a value that rounds to zero prints 0, not -0
    interval = "" if np.isnan(low) else f" [{fixed(low)}, {fixed(high)}]"
    return f"{fixed(value)}{interval}"


def across_tasks(aggregates: pd.DataFrame) -> pd.DataFrame:
    """The printed across-tasks table of one model (`across_tasks_frame`)."""
    table = aggregates[["method", "tasks", "runs"]].copy()
    for name, key in (("mean", "mean"), ("IQM", "iqm")):
        table[name] = [
            with_interval(row[key], row[f"{key}_low"], row[f"{key}_high"], 3) for _, row in aggregates.iterrows()
        ]
    return table


def caption(summary: pd.DataFrame, model: str, stat: str, which: str) -> str:
    part = summary[summary["model"] == model]
    metrics = ", ".join(
        f"{t}: {m} on {s}" for t, m, s in part[["task", "metric", "split"]].drop_duplicates().itertuples(index=False)
    )
    with_items = part.dropna(subset=["items"])
    covers = (
        f"seeds and the {', '.join(sorted({f'{int(i):,}' for i in with_items['items']}))} test items"
        if len(with_items) == len(part)
        else "seeds, and test items where every seed kept its predictions"
        if len(with_items)
        else f"seed variation only ({without_items(part)})"
    )
    dof = "; t with Welch–Satterthwaite degrees of freedom of the seed and item parts" if len(with_items) else ""
    centre = "median over seeds" if stat == "median" else f"mean over seeds [95 % interval over {covers}{dof}]"
    return (
        f"Scores ×100 ({metrics}), {which} evaluation, {centre} (n = seeds). Adapter params "
        f"exclude the task head; for methods that prune a rank budget, the count kept at the end "
        f"(of the count trained at the start), the median over the method's runs; % of the backbone's "
        f"parameters. Δ full, Δ lora: paired difference to full fine-tuning and to LoRA on the same seeds "
        f"(and items); ▲/▼ significantly better/worse, ≈ no difference shown, by one test: p < 0.05 after "
        f"Holm's correction over every pair of cells on the same task in this table, each pair counted once. "
        f"Bold: the task's best cell and every cell that no cell of its task beats by that test (a ▼ cell is "
        f"never bold).{clean_items_sentence(part)}{lost_items_sentence(part)}"
    )


def lost_notes(part: pd.DataFrame) -> pd.Series:
    """Per cell, why some of its runs' predictions could not be used ("" where none; harness/report/frames.py)."""
    return part["items_lost"] if "items_lost" in part else pd.Series("", index=part.index)


def without_items(part: pd.DataFrame) -> str:
    """Why no cell of a model's table has per-item scores: its metrics, predictions never kept, or
    predictions that no longer match their records."""
    per_item = part["metric"].isin(PER_ITEM_METRICS)
    lost = lost_notes(part) != ""
    reasons = [
        *(f"{metric} is not a mean over test items" for metric in sorted(set(part.loc[~per_item, "metric"]))),
        *(["these records kept no predictions"] if (per_item & ~lost).any() else []),
        *(["predictions files no longer match their records"] if lost.any() else []),
    ]
    return "; ".join(reasons)


def lost_items_sentence(part: pd.DataFrame) -> str:
    """Which cells lost their per-item data, and why (a predictions file missing or changed since its record
    was written), or "" where none did."""
    lost = part[lost_notes(part) != ""]
    if lost.empty:
        return ""
    cells = "; ".join(f"{row.method} on {row.task} ({row.items_lost})" for row in lost.itertuples())
    return (
        " Per-item data lost (a run's predictions file missing or not the one its record names; listed under "
        f"Skipped record files): the run counts with its recorded score, and its cell's interval covers seeds only: "
        f"{cells}."
    )


def clean_items_sentence(part: pd.DataFrame) -> str:
    """Which evaluation items were scored where a task's clean-items set left some out
    (harness/store/clean_items.py), or "" where none did."""
    notes = (
        sorted({note for notes in part["clean_items"].dropna() for note in notes.split("; ") if note})
        if "clean_items" in part
        else []
    )
    if not notes:
        return ""
    return (
        " Scored on clean items only (every run rescored from its predictions): an item whose text occurs twice "
        f"in the task, in its own split or in another, is left out; {'; '.join(notes)}."
    )


def markdown(
    summary: pd.DataFrame,
    aggregates: pd.DataFrame,
    stat: str,
    which: str,
    problems: list[str],
    tuned: pd.DataFrame,
    sweep_caption: str | None = None,
    flag_notes: dict[str, str] | None = None,
) -> str:
    parts = ["# Leaderboard", "", *([" ".join(sweep_caption.split()), ""] if sweep_caption else [])]
    if summary.empty:
        parts.append("No successful runs yet.")
    for model in sorted(summary["model"].unique()):
        parts += [
            f"## {model}",
            "",
            caption(summary, model, stat, which),
            "",
            wide_table(summary, model, stat).to_markdown(index=False, disable_numparse=True),
            "",
        ]
        normalised = aggregates[aggregates["model"] == model]
        if not normalised.empty:
            parts += [
                "Across tasks: every seed's score normalised per task to 0 = head-only, 1 = full fine-tuning "
                "(cell means); mean and interquartile mean over all runs of all tasks, [95 % stratified bootstrap "
                "interval: the method's, head-only's and full fine-tuning's runs resampled within each task, each "
                "draw normalised by its drawn reference means; it covers seeds, not test items; none where every "
                "task has a single run].",
                "",
                across_tasks(normalised).to_markdown(index=False, disable_numparse=True),
                "",
            ]
        found = flags(summary, model, tuned)
        parts += ["Sanity flags:", "", *[f"- {flag}" for flag in found], ""] if found else ["Sanity flags: none.", ""]
        note = flag_note(flag_notes, model)
        parts += [note, ""] if note else []
    if not tuned.empty:
        parts += [
            "## Tuned learning rates",
            "",
            "Chosen per (method, task): the searched (lr / head lr) pair whose search-seed run had the best "
            "primary metric on the selection split; every seed ran with it, and the table above shows only those runs. "
            "Trials: points searched (a log grid extended while its best point was on its edge, then refined; "
            "harness/protocol/lr_search.py), the same number for every method. E[max] k: the expected best selection "
            "score of "
            "k trials drawn from those searched (Dodge et al. 2019), the tuning budget's return.",
            "",
            tuning_table(tuned).to_markdown(index=False, disable_numparse=True),
            "",
        ]
    if not summary.empty:
        parts += convergence_section(summary)
    if problems:
        parts += ["## Skipped record files", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(parts).rstrip() + "\n"
