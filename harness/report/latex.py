"""The leaderboard as paste-ready LaTeX: pdflatex with `\\usepackage{booktabs}` and nothing else (the file's
first lines say so), every table fitted by its layout alone (no \\resizebox, no tabularx) to a two-column
article's \\columnwidth (width "column": `table`) or \\textwidth (width "page": `table*`).

Per model: the task blocks (score, 95 % interval (not with the median), n, and the paired-comparison marks
against full fine-tuning and LoRA: ↑ ↓ ≈ as $\\uparrow$ $\\downarrow$ $\\approx$; the differences themselves are in
leaderboard.md and .csv), then the method block (adapter params, % of the backbone, the mean of the method's task
scores), at \\footnotesize. Tasks stand one per block in a column, two side by side on a page. The best cell of
each task and every cell tied with it are bold; a cell with a sanity flag (harness/report/flags.py) carries a
symbol per kind of flag. The caption is markdown.caption's text made LaTeX (math-mode marks, $p<0.05$, $-$ for
minus signs) with what the layout adds (the Δ marks, the mean of tasks, the flag symbols). Where a model's
blocks would overfill a column (or page) the later ones go into continuation tables under a short caption.
Labels: tab:<model>, then tab:<model>-2, tab:<model>-3, ...
"""

import math
import re
from typing import NamedTuple

import pandas as pd

from harness.errors import HarnessError
from harness.report.cells import REFERENCES
from harness.report.flags import flags
from harness.report.markdown import caption, wide_table

LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "α": r"$\alpha$",
    "≤": r"$\le$",
    "≥": r"$\ge$",
    "−": r"$-$",
    "·": r"$\cdot$",
    "…": r"\ldots{}",
    "–": "--",
    "—": "---",
    "▲": r"$\uparrow$",
    "▼": r"$\downarrow$",
    "≈": r"$\approx$",
}
MISSING = {"—": "--"}  # wide_table's text for a value it does not have
RELATIONS = {"<": "<", ">": ">", "=": "=", "≤": r"\le", "≥": r"\ge"}
# `p < 0.05`-like comparisons become math; so does a hyphen that is a minus sign (before a digit, not after a word)
MATH_SPANS = re.compile(r"(\b[pn] ?[<>=≤≥] ?\d+(?:\.\d+)?|(?<![\w.])-(?=\d))")


class FlagKind(NamedTuple):
    words: str  # in the flag's text (harness/report/flags.py)
    symbol: str  # math mode, as a superscript
    meaning: str  # what the caption says


FLAG_KINDS = (
    FlagKind("widen the grid", r"\dagger", "the tuned learning rate is at the edge of its searched grid"),
    FlagKind("not converged", r"\ddagger", "not converged by the end of its budget"),
    FlagKind("fewer than", r"\S", "fewer seeds than the table's other cells"),
    FlagKind("reference under-trained", r"\P", "full fine-tuning under-trained (below head-only)"),
)
OTHER_FLAG = FlagKind("", "*", "another sanity flag")  # a flag of no kind above


class Layout(NamedTuple):
    environment: str
    side_by_side: int  # tasks in a block
    fits: str  # the width every table fits


LAYOUTS = {"column": Layout("table", 1, r"\columnwidth"), "page": Layout("table*", 2, r"\textwidth")}
# Packing estimates, in points: a two-column article's \textheight (10 pt, letter paper); a caption line (LaTeX sets
# captions at \normalsize: 48 printed characters to a column's line, 98 to a page's); a \footnotesize row; a rule
FLOAT_HEIGHT_PT = 550.0
CAPTION_CHARS_PER_LINE = {"column": 48, "page": 98}
CAPTION_LINE_PT, ROW_PT, RULE_PT, GAP_PT = 12.0, 9.5, 4.0, 12.0
PREAMBLE = """\
% Leaderboard tables (harness/report/latex.py), width "{width}": each {environment} fits a two-column article's {fits}.
% Paste-ready for pdflatex; the preamble needs \\usepackage{{booktabs}} and nothing else.
% Marks: $\\uparrow$/$\\downarrow$ significantly better/worse, $\\approx$ no difference shown; bold: best and tied.
"""


def latex_escape(text: str) -> str:
    """Text for LaTeX's text mode: special characters escaped, symbols in math mode, `p < 0.05` as $p<0.05$
    and a minus sign as $-$."""
    parts = MATH_SPANS.split(str(text))  # the matches at odd positions
    return "".join(math_span(part) if i % 2 else plain(part) for i, part in enumerate(parts))


