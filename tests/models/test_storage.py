"""The frozen base's storage (harness/models/storage.py): bf16 and quantized (NF4, int8) bases.

A method on a quantized base must equal the same method on a full-precision base holding the de-quantised
weights (bitsandbytes' own de-quantisation for NF4, the int8 formula W = q·scale/127 written here): outputs and
gradients within 1e-5 (fp32; both compute x·Wᵀ with the same de-quantised W). A bf16 base under bf16 autocast is
within bf16 rounding of an fp32 base holding the bf16-rounded weights under the same autocast. The frozen bytes
follow from the storage's closed formulas.
"""

import math

import pytest
import torch
from torch import nn

from harness.config.sections import ModelConfig
from harness.errors import HarnessError
from harness.models.storage import BaseStorage, frozen_bytes, resolve_storage, store_frozen_base, train_in_fp32
from methods import METHODS, build_method, parse_method_config
from methods.capabilities import Capabilities
from methods.frozen import frozen_weight
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn
from tests.methods.test_invariants import CONFIGS, HEAD, for_images, method_node, perturb_trainable
from tests.training import LABELS

bnb = pytest.importorskip("bitsandbytes")

TEXT = [name for name in CONFIGS if not for_images(name)]
CPU = torch.device("cpu")


def dequantised(layer: nn.Module) -> torch.Tensor:
    """W of a quantized layer, independently of methods/frozen.py for int8 (NF4: bitsandbytes' own)."""
    weight = layer.weight
    if isinstance(layer, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    return weight.data.float() * weight.SCB[:, None] / 127


def with_biases(model: nn.Module) -> nn.Module:
    """The backbone's Linear layers with nonzero biases (BERT initialises them to 0, where a method that mishandles
    a quantized layer's bias would go unseen), and the queries with none (bias-free, as in Llama)."""
    generator = torch.Generator().manual_seed(3)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in HEAD:
            if name.endswith("attention.self.query"):
                module.bias = None
            else:
                module.bias.data = torch.randn(module.bias.shape, generator=generator) / 10
    return model


def quantized_and_twin(kind: str):
    """A tiny BERT with its backbone quantized, and the same BERT in fp32 holding the de-quantised weights (both
    with the biases of `with_biases`)."""
    quantized, twin = with_biases(tiny_bert()), with_biases(tiny_bert())
    store_frozen_base(quantized, BaseStorage("fp32", kind, None), HEAD, "tiny")
    for name, module in quantized.named_modules():
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            twin.get_submodule(name).weight.data = dequantised(module).clone()
    return quantized, twin


def applied(model, name: str):
    torch.manual_seed(100)
    method = build_method(model, method_node(name), HEAD)
    train_in_fp32(model)
    perturb_trainable(model)
    return method


def outputs_and_grads(model) -> tuple[torch.Tensor, dict]:
    model.train()
    torch.manual_seed(5)  # the same dropout masks
    logits = model(**tiny_batch()).logits
    nn.functional.cross_entropy(logits, LABELS[: logits.shape[0]]).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def declared(name: str):
    node = method_node(name)
    return METHODS[node.name].declared(parse_method_config(node))


# Refused on a quantized base (docs/running.md): full fine-tuning trains the weights, RAC-LoRA folds into them, LoRA-GA
# differentiates and rewrites them; the PEFT tuners that read the packed weight as a matrix, and PiSSA's and OLoRA's
# starts (an SVD or QR of W0).
REFUSED_ON_A_QUANTIZED_BASE = {
    "full",
    "rac_lora",
    "lora_ga",
    *("peft/c3a", "peft/hra", "peft/loha", "peft/lokr", "peft/tinylora", "peft/lora_pissa", "peft/lora_olora"),
}


def test_the_methods_refused_on_a_quantized_base_are_those_that_read_or_write_the_weight_as_a_matrix():
    assert {name for name in TEXT if not declared(name).quantizable} == REFUSED_ON_A_QUANTIZED_BASE


@pytest.mark.parametrize("kind", ["nf4", "int8"])
@pytest.mark.parametrize("name", TEXT)
def test_a_method_on_a_quantized_base_equals_it_on_the_dequantised_weights(name, kind):
    if name in REFUSED_ON_A_QUANTIZED_BASE:  # refused before the model loads
        with pytest.raises(HarnessError, match=f"model.quantize={kind}: method"):
            resolve_storage(model_section("fp32", kind), "auto", None, CPU, name, declared(name))
        return
    quantized, twin = quantized_and_twin(kind)
    applied(quantized, name), applied(twin, name)
    logits, grads = outputs_and_grads(quantized)
    expected_logits, expected_grads = outputs_and_grads(twin)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected_grads.keys() and grads
    for param, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[param], rtol=1e-5, atol=1e-5, msg=param)


