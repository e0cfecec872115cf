"""Run identity: which composed configs are the same run, and the short key that names it.

The run key is a short hash of an allow-list, the semantic sections of the resolved config: `seed`,
`train`, `method`, `optimizer`, `task` and `model`, what a run computes. The optimizer section is left out where
it is the default, AdamW with torch's betas and eps (`DEFAULT_OPTIMIZER`), what every run trained with before
the section existed: their keys stay as they were, and `optimizer=adamw` on the command line is the same run as
no optimizer at all. Every other top-level key is operational and
never moves a key: where results and caches go, the logger, progress display, threads, the sweep's name,
caption and tags, a tuning protocol's instructions and a run's place in it, the per-task table (its values
are already in the sections it names), deterministic GPU kernels (the flag is recorded), the job's index
in a parallel sweep, whether the adapter is kept, step checkpoints and FSDP sharding. The model's role map
is left out too: it only names targets, whose resolved module patterns are in `method.targets`.

This definition is run key version 1 (`RUN_KEY_VERSION`), stated beside the key in each record as
`run_key_version`; a record without it was made under version 1. A committed record's key never
changes: a new definition is a new version, and proves every committed key equal or migrates them.

`identify` is the one config → run-key function: the run, the dry-run listing, sweep progress and the
tuning protocol all call it. It first checks the folder keys (results_dir, cache_dir: before the record
store opens one), and writes the content of a local `task.source` (`task.eval_source`), a file or a folder
on this machine, into the config as `task.source_fingerprint` (`task.eval_source_fingerprint`): SHA-256
over each file's relative name, size and SHA-256. The key hashes the config, so it sees the data, not only
its path: a changed file is a new run, never "already succeeded". Hub ids and packaged `pkg://` sources
have no fingerprint; a config without a local source (every committed record) has no such entry and keeps
its key, and `run_key(record["config"])` stays a function of the record alone.
"""

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from harness.config.per_task import effective_config
from harness.config.sections import require_folders, scalars_as_lists
from harness.digest import sha256_file
from harness.errors import HarnessError

RUN_KEY_VERSION = 1
SEMANTIC_SECTIONS = ("seed", "train", "method", "optimizer", "task", "model")
# The optimizer section every run had before the optimizer axis existed (AdamW with torch's defaults): left out of
# the key, so that those runs keep theirs; any other optimizer, or AdamW with other settings, is hashed.
DEFAULT_OPTIMIZER = {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8}
FINGERPRINTED = {"source": "source_fingerprint", "eval_source": "eval_source_fingerprint"}  # task key: its entry


def resolved_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def semantic_config(config: dict) -> dict:
    """The part of a resolved config that the run key hashes: its semantic sections, the role map aside."""
    semantic = {key: copy.deepcopy(config[key]) for key in SEMANTIC_SECTIONS if key in config}
    if semantic.get("optimizer") == DEFAULT_OPTIMIZER:
        del semantic["optimizer"]
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


def local_files(root: Path) -> list[tuple[str, Path]]:
    """(name relative to `root`, path) of the file `root`, or of every file under the folder `root`."""
    if root.is_file():
        return [(".", root)]
    return sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file())


FINGERPRINTS: dict[tuple, str] = {}  # (root, each file's name, size and mtime) -> fingerprint, for this process


def content_fingerprint(root: Path) -> str:
    """SHA-256 over the relative name, size and SHA-256 of each file of a local source (16 hex digits).
    A sweep identifies each of its runs: the files' hashes are read once per process while no file's
    size or modification time changes."""
    files = [(name, path, path.stat()) for name, path in local_files(root)]
    seen = (str(root), tuple((name, status.st_size, status.st_mtime_ns) for name, _, status in files))
    if seen not in FINGERPRINTS:
        digest = hashlib.sha256()
        for name, path, status in files:
            digest.update(json.dumps([name, status.st_size, sha256_file(path)]).encode())
        FINGERPRINTS[seen] = digest.hexdigest()[:16]
    return FINGERPRINTS[seen]


def is_local(source) -> bool:
    return isinstance(source, str) and not source.startswith("pkg://") and source != "" and Path(source).exists()


def source_fingerprints(task: dict) -> dict[str, str | None]:
    """Each fingerprint entry of a task section: its local source's fingerprint, or None where the source is
    not local (no source, a hub id, a packaged `pkg://` source, a path that does not exist)."""
    return {
        entry: content_fingerprint(Path(task[key])) if is_local(task.get(key)) else None
        for key, entry in FINGERPRINTED.items()
    }


def with_source_fingerprints(cfg: DictConfig, config: dict) -> None:
    """The fingerprint of each local task source written into `cfg` and its resolved `config` (a stale
    one, e.g. from a record's config run again, replaced; one for a source that is not local, dropped)."""
    task = config.get("task")
    if not isinstance(task, dict):
        return
    with open_dict(cfg):
        for entry, fingerprint in source_fingerprints(task).items():
            if fingerprint is not None:
                task[entry] = cfg.task[entry] = fingerprint
            elif entry in task:
                del task[entry], cfg.task[entry]


def identify(cfg: DictConfig) -> Identity:
    require_folders(cfg)
    cfg, problem = effective_config(cfg)
    cfg = scalars_as_lists(cfg)
    config = resolved_config(cfg)
    with_source_fingerprints(cfg, config)
    return Identity(cfg, config, run_key(config), problem)
