"""Run records (design.md §3): one JSON file per run in <results_dir>/runs/, the source of truth.

The run key is a short hash of the resolved config without the keys that do not change a result
(where results and caches go, logging, progress display, thread count, the sweep's name, tags and
the instructions of a tuning protocol, the per-task table whose values are already in place,
`deterministic` (GPU kernel choice; the flag is recorded) and the job's index in a parallel sweep).
Records are written atomically (temporary file, fsync, rename), so a killed run leaves either the
previous complete record or the new one, never a truncated file.
"""
import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import HarnessError

SCHEMA_VERSION = 1
NON_SEMANTIC_KEYS = ("results_dir", "cache_dir", "logger", "progress", "threads", "sweep", "tags", "hydra", "protocol", "per_task",
                     "deterministic", "job_index")
STATUSES = ("running", "success", "failed")
REQUIRED_FIELDS = ("schema_version", "run_key", "status", "method", "task", "model", "seed", "config", "params", "metrics", "cost")


def reported_adapter_params(params: dict) -> int:
    """The adapter count tables report: the kept count for methods that prune a rank budget
    during training (`adapter_final`), else the trained count (`adapter`)."""
    return params.get("adapter_final", params["adapter"])


def resolved_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def semantic_config(config: dict) -> dict:
    config = copy.deepcopy(config)
    for key in NON_SEMANTIC_KEYS:
        config.pop(key, None)
    return config


def run_key(config: dict) -> str:
    text = json.dumps(semantic_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def new_record(config: dict, key: str) -> dict:
    method = config.get("method") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_key": key,
        "status": "running",
        "error": None,
        "method": method.get("name"),
        "variant": method.get("variant"),
        "task": (config.get("task") or {}).get("name"),
        "model": (config.get("model") or {}).get("name"),
        "seed": config.get("seed"),
        "sweep": config.get("sweep"),
        "tags": list(config.get("tags") or []),
        "config": config,
        "params": {},
        "metrics": {},
        "cost": {},
        "provenance": {},
    }


class CorruptRecord(Exception):
    """A record file that is not valid JSON or lacks required fields."""


def check_record(record: object, path: Path) -> dict:
    if not isinstance(record, dict):
        raise CorruptRecord(f"{path.name}: not a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise CorruptRecord(f"{path.name}: missing fields {missing}")
    if record["status"] not in STATUSES:
        raise CorruptRecord(f"{path.name}: status '{record['status']}' not one of {STATUSES}")
    if record["status"] == "success" and not (record["metrics"].get("final") and record["params"]):
        raise CorruptRecord(f"{path.name}: success without metrics or params")
    return record


class RecordStore:
    def __init__(self, results_dir: str | os.PathLike):
        self.runs_dir = Path(results_dir) / "runs"

    def ensure_writable(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.runs_dir):
                pass
        except OSError as error:
            raise HarnessError(f"results directory '{self.runs_dir}' is not writable ({error.strerror}); set results_dir to a writable path") from None

    def path(self, key: str) -> Path:
        return self.runs_dir / f"{key}.json"

    def read(self, key: str) -> dict | None:
        """The record of `key`, or None if there is none or it is unreadable (it will be redone)."""
        path = self.path(key)
        try:
            return check_record(json.loads(path.read_text()), path)
        except (OSError, ValueError, CorruptRecord):
            return None

    def write(self, record: dict) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.runs_dir, prefix=f".{record['run_key']}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path(record["run_key"]))

    def load_all(self) -> tuple[list[dict], list[str]]:
        """Every readable record, and one line per file that is corrupt (reported, never counted)."""
        records, problems = [], []
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                records.append(check_record(json.loads(path.read_text()), path))
            except (OSError, ValueError) as error:
                problems.append(f"{path.name}: unreadable ({' '.join(str(error).split())})")
            except CorruptRecord as error:
                problems.append(str(error))
        return drop_stale_duplicates(records, problems)


def drop_stale_duplicates(records: list[dict], problems: list[str]) -> tuple[list[dict], list[str]]:
    """A record whose key was made under an older key scheme (e.g. before a config key became
    non-semantic) is the same run as the record under its config's current key: a resumed sweep
    redid it there. Such a stale copy is reported and left out, so that the run counts once."""
    keys = {record["run_key"] for record in records}
    kept = []
    for record in records:
        current = run_key(record["config"])
        if record["run_key"] != current and current in keys:
            problems.append(f"{record['run_key']}.json: the same run as {current}.json (a key from an older key scheme); counted once")
        else:
            kept.append(record)
    return kept, problems