def test_the_quantized_layers_are_the_backbones_linear_ones_and_the_head_stays():
    quantized, _ = quantized_and_twin("nf4")
    kinds = {name: type(module) for name, module in quantized.named_modules()}
    assert kinds["classifier"] is nn.Linear
    assert kinds["bert.encoder.layer.0.attention.self.query"] is bnb.nn.Linear4bit
    assert sum(kind is bnb.nn.Linear4bit for kind in kinds.values()) == 2 * 6 + 1  # 6 per layer, the pooler


def test_frozen_weight_is_the_dequantised_weight_close_to_the_original():
    """On a layer whose rows are whole blocks of 64 values: bitsandbytes' own CPU kernel on AVX512 machines
    de-quantises narrower rows (tiny_bert's) with blocks of its own, up to 107 % of a block's absmax away from the
    original (docs/running.md); W0 is then still what the layer computes with."""
    torch.manual_seed(0)
    quantized = nn.Sequential(nn.Linear(128, 48))
    original = quantized[0].weight.detach().clone()
    store_frozen_base(quantized, BaseStorage("fp32", "nf4", None), [], "one linear")
    layer = quantized[0]
    weight = frozen_weight(layer)
    assert weight.dtype == torch.float32 and torch.equal(weight, dequantised(layer))
    # NF4's widest gap between neighbouring levels is 0.304 of a block's absmax (-1 to -0.696): rounding errs by at
    # most half of it (0.152), and the double-quantised absmax by a little more (measured: at most 0.153)
    blocks = original.reshape(-1, 64).abs().amax(dim=1, keepdim=True)
    errors = (weight.reshape(-1, 64) - original.reshape(-1, 64)).abs() / blocks
    assert errors.max() <= 0.16 and errors.max() > 0.05


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_a_quantized_base_counts_its_values_not_its_packed_bytes(kind):
    """The record's parameter counts on a quantized base are those on the fp32 base: an NF4 weight holds two values
    per stored byte, and the backbone and total count values."""
    plain, quantized = tiny_bert(), tiny_bert()
    values = sum(param.numel() for param in plain.parameters())
    store_frozen_base(quantized, BaseStorage("fp32", kind, None), HEAD, "tiny")
    counts = build_method(plain, method_node("lora"), HEAD).param_counts()
    assert build_method(quantized, method_node("lora"), HEAD).param_counts() == counts
    assert counts["total"] == values + counts["adapter"]


def test_an_evaluation_forward_leaves_the_frozen_weight_as_it_was():
    """bitsandbytes would repack the 4-bit weight in place at the first forward in eval mode on a CPU with
    AVX512-BF16 (this machine's and maybe not CI's: on others the check holds trivially); W0 read after an
    evaluation, as a merge does, must be the one read before it."""
    torch.manual_seed(0)
    quantized = nn.Sequential(nn.Linear(128, 64))
    store_frozen_base(quantized, BaseStorage("fp32", "nf4", None), [], "one linear")
    before = frozen_weight(quantized[0])
    quantized.eval()
    with torch.no_grad():
        quantized(torch.randn(4, 128))
    assert torch.equal(frozen_weight(quantized[0]), before)


