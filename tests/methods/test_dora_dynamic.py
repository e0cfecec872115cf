"""DoRA with dynamic rank distribution: initialisation, equality with LoRA when the scalers stay at one,
the component shares against the dense per-component updates, the importance EMA, the equilibrium
regulariser, the pruning window and its schedule, config bounds with their exact one-line messages,
and the dense reference B diag(c) A over r0 with pruned components zero."""

import math

import pytest
import torch

from harness.errors import HarnessError
from methods.dora_dynamic import DoraDynamic, DoraDynamicConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    LORA_TARGETS,
    TARGETS,
    adapter_params,
    check_adapter_count,
    check_linear_layers,
    labels,
    message,
    peft_layer,
    peft_lora,
    trained,
)

HEAD = ["classifier"]


# -- dynamic-rank DoRA ------------------------------------------------------------------------


def dynamic(**overrides):
    cfg = DoraDynamicConfig(**{"targets": TARGETS, "target_r": 2, "dropout": 0.0, **overrides})
    return DoraDynamic(tiny_bert(), cfg, HEAD)


def test_dora_dynamic_initialisation():
    method = dynamic()
    layer = method.layers["bert.encoder.layer.0.intermediate.dense"]  # 32 → 48
    assert method.cfg.r == 3 and layer.scaling == pytest.approx(8 / 3)
    assert torch.count_nonzero(layer.lora_E) == 0
    a_bound, b_bound = math.sqrt(6 / 32), math.sqrt(6 / 3)  # kaiming-uniform, a = 0
    assert layer.lora_A.abs().max() <= a_bound and layer.lora_A.abs().max() > 0.9 * a_bound
    assert layer.lora_B.abs().max() <= b_bound and layer.lora_B.abs().max() > 0.8 * b_bound
    assert method.param_counts()["adapter"] == 3 * (4 * (32 + 32 + 1) + 2 * (32 + 48 + 1))


def test_dora_dynamic_with_scalers_frozen_at_one_is_lora_with_scale_alpha_over_r0():
    method = dynamic()
    theirs = peft_lora(tiny_bert(), 3, 8, TARGETS)
    with torch.no_grad():
        for name, layer in method.layers.items():
            layer.lora_E.fill_(1.0)
            layer.lora_E.requires_grad_(False)
            peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer(theirs, name).lora_B["default"].weight.copy_(layer.lora_B)
    ours_params = [p for l in method.layers.values() for p in (l.lora_A, l.lora_B)]
    their_params = [p for n, p in theirs.named_parameters() if "lora_" in n]
    optimizers = [torch.optim.AdamW(ours_params, lr=1e-2), torch.optim.AdamW(their_params, lr=1e-2)]
    for step in range(1, 5):
        losses = [m(**tiny_batch(seed=step), labels=labels(step)).loss for m in (method.model, theirs)]
        assert losses[0].item() == pytest.approx(losses[1].item(), abs=1e-6)
        for loss, optimizer in zip(losses, optimizers):
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert torch.allclose(method.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-5)


def test_dora_dynamic_importance_is_the_component_share_of_the_update():
    method = dynamic()
    torch.manual_seed(4)
    layer = method.layers["bert.encoder.layer.1.intermediate.dense"]
    with torch.no_grad():
        layer.lora_E.copy_(torch.randn(3))
    A, c, B = layer.lora_A.detach(), layer.lora_E.detach(), layer.lora_B.detach()
    components = torch.einsum("ik,kj->kij", B, A * c[:, None])  # the reference code's form
    expected = components.norm(dim=(1, 2)) / ((B @ (A * c[:, None])).norm() + 1e-8)
    assert torch.allclose(layer.component_shares(), expected, atol=1e-6)
    assert torch.equal(dynamic().layers["bert.encoder.layer.0.attention.self.query"].component_shares(), torch.zeros(3))


def test_dora_dynamic_regulariser_is_the_mean_variance_and_switches_off_after_pruning():
    method = dynamic(reg_weight=0.5)
    method.start(20)  # window: steps 3..10
    total = sum(l.lora_A[i].var() + l.lora_B[:, i].var() for l in method.layers.values() for i in range(3))
    assert method.extra_loss().item() == pytest.approx(0.5 * total.item() / (2 * 6 * 3), rel=1e-6)
    method.completed_steps = 9
    assert method.extra_loss() is not None  # step 10: last step of the window
    method.completed_steps = 10
    assert method.extra_loss() is None


def run_dynamic(method, total_steps):
    """Train with AdamW for `total_steps`; returns {step: number of zeroed scalers} at prune events."""
    optimizer = torch.optim.AdamW(adapter_params(method), lr=5e-2, weight_decay=0.01)
    method.start(total_steps)
    zeroed = {}
    for step in range(1, total_steps + 1):
        loss = method.model(**tiny_batch(seed=step), labels=labels(step)).loss
        extra = method.extra_loss()
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        method.on_step_end(step)
        u = step - method.window_start
        if 0 <= u <= method.window and (u % method.cfg.delta_t == 0 or u == method.window):
            zeroed[u] = sum(int((layer.lora_E == 0).sum()) for layer in method.layers.values())
            assert sum(not k for layer in method.layers.values() for k in layer.kept.tolist()) == zeroed[u]
        optimizer.zero_grad()
    return zeroed


