"""Leaderboards from run records: `python -m harness.leaderboard` (harness/leaderboard.py; also run at the end of
sweeps).

Reads <results_dir>/runs/*.json (success only; invalid records are listed with their reason and
skipped) and writes <out>/leaderboard.{md,csv,tex,png} (default out: results/scratch; the official
leaderboard is written only by `python -m harness.tune sweep=official`): per model, one row per method (and variant),
one column per
task; cells (the best of each task and those tied with it in bold) are the primary metric ×100 on the task's report
split, the mean over seeds with its 95 %
interval (harness/report/cells.py: seeds and, from the runs' predictions, test items) and n (or the
median), at the final evaluation (or the best one); adapter params (task head excluded) absolute and
as % of the backbone; Δ full / Δ lora: the paired difference to full fine-tuning / LoRA on the same
seeds and items, marked ▲ ▼ where significant after Holm's correction over the model's table (≈: not
shown to differ); sanity flags under each table. leaderboard.tex: the same tables as paste-ready LaTeX
(booktabs), fitted to a two-column article's column or, --latex-width page, its page (harness/report/latex.py)."""

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from harness.config.paths import CONF_DIR
from harness.errors import HarnessError
from harness.report.board import build_and_write
from harness.report.paper import paper_markdown
from harness.report.site import build_site

SCRATCH = "results/scratch"


def official_dir() -> Path:
    """Where the official protocol writes the official leaderboard (conf/sweep/official.yaml)."""
    return Path(OmegaConf.load(CONF_DIR / "sweep" / "official.yaml").protocol.leaderboard)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default=None, help="default: results (with --paper: results/TABLE)")
    parser.add_argument(
        "--out",
        default=SCRATCH,
        help=f"output folder (default: {SCRATCH}); never the official "
        f"leaderboard's, which only `python -m harness.tune sweep=official` writes",
    )
    parser.add_argument("--sweep", default=None, help="only records of this named sweep")
    parser.add_argument("--stat", choices=("mean", "median"), default="mean")
    parser.add_argument(
        "--which",
        choices=("final", "best"),
        default="final",
        help="final evaluation, or the evaluation with the best validation score",
    )
    parser.add_argument(
        "--latex-width",
        choices=("column", "page"),
        default="column",
        help="leaderboard.tex's tables fit a two-column article's column (table) or page (table*); default column",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--site", default=None, metavar="DIR", help="also build the static web site into DIR (harness/report/site.py)"
    )
    parser.add_argument(
        "--paper",
        default=None,
        metavar="TABLE",
        help="a published table (results/reference/TABLE.csv) beside our runs of sweep TABLE",
    )
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == official_dir().resolve():
        raise SystemExit(
            f"error: {args.out} holds the official leaderboard, written only by `python -m harness.tune "
            f"sweep=official`; choose another --out (default {SCRATCH})"
        )
    if args.results_dir is not None and not Path(args.results_dir).is_dir():
        raise SystemExit(
            f"error: --results-dir {args.results_dir} does not exist; give a results folder (one with runs/ inside)"
        )
    try:
        if args.paper:
            text = paper_markdown(args.paper, args.results_dir or f"results/{args.paper}")
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"paper_{args.paper}.md").write_text(text)
        else:
            text = build_and_write(
                args.results_dir or "results",
                args.sweep,
                args.stat,
                args.which,
                args.out,
                not args.no_plot,
                latex_width=args.latex_width,
            )
            if args.site:
                if Path(args.site).resolve() == (official_dir() / "site").resolve():
                    raise HarnessError(
                        f"{args.site} holds the official site, written only by `python -m harness.tune sweep=official`"
                    )
                print(
                    f"site: {build_site(args.results_dir or 'results', args.site, args.sweep, args.stat, args.which)}",
                    file=sys.stderr,
                )
    except HarnessError as error:
        raise SystemExit(f"error: {error}") from None
    print(text)


if __name__ == "__main__":
    main()
