"""Peak memory of one run: max allocated/reserved on CUDA; peak resident set size on CPU.

On Linux the RSS peak (VmHWM) is reset per run by writing 5 to /proc/self/clear_refs, so runs of a
sweep that share a process each get their own peak; elsewhere the process-lifetime maximum is used.
"""

import os
import resource
import sys
from pathlib import Path

import torch


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def read_peak(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
            "peak_rss_mb": rss_peak_mb(),
        }
    return {"peak_memory_mb": rss_peak_mb()}


def current_mb(device: torch.device) -> float:
    """Memory in use now: allocated on CUDA; resident set size on CPU (Linux; else the peak)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return rss_peak_mb()
