"""The first line of `python -m harness`, printed before torch, transformers and the config are loaded (which
take several seconds): what will run and where its records go, read from the command line alone (its overrides,
the defaults list of conf/config.yaml and the config dataclasses' defaults; nothing is composed yet):

    peft-harness: 1 run (lora | bbc_news | minilm | seed 0) → results/runs/; loading torch and the config ...
    peft-harness: 6 runs (method=lora,full × seed=0,1,2) → results/runs/; loading torch and the config ...
    peft-harness: the runs of experiment=rac_lora_mnist → results/rac_lora_mnist/runs/; loading ...

An experiment or sweep config adds runs of its own (its `hydra.sweeper.params`), and a glob sweep needs the
config's options: those runs are counted by the sweep's plan line once the config is composed
(harness/protocol/progress.py). A run key that two runs share is counted there too, once.
Commands that run nothing (`--help`, `--cfg`, `--info`, `--dry-run`, ...) print no such line."""

import sys
from dataclasses import fields

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.config.paths import CONF_DIR
from harness.config.preflight import unknown_choices
from harness.config.sections import DEFAULT_SEED, OperationalConfig

QUIET_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion"}
QUIET_FLAGS |= {"-sc", "--dry-run", "--experimental-rerun"}
SWEEP_GROUPS = ("experiment", "sweep")  # groups whose config may add runs and choose the results folder
RUN_GROUPS = ("method", "task", "model")


def default_choices() -> dict[str, str]:
    """The group choices of conf/config.yaml's defaults list (e.g. method: lora)."""
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    return {k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()}


def results_dir(values: dict[str, str], sweep_config: tuple[str, str] | None) -> str:
    """The results folder the command line chooses, else its experiment's (sweep's), else the default."""
    if "results_dir" in values:
        return values["results_dir"]
    if sweep_config is not None:
        group, name = sweep_config
        path = CONF_DIR / group / f"{name}.yaml"
        chosen = yaml.safe_load(path.read_text()).get("results_dir") if path.is_file() else None
        if chosen:
            return str(chosen)
    return next(spec.default for spec in fields(OperationalConfig) if spec.name == "results_dir")


def first_line(arguments: list[str]) -> str | None:
    """The line, or None for a command that runs nothing, or a command line that does not parse or names an
    unknown config choice (its error follows from the usual checks)."""
    if QUIET_FLAGS & set(arguments):
        return None
    typed = [a for a in arguments if not a.startswith("-")]
    if unknown_choices(typed):  # its one-line error comes next, from the usual checks
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(typed)
    except Exception:
        return None
    values = {o.key_or_group: o.get_value_element_as_str() for o in overrides if not o.is_sweep_override()}
    sweeps = [o.input_line for o in overrides if o.is_sweep_override()]
    sweep_config = next(((g, values[g]) for g in SWEEP_GROUPS if values.get(g) not in (None, "null")), None)
    where = f"{results_dir(values, sweep_config).rstrip('/')}/runs/"
    if sweep_config is not None:
        what = f"the runs of {'='.join(sweep_config)}" + (f" × {' × '.join(sweeps)}" if sweeps else "")
    elif sweeps:
        try:
            count = len(BasicSweeper.split_arguments(overrides, None)[0])
            what = f"{count} run{'s' if count != 1 else ''} ({' × '.join(sweeps)})"
        except Exception:  # a glob over a group's options: counted once the config is composed
            what = f"a sweep ({' × '.join(sweeps)})"
    else:
        choices = default_choices() | values
        run = " | ".join([*(choices[group] for group in RUN_GROUPS), f"seed {values.get('seed', DEFAULT_SEED)}"])
        what = f"1 run ({run})"
    return f"peft-harness: {what} → {where}; loading torch and the config ..."


def announce(arguments: list[str]) -> None:
    line = first_line(arguments)
    if line is not None:
        print(line, file=sys.stderr, flush=True)
