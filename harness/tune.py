"""The fair tuning protocol: `python -m harness.tune sweep=official [--dry-run] [overrides...]`.

A protocol is the `protocol` section of a sweep config (conf/sweep/official.yaml). For every suite
(one model, its tasks, its methods) and every (method, task):
1. **search**: one run per learning rate × head learning rate of the grid (factors of the method's
   own defaults, so full fine-tuning gets its own range) on `search_seed`;
2. **pick**: the value pair with the best primary metric on `select_split` (validation; ties: the
   first in grid order); failed search runs never win;
3. **seeds**: the chosen pair on every seed of `seeds` (the search seed's run is the search's own).
Every run carries `tuning` (split, search seed, grid) in its config, hence in its record; the
leaderboard applies the same rule to the records (`select_tuned`) and shows only the chosen runs.
Runs are launched as Hydra multiruns (one per method, then one per (method, task)), so extra
overrides such as `hydra/launcher=joblib` apply; runs that already succeeded are skipped, so the
same command resumes a killed protocol and, when everything is done, only rebuilds the tables:
`<protocol.leaderboard>/leaderboard.{md,csv,tex,png}` and `<results_dir>/tuning.csv`.
"""
import argparse
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from harness.errors import HarnessError
from harness.preflight import CONF_DIR, group_options, unknown_choices
from harness.records import RecordStore, identify
from harness.report.leaderboard import build_and_write
from harness.selection import best_tuned, grid_text, lr_pair


@dataclass
class Suite:
    model: str
    tasks: list[str]
    methods: list[str]
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Protocol:
    search_seed: int
    seeds: list[int]
    lr_factors: list[float]
    head_lr_factors: list[float]
    select_split: str
    leaderboard: str
    suites: list[Suite]
    method_grids: dict[str, dict] = field(default_factory=dict)

    def grid(self, method: str, lr: float, head_lr: float) -> list[tuple[float, float]]:
        """(lr, head lr) pairs around a method's defaults: the product of the factor lists, or one
        list of factors for both when the method ties its head lr to its lr (full fine-tuning)."""
        own = self.method_grids.get(method, {})
        lr_factors = own.get("lr_factors", self.lr_factors)
        if own.get("tie_head_lr", False):
            return [(rounded(lr * f), rounded(head_lr * f)) for f in lr_factors]
        head_factors = own.get("head_lr_factors", self.head_lr_factors)
        return [(rounded(lr * f), rounded(head_lr * h)) for f in lr_factors for h in head_factors]


@dataclass
class Cell:
    """One (model, method, task) of a protocol, with its (lr, head lr) grid in absolute values."""

    suite: Suite
    method: str
    task: str
    grid: list[tuple[float, float]]

    def base_overrides(self) -> list[str]:
        return [f"model={self.suite.model}", f"method={self.method}", f"task={self.task}",
                *self.suite.overrides, *self.suite.method_overrides.get(self.method, [])]

    def tuning(self, protocol: Protocol) -> str:
        """The record's `tuning` section: the same for the search and the seeds, so the search run of
        the chosen values is also that seed's run."""
        listed = lambda values: "[" + ",".join(f"{v:g}" for v in values) + "]"
        return (f"+tuning={{split:{protocol.select_split},search_seed:{protocol.search_seed},"
                f"lr_grid:{listed(v[0] for v in self.grid)},head_lr_grid:{listed(v[1] for v in self.grid)}}}")


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
        raise HarnessError(f"the config has no `protocol` section; choose a sweep that defines one (sweep=...; sweeps: {sweeps})")
    node = OmegaConf.to_container(cfg.protocol, resolve=True)
    suites = [Suite(model=s["model"], tasks=list(s["tasks"]), methods=expand_methods(s.get("methods", "all"), s.get("exclude", [])),
                    overrides=list(s.get("overrides", [])), method_overrides=dict(s.get("method_overrides", {})))
              for s in node["suites"]]
    protocol = Protocol(node["search_seed"], list(node["seeds"]), list(node["lr_factors"]), list(node["head_lr_factors"]),
                        node.get("select_split", "validation"), node.get("leaderboard", cfg.results_dir), suites,
                        dict(node.get("method_grids") or {}))
    expand_methods(list(protocol.method_grids), [])
    if not protocol.lr_factors or not protocol.head_lr_factors or not protocol.seeds:
        raise HarnessError("protocol: lr_factors, head_lr_factors and seeds must each list at least one value")
    return protocol


