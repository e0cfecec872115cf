"""scripts/gpu_check.sh without a GPU: its CPU fallback runs the same steps at tiny size (the GPU tests, which skip;
the bench on tiny_bert and tiny_llama; a one-step demo run) and writes the bench pages and its summary into the
folder it is given. 100 to 130 s on 2 loaded cores (four processes that each import torch): marked slow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_cpu_fallback_runs_every_step_and_writes_its_pages(tmp_path):
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_OUT": str(tmp_path), "PATH": os.environ["PATH"]}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the script's `python` is this one
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pages = ["cpu-tiny_bert-b2x16-bf16.md", "cpu-tiny_llama-b2x16-nf4-checkpointed.md"]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*pages, "gpu-check-cpu.md"])
    assert "| limit " in (tmp_path / pages[0]).read_text() and "| dora " in (tmp_path / pages[0]).read_text()
    assert "| lora " in (tmp_path / pages[1]).read_text() and "| dora " in (tmp_path / pages[1]).read_text()
    summary = (tmp_path / "gpu-check-cpu.md").read_text()
    assert summary.startswith("# GPU check (cpu): 4 of 4 steps passed")
    for step in ["gpu-tests", "bench-tiny-bert-bf16", "bench-tiny-llama-nf4-checkpointed", "demo"]:
        assert f"| {step} | passed |" in summary
    assert all(f"- {page}" in summary for page in pages)
    assert "Tests: 8 skipped" in summary and "test accuracy" in summary  # the GPU tests skip; the demo ran
    assert f"summary: {tmp_path / 'gpu-check-cpu.md'}" in done.stdout
