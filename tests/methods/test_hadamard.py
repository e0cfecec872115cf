"""Hadamard adapter: the dense reference of each side (W^O diag(W), b^O + W^O b; diag(W) W^O, W ⊙ b^O + b) and the
whole model's forward rebuilt from it, the LayerNorm beside each projection trained, the head-only first phase
(gradients, AdamW state, checkpoints), closed-form counts, BERT-base's 0.033 %, and every refusal."""

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from harness.errors import HarnessError
from methods import METHODS
from methods.hadamard import HadamardConfig, HadamardLinear
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn
from tests.methods.references import FFN_OUT, HEAD, build, check_adapter_count, effective_weight, message, trained
from tests.training import LABELS, settings, train_steps

O_NAMES = [f"bert.encoder.layer.{i}.attention.output.dense" for i in (0, 1)]
FFN_NAMES = [f"bert.encoder.layer.{i}.output.dense" for i in (0, 1)]


def biased_bert(seed: int = 0):
    """The tiny BERT with random biases (BERT initialises them to 0, where W ⊙ b^O = b^O could not be told apart)."""
    model = tiny_bert(seed=seed)
    generator = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    return model


def reference(side: str, w0, b0, w, b):
    """The projection's weight and bias with the adapter folded in, from the paper's A' = W ⊙ A + b."""
    if side == "input":  # y = (w ⊙ x + b) W0ᵀ + b0
        return w0 @ torch.diag(w), b0 + torch.mv(w0, b)
    return torch.diag(w) @ w0, w * b0 + b  # y = w ⊙ (x W0ᵀ + b0) + b


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("targets, names", [(["attention.output.dense"], O_NAMES), ([FFN_OUT], FFN_NAMES)])
def test_each_projection_is_the_papers_affine_folded_into_w_o_before_and_after_merging(side, targets, names):
    original, model, method = trained(
        "hadamard", steps=4, model_fn=biased_bert, side=side, targets=targets, head_phase=0.0
    )
    assert sorted(method.layers) == names
    expected = {}
    for name, layer in method.layers.items():
        base = original.get_submodule(name)
        w, b = model.get_parameter(f"{name}.hadamard_weight"), model.get_parameter(f"{name}.hadamard_bias")
        assert not torch.equal(w, torch.ones_like(w)) and not torch.equal(b, torch.zeros_like(b))  # trained
        expected[name] = reference(side, base.weight.detach(), base.bias.detach(), w.detach(), b.detach())
        zero = torch.zeros(1, base.in_features, dtype=torch.float64)
        assert torch.allclose(effective_weight(layer, base.in_features), expected[name][0], atol=1e-10)
        assert torch.allclose(layer(zero)[0], expected[name][1], atol=1e-10)
    method.merge()
    for name, layer in method.layers.items():
        assert torch.allclose(layer.base.weight, expected[name][0], atol=1e-10), f"{name}: merged weight"
        assert torch.allclose(layer.base.bias, expected[name][1], atol=1e-10), f"{name}: merged bias"


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_bias_less_projection_of_one_input_feature_folds_the_papers_affine(side):
    """d_in = 1 (W^O a single column) without b^O: the merged bias is the reference's with b^O = 0."""
    base = torch.nn.Linear(1, 3, bias=False, dtype=torch.float64)
    layer = HadamardLinear(base, side)
    size = 1 if side == "input" else 3
    with torch.no_grad():
        layer.hadamard_weight.copy_(torch.linspace(0.5, 2.0, size, dtype=torch.float64))
        layer.hadamard_bias.copy_(torch.linspace(-1.0, 3.0, size, dtype=torch.float64))
    w0 = base.weight.detach().clone()
    weight, bias = reference(side, w0, torch.zeros(3, dtype=torch.float64), layer.hadamard_weight, layer.hadamard_bias)
    assert torch.allclose(layer.merged_bias(), bias, atol=1e-12)
    assert torch.allclose(layer.merged_weight(), weight, atol=1e-12)
    x = torch.tensor([[0.7], [-1.3]], dtype=torch.float64)
    assert torch.allclose(layer(x), x @ weight.T + bias, atol=1e-12)


