"""Run identity: which composed configs are the same run, and the short key that names it.

The run key is a short hash of an allow-list, the semantic sections of the resolved config: `seed`,
`train`, `method`, `task` and `model`, what a run computes. Every other top-level key is operational and
never moves a key: where results and caches go, the logger, progress display, threads, the sweep's name,
caption and tags, a tuning protocol's instructions and a run's place in it, the per-task table (its values
are already in the sections it names), deterministic GPU kernels (the flag is recorded), the job's index
in a parallel sweep, whether the adapter is kept, step checkpoints and FSDP sharding. The model's role map
is left out too: it only names targets, whose resolved module patterns are in `method.targets`.

This definition is run key version 1 (`RUN_KEY_VERSION`), stated beside the key in each record as
`run_key_version`; a record without it was made under version 1. A committed record's key never
changes: a new definition is a new version, and proves every committed key equal or migrates them.

`identify` is the one config → run-key function: the run, the dry-run listing, sweep progress and the
tuning protocol all call it.
"""

import copy
import hashlib
import json
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from harness.config.per_task import effective_config
from harness.config.sections import scalars_as_lists
from harness.errors import HarnessError

RUN_KEY_VERSION = 1
SEMANTIC_SECTIONS = ("seed", "train", "method", "task", "model")


def resolved_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def semantic_config(config: dict) -> dict:
    """The part of a resolved config that the run key hashes: its semantic sections, the role map aside."""
    semantic = {key: copy.deepcopy(config[key]) for key in SEMANTIC_SECTIONS if key in config}
    if isinstance(semantic.get("model"), dict):
        semantic["model"].pop("roles", None)
    return semantic


def run_key(config: dict) -> str:
    """The key of a resolved config (a record's `config`, which `identify` prepared)."""
    text = json.dumps(semantic_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Identity:
    """A composed config as it runs: per-task entries applied, scalars given for lists made lists
    (`cfg`), resolved (`config`), its run key, and the error a bad per-task table gives (the run is
    then recorded as failed under the key of the config without it)."""

    cfg: DictConfig
    config: dict
    key: str
    problem: HarnessError | None


def identify(cfg: DictConfig) -> Identity:
    cfg, problem = effective_config(cfg)
    cfg = scalars_as_lists(cfg)
    config = resolved_config(cfg)
    return Identity(cfg, config, run_key(config), problem)
