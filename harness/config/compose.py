"""Every default lives once: the config dataclasses' defaults, registered in Hydra's ConfigStore as
the base nodes that the YAMLs extend, so that a YAML states only what differs from them.

- `base/method/<name>`: every field of the method's config dataclass (`METHODS[name].Config`) and its
  registry name; a `targets` field made by `role_targets` is the `${roles:...}` interpolation of its
  roles, resolved on the chosen model. conf/method/<name>.yaml starts with
  `defaults: [/base/method/<name>@_here_, _self_]`.
- `base/task`, `base/model`, `base/logger`: the fields of TaskConfig, ModelConfig and LoggerConfig but
  `name` (each YAML names itself) and the fields marked `composed: False` (added after records
  existed: a config that does not set them keeps its run key; they take their default when the
  section is parsed, harness/config/sections.py).
- `train` and `checkpoint` are written once in conf/config.yaml, which their dataclasses read.

They live in their own group, `base/`, not in `method/` (`task/`, ...): a sweep over `method=glob(*)` sees
only the YAMLs. The nodes are plain containers, not typed ones: a wrong value is the schema's one-line error when the
run starts, recorded as a failed run, not a composition error that stops a sweep. Hydra's launchers
(joblib, submitit) carry the ConfigStore into their workers.
"""

import functools
from dataclasses import MISSING, Field, fields

from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore

from harness.config.paths import CONF_DIR
from harness.config.sections import LoggerConfig, ModelConfig, TaskConfig

SECTION_BASES = {"task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}


def field_default(spec: Field):
    return spec.default_factory() if spec.default is MISSING else spec.default


def base_node(schema: type, leave_out: tuple[str, ...] = ()) -> dict:
    """The defaults of dataclass `schema` as a config node."""
    node = {}
    for spec in fields(schema):
        if spec.name in leave_out or not spec.metadata.get("composed", True):
            continue
        roles = spec.metadata.get("roles")
        node[spec.name] = f"${{roles:{','.join(roles)}}}" if roles else field_default(spec)
    return node


@functools.cache  # once per process: the CLI and every compose context call it
def register_defaults() -> None:
    from methods import METHODS  # importing the package registers every method

    store = ConfigStore.instance()
    for name, method in METHODS.items():
        store.store(group="base/method", name=name, node=base_node(method.Config) | {"name": name})
    for group, schema in SECTION_BASES.items():
        store.store(group="base", name=group, node=base_node(schema, leave_out=("name",)))


def project_config():
    """Hydra's compose context over conf/ (`with project_config(): compose("config", ...)`)."""
    register_defaults()
    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
