"""The leaderboard as a static web site: `python -m harness.leaderboard --site DIR` (the official protocol
writes results/site/). Built from the records alone; no server, nothing fetched: it opens from file://
and from any static host.

- index.html: per model, a table (plain HTML, readable without JavaScript; JavaScript adds sorting by
  any column and filters by method and task) of method, adapter params, % of the backbone, each task's
  mean with its 95 % interval, n and the marks against full fine-tuning and LoRA, and the normalised
  score across tasks; under it an interactive Pareto plot (plotly, its library a local file of the
  site: assets/plotly.min.js) of adapter params (log) against the normalised score with interval bars
  and the frontier, a colour and symbol per method named in the legend, hover naming the cell;
- cells/<model>--<method>--<task>.html: every seed's learning curves (each evaluated split's score, then
  the training loss), the chosen hyper-parameters, the
  tuning trials, parameter counts, cost and provenance of each record;
- under each model's table its sanity flags (harness/report/leaderboard.py `flags`) and the protocol's
  explanation of those it could not clear (`flag_notes`); the sweep's caption above all, where it has one;
- convergence.html: final against best evaluation per cell; tuning.html (tuning protocols) and papers/<table>.html
(published numbers beside ours, for each
  results/reference/<table>.csv whose runs are in results/<table>);
- data/*.csv: the tables for download; every page's footer: harness version, git sha, build time.
"""

import html
import json
import re
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from harness.report import plots
from harness.report.board import Board, assemble, write_csvs
from harness.report.cells import REFERENCES
from harness.report.convergence import convergence_frame, convergence_summary, convergence_table
from harness.report.flags import flag_note, flags
from harness.report.markdown import tuning_table, with_interval
from harness.report.paper import REFERENCE_DIR, paper_view
from harness.store.provenance import code_version
from harness.store.records import method_label

ASSETS = Path(__file__).parent / "site_assets"


def slug(*parts: str) -> str:
    return "--".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", part) for part in parts)


def escape(value) -> str:
    return html.escape(str(value))


def page(title: str, body: str, depth: int, footer: str) -> str:
    """A whole HTML page; `depth` folders below the site's root (for the assets' relative paths)."""
    root = "../" * depth
    plotly = (
        f'<script src="{root}assets/plotly.min.js"></script>' if "data-plot=" in body else ""
    )  # 4.8 MB: only where drawn
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="{root}assets/site.css"></head><body>'
        f'<nav><a href="{root}index.html">Leaderboard</a></nav><main><h1>{escape(title)}</h1>{body}</main>'
        f'<footer>{footer}</footer>{plotly}<script src="{root}assets/site.js"></script></body></html>\n'
    )


def footer_text() -> str:
    version = metadata.version("peft-harness")
    sha = code_version()["git_sha"] or "unknown"
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"peft-harness {escape(version)} · git {escape(sha[:12])} · built {built}"


def number_cell(text: str, value: float, extra: str = "") -> str:
    sort = "" if pd.isna(value) else f' data-value="{value:.12g}"'
    return f"<td{sort}{extra}>{text}</td>"


def score_text(row: pd.Series) -> str:
    """mean [low, high] (n), bold where best or tied, and the marks against the references."""
    interval = "" if pd.isna(row["low"]) else f" [{row['low']:.2f}, {row['high']:.2f}]"
    centre = f"{row['mean']:.2f}"
    centre = f"<strong>{centre}</strong>" if row["best"] else centre
    marks = " ".join(
        f'<span class="mark" title="vs {ref}: {row[f"diff_{ref}"]:+.2f}">{ref} {row[f"mark_{ref}"]}</span>'
        for ref in REFERENCES
        if not pd.isna(row[f"diff_{ref}"])
    )
    return f"{centre}{interval} (n={int(row['n'])}){'<br>' + marks if marks else ''}"


