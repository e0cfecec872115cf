"""Run records: one JSON file per run in <results_dir>/runs/<run_key>.json, the source of truth (the
run key and what it hashes: harness/store/identity.py).

Every record is checked against `harness/store/record.schema.json` when written and when read: a reader
lists an invalid record with its reason and skips it. A success whose reported score is not finite
is read as a failed run, with a note. A record's file must be `<run_key>.json` (a copy under another name
is not counted, so a run key counts once). Every reader of a folder (`RecordStore.load_all`: the
leaderboard, the site, the tuning protocol, harness.verify) also checks that each config hashes to its
run key (a record under a key from an older key scheme is the same run as its twin under the current key
and counts once; without a twin the config was changed after the run, and the record is not counted), and
each predictions file against the SHA-256 its record names (a missing or changed file is listed, and the
run is scored without its per-item data). A record of a newer `schema_version` (a newer harness wrote it)
is listed by readers and never overwritten (`RecordStore.refuse_newer`). Records are written atomically
(harness/store/files.py). One run key is trained by one process at a time: `RecordStore.lock` (a file lock
that the OS releases when its process dies, so a dead launcher's lock is taken over).
"""

import functools
import json
import math
import os
from pathlib import Path

from harness.digest import sha256_file
from harness.errors import HarnessError
from harness.store.files import atomic_write_text, ensure_writable
from harness.store.identity import RUN_KEY_VERSION, run_key

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("record.schema.json")
FILES_BESIDE = ("lock", "checkpoint.pt", "predictions.parquet", "adapter.safetensors", "steps.csv")  # <key>.<suffix>
LOCK_WAIT_SECONDS = 1.0  # a launcher waits this long for a run's lock before leaving the run to its holder


def method_label(method: str, variant: str | None, optimizer: str | None = None) -> str:
    """A method's display label in tables and listings: its registry name, the variant in brackets, and the
    optimizer after a `+` where it is not the default AdamW (`lora+loraplus`)."""
    label = f"{method}[{variant}]" if variant else method
    return f"{label}+{optimizer}" if optimizer not in (None, "adamw") else label


def record_label(record: dict) -> str:
    """The label of a record's method (a record from before the optimizer axis trained with AdamW)."""
    return method_label(record["method"], record.get("variant"), record.get("optimizer"))


def reported_adapter_params(params: dict) -> int:
    """The adapter count tables report: the kept count for methods that prune a rank budget
    during training (`adapter_final`), else the trained count (`adapter`)."""
    return params.get("adapter_final", params["adapter"])


def reported_score(record: dict, which: str = "final") -> float:
    """The primary metric on the report split at the final (or best) evaluation."""
    metrics = record["metrics"]
    return metrics[which][metrics["report_split"]][metrics["primary"]]


def text_or_none(value) -> str | None:
    return None if value is None else str(value)


def new_record(config: dict, key: str) -> dict:
    """A `running` record; its summary fields are typed as the schema says even where the config's
    values are wrong (e.g. `seed=abc`: seed null, the value stays in `config`; the run then fails)."""
    section = lambda name: config.get(name) if isinstance(config.get(name), dict) else {}  # noqa: E731
    seed = config.get("seed")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_key": key,
        "run_key_version": RUN_KEY_VERSION,
        "status": "running",
        "error": None,
        "method": text_or_none(section("method").get("name")),
        "variant": text_or_none(section("method").get("variant")),
        "optimizer": text_or_none(section("optimizer").get("name", "adamw")),
        "task": text_or_none(section("task").get("name")),
        "model": text_or_none(section("model").get("name")),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        "sweep": text_or_none(config.get("sweep")),
        "tags": [str(tag) for tag in config.get("tags") or []],
        "config": config,
        "params": {},
        "metrics": {},
        "cost": {},
        "provenance": {},
    }


class InvalidRecord(Exception):
    """A record file that is not valid JSON, does not follow the record schema or is not named by its run key."""