@pytest.mark.parametrize("side", ["input", "output"])
def test_the_model_is_the_pretrained_one_with_the_reference_projections_and_the_trained_layernorms(side):
    """Every trained tensor read by name into a pristine copy: same logits, so nothing else moved or acts."""
    original, model, _ = trained("hadamard", steps=4, model_fn=biased_bert, side=side, head_phase=0.0)
    trained_norms = [f"bert.encoder.layer.{i}.attention.output.LayerNorm" for i in (0, 1)]
    with torch.no_grad():
        for name in O_NAMES:
            base = original.get_submodule(name)
            w, b = model.get_parameter(f"{name}.hadamard_weight"), model.get_parameter(f"{name}.hadamard_bias")
            weight, bias = reference(side, base.weight.clone(), base.bias.clone(), w, b)
            base.weight.copy_(weight)
            base.bias.copy_(bias)
        for name in [*trained_norms, "classifier"]:
            for tensor in ("weight", "bias"):
                trained_tensor = model.get_parameter(f"{name}.{tensor}")
                assert not torch.equal(original.get_parameter(f"{name}.{tensor}"), trained_tensor), f"{name} trained"
                original.get_parameter(f"{name}.{tensor}").copy_(trained_tensor)
    batch = tiny_batch(seed=9)
    assert torch.allclose(original(**batch).logits, model(**batch).logits, atol=1e-10)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(f"{n}.hadamard_{t}" for n in O_NAMES for t in ("weight", "bias")),
        *(f"{n}.{t}" for n in [*trained_norms, "classifier"] for t in ("weight", "bias")),
    }


def test_outputs_are_bitwise_the_pretrained_models_at_init_on_both_sides():
    batch = tiny_batch()
    expected = tiny_bert()(**batch).logits
    for side in ("input", "output"):
        model = tiny_bert()
        METHODS["hadamard"](model, HadamardConfig(side=side), HEAD)
        assert torch.equal(model(**batch).logits, expected)


# -- the head-only first phase -------------------------------------------------------------------------
def phase_run(total: int, steps: int, **values):
    """`steps` steps of a `total`-step run; per step the gradients after backward (before the step) and after
    optimizer.step(), and whether each tensor moved, for the adapter/LayerNorm tensors and the head."""
    _, model, method = build("hadamard", **values)
    optimizer = torch.optim.AdamW(method.param_groups(settings(lr=1e-2, weight_decay=0.5)))
    method.start(total, optimizer)
    adapter = dict(method.named_adapter_parameters())
    head = dict(method.named_head_parameters())
    seen = []
    for step in range(1, steps + 1):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        method.train_mode()
        model(**tiny_batch(seed=step), labels=LABELS).loss.backward()
        backward = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        optimizer.step()
        stepped = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        moved = {n: not torch.equal(before[n], p) for n, p in model.named_parameters()}
        method.on_step_end(step)
        optimizer.zero_grad()
        seen.append((backward, stepped, moved))
    return method, optimizer, adapter, head, seen


def resting_in(names, backward, stepped, moved) -> bool:
    """Zero gradients after backward (clipping measures the others), none at the step, not moved (the tensors are
    decayed at 0.5 or undecayed: either way AdamW skipped them)."""
    return all(torch.count_nonzero(backward[n]) == 0 and stepped[n] is None and not moved[n] for n in names)


def training_in(names, backward, stepped, moved) -> bool:
    return all(torch.count_nonzero(backward[n]) > 0 and stepped[n] is not None and moved[n] for n in names)


def test_the_first_floor_of_head_phase_times_the_steps_train_the_head_only_then_everything():
    method, optimizer, adapter, head, seen = phase_run(total=7, steps=4, head_phase=0.3)  # ⌊2.1⌋ = 2 head steps
    assert method.head_steps == 2 and len(adapter) == 8
    for step, (backward, stepped, moved) in enumerate(seen, 1):
        assert training_in(head, backward, stepped, moved), step
        if step <= 2:
            assert resting_in(adapter, backward, stepped, moved), step
        else:
            assert training_in(adapter, backward, stepped, moved), step
    assert not any(moved[n] for n in moved if n not in adapter and n not in head)  # the backbone stays frozen
    assert all(optimizer.state[p]["step"] == 2 for p in adapter.values())  # Adam's state began at the switch
    assert all(optimizer.state[p]["step"] == 4 for p in head.values())


def test_a_single_head_step_rests_the_adapter_at_step_1_only():
    method, optimizer, adapter, head, seen = phase_run(total=10, steps=2, head_phase=0.1)  # ⌊1.0⌋ = 1 head step
    assert method.head_steps == 1
    assert resting_in(adapter, *seen[0]) and training_in(head, *seen[0])
    assert training_in(adapter, *seen[1]) and training_in(head, *seen[1])
    assert method.total_steps == 10 and method.optimizer is optimizer  # recorded by start, as every method's


