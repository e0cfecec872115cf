"""Loggers are views of a run: every step's numbers as they come, and the finished record.

- csv (default): <results_dir>/runs/<run_key>.steps.csv (step, epoch, metric, value rows; flushed at
  every evaluation and checkpoint; a run resumed from a checkpoint keeps the rows up to it) and
  <results_dir>/runs.csv, one row per run key with the run's latest state (written when it starts and
  when it ends).
- wandb: one W&B run per harness run (also when a sweep runs in one process); project, group and
  tags from the config; the resolved config as W&B config; the record, its predictions and a saved adapter
  as one artifact (`run-<run_key>`); offline when no API key is configured.
- several at once: `logger=[csv,wandb]`; none: `logger=none` (the record and predictions only).
"""

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.registry import Registry
from harness.store.files import atomic_write, writes_to
from harness.store.records import RecordStore, reported_adapter_params

RUNS_CSV_COLUMNS = (
    "run_key",
    "status",
    "method",
    "variant",
    "task",
    "model",
    "seed",
    "sweep",
    "adapter_params",
    "trainable_params",
    "primary",
    "report_split",
    "final",
    "best",
    "train_seconds",
    "wall_seconds",
    "error",
)


class NullLogger:
    def start(self, record: dict) -> None:
        pass

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def resume(self, step: int) -> None:
        """The run continues after `step` from a checkpoint (harness/engine/checkpoint.py)."""

    def finish(self, record: dict) -> None:
        pass


