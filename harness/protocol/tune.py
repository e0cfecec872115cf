"""The fair tuning protocol: `python -m harness.tune sweep=official [--dry-run] [overrides...]`.

A protocol is the `protocol` section of a sweep config (conf/sweep/official.yaml). For every suite
(one model, its tasks, its methods) and every (method, task), a *cell*:
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
rather than redone. The leaderboard applies the same rule to the records (`select_tuned`) and shows
only the chosen runs. Runs are launched as Hydra multiruns, so extra overrides such as
`hydra/launcher=joblib` apply; runs that already succeeded are skipped, so the same command resumes a
killed protocol and, when everything is done, only rebuilds the tables. Two launchers may work on one
protocol at once (e.g. two `threads=1` processes on two cores): each skips the runs the other holds
and waits for them where it needs their result. Writes `<protocol.leaderboard>/leaderboard.*` (under
each model's sanity flags, `protocol.flag_notes[model]`: why the flags the protocol could not clear stand) and
`<results_dir>/tuning.csv`; prints the plan and its time estimate first (harness/protocol/estimate.py).
Records of a cell that are no longer among its runs (after regenerated records sent a search another
way: a search point off its path, seeds at a former pick; seeds run at the search's budget before the
seeds stage got overrides of its own) are listed; `--prune` removes them.
"""

import argparse
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from harness.config.compose import project_config
from harness.config.preflight import CONF_DIR, group_options, unknown_choices
from harness.errors import HarnessError
from harness.protocol import lr_search
from harness.protocol.estimate import estimate
from harness.report.board import build_and_write
from harness.report.selection import selection_score, tuning_of
from harness.report.site import build_site
from harness.store.identity import identify
from harness.store.records import RecordStore


@dataclass
class Suite:
    model: str
    tasks: list[str]
    methods: list[str]
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    task_overrides: dict[str, list[str]] = field(default_factory=dict)
    seeds_overrides: dict[str, list[str]] = field(default_factory=dict)  # task → the seeds stage's own overrides


@dataclass
class Search:
    """The sequential log-grid search of every cell (harness/protocol/lr_search.py): value = default × step^j."""

    initial: list[float]
    trials: int
    step: float


AXES = ("lr", "head_lr", "tied")  # what a method's search varies: its lr, its head's lr, or both by one factor


@dataclass
class Protocol:
    search_seed: int
    seeds: list[int]
    search: Search
    select_split: str
    leaderboard: str
    suites: list[Suite]
    axes: dict[str, str] = field(default_factory=dict)  # method → axis (default "lr")
    centres: dict[str, dict] = field(default_factory=dict)  # method → {lr, head_lr}: the search's centre, pinned
    flag_notes: dict[str, str] = field(default_factory=dict)  # model → why its table's remaining sanity flags stand