def test_head_after_false_freezes_the_head_once_the_adapter_trains():
    _, optimizer, adapter, head, seen = phase_run(total=4, steps=4, head_phase=0.5, head_after=False)
    for step, (backward, stepped, moved) in enumerate(seen, 1):
        training, resting = (head, adapter) if step <= 2 else (adapter, head)
        assert training_in(training, backward, stepped, moved), step
        assert resting_in(resting, backward, stepped, moved), step  # the head's weight, decayed, did not move
    assert all(optimizer.state[p]["step"] == 2 for p in [*adapter.values(), *head.values()])


def test_head_phase_lengths_and_no_phase_without_a_start():
    for head_phase, total, steps in ((0.1, 4, 0), (0.1, 10, 1), (0.1, 19, 1), (0.5, 9, 4), (0.0, 100, 0)):
        _, _, method = build("hadamard", head_phase=head_phase)
        method.start(total)
        assert method.head_steps == steps == math.floor(head_phase * total)
    _, _, method = build("hadamard")
    assert method.resting() == set()  # never started (a model used outside the loop): nothing rests


def test_the_phase_survives_a_checkpoint_and_a_second_start_keeps_one_set_of_hooks():
    _, model, method = build("hadamard", head_phase=0.5)
    train_steps(method, lambda step: tiny_batch(seed=step), 2, total=4)
    state = method.checkpoint_state()
    assert state == {"completed": 2}
    _, fresh_model, fresh = build("hadamard", head_phase=0.5)
    optimizer = torch.optim.AdamW(fresh.param_groups(settings()))
    fresh.start(4, optimizer)
    fresh.start(4, optimizer)  # started twice: the first start's hooks are gone
    assert len(fresh.hooks) == len(fresh.adapter_parameters()) + len(fresh.head_parameters()) + 1
    assert all(len(p._backward_hooks) == 1 for p in fresh.adapter_parameters() + fresh.head_parameters())
    assert len(optimizer._optimizer_step_pre_hooks) == 1
    assert fresh.resting() == fresh.adapter_ids  # step 1 of 4 would rest the adapter
    fresh.restore_checkpoint_state(state)
    assert fresh.resting() == set()  # step 3 of 4 trains it
    fresh.train_mode()
    fresh_model(**tiny_batch(seed=3), labels=LABELS).loss.backward()
    assert all(torch.count_nonzero(p.grad) > 0 for p in fresh.adapter_parameters())


def test_nothing_but_w_is_added_to_the_undecayed_set():
    _, model, method = build("hadamard")
    decays = {id(p): g["weight_decay"] for g in method.param_groups(settings(weight_decay=0.25)) for p in g["params"]}
    named = dict(model.named_parameters())
    for name in O_NAMES:
        for tensor in ("hadamard_weight", "hadamard_bias", "LayerNorm.weight", "LayerNorm.bias"):
            key = f"{name}.{tensor}" if tensor.startswith("hadamard") else f"{name.rsplit('.', 1)[0]}.{tensor}"
            assert decays[id(named[key])] == 0.0, key
    assert decays[id(named["classifier.weight"])] == 0.25 and decays[id(named["classifier.bias"])] == 0.0


# -- counts ------------------------------------------------------------------------------------------------
def test_adapter_count_is_2d_per_projection_plus_its_layernorms_2d():
    """tiny BERT: d 32, FFN 48, 2 layers; the FFN's output projection is 48→32, followed by output.LayerNorm."""
    check_adapter_count("hadamard", {}, 2 * (2 * 32 + 2 * 32))
    check_adapter_count("hadamard", {"side": "output"}, 2 * (2 * 32 + 2 * 32))
    check_adapter_count("hadamard", {"targets": [FFN_OUT]}, 2 * (2 * 48 + 2 * 32))
    check_adapter_count("hadamard", {"targets": [FFN_OUT], "side": "output"}, 2 * (2 * 32 + 2 * 32))
    check_adapter_count("hadamard", {"targets": ["attention.output.dense", FFN_OUT]}, 2 * (4 * 32 + 2 * 48 + 2 * 32))


