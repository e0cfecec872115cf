"""The method interface's shared rules (methods/base.py, methods/registry.py, methods/lowrank.py):
bias and normalisation-layer naming, BatchNorm handling, state loading errors, the registry's
errors, the LoRA-family config checks and the additive wrapper."""

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import Method, MethodConfig, is_bias
from methods.lora import Lora, LoraConfig
from methods.lowrank import AdditiveLayer, LowRankConfig, scaled
from methods.projection import Projection, ProjectionConfig
from methods.registry import METHODS, parse_method_config, register
from tests.conftest import tiny_bert, tiny_cnn, tiny_images

HEAD = ["classifier"]


# -- is_bias: HF Trainer's rule on the last part of the name ---------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bias", True),  # a top-level parameter (no dot)
        ("classifier.bias", True),
        ("encoder.layer.0.output.dense.bias", True),
        ("x.lora_bias", True),  # "bias" anywhere in the last part
        ("bias_proj.weight", False),  # "bias" only in a module name
        ("encoder.bias_net.weight", False),
        ("encoder.bias net.weight", False),  # not split on whitespace
        ("a.bias.b.weight", False),
        ("weight", False),
    ],
)
def test_is_bias_reads_only_the_last_dotted_part(name, expected):
    assert is_bias(name) is expected


# -- head modules, target errors ---------------------------------------------------------------------------


def test_missing_head_module_is_an_error_naming_the_top_level_modules():
    model = tiny_bert()
    expected = (
        "head modules ['nohead', 'classifier.x'] not found in the model; top-level modules: ['bert', 'dropout', "
        "'classifier']"
    )
    with pytest.raises(HarnessError) as error:
        Method(model, MethodConfig(), ["nohead", "classifier", "classifier.x"])
    assert str(error.value) == expected


def test_unmatched_target_error_names_the_method():
    with pytest.raises(HarnessError) as error:
        Lora(tiny_bert(), LoraConfig(targets=["nomatch"]), HEAD)
    linear = (
        "bert.encoder.layer.<n>.attention.self.query, bert.encoder.layer.<n>.attention.self.key, "
        "bert.encoder.layer.<n>.attention.self.value, bert.encoder.layer.<n>.attention.output.dense, "
        "bert.encoder.layer.<n>.intermediate.dense, bert.encoder.layer.<n>.output.dense, bert.pooler.dense"
    )
    assert (
        str(error.value) == f"lora: target pattern 'nomatch' matches no Linear/Conv2d module; the model has: {linear}"
    )


# -- BatchNorm: train mode, learned tensors, weight decay -------------------------------------------------


class NormWithChild(nn.BatchNorm1d):
    """A BatchNorm subclass that owns a child module: the rules read only the layer's own tensors."""

    def __init__(self, n):
        super().__init__(n)
        self.extra = nn.Linear(n, n)
        self.extra.register_buffer("counter", torch.zeros(1))


class ChildNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = NormWithChild(4)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x):
        return self.classifier(self.norm(x) + self.norm.extra(x))


def test_frozen_norm_with_a_trained_child_stays_in_eval_and_saves_no_statistics():
    model = ChildNet()
    method = Method(model, MethodConfig(), HEAD)
    model.norm.extra.weight.requires_grad_(True)  # the child trains, the norm's own tensors do not
    method.train_mode()
    assert not model.norm.training and model.classifier.training
    assert set(method.learned_tensors()) == set()
    # the child's weight is not a normalisation-layer parameter: it is decayed
    assert method.undecayed() == {"classifier.bias"}


def test_trained_norm_saves_its_own_buffers_only():
    model = ChildNet()
    method = Method(model, MethodConfig(), HEAD)
    model.norm.weight.requires_grad_(True)
    method.train_mode()
    assert model.norm.training
    assert set(method.learned_tensors()) == {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}
    assert method.undecayed() == {"classifier.bias", "norm.weight"}


def test_frozen_batchnorm_statistics_are_not_learned_tensors():
    method = Projection(tiny_cnn(), ProjectionConfig(), HEAD)
    assert method.learned_tensors() == {}
    trained = Projection(tiny_cnn(), ProjectionConfig(train_bn=True), HEAD)
    assert set(trained.learned_tensors()) == {
        f"backbone.{i}.{b}" for i in (1, 4) for b in ("running_mean", "running_var", "num_batches_tracked")
    }


def test_a_root_norm_layer_parameters_are_not_decayed():
    model = nn.LayerNorm(4)
    method = Method(model, MethodConfig(), [])
    for param in model.parameters():
        param.requires_grad_(True)
    assert method.undecayed() == {"weight", "bias"}


# -- loading state -------------------------------------------------------------------------------------------


def test_load_state_errors_list_the_first_five_names():
    method = Lora(tiny_bert(), LoraConfig(targets=["query", "value"]), HEAD)
    state = method.trainable_state_dict()
    extra = {**state, **{f"x{i}": torch.zeros(1) for i in range(7)}}
    with pytest.raises(HarnessError) as error:
        method.load_trainable_state_dict(extra)
    assert str(error.value) == "state holds tensors this method does not learn: ['x0', 'x1', 'x2', 'x3', 'x4']"
    names = sorted(state)
    assert len(names) > 6
    with pytest.raises(HarnessError) as error:
        method.load_trainable_state_dict({n: state[n] for n in names[6:]})
    assert str(error.value) == f"state lacks tensors this method learns: {names[:5]}"