def nf4_bytes(values: int) -> int:
    """Packed 4-bit values, a uint8 scale per 64, an fp32 scale per 256 of those, the two code tables."""
    return values // 2 + values // 64 + 4 * math.ceil(values / 64 / 256) + 4 * (16 + 256)


def test_frozen_bytes_follow_the_storage():
    plain = with_biases(tiny_bert())  # the counts of the quantized model below
    for param in plain.parameters():
        param.requires_grad_(False)
    counts = {name: param.numel() for name, param in plain.named_parameters()}
    assert frozen_bytes(plain) == 4 * sum(counts.values())
    half = with_biases(tiny_bert())
    store_frozen_base(half, BaseStorage("bf16", None, torch.bfloat16), HEAD, "tiny")
    for param in half.parameters():
        param.requires_grad_(False)
    full = {name for name in counts if name.startswith("classifier") or "LayerNorm" in name}  # fp32: head, norms
    assert frozen_bytes(half) == 2 * sum(n for name, n in counts.items() if name not in full) + 4 * sum(
        counts[name] for name in full
    )
    assert half.bert.encoder.layer[0].output.LayerNorm.weight.dtype == torch.float32
    quantized, _ = quantized_and_twin("nf4")
    for param in quantized.parameters():
        param.requires_grad_(False)
    linear = {name for name, module in quantized.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    weights = [counts[f"{name}.weight"] for name in linear]
    others = sum(n for name, n in counts.items() if not (name.endswith(".weight") and name[:-7] in linear))
    assert frozen_bytes(quantized) == sum(nf4_bytes(n) for n in weights) + 4 * others


def test_bf16_storage_equals_fp32_holding_bf16_rounded_weights_under_bf16_autocast():
    stored, rounded = tiny_bert(), tiny_bert()
    store_frozen_base(stored, BaseStorage("bf16", None, torch.bfloat16), HEAD, "tiny")
    with torch.no_grad():
        for name, param in rounded.named_parameters():
            if not name.startswith("classifier") and "LayerNorm" not in name:  # norms stay fp32
                param.copy_(param.to(torch.bfloat16).float())
    assert stored.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    for model in (stored, rounded):
        applied(model, "lora")
    assert {p.dtype for p in stored.parameters() if p.requires_grad} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, grads = outputs_and_grads(stored)
        expected_logits, expected_grads = outputs_and_grads(rounded)
    # the matmuls see the same bf16 weights; the rest (embedding sums, LayerNorm, residuals) runs in bf16 on the stored
    # base and in fp32 on the other, and the roundings add up through the layers: within eight bf16 roundings (8 · 2^-8)
    # in norm, each tensor relative to its own norm (measured: logits 4e-3, gradients at most 1.9e-2)
    assert {grad.dtype for grad in grads.values()} == {torch.float32}
    for got, expected in [(logits, expected_logits), *((grads[name], expected_grads[name]) for name in grads)]:
        assert (got.float() - expected.float()).norm() <= 8 * 2**-8 * expected.float().norm()


def test_merging_on_a_quantized_base_dequantises_the_layer_and_keeps_the_outputs():
    quantized, _ = quantized_and_twin("nf4")
    method = applied(quantized, "lora")
    quantized.eval()
    before = quantized(**tiny_batch()).logits
    method.merge()
    layer = quantized.bert.encoder.layer[0].attention.self.query
    assert type(layer.base) is nn.Linear and layer.base.weight.dtype == torch.float32
    torch.testing.assert_close(quantized(**tiny_batch()).logits, before, rtol=1e-5, atol=1e-5)


def test_a_merged_quantized_layer_is_a_frozen_fp32_linear_with_the_merged_weight_and_its_bias_upcast():
    """On a bf16 NF4 base (its biases stored in bf16): each merged layer holds the update folded into the
    de-quantised W0 in fp32, keeps its own bias in fp32 (none where it had none: the queries), trains nothing."""
    model = with_biases(tiny_bert())
    store_frozen_base(model, BaseStorage("bf16", "nf4", torch.bfloat16), HEAD, "tiny")
    method = applied(model, "lora")
    attention = model.bert.encoder.layer[0].attention.self
    query, value = attention.query, attention.value
    expected = {name: layer.merged_weight().float() for name, layer in (("query", query), ("value", value))}
    stored_bias = value.base.bias.detach().clone()
    assert stored_bias.dtype == torch.bfloat16 and query.base.bias is None
    method.merge()
    for name, layer in (("query", query), ("value", value)):
        assert type(layer.base) is nn.Linear and layer.base.weight.dtype == torch.float32
        assert torch.equal(layer.base.weight, expected[name]) and not layer.base.weight.requires_grad
    assert query.base.bias is None
    assert value.base.bias.dtype == torch.float32 and torch.equal(value.base.bias, stored_bias.float())
    assert not value.base.bias.requires_grad


def model_section(dtype: str = "auto", quantize=None) -> ModelConfig:
    return ModelConfig(dtype=dtype, quantize=quantize)


@pytest.mark.parametrize(
    "dtype, quantize, precision, name, message",
    [
        ("bf16", None, "auto", "full", "trains the backbone, whose weights stay fp32"),
        ("fp32", "nf4", "auto", "full", "trains the backbone's weights"),
        ("fp32", "int8", "auto", "rac_lora", "writes into the frozen weights during training"),
        ("fp32", "nf4", "auto", "lora_ga", "rewrites or differentiates the frozen weights to start"),
        ("fp16", None, "auto", "lora", "model.dtype=fp16 needs a GPU"),
        ("bf16", None, "fp32", "lora", "train.precision=fp32 asks for fp32; use train.precision=auto or bf16"),
    ],
)
def test_what_cannot_run_is_one_line(dtype, quantize, precision, name, message):
    with pytest.raises(HarnessError, match=message):
        resolve_storage(model_section(dtype, quantize), precision, None, CPU, name, METHODS[name].capabilities)


def test_auto_is_fp32_on_a_cpu_and_autocast_follows_a_bf16_base():
    assert resolve_storage(model_section(), "auto", None, CPU, "lora", Capabilities()) == BaseStorage(
        "fp32", None, None
    )
    storage = resolve_storage(model_section("bf16", "nf4"), "auto", None, CPU, "lora", Capabilities())
    assert storage == BaseStorage("bf16", "nf4", torch.bfloat16)
    storage = resolve_storage(model_section("bf16"), "bf16", torch.bfloat16, CPU, "lora", Capabilities())
    assert storage.describe() == {"base_dtype": "bf16", "quantize": None, "autocast": "bf16"}


def test_a_model_without_linear_layers_in_its_backbone_cannot_be_quantized():
    with pytest.raises(HarnessError, match="has no linear layers in its backbone to quantize"):
        store_frozen_base(tiny_cnn(), BaseStorage("fp32", "nf4", None), HEAD, "tiny_cnn")


@pytest.mark.parametrize("name", TEXT)
def test_every_method_trains_on_a_bf16_base_with_fp32_trained_tensors(name):
    """A step's forward and backward under bf16 autocast on the CPU (whose LayerNorm refuses mixed dtypes: an fp32
    adapter output reaching a bf16 norm would fail here)."""
    model = tiny_bert()
    store_frozen_base(model, BaseStorage("bf16", None, torch.bfloat16), HEAD, "tiny")
    applied(model, name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, grads = outputs_and_grads(model)
    assert grads and {grad.dtype for grad in grads.values()} == {torch.float32}
    assert all(torch.isfinite(grad).all() for grad in grads.values())
