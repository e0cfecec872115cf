"""Sharded runs: `fsdp=true` in a data-parallel run (torchrun, harness/engine/distributed.py) shards the frozen
backbone over the ranks with FSDP2 (torch's `fully_shard`), for models whose weights do not fit one device.

Sharding units: every block of the model (each child of its outermost ModuleLists: transformer layers)
and the model itself for the rest (embeddings, final norm, LM head). Each rank holds 1/N of every frozen
parameter; a unit gathers its weights for its forward (and again for its backward) and frees them after.
The trained tensors (adapters, task head, any parameter with requires_grad) are left out of the units
(`ignored_params`): every rank holds them whole, and their gradients are averaged over the ranks after
the step's last micro-batch (one all-reduce, as DDP does). So the optimizer, gradient clipping, the
methods' step hooks (AdaLoRA's and dynamic DoRA's scores read the averaged gradients), the checksum,
checkpoints and saved adapters see plain tensors, and the run is the data-parallel run of the same
config: same run key, same data order, weights equal up to float summation order. Every rank runs the
evaluations (each forward gathers the shards); rank 0 keeps their results and writes the record.

Layers that read their frozen weight inside their own forward (DoRA's column norm of W0 + ΔW, model
projection's gated filters) read it gathered, since the weight's unit is gathered for the whole forward
of its block. Refused, with one line: a run of one process (nothing to shard over); methods that train
every weight (full: nothing frozen to shard; use DDP, `fsdp=false`); methods that change frozen weights
during training (RAC-LoRA folds each link into W0); methods that initialise from the gradients of the
frozen weights (LoRA-GA: each rank would need every whole weight and its gradient at once); a quantized base
(model.quantize: bitsandbytes' packed tensors are not sharded).
"""

import torch
import torch.distributed as dist
from torch import nn

from harness.engine import distributed
from harness.errors import HarnessError
from methods.base import Method
from methods.frozen import is_quantized


def refusal(method: Method) -> str | None:
    """Why `method` cannot train with its frozen backbone sharded, or None."""
    if distributed.world()[1] < 2:
        return (
            "fsdp=true shards the frozen weights over the processes of a torchrun run "
            "(torchrun --nproc_per_node N -m harness ... fsdp=true); this run has one process"
        )
    capabilities = method.capabilities
    if capabilities.trains_backbone:
        return (
            f"fsdp=true shards the frozen weights, and method '{method.name}' trains every weight; run it with "
            "fsdp=false (data-parallel)"
        )
    if capabilities.rewrites_frozen:
        return (
            f"method '{method.name}' changes frozen weights during training (folds into W0), which fsdp=true keeps "
            "sharded; run it with fsdp=false"
        )
    if capabilities.needs_data_at_init:
        return (
            f"method '{method.name}' initialises from the gradients of every frozen weight, which fsdp=true keeps "
            "sharded; run it with fsdp=false"
        )
    if any(is_quantized(module) for module in method.model.modules()):
        return (
            "model.quantize packs the frozen weights in bitsandbytes' own tensors, which fsdp=true does not shard; "
            "run it with fsdp=false (data-parallel) or model.quantize=null"
        )
    if capabilities.restructures:
        return (
            f"method '{method.name}' restructures the model and calls parts of its blocks outside their forward, "
            "where fsdp=true gathers the shards; run it with fsdp=false"
        )
    return None


def units(model: nn.Module) -> list[nn.Module]:
    """The model's blocks: the children of its outermost ModuleLists."""
    blocks, taken = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(prefix) for prefix in taken):
            taken.append(f"{name}.")
            blocks += list(module)
    return blocks


def shard(method: Method, device: torch.device) -> None:
    """Shards the frozen weights of `method.model` over the run's ranks on `device`; the trained tensors
    stay whole on every rank, rank 0's values (the ranks built them from the same seed)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    reason = refusal(method)
    if reason is not None:
        raise HarnessError(reason)
    model = method.model
    trained = {p for p in model.parameters() if p.requires_grad}
    mesh = init_device_mesh(device.type, (distributed.world()[1],))
    for block in units(model):
        fully_shard(block, mesh=mesh, ignored_params=trained)
    fully_shard(model, mesh=mesh, ignored_params=trained)
    for module in model.modules():  # fully_shard placed the shards on the device; the rest follows
        for param in module.parameters(recurse=False):
            if param in trained:
                param.data = param.data.to(device)
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)
    distributed.share_from_main(method.state_tensors())


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def average_gradients(params: list[torch.Tensor]) -> None:
    """The ranks' mean of the gradients of `params` (the whole trained tensors of a sharded run), in one
    all-reduce per dtype; parameters without a gradient (unused on every rank alike) are left as they are."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for param in params:
        if param.grad is not None:
            groups.setdefault((param.grad.dtype, param.grad.device), []).append(param.grad)
    for grads in groups.values():
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= distributed.world()[1]
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
