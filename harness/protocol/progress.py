"""Progress of a whole sweep, whatever launcher runs it (basic, joblib, submitit).

At the start of a multirun the callback composes every run of the sweep (as Hydra's basic sweeper
expands it, per-task tables applied), computes their run keys and writes them to
`<sweep dir>/sweep_plan.json` with the start time and the keys that had already succeeded. A run key
that several runs share (`seed=0,0`) is planned once, with a line saying so; then one line for the plan:

    seed=0,0: 2 runs with the same run key eb70283904f5; counted once
    [sweep plan] 1 run, 0 already succeeded → results/runs/

After each run, the process that ran it reads the plan and the records and prints one line:

    [sweep 7/20] 5 done, 1 skipped, 1 failed, 13 remaining; ETA 6m40s

At the end the callback prints every failed or interrupted run with its error, runs that left no
record, runs that another launcher is training (it holds their lock; not a failure of this
sweep) and finished runs whose runs.csv row says otherwise than their record (their logger failed after
the record was final, in whichever process ran them), and marks the sweep as failed if any run failed,
left no record or has such a row, which makes `python -m harness` exit with status 1.
"""

import csv
import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from harness.config.sections import LoggerConfig, parse_section
from harness.protocol.cells import Composer
from harness.store.records import RecordStore

PLAN_FILE = "sweep_plan.json"
OUTCOME = {"failed_runs": 0, "step_errors": 0}  # set by the multirun's callback, read by harness.protocol.app.main


def key_of(composer: Composer, run: list[str]) -> str | None:
    """The run key of one run's overrides (None where the run cannot be composed)."""
    try:
        return composer.key(run)
    except Exception:
        return None


def planned_keys(arguments: list[str]) -> list[str | None]:
    """The run key of every run of the sweep (None where a run cannot be composed); one composition per
    choice of config groups (harness.protocol.cells.Composer)."""
    from harness.protocol.plan import expand

    composer = Composer([])
    return [key_of(composer, run) for run in expand(arguments)]


def write_plan(config: DictConfig) -> None:
    from harness.protocol.plan import shared_keys, sweep_of

    runs, swept = sweep_of(list(config.hydra.overrides.task))
    composer = Composer([])
    keys = [key_of(composer, run) for run in runs]
    for line in shared_keys(runs, keys, swept):
        print(line, file=sys.stderr, flush=True)
    keys = [key for number, key in enumerate(keys) if key is None or key not in keys[:number]]  # each run once
    store = RecordStore(config.results_dir)
    done = [k for k in keys if k and (r := store.read(k)) is not None and r["status"] == "success"]
    print(
        f"[sweep plan] {len(keys)} run{'s' if len(keys) != 1 else ''}, {len(done)} already succeeded → "
        f"{Path(config.results_dir) / 'runs'}/",
        file=sys.stderr,
        flush=True,
    )
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PLAN_FILE).write_text(
        json.dumps(
            {
                "started": time.time(),
                "keys": keys,
                "done_before": done,
                "results_dir": str(config.results_dir),
                "runs_table": "csv" in parse_section(LoggerConfig, config.logger, "logger").names,
            }
        )
    )


def statuses(plan: dict) -> dict[str, list[str]]:
    store = RecordStore(plan["results_dir"])
    groups = {"done": [], "skipped": [], "failed": [], "remaining": []}
    before = set(plan["done_before"])
    for key in plan["keys"]:
        record = store.read(key) if key else None
        status = record["status"] if record else None
        if key in before:
            groups["skipped"].append(key)
        elif status == "success":
            groups["done"].append(key)
        elif status in ("failed", "interrupted"):
            groups["failed"].append(key)
        else:
            groups["remaining"].append(key)
    return groups


