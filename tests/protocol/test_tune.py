"""`python -m harness.tune` end to end: a real protocol searches, picks, runs the seeds, writes the
leaderboard, and a second call finds everything done."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.protocol.tune import parse_arguments
from harness.report.selection import lr_pair

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_protocol_end_to_end_searches_picks_runs_seeds_and_writes_the_leaderboard(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_HARNESS_CACHE": str(tmp_path / "cache")}
    overrides = [
        "sweep=official",
        f"results_dir={tmp_path / 'results'}",
        f"protocol.leaderboard={tmp_path / 'board'}",
        "protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[lora]}]",
        "protocol.seeds=[0,1]",
        "protocol.search.trials=3",
        "task.limit_train=32",
        "task.limit_eval=16",
        "train.max_steps=2",
        "train.batch_size=8",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "harness.tune", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")]
    assert all(r["status"] == "success" and r["sweep"] == "official" and r["config"]["tuning"] for r in records)
    assert {r["method"] for r in records} == {"lora"}
    search = sorted((r for r in records if r["seed"] == 0), key=lambda r: r["config"]["tuning"]["exponent"])
    assert len(search) == 3 and len(records) == 4  # 3 search points on seed 0, then seed 1 at the chosen one
    best = max(search, key=lambda r: r["metrics"]["final"]["validation"]["accuracy"])  # max: smallest on ties
    (seed1,) = [r for r in records if r["seed"] == 1]
    assert lr_pair(seed1) == lr_pair(best)
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "(n=2)" in board and "(n=3)" not in board and "## Tuned learning rates" in board
    again = subprocess.run(
        [sys.executable, "-m", "harness.tune", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0 and "$ python" not in again.stdout  # all done: nothing launched
    assert (tmp_path / "board" / "leaderboard.md").read_text() == board


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep=official", "--dry-run", "threads=1"],
        ["--dry-run", "sweep=official", "threads=1"],
        ["sweep=official", "threads=1", "--dry-run"],
    ],
)
def test_flags_may_come_between_overrides(argv):
    arguments = parse_arguments(argv)
    assert arguments.dry_run and arguments.overrides == ["sweep=official", "threads=1"]