@dataclass
class Cell:
    """One (model, method, task) of a protocol: its default (lr, head lr) and the axis its search varies."""

    suite: Suite
    method: str
    task: str
    lr: float
    head_lr: float
    axis: str = "lr"
    pins: list[str] = field(default_factory=list)  # method.lr/head_lr at the protocol's pinned centre

    def base_overrides(self) -> list[str]:
        """model, method, task, then the suite's overrides; the pinned centre only where no override of the
        suite sets the same key (one value per key: Hydra keeps the last, a multirun needs one)."""
        given = [
            *self.suite.overrides,
            *self.suite.task_overrides.get(self.task, []),
            *self.suite.method_overrides.get(self.method, []),
        ]
        set_keys = {override.split("=", 1)[0] for override in given}
        pins = [pin for pin in self.pins if pin.split("=", 1)[0] not in set_keys]
        return [
            f"model={self.suite.model}",
            f"method={self.method}",
            f"task={self.task}",
            *self.suite.overrides,
            *self.suite.task_overrides.get(self.task, []),
            *pins,
            *self.suite.method_overrides.get(self.method, []),
        ]

    def values(self, exponent: float, step: float) -> tuple[float, float]:
        """The (lr, head lr) of search point `exponent`."""
        factor = step**exponent
        lr = rounded(self.lr * factor) if self.axis in ("lr", "tied") else self.lr
        head_lr = rounded(self.head_lr * factor) if self.axis in ("head_lr", "tied") else self.head_lr
        return lr, head_lr

    @property
    def seeds_stage(self) -> list[str]:
        """The overrides only the seeds stage's runs get ([]: its runs are the search's own configuration)."""
        return self.suite.seeds_overrides.get(self.task, [])

    def stage_seeds(self, protocol: Protocol) -> list[int]:
        """The seeds the seeds stage runs: every seed where it has its own overrides, else all but the search's."""
        return [seed for seed in protocol.seeds if self.seeds_stage or seed != protocol.search_seed]

    def stage_text(self, protocol: Protocol) -> str:
        count = len(self.stage_seeds(protocol))
        return f"{count} seeds with overrides of their own" if self.seeds_stage else f"{count} more seeds"

    def run(self, protocol: Protocol, exponent: float, seed: int, stage: str = "search") -> list[str]:
        """The overrides of one run of `stage` ("search" or "seeds"). Its `tuning` section (in the record,
        outside the run key) names the protocol's selection split, search seed and trials, the run's
        search point and, for a seeds stage with its own overrides, `stage: seeds`."""
        lr, head_lr = self.values(exponent, protocol.search.step)
        own = self.seeds_stage if stage == "seeds" else []
        replaced = {override.split("=", 1)[0] for override in own}
        tuning = (
            f"+tuning={{split:{protocol.select_split},search_seed:{protocol.search_seed},"
            f"trials:{protocol.search.trials},exponent:{exponent:g}{',stage:seeds' if own else ''}}}"
        )
        return [
            *(o for o in self.base_overrides() if o.split("=", 1)[0] not in replaced),
            *own,
            f"seed={seed}",
            f"train.lr={lr:g}",
            f"train.head_lr={head_lr:g}",
            tuning,
        ]


def rounded(value: float) -> float:
    return float(f"{value:.3g}")


def expand_methods(names, exclude) -> list[str]:
    available = [m for m in group_options()["method"] if "/" not in m]
    chosen = available if names == "all" else list(names)
    unknown = [m for m in [*chosen, *exclude] if m not in group_options()["method"]]
    if unknown:
        raise HarnessError(f"protocol names unknown methods {unknown}; available: {', '.join(available)}")
    return [m for m in chosen if m not in exclude]


def parse_protocol(cfg: DictConfig) -> Protocol:
    if cfg.get("protocol") is None:
        sweeps = ", ".join(group_options()["sweep"])
        raise HarnessError(
            f"the config has no `protocol` section; choose a sweep that defines one (sweep=...; sweeps: {sweeps})"
        )
    node = OmegaConf.to_container(cfg.protocol, resolve=True)
    suites = [
        Suite(
            model=s["model"],
            tasks=list(s["tasks"]),
            methods=expand_methods(s.get("methods", "all"), s.get("exclude", [])),
            overrides=list(s.get("overrides", [])),
            method_overrides=dict(s.get("method_overrides", {})),
            task_overrides=dict(s.get("task_overrides", {})),
            seeds_overrides=dict(s.get("seeds_overrides") or {}),
        )
        for s in node["suites"]
    ]
    search = node["search"]
    protocol = Protocol(
        node["search_seed"],
        list(node["seeds"]),
        Search(list(search["initial"]), int(search["trials"]), float(search["step"])),
        node.get("select_split", "validation"),
        node.get("leaderboard", cfg.results_dir),
        suites,
        dict(node.get("axes") or {}),
        dict(node.get("centres") or {}),
        dict(node.get("flag_notes") or {}),
    )
    expand_methods(list(protocol.axes), [])
    models = group_options()["model"]  # a note on a model the suites leave out (a narrowed protocol) goes unused
    bad_notes = sorted(
        model for model, note in protocol.flag_notes.items() if model not in models or not isinstance(note, str)
    )
    if bad_notes:
        raise HarnessError(
            f"protocol.flag_notes: {', '.join(map(str, bad_notes))}: not a text under a model's name; "
            f"models: {', '.join(models)}"
        )
    bad_axes = {m: a for m, a in protocol.axes.items() if a not in AXES}
    if bad_axes:
        raise HarnessError(f"protocol.axes: {bad_axes} is not an axis; allowed: {', '.join(AXES)}")
    if (
        not protocol.search.initial
        or not protocol.seeds
        or protocol.search.trials < len(protocol.search.initial)
        or protocol.search.step <= 1
    ):
        raise HarnessError(
            "protocol: search.initial and seeds must each list at least one value, search.trials must be at "
            "least the number of initial points and search.step above 1"
        )
    return protocol


