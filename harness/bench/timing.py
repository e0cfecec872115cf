"""One contender being timed: a method on its own copy of the model, stepped through the training loop's
own step (`harness.engine.train.StepRunner`: forward, task + extra loss, backward, clip, optimizer step, the
method's step hook, zero_grad), its seconds per step and peak memory kept; then the activation memory
autograd saves for one backward and the optimizer state's size."""

import gc
import time

import torch
from torch import nn

from harness.bench.contenders import contender_capabilities, contender_method, head_of, split_label, uncompiled
from harness.config.sections import ModelConfig, TrainConfig
from harness.engine.compiled import compile_forward
from harness.engine.device import autocast_dtype
from harness.engine.memory import current_mb, read_peak, reset_peak
from harness.engine.recompute import recompute_activations, refuse_method
from harness.engine.schedule import build_optimizer
from harness.engine.train import StepRunner
from harness.models.storage import frozen_bytes, resolve_storage, store_frozen_base, train_in_fp32
from methods import METHODS
from methods.base import Method
from optimizers import check_applies, optimizer_rule, parse_optimizer_config


def saved_activations_mb(contender: "Contender", batch: dict) -> float:
    """Bytes autograd keeps for the backward pass of one training forward under the step's autocast (each storage
    counted once): the activation memory a method costs, the same on every device."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    contender.method.train_mode()
    dtype = contender.dtype
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast(contender.device.type, dtype=dtype, enabled=dtype is not None),  # as the step runs it
    ):
        loss = contender.method.model(**batch).loss
        extra = contender.method.extra_loss()
        if extra is not None:
            loss = loss + extra
    del loss
    return sum(storages.values()) / 2**20


def optimizer_state_mb(optimizer: torch.optim.Optimizer) -> float:
    return (
        sum(
            t.numel() * t.element_size()
            for state in optimizer.state.values()
            for t in state.values()
            if torch.is_tensor(t)
        )
        / 2**20
    )


class Contender:
    """One method on its own copy of the model, ready to step."""

    def __init__(
        self,
        label: str,
        model: nn.Module,
        method: Method,
        batch: dict,
        device,
        dtype,
        total_steps: int,
        absolute_peak: bool = False,
        optimizer_cfg=None,
    ):
        self.label, self.model, self.method = label, model.to(device), method
        self.batch, self.device, self.dtype, self.absolute_peak = batch, device, dtype, absolute_peak
        train = TrainConfig(lr=1e-4, head_lr=1e-4, schedule="constant", warmup_ratio=0.0)
        optimizer, scheduler = build_optimizer(method, train, optimizer_cfg, 0, total_steps)  # the loop's builder
        method.start(total_steps, optimizer)
        self.step = StepRunner(method.model, method, optimizer, scheduler, device, dtype, train.max_grad_norm)
        self.trainable = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
        self.frozen_mb = frozen_bytes(model) / 2**20
        self.seconds: list[float] = []
        self.peak_mb = 0.0
        self.activations_mb = self.optimizer_mb = 0.0
        self.done = 0

    def run(self, steps: int, timed: bool) -> None:
        """`steps` training steps on the batch; with `timed`, their seconds are kept. The peak memory
        is the process's (own process) or above the memory in use before the steps (shared process)."""
        device = self.device
        gc.collect()
        before = 0.0 if self.absolute_peak else current_mb(device)
        reset_peak(device)
        for _ in range(steps):
            self.done += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            self.step(self.done, [self.batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if timed:
                self.seconds.append(time.perf_counter() - started)
        self.peak_mb = max(self.peak_mb, read_peak(device)["peak_memory_mb"] - before)

    def finish(self) -> None:
        """Activation and optimizer-state sizes."""
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        self.activations_mb = saved_activations_mb(self, batch)
        self.optimizer_mb = optimizer_state_mb(self.step.optimizer)


def build_contender(
    model: nn.Module,
    label: str,
    batch: dict,
    device,
    precision: str,
    total_steps: int,
    absolute_peak: bool = False,
    model_name: str = "minilm",
    checkpointed: bool = False,
    base: tuple[str, str | None] = ("auto", None),
    backend: str | None = None,
) -> Contender:
    """`label`'s method applied to `model` (changed in place), ready to step with its optimizer (`lora+lorafa`:
    LoRA-FA; harness/bench/contenders.py split_label), on the frozen base stored as `base` says (model.dtype,
    model.quantize: harness/models/storage.py) and under `precision`'s autocast, the model's blocks recomputed in the
    backward where `checkpointed` (harness/engine/recompute.py); `lora@compiled`: its forward compiled by `backend`
    (None: inductor; harness/engine/compiled.py)."""
    built, compiled = uncompiled(label)
    method_name, optimizer = split_label(built)
    capabilities = contender_capabilities(built, model_name)
    section = ModelConfig(name=model_name, dtype=base[0], quantize=base[1])
    storage = resolve_storage(section, precision, autocast_dtype(precision, device), device, method_name, capabilities)
    if checkpointed:
        refuse_method(method_name, capabilities)
        recompute_activations(model, model_name)
    store_frozen_base(model, storage, head_of(model_name), model_name)
    optimizer_cfg = None if optimizer is None else parse_optimizer_config({"name": optimizer})
    method = contender_method(model, built, total_steps, model_name)
    train_in_fp32(model)
    if optimizer_cfg is not None:
        check_applies(optimizer_cfg.name, method.name, METHODS)
        optimizer_rule(optimizer_cfg).prepare(method)
    if compiled:
        compile_forward(method.model, backend)
    return Contender(label, model, method, batch, device, storage.autocast, total_steps, absolute_peak, optimizer_cfg)
