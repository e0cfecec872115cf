"""AdaLoRA: equality with PEFT step by step (after a fixed sequence of steps), the orthogonality loss,
the cubic budget schedule and its errors, the importance scores, config bounds with their exact
one-line messages, and the dense reference B diag(E) A over the initial rank with pruned triplets zero."""

import peft
import pytest
import torch

from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.adalora import AdaLora, AdaLoraConfig, BudgetSchedule
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    FFN_OUT,
    LORA_TARGETS,
    TARGETS,
    adalora,
    adapter_params,
    check_adapter_count,
    check_linear_layers,
    labels,
    message,
    peft_layer,
    trained,
)

HEAD = ["classifier"]


# -- AdaLoRA ------------------------------------------------------------------------------------


def adalora_pair(total_steps=14, t_init=2, t_final=3, delta_t=2, orth_reg=0.3):
    """Our AdaLoRA and PEFT's on the same float64 tiny BERT, with the same factors (E non-zero)."""
    ours = AdaLora(
        tiny_bert().double(),
        AdaLoraConfig(
            r=4,
            target_r=2,
            alpha=8,
            targets=TARGETS,
            orth_reg=orth_reg,
            t_init=t_init,
            t_final=t_final,
            delta_t=delta_t,
        ),
        HEAD,
    )
    ours.start(total_steps)
    config = peft.AdaLoraConfig(
        init_r=4,
        target_r=2,
        lora_alpha=8,
        target_modules=TARGETS,
        orth_reg_weight=orth_reg,
        tinit=t_init,
        tfinal=t_final,
        deltaT=delta_t,
        total_step=total_steps,
        beta1=0.85,
        beta2=0.85,
        task_type="SEQ_CLS",
    )
    theirs = peft.get_peft_model(tiny_bert().double(), config).double()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            layer.lora_E.copy_(0.1 * torch.randn(4, generator=generator, dtype=torch.float64))
            twin = peft_layer(theirs, name)
            layer.lora_A.copy_(twin.lora_A["default"])
            layer.lora_B.copy_(twin.lora_B["default"])
            twin.lora_E["default"].copy_(layer.lora_E[:, None])
    return ours, theirs


def test_adalora_follows_peft_step_by_step():
    total = 14
    ours, theirs = adalora_pair(total)
    peft_params = [p for n, p in theirs.named_parameters() if "lora_" in n]
    optimizers = [torch.optim.SGD(adapter_params(ours), lr=0.5), torch.optim.SGD(peft_params, lr=0.5)]
    allocation_steps = []
    for step in range(1, total + 1):
        batch = tiny_batch(seed=step)
        task_loss = ours.model(**batch, labels=labels(step)).loss
        orth = ours.extra_loss()
        their_loss = theirs(**batch, labels=labels(step)).loss  # PEFT adds γ·R inside forward
        assert orth.item() > 0
        assert torch.allclose(task_loss + orth, their_loss, rtol=1e-12, atol=1e-12)
        (task_loss + orth).backward()
        their_loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        ours.on_step_end(step)
        theirs.base_model.update_and_allocate(step)
        if ours.schedule.masks_at(step) or step == ours.schedule.freeze_step():
            allocation_steps.append(step)
            assert sum(ours.allocation().values()) == ours.schedule.budget(step)
            assert ours.schedule.budget(step) == theirs.base_model.rankallocator.budget_schedule(step)[0]
        allocator = theirs.base_model.rankallocator
        for (name, factor), sensitivity in ours.sensitivity.items():  # Ī and Ū of every entry
            key = f"{name}.lora_{factor}.default"
            assert torch.allclose(sensitivity, allocator.exp_avg_ipt[key].view_as(sensitivity), rtol=1e-10, atol=1e-15)
            assert torch.allclose(
                ours.uncertainty[(name, factor)],
                allocator.exp_avg_unc[key].view_as(sensitivity),
                rtol=1e-10,
                atol=1e-15,
            )
        assert len(ours.sensitivity) == (3 * len(TARGETS) * 2 if step < ours.schedule.freeze_step() else 0)
        for name, layer in ours.layers.items():
            their_E = peft_layer(theirs, name).lora_E["default"].view(-1)
            assert torch.equal(layer.lora_E == 0, their_E == 0), f"masks differ at step {step} in {name}"
            assert torch.allclose(layer.lora_E, their_E, rtol=1e-10, atol=1e-12)
        for optimizer in optimizers:
            optimizer.zero_grad()
    assert allocation_steps == [4, 6, 8, 10, 11]  # t % ΔT == 0 after t_init, then T − t_final
    pattern = theirs.peft_config["default"].rank_pattern
    for name, layer in ours.layers.items():
        assert layer.kept.tolist() == pattern[f"{name}.lora_E.default"]
    assert sum(ours.allocation().values()) == 2 * len(ours.layers)
    assert torch.allclose(ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-10)


def test_adalora_orthogonality_loss_is_the_mean_frobenius_distance_over_all_factors():
    ours, _ = adalora_pair()
    expected = []
    for layer in ours.layers.values():
        A, B = layer.lora_A.detach(), layer.lora_B.detach()
        expected.append(torch.linalg.norm(A @ A.T - torch.eye(4, dtype=A.dtype)))
        expected.append(torch.linalg.norm(B.T @ B - torch.eye(4, dtype=B.dtype)))
    assert len(expected) == 2 * len(TARGETS) * 2
    assert ours.extra_loss().item() == pytest.approx(0.3 * sum(expected).item() / len(expected), rel=1e-12)


