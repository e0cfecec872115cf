"""The fair tuning protocol: `python -m harness.tune sweep=official [--dry-run | --prune] [overrides...]`.

A protocol is the `protocol` section of a sweep config (conf/sweep/official.yaml; harness/protocol/spec.py).
For every suite (one model, its tasks, the methods it names) and every (method, task), a *cell*
(harness/protocol/cells.py):
1. **search** on `search_seed`: a sequential log-grid search of the cell's learning rate around the
   method's own default (its head's lr for head-only, both by one factor for full fine-tuning; the
   method's `axis`): the initial points, then one point at a time, extended while the best point is
   on the grid's edge and refined once it is inside, `search.trials` points in all for every method
   (harness/protocol/lr_search.py);
2. **pick**: the point with the best primary metric on `select_split` (ties: the smaller value);
   failed search runs never win;
3. **seeds**: the chosen values on every seed of `seeds` (the search seed's run is the search's own).
   Where a suite gives a task `seeds_overrides` (e.g. a longer budget: `train.epochs=4`), the seeds
   stage runs with them on every seed, the search seed's included, and only those runs are the cell's
   results: the search's points are chosen at the shorter budget, the reported runs train longer.
Every run carries `tuning` (split, search seed, trials, its search point; `stage: seeds` on a seeds
stage's runs with their own overrides) in its record, outside the
run key: the same configuration run by hand is the same run, and is adopted (given the section)
rather than redone (harness/protocol/outcomes.py). The leaderboard applies the same rule to the records
(`select_tuned`) and shows only the chosen runs. Runs are launched as Hydra multiruns
(harness/protocol/launch.py), so extra overrides such as `hydra/launcher=joblib` apply; runs that already
succeeded are skipped, so the same command resumes a killed protocol and, when everything is done, only
rebuilds the tables. Two launchers may work on one protocol at once (e.g. two `threads=1` processes on two
cores): each skips the runs the other holds and waits for them where it needs their result. Writes
`<protocol.leaderboard>/leaderboard.*` (under each model's sanity flags, `protocol.flag_notes[model]`: why
the flags the protocol could not clear stand) and `<results_dir>/tuning.csv`; prints the plan and its time
estimate first (harness/protocol/estimate.py), after two counters on stderr while it composes one config per
cell and keys each run once (harness/protocol/cells.py: `--dry-run` of sweep=official, 270 runs, takes ~30 s
where it took minutes).
Records of a cell that are no longer among its runs (after regenerated records sent a search another
way: a search point off its path, seeds at a former pick; seeds run at the search's budget before the
seeds stage got overrides of its own) are listed; `--prune` removes them.
"""

import argparse
import sys
from pathlib import Path

from omegaconf import DictConfig

from harness.config.compose import project_config
from harness.config.preflight import unknown_choices
from harness.errors import HarnessError
from harness.protocol.cells import Cell, Composer, plan_cells
from harness.protocol.estimate import estimate
from harness.protocol.launch import run_rounds
from harness.protocol.outcomes import Outcomes, prune
from harness.protocol.progress import Counter
from harness.protocol.spec import parse_protocol
from harness.protocol.tuning_table import write_tuning_table
from harness.report.board import build_and_write
from harness.report.site import build_site
from harness.store.records import RecordStore


def main(argv: list[str] | None = None) -> None:
    try:
        with project_config():
            run_protocol(argv)
    except HarnessError as error:  # a protocol missing or malformed, a run that cannot be planned: one line
        raise SystemExit(f"error: {error}") from None


def run_protocol(argv: list[str] | None) -> None:
    """Plan, then search, then the seeds stage, then the tables: each stage resumes where records stop."""
    args = parse_arguments(argv)
    cfg, cells, outcomes = set_up(args.overrides)
    stale = outcomes.superseded(cells)
    if args.prune:
        print("\n".join([*prune(stale, outcomes.store), f"{len(stale)} superseded record(s) removed"]))
        return
    print_plan(cells, outcomes, stale)
    if args.dry_run:
        return
    protocol = outcomes.protocol
    run_rounds(
        "search",
        lambda: [cell.run(protocol, j, protocol.search_seed) for cell in cells for j in outcomes.search(cell)[0]],
        outcomes,
        [*args.overrides],
    )
    run_rounds(
        "seeds",
        lambda: [r for cell in cells for r in outcomes.unfinished(outcomes.final_runs(cell))],
        outcomes,
        [*args.overrides],
    )
    # invalid records met while picking: listed, then redone or left out
    for problem in dict.fromkeys(outcomes.store.problems):
        print(f"warning: {problem}", file=sys.stderr)
    write_tables(cfg, cells, outcomes)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.tune", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="list the cells, the runs done and the time left; run nothing"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="remove the records of the protocol's cells that are no longer among its runs; run nothing",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides: sweep=<protocol sweep> first, then any others")
    return parser.parse_intermixed_args(argv)


def set_up(overrides: list[str]) -> tuple[DictConfig, list[Cell], Outcomes]:
    """The composed config of `overrides` (a protocol sweep and any others), its protocol's cells, and the
    record store's view of them (inside `project_config()`)."""
    for problem in unknown_choices(overrides):
        raise HarnessError(problem)
    composer = Composer([o for o in overrides if not o.startswith("hydra")])  # launcher choices: runs only
    cfg = composer([])
    protocol = parse_protocol(cfg)
    cells = plan_cells(protocol, composer, Counter("cells composed"))
    outcomes = Outcomes(protocol, composer, RecordStore(cfg.results_dir))
    checked = Counter("cells' runs keyed and their records read")
    for number, cell in enumerate(cells, 1):  # each run's key, once (the plan, the rounds and `superseded` reuse them)
        outcomes.unfinished(outcomes.final_runs(cell))
        checked(number, len(cells))
    return cfg, cells, outcomes


def print_plan(cells: list[Cell], outcomes: Outcomes, stale: list[dict]) -> None:
    """The cells, their runs left and the time estimate; the superseded records, if any."""
    print(estimate(cells, outcomes.protocol, outcomes, outcomes.store), flush=True)
    if stale:
        print(
            f"{len(stale)} record(s) of these cells are no longer among the protocol's runs (a search point off its "
            f"path or a seed at a former pick, after records were regenerated; seeds at the search's budget, once a "
            f"seeds stage has overrides of its own): `--prune` removes them",
            flush=True,
        )


def write_tables(cfg: DictConfig, cells: list[Cell], outcomes: Outcomes) -> None:
    """tuning.csv in the results folder; the leaderboard, its figures and the site under protocol.leaderboard."""
    protocol = outcomes.protocol
    write_tuning_table(cells, protocol, outcomes, Path(cfg.results_dir))
    caption = cfg.get("caption")
    print(
        build_and_write(
            cfg.results_dir,
            sweep=cfg.sweep,
            out_dir=protocol.leaderboard,
            sweep_caption=caption,
            flag_notes=protocol.flag_notes,
        )
    )
    site = build_site(
        cfg.results_dir,
        str(Path(protocol.leaderboard) / "site"),
        sweep=cfg.sweep,
        sweep_caption=caption,
        flag_notes=protocol.flag_notes,
    )
    print(f"site: {site}")