class Composer:
    """Hydra's compose API over the project's config (inside `project_config()`), to read
    defaults and compute run keys (each run's key composed once: the protocol asks for it repeatedly)."""

    def __init__(self, base: list[str]):
        self.base = base
        self.keys: dict[tuple[str, ...], str] = {}

    def __call__(self, overrides: list[str]) -> DictConfig:
        return compose("config", overrides=[*self.base, *overrides])

    def key(self, overrides: list[str]) -> str:
        if tuple(overrides) not in self.keys:
            self.keys[tuple(overrides)] = identify(self(overrides)).key
        return self.keys[tuple(overrides)]


def plan_cells(protocol: Protocol, composer: Composer) -> list[Cell]:
    cells = []
    for suite in protocol.suites:
        for method in suite.methods:
            for task in suite.tasks:
                centre = protocol.centres.get(method)
                pins = [f"method.lr={centre['lr']!r}", f"method.head_lr={centre['head_lr']!r}"] if centre else []
                cell = Cell(suite, method, task, 0.0, 0.0, protocol.axes.get(method, "lr"), pins)
                cfg = composer(cell.base_overrides())
                cell.lr, cell.head_lr = cfg.method.lr, cfg.method.head_lr
                cells.append(cell)
    return cells


class Outcomes:
    """The protocol's view of the record store: a run's selection score once it finished (succeeded or
    failed), else None. A finished run found under the same key without this protocol's `tuning`
    section (the same configuration run by hand, or by an earlier protocol) is adopted: the section is
    written into its record, so that the leaderboard sees it as this protocol's run."""

    def __init__(self, protocol: Protocol, composer: Composer, store: RecordStore):
        self.protocol, self.composer, self.store = protocol, composer, store

    def record(self, overrides: list[str]) -> dict | None:
        record = self.store.read(self.composer.key(overrides))
        if record is None or record["status"] not in ("success", "failed"):
            return None
        tuning = OmegaConf.to_container(self.composer(overrides).tuning)
        if tuning_of(record) != tuning:
            record["config"]["tuning"] = tuning
            self.store.write(record)
        return record

    def score(self, cell: Cell, exponent: float) -> float | None:
        record = self.record(cell.run(self.protocol, exponent, self.protocol.search_seed))
        return None if record is None else selection_score(record)

    def search(self, cell: Cell) -> tuple[list[float], dict[float, float]]:
        """The cell's search points to run next, and the scores found so far (lr_search.plan)."""
        return lr_search.plan(self.protocol.search.initial, self.protocol.search.trials, lambda j: self.score(cell, j))

    def final_runs(self, cell: Cell) -> list[list[str]]:
        """The seeds stage at the cell's pick, once its search is complete and a run succeeded: the other
        seeds, or every seed where the stage has its own overrides."""
        pending, scores = self.search(cell)
        if pending or not scores or max(scores.values()) == lr_search.FAILED:
            return []
        chosen = lr_search.best_exponent(scores)
        return [cell.run(self.protocol, chosen, seed, "seeds") for seed in cell.stage_seeds(self.protocol)]

    def unfinished(self, runs: list[list[str]]) -> list[list[str]]:
        return [
            r
            for r in runs
            if (record := self.store.read(self.composer.key(r))) is None or record["status"] != "success"
        ]

    def superseded(self, cells: list[Cell]) -> list[dict]:
        """Finished records of these cells that are no longer among the protocol's runs: a search point
        off the cell's search path or a seed at a former pick, left behind when records it chose by
        were regenerated (harness.protocol.verify --regenerate) and the search went another way. The leaderboard
        would count such a search point as a trial: `--prune` removes them."""
        current, names = set(), set()
        for cell in cells:
            pending, scores = self.search(cell)
            current |= {
                self.composer.key(cell.run(self.protocol, j, self.protocol.search_seed)) for j in [*scores, *pending]
            }
            current |= {self.composer.key(run) for run in self.final_runs(cell)}
            names.add((cell.suite.model, cell.method, cell.task))
        return [
            r
            for r in self.store.load_all()[0]
            if tuning_of(r) is not None
            and r["status"] in ("success", "failed")
            and (r["model"], r["method"], r["task"]) in names
            and r["run_key"] not in current
        ]


