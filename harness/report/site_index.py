"""The site's index page (harness/report/site.py): per model a table (plain HTML, readable without JavaScript;
site.js adds sorting by any column and filters by method and task) of method (linked to its page), adapter
params, % of the backbone, and per task the mean with its 95 % interval and n (linked to the cell's page)
followed by the columns Δ full and Δ lora (the paired difference and its mark), then the normalised score
across tasks; under it the sanity flags and an interactive Pareto plot (plotly) of adapter params (log)
against the normalised score with interval bars and the frontier, each method in its colour and symbol of
harness/report/palette.py (as in the figures), named in the legend."""

import numpy as np
import pandas as pd

from harness.report import plots
from harness.report.board import Board
from harness.report.cells import REFERENCES
from harness.report.flags import flag_note, flags
from harness.report.markdown import clean_items_sentence, lost_items_sentence, with_interval
from harness.report.palette import style
from harness.report.site_html import (
    cell_href,
    escape,
    method_href,
    number_cell,
    page,
    plot_div,
    plot_layout,
    scrolling,
    slug,
)

REFERENCE_NAMES = {"full": "full fine-tuning", "lora": "LoRA"}


def score_text(row: pd.Series) -> str:
    """mean [low, high] (n), bold where best or tied with the best."""
    interval = "" if pd.isna(row["low"]) else f" [{row['low']:.2f}, {row['high']:.2f}]"
    centre = f"{row['mean']:.2f}"
    centre = f"<strong>{centre}</strong>" if row["best"] else centre
    return f"{centre}{interval} (n={int(row['n'])})"


def delta_cell(row: pd.Series | None, reference: str, task: str) -> str:
    """The paired difference to a reference with its mark (▲ ▼ ≈; its interval in the tooltip), or "—"."""
    attribute = f' data-task="{escape(task)}" class="delta"'
    if row is None or pd.isna(row[f"diff_{reference}"]):
        return f"<td{attribute}>—</td>"
    diff = row[f"diff_{reference}"]
    low, high = row[f"diff_low_{reference}"], row[f"diff_high_{reference}"]
    interval = "" if pd.isna(low) else f" [{low:+.2f}, {high:+.2f}]"
    title = f' title="vs {REFERENCE_NAMES[reference]}: {diff:+.2f}{interval}, Holm p {row[f"p_holm_{reference}"]:.3g}"'
    return number_cell(f'{diff:+.2f} <span class="mark">{row[f"mark_{reference}"]}</span>', diff, attribute + title)


def task_cells(model: str, method: str, task: str, row: pd.Series | None) -> list[str]:
    """A task's score cell (linked to the cell's page) and its Δ full, Δ lora cells."""
    if row is None:
        score = f'<td data-task="{escape(task)}">—</td>'
    else:
        link = f'<a href="{cell_href(model, method, task, 0)}">{score_text(row)}</a>'
        score = number_cell(link, row["mean"], f' data-task="{escape(task)}"')
    return [score, *(delta_cell(row, reference, task) for reference in REFERENCES)]


def delta_header(task: str, reference: str) -> str:
    return f'<th data-task="{escape(task)}" class="delta">Δ {reference}<br><small>{escape(task)}</small></th>'


