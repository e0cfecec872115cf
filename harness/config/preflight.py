"""Checks the command line before Hydra runs anything, so that every mistake in it is one line naming
the key, the value and what is allowed (not Hydra's error wall): unknown config-group choices,
overrides that do not parse, unknown keys, keys added twice or deleted though absent, a sweep
without -m, interpolations that do not resolve, a `method.name` (`task.name`) that contradicts the
chosen config of its group, and a folder key (results_dir, cache_dir) that names no folder."""

import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.config.paths import CONF_DIR


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Options of every group, nested ones as `sub/name` (e.g. method=rac_mnist/rac-A). conf/hydra/
    holds launcher presets (hydra/launcher=parallel|slurm): Hydra's own groups, not ours."""
    return {
        group.name: sorted(p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*.yaml"))
        for group in sorted(conf_dir.iterdir())
        if group.is_dir() and group.name != "hydra"
    }


def override_values(override) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.get_value_element_as_str()
    return [] if value == "null" else [value]


def unknown_choices(arguments: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """One message per unknown group option among `key=value` command-line arguments."""
    options = group_options(conf_dir)
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("-")])
    except Exception:  # malformed overrides: Hydra reports them itself
        return []
    problems = []
    for override in overrides:
        group = override.key_or_group
        if group not in options or override.is_delete() or "glob(" in (override.input_line or ""):
            continue
        for value in override_values(override):
            if value not in options[group]:
                allowed = ", ".join(options[group]) or "(none yet)"
                problems.append(f"unknown {group} '{value}'; available: {allowed}")
    return problems


NAMED_GROUPS = ("method", "task")  # groups whose `name` chooses what is built (a model's name is only its label)
FLAGS_WITH_VALUE = (
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "--experimental-rerun",
    "--steps-per-second",
)


def overrides_of(arguments: list[str]) -> list[str]:
    """The `key=value` overrides of a command line, without its flags and their values."""
    found, skip = [], False
    for argument in arguments:
        if skip and "=" not in argument and not argument.startswith("-"):
            skip = False
            continue
        skip = argument in FLAGS_WITH_VALUE
        if not argument.startswith("-"):
            found.append(argument)
    return found


def parse_problem(argument: str) -> str | None:
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides([argument])
    except OverrideParseException as error:
        reason = next(
            (
                line
                for line in str(error).splitlines()
                if line.strip() and not line.startswith(("Error parsing", "See "))
            ),
            "",
        )
        return (
            f"cannot parse override '{argument}': {' '.join(reason.split())}; write key=value "
            "(quote a value with spaces or special characters: key='a b')"
        )
    return None


def keys_at(cfg, dotted: str) -> tuple[str, list[str]]:
    """The deepest existing section on the path of `dotted` and its keys."""
    from omegaconf import DictConfig, OmegaConf

    parts = dotted.split(".")[:-1]
    while parts and not isinstance(OmegaConf.select(cfg, ".".join(parts)), DictConfig):
        parts.pop()
    node = OmegaConf.select(cfg, ".".join(parts)) if parts else cfg
    return ".".join(parts) or "the config", [str(k) for k in node.keys() if k != "hydra"]


