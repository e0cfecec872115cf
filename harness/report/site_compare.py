"""The site's compare page (harness/report/site.py), compare.html: pick two methods; per model and task their
means and the paired difference (harness/report/cells.py `compare`, on the seeds and test items both
cells have) with its 95 % interval, p and P(first better). Every pair of methods is computed at build time
into JSON embedded in the page; site.js shows the pair chosen (without JavaScript the page says so)."""

import math
from itertools import combinations

from harness.report.board import Board
from harness.report.cells import compare, mark
from harness.report.frames import cells_of
from harness.report.site_html import escape, json_script, page


def finite(value) -> float | None:
    """A number for JSON (NaN is not JSON: null instead), rounded to 4 decimals."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def pair_rows(board: Board, first: str, second: str, cells: dict) -> list[dict]:
    """The paired difference first − second in every (model, task) where both have a cell."""
    rows = []
    summary = board.summary.set_index(["model", "method", "task"])
    for model in board.models:
        for task in sorted(board.summary.loc[board.summary["model"] == model, "task"].unique()):
            a, b = (model, first, task), (model, second, task)
            if a not in cells or b not in cells:
                continue
            higher = bool(summary.loc[a, "higher_is_better"])
            result = compare(cells[a], cells[b], higher)
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "first": finite(summary.loc[a, "mean"]),
                    "second": finite(summary.loc[b, "mean"]),
                    **({} if result is None else {key: finite(value) for key, value in result.items()}),
                    **({} if result is None else {"mark": mark(result["diff"], result["p"], higher)}),
                }
            )
    return rows


def compare_data(board: Board) -> dict:
    """Every unordered pair of the board's methods (the first before the second in sorted order); the page
    reverses a pair's sign where the reader picks them the other way round."""
    methods = sorted(board.summary["method"].unique()) if not board.summary.empty else []
    cells = cells_of(board.runs) if methods else {}
    pairs = {f"{a}\t{b}": pair_rows(board, a, b, cells) for a, b in combinations(methods, 2)}
    return {"methods": methods, "pairs": pairs}


CAPTION = (
    "Pick two methods. Per model and task: each method's mean ×100 over seeds, and the paired difference first − "
    "second on the seeds (and test items) both cells have, with its 95 % interval, p (not corrected for multiple "
    "comparisons: the leaderboard's marks are, with Holm's correction) and P(first better) over pairs of seeds. "
    "▲ ▼: the first significantly better / worse at p < 0.05 (uncorrected), ≈ no difference shown."
)


def compare_page(board: Board, footer: str) -> str:
    data = compare_data(board)
    methods = data["methods"]
    if len(methods) < 2:
        return page("Compare two methods", "<p>Fewer than two methods: nothing to compare.</p>", 0, footer)
    options = "".join(f'<option value="{escape(m)}">{escape(m)}</option>' for m in methods)
    default_second = "full" if "full" in methods else methods[0]
    default_first = next(m for m in methods if m != default_second)
    body = (
        f'<p class="caption">{escape(CAPTION)}</p>'
        f'<form class="filters"><label>first <select id="compare-first" data-default="{escape(default_first)}">'
        f"{options}</select></label> <label>second <select "
        f'id="compare-second" data-default="{escape(default_second)}">{options}</select></label></form>'
        "<noscript><p>This page needs JavaScript to show a pair; the leaderboard compares every method with "
        "full fine-tuning and LoRA without it.</p></noscript>"
        '<div id="compare-result"></div>' + json_script("data-compare", "pairs", data)
    )
    return page("Compare two methods", body, 0, footer)