def model_table(board: Board, model: str) -> str:
    part = board.summary[board.summary["model"] == model]
    tasks = sorted(part["task"].unique())
    aggregates = board.aggregates[board.aggregates["model"] == model].set_index("method")
    head = "".join(f'<th data-task="{escape(t)}">{escape(t)}</th>' for t in tasks)
    rows = []
    for method, group in sorted(part.groupby("method"), key=lambda item: -item[1]["adapter_params"].max()):
        by_task = group.set_index("task")
        cells = [
            f'<td class="method">{escape(method)}</td>',
            number_cell(f"{int(group['adapter_params'].max()):,}", group["adapter_params"].max()),
            number_cell(f"{group['pct_backbone'].max():.3f}", group["pct_backbone"].max()),
        ]
        for task in tasks:
            if task in by_task.index:
                row = by_task.loc[task]
                link = f'<a href="cells/{slug(model, method, task)}.html">{score_text(row)}</a>'
                cells.append(number_cell(link, row["mean"], f' data-task="{escape(task)}"'))
            else:
                cells.append(f'<td data-task="{escape(task)}">—</td>')
        if method in aggregates.index:
            a = aggregates.loc[method]
            cells.append(number_cell(with_interval(a["mean"], a["mean_low"], a["mean_high"], 3), a["mean"]))
        else:
            cells.append("<td>—</td>")
        rows.append(f'<tr data-method="{escape(method)}">{"".join(cells)}</tr>')
    return (
        f'<table class="board" id="table-{escape(model)}"><thead><tr><th>method</th><th>adapter params</th>'
        f"<th>% backbone</th>{head}<th>normalised</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0}  # never over an axis
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
SYMBOLS = [
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "cross",
    "x",
    "triangle-down",
    "star",
    "hexagon",
    "pentagon",
    "hourglass",
]  # 11 symbols against 10 colours: the first 110 methods each get their own pair


def pareto_figure(board: Board, model: str) -> dict:
    """The plotly figure of one model: a point per method (its own colour and symbol, named in the legend:
    close points stay readable where labels beside them would overlap) with its interval, and the frontier."""
    part = board.aggregates[board.aggregates["model"] == model].sort_values("adapter_params")
    frontier = plots.pareto_frontier(part, "mean")
    points = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": row.method,
            "x": [max(int(row.adapter_params), 1)],
            "y": [round(row.mean, 4)],
            "marker": {"size": 9, "symbol": SYMBOLS[i % len(SYMBOLS)], "color": PALETTE[i % len(PALETTE)]},
            "error_y": {
                "type": "data",
                "symmetric": False,
                "array": [0 if pd.isna(row.mean_high) else round(row.mean_high - row.mean, 4)],
                "arrayminus": [0 if pd.isna(row.mean_low) else round(row.mean - row.mean_low, 4)],
            },
            "hovertemplate": f"{model} / {row.method}<br>adapter params %{{x:,}}<br>"
            "normalised %{y:.3f}<extra></extra>",
        }
        for i, row in enumerate(part.itertuples(index=False))
    ]
    line = {
        "type": "scatter",
        "mode": "lines",
        "name": "Pareto frontier",
        "line": {"shape": "hv", "color": "grey"},
        "x": [max(int(v), 1) for v in frontier["adapter_params"]],
        "y": frontier["mean"].round(4).tolist(),
        "hoverinfo": "skip",
    }
    layout = {
        "xaxis": {"type": "log", "title": {"text": "trainable adapter parameters (log; head excluded)"}},
        "yaxis": {"title": {"text": "normalised score (0 = head-only, 1 = full FT)"}},
        "margin": {"t": 30, "b": 150},
        "height": 560,
        "showlegend": True,
        "legend": LEGEND_BELOW,
    }
    return {"data": [*points, line], "layout": layout}


def plot_div(element: str, figure: dict) -> str:
    """A plot's place and its figure as JSON (drawn by assets/site.js; `</` escaped so the data cannot end the
    script)."""
    data = json.dumps(figure).replace("</", "<\\/")
    return (
        f'<div class="plot" id="{element}"></div><script type="application/json" data-plot="{element}">{data}</script>'
    )


def flag_list(board: Board, model: str, flag_notes: dict[str, str] | None) -> str:
    found = flags(board.summary, model, board.tuned)
    items = "".join(f"<li>{escape(flag)}</li>" for flag in found)
    note = flag_note(flag_notes, model)
    explained = f'<p class="flag-note">{escape(note)}</p>' if note else ""
    listed = f"<ul>{items}</ul>" if found else "none."
    return f'<div class="flags">Sanity flags: {listed}{explained}</div>'


