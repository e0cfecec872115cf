"""Real subprocess runs of `python -m harness` on the packaged model and data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.preflight import group_options

ROOT = Path(__file__).resolve().parents[2]


def harness(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_HARNESS_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            *args,
            f"results_dir={tmp_path / 'results'}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'outputs'}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_unknown_method_is_one_line_and_exit_2(tmp_path):
    done = harness(tmp_path, "method=dorra")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: unknown method 'dorra'; available: {', '.join(group_options()['method'])}"
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_multirun_full_and_lora_on_packaged_bbc_news_then_resume(tmp_path):
    args = (
        "-m",
        "method=full,lora",
        "task.limit_train=48",
        "task.limit_eval=32",
        "train.max_steps=3",
        "train.batch_size=8",
    )
    done = harness(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")]
    assert sorted(r["method"] for r in records) == ["full", "lora"]
    assert all(r["status"] == "success" and r["model"] == "minilm" and r["task"] == "bbc_news" for r in records)
    lora = next(r for r in records if r["method"] == "lora")
    assert lora["params"]["adapter"] == 6 * 2 * 8 * (384 + 384)  # 6 layers × {query, value}
    assert lora["params"]["backbone"] == 22_713_216
    assert lora["cost"]["steps"] == 3 and len(lora["metrics"]["final"]["test"]) == 2
    summary = [line for line in done.stdout.splitlines() if " | bbc_news | minilm | seed 0 | " in line]
    assert len(summary) == 2 and "test accuracy" in summary[0]
    board = (tmp_path / "multirun" / "leaderboard.md").read_text()
    assert not (tmp_path / "results" / "leaderboard.md").exists()  # results/ holds only what is asked for
    assert "| full " in board and "| lora " in board and "73,728" in board
    assert "# Leaderboard" in done.stdout

    again = harness(tmp_path, *args)
    assert again.returncode == 0
    assert again.stderr.count("skip ") == 2
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 2


@pytest.mark.slow
def test_failing_single_run_exits_1_with_one_line_and_a_failed_record(tmp_path):
    done = harness(tmp_path, "model=tiny_bert", "method.targets=[valeu]")
    assert done.returncode == 1
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")]
    assert record["status"] == "failed"
    assert done.stderr.strip().splitlines()[-1] == (
        "lora | bbc_news | tiny_bert | seed 0 | FAILED: lora: target pattern 'valeu' matches no Linear/Conv2d module; "
        "the model has: bert.encoder.layer.<n>.attention.self.query, bert.encoder.layer.<n>.attention.self.key, "
        "bert.encoder.layer.<n>.attention.self.value, bert.encoder.layer.<n>.attention.output.dense, "
        "bert.encoder.layer.<n>.intermediate.dense, bert.encoder.layer.<n>.output.dense, bert.pooler.dense | "
        f"run {record['run_key']} → {tmp_path / 'results' / 'runs' / (record['run_key'] + '.json')}"
    )
