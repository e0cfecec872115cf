"""A paper's published table beside our runs: `python -m harness.leaderboard --paper <table>`.

results/reference/<table>.csv holds the published numbers (paper, table, model, method, variant,
params, task, metric, split, value, stat, which, protocol, source); our runs are the records of the
sweep named <table> (the experiment configs that reproduce the table set it). A row's `task` is the
harness task it is compared on (the protocol column says where the paper's data differ). Rows are
matched on model, method, variant, task, metric and split (the metric as our runs record it, e.g.
STS-B's corr_mean; an empty split is the task's report split, MNLI-mismatched rows name
validation_mismatched). Ours follows the table's own selection rule: `stat` over seeds (mean ± std,
or median) of the `which` evaluation (final, or best = the epoch with the best validation score),
×100, with the number of seeds; "no runs" where there is none.
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.config.paths import REFERENCE_DIR
from harness.errors import HarnessError
from harness.report.frames import runs_frame
from harness.store.records import RecordStore, method_label

SELECTION = {"stat": ("mean", "median"), "which": ("final", "best")}


def reference_table(table: str, reference_dir: Path = REFERENCE_DIR) -> pd.DataFrame:
    path = reference_dir / f"{table}.csv"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in reference_dir.glob("*.csv")))
        raise HarnessError(f"no published table '{table}'; available: {available}")
    reference = pd.read_csv(path, dtype={"variant": str, "split": str}).fillna({"variant": "", "split": ""})
    for column, allowed in SELECTION.items():
        bad = sorted(set(reference[column]) - set(allowed))
        if bad:
            raise HarnessError(f"{path.name}: column '{column}' has {bad}; allowed: {', '.join(allowed)}")
    reference["label"] = [method_label(m, v) for m, v in zip(reference["method"], reference["variant"])]
    return reference


def ours(records: list[dict], reference: pd.DataFrame) -> dict[tuple, dict]:
    """Our score per (model, label, task, metric, split) of the reference rows, by each row's rule."""
    found = {}
    rules = reference[["metric", "split", "which"]].drop_duplicates().itertuples(index=False)
    for metric, split, which in rules:
        runs = runs_frame(records, which=which, metric=metric, split=split or None)
        for (model, label, task), group in runs.groupby(["model", "method", "task"]):
            rows = reference[
                (reference["model"] == model)
                & (reference["label"] == label)
                & (reference["task"] == task)
                & (reference["metric"] == metric)
                & (reference["split"] == split)
                & (reference["which"] == which)
            ]
            for stat in rows["stat"].unique():
                scores = group["score"]
                found[(model, label, task, metric, split)] = {
                    "n": len(scores),
                    "centre": scores.median() if stat == "median" else scores.mean(),
                    "std": scores.std(),
                    "stat": stat,
                    "adapter_params": group["adapter_params"].median(),
                }
    return found


def cell(mine: dict | None) -> str:
    if mine is None:
        return "no runs"
    if mine["stat"] == "median":
        return f"{mine['centre']:.2f} (median, n={mine['n']})"
    spread = f" ± {mine['std']:.2f}" if mine["n"] > 1 else ""
    return f"{mine['centre']:.2f}{spread} (n={mine['n']})"


@dataclass
class PaperView:
    title: str
    caption: str
    table: pd.DataFrame
    problems: list[str]


def paper_view(table: str, results_dir: str, reference_dir: Path = REFERENCE_DIR) -> PaperView:
    """A published table's rows with ours beside them (`paper_markdown`, and the site's paper pages)."""
    reference = reference_table(table, reference_dir)
    records, problems = RecordStore(results_dir).load_all()
    found = ours([r for r in records if r.get("sweep") == table], reference)
    rows = []
    for row in reference.itertuples():
        mine = found.get((row.model, row.label, row.task, row.metric, row.split))
        rows.append(
            {
                "model": row.model,
                "method": row.label,
                "task": row.task,
                "metric": row.metric + (f" ({row.split})" if row.split else ""),
                "params (paper)": "—" if pd.isna(row.params) else f"{int(row.params):,}",
                "params (ours)": "—" if mine is None else f"{int(mine['adapter_params']):,}",
                "published": str(row.value),
                "ours": cell(mine),
                "difference": "—" if mine is None else f"{mine['centre'] - row.value:+.2f}",
            }
        )
    first = reference.iloc[0]
    rules = ", ".join(
        sorted({f"{s} over seeds of the {w} evaluation" for s, w in zip(reference["stat"], reference["which"])})
    )
    return PaperView(
        f"{first['paper']}, {first['table']}: published vs ours",
        f"Ours: records of sweep `{table}` in {results_dir}, ×100, by the table's rule ({rules}; n = seeds). "
        f"Published protocol and source per row in results/reference/{table}.csv.",
        pd.DataFrame(rows),
        problems,
    )


def paper_markdown(table: str, results_dir: str, reference_dir: Path = REFERENCE_DIR) -> str:
    view = paper_view(table, results_dir, reference_dir)
    lines = [f"# {view.title}", "", view.caption, "", view.table.to_markdown(index=False, disable_numparse=True), ""]
    if view.problems:
        lines += ["## Skipped record files", "", *[f"- {p}" for p in view.problems], ""]
    return "\n".join(lines)
