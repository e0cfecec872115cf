"""Honest status under signals: a SIGTERM (or SIGINT) delivered at each step of a run's record life cycle
leaves the record, runs.csv and the exit status agreeing (harness.errors.SignalGate, harness.engine.run).

Each window is reached by wrapping the system call the step makes (os.fsync / os.replace of a named file,
the summary line, the training) so that it raises the signal there, in `python -m harness`'s own process
(harness.protocol.app.main), as a signal from outside would land."""

import csv
import json
import os
import signal
import sys
from pathlib import Path

import pytest

import harness.engine.run
import harness.protocol.app
from harness.errors import HarnessError
from harness.protocol import progress

TINY = ["model=tiny_bert", "task.limit_train=32", "task.limit_eval=16", "train.batch_size=8", "progress=false"]


def file_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def harness_main(tmp_path: Path, *overrides: str) -> int:
    """`python -m harness <overrides>` in this process; its exit status."""
    argv = ["harness", *overrides, *TINY, "train.max_steps=2", f"results_dir={tmp_path / 'results'}"]
    argv += [f"hydra.run.dir={tmp_path / 'outputs'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    old_argv, sys.argv = sys.argv, argv
    try:
        harness.protocol.app.main()
        return 0
    except SystemExit as stop:
        return stop.code
    finally:
        sys.argv = old_argv
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def state(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The statuses of the records, and runs.csv's status by run key."""
    runs = tmp_path / "results" / "runs"
    records = sorted(json.loads(path.read_text())["status"] for path in runs.glob("*.json"))
    table = tmp_path / "results" / "runs.csv"
    rows = {row["run_key"]: row["status"] for row in csv.DictReader(open(table))} if table.exists() else {}
    return records, rows


def agreeing(tmp_path: Path) -> list[str]:
    """Every record's status, after checking that runs.csv has the same status for each record and no other row."""
    runs = tmp_path / "results" / "runs"
    records = {path.stem: json.loads(path.read_text())["status"] for path in runs.glob("*.json")}
    _, rows = state(tmp_path)
    assert rows == records
    return sorted(records.values())


@pytest.fixture(autouse=True)
def fresh_outcome(monkeypatch):
    monkeypatch.setitem(progress.OUTCOME, "failed_runs", 0)
    monkeypatch.setitem(progress.OUTCOME, "step_errors", 0)


def signal_at_sync(monkeypatch, ending: str, status: str, signum=signal.SIGTERM):
    """The signal lands while the record (or runs.csv) whose temporary file name contains `ending` and whose
    content says `status` is being synced to disk."""
    real = os.fsync

    def fsync(fd):
        name = file_of(fd)
        if ending in name and status in Path(name).read_text(errors="ignore"):
            signal.raise_signal(signum)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def signal_after_replace(monkeypatch, ending: str, status: str, signum=signal.SIGTERM):
    """The signal lands right after the file named `ending` took its new content (saying `status`)."""
    real = os.replace

    def replace(source, target, *args, **kwargs):
        real(source, target, *args, **kwargs)
        if str(target).endswith(ending) and status in Path(target).read_text(errors="ignore"):
            signal.raise_signal(signum)

    monkeypatch.setattr(os, "replace", replace)


# Where the signal lands while a finished run is recorded: the record and runs.csv end final and agreeing;
# a single run exits as its record says, with one line that says what the signal found.
FINISHING = {
    "record synced": lambda mp: signal_at_sync(mp, ".json.", '"success"'),
    "record renamed": lambda mp: signal_after_replace(mp, ".json", '"success"'),
    "runs.csv synced": lambda mp: signal_at_sync(mp, ".runs.csv.", "success"),
    "runs.csv renamed": lambda mp: signal_after_replace(mp, "runs.csv", "success"),
}


@pytest.mark.parametrize("window", FINISHING)
def test_a_signal_while_a_finished_run_is_recorded_waits_until_record_and_runs_csv_are_final(
    tmp_path, monkeypatch, capsys, window
):
    FINISHING[window](monkeypatch)
    assert harness_main(tmp_path) == 0
    assert agreeing(tmp_path) == ["success"]
    err = capsys.readouterr().err.strip().splitlines()
    key = next((tmp_path / "results" / "runs").glob("*.json")).stem
    assert err[-1] == (
        f"interrupted by SIGTERM: it came as run lora | bbc_news | tiny_bert | seed 0 ({key}) was being recorded, "
        "which had finished and is recorded as success"
    )


def test_a_signal_at_the_summary_line_also_waits(tmp_path, monkeypatch, capsys):
    real = harness.engine.run.summary_line

    def summary_line(record, store):
        signal.raise_signal(signal.SIGINT)
        return real(record, store)

    monkeypatch.setattr(harness.engine.run, "summary_line", summary_line)
    assert harness_main(tmp_path) == 0 and agreeing(tmp_path) == ["success"]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted by SIGINT: it came as run ")


def test_a_signal_while_a_failed_run_is_recorded_exits_1_as_its_record_says(tmp_path, monkeypatch, capsys):
    signal_at_sync(monkeypatch, ".json.", '"failed"')
    assert harness_main(tmp_path, "method.r=0") == 1
    assert agreeing(tmp_path) == ["failed"]
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("which had finished and is recorded as failed")


# Where the signal lands before the run's result exists: the run is recorded as interrupted (both places), exit 143.
COMPUTING = {
    "running record synced": lambda mp: signal_at_sync(mp, ".json.", '"running"'),
    "running record renamed": lambda mp: signal_after_replace(mp, ".json", '"running"'),
    "runs.csv running row synced": lambda mp: signal_at_sync(mp, ".runs.csv.", "running"),
    "runs.csv running row renamed": lambda mp: signal_after_replace(mp, "runs.csv", "running"),
    "predictions synced": lambda mp: signal_at_sync(mp, ".predictions.parquet.", ""),
}


@pytest.mark.parametrize("window", COMPUTING)
def test_a_signal_before_the_result_exists_records_interrupted_in_both_places_and_exits_143(
    tmp_path, monkeypatch, capsys, window
):
    COMPUTING[window](monkeypatch)
    assert harness_main(tmp_path) == 143
    assert agreeing(tmp_path) == ["interrupted"]
    key = next((tmp_path / "results" / "runs").glob("*.json")).stem
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted by SIGTERM: run lora | bbc_news | tiny_bert | seed 0 ({key}) recorded as interrupted; "
        "the same command redoes it; exit status 143"
    )


def test_a_signal_while_an_interrupted_run_is_recorded_is_ignored(tmp_path, monkeypatch):
    """The second signal (a user pressing Ctrl-C twice) lands while the first one's record is synced."""
    signal_at_sync(monkeypatch, ".runs.csv.", "running")
    signal_at_sync(monkeypatch, ".json.", '"interrupted"', signal.SIGINT)
    assert harness_main(tmp_path) == 143 and agreeing(tmp_path) == ["interrupted"]


def test_a_sweep_stops_at_a_signal_held_while_its_run_was_recorded(tmp_path, monkeypatch, capsys):
    signal_after_replace(monkeypatch, ".json", '"success"')
    assert harness_main(tmp_path, "-m", "seed=0,1") == 143
    assert agreeing(tmp_path) == ["success"]  # the second run never started
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith(
            "which had finished and is recorded as success; the sweep stops there, and the same command runs the rest; "
            "exit status 143"
        )
    )


