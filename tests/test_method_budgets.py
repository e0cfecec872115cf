"""AdaLoRA and dynamic-rank DoRA (mutation-testing follow-up, issue 16 item 3): config bounds and
their exact one-line messages, schedule keys named in errors, the orthogonality and equilibrium
regularizers at weight 1 computed in the test, the importance EMA of dynamic DoRA against shares
computed from the dense per-component updates, and its pruning window boundaries."""

import pytest
import torch

from harness.errors import HarnessError
from methods.adalora import AdaLoRA, AdaLoraConfig
from methods.dora_dynamic import DoraDynamic, DoraDynamicConfig
from tests.conftest import tiny_batch, tiny_bert

HEAD = ["classifier"]
TARGETS = ["query", "value", "intermediate.dense"]


def adalora(model=None, **values) -> AdaLoRA:
    return AdaLoRA(
        model if model is not None else tiny_bert(),
        AdaLoraConfig(**{"targets": TARGETS, "r": 3, "target_r": 2, **values}),
        HEAD,
    )


def dora(model=None, **values) -> DoraDynamic:
    return DoraDynamic(
        model if model is not None else tiny_bert(),
        DoraDynamicConfig(**{"targets": TARGETS, "target_r": 2, "dropout": 0.0, **values}),
        HEAD,
    )


def message(values: dict, config) -> str:
    with pytest.raises(HarnessError) as error:
        config(**values)
    return str(error.value)


# -- AdaLoRA config ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta1, beta2", [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0), (0.5, 1.5), (0.5, -0.1)])
def test_adalora_betas_outside_the_open_unit_interval_are_errors(beta1, beta2):
    assert (
        message({"beta1": beta1, "beta2": beta2}, AdaLoraConfig)
        == f"method.beta1/beta2 must be in (0, 1), got {beta1}, {beta2}"
    )


def test_adalora_orth_reg_bound():
    assert AdaLoraConfig(orth_reg=0.0).orth_reg == 0.0
    assert message({"orth_reg": -0.5}, AdaLoraConfig) == "method.orth_reg must be >= 0, got -0.5"


@pytest.mark.parametrize("key", ["t_init", "t_final"])
def test_adalora_bad_schedule_point_names_its_key(key):
    method = adalora(**{key: 2.5})
    with pytest.raises(HarnessError) as error:
        method.start(20)
    assert (
        str(error.value)
        == f"method.{key} must be a whole number of steps or a fraction in [0, 1) of the total steps, got 2.5"
    )


def test_adalora_start_keeps_the_loops_total_and_optimizer():
    method = adalora()
    optimizer = torch.optim.SGD(
        method.trainable_parameters()
        if hasattr(method, "trainable_parameters")
        else [p for p in method.model.parameters() if p.requires_grad],
        lr=0.1,
    )
    method.start(20, optimizer)
    assert method.total_steps == 20 and method.optimizer is optimizer


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_adalora_orthogonality_loss_at_weight_one(gamma):
    method = adalora(orth_reg=gamma)
    method.start(20)
    norms = []
    for layer in method.layers.values():
        A, B = layer.lora_A.detach(), layer.lora_B.detach()
        norms.append(torch.sqrt(((A @ A.T - torch.eye(A.shape[0])) ** 2).sum()))
        norms.append(torch.sqrt(((B.T @ B - torch.eye(B.shape[1])) ** 2).sum()))
    expected = gamma * sum(norms) / len(norms)
    torch.testing.assert_close(method.extra_loss().detach(), expected)


def test_adalora_orthogonality_loss_keeps_the_models_dtype():
    method = adalora(model=tiny_bert().to(torch.bfloat16))
    method.start(20)
    assert method.extra_loss().dtype == torch.bfloat16


def test_adalora_steps_without_gradients_score_zero_importance():
    """A step whose factors got no gradient (e.g. a skipped batch) counts as zero importance."""
    method = adalora(t_init=1, t_final=2, delta_t=1)
    method.start(10)
    method.on_step_end(1)  # no backward: every grad is None
    for (name, factor), sensitivity in method.sensitivity.items():
        assert torch.equal(sensitivity, torch.zeros_like(sensitivity))
        assert torch.equal(method.uncertainty[(name, factor)], torch.zeros_like(sensitivity))
    assert len(method.sensitivity) == 3 * len(method.layers)


def test_adalora_freeze_at_the_first_step_scores_on_that_steps_gradients():
    """T = 5, t_init = 0, t_final = 4: the allocation freezes at step 1, before any importance was
    accumulated; the mask then uses |w·g| of step 1 (Ī = (1−β1)I, Ū = (1−β2)|I − Ī|)."""
    model = tiny_bert().double()
    method = adalora(model=model, t_init=0, t_final=4, delta_t=1)
    method.start(5)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_E.normal_()
    model.train()
    batch = tiny_batch()
    loss = model(**batch, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    b1, b2 = method.cfg.beta1, method.cfg.beta2
    scores = {}
    for name, layer in method.layers.items():
        s = {}
        for f in ("A", "E", "B"):
            p = getattr(layer, f"lora_{f}")
            I = (p * p.grad).abs().detach()
            sens = (1 - b1) * I
            s[f] = sens * ((1 - b2) * (I - sens).abs())
        scores[name] = s["E"] + s["A"].mean(dim=1) + s["B"].mean(dim=0)
    method.on_step_end(1)
    flat = torch.cat([scores[name] for name in method.layers])
    prune = method.cfg.r * len(method.layers) - method.cfg.target_r * len(method.layers)
    threshold = flat.sort().values[prune - 1]
    for name, layer in method.layers.items():
        assert torch.equal(layer.kept, scores[name] > threshold)
    assert sum(int(layer.kept.sum()) for layer in method.layers.values()) == 2 * len(method.layers)


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


# -- shared budget machinery (methods/budget.py) ---------------------------------------------------


def test_budget_rank_error_names_the_method_and_the_layer():
    with pytest.raises(HarnessError) as error:
        adalora(r=40, target_r=2)
    assert (
        str(error.value)
        == "adalora: rank r=40 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_budget_pruning_nothing_revives_every_component():
    method = adalora()
    scores = {name: 10 * torch.arange(float(method.cfg.r)) + i for i, name in enumerate(method.layers)}  # distinct
    method.prune_lowest(scores, 4)
    assert sum(int((~layer.kept).sum()) for layer in method.layers.values()) == 4
    method.prune_lowest(scores, 0)
    assert all(bool(layer.kept.all()) and layer.kept.dtype == torch.bool for layer in method.layers.values())


def test_budget_trainable_count_is_the_kept_adapter_plus_the_head():
    method = adalora()
    d = {"query": (32, 32), "value": (32, 32), "intermediate.dense": (32, 48)}
    scores = {name: torch.tensor([0.0, 1.0, 2.0]) for name in method.layers}
    method.prune_lowest(scores, len(method.layers))  # drop component 0 everywhere: 2 kept per matrix
    adapter = sum(
        2 * (d_in + d_out + 1) for name in method.layers for key, (d_in, d_out) in d.items() if name.endswith(key)
    )
    head = sum(p.numel() for p in method.model.classifier.parameters())
    counts = method.param_counts()
    assert counts["adapter"] == adapter and counts["trainable"] == adapter + head
