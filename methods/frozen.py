"""The frozen base layer as the methods read it, whatever its storage (`model.dtype`, `model.quantize`:
harness/models/storage.py): the base may hold its weight in bf16 or fp16, or quantized by bitsandbytes (NF4 or
int8, packed into uint8 / int8 with their scales beside them).

Methods never read `base.weight` for their math or take its dtype for the tensors they train:
- `frozen_weight(base)` is W0 in fp32 (de-quantised, or upcast from half precision; float64 stays float64, the
  precision of the reference tests), for the math that needs W0 itself (DoRA's norm, LoRA-XS's SVD, merges);
- `trained_factory(base)` is the dtype and device of a trained tensor beside it: fp32 (float64 where the base is
  float64), on the base's device.
"""

import torch
from torch import nn

FULL_PRECISION = (torch.float32, torch.float64)


def is_quantized(base: nn.Module) -> bool:
    """Whether the layer's weight is a bitsandbytes quantized tensor (Params4bit or Int8Params)."""
    weight = getattr(base, "weight", None)
    return weight is not None and type(weight).__name__ in ("Params4bit", "Int8Params")


def parameter_count(param: torch.Tensor) -> int:
    """The number of values a parameter holds: a 4-bit weight's own shape, not its packed bytes'."""
    state = getattr(param, "quant_state", None)
    return state.shape.numel() if state is not None else param.numel()


def frozen_weight(base: nn.Module) -> torch.Tensor:
    """W0 of a linear (or conv) layer in full precision, detached: de-quantised for a quantized layer."""
    weight = base.weight
    if is_quantized(base):
        import bitsandbytes.functional as quantization  # only a quantized base has it installed

        if type(weight).__name__ == "Params4bit":
            return quantization.dequantize_4bit(weight.data, weight.quant_state).float().detach()
        return quantization.int8_vectorwise_dequant(weight.data, weight.SCB).float().detach()
    weight = weight.detach()
    return weight if weight.dtype in FULL_PRECISION else weight.float()


def trained_dtype(base: nn.Module) -> torch.dtype:
    """fp32 for the tensors a method trains beside `base` (float64 beside a float64 base)."""
    dtype = base.weight.dtype
    return dtype if dtype in FULL_PRECISION and not is_quantized(base) else torch.float32


def trained_factory(base: nn.Module) -> dict:
    """`dtype` and `device` keywords for a trained tensor beside `base`."""
    return {"dtype": trained_dtype(base), "device": base.weight.device}
