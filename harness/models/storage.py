"""The frozen base's storage: `model.dtype` (fp32 | bf16 | fp16 | auto) and `model.quantize` (nf4 | int8 | null).

The model loads in fp32 as always; before the method applies, every backbone tensor (all but the task head and the
normalisation layers, which stay fp32 as in QLoRA's preparation of a model) is stored in the base dtype, and with
`quantize` every backbone nn.Linear becomes a bitsandbytes layer holding its weight in 4-bit NormalFloat (QLoRA's
NF4, blocks of 64 with double-quantised scales) or 8-bit rows (LLM.int8() without outliers, threshold 0).
bitsandbytes because it is what QLoRA, transformers and PEFT use: a PEFT tuner on its layers is PEFT's own QLoRA
path, and since 0.49 it runs on CPU, so the same code is tested here. The method then applies on that base and reads
W0 through methods/frozen.py (de-quantised, fp32). After it has applied, everything it trains is fp32
(`train_in_fp32`): the adapters, the head and any backbone tensor it unfroze; so is the optimizer's state. The
forward runs under autocast in the base's dtype (harness/engine/device.py).

`auto` is bf16 on CUDA GPUs that support it and fp32 elsewhere, and fp32 for a method that trains the backbone
(full fine-tuning keeps fp32 master weights); fp16 and bf16 need autocast in the same dtype, and fp16 a GPU.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import NORM_LAYERS, is_under
from methods.frozen import is_quantized

STORED = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HALF = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class BaseStorage:
    """How the run's frozen base is stored and computed: the resolved `model.dtype`, `model.quantize` and the
    autocast dtype (None: plain fp32)."""

    dtype: str
    quantize: Optional[str]
    autocast: Optional[torch.dtype]

    def describe(self) -> dict:
        """The record's provenance entry."""
        return {"base_dtype": self.dtype, "quantize": self.quantize, "autocast": HALF.get(self.autocast, "fp32")}


def resolve_storage(
    model, precision: str, autocast: Optional[torch.dtype], device: torch.device, method: str, capabilities
) -> BaseStorage:
    """The run's storage from its model section (`dtype`, `quantize`), `train.precision` with the autocast dtype it
    gave on `device` (None: plain fp32), and the method; one-line errors for what cannot run. A half-precision base
    computes under autocast in its dtype: `train.precision=auto` follows it, another precision is an error."""
    dtype, quantize = model.dtype, model.quantize
    if dtype == "auto":
        half_ok = device.type == "cuda" and torch.cuda.is_bf16_supported() and not capabilities.trains_backbone
        dtype = "bf16" if half_ok else "fp32"
    if dtype != "fp32" and capabilities.trains_backbone:
        raise HarnessError(
            f"model.dtype={dtype}: method '{method}' trains the backbone, whose weights stay fp32; use model.dtype=fp32"
        )
    if dtype == "fp16" and device.type == "cpu":
        raise HarnessError("model.dtype=fp16 needs a GPU; on CPU use fp32 or bf16")
    if quantize is not None and not capabilities.quantizable:
        raise HarnessError(
            f"model.quantize={quantize}: method '{method}' {quantized_refusal(capabilities)}; use model.quantize=null"
        )
    if dtype != "fp32" and precision == "auto":
        autocast = STORED[dtype]
    elif dtype != "fp32" and autocast != STORED[dtype]:
        raise HarnessError(
            f"model.dtype={dtype} computes under {dtype} autocast, and train.precision={precision} asks for "
            f"{HALF.get(autocast, 'fp32')}; use train.precision=auto or {dtype}"
        )
    return BaseStorage(dtype, quantize, autocast)


def quantized_refusal(capabilities) -> str:
    """Why a method cannot train on a quantized base."""
    if capabilities.trains_backbone:
        return "trains the backbone's weights, which a quantized base cannot hold"
    if capabilities.rewrites_frozen:
        return "writes into the frozen weights during training, which a quantized base cannot hold exactly"
    return "rewrites or differentiates the frozen weights to start, which it needs in full precision"


def store_frozen_base(model: nn.Module, storage: BaseStorage, head_modules: list[str], model_name: str) -> None:
    """Before the method applies: the backbone's tensors in the base dtype, its linear layers quantized."""
    dtype = STORED[storage.dtype]
    if dtype != torch.float32:
        for module_name, module in model.named_modules():
            if is_normalisation(module) or is_under(module_name, head_modules):
                continue
            for param in module.parameters(recurse=False):
                if param.is_floating_point():
                    param.data = param.data.to(dtype)
    if storage.quantize is not None:
        count = quantize_linears(model, storage.quantize, head_modules, storage.autocast or torch.float32)
        if count == 0:
            raise HarnessError(
                f"model.quantize={storage.quantize}: model '{model_name}' has no linear layers in its backbone to "
                "quantize (the text and decoder models have); use model.quantize=null"
            )


def is_normalisation(module: nn.Module) -> bool:
    """Normalisation layers keep fp32 weights on a half-precision base (as QLoRA's preparation does): a LayerNorm
    whose input an fp32 adapter output reaches would otherwise mix dtypes, which the CPU kernel refuses."""
    return isinstance(module, NORM_LAYERS) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def quantize_linears(model: nn.Module, kind: str, head_modules: list[str], compute_dtype: torch.dtype) -> int:
    """Every backbone nn.Linear replaced by its bitsandbytes layer (quantized here, on the CPU); the count."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise HarnessError(f"model.quantize={kind} needs bitsandbytes: pip install 'peft-harness[quantize]'") from None
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not is_under(name, head_modules)
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, quantized_linear(bnb, linear, kind, compute_dtype))
    return len(targets)


def quantized_linear(bnb, linear: nn.Linear, kind: str, compute_dtype: torch.dtype) -> nn.Module:
    """`linear`'s weight quantized (its bias kept as it is stored), frozen."""
    weight = linear.weight.data.float()
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=True)
        # On a CPU with AVX512-BF16, bitsandbytes (0.49, 0.50) repacks a 4-bit weight in place for its own kernel at
        # the first forward in eval mode: a layout dequantize_4bit does not read (W0 in methods/frozen.py would be
        # wrong after an evaluation), and one it cannot build for a layer narrower than a block of 64 inputs.
        layer.support_avx512bf16_for_cpu = False
    else:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=False,
            threshold=0.0,
            device="meta",
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return layer.to(linear.weight.device)  # bitsandbytes quantizes as the layer moves to its device


def train_in_fp32(model: nn.Module) -> None:
    """After the method applies: every trained tensor (requires_grad) in fp32, the master weights the optimizer
    steps; the frozen ones stay as stored."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in HALF:
            param.data = param.data.float()


def frozen_bytes(model: nn.Module) -> int:
    """Bytes the frozen tensors hold (quantized weights with their scales and the de-quantisation tables)."""
    total = 0
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                continue
            total += param.numel() * param.element_size()
            if is_quantized(module):
                total += state_bytes(param)
    return total


def state_bytes(weight) -> int:
    """The bytes of a quantized weight's side tensors (NF4: absmax, its own scales and code; int8: row scales)."""
    state = getattr(weight, "quant_state", None)
    tensors = [getattr(weight, "SCB", None)]
    while state is not None:
        tensors += [state.absmax, state.code]
        state = getattr(state, "state2", None)
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
