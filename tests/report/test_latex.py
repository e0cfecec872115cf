"""leaderboard.tex as a person pastes it: compiled by pdflatex in a two-column article with booktabs and nothing
else, every table's box measured by TeX itself against \\columnwidth (width "column") or \\textwidth ("page"),
no float taller than the page; marks, minus signs, flags and labels checked against the drawn records.

pdflatex comes from texlive-latex-base and texlive-latex-recommended (.ci/run installs them): without it these
tests skip, except in CI (CI=true), where they fail."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.report.board import assemble, build_and_write
from harness.report.latex import latex, latex_escape
from harness.report.leaderboard import main
from tests.report.test_leaderboard import BACKBONE, RUNS, record

REPO = Path(__file__).parents[2]
COMMITTED = REPO / "results" / "leaderboard.tex"

# Every tabular is set in a box whose width TeX prints, with the \linewidth it stands in (\columnwidth in a
# `table`, \textwidth in a `table*`), then placed as it would have been.
MEASURING = r"""
\newsavebox\measured
\let\measuredtabular\tabular \let\endmeasuredtabular\endtabular
\renewenvironment{tabular}{\begin{lrbox}{\measured}\measuredtabular}{\endmeasuredtabular\end{lrbox}%
  \typeout{MEASURED width=\the\wd\measured\space linewidth=\the\linewidth}\usebox{\measured}}