def upsert_row(path: Path, row: dict, columns: tuple[str, ...]) -> None:
    """Put `row` into the CSV at `path` in place of the row with the same run key (or at the end),
    under a lock (several processes may finish at once), so the file has one row per run key; a row
    that is already there as given leaves the file untouched."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock")):
        rows = read_rows(path, columns)
        text = {column: "" if row.get(column) is None else str(row[column]) for column in columns}
        if path.exists() and rows.get(row["run_key"]) == text:  # (a rebuilt table is written in any case)
            return
        rows[row["run_key"]] = text

        def write(temporary: Path) -> None:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows.values())

        atomic_write(path, write)


def read_rows(path: Path, columns: tuple[str, ...]) -> dict[str, dict]:
    """The rows of the runs table at `path` by run key. runs.csv is a view of the records: one that is not a
    runs table (no run_key column, unreadable) is moved aside to runs.csv.unreadable, with a note, and its rows
    are rebuilt from the records beside it; a folder in its place is a one-line error."""
    if path.is_dir():
        raise HarnessError(f"{path} is a folder, where the runs table goes; move it away (results_dir chooses it)")
    if not path.exists():
        return {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "run_key" not in reader.fieldnames:
                raise ValueError("no run_key column")
            return {old["run_key"]: {column: old.get(column) or "" for column in columns} for old in reader}
    except (OSError, ValueError, csv.Error) as error:
        aside = path.with_name(f"{path.name}.unreadable")
        os.replace(path, aside)
        records = RecordStore(path.parent).load_all()[0]
        print(
            f"note: {path} is not a runs table ({' '.join(str(error).split())}); moved to {aside.name} and rebuilt "
            f"from the {len(records)} records in {path.parent / 'runs'}",
            file=sys.stderr,
        )
        return {
            record["run_key"]: {
                column: "" if value is None else str(value) for column, value in summary_row(record).items()
            }
            for record in records
        }


def summary_row(record: dict) -> dict:
    metrics, params, cost = record.get("metrics") or {}, record.get("params") or {}, record.get("cost") or {}
    split, primary = metrics.get("report_split"), metrics.get("primary")

    def score(kind: str):
        return ((metrics.get(kind) or {}).get(split) or {}).get(primary)

    return {
        "run_key": record["run_key"],
        "status": record["status"],
        "method": record["method"],
        "variant": record.get("variant"),
        "task": record["task"],
        "model": record["model"],
        "seed": record["seed"],
        "sweep": record.get("sweep"),
        "adapter_params": reported_adapter_params(params) if params else None,
        "trainable_params": params.get("trainable"),
        "primary": primary,
        "report_split": split,
        "final": score("final"),
        "best": score("best"),
        "train_seconds": cost.get("train_seconds"),
        "wall_seconds": cost.get("wall_seconds"),
        "error": record.get("error"),
    }


class CsvLogger(NullLogger):
    def __init__(self, results_dir: str):
        self.results_dir = Path(results_dir)
        self.handle = None

    def start(self, record: dict) -> None:
        self.path = self.results_dir / "runs" / f"{record['run_key']}.steps.csv"
        with writes_to(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.earlier = (
                self.path.read_text().splitlines()[1:] if self.path.exists() else []
            )  # an earlier attempt's rows, for `resume`
            self.handle = open(self.path, "w", newline="")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(("step", "epoch", "metric", "value"))
        upsert_row(self.results_dir / "runs.csv", summary_row(record), RUNS_CSV_COLUMNS)

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        with writes_to(self.path):
            for name, value in values.items():
                self.writer.writerow((step, round(epoch, 4), name, value))

    def resume(self, step: int) -> None:
        """The earlier attempt's rows up to the checkpoint's step are kept (they were flushed before it was saved)."""
        with writes_to(self.path):
            self.writer.writerows(row for row in csv.reader(self.earlier) if int(row[0]) <= step)

    def flush(self) -> None:
        with writes_to(self.path):
            self.handle.flush()

    def finish(self, record: dict) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            with writes_to(self.path):
                handle.close()
        upsert_row(self.results_dir / "runs.csv", summary_row(record), RUNS_CSV_COLUMNS)


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(NullLogger):
    def __init__(self, settings, results_dir: str):
        try:
            import wandb
        except ImportError:
            raise HarnessError("logger=wandb needs wandb: pip install 'peft-harness[wandb]'") from None
        self.wandb, self.settings, self.run = wandb, settings, None
        self.runs_dir = Path(results_dir) / "runs"

    def mode(self) -> str:
        if self.settings.mode != "auto":
            return self.settings.mode
        return "online" if wandb_has_api_key() else "offline"

    def start(self, record: dict) -> None:
        s = self.settings
        self.run = self.wandb.init(
            project=s.project,
            entity=s.entity,
            group=s.group or record.get("sweep"),
            tags=[t for t in [record["method"], record["task"], record["model"], *record.get("tags", [])] if t],
            name=f"{record['method']}-{record['task']}-{record['model']}-s{record['seed']}",
            config=record["config"],
            mode=self.mode(),
            dir=s.dir,
            reinit="finish_previous",
        )
        self.run.config.update({"run_key": record["run_key"]})

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self.run.log({**values, "epoch": epoch}, step=step)

    def finish(self, record: dict) -> None:
        if self.run is None:
            return
        row = summary_row(record)
        self.run.summary.update({k: v for k, v in row.items() if v is not None})
        self.run.summary.update({"params": record.get("params"), "cost": record.get("cost")})
        self.run.log_artifact(self.artifact(record))
        self.run.finish(exit_code=0 if record["status"] == "success" else 1)
        self.run = None

    def artifact(self, record: dict):
        """The run's files as one W&B artifact (`run-<run_key>`): the record and the files it names beside it
        (predictions, saved adapter), each as written; the summary row as its metadata."""
        key = record["run_key"]
        artifact = self.wandb.Artifact(f"run-{key}", type="peft-harness-run", metadata=summary_row(record))
        artifact.add_file(str(self.runs_dir / f"{key}.json"))
        for entry in (record.get("predictions"), record.get("adapter")):
            if entry:
                artifact.add_file(str(self.runs_dir / entry["file"]))
        return artifact


class Loggers(NullLogger):
    """Several views of one run at once (`logger=[csv,wandb]`): each call goes to each, in order."""

    def __init__(self, loggers: list[NullLogger]):
        self.loggers = loggers

    def start(self, record: dict) -> None:
        for logger in self.loggers:
            logger.start(record)

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, epoch, values)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def resume(self, step: int) -> None:
        for logger in self.loggers:
            logger.resume(step)

    def finish(self, record: dict) -> None:
        for logger in self.loggers:
            logger.finish(record)


# a name in logger.use → the logger for the run, from the logger section and the results folder
LOGGERS: Registry[Callable[..., NullLogger]] = Registry(
    "logger",
    {
        "csv": lambda settings, results_dir: CsvLogger(results_dir),
        "wandb": lambda settings, results_dir: WandbLogger(settings, results_dir),
    },
)


def build_logger(settings, results_dir: str) -> NullLogger:
    """The run's views: the loggers `settings.names` switches on (none: a NullLogger)."""
    loggers = [LOGGERS[name](settings, results_dir) for name in settings.names]
    return loggers[0] if len(loggers) == 1 else Loggers(loggers)


def mend_runs_table(record: dict, settings, results_dir: str) -> None:
    """A finished run found again (skipped): its runs.csv row made to say what its record says, where the CSV
    view is on (a row left `running` by a process stopped between the two writes, or an older harness)."""
    if "csv" in settings.names:
        upsert_row(Path(results_dir) / "runs.csv", summary_row(record), RUNS_CSV_COLUMNS)
