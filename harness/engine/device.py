"""Device choice and mixed precision: CUDA, then MPS, then CPU; bf16 autocast on GPUs that have it."""

import os

import torch

from harness.errors import HarnessError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str, job_index: int | None = None) -> torch.device:
    """`auto`: CUDA, then MPS, then CPU. With several visible GPUs, the runs of a parallel sweep
    (job number `job_index`) take them in turn: GPU job_index mod count; `cuda:N` is GPU N. A device
    that is not there is one line naming it (before any data loads), not torch's error on first use."""
    if (
        requested in ("auto", "cuda")
        and torch.cuda.is_available()
        and torch.cuda.device_count() > 1
        and job_index is not None
    ):
        return torch.device("cuda", job_index % torch.cuda.device_count())
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"train.device={requested} but no CUDA device is visible; use train.device=auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise HarnessError(
            f"train.device={requested} but {count} CUDA device{'s are' if count > 1 else ' is'} visible "
            f"({visible}); use one of them, cuda or auto"
        )
    if device.type == "mps" and not mps_available():
        raise HarnessError(
            f"train.device={requested} but no MPS (Apple GPU) device is available; use train.device=auto or cpu"
        )
    return device


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def make_deterministic() -> None:
    """Bitwise-reproducible kernels on GPUs (`deterministic: true`); CPU runs are reproducible anyway."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. `auto` is bf16 on CUDA GPUs that support it."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type == "cpu":
        raise HarnessError("train.precision=fp16 needs a GPU; on CPU use fp32, bf16 or auto")
    return DTYPES.get(precision)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
