"""The leaderboard as a static web site: `python -m harness.leaderboard --site DIR` (the official protocol
writes results/site/). Built from the records alone; no server, nothing fetched: it opens from file://
and from any static host, and no page is wider than a phone's screen (wide tables scroll in their own box).

- index.html (harness/report/site_index.py): per model the table of methods × tasks with Δ full, Δ lora,
  the sanity flags (harness/report/flags.py; the protocol's explanation of those it could not clear,
  `flag_notes`) and the Pareto plot (plotly, its library a local file: assets/plotly.min.js); the sweep's
  caption above all, where it has one; links to every other page and download;
- cells/<model>--<method>--<task>.html (harness/report/site_cell.py): learning curves, hyper-parameters,
  tuning trials, cost and provenance of one board row;
- methods/<method>.html and methods/index.html (harness/report/site_method.py): a method's cells, cost,
  tuning and the published tables that report it;
- compare.html (harness/report/site_compare.py): the paired difference of any two methods per model × task;
- convergence.html and tuning.html (tuning protocols): the tables of the Markdown leaderboard, sortable,
  each row linked to its cell; papers/<table>.html: published numbers beside ours (for each
  results/reference/<table>.csv whose runs are in results/<table>);
- data/: leaderboard.md, leaderboard.csv, leaderboard.tex, leaderboard_across_tasks.csv, convergence.csv,
  tuning.csv for download; every page's footer: harness version, git sha, build time.
"""

import shutil
from pathlib import Path

from harness.report.board import Board, assemble, write_csvs
from harness.report.convergence import convergence_frame, convergence_summary, convergence_table
from harness.report.latex import latex
from harness.report.markdown import markdown, tuning_table
from harness.report.paper import REFERENCE_DIR, PaperView, paper_view
from harness.report.site_cell import cell_page, labelled_records
from harness.report.site_compare import compare_page
from harness.report.site_html import cell_href, escape, footer_text, frame_table, method_href, page, slug
from harness.report.site_index import index_page, score_text
from harness.report.site_method import method_page, methods_index

ASSETS = Path(__file__).parent / "site_assets"


def row_links(depth: int) -> dict:
    """Links of a table with model, method and task columns: the task to its cell, the method to its page."""
    return {
        "task": lambda row: cell_href(row["model"], row["method"], row["task"], depth),
        "method": lambda row: method_href(row["method"], depth),
    }


def convergence_page(board: Board, footer: str) -> str:
    frame = convergence_frame(board.summary)
    body = (
        f'<p class="caption">{escape(convergence_summary(frame))} Click a task for its cell, a method for its page, '
        "a header to sort.</p>" + frame_table(convergence_table(frame, "no"), row_links(0))
    )
    return page("Convergence", body, 0, footer)


def tuning_page(board: Board, footer: str) -> str:
    body = (
        '<p class="caption">The learning rates the tuning protocol chose per cell, the searched grid, the selection '
        "score, and the expected best validation score of 1…k trials (Dodge et al. 2019). Click a task for its cell."
        "</p>" + frame_table(tuning_table(board.tuned), row_links(0))
    )
    return page("Tuned learning rates", body, 0, footer)


def paper_page(view: PaperView, footer: str) -> str:
    body = f'<p class="caption">{escape(view.caption)}</p>' + frame_table(view.table)
    return page(view.title, body, 1, footer)


def write_downloads(board: Board, out: Path, sweep_caption: str | None, flag_notes: dict | None) -> list[str]:
    """The tables for download into out/data/, and their links (from the index)."""
    (out / "leaderboard.md").write_text(
        markdown(
            board.summary,
            board.aggregates,
            board.stat,
            board.which,
            board.problems,
            board.tuned,
            sweep_caption,
            flag_notes,
        )
    )
    names = ["leaderboard.md"]
    if not board.runs.empty:
        write_csvs(board, out)
        (out / "leaderboard.tex").write_text(latex(board.summary, board.stat, board.which))
        names += ["leaderboard.csv", "leaderboard.tex", "leaderboard_across_tasks.csv", "convergence.csv"]
    if not board.tuned.empty:
        tuning_table(board.tuned).to_csv(out / "tuning.csv", index=False)
        names.append("tuning.csv")
    return [f'<a href="data/{name}" download>{name}</a>' for name in names]


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
    for folder in ("assets", "cells", "data", "methods", "papers"):
        (out / folder).mkdir(parents=True)
    shutil.copy(Path(plots_library()), out / "assets" / "plotly.min.js")
    for asset in ASSETS.iterdir():
        shutil.copy(asset, out / "assets" / asset.name)
    footer = footer_text()
    records = labelled_records(board.records)
    for _, row in board.summary.iterrows():
        key = (row["model"], row["method"], row["task"])
        (out / "cells" / f"{slug(*key)}.html").write_text(cell_page(board, records[key], row, score_text(row), footer))
    papers = {
        p.stem: paper_view(p.stem, str(papers_root / p.stem))
        for p in sorted(REFERENCE_DIR.glob("*.csv"))
        if (papers_root / p.stem / "runs").is_dir()
    }
    for name, view in papers.items():
        (out / "papers" / f"{name}.html").write_text(paper_page(view, footer))
    reported = {name: set(view.table["method"]) for name, view in papers.items()}
    for method in board.summary["method"].unique() if not board.summary.empty else []:
        (out / "methods" / f"{slug(method)}.html").write_text(method_page(board, method, records, reported, footer))
    (out / "methods" / "index.html").write_text(methods_index(board, footer))
    (out / "compare.html").write_text(compare_page(board, footer))
    links = ['<a href="methods/index.html">methods</a>', '<a href="compare.html">compare two methods</a>']
    if not board.summary.empty:
        (out / "convergence.html").write_text(convergence_page(board, footer))
        links.append('<a href="convergence.html">convergence</a>')
    if not board.tuned.empty:
        (out / "tuning.html").write_text(tuning_page(board, footer))
        links.append('<a href="tuning.html">tuned learning rates</a>')
    links += [f'<a href="papers/{escape(name)}.html">paper: {escape(name)}</a>' for name in papers]
    links += write_downloads(board, out / "data", sweep_caption, flag_notes)
    (out / "index.html").write_text(index_page(board, footer, links, sweep_caption, flag_notes))
    return out / "index.html"


def plots_library() -> str:
    """The path of plotly.js as the plotly package ships it (copied into the site, never fetched)."""
    import plotly

    return str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js")