def test_dora_dynamic_prunes_on_its_cubic_schedule_down_to_the_target_budget():
    method = dynamic(delta_t=3)
    zeroed = run_dynamic(method, 40)  # window: steps 6..20, P = 14
    n_components, r0 = 6 * 3, 3
    assert method.window_start == 6 and method.window == 14
    expected = {u: max(int(n_components * (r0 - 2) * u**3 // (r0 * 14**3)), 1) for u in (0, 3, 6, 9, 12, 14)}
    assert zeroed == expected
    assert zeroed[14] == n_components - 6 * 2  # N − n_modules · r_T
    assert sum(method.allocation().values()) == 6 * 2
    for layer in method.layers.values():  # held at zero through the 20 steps after the window
        assert torch.count_nonzero(layer.lora_E[~layer.kept]) == 0
        assert torch.count_nonzero(layer.lora_E[layer.kept]) == int(layer.kept.sum())
    ranks = method.allocation()
    assert method.param_counts()["adapter"] == sum(
        ranks[n] * (l.base.in_features + l.base.out_features + 1) for n, l in method.layers.items()
    )


def test_dora_dynamic_window_without_steps_is_an_error():
    with pytest.raises(HarnessError, match="pruning window 0.15–0.5 of 1 steps holds no step"):
        dynamic().start(1)


def test_prune_count_is_exact_at_the_end_of_the_window():
    method = dynamic(target_r=2)
    method.start(100)
    assert method.prune_count(method.window) == 18 - 12
    assert method.prune_count(0) == 0


def dora(model=None, **values) -> DoraDynamic:
    return DoraDynamic(
        model if model is not None else tiny_bert(),
        DoraDynamicConfig(**{"targets": TARGETS, "target_r": 2, "dropout": 0.0, **values}),
        HEAD,
    )


# -- dynamic DoRA config -----------------------------------------------------------------------


def test_dora_dynamic_beta_bounds():
    assert DoraDynamicConfig(target_r=2, beta=0.0).beta == 0.0
    for beta in (1.0, 1.5, -0.1):
        assert message({"target_r": 2, "beta": beta}, DoraDynamicConfig) == f"method.beta must be in [0, 1), got {beta}"


def test_dora_dynamic_reg_weight_bound():
    assert DoraDynamicConfig(target_r=2, reg_weight=0.0).reg_weight == 0.0
    assert message({"target_r": 2, "reg_weight": -1.0}, DoraDynamicConfig) == "method.reg_weight must be >= 0, got -1.0"


def test_dora_dynamic_window_bounds():
    cfg = DoraDynamicConfig(target_r=2, prune_start=0.0, prune_end=1.0)
    assert (cfg.prune_start, cfg.prune_end) == (0.0, 1.0)
    for start, end in [(0.3, 0.3), (0.5, 0.4), (-0.1, 0.5), (0.2, 1.5), (0.2, 1.01)]:
        assert message({"target_r": 2, "prune_start": start, "prune_end": end}, DoraDynamicConfig) == (
            "method.prune_start/prune_end must satisfy 0 <= start < end <= 1 (fractions of the total steps), "
            f"got {start}, {end}"
        )


def test_dora_dynamic_delta_t_bound():
    assert DoraDynamicConfig(target_r=2, delta_t=1).delta_t == 1
    assert message({"target_r": 2, "delta_t": 0}, DoraDynamicConfig) == "method.delta_t must be >= 1 step, got 0"


# -- dynamic DoRA schedule and scores -------------------------------------------------------------


def test_dora_dynamic_start_keeps_the_loops_total_and_optimizer():
    method = dora()
    optimizer = torch.optim.SGD([p for p in method.model.parameters() if p.requires_grad], lr=0.1)
    method.start(20, optimizer)
    assert method.total_steps == 20 and method.optimizer is optimizer


def test_dora_dynamic_window_of_one_step_is_accepted():
    """T = 10, prune 0.1–0.2: t_s = 1, t_e = 2: events at u = 0 (at least one component) and u = P = 1
    (k = N·(r0 − r_T)/r0, the whole pruning)."""
    method = dora(prune_start=0.1, prune_end=0.2)
    method.start(10)
    assert (method.window_start, method.window) == (1, 1)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_E.normal_()
    method.on_step_end(1)
    assert sum(int((~layer.kept).sum()) for layer in method.layers.values()) == 1
    method.on_step_end(2)  # u = P: k = N (r0 − r_T)/r0
    assert sum(int(layer.kept.sum()) for layer in method.layers.values()) == 2 * len(method.layers)


def test_dora_dynamic_regularizer_is_on_before_the_first_step_of_a_window_ending_at_step_one():
    method = dora(prune_start=0.0, prune_end=0.1, reg_weight=0.5)
    method.start(10)  # t_s = 0, t_e = 1: the regularizer applies to step 1
    assert method.extra_loss() is not None
    method.on_step_end(1)
    assert method.extra_loss() is None


@pytest.mark.parametrize("eta", [1.0, 0.25])
def test_dora_dynamic_equilibrium_regularizer(eta):
    method = dora(reg_weight=eta)
    method.start(20)
    layers = list(method.layers.values())
    total = 0.0
    for layer in layers:
        A, B = layer.lora_A.detach().double(), layer.lora_B.detach().double()
        for i in range(A.shape[0]):
            a, b = A[i], B[:, i]
            total += ((a - a.mean()) ** 2).sum() / (len(a) - 1) + ((b - b.mean()) ** 2).sum() / (len(b) - 1)
    expected = eta * total / (2 * len(layers) * method.cfg.r)
    torch.testing.assert_close(method.extra_loss().detach().double(), expected, rtol=1e-5, atol=0)


def dense_shares(layer) -> torch.Tensor:
    A, c, B = (t.detach().double() for t in (layer.lora_A, layer.lora_E, layer.lora_B))
    parts = [c[i] * torch.outer(B[:, i], A[i]) for i in range(len(c))]
    total = torch.linalg.matrix_norm(sum(parts))
    return torch.stack([torch.linalg.matrix_norm(p) for p in parts]) / (total + 1e-8)


@pytest.mark.parametrize("c_scale", [1e-9, 1e-3, 1.0])
def test_dora_dynamic_component_shares_equal_the_dense_ones(c_scale):
    method = dora(model=tiny_bert().double())
    torch.manual_seed(3)
    for layer in method.layers.values():
        with torch.no_grad():
            layer.lora_E.copy_(torch.randn_like(layer.lora_E) * c_scale)
        torch.testing.assert_close(layer.component_shares(), dense_shares(layer), rtol=1e-9, atol=0)


def test_dora_dynamic_scores_are_an_ema_of_the_shares():
    method = dora(model=tiny_bert().double(), beta=0.7, prune_start=0.5, prune_end=0.9, delta_t=100)
    method.start(20)  # window 10..18: steps 1 and 2 only score
    torch.manual_seed(4)
    expected = {name: torch.zeros_like(layer.lora_E, dtype=torch.float64) for name, layer in method.layers.items()}
    for step in (1, 2, 3):
        for name, layer in method.layers.items():
            with torch.no_grad():
                layer.lora_E.copy_(torch.randn_like(layer.lora_E) * 0.1)
            expected[name] = 0.7 * expected[name] + 0.3 * dense_shares(layer)
        method.on_step_end(step)
        for name in method.layers:
            torch.testing.assert_close(method.scores[name].double(), expected[name], rtol=1e-9, atol=0)
    assert all(bool(layer.kept.all()) for layer in method.layers.values())


def test_dora_dynamic_prunes_only_at_window_steps_multiple_of_delta_t():
    """T = 40, window 0.25–0.75: t_s = 10, P = 20; ΔT = 4. Nothing is pruned before t_s (u < 0, even
    when u % ΔT == 0); the event at u = 0 prunes max(k, 1) = 1 component, and so does u = 4
    (int(N·(r0 − r_T)/r0·(4/20)³) = 0)."""
    method = dora(prune_start=0.25, prune_end=0.75, delta_t=4)
    method.start(40)
    torch.manual_seed(5)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_E.copy_(torch.randn_like(layer.lora_E))
    for step in range(1, 10):  # u = -9 .. -1
        method.on_step_end(step)
        assert all(bool(layer.kept.all()) for layer in method.layers.values()), step
    n = len(method.layers)
    assert n * 3 * 1 * 4**3 // (3 * 20**3) == 0
    for step in range(10, 16):  # u = 0 .. 5
        method.on_step_end(step)
        assert sum(int((~layer.kept).sum()) for layer in method.layers.values()) == 1, step


def test_dora_dynamic_is_b_diag_c_a_over_r0_with_pruned_components_zero():
    r, target_r, alpha = 3, 1, 6.0
    original, model, method = trained(
        "dora_dynamic",
        steps=10,
        total=10,
        r=r,
        target_r=target_r,
        alpha=alpha,
        dropout=0.0,
        delta_t=1,
        targets=LORA_TARGETS,
    )
    assert sum(int(layer.kept.sum()) for layer in method.layers.values()) == target_r * 6
    for name, layer in method.layers.items():
        assert torch.all(layer.lora_E[~layer.kept] == 0), name

    check_linear_layers(
        original,
        model,
        method,
        lambda name, w0, layer: w0 + (alpha / r) * layer.lora_B @ torch.diag(layer.lora_E) @ layer.lora_A,
    )


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"target_r": 2, "targets": ["query", "value"]}, 2 * 2 * 3 * (32 + 32 + 1)),
    ({"r": 5, "target_r": 3, "targets": ["intermediate.dense"]}, 2 * 5 * (32 + 48 + 1)),
    ({"target_r": 4, "targets": ["key"]}, 2 * 6 * (32 + 32 + 1)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("dora_dynamic", values, adapter)