def composition_problem(error: Exception, overrides: list[str], base) -> str:
    from omegaconf import OmegaConf

    text = str(error)
    quoted = re.findall(r"'([^']+)'", text.splitlines()[0]) if text else []
    key = quoted[0] if quoted else ""
    argument = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)
    key = getattr(error.__cause__, "full_key", None) or key  # `train={a:1}`: the unknown key is train.a
    if text.startswith("Error merging override"):
        argument = text.removeprefix("Error merging override").strip()
        key = argument.lstrip("+").split("=", 1)[0]
        holds = (
            "a list; write " + key + "=[...]"
            if OmegaConf.is_list(OmegaConf.select(base, key))
            else "a section; set its keys"
        )
        return f"cannot set '{argument}': {str(error.__cause__).splitlines()[0]} ({key} holds {holds})"
    if text.startswith("Could not override"):
        section, keys = keys_at(base, key)
        addition = f"+{argument}" if argument.split("=", 1)[0] == key else f"+{key}=..."
        return (
            f"unknown config key '{key}' (in '{argument}'); keys of {section}: {', '.join(keys)}; to add a new key "
            f"write {addition}"
        )
    if text.startswith("Could not append"):
        return f"config key '{key}' already exists (in '{argument}'); write {argument.lstrip('+')} to change it"
    if text.startswith("Could not delete"):
        return f"config key '{key}' does not exist (in '{argument}'); nothing to delete"
    if text.startswith("Ambiguous value"):
        argument = re.search(r"argument '(.+)'", text).group(1)
        key = argument.split("=", 1)[0]
        as_list = "" if key in group_options() else f", or write {key}=[...] for a list"
        return f"'{argument}' lists several values but this is not a multirun; add -m to run one run per value{as_list}"
    return " ".join(text.split())


def first_values(overrides: list[str]) -> list[str]:
    """Each override with a sweep (`a,b`, `range(...)`) reduced to its first value; glob sweeps dropped."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    reduced = []
    for override, line in zip(parsed, overrides):
        if not override.is_sweep_override():
            reduced.append(line)
        elif "glob(" not in line:
            reduced.append(f"{line.split('=', 1)[0]}={next(iter(override.sweep_string_iterator()))}")
    return reduced


def compose_problems(arguments: list[str]) -> list[str]:
    """What composing the command line's config (each sweep at its first value) reports, one line each."""
    from hydra import compose
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config.compose import project_config
    from harness.config.sections import require_folders
    from harness.errors import HarnessError

    overrides = overrides_of(arguments)
    problems = [p for p in map(parse_problem, overrides) if p]
    if problems:
        return problems
    sweeps = [
        o for o, p in zip(overrides, OverridesParser.create().parse_overrides(overrides)) if p.is_sweep_override()
    ]
    with project_config():
        try:
            cfg = compose("config", overrides=first_values(overrides), return_hydra_config=True)
            if (
                sweeps
                and not any(a in ("-m", "--multirun") for a in arguments)
                and str(cfg.hydra.mode) != "RunMode.MULTIRUN"
            ):
                compose("config", overrides=overrides)  # Hydra's error: a sweep outside a multirun
        except Exception as error:
            return [composition_problem(error, overrides, compose("config", return_hydra_config=True))]
        for key in cfg:
            if key != "hydra":
                try:
                    value = cfg[key]  # a scalar's interpolation resolves here, a section's below
                    if OmegaConf.is_config(value):
                        OmegaConf.to_container(value, resolve=True)
                except OmegaConfBaseException as error:
                    message = str(error).strip().splitlines()[0]
                    return [f"{getattr(error, 'full_key', None) or key}: {message}"]
        try:
            require_folders(cfg)
        except HarnessError as error:
            return [str(error)]
        for group in NAMED_GROUPS:  # `method.name=dora` on top of method=lora would train DoRA with LoRA's settings
            named = [o for o in overrides if o.lstrip("+").startswith(f"{group}.name=")]
            if named:
                chosen = cfg.hydra.runtime.choices.get(group)
                own = compose("config", overrides=[o for o in first_values(overrides) if o not in named])[group].get(
                    "name"
                )
                if cfg[group].get("name") != own:
                    return [
                        f"{group}.name={cfg[group].name} contradicts {group}={chosen} (whose name is '{own}'); "
                        f"choose the {group} with {group}={cfg[group].name} instead"
                    ]
    return []


def command_line_problems(arguments: list[str]) -> list[str]:
    """Every problem of a `python -m harness` command line, one line each (empty: it may run)."""
    return unknown_choices(arguments) or compose_problems(arguments)