def plain(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def math_span(span: str) -> str:
    if span == "-":
        return "$-$"
    name, relation, value = re.fullmatch(r"([pn]) ?([<>=≤≥]) ?(.+)", span).groups()
    return f"${name}{RELATIONS[relation]}{value}$"


def number(value: float) -> str:
    return latex_escape(f"{round(value, 2) + 0.0:.2f}")  # + 0.0: a value that rounds to zero prints 0, not -0


def flag_marks(
    found: list[str], cells: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[FlagKind]], list[str]]:
    """The flags of a table by cell (method, task) → their kinds, and those that name no cell of the table.
    A flag names its cell as `method / task: ...`; an under-trained reference as `task: ...` (full's cell)."""
    by_cell, unplaced = {}, []
    for flag in found:
        kind = next((kind for kind in FLAG_KINDS if kind.words in flag), OTHER_FLAG)
        cell = next((c for c in cells if flag.startswith(f"{c[0]} / {c[1]}: ")), None)
        cell = cell or next((c for c in cells if c[0] == "full" and flag.startswith(f"{c[1]}: ")), None)
        if cell is None:
            unplaced.append(flag)
        elif kind not in by_cell.setdefault(cell, []):
            by_cell[cell].append(kind)
    return by_cell, unplaced


def superscript(kinds: list[FlagKind]) -> str:
    return f"$^{{{''.join(kind.symbol for kind in kinds)}}}$" if kinds else ""


def full_caption(
    summary: pd.DataFrame,
    model: str,
    stat: str,
    which: str,
    tasks: list[str],
    by_cell: dict[tuple[str, str], list[FlagKind]],
    unplaced: list[str],
) -> str:
    kinds = [kind for kind in (*FLAG_KINDS, OTHER_FLAG) if any(kind in found for found in by_cell.values())]
    added = [
        "Here the $\\Delta$ columns give the marks only; the differences are in leaderboard.md and leaderboard.csv.",
        "Mean of tasks: the unweighted mean of the method's task scores." if len(tasks) > 1 else "",
        "Sanity flags (listed with their numbers under the table in leaderboard.md): "
        + "; ".join(f"{superscript([kind])} {kind.meaning}" for kind in kinds)
        + "."
        if kinds
        else "",
        *(f"Sanity flag: {latex_escape(flag)}." for flag in unplaced),
    ]
    return " ".join([latex_escape(f"{model}: {caption(summary, model, stat, which)}"), *filter(None, added)])


def method_block(table: pd.DataFrame, with_mean: bool) -> list[str]:
    """Rows of the per-method tabular: adapter params, % of the backbone and (several tasks) the mean of tasks."""
    header = [["", "adapter", r"\% of", "mean of"], ["method", "params", "backbone", "tasks"]]
    rows = [
        [row["method"], row["adapter params"], row["% backbone"], row.get("avg", "")] for _, row in table.iterrows()
    ]
    keep = slice(None) if with_mean else slice(0, 3)
    lines = [r"\begin{tabular}{@{}lrr" + ("r" if with_mean else "") + "@{}}", r"\toprule"]
    lines += [" & ".join(cells[keep]) + r" \\" for cells in header]
    lines += [
        r"\midrule",
        *(" & ".join(MISSING.get(c, latex_escape(c)) for c in cells[keep]) + r" \\" for cells in rows),
    ]
    return [*lines, r"\bottomrule", r"\end{tabular}"]


def task_columns(stat: str) -> list[tuple[str, str]]:
    """(header, column type) of one task's columns: the score, its flag symbols (hanging on its right, so that the
    numbers stay aligned), the interval (not with the median), n, the marks against each reference."""
    interval = [(r"95\,\% interval", "r")] if stat != "median" else []
    return [("score", "r@{}"), ("", "l"), *interval, ("$n$", "r"), *[(f"$\\Delta$ {ref}", "c") for ref in REFERENCES]]


def score_cells(row: pd.Series | None, stat: str, kinds: list[FlagKind]) -> list[str]:
    """One task's cells of a method's row (`task_columns`); the score bold where best or tied."""
    if row is None:
        return ["--", *[""] * (len(task_columns(stat)) - 1)]
    score = number(row["score"])
    interval = "--" if pd.isna(row["low"]) else f"[{number(row['low'])}, {number(row['high'])}]"
    marks = ["--" if pd.isna(row[f"diff_{ref}"]) else latex_escape(row[f"mark_{ref}"]) for ref in REFERENCES]
    return [
        rf"\textbf{{{score}}}" if row["best"] else score,
        superscript(kinds),
        *([interval] if stat != "median" else []),
        str(int(row["n"])),
        *marks,
    ]


