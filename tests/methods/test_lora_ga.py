"""LoRA-GA (methods/lora_ga.py) against the paper's formula computed here and against PEFT's
init_lora_weights="lora_ga" on the same batches."""

import math

import pytest
import torch

from methods import build_method
from tests.conftest import tiny_batch, tiny_bert
from tests.training import LABELS, train_steps

HEAD = ["classifier"]
TARGETS = ["query", "value", "intermediate.dense"]
R, ALPHA, GAMMA = 4, 16.0, 16.0
BATCHES = [{**tiny_batch(seed=10 + i), "labels": LABELS} for i in range(3)]


def loss_of(model):
    return lambda batch: model(**batch).loss


def applied(style="reference", direction="ArB2r", model=None, seed=5):
    model = tiny_bert(hidden_dropout_prob=0.1).double() if model is None else model
    method = build_method(
        model,
        {
            "name": "lora_ga",
            "targets": TARGETS,
            "r": R,
            "alpha": ALPHA,
            "style": style,
            "direction": direction,
            "grad_batches": len(BATCHES),
        },
        HEAD,
    )
    torch.manual_seed(seed)  # the dropout masks of the estimate (train mode, as the reference)
    method.initialise(loss_of(model), iter(BATCHES))
    return model, method


def mean_gradients() -> dict[str, torch.Tensor]:
    """∂L/∂W0 averaged over BATCHES, by plain backward on an unadapted copy in train mode (dropout on,
    the same masks as `applied` draws)."""
    model = tiny_bert(hidden_dropout_prob=0.1).double().train()
    torch.manual_seed(5)
    for batch in BATCHES:
        model(**batch).loss.backward()
    return {
        name: module.weight.grad / len(BATCHES)
        for name, module in model.named_modules()
        if name.endswith(("query", "value", "intermediate.dense"))
    }


def aligned(ours: torch.Tensor, theirs: torch.Tensor, dim: int) -> torch.Tensor:
    """`ours` with each row (dim=1) or column (dim=0) sign-flipped to match `theirs`: singular vectors
    have arbitrary signs."""
    signs = torch.sign((ours * theirs).sum(dim=dim, keepdim=True))
    return ours * signs


@pytest.mark.parametrize(
    "direction, a_rows, b_cols",
    [
        ("ArB2r", range(0, R), range(R, 2 * R)),
        ("A2rBr", range(R, 2 * R), range(0, R)),
        ("ArBr", range(1, 2 * R, 2), range(0, 2 * R, 2)),
    ],
)
def test_init_is_the_paper_s_formula_and_leaves_the_outputs_unchanged(direction, a_rows, b_cols):
    reference = tiny_bert(hidden_dropout_prob=0.1).double().eval()(**tiny_batch()).logits
    model, method = applied(direction=direction)
    torch.testing.assert_close(model(**tiny_batch()).logits, reference, rtol=0, atol=1e-12)
    scaling = ALPHA / math.sqrt(R)  # rsLoRA
    original = dict(tiny_bert(hidden_dropout_prob=0.1).double().named_parameters())
    for name, grad in mean_gradients().items():
        layer = method.layers[name]
        u, s, vh = torch.linalg.svd(grad)
        factor = grad.shape[0] ** 0.25 / math.sqrt(GAMMA)
        a0, b0 = vh[list(a_rows)] * factor, u[:, list(b_cols)] * factor
        torch.testing.assert_close(aligned(layer.lora_A.detach(), a0, dim=1), a0, rtol=0, atol=1e-10)
        torch.testing.assert_close(aligned(layer.lora_B.detach(), b0, dim=0), b0, rtol=0, atol=1e-10)
        offset = scaling * layer.lora_B.detach() @ layer.lora_A.detach()
        assert offset.abs().max() > 1e-3  # a real offset
        torch.testing.assert_close(layer.base.weight, original[f"{name}.weight"] - offset, rtol=0, atol=1e-12)


