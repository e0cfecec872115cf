"""`+train.compile=true`: the model's forward, with every method layer inside it, compiled by torch.compile (inductor,
on the CPU and on GPUs). The module is compiled in place (`nn.Module.compile`), so its parameters, state dict,
checkpoints, saved adapters and trained-weights checksum are those of the eager model; the method's own work between
steps (AdaLoRA's allocation, RAC-LoRA's folds, dynamic DoRA's pruning) runs eagerly as before, and a change of
shape or of which tensors train is a recompile.

Compiled is not equal to eager bit for bit: inductor fuses and reorders floating-point work, and draws dropout masks
from its own random stream (not torch's), so a compiled run differs from the eager run from its first dropout on.
`train.compile` is therefore part of the run key (it is in the config only when set). tests/engine/test_compiled.py
holds every method's config to eager within 1e-5 through dynamo and AOTAutograd (dropout included), and LoRA and DoRA
on inductor's kernels without dropout within 1e-5 + 1e-4 relative (fp32).

Refused in one line: a run spread over processes (`fsdp=true` shards the model the compiled graph would read; data
parallel wraps it in DistributedDataParallel, whose bucketed all-reduce a compiled module has not been tested with).
"""

from torch import nn

from harness.errors import HarnessError

BACKEND = "inductor"


def refuse_compile(fsdp: bool, processes: int) -> None:
    """Before the model loads: the runs whose model the compiled forward cannot own."""
    if fsdp:
        raise HarnessError("train.compile=true with fsdp=true: a sharded model is not compiled; leave one of them off")
    if processes > 1:
        raise HarnessError(
            f"train.compile=true in a run over {processes} processes: data-parallel runs are not compiled; "
            "run one process or leave train.compile false"
        )


def compile_forward(model: nn.Module, backend: str | None = None) -> None:
    """`model`'s calls (training and evaluation forwards) go through torch.compile from now on; compiled at the
    first call of each kind (train or eval, with or without grad) and again, with dynamic shapes, when a batch's shape
    first changes. `backend`: torch.compile's (None: inductor, what runs use; the tests also use aot_eager)."""
    model.compile(backend=backend or BACKEND)
