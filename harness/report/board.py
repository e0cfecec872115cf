"""A leaderboard assembled from one results folder's records (the protocol's pick of each tuned cell),
and written as leaderboard.{md,csv,tex} with its figures."""

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.report import plots
from harness.report.cells import REFERENCES
from harness.report.convergence import convergence_frame
from harness.report.frames import runs_frame, summary_frame
from harness.report.latex import latex
from harness.report.markdown import markdown
from harness.report.normalised import AGGREGATE_COLUMNS, across_tasks_frame, normalised_runs
from harness.report.selection import select_tuned
from harness.store.records import RecordStore


@dataclass
class Board:
    """Everything a leaderboard shows, assembled from one results folder's records."""

    records: list[dict]  # the runs shown (a protocol's other search points left out)
    problems: list[str]  # invalid record files, with their reasons
    runs: pd.DataFrame
    summary: pd.DataFrame
    aggregates: pd.DataFrame
    tuned: pd.DataFrame
    stat: str
    which: str

    @property
    def models(self) -> list[str]:
        return sorted(self.summary["model"].unique())

    def normalised(self) -> dict[str, pd.DataFrame]:
        return {model: normalised_runs(self.runs, self.summary, model) for model in self.models}


def assemble(results_dir: str, sweep: str | None = None, stat: str = "mean", which: str = "final") -> Board:
    records, problems = RecordStore(results_dir).load_all()
    if sweep:
        records = [r for r in records if r.get("sweep") == sweep]
    records, tuned = select_tuned(records)  # a protocol's other grid points chose the values; they are not results
    runs = runs_frame(records, which, runs_dir=RecordStore(results_dir).runs_dir)
    summary = summary_frame(runs, stat) if not runs.empty else pd.DataFrame(columns=["model"])
    models = sorted(summary["model"].unique())
    aggregates = (
        pd.concat([across_tasks_frame(runs, summary, model) for model in models])
        if models
        else pd.DataFrame(columns=AGGREGATE_COLUMNS)
    )
    return Board(records, problems, runs, summary, aggregates, tuned, stat, which)


SUMMARY_COLUMNS = [
    "model",
    "method",
    "task",
    "metric",
    "split",
    "n",
    "items",
    "mean",
    "low",
    "high",
    "std",
    "median",
    "best",
    *[
        f"{key}_{reference}"
        for reference in REFERENCES
        for key in ("diff", "diff_low", "diff_high", "p", "p_holm", "mark", "p_better")
    ],
    "adapter_params",
    "adapter_params_initial",
    "backbone_params",
    "pct_backbone",
]


def write_csvs(board: Board, out: Path) -> list[Path]:
    """leaderboard.csv (one row per cell), leaderboard_across_tasks.csv and convergence.csv (final vs best per cell)."""
    paths = [out / "leaderboard.csv", out / "leaderboard_across_tasks.csv", out / "convergence.csv"]
    board.summary[SUMMARY_COLUMNS].to_csv(paths[0], index=False, float_format="%.4f")
    board.aggregates.drop(columns="higher_is_better").to_csv(paths[1], index=False, float_format="%.4f")
    convergence_frame(board.summary).to_csv(paths[2], index=False, float_format="%.4f")
    return paths


def build_and_write(
    results_dir: str,
    sweep: str | None = None,
    stat: str = "mean",
    which: str = "final",
    out_dir: str | None = None,
    with_plot: bool = True,
    sweep_caption: str | None = None,
    flag_notes: dict[str, str] | None = None,
    latex_width: str = "column",
) -> str:
    """Writes leaderboard.{md,csv,tex}, leaderboard_across_tasks.csv and the plots (harness/report/plots.py),
    and returns the Markdown (headed by the sweep's caption, if it has one; under a model's sanity flags the
    protocol's explanation of those it could not clear, `flag_notes`: model → text); the LaTeX tables fit a
    two-column article's column or, `latex_width` "page", its page (harness/report/latex.py)."""
    board = assemble(results_dir, sweep, stat, which)
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(
        board.summary, board.aggregates, stat, which, board.problems, board.tuned, sweep_caption, flag_notes
    )
    (out / "leaderboard.md").write_text(text)
    if not board.runs.empty:
        write_csvs(board, out)
        (out / "leaderboard.tex").write_text(latex(board.summary, stat, which, board.tuned, latex_width))
        if with_plot:
            plots.write_all(out, board.summary, board.aggregates, board.normalised(), board.tuned)
    for problem in board.problems:
        print(f"warning: record {problem}", file=sys.stderr)
    return text
