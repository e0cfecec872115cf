"""The site's HTML pieces (harness/report/site.py): the page frame, tables that scroll inside their own box
(a page never grows wider than a phone's screen), key/value lists, plots as embedded JSON, links to cells."""

import html
import json
import re
from datetime import datetime, timezone
from importlib import metadata
from typing import Callable, Optional

import pandas as pd

from harness.store.provenance import code_version

UNSET = "—"
LEGEND_GAP_PX = 90  # from the x axis to the legend: room for the tick labels and the axis title


def slug(*parts: str) -> str:
    return "--".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", part) for part in parts)


def escape(value) -> str:
    return html.escape(str(value))


def cell_href(model: str, method: str, task: str, depth: int) -> str:
    """The link to a cell's page from a page `depth` folders below the site's root."""
    return f"{'../' * depth}cells/{slug(model, method, task)}.html"


def method_href(method: str, depth: int) -> str:
    return f"{'../' * depth}methods/{slug(method)}.html"


def page(title: str, body: str, depth: int, footer: str) -> str:
    """A whole HTML page; `depth` folders below the site's root (for the assets' relative paths)."""
    root = "../" * depth
    plotly = (
        f'<script src="{root}assets/plotly.min.js"></script>' if "data-plot=" in body else ""
    )  # 4.8 MB: only where drawn
    targets = (("Leaderboard", "index.html"), ("Methods", "methods/index.html"), ("Compare", "compare.html"))
    nav = " ".join(f'<a href="{root}{target}">{name}</a>' for name, target in targets)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="{root}assets/site.css"></head><body>'
        f"<nav>{nav}</nav><main><h1>{escape(title)}</h1>{body}</main>"
        f'<footer>{footer}</footer>{plotly}<script src="{root}assets/site.js"></script></body></html>\n'
    )


def footer_text() -> str:
    version = metadata.version("peft-harness")
    sha = code_version()["git_sha"] or "unknown"
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"peft-harness {escape(version)} · git {escape(sha[:12])} · built {built}"


def is_unset(value) -> bool:
    """None, NaN and empty values: shown as nothing (or "—"), never as `None` or `NaN`."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, float) and value != value


def shown(value) -> str:
    """A value as a reader reads it: ints with thousands separators, dicts and lists as JSON, unset as "—"."""
    if is_unset(value):
        return UNSET
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def number_cell(text: str, value: float, extra: str = "") -> str:
    sort = "" if pd.isna(value) else f' data-value="{value:.12g}"'
    return f"<td{sort}{extra}>{text}</td>"


def scrolling(table: str) -> str:
    """A table in a box of its own that scrolls sideways where the screen is narrower than the table."""
    return f'<div class="table-scroll">{table}</div>'


def definition_list(values: dict) -> str:
    """Keys and values as a <dl>, the unset ones left out."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(shown(v))}</dd>" for k, v in values.items() if not is_unset(v))
    return f'<dl class="keys">{items}</dl>' if items else "<p>none.</p>"


LEADING_NUMBER = re.compile(r"^([+-]?\d[\d,]*(?:\.\d+)?)(?:\s|$)")  # "96.50 [94.1, 98.9]", "+0.59 ≈", "1,234"


def sort_value(value) -> Optional[float]:
    """The number a table cell sorts by: the value, or the number its text starts with ("96.50 [94.10,
    98.90]", "+0.59 ≈", "1,234"); None for text (a run key, a date, a grid)."""
    if is_unset(value) or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = LEADING_NUMBER.match(str(value))
    return float(match.group(1).replace(",", "")) if match else None


def frame_table(frame: pd.DataFrame, links: Optional[dict[str, Callable[[pd.Series], str]]] = None) -> str:
    """A frame as a table (scrolling in its own box; sortable by any column with site.js): numbers sort by
    value, unset values read "—"; `links` maps a column to the href of its cell in a row (e.g. the row's cell
    page)."""
    links = links or {}
    head = "".join(f"<th>{escape(column)}</th>" for column in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            text = escape(shown(value))
            if column in links:
                text = f'<a href="{escape(links[column](row))}">{text}</a>'
            number = sort_value(value)
            cells.append(f"<td>{text}</td>" if number is None else number_cell(text, number))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return scrolling(f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def plot_layout(height: int, top: int, bottom: int, **axes) -> dict:
    """A plotly layout of `height` px whose legend lies under the x axis's title at any width (its offset in
    px, as a fraction of the plotting area's height), never over an axis, label or point."""
    legend = {"orientation": "h", "yanchor": "top", "y": -LEGEND_GAP_PX / (height - top - bottom), "xanchor": "left"}
    return {**axes, "height": height, "margin": {"t": top, "b": bottom, "l": 60, "r": 20}, "legend": {**legend, "x": 0}}


def plot_div(element: str, figure: dict) -> str:
    """A plot's place and its figure as JSON (drawn by assets/site.js; `</` escaped so the data cannot end the
    script)."""
    return f'<div class="plot" id="{element}"></div>{json_script("data-plot", element, figure)}'


def json_script(attribute: str, name: str, data) -> str:
    """Data embedded in a page for site.js (`</` escaped so the data cannot end the script)."""
    text = json.dumps(data).replace("</", "<\\/")
    return f'<script type="application/json" {attribute}="{escape(name)}">{text}</script>'
