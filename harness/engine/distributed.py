"""One run over several processes: `torchrun --nproc_per_node N -m harness ...` (or a SLURM job with N
tasks) trains it with DistributedDataParallel, gloo on CPU and nccl on GPUs (each rank its LOCAL_RANK's).

`train.grad_accum` is the global accumulation (a multiple of N): every optimizer step takes grad_accum
micro-batches of the run's seeded order, as one process does, and rank r trains the r-th, (r + N)-th, ...
of them; DDP averages the gradients, so clipping, the optimizer and the methods' step hooks see the
one-process gradient (AdaLoRA's and dynamic DoRA's importance scores read it after the all-reduce).
After a step hook that changes tensors outside the optimizer (masks, RAC-LoRA's folds and redrawn
factors) rank 0's learned tensors are broadcast, so the ranks never drift apart. Dropout draws differ
per rank (each its own stream), so with dropout the equivalence is statistical, without it exact up to
float summation order. Only rank 0 evaluates, holds the run's lock and writes the record, logs,
predictions and checkpoints; the others follow its decision to run or skip. A rank that fails writes
its error beside the record (`<key>.rank<r>.error`) before it exits; torchrun then stops the others,
and rank 0 records the run as failed with that error. A rank that vanishes without one (killed,
pre-empted) leaves the run `interrupted` with its checkpoint: the next launch continues from it. The
run key is the one-process run's (same config, same run); the record's provenance says `processes`.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(hours=2)  # collectives wait this long (rank 0 evaluates while the others wait)


def adopt_cluster_tasks() -> None:
    """Inside a submitit job of several tasks (`hydra/launcher=slurm hydra.launcher.tasks_per_node=N`, or
    submitit's local executor) every task runs the same run: torch's RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT are set from the job's environment, so the tasks are its ranks."""
    if "RANK" in os.environ:
        return
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        if JobEnvironment().num_tasks > 1:
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # ranks pick cuda:LOCAL_RANK
    except (ImportError, RuntimeError):  # not a submitit job
        return


def world() -> tuple[int, int]:
    """(rank, number of processes) of this run: torchrun's RANK and WORLD_SIZE, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return world()[1] > 1


def is_main() -> bool:
    return world()[0] == 0


def join() -> None:
    """Joins the process group, once per process: gloo for CPU tensors (and the run/skip decision), nccl
    for CUDA tensors where there are GPUs."""
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)


def set_up(device: torch.device) -> torch.device:
    """This rank's device (cuda:LOCAL_RANK on GPUs), in the process group."""
    if not is_distributed():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    join()
    return device


def agree(value):
    """Rank 0's `value` on every rank."""
    if not is_distributed():
        return value
    join()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_from_main(tensors: dict[str, torch.Tensor]) -> None:
    """Rank 0's values of `tensors` on every rank (in place)."""
    if is_distributed():
        for tensor in tensors.values():
            dist.broadcast(tensor.data, src=0)


LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def lost_peer(error: Exception) -> bool:
    """Whether `error` is a collective failing because another rank vanished (killed, pre-empted)."""
    return is_distributed() and (
        isinstance(error, dist.DistError)
        or (isinstance(error, RuntimeError) and any(m in str(error) for m in LOST_PEER))
    )


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The ranks' mean of `values` (each step's micro-batch losses: the logged loss is the global batch's)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= world()[1]
    return values


def my_share(micro_batches: list) -> list:
    """This rank's micro-batches of an optimizer step's grad_accum."""
    rank, size = world()
    return micro_batches[rank::size]
