"""The leaderboard scores every run over its task's clean items, from its prediction file, whatever
score the record holds, and its caption says what was left out (harness/store/clean_items.py)."""

import hashlib
import json

import pandas as pd
import pytest

from harness.report.board import build_and_write
from harness.store.clean_items import clean_items
from harness.store.identity import run_key
from tests.report.test_leaderboard import record


def write_run(runs, seed: int, task_config: dict, ids: list[str], correct: list[bool]) -> None:
    rec = record("lora", None, "bbc_news", seed, 0.0, 0.0, 73_728)
    rec["config"]["task"] = task_config
    rec["run_key"] = run_key(rec["config"])  # a reader refuses a record whose config hashes to another key
    path = runs / f"{rec['run_key']}.predictions.parquet"
    frame = {"split": "test", "step": 10, "example_id": ids, "label": 0, "prediction": [0 if c else 1 for c in correct]}
    pd.DataFrame(frame).to_parquet(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rec["predictions"] = {"file": path.name, "sha256": digest, "bytes": 1, "steps": {"final": 10, "best": 10}}
    rec["metrics"]["final"]["test"]["accuracy"] = sum(correct) / len(correct)  # over every item, as recorded
    (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))


def board_of(tmp_path, task_config: dict) -> tuple[pd.Series, str]:
    runs = tmp_path / "runs"
    runs.mkdir()
    repeated = sorted(clean_items("bbc_news").excluded)[:2]
    ids = [repeated[0], f"{repeated[0]}~1", repeated[1]] + [f"{i:016x}" for i in range(7)]
    for seed in (0, 1):
        write_run(runs, seed, task_config, ids, [False, False, False] + [True] * 6 + [seed == 0])
    text = build_and_write(str(tmp_path), out_dir=str(tmp_path / "out"), with_plot=False)
    return pd.read_csv(tmp_path / "out" / "leaderboard.csv").iloc[0], text


def test_runs_are_rescored_on_clean_items_and_the_caption_says_so(tmp_path):
    row, text = board_of(tmp_path, {"name": "bbc_news", "source": None})
    assert row["items"] == 7 and row["mean"] == pytest.approx(
        100 * (7 + 6) / 14, abs=1e-4
    )  # the recorded scores were 7/10 and 6/10
    assert "bbc_news test: 300 of 335 items (35 left out: 2 repeated within test, 33 also in another split)" in text


def test_a_run_on_other_data_keeps_every_item(tmp_path):
    row, text = board_of(tmp_path, {"name": "bbc_news", "source": "/data/bbc"})
    assert row["items"] == 10 and row["mean"] == pytest.approx(100 * (7 + 6) / 20, abs=1e-4)
    assert "clean items" not in text