def test_peft_style_equals_peft_lora_ga_on_the_same_batches():
    """PEFT (≥ 0.19): preprocess_loraga on the same batches, then init_lora_weights="lora_ga". Its
    gradient is ours exactly (float64); its SVD is torch.svd_lowrank(q=4r, niter=4) in float32, so the
    factors agree to float32 precision after aligning singular-vector signs, and so do the offset
    weights and the outputs."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraGAConfig, LoraModel, preprocess_loraga

    _, ours = applied(style="peft")
    peft_model = tiny_bert(hidden_dropout_prob=0.1).double()
    config = LoraConfig(
        r=R,
        lora_alpha=ALPHA,
        use_rslora=True,
        target_modules=TARGETS,
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=int(GAMMA)),
    )

    def train_step():
        torch.manual_seed(5)
        for batch in BATCHES:
            peft_model(**batch).loss.backward()

    preprocess_loraga(peft_model, config, train_step)
    expected = mean_gradients()
    for name, grad in expected.items():
        torch.testing.assert_close(peft_model.get_submodule(name)._peft_loraga_grad, grad, rtol=0, atol=1e-15)
    torch.manual_seed(0)
    LoraModel(peft_model, config, "default")
    for name, layer in ours.layers.items():
        theirs = peft_model.get_submodule(name)
        a, b = theirs.lora_A["default"].weight.detach(), theirs.lora_B["default"].weight.detach()
        # relative to each factor's largest entry: PEFT's randomised float32 SVD is good to ~1e-5 of it
        torch.testing.assert_close(
            aligned(layer.lora_A.detach(), a, dim=1), a, rtol=0, atol=1e-4 * a.abs().max().item()
        )
        torch.testing.assert_close(
            aligned(layer.lora_B.detach(), b, dim=0), b, rtol=0, atol=1e-4 * b.abs().max().item()
        )
        torch.testing.assert_close(
            layer.base.weight + layer.delta_weight(),
            theirs.get_base_layer().weight + theirs.get_delta_weight("default"),
            rtol=0,
            atol=1e-6,
        )


def test_saved_state_restores_the_trained_model_without_data():
    model, method = applied()
    train_steps(method, lambda step: tiny_batch(seed=step), 4)
    expected = model(**tiny_batch()).logits
    fresh = tiny_bert().double()
    fresh_method = build_method(fresh, {"name": "lora_ga", "targets": TARGETS, "r": R, "alpha": ALPHA}, HEAD)
    fresh_method.load_trainable_state_dict(method.trainable_state_dict())
    assert torch.equal(fresh(**tiny_batch()).logits, expected)
    # into a model that started from other batches: its own offset is taken back first
    _, other = applied(seed=9, model=tiny_bert().double())
    other.initialise(loss_of(other.model), iter([{**tiny_batch(seed=30), "labels": LABELS}]))
    other.load_trainable_state_dict(method.trainable_state_dict())
    torch.testing.assert_close(other.model(**tiny_batch()).logits, expected, rtol=0, atol=1e-12)
    method.merge()
    torch.testing.assert_close(model(**tiny_batch()).logits, expected, rtol=0, atol=1e-12)


def test_rank_needs_twice_r_singular_pairs():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"lora_ga: rank r=34 exceeds min\(d_in, d_out\)=32 of layer"):
        build_method(tiny_bert(), {"name": "lora_ga", "targets": ["query"], "r": 17}, HEAD)


def test_a_run_estimates_the_gradient_on_its_own_first_batches_and_counts_the_time(make_config, monkeypatch):
    """Through the loop: initialise gets exactly grad_batches batches before step 1, the first of them
    the batch step 1 trains on (the run's own seeded order, not moved by the estimate); cost.init_seconds
    is reported and inside train_seconds."""
    from harness.engine.run import execute_run
    from harness.engine.train import StepRunner
    from methods.lora_ga import LoraGa

    estimated, trained = [], []
    initialise, step = LoraGa.initialise, StepRunner.__call__

    def spy_initialise(self, loss_of, batches):
        batches = list(batches)
        estimated.extend(batch["input_ids"] for batch in batches)
        assert not trained  # before step 1
        return initialise(self, loss_of, batches)

    def spy_step(self, number, micro_batches):
        trained.append(micro_batches[0]["input_ids"])
        return step(self, number, micro_batches)

    monkeypatch.setattr(LoraGa, "initialise", spy_initialise)
    monkeypatch.setattr(StepRunner, "__call__", spy_step)
    record = execute_run(
        make_config("method=lora_ga", "method.grad_batches=3", "method.targets=[query,value]", "train.batch_size=4")
    )
    assert record["status"] == "success", record["error"]
    assert [len(ids) for ids in estimated] == [4, 4, 4]
    assert torch.equal(estimated[0], trained[0]) and torch.equal(estimated[1], trained[1])
    assert 0 < record["cost"]["init_seconds"] < record["cost"]["train_seconds"]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"grad_batches": 0}, "method.grad_batches must be > 0, got 0"),
        ({"direction": "BrAr"}, "method.direction must be one of ArB2r, A2rBr, ArBr, got 'BrAr'"),
        ({"style": "paper"}, "method.style must be one of reference, peft, got 'paper'"),
        ({"stable_gamma": 0.0}, "method.stable_gamma must be > 0, got 0.0"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key_and_what_is_allowed(override, message):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError) as caught:
        build_method(tiny_bert(), {"name": "lora_ga", "targets": ["query"], **override}, HEAD)
    assert str(caught.value) == message


def test_the_smallest_allowed_settings_are_accepted():
    """One gradient batch and a γ below 1 are valid (the bounds are > 0, not > 1)."""
    method = build_method(
        tiny_bert(), {"name": "lora_ga", "targets": ["query"], "grad_batches": 1, "stable_gamma": 0.5}, HEAD
    )
    assert method.init_batches == 1 and method.cfg.stable_gamma == 0.5


def test_rank_and_layer_type_errors_name_the_layer():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError) as caught:
        build_method(tiny_bert(), {"name": "lora_ga", "targets": ["query"], "r": 17}, HEAD)
    assert (
        str(caught.value)
        == "lora_ga: rank r=34 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(3, 4, 1))
    model.add_module("classifier", torch.nn.Linear(4, 2))
    with pytest.raises(HarnessError) as caught:
        build_method(model, {"name": "lora_ga", "targets": ["conv"], "r": 1}, ["classifier"])
    assert str(caught.value) == "lora_ga: target pattern 'conv' matches no Linear module; the model has: "