\AtBeginDocument{\typeout{PAGE columnwidth=\the\columnwidth\space textwidth=\the\textwidth}}
"""


def pdflatex() -> str:
    found = shutil.which("pdflatex")
    if found:
        return found
    missing = "pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing}; .ci/run installs it in CI")
    pytest.skip(missing)


def compile_tables(tables: str, folder: Path) -> dict:
    """Compiles `tables` in a two-column article with booktabs only; returns the log's errors, warnings and
    measurements (pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tables.tex").write_text(tables)
    (folder / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
        + MEASURING
        + "\\begin{document}\n\\input{tables}\n\\end{document}\n"
    )
    subprocess.run([pdflatex(), "-interaction=nonstopmode", "paper.tex"], cwd=folder, capture_output=True, timeout=120)
    log = (folder / "paper.log").read_text(errors="replace")
    page = re.search(r"PAGE columnwidth=([\d.]+)pt textwidth=([\d.]+)pt", log)
    return {
        "errors": [line for line in log.splitlines() if line.startswith("!")],
        "too large": re.findall(r"Float too large for page by [\d.]+pt", log),
        "overfull": re.findall(r"Overfull \\hbox \([\d.]+pt too wide\)", log),
        "boxes": [
            (float(w), float(lw)) for w, lw in re.findall(r"MEASURED width=([\d.]+)pt linewidth=([\d.]+)pt", log)
        ],
        "columnwidth": float(page[1]) if page else None,
        "textwidth": float(page[2]) if page else None,
        "pdf": (folder / "paper.pdf").is_file(),
    }


def assert_fits(tables: str, width: str, folder: Path) -> dict:
    result = compile_tables(tables, folder)
    assert result["errors"] == [] and result["pdf"]
    assert result["too large"] == [] and result["overfull"] == []
    assert len(result["boxes"]) == tables.count("\\begin{tabular}") > 0
    available = result["columnwidth"] if width == "column" else result["textwidth"]
    assert (result["columnwidth"], result["textwidth"]) == (229.5, 469.0)  # article, 10 pt, letter, two columns
    for box, line in result["boxes"]:
        assert line == available and 0 < box <= available
    return result


@pytest.fixture
def results(tmp_path) -> Path:
    return write_records(tmp_path)


def write_records(tmp_path: Path) -> Path:
    """The fixture records of test_leaderboard plus a digits task whose cells carry sanity flags: full fine-tuning
    below head-only (reference under-trained), LoRA still climbing (not converged), LoRA on bbc_news with 2 of
    3 seeds (fewer seeds)."""
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    specs = [*RUNS]
    for seed in range(3):
        specs += [
            ("full", None, "digits", seed, 0.40 + seed / 100, 0.40 + seed / 100, BACKBONE),
            ("head", None, "digits", seed, 0.80 + seed / 100, 0.80 + seed / 100, 0),
            ("lora", None, "digits", seed, 0.90, 0.90, 73_728),
        ]
    for spec in specs:
        rec = record(*spec)
        if spec[:3] == ("lora", None, "digits"):
            rec["metrics"]["curve"] = [
                {"step": step, "split": "validation", "values": {"accuracy": value}}
                for step, value in ((10, 0.85), (20, 0.87), (30, 0.90))
            ]
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    return tmp_path / "results"


def test_escaping_puts_symbols_in_math_mode_and_minus_signs_as_minus():
    assert latex_escape("p < 0.05 after Holm; -0.59 ▲ ▼ ≈, 95 % of a_b & c, 1-2, re-run, −3 ×100") == (
        r"$p<0.05$ after Holm; $-$0.59 $\uparrow$ $\downarrow$ $\approx$, 95 \% of a\_b \& c, 1-2, re-run, "
        r"$-$3 $\times$100"
    )
    assert latex_escape("{x}^~$#\\") == r"\{x\}\textasciicircum{}\textasciitilde{}\$\#\textbackslash{}"


def test_cells_marks_flags_and_labels_from_the_records(results):
    build_and_write(str(results), sweep="fixture", with_plot=False)
    text = (results / "leaderboard.tex").read_text()
    assert text.isascii()  # nothing pdflatex would need a Unicode declaration for
    assert "\\usepackage{booktabs}" in "".join(text.splitlines()[:3])
    assert "\\label{tab:minilm}" in text and "\\begin{table}[tbp]" in text and "table*" not in text
    # digits, one task per block: full 41.00 (0.40..0.42), head 81.00, LoRA 90.00; the columns are score, flags,
    # interval, n, Δ full, Δ lora
    digits = text.split("\\textit{digits}", 1)[1].split("\\bottomrule", 1)[0]
    digit_rows = {
        line.split(" & ")[0]: line.removesuffix(r" \\").split(" & ")[1:]
        for line in digits.splitlines()
        if " & " in line
    }
    assert digit_rows["full"][:2] == ["41.00", r"$^{\P}$"] and digit_rows["full"][3:] == ["3", "--", r"$\downarrow$"]
    assert digit_rows["lora"][:2] == [r"\textbf{90.00}", r"$^{\ddagger}$"] and digit_rows["lora"][5] == "--"
    assert digit_rows["head"][:2] == ["81.00", ""]
    assert digit_rows["method"][:3] == ["score", "", r"95\,\% interval"]
    caption = text.split("\\caption{", 1)[1]
    for legend in (r"$^{\P}$ full fine-tuning under-trained", r"$^{\ddagger}$ not converged", r"$^{\S}$ fewer seeds"):
        assert legend in caption
    assert "$p<0.05$" in caption and "Mean of tasks: the unweighted mean" in caption
    bbc = text.split("\\textit{bbc\\_news}", 1)[1].split("\\bottomrule", 1)[0]
    lora_bbc = next(line.split(" & ") for line in bbc.splitlines() if line.startswith("lora & "))
    assert "94.50" in lora_bbc[1] and lora_bbc[2:5] == [r"$^{\S}$", "[88.15, 100.00]", "2"]  # 2 of 3 seeds: 95, 94
    assert "\nadalora & 60,000 (of 100,000) & 0.264 & -- \\\\\n" in text  # one task of two: no mean of tasks


def test_the_width_option_chooses_table_or_table_star(results, tmp_path):
    command = ["--results-dir", str(results), "--sweep", "fixture", "--no-plot", "--out"]
    main([*command, str(tmp_path / "column")])  # the default
    main([*command, str(tmp_path / "page"), "--latex-width", "page"])
    page, column = ((tmp_path / name / "leaderboard.tex").read_text() for name in ("page", "column"))
    assert "\\begin{table*}[tbp]" in page and "\\begin{table}[" not in page
    assert "\\begin{table}[tbp]" in column and "table*" not in column
    with pytest.raises(SystemExit):
        main(["--results-dir", str(results), "--no-plot", "--out", str(tmp_path / "x"), "--latex-width", "wide"])
    board = assemble(str(results), "fixture")
    with pytest.raises(HarnessError, match="LaTeX width 'wide': choose one of column, page"):
        latex(board.summary, board.stat, board.which, board.tuned, "wide")


def test_the_measurement_is_texs_own(tmp_path):
    """A tabular of one 300 pt rule measures 300 pt plus two \\tabcolsep (6 pt each), and one too wide is reported
    as such: the width checks below read real boxes."""
    wide = "\\begin{table}\\begin{tabular}{l}\\rule{300pt}{1pt}\\end{tabular}\\end{table}"
    result = compile_tables(wide, tmp_path)
    assert result["errors"] == [] and result["boxes"] == [(pytest.approx(312.0, abs=0.01), 229.5)]  # TeX's sp rounding
    assert result["overfull"]


@pytest.mark.parametrize(("width", "stat"), [("column", "mean"), ("page", "mean"), ("column", "median")])
def test_the_synthetic_tables_compile_and_fit(results, tmp_path, width, stat):
    board = assemble(str(results), "fixture", stat)
    assert_fits(latex(board.summary, board.stat, board.which, board.tuned, width), width, tmp_path)


@pytest.fixture(scope="module")
def official_board():
    return assemble(str(REPO / "results" / "official"), "official")


@pytest.mark.slow
@pytest.mark.parametrize("width", ["column", "page"])
def test_the_official_tables_compile_and_fit(official_board, tmp_path, width):
    board = official_board
    tables = latex(board.summary, board.stat, board.which, board.tuned, width)
    result = assert_fits(tables, width, tmp_path)
    for model in board.models:
        assert f"\\label{{tab:{model}}}" in tables
    print(width, [box for box, _ in result["boxes"]])


def test_the_committed_tables_compile_and_fit(tmp_path):
    """results/leaderboard.tex as committed (written by `python -m harness.tune sweep=official`, width column)."""
    assert COMMITTED.read_text().startswith("% Leaderboard tables"), (
        "results/leaderboard.tex predates harness/report/latex.py's paste-ready tables: regenerate the official "
        "leaderboard (python -m harness.tune sweep=official)"
    )
    assert_fits(COMMITTED.read_text(), "column", tmp_path)
