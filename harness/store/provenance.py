"""Where a result came from: code version, library versions, device, CPU, threads, times.

The CPU is named by its model and by the instruction set torch's kernels use on it
(`torch.backends.cpu.get_cpu_capability()`, e.g. AVX2, AVX512): the same code, libraries and seed give
the same bits only on the same kernels, so a record made on an AVX512 machine is reproduced on an AVX2
one to within rounding (its metrics), not bit for bit (harness/protocol/verify.py)."""

import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from harness.config.paths import REPO_ROOT

LIBRARIES = ("torch", "transformers", "datasets", "peft", "hydra-core")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict:
    """Git sha and whether tracked code (results/ aside) differs from it."""
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"git_sha": sha, "git_dirty": bool(status) if sha else None}


def library_versions() -> dict:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@lru_cache(maxsize=1)
def cpu_kind() -> dict:
    """This machine's CPU: its model name and the instruction set torch's CPU kernels use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"name": name, "capability": torch.backends.cpu.get_cpu_capability()}


def provenance(device_name: str) -> dict:
    return {
        **code_version(),
        "versions": library_versions(),
        "device": device_name,
        "cpu": cpu_kind(),
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "started_at": utc_now(),
        "ended_at": None,
    }
