"""Leaderboards from run records: `python -m harness.leaderboard` (harness/leaderboard.py; also run at the end of sweeps).

Reads <results_dir>/runs/*.json (success only; invalid records are listed with their reason and
skipped) and writes <out>/leaderboard.{md,csv,tex,png} (default out: results/scratch; the official
leaderboard is written only by `python -m harness.tune sweep=official`): per model, one row per method (and variant), one column per
task; cells (the best of each task and those tied with it in bold) are the primary metric ×100 on the task's report split, the mean over seeds with its 95 %
interval (harness/report/cells.py: seeds and, from the runs' predictions, test items) and n (or the
median), at the final evaluation (or the best one); adapter params (task head excluded) absolute and
as % of the backbone; Δ full / Δ lora: the paired difference to full fine-tuning / LoRA on the same
seeds and items, marked ▲ ▼ where significant after Holm's correction over the model's table (≈: not
shown to differ); sanity flags under each table.
"""
import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.records import RecordStore, method_label, reported_adapter_params, semantic_config
from harness.report import plots
from harness.report.cells import REFERENCES, cell_of, item_scores, with_best, with_comparisons
from harness.report.normalised import AGGREGATE_COLUMNS, across_tasks_frame, normalised_runs
from harness.report.statistics import expected_max
from harness.selection import select_tuned

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


def runs_frame(records: list[dict], which: str = "final", metric: str | None = None,
               split: str | None = None, runs_dir: Path | None = None) -> pd.DataFrame:
    """One row per successful run: its score ×100 in the primary metric (or `metric`, where the
    run recorded it) on the report split (or `split`, e.g. MNLI's validation_mismatched)."""
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
        rows.append({
            "model": record["model"], "method": method_label(record["method"], record.get("variant")), "task": record["task"],
            "seed": record["seed"], "metric": name, "split": where, "higher_is_better": metrics["higher_is_better"],
            "score": 100 * values[name], "best_score": float("nan") if best is None else 100 * best,
            "last_gain": last_gain(metrics, name, where),
            "items": None if runs_dir is None else item_scores(entry, runs_dir, where, step, name),
            "adapter_params": reported_adapter_params(params),
            "adapter_params_initial": params["adapter"], "backbone_params": params["backbone"],
            "sweep": record.get("sweep"), "setting": setting_of(record),
        })
    columns = ["model", "method", "task", "seed", "metric", "split", "higher_is_better", "score", "best_score", "last_gain", "items",
               "adapter_params", "adapter_params_initial", "backbone_params", "sweep", "setting"]
    return separate_settings(pd.DataFrame(rows, columns=columns))


def last_gain(metrics: dict, name: str, report_split: str) -> float:
    """What the run's last evaluation interval added (×100, in the better direction) on the selection split
    (validation where the curve has it, else the report split): well above 0, the curve was still rising
    when the budget ended. NaN where the run was evaluated fewer than twice."""
    curve = metrics.get("curve") or []
    splits = {point["split"] for point in curve if name in point["values"]}
    split = "validation" if "validation" in splits else report_split
    values = [point["values"][name] for point in sorted(curve, key=lambda point: point["step"])
              if point["split"] == split and name in point["values"]]
    sign = 1 if metrics["higher_is_better"] else -1
    return 100 * sign * (values[-1] - values[-2]) if len(values) > 1 else float("nan")