def index_page(
    board: Board,
    footer: str,
    papers: list[str],
    sweep_caption: str | None = None,
    flag_notes: dict[str, str] | None = None,
) -> str:
    methods = sorted(board.summary["method"].unique())
    tasks = sorted(board.summary["task"].unique())
    options = lambda values: "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    body = [
        f'<p class="sweep-caption">{escape(" ".join(sweep_caption.split()))}</p>' if sweep_caption else "",
        f'<p class="caption">Scores ×100 on each task\'s report split ({board.which} evaluation): mean over seeds '
        f"[95 % interval], n = seeds; bold: the task's best and every cell tied with it; marks: ▲ ▼ significantly "
        f"better / worse than full fine-tuning or LoRA after Holm's correction, ≈ no difference shown. Normalised: "
        f"0 = head-only, 1 = full fine-tuning, mean over tasks [95 % stratified bootstrap]. Click a score for its "
        "cell.</p>",
        '<form class="filters"><label>method <select id="method-filter"><option value="">all</option>'
        f'{options(methods)}</select></label> <label>task <select id="task-filter"><option value="">all</option>'
        f"{options(tasks)}</select></label></form>",
    ]
    if board.summary.empty:
        body.append("<p>No successful runs yet.</p>")
    for model in board.models:
        body += [f"<h2>{escape(model)}</h2>", model_table(board, model), flag_list(board, model, flag_notes)]
        if not board.aggregates[board.aggregates["model"] == model].empty:
            body.append(plot_div(f"pareto-{slug(model)}", pareto_figure(board, model)))
    links = [
        '<a href="data/leaderboard.csv">leaderboard.csv</a>',
        '<a href="data/leaderboard_across_tasks.csv">across tasks (csv)</a>',
    ]
    if not board.summary.empty:
        links.append('<a href="convergence.html">convergence</a>')
    if not board.tuned.empty:
        links += ['<a href="tuning.html">tuned learning rates</a>', '<a href="data/tuning.csv">tuning.csv</a>']
    links += [f'<a href="papers/{escape(name)}.html">paper: {escape(name)}</a>' for name in papers]
    body.append(f'<p class="links">{" · ".join(links)}</p>')
    return page("Leaderboard", "".join(body), 0, footer)


def curves_figure(records: list[dict], metric: str) -> dict:
    """A line per seed and evaluated split: the metric (×100) at every evaluation (the report split solid,
    the others dotted), one colour per seed."""
    data = []
    for record in sorted(records, key=lambda r: r["seed"]):
        curve, report = record["metrics"]["curve"], record["metrics"]["report_split"]
        colour = PALETTE[record["seed"] % len(PALETTE)]
        splits = sorted(
            {p["split"] for p in curve if p["split"] != "train" and metric in p["values"]}, key=lambda s: s != report
        )
        for split in splits:
            scores = [
                (p["step"], 100 * p["values"][metric]) for p in curve if p["split"] == split and metric in p["values"]
            ]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": f"seed {record['seed']} {split} {metric}",
                    "line": {"color": colour, "dash": "solid" if split == report else "dot"},
                    "x": [s for s, _ in scores],
                    "y": [round(v, 4) for _, v in scores],
                }
            )
    layout = {
        "xaxis": {"title": {"text": "optimizer step"}},
        "yaxis": {"title": {"text": f"{metric} ×100"}},
        "height": 480,
        "margin": {"t": 30, "b": 130},
        "legend": LEGEND_BELOW,
    }
    return {"data": data, "layout": layout}


def loss_figure(records: list[dict]) -> dict:
    """A line per seed: the training loss at every logged step."""
    data = []
    for record in sorted(records, key=lambda r: r["seed"]):
        losses = [(p["step"], p["values"]["loss"]) for p in record["metrics"]["curve"] if p["split"] == "train"]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"seed {record['seed']} train loss",
                "line": {"color": PALETTE[record["seed"] % len(PALETTE)]},
                "x": [s for s, _ in losses],
                "y": [round(v, 5) for _, v in losses],
            }
        )
    layout = {
        "xaxis": {"title": {"text": "optimizer step"}},
        "yaxis": {"title": {"text": "train loss"}},
        "height": 360,
        "margin": {"t": 30, "b": 110},
        "legend": LEGEND_BELOW,
    }
    return {"data": data, "layout": layout}


def section(record: dict, name: str) -> dict:
    """A section of the record's config ({} where the record has none)."""
    return (record.get("config") or {}).get(name) or {}


