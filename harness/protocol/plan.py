"""`python -m harness <overrides> --dry-run [--steps-per-second S]`: the runs a command would do.

Expands the command line and the config's own sweep (`hydra.sweeper.params`, e.g. an experiment's
method × task × seed) exactly as Hydra's basic sweeper does, composes every run (per-task tables
applied), and lists its run key (a run whose key an earlier one has, e.g. from `seed=0,0`, is listed as
that run and counted once), whether a success record already exists, and its optimizer steps
(from the task's training-set size: GLUE's published sizes, the packaged tasks' own splits, the hub
recipes' approximate sizes where their data is not here, marked ~), with the
total and the device-hours it takes at S steps per second. Works offline; runs nothing.
"""

import argparse

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.config.compose import project_config
from harness.config.sections import TaskConfig, TrainConfig, parse_section
from harness.engine.train import plan_steps
from harness.errors import HarnessError, one_line
from harness.store.identity import identify
from harness.store.records import RecordStore, method_label


def expand(arguments: list[str]) -> list[list[str]]:
    """Every run's overrides: the config's sweeper params, then the command line (which wins)."""
    return sweep_of(arguments)[0]


def sweep_of(arguments: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every run's overrides (`expand`) and the keys the sweep varies (e.g. ["method", "seed"])."""
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    parsed = parser.parse_overrides(arguments)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose("config", overrides=fixed, return_hydra_config=True).hydra.sweeper.params or {}
    overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
    swept = list(dict.fromkeys(o.key_or_group for o in overrides if o.is_sweep_override()))
    return BasicSweeper.split_arguments(overrides, None)[0], swept


def shared_keys(runs: list[list[str]], keys: list[str | None], swept: list[str]) -> list[str]:
    """One line per run key that several runs of a sweep share (a value given twice, or two values that make
    the same run, e.g. train.lr=1e-3,0.001), naming the swept keys' values of those runs: the run is done and
    counted once."""
    groups: dict[str, list[list[str]]] = {}
    for run, key in zip(runs, keys):
        if key is not None:
            groups.setdefault(key, []).append(run)
    lines = []
    for key, group in groups.items():
        if len(group) < 2:
            continue
        values = {name: [] for name in swept}
        for run in group:
            for override in run:
                name, value = override.split("=", 1)
                values.get(name.lstrip("+~"), []).append(value)
        text = " ".join(f"{name}={','.join(found)}" for name, found in values.items() if found) or " ".join(group[0])
        lines.append(f"{text}: {len(group)} runs with the same run key {key}; counted once")
    return lines


def train_size(task_cfg, sizes: dict) -> tuple[int | None, bool]:
    """Examples in the training split (after limit_train), or None where it cannot be known offline; and
    whether it is approximate (a hub recipe that cannot be loaded here: its documented approximate size)."""
    key = (task_cfg.name, task_cfg.limit_train, task_cfg.source, task_cfg.split_seed)
    if key not in sizes:
        from tasks import APPROXIMATE_TRAIN_SIZES, load_task
        from tasks.glue import GLUE_TASKS

        if task_cfg.name in GLUE_TASKS and task_cfg.source is None:
            full = GLUE_TASKS[task_cfg.name].train_size
            sizes[key] = min(full, task_cfg.limit_train or full), False
        else:
            try:
                sizes[key] = len(load_task(task_cfg).splits["train"]), False
            except Exception:
                about = APPROXIMATE_TRAIN_SIZES.get(task_cfg.name)
                sizes[key] = (
                    (None, False)
                    if about is None
                    else (
                        min(about, task_cfg.limit_train or about),
                        task_cfg.limit_train is None or task_cfg.limit_train > about,
                    )
                )
    return sizes[key]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness ... --dry-run", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument(
        "--steps-per-second", type=float, default=5.0, help="training speed for the device-hours estimate (default 5)"
    )
    args, overrides = parser.parse_known_args(argv)
    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    with project_config():
        runs = expand(overrides)
        sizes, total, todo_steps, todo, unknown, rough, numbers = {}, 0, 0, 0, 0, 0, {}
        for number, run in enumerate(runs):
            try:
                identity = identify(compose("config", overrides=run))
                if identity.problem is not None:
                    raise identity.problem
                cfg, key = identity.cfg, identity.key
                train, task = (
                    parse_section(TrainConfig, cfg.train, "train"),
                    parse_section(TaskConfig, cfg.task, "task"),
                )
            except HarnessError as error:
                print(f"#{number}: {' '.join(run)}: error: {one_line(error)}")
                continue
            if key in numbers:
                print(f"#{number}: {key} the same run as #{numbers[key]} (the same run key): counted once")
                continue
            numbers[key] = number
            previous = RecordStore(cfg.results_dir).read(key)
            status = previous["status"] if previous else "to do"
            size, approximate = train_size(task, sizes)
            steps = plan_steps(train, size).total_steps if size is not None or train.max_steps else None
            approximate = approximate and not train.max_steps
            total += 1
            if status != "success":
                todo += 1
                todo_steps += steps or 0
                unknown += steps is None
                rough += approximate
            label = method_label(cfg.method.name, cfg.method.get("variant"), (cfg.get("optimizer") or {}).get("name"))
            print(
                f"#{number}: {key} {status:7} {label} {cfg.task.name} {cfg.model.name} seed {cfg.seed} "
                f"lr {train.lr:g} batch {train.batch_size} epochs {train.epochs:g} steps "
                f"{'?' if steps is None else ('~' if approximate else '') + str(steps)}"
            )
    hours = todo_steps / args.steps_per_second / 3600
    print(
        f"{total} runs, {todo} to do: {todo_steps:,} optimizer steps = {hours:,.1f} device-hours at "
        f"{args.steps_per_second:g} steps/s (training only, evaluation not counted)"
        + (f"; {unknown} runs of unknown length" if unknown else "")
        + (f"; {rough} runs (~) from a hub dataset's approximate size, not loadable here" if rough else "")
    )