class Composer:
    """Hydra's compose API over the project's config (inside `initialize_config_dir`), to read
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
                cell = Cell(suite, method, task, [])
                cfg = composer(cell.base_overrides())
                cell.grid = protocol.grid(method, cfg.method.lr, cfg.method.head_lr)
                cells.append(cell)
    return cells


def cell_runs(cell: Cell, protocol: Protocol, pairs: list[tuple[float, float]], seeds: list[int]) -> list[list[str]]:
    return [[*cell.base_overrides(), f"seed={seed}", f"train.lr={lr:g}", f"train.head_lr={head:g}", cell.tuning(protocol)]
            for lr, head in pairs for seed in seeds]


def search_runs(cell: Cell, protocol: Protocol) -> list[list[str]]:
    return cell_runs(cell, protocol, cell.grid, [protocol.search_seed])


def pick(cell: Cell, protocol: Protocol, composer: Composer, store: RecordStore) -> dict:
    """The cell's chosen (lr, head lr), by the leaderboard's own rule (`best_tuned`), and the search's outcome."""
    records = [r for o in search_runs(cell, protocol) if (r := store.read(composer.key(o))) is not None]
    row = {"model": cell.suite.model, "method": cell.method, "task": cell.task,
           "grid": grid_text(cell.grid),
           "searched": sum(r["status"] == "success" for r in records), "lr": None, "head_lr": None,
           "metric": None, "select_score": None}
    best = best_tuned(records)
    if best is not None:
        metrics = best["metrics"]
        row.update(zip(("lr", "head_lr"), lr_pair(best)), metric=metrics["primary"],
                   select_score=metrics["final"][protocol.select_split][metrics["primary"]])
    return row


def missing(runs: list[list[str]], composer: Composer, store: RecordStore) -> bool:
    return any((r := store.read(composer.key(o))) is None or r["status"] != "success" for o in runs)


def as_multiruns(runs: list[list[str]]) -> list[list[str]]:
    """Hydra multirun arguments covering exactly `runs` (each a list of `key=value`): one sweep over
    the keys whose values differ when the runs are their cartesian product, else one per group of
    runs that share everything but the task and the seed."""
    values: dict[str, list[str]] = {}
    for overrides in runs:
        for override in overrides:
            key, value = override.split("=", 1)
            if value not in values.setdefault(key, []):
                values[key].append(value)
    if math.prod(len(v) for v in values.values()) == len(runs):
        return [[f"{k}={','.join(v)}" for k, v in values.items()]]
    groups: dict[tuple, list[list[str]]] = {}
    for overrides in runs:
        groups.setdefault(tuple(o for o in overrides if not o.startswith(("task=", "seed="))), []).append(overrides)
    return [arguments for group in groups.values() for arguments in as_multiruns(group)]


def launch(runs: list[list[str]], extra: list[str]) -> None:
    for arguments in as_multiruns(runs):
        command = [sys.executable, "-m", "harness", "-m", *arguments, "~hydra.callbacks.leaderboard", "progress=false", *extra]
        print("$ python " + " ".join(command[1:]), flush=True)
        subprocess.run(command)


def main(argv: list[str] | None = None) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run_protocol(argv)


def run_protocol(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what is done; run nothing")
    parser.add_argument("overrides", nargs="*", help="config overrides: sweep=<protocol sweep> first, then any others")
    args = parser.parse_args(argv)
    for problem in unknown_choices(args.overrides):
        raise SystemExit(f"error: {problem}")
    composer = Composer([o for o in args.overrides if not o.startswith("hydra")])  # launcher choices: runs only
    cfg = composer([])
    protocol = parse_protocol(cfg)
    store = RecordStore(cfg.results_dir)
    cells = plan_cells(protocol, composer)
    searches = [search_runs(cell, protocol) for cell in cells]
    todo = sum(missing([r], composer, store) for runs in searches for r in runs)
    print(f"protocol {cfg.sweep}: {len(cells)} (model, method, task) cells; search {sum(map(len, searches))} runs "
          f"({todo} to do), then {len(protocol.seeds)} seeds per cell")
    if args.dry_run:
        for cell in cells:
            print(f"  {cell.suite.model} {cell.method} {cell.task}: lr/head lr {grid_text(cell.grid)}")
        return
    by_grid: dict[tuple, list[list[str]]] = {}  # one multirun per (model, method, grids): tasks × grid
    for cell, runs in zip(cells, searches):
        by_grid.setdefault((cell.suite.model, cell.method, cell.tuning(protocol)), []).extend(runs)
    for runs in by_grid.values():
        if missing(runs, composer, store):
            launch(runs, [*args.overrides])
    rows = []
    for cell in cells:
        row = pick(cell, protocol, composer, store)
        rows.append(row)
        if row["lr"] is None:
            print(f"warning: no successful search run for {cell.method} on {cell.task}; no final runs", file=sys.stderr)
            continue
        runs = cell_runs(cell, protocol, [(row["lr"], row["head_lr"])], protocol.seeds)
        if missing(runs, composer, store):
            launch(runs, [*args.overrides])
    for problem in dict.fromkeys(store.problems):  # invalid records met while picking: listed, then redone or left out
        print(f"warning: {problem}", file=sys.stderr)
    tuning = pd.DataFrame(rows)
    Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
    tuning.to_csv(Path(cfg.results_dir) / "tuning.csv", index=False)
    print(build_and_write(cfg.results_dir, sweep=cfg.sweep, out_dir=protocol.leaderboard))


if __name__ == "__main__":
    main()
