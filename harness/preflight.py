"""Checks the command line's config-group choices before Hydra composes anything, so that an
unknown method/task/model/... is one line naming the allowed options (not Hydra's error wall)."""
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Options of every group, nested ones as `sub/name` (e.g. method=rac_mnist/rac-A). conf/hydra/
    holds launcher presets (hydra/launcher=parallel|slurm): Hydra's own groups, not ours."""
    return {
        group.name: sorted(p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*.yaml"))
        for group in sorted(conf_dir.iterdir()) if group.is_dir() and group.name != "hydra"
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