def test_a_rerun_after_a_stale_runs_csv_row_makes_it_agree(tmp_path, capsys):
    """runs.csv left saying `running` beside a success record (an older harness, a killed logger): the same
    command skips the run and mends its row."""
    assert harness_main(tmp_path) == 0
    table = tmp_path / "results" / "runs.csv"
    table.write_text(table.read_text().replace("success", "running"))
    assert harness_main(tmp_path) == 0 and agreeing(tmp_path) == ["success"]
    assert "skip " in capsys.readouterr().err


def test_a_logger_that_fails_after_the_record_is_final_fails_the_command_single_or_sweep(tmp_path, monkeypatch, capsys):
    import harness.engine.loggers

    real = harness.engine.loggers.upsert_row

    def upsert_row(path, row, columns):
        if row["status"] == "success":
            raise HarnessError(f"could not write {path} (No space left on device); results_dir chooses this folder")
        real(path, row, columns)

    monkeypatch.setattr(harness.engine.loggers, "upsert_row", upsert_row)
    for seed, overrides in ((0, []), (1, ["-m"])):
        assert harness_main(tmp_path, *overrides, f"seed={seed}", "rerun=true") == 1
    assert state(tmp_path)[0] == ["success", "success"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all(
        line.startswith("error: the record ") and "is final (success), but its logger failed: could not write " in line
        for line in errors
    )


def test_a_folder_in_place_of_runs_csv_fails_the_run_before_it_trains(tmp_path, capsys):
    table = tmp_path / "results" / "runs.csv"
    table.mkdir(parents=True)
    assert harness_main(tmp_path) == 1
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "results" / "runs").glob("*.json")]
    assert record["status"] == "failed" and record["cost"] == {}  # not trained
    assert record["error"] == f"{table} is a folder, where the runs table goes; move it away (results_dir chooses it)"
