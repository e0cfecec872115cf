"""Per-task settings of a paper's experiment: the `per_task` section of a config.

Hydra sweeps are cartesian products, so one multirun cannot give each task its own learning rate.
An experiment config lists them instead, keyed by task name (merged into every run of that task) or
by `<method>/<task>` (merged after that, into runs of that method only):

    per_task:
      mnli: {train: {lr: 5.0e-4, epochs: 7}}
      adalora/mnli: {method: {t_init: 8000, delta_t: 100, t_final: 50000}}

The entries are applied before the run key is computed, so records hold the values actually used;
`per_task` itself is not part of the run key. Entries win over command-line values of the same keys
(override `per_task.mnli.train.lr=...` to change one).
"""

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from harness.errors import HarnessError


def entries_for(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    table = cfg.get("per_task")
    if not table:
        return []
    from methods import METHODS
    from tasks import TASK_LOADERS

    for name in table:
        method, _, task = name.rpartition("/")
        if task not in TASK_LOADERS or (method and method not in METHODS):
            raise HarnessError(
                f"per_task entry '{name}' names no task (or method/task); tasks: "
                f"{', '.join(sorted(TASK_LOADERS))}; methods: {', '.join(sorted(METHODS))}"
            )
    task, method = cfg.task.name, cfg.method.name
    return [(name, table[name]) for name in (task, f"{method}/{task}") if name in table]


def effective_config(cfg: DictConfig) -> tuple[DictConfig, HarnessError | None]:
    """`cfg` with its per-task entries, or `cfg` unchanged and the error a bad table gives (the run
    is then recorded as failed under the key of `cfg`)."""
    try:
        return apply_per_task(cfg), None
    except HarnessError as error:
        return cfg, error


def apply_per_task(cfg: DictConfig) -> DictConfig:
    """`cfg` with its per-task entries merged in (unknown keys are one-line errors)."""
    for name, entry in entries_for(cfg):
        try:
            cfg = OmegaConf.merge(cfg, entry)
        except ConfigKeyError as error:
            raise HarnessError(f"per_task.{name}: unknown key '{error.full_key}'") from None
        except OmegaConfBaseException as error:
            raise HarnessError(f"per_task.{name}: {str(error).strip().splitlines()[0]}") from None
    return cfg
