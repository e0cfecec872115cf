"""A method's page of the site (harness/report/site.py), methods/<method>.html: per model its cells across
tasks (score, Δ full, Δ lora, each linked to the cell's page) with their cost (adapter params, % of the
backbone, and the seeds' mean train time, wall time and peak memory where the records have them), its
normalised score across tasks, its tuned learning rates, links to the compare page with it and each
other method picked, and the published tables that report it; and
methods/index.html, the list of methods."""

from urllib.parse import quote

import pandas as pd

from harness.report.board import Board
from harness.report.cells import REFERENCES
from harness.report.markdown import tuning_table, with_interval
from harness.report.palette import base_name
from harness.report.site_html import cell_href, escape, frame_table, method_href, page

COST_KEYS = {"train s": "train_seconds", "wall s": "wall_seconds", "peak MB": "peak_memory_mb"}


def mean_cost(records: list[dict], key: str) -> float:
    """The seeds' mean of a cost entry, NaN where no record has it."""
    values = [r["cost"][key] for r in records if r.get("cost", {}).get(key) is not None]
    return sum(values) / len(values) if values else float("nan")


def difference(row: pd.Series, reference: str) -> str:
    value = row[f"diff_{reference}"]
    return "" if pd.isna(value) else f"{value:+.2f}\u00a0{row[f'mark_{reference}']}"  # never split from its mark


def cells_table(part: pd.DataFrame, records: dict[tuple, list[dict]]) -> pd.DataFrame:
    """One row per task of one model's cells of the method."""
    rows = []
    for _, row in part.sort_values("task").iterrows():
        runs = records.get((row["model"], row["method"], row["task"]), [])
        interval = "" if pd.isna(row["low"]) else f" [{row['low']:.2f}, {row['high']:.2f}]"
        rows.append(
            {
                "task": row["task"],
                "score": f"{row['mean']:.2f}{interval}",
                "n": int(row["n"]),
                **{f"Δ {reference}": difference(row, reference) for reference in REFERENCES},
                "adapter params": int(row["adapter_params"]),
                "% backbone": f"{row['pct_backbone']:.3f}",
                **{name: round(mean_cost(runs, key), 1) for name, key in COST_KEYS.items()},
            }
        )
    return pd.DataFrame(rows)


def method_page(
    board: Board, method: str, records: dict[tuple, list[dict]], papers: dict[str, set[str]], footer: str
) -> str:
    """`records`: the runs of each board row; `papers`: each published table's methods."""
    mine = board.summary[board.summary["method"] == method]
    body = [
        '<p class="caption">Scores ×100 (mean over seeds [95 % interval]); Δ: the paired difference to full '
        "fine-tuning / LoRA with its mark (▲ ▼ after Holm's correction, ≈ no difference shown); cost: the seeds' "
        "mean train and wall seconds and peak memory. Click a task for its cell.</p>"
    ]
    for model, part in mine.groupby("model"):
        body += [
            f"<h2>{escape(model)}</h2>",
            frame_table(cells_table(part, records), {"task": lambda row: cell_href(model, method, row["task"], 1)}),
        ]
        aggregate = board.aggregates[(board.aggregates["model"] == model) & (board.aggregates["method"] == method)]
        if not aggregate.empty:
            a = aggregate.iloc[0]
            body.append(
                f"<p>Normalised across {int(a['tasks'])} tasks (0 = head-only, 1 = full fine-tuning): "
                f"{with_interval(a['mean'], a['mean_low'], a['mean_high'], 3)}</p>"
            )
    tuned = board.tuned[board.tuned["method"] == method]
    if not tuned.empty:
        body += [
            "<h2>Tuned learning rates</h2>",
            frame_table(
                tuning_table(tuned).drop(columns=["method"]),
                {"task": lambda row: cell_href(row["model"], method, row["task"], 1)},
            ),
        ]
    others = [m for m in sorted(board.summary["method"].unique()) if m != method]
    if others:
        links = " · ".join(
            f'<a href="../compare.html#{quote(method)}|{quote(other)}">{escape(other)}</a>' for other in others
        )
        body.append(f"<h2>Compare with</h2><p>{links}</p>")
    reported = [name for name, methods in papers.items() if base_name(method) in {base_name(m) for m in methods}]
    if reported:
        links = " · ".join(f'<a href="../papers/{escape(name)}.html">{escape(name)}</a>' for name in reported)
        body.append(f"<h2>Published numbers</h2><p>Beside ours: {links}</p>")
    return page(f"Method: {method}", "".join(body), 1, footer)


def methods_index(board: Board, footer: str) -> str:
    """methods/index.html: every method of the board with its adapter params per model."""
    if board.summary.empty:
        return page("Methods", "<p>No successful runs yet.</p>", 1, footer)
    table = (
        board.summary.groupby(["method", "model"])
        .agg(
            tasks=("task", "nunique"),
            adapter_params=("method_adapter_params", "first"),
            backbone=("backbone_params", "median"),
        )
        .reset_index()
        .assign(pct=lambda table: 100 * table["adapter_params"] / table.pop("backbone"))
        .rename(columns={"adapter_params": "adapter params", "pct": "% backbone"})
    )
    table["% backbone"] = table["% backbone"].map(lambda value: f"{value:.3f}")
    return page("Methods", frame_table(table, {"method": lambda row: method_href(row["method"], 1)}), 1, footer)
