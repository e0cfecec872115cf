"""Leaderboards from run records: `python -m harness.leaderboard` (harness/leaderboard.py; also run at the end of sweeps).

Reads <results_dir>/runs/*.json (success only; invalid records are listed with their reason and
skipped) and writes <out>/leaderboard.{md,csv,tex,png} (default out: results/scratch; the official
leaderboard is written only by `python -m harness.tune sweep=official`): per model, one row per method (and variant), one column per
task; cells are the primary metric ×100 on the task's report split, mean ± std over seeds with n
(or the median), at the final evaluation (or the best one); adapter params (task head excluded)
absolute and as % of the backbone; Δ = difference to full fine-tuning's score on the same task.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.records import RecordStore, method_label, reported_adapter_params, semantic_config
from harness.selection import select_tuned

FULL = "full"


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
               split: str | None = None) -> pd.DataFrame:
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
        rows.append({
            "model": record["model"], "method": method_label(record["method"], record.get("variant")), "task": record["task"],
            "seed": record["seed"], "metric": name, "split": where,
            "score": 100 * values[name], "adapter_params": reported_adapter_params(params),
            "adapter_params_initial": params["adapter"], "backbone_params": params["backbone"],
            "sweep": record.get("sweep"), "setting": setting_of(record),
        })
    columns = ["model", "method", "task", "seed", "metric", "split", "score", "adapter_params",
               "adapter_params_initial", "backbone_params", "sweep", "setting"]
    return separate_settings(pd.DataFrame(rows, columns=columns))


def summary_frame(runs: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """One row per (model, method, task): n, mean, std, median, the chosen centre and Δ vs full."""
    grouped = runs.groupby(["model", "method", "task"], sort=True)
    summary = grouped.agg(
        metric=("metric", "first"), split=("split", "first"), n=("score", "size"), mean=("score", "mean"),
        std=("score", "std"), median=("score", "median"), adapter_params=("adapter_params", "median"),
        adapter_params_initial=("adapter_params_initial", "median"), backbone_params=("backbone_params", "median"),
    ).reset_index()
    summary["score"] = summary[stat]
    full = summary[summary["method"] == FULL].set_index(["model", "task"])["score"]
    summary["delta_vs_full"] = [
        row.score - full[(row.model, row.task)] if (row.model, row.task) in full.index else float("nan")
        for row in summary.itertuples()
    ]
    summary["pct_backbone"] = 100 * summary["adapter_params"] / summary["backbone_params"]
    for column in ("adapter_params", "adapter_params_initial"):
        summary[column] = summary[column].astype(int)
    return summary


def cell(row: pd.Series, stat: str) -> str:
    n = int(row["n"])
    if stat == "median":
        return f"{row['median']:.2f} (n={n})"
    spread = f" ± {row['std']:.2f}" if n > 1 else ""
    return f"{row['mean']:.2f}{spread} (n={n})"


def wide_table(summary: pd.DataFrame, model: str, stat: str) -> pd.DataFrame:
    """The printed table of one model: methods as rows, a score and a Δ column per task."""
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
            delta = by_task.loc[task, "delta_vs_full"] if present else float("nan")
            row[f"Δ {task}"] = "—" if pd.isna(delta) else f"{delta:+.2f}"
        if len(tasks) > 1:
            row["avg"] = f"{by_task['score'].mean():.2f}" if len(by_task) == len(tasks) else "—"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["_sort", "method"], ascending=[False, True])
    return table.drop(columns="_sort").reset_index(drop=True)


def caption(summary: pd.DataFrame, model: str, stat: str, which: str) -> str:
    part = summary[summary["model"] == model]
    metrics = ", ".join(f"{t}: {m} on {s}" for t, m, s in
                        part[["task", "metric", "split"]].drop_duplicates().itertuples(index=False))
    centre = "median over seeds" if stat == "median" else "mean ± std over seeds"
    return (f"Scores ×100 ({metrics}), {which} evaluation, {centre} (n = seeds). Adapter params "
            f"exclude the task head; for methods that prune a rank budget, the count kept at the end "
            f"(of the count trained at the start); % of the backbone's parameters. Δ: difference to "
            f"full fine-tuning.")


def markdown(summary: pd.DataFrame, stat: str, which: str, problems: list[str], tuned: pd.DataFrame) -> str:
    parts = ["# Leaderboard", ""]
    if summary.empty:
        parts.append("No successful runs yet.")
    for model in sorted(summary["model"].unique()):
        parts += [f"## {model}", "", caption(summary, model, stat, which), "",
                  wide_table(summary, model, stat).to_markdown(index=False, disable_numparse=True), ""]
    if not tuned.empty:
        parts += ["## Tuned learning rates", "",
                  "Chosen per (method, task): the searched (lr / head lr) pair whose search-seed run had the best "
                  "primary metric on the selection split; every seed ran with it, and the table above shows only those runs.", "",
                  tuned.to_markdown(index=False, disable_numparse=True), ""]
    if problems:
        parts += ["## Skipped record files", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(parts).rstrip() + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                 "±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "—": "--"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(text))


def latex(summary: pd.DataFrame, stat: str, which: str) -> str:
    blocks = []
    for model in sorted(summary["model"].unique()):
        table = wide_table(summary, model, stat).map(latex_escape)
        table.columns = [latex_escape(c) for c in table.columns]
        title = latex_escape(f"{model}: {caption(summary, model, stat, which)}")
        blocks.append(table.style.hide(axis="index").to_latex(caption=title, hrules=True, position="ht"))
    return "\n".join(blocks)


def plot(summary: pd.DataFrame, path: Path) -> None:
    """Adapter params (log) vs score, one panel per (model, task); full FT as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = summary[["model", "task"]].drop_duplicates().sort_values(["model", "task"]).values.tolist()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (model, task) in zip(axes[0], panels):
        part = summary[(summary["model"] == model) & (summary["task"] == task)]
        for row in part.itertuples():
            x = max(row.adapter_params, 1)
            axis.errorbar(x, row.score, yerr=0 if pd.isna(row.std) else row.std, fmt="o", capsize=3)
            axis.annotate(row.method, (x, row.score), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if row.method == FULL:
                axis.axhline(row.score, linestyle="--", color="grey", linewidth=1, label="full fine-tuning")
        axis.set_xscale("log")
        axis.set_xlabel("trainable adapter parameters (log; head excluded)")
        axis.set_ylabel(f"{part['metric'].iloc[0]} ×100 ({part['split'].iloc[0]})")
        axis.set_title(f"{model} / {task}")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_and_write(results_dir: str, sweep: str | None = None, stat: str = "mean", which: str = "final",
                    out_dir: str | None = None, with_plot: bool = True) -> str:
    """Writes leaderboard.{md,csv,tex,png} and returns the Markdown."""
    records, problems = RecordStore(results_dir).load_all()
    if sweep:
        records = [r for r in records if r.get("sweep") == sweep]
    records, tuned = select_tuned(records)  # a protocol's other grid points chose the values; they are not results
    runs = runs_frame(records, which)
    summary = summary_frame(runs, stat) if not runs.empty else pd.DataFrame(columns=["model"])
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(summary, stat, which, problems, tuned)
    (out / "leaderboard.md").write_text(text)
    if not runs.empty:
        columns = ["model", "method", "task", "metric", "split", "n", "mean", "std", "median",
                   "delta_vs_full", "adapter_params", "adapter_params_initial", "backbone_params", "pct_backbone"]
        summary[columns].to_csv(out / "leaderboard.csv", index=False, float_format="%.4f")
        (out / "leaderboard.tex").write_text(latex(summary, stat, which))
        if with_plot:
            plot(summary, out / "leaderboard.png")
    for problem in problems:
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
    except HarnessError as error:
        raise SystemExit(f"error: {error}") from None
    print(text)


if __name__ == "__main__":
    main()
