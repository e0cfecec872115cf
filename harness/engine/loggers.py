"""Loggers are views of a run: every step's numbers as they come, and the finished record.

- csv (default): <results_dir>/runs/<run_key>.steps.csv (step, epoch, metric, value rows; flushed at
  every evaluation and checkpoint; a run resumed from a checkpoint keeps the rows up to it) and
  <results_dir>/runs.csv, one row per run key with the run's latest state (written when it starts and
  when it ends).
- wandb: one W&B run per harness run (also when a sweep runs in one process); project, group and
  tags from the config; the resolved config as W&B config; offline when no API key is configured.
- none: nothing.
"""

import csv
import netrc
import os
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.registry import Registry
from harness.store.files import atomic_write
from harness.store.records import reported_adapter_params

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
    under a lock (several processes may finish at once), so the file has one row per run key."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock")):
        rows = {}
        if path.exists():
            with open(path, newline="") as handle:
                rows = {old["run_key"]: old for old in csv.DictReader(handle)}
        rows[row["run_key"]] = row

        def write(temporary: Path) -> None:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows.values())

        atomic_write(path, write)


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
        path = self.results_dir / "runs" / f"{record['run_key']}.steps.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.earlier = (
            path.read_text().splitlines()[1:] if path.exists() else []
        )  # an earlier attempt's rows, for `resume`
        self.handle = open(path, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(("step", "epoch", "metric", "value"))
        upsert_row(self.results_dir / "runs.csv", summary_row(record), RUNS_CSV_COLUMNS)

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.writerow((step, round(epoch, 4), name, value))

    def resume(self, step: int) -> None:
        """The earlier attempt's rows up to the checkpoint's step are kept (they were flushed before it was saved)."""
        self.writer.writerows(row for row in csv.reader(self.earlier) if int(row[0]) <= step)

    def flush(self) -> None:
        self.handle.flush()

    def finish(self, record: dict) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        upsert_row(self.results_dir / "runs.csv", summary_row(record), RUNS_CSV_COLUMNS)


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(NullLogger):
    def __init__(self, settings):
        try:
            import wandb
        except ImportError:
            raise HarnessError("logger=wandb needs wandb: pip install 'peft-harness[wandb]'") from None
        self.wandb, self.settings, self.run = wandb, settings, None

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
        self.run.finish(exit_code=0 if record["status"] == "success" else 1)
        self.run = None


# logger.name → the logger for the run, from the logger section and the results folder
LOGGERS: Registry[Callable[..., NullLogger]] = Registry(
    "logger",
    {
        "csv": lambda settings, results_dir: CsvLogger(results_dir),
        "wandb": lambda settings, results_dir: WandbLogger(settings),
        "none": lambda settings, results_dir: NullLogger(),
    },
)


def build_logger(settings, results_dir: str) -> NullLogger:
    return LOGGERS[settings.name](settings, results_dir)