def record_rows(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in sorted(records, key=lambda r: r["seed"]):
        metrics, cost, provenance = r["metrics"], r["cost"], r["provenance"]
        report = metrics["report_split"]
        versions = provenance.get("versions", {})
        train = section(r, "train")
        rows.append(
            {
                "seed": r["seed"],
                "run key": r["run_key"],
                "lr / head lr": f"{train.get('lr', '—')} / {train.get('head_lr', '—')}",
                f"final {report}": f"{100 * metrics['final'][report][metrics['primary']]:.2f}",
                f"best {report}": f"{100 * metrics['best'][report][metrics['primary']]:.2f}",
                "steps": cost["steps"],
                "train s": cost["train_seconds"],
                "eval s": cost["eval_seconds"],
                "wall s": cost["wall_seconds"],
                "peak MB": cost.get("peak_memory_mb", "—"),
                "code": f"{(provenance.get('git_sha') or '?')[:12]}{' (dirty)' if provenance.get('git_dirty') else ''}",
                "torch / transformers": f"{versions.get('torch', '?')} / {versions.get('transformers', '?')}",
                "device": provenance.get("device", "?"),
                "started": provenance.get("started_at", "?"),
            }
        )
    return pd.DataFrame(rows)


def cell_page(board: Board, model: str, method: str, task: str, footer: str) -> str:
    records = [
        r
        for r in board.records
        if r["status"] == "success"
        and r["model"] == model
        and r["task"] == task
        and method_label(r["method"], r.get("variant")) == method
    ]
    first = records[0]
    row = board.summary[
        (board.summary["model"] == model) & (board.summary["method"] == method) & (board.summary["task"] == task)
    ].iloc[0]
    params, train, method_config = first["params"], section(first, "train"), section(first, "method")
    settings = {
        "lr": train.get("lr", "—"),
        "head lr": train.get("head_lr", "—"),
        **{f"method.{k}": v for k, v in method_config.items() if k not in ("name", "lr", "head_lr")},
        **{
            f"train.{k}": train.get(k, "—")
            for k in ("epochs", "max_steps", "batch_size", "schedule", "warmup_ratio", "weight_decay")
        },
    }
    body = [
        f'<p class="caption">{escape(row["metric"])} on {escape(row["split"])}, {board.which} evaluation: '
        f"{score_text(row)}</p>",
        plot_div(f"curves-{slug(model, method, task)}", curves_figure(records, row["metric"])),
        plot_div(f"loss-{slug(model, method, task)}", loss_figure(records)),
        "<h2>Hyper-parameters</h2>",
        pd.DataFrame([settings]).astype(str).to_html(index=False, escape=True),
        "<h2>Parameters</h2>",
        pd.DataFrame(
            [{k: f"{v:,}" if isinstance(v, int) else v for k, v in params.items() if k not in ("ranks_final",)}]
        )
        .astype(str)
        .to_html(index=False, escape=True),
    ]
    tuned = board.tuned[
        (board.tuned["model"] == model) & (board.tuned["method"] == method) & (board.tuned["task"] == task)
    ]
    if not tuned.empty:
        body += [
            "<h2>Tuning trials</h2>",
            tuning_table(tuned).drop(columns=["model", "method", "task"]).astype(str).to_html(index=False, escape=True),
        ]
    body += ["<h2>Runs: cost and provenance</h2>", record_rows(records).astype(str).to_html(index=False, escape=True)]
    return page(f"{model} / {method} / {task}", "".join(body), 1, footer)


def convergence_page(board: Board, footer: str) -> str:
    frame = convergence_frame(board.summary)
    body = f'<p class="caption">{escape(convergence_summary(frame))}</p>' + convergence_table(frame, "no").astype(
        str
    ).to_html(index=False, escape=True)
    return page("Convergence", body, 0, footer)


def build_site(
    results_dir: str,
    out_dir: str,
    sweep: str | None = None,
    stat: str = "mean",
    which: str = "final",
    papers_root: Path = Path("results"),
    sweep_caption: str | None = None,
    flag_notes: dict[str, str] | None = None,
) -> Path:
    """Writes the site into `out_dir` (replacing an earlier build) and returns its index page."""
    board = assemble(results_dir, sweep, stat, which)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    for folder in ("assets", "cells", "data", "papers"):
        (out / folder).mkdir(parents=True)
    shutil.copy(Path(plots_library()), out / "assets" / "plotly.min.js")
    for asset in ASSETS.iterdir():
        shutil.copy(asset, out / "assets" / asset.name)
    footer = footer_text()
    papers = [p.stem for p in sorted(REFERENCE_DIR.glob("*.csv")) if (papers_root / p.stem / "runs").is_dir()]
    if not board.runs.empty:
        write_csvs(board, out / "data")
        (out / "convergence.html").write_text(convergence_page(board, footer))
    for (model, method, task), _ in board.summary.groupby(["model", "method", "task"]):
        (out / "cells" / f"{slug(model, method, task)}.html").write_text(cell_page(board, model, method, task, footer))
    if not board.tuned.empty:
        table = tuning_table(board.tuned)
        table.to_csv(out / "data" / "tuning.csv", index=False)
        (out / "tuning.html").write_text(
            page("Tuned learning rates", table.astype(str).to_html(index=False, escape=True), 0, footer)
        )
    for name in papers:
        view = paper_view(name, str(papers_root / name))
        body = f'<p class="caption">{escape(view.caption)}</p>' + view.table.to_html(index=False, escape=True)
        (out / "papers" / f"{name}.html").write_text(page(view.title, body, 1, footer))
    (out / "index.html").write_text(index_page(board, footer, papers, sweep_caption, flag_notes))
    return out / "index.html"


def plots_library() -> str:
    """The path of plotly.js as the plotly package ships it (copied into the site, never fetched)."""
    import plotly

    return str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js")