def test_bert_base_trains_the_papers_0_033_percent():
    """12 layers × (2d adapter + 2d LayerNorm), d 768: 36,864, 0.033 % of BERT-base's ~110 M (the paper's figure,
    to three decimals, truncated); the method's own count on a meta-device BERT-base matches the formula."""
    formula = 12 * (2 * 768 + 2 * 768)
    assert formula == 36_864 and math.floor(100 * formula / 110e6 * 1000) / 1000 == 0.033
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(num_labels=2))
    counts = METHODS["hadamard"](model, HadamardConfig(), HEAD).param_counts()
    assert counts["adapter"] == formula and counts["backbone"] == 109_482_240
    assert math.floor(100 * counts["adapter"] / counts["backbone"] * 1000) / 1000 == 0.033


# -- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, text",
    [
        ({"side": "both"}, "method.side must be one of input, output, got 'both'"),
        ({"norms": []}, "method.norms is empty; give the child names of the LayerNorm after the attention"),
        ({"head_phase": -0.1}, "method.head_phase must be in [0, 1), got -0.1"),
        ({"head_phase": 1.0}, "method.head_phase must be in [0, 1), got 1.0"),
        (
            {"head_phase": 0.0, "head_after": False},
            "method.head_after=false with method.head_phase=0 never trains the task head; "
            "give head_phase > 0 or head_after=true",
        ),
    ],
)
def test_config_errors_are_one_line(values, text):
    assert message(values, HadamardConfig) == text


def test_a_target_with_no_layernorm_after_it_is_refused():
    with pytest.raises(HarnessError) as error:
        METHODS["hadamard"](tiny_bert(), HadamardConfig(targets=["query"]), HEAD)
    assert str(error.value) == (
        "hadamard: no normalisation layer named LayerNorm or post_attention_layernorm after "
        "'bert.encoder.layer.0.attention.self.query' (in its parent or above); the Hadamard adapter trains the "
        "LayerNorm after the attention output: target attention output projections (role o), or name that "
        "LayerNorm with method.norms"
    )


class RootNormModel(torch.nn.Module):
    """An attention output projection and its LayerNorm as children of the model itself (no parent module)."""

    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(4, 4)
        self.LayerNorm = torch.nn.LayerNorm(4)
        self.classifier = torch.nn.Linear(4, 2)


def test_a_layernorm_at_the_models_root_is_found_by_its_bare_name():
    model = RootNormModel()
    method = METHODS["hadamard"](model, HadamardConfig(targets=["dense"]), ["classifier"])
    assert method.norms == {"dense": "LayerNorm"}
    assert model.LayerNorm.weight.requires_grad and model.LayerNorm.bias.requires_grad
    assert method.param_counts()["adapter"] == 2 * 4 + 2 * 4


@pytest.mark.parametrize("side", ["input", "output"])
def test_on_a_llama_the_post_attention_norm_trains_and_the_bias_less_o_proj_gets_the_folded_bias(side):
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).double()
    method = METHODS["hadamard"](model, HadamardConfig(targets=["o_proj"], side=side, head_phase=0.0), ["score"])
    assert method.norms == {
        f"model.layers.{i}.self_attn.o_proj": f"model.layers.{i}.post_attention_layernorm" for i in (0, 1)
    }
    batch = {"input_ids": torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(1))}
    train_steps(method, lambda step: batch, 3, labels=torch.tensor([0, 1]))
    for i in (0, 1):
        assert not torch.equal(model.get_parameter(f"model.layers.{i}.post_attention_layernorm.weight"), torch.ones(16))
    expected = model(**batch).logits
    w0 = {name: layer.base.weight.detach().clone() for name, layer in method.layers.items()}
    method.merge()
    for name, layer in method.layers.items():
        b = model.get_parameter(f"{name}.hadamard_bias").detach()
        folded = torch.mv(w0[name], b) if side == "input" else b
        assert not layer.base.bias.requires_grad and torch.allclose(layer.base.bias, folded, atol=1e-10), name
    assert torch.allclose(model(**batch).logits, expected, atol=1e-10)


def test_images_are_refused_in_one_line_there_is_no_linear_layer_to_adapt():
    """EfficientNet-Lite0's targets resolve to its default role (convolutions); the declared kind is Linear only."""
    assert METHODS["hadamard"].capabilities.layer_kinds == (torch.nn.Linear,)
    with pytest.raises(HarnessError) as error:
        METHODS["hadamard"](tiny_cnn(), HadamardConfig(targets=["re:.*_(expand|project)_conv", "_conv_head"]), HEAD)
    assert str(error.value) == (
        "hadamard: target pattern 're:.*_(expand|project)_conv' matches no Linear module; the model has: "
    )
