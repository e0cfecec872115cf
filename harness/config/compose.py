"""Every default lives once: the config dataclasses' defaults, registered in Hydra's ConfigStore as
the base nodes that the YAMLs extend, so that a YAML states only what differs from them.

- `base/run`: the top level of every config, which conf/config.yaml extends (`/base/run@_here_`):
  `seed`, the operational keys of `OperationalConfig` as users type them (`results_dir`, `checkpoint`, ...)
  and the `train` section (`TrainConfig`); `train.lr` and `train.head_lr` are the method's, `cache_dir`
  the environment's (interpolations, field metadata `composed_as`).
- `base/method/<name>`: every field of the method's config dataclass (`METHODS[name].Config`) and its
  registry name; a `targets` field made by `role_targets` is the `${roles:...}` interpolation of its
  roles, resolved on the chosen model. conf/method/<name>.yaml starts with
  `defaults: [/base/method/<name>@_here_, _self_]`.
- `base/optimizer/<name>`: every field of the optimizer's config dataclass (`OPTIMIZERS[name].Config`),
  which conf/optimizer/<name>.yaml extends the same way.
- `base/task`, `base/model`, `base/logger`: the fields of TaskConfig, ModelConfig and LoggerConfig but
  `name` (each YAML names itself).

Fields marked `composed: False` stay out of a base node: added after records existed (a config that does not
set them keeps its run key), set by a sweep or launcher (a tuning protocol's keys, the job's index), or
composed by their own group (the logger); they take their default when the section is parsed
(harness/config/sections.py).

They live in their own group, `base/`, not in `method/` (`task/`, ...): a sweep over `method=glob(*)` sees
only the YAMLs. The nodes are plain containers, not typed ones: a wrong value is the schema's one-line error when the
run starts, recorded as a failed run, not a composition error that stops a sweep. Hydra's launchers
(joblib, submitit) carry the ConfigStore into their workers.
"""

import functools
from dataclasses import MISSING, Field, fields, is_dataclass

from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore

from harness.config.paths import CONF_DIR
from harness.config.sections import DEFAULT_SEED, LoggerConfig, ModelConfig, OperationalConfig, TaskConfig, TrainConfig

SECTION_BASES = {"task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}


def field_default(spec: Field):
    return spec.default_factory() if spec.default is MISSING else spec.default


def base_node(schema: type, leave_out: tuple[str, ...] = ()) -> dict:
    """The defaults of dataclass `schema` as a config node (a section-valued field as a node of its own)."""
    node = {}
    for spec in fields(schema):
        if spec.name in leave_out or not spec.metadata.get("composed", True):
            continue
        roles = spec.metadata.get("roles")
        if roles:
            node[spec.name] = f"${{roles:{','.join(roles)}}}"
        elif "composed_as" in spec.metadata:
            node[spec.name] = spec.metadata["composed_as"]
        else:
            default = field_default(spec)
            node[spec.name] = base_node(type(default)) if is_dataclass(default) else default
    return node


def run_node() -> dict:
    """The top level of every config: seed, the operational keys, and the train section."""
    return {"seed": DEFAULT_SEED, **base_node(OperationalConfig), "train": base_node(TrainConfig)}


@functools.cache  # once per process: the CLI and every compose context call it
def register_defaults() -> None:
    from methods import METHODS  # importing the package registers every method
    from optimizers import OPTIMIZERS  # and every optimizer

    store = ConfigStore.instance()
    store.store(group="base", name="run", node=run_node())
    for name, method in METHODS.items():
        store.store(group="base/method", name=name, node=base_node(method.Config) | {"name": name})
    for name, optimizer in OPTIMIZERS.items():
        store.store(group="base/optimizer", name=name, node=base_node(optimizer.Config) | {"name": name})
    for group, schema in SECTION_BASES.items():
        store.store(group="base", name=group, node=base_node(schema, leave_out=("name",)))


def project_config():
    """Hydra's compose context over conf/ (`with project_config(): compose("config", ...)`)."""
    register_defaults()
    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
