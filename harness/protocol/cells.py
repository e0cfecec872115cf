"""The cells of a tuning protocol: one (model, method, task) each (the method a record label: `lora+loraplus` is
LoRA with optimizer=loraplus), its default (lr, head lr) read from the
composed config, and the overrides of every run it makes (a search point on the search seed, or a seed of
the seeds stage at the pick), with the `tuning` section each run records outside its run key.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from hydra import compose
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from harness.config.preflight import group_options
from harness.protocol.spec import Protocol, Suite
from harness.store.identity import identify


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
        method, _, optimizer = self.method.partition("+")  # `lora+loraplus`: LoRA trained by LoRA+
        return [
            f"model={self.suite.model}",
            f"method={method}",
            *([f"optimizer={optimizer}"] if optimizer else []),
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


class Composer:
    """Hydra's compose API over the project's config (inside `project_config()`), to read
    defaults and compute run keys (each run's key composed once: the protocol asks for it repeatedly).
    Hydra composes once per choice of config groups (a cell's model, method and task): a run's other
    overrides (its seed, lr, tuning section, a seeds stage's budget) are applied to a copy of that
    composition by Hydra's own function, in their order, after the groups, as Hydra applies them, so that
    a protocol of hundreds of runs costs one composition per cell (0.3 s each), not per run. A run's config
    is kept too (the same object each time: read it, do not change it)."""

    def __init__(self, base: list[str]):
        self.base = base
        self.keys: dict[tuple[str, ...], str] = {}
        self.configs: dict[tuple[str, ...], DictConfig] = {}
        self.compositions: dict[tuple[str, ...], DictConfig] = {}
        self.parser = OverridesParser.create()
        self.parsed: dict[str, Override] = {}
        self.groups = set(group_options())

    def __call__(self, overrides: list[str]) -> DictConfig:
        if tuple(overrides) not in self.configs:
            self.configs[tuple(overrides)] = self.composed([*self.base, *overrides])
        return self.configs[tuple(overrides)]

    def composed(self, overrides: list[str]) -> DictConfig:
        for text in overrides:
            if text not in self.parsed:
                self.parsed[text] = self.parser.parse_overrides([text])[0]
        parsed = [self.parsed[text] for text in overrides]
        values = [o for o in parsed if self.is_value(o)]
        choices = tuple(o.input_line for o in parsed if not self.is_value(o))
        if choices not in self.compositions:
            self.compositions[choices] = compose("config", overrides=list(choices))
        cfg = copy.deepcopy(self.compositions[choices])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # noqa: SLF001 (what compose itself applies)
        return cfg

    def is_value(self, override: Override) -> bool:
        """A key's value (seed=0, train.lr=..., +tuning=...), not a config group's choice, a deletion, a sweep
        or a Hydra setting (those are composed)."""
        key = override.key_or_group
        return not (
            key in self.groups
            or "/" in key
            or key.startswith("hydra")
            or override.package is not None
            or override.is_delete()
            or override.is_sweep_override()
        )

    def key(self, overrides: list[str]) -> str:
        if tuple(overrides) not in self.keys:
            self.keys[tuple(overrides)] = identify(self(overrides)).key
        return self.keys[tuple(overrides)]


def plan_cells(protocol: Protocol, composer: Composer, on_cell: Callable[[int, int], None] | None = None) -> list[Cell]:
    """Every cell of the protocol, suite by suite, method by method, task by task; each one's default
    (lr, head lr) as its runs compose it (the pinned centre where the protocol pins one). `on_cell(k, n)`
    after each (progress)."""
    cells, total = [], sum(len(suite.methods) * len(suite.tasks) for suite in protocol.suites)
    for suite in protocol.suites:
        for method in suite.methods:
            for task in suite.tasks:
                centre = protocol.centres.get(method)
                pins = [f"method.lr={centre['lr']!r}", f"method.head_lr={centre['head_lr']!r}"] if centre else []
                cell = Cell(suite, method, task, 0.0, 0.0, protocol.axes.get(method, "lr"), pins)
                cfg = composer(cell.base_overrides())
                cell.lr, cell.head_lr = cfg.method.lr, cfg.method.head_lr
                cells.append(cell)
                if on_cell is not None:
                    on_cell(len(cells), total)
    return cells
