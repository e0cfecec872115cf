"""The leaderboard as LaTeX tables (booktabs rules), one per model."""

import re

import pandas as pd

from harness.report.markdown import caption, wide_table

LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "—": "--",
}


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
        blocks.append(
            table.style.hide(axis="index").to_latex(caption=title, hrules=True, position="ht", column_format=align)
        )
    return "\n".join(blocks)