def newer_schema(record: object) -> int | None:
    """The record's schema_version where a newer harness wrote it (above SCHEMA_VERSION), else None."""
    version = record.get("schema_version") if isinstance(record, dict) else None
    newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
    return version if newer else None


@functools.cache
def validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


def schema_problem(record: object) -> str | None:
    """Why `record` does not follow the schema (the most relevant error, one line), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator().iter_errors(record))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "record"
    message = " ".join(error.message.split())
    return f"{where}: {message[:200]}{'...' if len(message) > 200 else ''}"


def checked(record: object, name: str) -> tuple[dict, str | None]:
    """The record if it is valid and its file `name` is `<run_key>.json`, and a note when a success is read
    as a failure (non-finite score); an invalid record raises InvalidRecord with the reason."""
    if (version := newer_schema(record)) is not None:
        raise InvalidRecord(
            f"{name}: schema_version {version}, newer than this harness's {SCHEMA_VERSION} "
            "(upgrade peft-harness to read it); not counted"
        )
    problem = schema_problem(record)
    if problem is None and record["status"] == "success":
        metrics = record["metrics"]
        for which in ("final", "best"):
            try:
                reported_score(record, which)
            except (KeyError, TypeError):
                problem = f"metrics.{which}: no {metrics['primary']} on the report split '{metrics['report_split']}'"
                break
    if problem is not None:
        raise InvalidRecord(f"{name}: {problem}")
    if name != f"{record['run_key']}.json":
        key = record["run_key"]
        raise InvalidRecord(
            f"{name}: holds run {key}, whose record is {key}.json (a copy or a renamed file); not counted"
        )
    if record["status"] == "success":
        scores = {which: reported_score(record, which) for which in ("final", "best")}
        bad = {which: score for which, score in scores.items() if score is None or not math.isfinite(score)}
        if bad:
            metrics = record["metrics"]
            text = ", ".join(
                f"{which} {metrics['report_split']} {metrics['primary']} = {score}" for which, score in bad.items()
            )
            record = {**record, "status": "failed", "error": f"non-finite score ({text})"}
            return record, f"{name}: non-finite score ({text}); counted as a failed run"
    return record, None


def predictions_problem(entry: dict | None, runs_dir: Path) -> str | None:
    """Why the predictions file a record names (its `predictions` entry) cannot be used: missing, or its
    SHA-256 differs from the record's (truncated or rewritten); None where it is intact or there is none."""
    if not entry:
        return None
    path = runs_dir / entry["file"]
    if not path.is_file():
        return f"{entry['file']}: missing"
    if sha256_file(path) != entry["sha256"]:
        return f"{entry['file']}: sha256 differs from the record's"
    return None


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidRecord(f"{path.name}: unreadable ({' '.join(str(error).split())})") from None