def prune(records: list[dict], store: RecordStore) -> list[str]:
    """Removes these records and the files beside them (predictions, step log); one line per record."""
    lines = []
    for record in records:
        for path in store.files(record["run_key"]):
            path.unlink()
        lines.append(
            f"removed {record['run_key']}: {record['model']} {record['method']} {record['task']} seed {record['seed']} "
            f"(search point {tuning_of(record)['exponent']:g}), no longer among the protocol's runs"
        )
    return lines


def as_multiruns(runs: list[list[str]]) -> list[list[str]]:
    """Hydra multirun arguments covering exactly `runs` (each a list of `key=value`): one sweep over
    the keys whose values differ when the runs are their cartesian product, else one per group of
    runs that share everything but the task and the seed."""
    return [arguments for arguments, _ in multirun_groups(runs)]


def multirun_groups(runs: list[list[str]]) -> list[tuple[list[str], list[list[str]]]]:
    """`as_multiruns` with the runs each multirun covers."""
    values: dict[str, list[str]] = {}
    for overrides in runs:
        for override in overrides:
            key, value = override.split("=", 1)
            if value not in values.setdefault(key, []):
                values[key].append(value)
    if math.prod(len(v) for v in values.values()) == len(runs):
        return [([f"{k}={','.join(v)}" for k, v in values.items()], runs)]
    groups: dict[tuple, list[list[str]]] = {}
    for overrides in runs:
        groups.setdefault(tuple(o for o in overrides if not o.startswith(("task=", "seed="))), []).append(overrides)
    return [pair for group in groups.values() for pair in multirun_groups(group)]


