"""`python -m harness.bench --overhead`: the share of the default run's (`python -m harness`) wall time spent
outside its training steps and evaluations, with a cold and a warm tokenization cache."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed_default_run(results: Path, cache: Path, *overrides: str) -> tuple[float, dict]:
    """Runs `python -m harness` (the default run, plus `overrides`) in a fresh process: its wall time and its
    record's cost."""
    env = {**os.environ, "PEFT_HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness", f"results_dir={results}", "progress=false", "logger=csv", *overrides],
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    return wall, record["cost"]


def overhead(scratch: Path, repeats: int = 5) -> list[str]:
    """The default run's wall time outside its training steps and evaluations. The time outside does not
    depend on the number of steps, and one measurement of it varies by about a second on a shared
    machine, so it is the median of `repeats` short runs (2 steps) with a cold tokenization cache (emptied
    before each) and `repeats` with a warm one, set against one whole default run (1 epoch)."""
    outside = {"cold": [], "warm": []}
    for attempt in range(repeats):
        for cache in ("cold", "warm"):
            if cache == "cold":
                shutil.rmtree(scratch / "cache", ignore_errors=True)
            results = scratch / f"{cache}{attempt}"
            wall, cost = timed_default_run(results, scratch / "cache", "train.max_steps=2")
            outside[cache].append(wall - cost["train_seconds"] - cost["eval_seconds"])
    wall, cost = timed_default_run(scratch / "whole", scratch / "cache")
    steps = cost["train_seconds"] + cost["eval_seconds"]
    lines = [
        f"- default run (`python -m harness`: lora, bbc_news, 1 epoch = {cost['steps']} steps): training steps "
        f"{cost['train_seconds']:.1f} s, evaluation {cost['eval_seconds']:.1f} s (process wall {wall:.1f} s)"
    ]
    for cache, seconds in outside.items():
        middle = statistics.median(seconds)
        lines.append(
            f"- outside steps and evaluation, {cache} tokenization cache: median {middle:.1f} s (range "
            f"{min(seconds):.1f}–{max(seconds):.1f} s over {repeats} runs) = "
            f"**{100 * middle / (steps + middle):.1f} %** of the default run"
        )
    return lines