class RecordStore:
    def __init__(self, results_dir: str | os.PathLike):
        self.runs_dir = Path(results_dir) / "runs"
        self.problems: list[str] = []  # why records read through `read` were skipped or changed

    def ensure_writable(self) -> None:
        ensure_writable(self.runs_dir, "results_dir")

    def path(self, key: str) -> Path:
        return self.runs_dir / f"{key}.json"

    def beside(self, key: str, suffix: str) -> Path:
        """A file that belongs to the record of `key` (predictions, adapter, step log)."""
        return self.runs_dir / f"{key}.{suffix}"

    def refuse_folders(self, key: str) -> None:
        """A one-line HarnessError where a folder sits in the place of a file run `key` writes (its record,
        lock, checkpoint, predictions, adapter or step log): found before the run starts, not when it ends."""
        for path in (self.path(key), *(self.beside(key, suffix) for suffix in FILES_BESIDE)):
            if path.is_dir():
                raise HarnessError(
                    f"{path} is a folder, where run {key} writes a file; move it away (results_dir chooses this folder)"
                )

    def files(self, key: str) -> list[Path]:
        """The files of the record of `key`: the record and every file beside it, its lock aside."""
        return [path for path in self.runs_dir.glob(f"{key}.*") if path.suffix != ".lock"]

    def read(self, key: str) -> dict | None:
        """The record of `key`, or None if there is none, it is invalid or its config hashes to another key
        (changed after the run): then it is redone, and the reason is added to `problems`."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record, note = checked(read_json(path), path.name)
            if (current := run_key(record["config"])) != key:
                raise InvalidRecord(
                    f"{path.name}: its config hashes to run key {current}, not {key} (changed after the run?)"
                )
        except InvalidRecord as error:
            self.problems.append(str(error))
            return None
        if note:
            self.problems.append(note)
        return record

    def refuse_newer(self, key: str) -> None:
        """A one-line HarnessError where the record of `key` was written by a newer harness (its schema_version
        above this one's): it is never overwritten, nor are the files beside it."""
        path = self.path(key)
        try:
            version = newer_schema(read_json(path)) if path.exists() else None
        except InvalidRecord:  # unreadable: an interrupted write or a damaged file, which a run redoes
            return
        if version is not None:
            raise HarnessError(
                f"{path}: schema_version {version}, newer than this harness's {SCHEMA_VERSION}: the record is never "
                "overwritten; upgrade peft-harness (pip install -U peft-harness) or use another results_dir"
            )

    def write(self, record: dict) -> None:
        problem = schema_problem(json.loads(json.dumps(record, default=str)))
        if problem is not None:  # a bug in the writer: never leave a record that readers would skip
            raise HarnessError(f"record {record.get('run_key')} does not follow {SCHEMA_FILE.name}: {problem}")
        self.refuse_newer(record["run_key"])
        atomic_write_text(self.path(record["run_key"]), json.dumps(record, indent=1, default=str))

    def lock(self, key: str):
        """The lock of run `key` (a filelock.FileLock on <key>.lock; the OS drops it when its holder dies)."""
        from filelock import FileLock

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.beside(key, "lock"), timeout=LOCK_WAIT_SECONDS)

    def is_locked(self, key: str) -> bool:
        """Whether a process holds the lock of run `key` now (training it)."""
        from filelock import Timeout

        lock = self.lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    def load_all(self) -> tuple[list[dict], list[str]]:
        """Every valid record whose config hashes to its run key, each run key once, and one line per file
        that is left out (invalid, misnamed, a stale or changed key: listed, never counted), whose success was
        read as a failure, or whose predictions file cannot be used (the run is scored without it)."""
        records, problems = [], []
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                record, note = checked(read_json(path), path.name)
            except InvalidRecord as error:
                problems.append(str(error))
                continue
            records.append(record)
            if note:
                problems.append(note)
        records = with_trusted_keys(records, problems)
        for record in records:
            if (problem := predictions_problem(record.get("predictions"), self.runs_dir)) is not None:
                problems.append(f"{problem}; scored without per-item data")
        return records, problems


def with_trusted_keys(records: list[dict], problems: list[str]) -> list[dict]:
    """The records whose config hashes to their run key; each other one gets a line in `problems`. A record
    whose key was made under an older key scheme (e.g. before a config key became non-semantic) is the same
    run as the record under its config's current key, where a resumed sweep redid it: it counts once. Without
    such a twin, the config was changed after the run: the record is not counted."""
    keys = {record["run_key"] for record in records}
    kept = []
    for record in records:
        current = run_key(record["config"])
        if record["run_key"] == current:
            kept.append(record)
        elif current in keys:
            problems.append(
                f"{record['run_key']}.json: the same run as {current}.json (a key from an older key scheme); "
                "counted once"
            )
        else:
            problems.append(
                f"{record['run_key']}.json: its config hashes to run key {current}, not {record['run_key']} "
                "(changed after the run?); not counted"
            )
    return kept