def trained_elsewhere(store: RecordStore, keys: list[str]) -> list[str]:
    """The keys among `keys` whose lock another process holds: another launcher is training them."""
    return [key for key in keys if key and store.is_locked(key)]


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(plan: dict, now: float | None = None, groups: dict[str, list[str]] | None = None) -> str:
    groups = groups or statuses(plan)
    finished = len(groups["done"]) + len(groups["failed"])
    total = len(plan["keys"])
    line = (
        f"[sweep {total - len(groups['remaining'])}/{total}] {len(groups['done'])} done, "
        f"{len(groups['skipped'])} skipped, {len(groups['failed'])} failed, {len(groups['remaining'])} remaining"
    )
    if finished and groups["remaining"]:
        elapsed = (now or time.time()) - plan["started"]
        line += f"; ETA {duration(elapsed / finished * len(groups['remaining']))}"
    return line


class Counter:
    """`counter(k, n)` shows "<what> k/n" on stderr while a long loop works (e.g. `cells composed 12/30` in
    `python -m harness.tune --dry-run`): redrawn in place on a terminal, elsewhere a line at most every `every`
    seconds; at the end, one line with the seconds it took."""

    def __init__(self, what: str, every: float = 5.0, stream=None):
        self.what, self.every, self.stream = what, every, stream or sys.stderr
        self.started = self.shown = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now, tty = time.monotonic(), self.stream.isatty()
        if done == total:
            self.stream.write(f"{chr(13) if tty else ''}{self.what} {done}/{total} ({now - self.started:.1f} s)\n")
        elif tty:
            self.stream.write(f"\r{self.what} {done}/{total}")
        elif now - self.shown >= self.every:
            self.stream.write(f"{self.what} {done}/{total}\n")
            self.shown = now
        self.stream.flush()


def report_progress(sweep_dir: str) -> None:
    path = Path(sweep_dir) / PLAN_FILE
    if path.is_file():
        print(progress_line(json.loads(path.read_text())), file=sys.stderr, flush=True)


def summary(sweep_dir: str) -> tuple[str, int]:
    """The end-of-sweep summary and the number of runs that did not succeed."""
    path = Path(sweep_dir) / PLAN_FILE
    if not path.is_file():
        return "", 0
    plan = json.loads(path.read_text())
    groups = statuses(plan)
    store = RecordStore(plan["results_dir"])
    lines = [progress_line(plan, groups=groups).replace("[sweep", "[sweep end", 1)]
    for key in groups["failed"]:
        record = store.read(key)
        lines.append(
            f"  {record['status'].upper()} {record['method']} | {record['task']} | {record['model']} | seed "
            f"{record['seed']} ({key}): {record['error']}"
        )
    elsewhere = trained_elsewhere(store, groups["remaining"])
    for key in groups["remaining"]:
        if key in elsewhere:
            lines.append(f"  ELSEWHERE {key}: another process is training it (it holds the run's lock)")
        else:
            lines.append(f"  NO RECORD {key or '(run could not be composed)'}: see its error above")
    stale = stale_rows(plan, groups["done"] + groups["failed"]) if plan.get("runs_table") else []
    lines += stale
    return "\n".join(lines), len(groups["failed"]) + len(groups["remaining"]) - len(elsewhere) + len(stale)


def stale_rows(plan: dict, keys: list[str]) -> list[str]:
    """One line per finished run of the sweep whose runs.csv row does not say what its record says (its logger
    failed after the record was final, in whichever process ran it): the sweep fails, and its next run mends them."""
    table = Path(plan["results_dir"]) / "runs.csv"
    store = RecordStore(plan["results_dir"])
    try:
        with open(table, newline="") as handle:
            rows = {row.get("run_key"): row.get("status") for row in csv.DictReader(handle)}
    except (OSError, csv.Error):
        rows = {}
    lines = []
    for key in keys:
        status = store.read(key)["status"]
        if rows.get(key) != status:
            lines.append(
                f"  RUNS.CSV {key}: its row in {table} says {rows.get(key) or 'nothing'}, its record {status} (its "
                "logger failed: see the error above); the same command mends it"
            )
    return lines