def test_adalora_budget_schedule_is_cubic_between_t_init_and_t_final():
    schedule = BudgetSchedule(initial=300, target=200, t_init=10, t_final=20, total=110, delta_t=5)
    assert schedule.freeze_step() == 90
    assert [schedule.budget(t) for t in (0, 10, 11, 50, 89, 90, 110)] == [
        300,
        300,
        int(100 * (1 - 1 / 80) ** 3 + 200),
        int(100 * 0.5**3 + 200),
        int(100 * (1 / 80) ** 3 + 200),
        200,
        200,
    ]
    assert [t for t in range(1, 111) if schedule.masks_at(t)] == list(range(15, 90, 5))


def test_adalora_initialisation_and_scaling():
    method = AdaLora(tiny_bert(), AdaLoraConfig(target_r=4, targets=TARGETS, alpha=32), HEAD)
    layer = method.layers["bert.encoder.layer.0.attention.self.query"]
    assert method.cfg.r == 6  # ceil(1.5 · target_r)
    assert torch.count_nonzero(layer.lora_E) == 0
    factors = torch.cat(
        [l.lora_A.flatten() for l in method.layers.values()] + [l.lora_B.flatten() for l in method.layers.values()]
    )
    assert factors.std().item() == pytest.approx(0.02, rel=0.1) and abs(factors.mean().item()) < 0.003
    assert layer.scaling == pytest.approx(32 / (6 + 1e-5), rel=1e-12)
    # r_init·(d_in + d_out + 1) per matrix: 4 square 32×32 (2 layers × q, v) and 2 of 32→48
    assert method.param_counts()["adapter"] == 6 * (4 * (32 + 32 + 1) + 2 * (32 + 48 + 1))


def test_adalora_schedule_that_cannot_fit_is_an_error():
    method = AdaLora(tiny_bert(), AdaLoraConfig(targets=TARGETS, t_init=5, t_final=5), HEAD)
    with pytest.raises(HarnessError) as error:
        method.start(8)
    assert str(error.value) == (
        "adalora: no budgeting phase: t_init (5 steps) must be < total steps − t_final (8 − 5 = 3); lower "
        "method.t_init/t_final or train longer"
    )
    method = AdaLora(tiny_bert(), AdaLoraConfig(targets=TARGETS), HEAD)
    with pytest.raises(HarnessError, match="start"):
        method.on_step_end(1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"target_r": 4, "r": 3}, r"target_r \(4\) must be <= the initial rank method.r \(3\)"),
        ({"target_r": 0}, "target_r must be a positive rank"),
        ({"beta1": 1.0}, r"beta1/beta2 must be in \(0, 1\)"),
        ({"delta_t": 0}, "delta_t must be >= 1"),
    ],
)
def test_adalora_bad_config_is_one_line(values, message):
    with pytest.raises(HarnessError, match=message):
        AdaLoraConfig(**values)


def test_schedule_error_fails_the_run_with_one_line(make_config):
    record = execute_run(make_config("method=adalora", "method.t_init=1", "method.t_final=1"))  # 2 steps
    assert record["status"] == "failed"
    assert record["error"].startswith("adalora: no budgeting phase: t_init (1 steps)")


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


def test_adalora_orthogonality_loss_keeps_the_adapters_dtype():
    """float64 beside a float64 base; fp32 beside a bf16 one (trained tensors stay fp32: methods/frozen.py)."""
    for base, adapters in [(torch.float64, torch.float64), (torch.bfloat16, torch.float32)]:
        method = adalora(model=tiny_bert().to(base))
        method.start(20)
        assert method.layers and {p.dtype for p in method.adapter_parameters()} == {adapters}
        assert method.extra_loss().dtype == adapters


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


def test_adalora_is_b_diag_e_a_over_the_initial_rank_with_pruned_triplets_zero():
    r, target_r, alpha = 3, 2, 6.0
    original, model, method = trained(
        "adalora",
        steps=12,
        total=12,
        r=r,
        target_r=target_r,
        alpha=alpha,
        t_init=2,
        t_final=3,
        delta_t=2,
        targets=LORA_TARGETS,
    )
    kept = {name: layer.kept.clone() for name, layer in method.layers.items()}
    assert sum(int(mask.sum()) for mask in kept.values()) == target_r * 6  # the final budget b_T
    for name, layer in method.layers.items():
        assert torch.all(layer.lora_E[~kept[name]] == 0), f"{name}: a pruned E_i is not zero"

    def reference(name, w0, layer):  # P Λ Q · α/(r + 1e-5), the official code's scale (PEFT's too)
        return w0 + alpha / (r + 1e-5) * layer.lora_B @ torch.diag(layer.lora_E) @ layer.lora_A

    check_linear_layers(original, model, method, reference)


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"target_r": 2, "targets": ["query", "value"]}, 2 * 2 * 3 * (32 + 32 + 1)),  # r_init = ceil(1.5·2) = 3
    ({"r": 4, "target_r": 1, "targets": ["intermediate.dense"]}, 2 * 4 * (32 + 48 + 1)),
    ({"r": 2, "target_r": 2, "targets": ["query", FFN_OUT]}, 2 * 2 * (65 + 81)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("adalora", values, adapter)