def summary_frame(runs: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """One row per (model, method, task): n, mean with its 95 % interval, std, median, the chosen
    centre, the paired comparisons with full fine-tuning and LoRA (harness/report/cells.py)."""
    grouped = runs.groupby(["model", "method", "task"], sort=True)
    summary = grouped.agg(
        metric=("metric", "first"), split=("split", "first"), higher_is_better=("higher_is_better", "first"),
        n=("score", "size"), mean=("score", "mean"), std=("score", "std"), median=("score", "median"),
        best_mean=("best_score", "mean"), last_gain=("last_gain", "mean"), adapter_params=("adapter_params", "median"),
        adapter_params_initial=("adapter_params_initial", "median"), backbone_params=("backbone_params", "median"),
    ).reset_index()
    cells = {key: cell_of(group) for key, group in grouped}
    estimates = [cells[(row.model, row.method, row.task)].estimate() for row in summary.itertuples()]
    bounds = [METRIC_RANGE.get(metric, (-np.inf, np.inf)) for metric in summary["metric"]]  # an interval never leaves the metric's range
    summary["low"] = [max(e.low, low) for e, (low, _) in zip(estimates, bounds)]
    summary["high"] = [min(e.high, high) for e, (_, high) in zip(estimates, bounds)]
    summary["items"] = [e.items for e in estimates]
    summary["score"] = summary[stat]
    summary = with_best(with_comparisons(summary, cells), cells)
    summary["pct_backbone"] = 100 * summary["adapter_params"] / summary["backbone_params"]
    for column in ("adapter_params", "adapter_params_initial"):
        summary[column] = summary[column].astype(int)
    return summary


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
        kept, initial = int(group["adapter_params"].max()), int(group["adapter_params_initial"].max())
        row = {"method": method, "adapter params": f"{kept:,}" + (f" (of {initial:,})" if initial != kept else ""),
               "% backbone": f"{group['pct_backbone'].max():.3f}", "_sort": group["adapter_params"].max()}
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
    table["E[max] 1…k"] = [" / ".join(f"{expected_max(scores, k, higher):.2f}" for k in range(1, len(scores) + 1))
                           for scores, higher in zip(tuned["search scores"], tuned["higher_is_better"])]
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
        table[name] = [with_interval(row[key], row[f"{key}_low"], row[f"{key}_high"], 3) for _, row in aggregates.iterrows()]
    return table


def caption(summary: pd.DataFrame, model: str, stat: str, which: str) -> str:
    part = summary[summary["model"] == model]
    metrics = ", ".join(f"{t}: {m} on {s}" for t, m, s in
                        part[["task", "metric", "split"]].drop_duplicates().itertuples(index=False))
    with_items = part.dropna(subset=["items"])
    covers = (f"seeds and the {', '.join(sorted({f'{int(i):,}' for i in with_items['items']}))} test items"
              if len(with_items) == len(part) else "seeds, and test items where every seed kept its predictions"
              if len(with_items) else "seed variation only (these records kept no predictions)")
    centre = "median over seeds" if stat == "median" else f"mean over seeds [95 % interval over {covers}]"
    return (f"Scores ×100 ({metrics}), {which} evaluation, {centre} (n = seeds). Adapter params "
            f"exclude the task head; for methods that prune a rank budget, the count kept at the end "
            f"(of the count trained at the start); % of the backbone's parameters. Δ full, Δ lora: paired "
            f"difference to full fine-tuning and to LoRA on the same seeds (and items); ▲/▼ significantly "
            f"better/worse (p < 0.05 after Holm's correction over every comparison in this table), ≈ no "
            f"difference shown. Bold: the task's best cell and every cell whose paired difference to it has an "
            f"interval covering 0.")


def flags(summary: pd.DataFrame, model: str, tuned: pd.DataFrame) -> list[str]:
    """Sanity flags of one model's table: an under-trained reference, a tuned value at the edge of its
    grid, fewer seeds than the table's other cells, a final score far below the cell's best."""
    part, found = summary[summary["model"] == model], []
    cells = part.set_index(["method", "task"])
    for task in sorted(part["task"].unique()):
        if ("full", task) in cells.index and ("head", task) in cells.index:
            full, head = cells.loc[("full", task)], cells.loc[("head", task)]
            worse = full["high"] < head["low"] if full["higher_is_better"] else full["low"] > head["high"]
            if worse:
                found.append(f"{task}: reference under-trained: full fine-tuning {full['mean']:.2f} is below head-only "
                             f"{head['mean']:.2f} beyond both intervals")
    most = part["n"].max()
    for row in part.itertuples():
        if row.n < most:
            found.append(f"{row.method} / {row.task}: {row.n} seed{'s' if row.n > 1 else ''}, fewer than the {most} of other cells")
    for row in convergence_frame(part).itertuples():
        if not row.converged:
            rising = f", its last evaluation interval still added {row.last_gain:.2f} points" if row.last_gain > CONVERGENCE_SLACK else ""
            found.append(f"{row.method} / {row.task}: not converged: final {row.final:.2f} vs best {row.best:.2f}{rising}")
    for _, row in tuned[tuned["model"] == model].iterrows() if not tuned.empty else []:
        if row["at edge"] and row["trials"] > 1:
            gain = "" if pd.isna(row["edge gain"]) else f"; it beat the next point inward by {row['edge gain']:.2f} points on the selection split"
            found.append(f"{row['method']} / {row['task']}: widen the grid: lr/head lr {row['lr']}/{row['head lr']} is at "
                         f"the edge of the {row['trials']} searched ({row['searched (lr/head lr)']}){gain}")
    return found


def flag_note(flag_notes: dict[str, str] | None, model: str) -> str | None:
    """The protocol's explanation of the flags of `model`'s table that it could not clear (`protocol.flag_notes`),
    as one paragraph; None where it gives none."""
    note = (flag_notes or {}).get(model)
    return f"Why these flags stand: {' '.join(note.split())}" if note else None


CONVERGENCE_SLACK = 1.0  # points: a final score this close to the best counts as converged even where the interval is narrower


def ends_near_best(frame: pd.DataFrame) -> pd.Series:
    """Per cell of a convergence frame: the final score is within `allowed` of the best (the first condition)."""
    return frame["gap"] <= frame["allowed"]


def convergence_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the final evaluation against the best one (both seed means, the best taken where the
    selection split peaked): `gap` is how much the best beats the final (in the metric's better direction),
    `allowed` the larger of the cell's interval half-width and CONVERGENCE_SLACK; `last_gain` what the last
    evaluation interval added on the selection split (seed mean). `converged`: gap ≤ allowed and a last gain
    of at most CONVERGENCE_SLACK (a curve still rising at its last evaluation has its best there, so the gap
    alone would call it converged)."""
    half_width = ((summary["high"] - summary["low"]) / 2).fillna(0.0)
    sign = summary["higher_is_better"].map(lambda higher: 1 if higher else -1)
    frame = summary[["model", "method", "task", "n"]].copy()
    frame["final"], frame["best"] = summary["mean"], summary["best_mean"]
    frame["gap"] = (summary["best_mean"] - summary["mean"]) * sign
    frame["allowed"] = half_width.clip(lower=CONVERGENCE_SLACK)
    frame["last_gain"] = summary["last_gain"] if "last_gain" in summary else float("nan")
    frame["converged"] = ends_near_best(frame) & ~(frame["last_gain"] > CONVERGENCE_SLACK)
    return frame.reset_index(drop=True)


def convergence_summary(frame: pd.DataFrame) -> str:
    """The sentence over the convergence table (`convergence_frame`)."""
    near_best = ends_near_best(frame)
    return (f"{int(frame['converged'].sum())} of {len(frame)} cells ({100 * frame['converged'].mean():.0f} %) converged: they end "
            f"within their interval half-width (or {CONVERGENCE_SLACK:g} point) of their best evaluation, and their last "
            f"evaluation interval added at most {CONVERGENCE_SLACK:g} point on the selection split; "
            f"{int(near_best.sum())} of {len(frame)} ({100 * near_best.mean():.0f} %) meet the first condition alone. final = the score at the last "
            "evaluation, best = the score at the evaluation where the selection split peaked, gap = best − final, last gain = "
            "the selection split's last evaluation minus the one before it (seed means; empty where a run was evaluated once).")


def convergence_table(frame: pd.DataFrame, no: str) -> pd.DataFrame:
    """The convergence frame as printed: scores with 2 decimals, converged as yes / `no`."""
    shown = frame.assign(**{column: frame[column].map(lambda value: "" if pd.isna(value) else f"{value:.2f}")
                            for column in ("final", "best", "gap", "allowed", "last_gain")})
    shown["converged"] = shown["converged"].map({True: "yes", False: no})
    return shown


def convergence_section(summary: pd.DataFrame) -> list[str]:
    """The convergence evidence: how many cells ended within their interval (or 1 point) of their best."""
    frame = convergence_frame(summary)
    return ["## Convergence", "", convergence_summary(frame), "",
            convergence_table(frame, "**no**").to_markdown(index=False, disable_numparse=True), ""]


def markdown(summary: pd.DataFrame, aggregates: pd.DataFrame, stat: str, which: str, problems: list[str], tuned: pd.DataFrame,
             sweep_caption: str | None = None, flag_notes: dict[str, str] | None = None) -> str:
    parts = ["# Leaderboard", "", *([" ".join(sweep_caption.split()), ""] if sweep_caption else [])]
    if summary.empty:
        parts.append("No successful runs yet.")
    for model in sorted(summary["model"].unique()):
        parts += [f"## {model}", "", caption(summary, model, stat, which), "",
                  wide_table(summary, model, stat).to_markdown(index=False, disable_numparse=True), ""]
        normalised = aggregates[aggregates["model"] == model]
        if not normalised.empty:
            parts += ["Across tasks: every seed's score normalised per task to 0 = head-only, 1 = full fine-tuning "
                      "(cell means); mean and interquartile mean over all runs of all tasks, [95 % stratified bootstrap "
                      "interval, runs resampled within each task; none where every task has a single run].", "",
                      across_tasks(normalised).to_markdown(index=False, disable_numparse=True), ""]
        found = flags(summary, model, tuned)
        parts += ["Sanity flags:", "", *[f"- {flag}" for flag in found], ""] if found else ["Sanity flags: none.", ""]
        note = flag_note(flag_notes, model)
        parts += [note, ""] if note else []
    if not tuned.empty:
        parts += ["## Tuned learning rates", "",
                  "Chosen per (method, task): the searched (lr / head lr) pair whose search-seed run had the best "
                  "primary metric on the selection split; every seed ran with it, and the table above shows only those runs. "
                  "Trials: points searched (a log grid extended while its best point was on its edge, then refined; "
                  "harness/lr_search.py), the same number for every method. E[max] k: the expected best selection score of "
                  "k trials drawn from those searched (Dodge et al. 2019), the tuning budget's return.", "",
                  tuning_table(tuned).to_markdown(index=False, disable_numparse=True), ""]
    if not summary.empty:
        parts += convergence_section(summary)
    if problems:
        parts += ["## Skipped record files", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(parts).rstrip() + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                 "±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "—": "--"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(text))


def latex(summary: pd.DataFrame, stat: str, which: str) -> str:
    """Paper-ready tables: numbers right-aligned (two decimals throughout, so decimal points line up),
    the best cell of each task and every cell tied with it in bold."""
    blocks = []
    for model in sorted(summary["model"].unique()):
        table = wide_table(summary, model, stat).map(latex_escape)
        table = table.map(lambda text: re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", text))
        table.columns = [latex_escape(c) for c in table.columns]
        title = latex_escape(f"{model}: {caption(summary, model, stat, which)}")
        align = "l" + "r" * (len(table.columns) - 1)
        blocks.append(table.style.hide(axis="index").to_latex(caption=title, hrules=True, position="ht", column_format=align))
    return "\n".join(blocks)


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
    aggregates = pd.concat([across_tasks_frame(runs, summary, model) for model in models]) if models else \
        pd.DataFrame(columns=AGGREGATE_COLUMNS)
    return Board(records, problems, runs, summary, aggregates, tuned, stat, which)


SUMMARY_COLUMNS = ["model", "method", "task", "metric", "split", "n", "items", "mean", "low", "high", "std", "median", "best",
                   *[f"{key}_{reference}" for reference in REFERENCES
                     for key in ("diff", "diff_low", "diff_high", "p", "p_holm", "mark", "p_better")],
                   "adapter_params", "adapter_params_initial", "backbone_params", "pct_backbone"]


def write_csvs(board: Board, out: Path) -> list[Path]:
    """leaderboard.csv (one row per cell), leaderboard_across_tasks.csv and convergence.csv (final vs best per cell)."""
    paths = [out / "leaderboard.csv", out / "leaderboard_across_tasks.csv", out / "convergence.csv"]
    board.summary[SUMMARY_COLUMNS].to_csv(paths[0], index=False, float_format="%.4f")
    board.aggregates.drop(columns="higher_is_better").to_csv(paths[1], index=False, float_format="%.4f")
    convergence_frame(board.summary).to_csv(paths[2], index=False, float_format="%.4f")
    return paths


def build_and_write(results_dir: str, sweep: str | None = None, stat: str = "mean", which: str = "final",
                    out_dir: str | None = None, with_plot: bool = True, sweep_caption: str | None = None,
                    flag_notes: dict[str, str] | None = None) -> str:
    """Writes leaderboard.{md,csv,tex}, leaderboard_across_tasks.csv and the plots (harness/report/plots.py),
    and returns the Markdown (headed by the sweep's caption, if it has one; under a model's sanity flags the
    protocol's explanation of those it could not clear, `flag_notes`: model → text)."""
    board = assemble(results_dir, sweep, stat, which)
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(board.summary, board.aggregates, stat, which, board.problems, board.tuned, sweep_caption, flag_notes)
    (out / "leaderboard.md").write_text(text)
    if not board.runs.empty:
        write_csvs(board, out)
        (out / "leaderboard.tex").write_text(latex(board.summary, stat, which))
        if with_plot:
            plots.write_all(out, board.summary, board.aggregates, board.normalised(), board.tuned)
    for problem in board.problems:
        print(f"warning: record {problem}", file=sys.stderr)
    return text


SCRATCH = "results/scratch"


def official_dir() -> Path:
    """Where the official protocol writes the official leaderboard (conf/sweep/official.yaml)."""
    from omegaconf import OmegaConf

    from harness.preflight import CONF_DIR

    return Path(OmegaConf.load(CONF_DIR / "sweep" / "official.yaml").protocol.leaderboard)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default=None, help="default: results (with --paper: results/TABLE)")
    parser.add_argument("--out", default=SCRATCH, help=f"output folder (default: {SCRATCH}); never the official "
                        f"leaderboard's, which only `python -m harness.tune sweep=official` writes")
    parser.add_argument("--sweep", default=None, help="only records of this named sweep")
    parser.add_argument("--stat", choices=("mean", "median"), default="mean")
    parser.add_argument("--which", choices=("final", "best"), default="final",
                        help="final evaluation, or the evaluation with the best validation score")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--site", default=None, metavar="DIR",
                        help="also build the static web site into DIR (harness/report/site.py)")
    parser.add_argument("--paper", default=None, metavar="TABLE",
                        help="a published table (results/reference/TABLE.csv) beside our runs of sweep TABLE")
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == official_dir().resolve():
        raise SystemExit(f"error: {args.out} holds the official leaderboard, written only by `python -m harness.tune "
                         f"sweep=official`; choose another --out (default {SCRATCH})")
    try:
        if args.paper:
            from harness.report.paper import paper_markdown

            text = paper_markdown(args.paper, args.results_dir or f"results/{args.paper}")
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"paper_{args.paper}.md").write_text(text)
        else:
            text = build_and_write(args.results_dir or "results", args.sweep, args.stat, args.which, args.out, not args.no_plot)
            if args.site:
                from harness.report.site import build_site

                if Path(args.site).resolve() == (official_dir() / "site").resolve():
                    raise HarnessError(f"{args.site} holds the official site, written only by `python -m harness.tune sweep=official`")
                print(f"site: {build_site(args.results_dir or 'results', args.site, args.sweep, args.stat, args.which)}",
                      file=sys.stderr)
    except HarnessError as error:
        raise SystemExit(f"error: {error}") from None
    print(text)


if __name__ == "__main__":
    main()