def model_table(board: Board, model: str) -> str:
    part = board.summary[board.summary["model"] == model]
    tasks = sorted(part["task"].unique())
    aggregates = board.aggregates[board.aggregates["model"] == model].set_index("method")
    head = "".join(
        f'<th data-task="{escape(t)}">{escape(t)}</th>' + "".join(delta_header(t, r) for r in REFERENCES) for t in tasks
    )
    rows = []
    for method, group in sorted(part.groupby("method"), key=lambda item: -item[1]["method_adapter_params"].iloc[0]):
        by_task = group.set_index("task")
        params = int(group["method_adapter_params"].iloc[0])  # the method's median, as in the Markdown and CSV
        share = 100 * params / group["backbone_params"].median()
        cells = [
            f'<td class="method"><a href="{method_href(method, 0)}">{escape(method)}</a></td>',
            number_cell(f"{params:,}", params),
            number_cell(f"{share:.3f}", share),
        ]
        for task in tasks:
            cells += task_cells(model, method, task, by_task.loc[task] if task in by_task.index else None)
        if method in aggregates.index:
            a = aggregates.loc[method]
            cells.append(number_cell(with_interval(a["mean"], a["mean_low"], a["mean_high"], 3), a["mean"]))
        else:
            cells.append("<td>—</td>")
        rows.append(f'<tr data-method="{escape(method)}">{"".join(cells)}</tr>')
    return scrolling(
        f'<table class="board sortable" id="table-{escape(model)}"><thead><tr><th>method</th><th>adapter params</th>'
        f"<th>% backbone</th>{head}<th>normalised</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def log_position(params: float) -> int:
    """Where a count sits on the log axis: 0 (head-only) at 1, labelled "0" by `log_ticks`."""
    return max(int(params), 1)


def log_ticks(part: pd.DataFrame) -> dict:
    """Ticks at the powers of ten, the first labelled 0: no method has one adapter parameter, so the place
    of 1 shows the methods that train none (head-only) without a broken axis."""
    top = max(1, int(np.ceil(np.log10(max(part["adapter_params"].max(), 10)))))
    values = [10**k for k in range(top + 1)]
    return {
        "tickvals": values,
        "ticktext": ["0"] + [f"{v:,}" if v < 10**4 else f"1e{k}" for k, v in enumerate(values)][1:],
    }


def pareto_figure(board: Board, model: str) -> dict:
    """The plotly figure of one model: a point per method (its colour and symbol of harness/report/palette.py,
    named in the legend: close points stay readable where labels beside them would overlap) with its interval,
    and the frontier."""
    part = board.aggregates[board.aggregates["model"] == model].sort_values("adapter_params")
    frontier = plots.pareto_frontier(part, "mean")
    points = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": row.method,
            "x": [log_position(row.adapter_params)],
            "y": [round(row.mean, 4)],
            "customdata": [int(row.adapter_params)],
            "marker": {"size": 9, "symbol": style(row.method).symbol, "color": style(row.method).colour},
            "error_y": {
                "type": "data",
                "symmetric": False,
                "array": [0 if pd.isna(row.mean_high) else round(row.mean_high - row.mean, 4)],
                "arrayminus": [0 if pd.isna(row.mean_low) else round(row.mean - row.mean_low, 4)],
            },
            "hovertemplate": f"{model} / {row.method}<br>adapter params %{{customdata:,}}<br>"
            "normalised %{y:.3f}<extra></extra>",
        }
        for row in part.itertuples(index=False)
    ]
    line = {
        "type": "scatter",
        "mode": "lines",
        "name": "Pareto frontier",
        "line": {"shape": "hv", "color": "grey"},
        "x": [log_position(v) for v in frontier["adapter_params"]],
        "y": frontier["mean"].round(4).tolist(),
        "hoverinfo": "skip",
    }
    layout = plot_layout(
        560,
        30,
        150,
        xaxis={"type": "log", "title": {"text": "adapter parameters (log; head excluded)"}, **log_ticks(part)},
        yaxis={"title": {"text": "normalised (0 = head, 1 = full FT)"}},
        showlegend=True,
    )
    return {"data": [*points, line], "layout": layout}


def flag_list(board: Board, model: str, flag_notes: dict[str, str] | None) -> str:
    found = flags(board.summary, model, board.tuned)
    items = "".join(f"<li>{escape(flag)}</li>" for flag in found)
    note = flag_note(flag_notes, model)
    explained = f'<p class="flag-note">{escape(note)}</p>' if note else ""
    listed = f"<ul>{items}</ul>" if found else "none."
    return f'<div class="flags">Sanity flags: {listed}{explained}</div>'


CAPTION = (
    "Scores ×100 on each task's report split ({which} evaluation): mean over seeds [95 % interval over seeds and "
    "test items], n = seeds. Δ full, Δ lora: the paired difference to full fine-tuning / LoRA on the same seeds "
    "and items, marked ▲ ▼ significantly better / worse, ≈ no difference shown (its interval and p in the "
    "tooltip), by one test: p < 0.05 after Holm's correction over every pair of cells on the same task in the "
    "model's table, each pair once; bold: the task's best and every cell no cell of its task beats by that test. "
    "Normalised: 0 = head-only, 1 = full fine-tuning, mean over tasks [95 % stratified bootstrap drawing the "
    "references too]. Click a score for its cell, a method for its page; click a column's header to sort by it (⇅)."
)


def filters(board: Board) -> str:
    options = lambda values: "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    if board.summary.empty:
        return ""
    methods, tasks = sorted(board.summary["method"].unique()), sorted(board.summary["task"].unique())
    return (
        '<form class="filters"><label>method <select id="method-filter"><option value="">all</option>'
        f'{options(methods)}</select></label> <label>task <select id="task-filter"><option value="">all</option>'
        f"{options(tasks)}</select></label></form>"
    )


def index_page(
    board: Board,
    footer: str,
    links: list[str],
    sweep_caption: str | None = None,
    flag_notes: dict[str, str] | None = None,
) -> str:
    """The index; `links`: the site's other pages and downloads, as <a> elements."""
    body = [
        f'<p class="sweep-caption">{escape(" ".join(sweep_caption.split()))}</p>' if sweep_caption else "",
        f'<p class="caption">{escape(CAPTION.format(which=board.which))}</p>',
        filters(board),
    ]
    if board.summary.empty:
        body.append("<p>No successful runs yet.</p>")
    for model in board.models:
        part = board.summary[board.summary["model"] == model]
        note = (clean_items_sentence(part) + lost_items_sentence(part)).strip()
        items = f'<p class="caption">{escape(note)}</p>' if note else ""
        body += [f"<h2>{escape(model)}</h2>", items, model_table(board, model), flag_list(board, model, flag_notes)]
        if not board.aggregates[board.aggregates["model"] == model].empty:
            body.append(plot_div(f"pareto-{slug(model)}", pareto_figure(board, model)))
    body.append(f'<p class="links">{" · ".join(links)}</p>')
    return page("Leaderboard", "".join(body), 0, footer)