# -- registry ----------------------------------------------------------------------------------------------

KNOWN = "adalora, dora, dora_dynamic, full, head, lora, lora_xs, lorta, melora, projection, rac_lora, surm"


def test_unknown_method_error_lists_the_methods():
    assert ", ".join(sorted(METHODS)).startswith("adalora, aurora, dora")
    with pytest.raises(HarnessError) as error:
        METHODS["nope"]
    assert str(error.value) == f"unknown method 'nope'; available: {', '.join(sorted(METHODS))}"
    assert set(KNOWN.split(", ")) <= set(METHODS)


def test_method_section_without_a_name_or_none_is_an_unknown_method():
    with pytest.raises(HarnessError) as error:
        parse_method_config(None)
    assert str(error.value) == f"unknown method 'None'; available: {', '.join(sorted(METHODS))}"


def test_method_section_errors_are_prefixed_with_method():
    with pytest.raises(HarnessError) as error:
        parse_method_config({"name": "head", "bogus": 1})
    assert str(error.value) == "method: unknown key 'bogus'; allowed keys: name, targets, lr, head_lr, variant"


def test_register_adds_the_class_under_its_name():
    class Dummy(Method):
        name = "dummy_registered_in_a_test"

    try:
        assert register(Dummy) is Dummy
        assert METHODS["dummy_registered_in_a_test"] is Dummy and "dummy_registered_in_a_test" in METHODS
        with pytest.raises(HarnessError) as error:
            register(Dummy)
        assert str(error.value) == "method 'dummy_registered_in_a_test' is registered twice"
    finally:
        METHODS.entries.pop("dummy_registered_in_a_test", None)


# -- LowRankConfig checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"r": 0}, "method.r must be a positive rank, got 0"),
        ({"r": -1}, "method.r must be a positive rank, got -1"),
        ({"alpha": 0.0}, "method.alpha must be > 0, got 0.0"),
        ({"alpha": -2.0}, "method.alpha must be > 0, got -2.0"),
        ({"dropout": 1.0}, "method.dropout must be in [0, 1), got 1.0"),
        ({"dropout": 1.5}, "method.dropout must be in [0, 1), got 1.5"),
        ({"dropout": -0.1}, "method.dropout must be in [0, 1), got -0.1"),
    ],
)
def test_low_rank_config_bounds(settings, message):
    with pytest.raises(HarnessError) as error:
        LowRankConfig(**settings)
    assert str(error.value) == message


def test_low_rank_config_accepts_the_bounds_inside():
    cfg = LowRankConfig(r=1, alpha=1e-9, dropout=0.0)
    assert (cfg.r, cfg.alpha, cfg.dropout) == (1, 1e-9, 0.0)
    assert LowRankConfig(dropout=0.999).dropout == 0.999


# -- scaled and the additive wrapper -------------------------------------------------------------------


def test_scaled_skips_the_pass_when_scaling_is_one():
    update = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    assert scaled(update, 1) is update  # no pass, not even a copy (nor a dtype change)
    assert scaled(update, 1.0) is update
    doubled = scaled(update.double(), 2.0)
    assert torch.equal(doubled, torch.tensor([[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]], dtype=torch.float64))


def test_zero_dropout_adds_no_dropout_module_as_in_peft():
    """PEFT's LoRA uses nn.Identity for lora_dropout=0; so does the wrapper (no Dropout module)."""
    layer = AdditiveLayer(nn.Linear(3, 2), 0.0)
    assert isinstance(layer.dropout, nn.Identity)
    assert not any(isinstance(m, nn.Dropout) for m in layer.modules())
    dropping = AdditiveLayer(nn.Linear(3, 2), 0.25)
    assert isinstance(dropping.dropout, nn.Dropout) and dropping.dropout.p == 0.25


# -- projection gates follow the base weight's dtype and device -----------------------------------------------


def test_projection_gates_in_float64_and_on_meta():
    model = tiny_cnn().double()
    method = Projection(model, ProjectionConfig(), HEAD)
    assert {layer.gates.dtype for layer in method.layers.values()} == {torch.float64}
    x = tiny_images()["pixel_values"].double()
    reference = tiny_cnn().double()
    assert torch.equal(model(pixel_values=x).logits, reference(pixel_values=x).logits)
    meta = Projection(tiny_cnn().to("meta"), ProjectionConfig(), HEAD)
    assert {layer.gates.device.type for layer in meta.layers.values()} == {"meta"}


def test_projection_on_a_bfloat16_base_trains_fp32_gates_and_runs_under_bf16_autocast():
    model = tiny_cnn().to(torch.bfloat16)
    method = Projection(model, ProjectionConfig(), HEAD)
    assert {layer.gates.dtype for layer in method.layers.values()} == {torch.float32}  # trained: fp32 (frozen.py)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a run on a bf16 base computes
        out = model(pixel_values=tiny_images()["pixel_values"]).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