def launch(arguments: list[str], extra: list[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "harness",
        "-m",
        *arguments,
        "~hydra.callbacks.leaderboard",
        "progress=false",
        *extra,
    ]
    print("$ python " + " ".join(command[1:]), flush=True)
    subprocess.run(command)


def main(argv: list[str] | None = None) -> None:
    try:
        with project_config():
            run_protocol(argv)
    except HarnessError as error:  # a protocol missing or malformed, a run that cannot be planned: one line
        raise SystemExit(f"error: {error}") from None


def run_rounds(stage: str, next_runs, outcomes: Outcomes, extra: list[str]) -> None:
    """Launches `next_runs()`, one multirun at a time, until it is empty. Runs that another launcher
    holds (a second `python -m harness.tune` on the same results) are left to it, and waited for where
    nothing else is left; a multirun after which none of its runs finished stops the protocol (a run
    that cannot even write its record)."""
    while runs := next_runs():
        free = [r for r in runs if not outcomes.store.is_locked(outcomes.composer.key(r))]
        if not free:
            time.sleep(WAIT_SECONDS)
            continue
        arguments, covered = multirun_groups(free)[0]
        print(
            f"{stage}: {len(runs)} run(s) to do now"
            + (f" ({len(runs) - len(free)} held by another launcher)" if len(free) < len(runs) else ""),
            flush=True,
        )
        launch(arguments, extra)
        if all(outcomes.record(r) is None and not outcomes.store.is_locked(outcomes.composer.key(r)) for r in covered):
            raise HarnessError(
                f"{stage}: none of the {len(covered)} run(s) just launched finished (see the output above)"
            )


WAIT_SECONDS = 20


def run_protocol(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.tune", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="list the cells, the runs done and the time left; run nothing"
    )
    parser.add_argument(
        "--write-defaults",
        action="store_true",
        help="set each method's default lr/head lr (conf/method) to its pick on the default model and task; run nothing",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="remove the records of the protocol's cells that are no longer among its runs; run nothing",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides: sweep=<protocol sweep> first, then any others")
    args = parser.parse_args(argv)
    for problem in unknown_choices(args.overrides):
        raise SystemExit(f"error: {problem}")
    composer = Composer([o for o in args.overrides if not o.startswith("hydra")])  # launcher choices: runs only
    cfg = composer([])
    protocol = parse_protocol(cfg)
    store = RecordStore(cfg.results_dir)
    cells = plan_cells(protocol, composer)
    outcomes = Outcomes(protocol, composer, store)
    if args.write_defaults:
        defaults = compose("config")  # the plain default run (python -m harness): its model and task
        changes = write_method_defaults(cells, protocol, outcomes, CONF_DIR, defaults.model.name, defaults.task.name)
        print("\n".join(changes) or "no complete search on the default model and task yet")
        return
    stale = outcomes.superseded(cells)
    if args.prune:
        print("\n".join([*prune(stale, store), f"{len(stale)} superseded record(s) removed"]))
        return
    print(estimate(cells, protocol, outcomes, store), flush=True)
    if stale:
        print(
            f"{len(stale)} record(s) of these cells are no longer among the protocol's runs (a search point off its "
            f"path or a seed at a former pick, after records were regenerated; seeds at the search's budget, once a "
            f"seeds stage has overrides of its own): `--prune` removes them",
            flush=True,
        )
    if args.dry_run:
        return
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
    for problem in dict.fromkeys(store.problems):  # invalid records met while picking: listed, then redone or left out
        print(f"warning: {problem}", file=sys.stderr)
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


DEFAULT_LINE = r"^({key}:\s*)[^\s#]+(\s*#.*)?$"


def write_method_defaults(
    cells: list[Cell], protocol: Protocol, outcomes: Outcomes, conf_dir: Path, model: str, task: str
) -> list[str]:
    """Each method's default lr and head lr (conf/method/<method>.yaml) set to the protocol's pick on the
    default (model, task), for the methods whose search there is complete and whose centre is pinned
    (protocol.centres: moving the default then leaves the protocol's grid and run keys where they were).
    Returns one line per change."""
    changes = []
    for cell in cells:
        if (cell.suite.model, cell.task) != (model, task):
            continue
        if cell.method not in protocol.centres:
            raise HarnessError(
                f"{cell.method}: pin its search centre in protocol.centres before moving its default "
                f"(else the protocol's grid, and its runs' keys, would move with it)"
            )
        todo, scores = outcomes.search(cell)
        if todo or not scores or all(score == lr_search.FAILED for score in scores.values()):
            continue
        lr, head_lr = cell.values(lr_search.best_exponent(scores), protocol.search.step)
        path = conf_dir / "method" / f"{cell.method}.yaml"
        text = path.read_text()
        for key, value in (("lr", lr), ("head_lr", head_lr)):
            note = f"  # the official protocol's pick on {model}/{task} (results/official/tuning.csv)"
            text, count = re.subn(
                DEFAULT_LINE.format(key=key), lambda m: f"{m.group(1)}{value:g}{note}", text, count=1, flags=re.M
            )
            if count != 1:
                raise HarnessError(f"{path}: no '{key}:' line to update")
        path.write_text(text)
        changes.append(f"{cell.method}: lr {cell.lr:g} -> {lr:g}, head_lr {cell.head_lr:g} -> {head_lr:g}")
    return changes


def write_tuning_table(cells: list[Cell], protocol: Protocol, outcomes: Outcomes, results_dir: Path) -> None:
    """<results_dir>/tuning.csv: per cell, every search point with its values and selection score, the pick marked."""
    rows = []
    for cell in cells:
        _, scores = outcomes.search(cell)
        chosen = lr_search.best_exponent(scores) if scores else None
        for exponent, score in sorted(scores.items()):
            lr, head_lr = cell.values(exponent, protocol.search.step)
            rows.append(
                {
                    "model": cell.suite.model,
                    "method": cell.method,
                    "task": cell.task,
                    "axis": cell.axis,
                    "exponent": exponent,
                    "lr": lr,
                    "head_lr": head_lr,
                    "select_score": None if score == lr_search.FAILED else score,
                    "chosen": exponent == chosen,
                }
            )
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results_dir / "tuning.csv", index=False)