def task_blocks(
    part: pd.DataFrame, methods: list[str], tasks: list[str], stat: str, by_cell: dict, side_by_side: int
) -> list[list[str]]:
    """The task blocks of a model's tabular, each of `side_by_side` tasks: a header (task names over their
    columns, then the column names) and a row per method."""
    names = [name for name, _ in task_columns(stat)]
    cells = part.set_index(["method", "task"])
    blocks = []
    for start in range(0, len(tasks), side_by_side):
        chunk = tasks[start : start + side_by_side]
        spans = [rf"\multicolumn{{{len(names)}}}{{c}}{{\textit{{{latex_escape(task)}}}}}" for task in chunk]
        rules = [rf"\cmidrule(lr){{{2 + i * len(names)}-{1 + (i + 1) * len(names)}}}" for i in range(len(chunk))]
        lines = [
            " & ".join(["", *spans]) + r" \\",
            " ".join(rules),
            " & ".join(["method", *names * len(chunk)]) + r" \\",
        ]
        lines.append(r"\midrule")
        for method in methods:
            row = [latex_escape(method)]
            for task in chunk:
                present = (method, task) in cells.index
                row += score_cells(
                    cells.loc[(method, task)] if present else None, stat, by_cell.get((method, task), [])
                )
            lines.append(" & ".join(row) + r" \\")
        blocks.append(lines)
    return blocks


def tabular(blocks: list[list[str]], stat: str, side_by_side: int) -> list[str]:
    columns = "@{}l" + "".join(kind for _, kind in task_columns(stat)) * side_by_side + "@{}"
    body = [line for i, block in enumerate(blocks) for line in ([r"\midrule"] if i else [r"\toprule"]) + block]
    return [rf"\begin{{tabular}}{{{columns}}}", *body, r"\bottomrule", r"\end{tabular}"]


def height(lines: list[str]) -> float:
    """The estimated height of tabular lines: their rows and rules (two more rules: a task tabular's top and bottom)."""
    return sum(ROW_PT if line.endswith("\\\\") else RULE_PT if "rule" in line else 0.0 for line in lines) + 2 * RULE_PT


def pack(caption_pt: float, heights: list[float]) -> list[list[int]]:
    """The parts (by index, in order) of each float: a float takes parts while they fit under FLOAT_HEIGHT_PT
    (the first holds the `caption_pt` of its caption, a later one its two-line continuation caption). Only the
    first may hold no part: its caption alone, where the caption and the first part would not fit together."""
    packed, used = [[]], caption_pt
    for index, size in enumerate(heights):
        if (packed[-1] or index == 0) and used + size > FLOAT_HEIGHT_PT:
            packed.append([])
            used = 2 * CAPTION_LINE_PT
        packed[-1].append(index)
        used += size + GAP_PT
    return packed


def model_tables(
    summary: pd.DataFrame, model: str, stat: str, which: str, tuned: pd.DataFrame | None, width: str
) -> str:
    """The model's floats: its task blocks, then its method block, packed under the full caption and continued
    under short ones."""
    layout = LAYOUTS[width]
    part = summary[summary["model"] == model]
    tasks = sorted(part["task"].unique())
    table = wide_table(summary, model, stat)
    methods = list(table["method"])
    found = flags(summary, model, tuned if tuned is not None else pd.DataFrame())
    by_cell, unplaced = flag_marks(found, [(m, t) for m in methods for t in tasks])
    text = full_caption(summary, model, stat, which, tasks, by_cell, unplaced)
    side = min(layout.side_by_side, len(tasks))
    blocks = task_blocks(part, methods, tasks, stat, by_cell, side)
    parts = [*blocks, method_block(table, len(tasks) > 1)]
    printed = re.sub(r"\\[a-zA-Z]+|[${}]", "", text)  # the caption's characters less its markup
    caption_pt = CAPTION_LINE_PT * (math.ceil(len(printed) / CAPTION_CHARS_PER_LINE[width]) + 1)
    out = []
    for number_, indices in enumerate(pack(caption_pt, [height(p) for p in parts]), start=1):
        label = f"tab:{model}" if number_ == 1 else f"tab:{model}-{number_}"
        title = text if number_ == 1 else f"{latex_escape(model)}, continued (as Table~\\ref{{tab:{model}}})."
        out += [rf"\begin{{{layout.environment}}}[tbp]", r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"]
        out += [rf"\caption{{{title}}}", rf"\label{{{label}}}", r"\centering", r"\medskip"]
        in_float = [blocks[i] for i in indices if i < len(blocks)]
        out += tabular(in_float, stat, side) if in_float else []
        out += [*([r"\par\medskip"] if in_float else []), *parts[-1]] if len(parts) - 1 in indices else []
        out += [rf"\end{{{layout.environment}}}", ""]
    return "\n".join(out)


def latex(
    summary: pd.DataFrame, stat: str, which: str, tuned: pd.DataFrame | None = None, width: str = "column"
) -> str:
    """Paste-ready tables of every model (see the module's docstring), for a two-column article's column
    (`width` "column") or page ("page")."""
    if width not in LAYOUTS:
        raise HarnessError(f"LaTeX width {width!r}: choose one of {', '.join(LAYOUTS)}")
    models = sorted(summary["model"].unique())
    return (
        PREAMBLE.format(width=width, environment=LAYOUTS[width].environment, fits=LAYOUTS[width].fits)
        + "\n"
        + "\n".join(model_tables(summary, model, stat, which, tuned, width) for model in models)
    )
