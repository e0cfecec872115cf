"""AdaLoRA and dynamic-rank DoRA: equality with PEFT's AdaLoRA (outputs, orthogonality loss, masks
after a fixed sequence of steps), budgets hitting their schedules, dynamic DoRA against its
reference code's formulas and against LoRA, and the counts written to the record.

AdaLoRA and dynamic-rank DoRA (tests that kill mutants): config bounds and
their exact one-line messages, schedule keys named in errors, the orthogonality and equilibrium
regularizers at weight 1 computed in the test, the importance EMA of dynamic DoRA against shares
computed from the dense per-component updates, and its pruning window boundaries."""

import json
import math
from pathlib import Path

import peft
import pytest
import torch

from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.adalora import AdaLoRA, AdaLoraConfig, BudgetSchedule
from methods.budget import schedule_steps
from methods.dora_dynamic import DoraDynamic, DoraDynamicConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.test_lora_family import peft_layer, peft_lora

HEAD = ["classifier"]
TARGETS = ["query", "value", "intermediate.dense"]  # 32→32, 32→32, 32→48 in tiny_bert; 6 matrices


def labels(step: int) -> torch.Tensor:
    return torch.tensor([step % 3, (step + 1) % 3, 2, 0])


def adapter_params(method):
    return [p for layer in method.layers.values() for p in (layer.lora_A, layer.lora_E, layer.lora_B)]


# -- AdaLoRA ------------------------------------------------------------------------------------


def adalora_pair(total_steps=14, t_init=2, t_final=3, delta_t=2, orth_reg=0.3):
    """Our AdaLoRA and PEFT's on the same float64 tiny BERT, with the same factors (E non-zero)."""
    ours = AdaLoRA(
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
    method = AdaLoRA(tiny_bert(), AdaLoraConfig(target_r=4, targets=TARGETS, alpha=32), HEAD)
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
    method = AdaLoRA(tiny_bert(), AdaLoraConfig(targets=TARGETS, t_init=5, t_final=5), HEAD)
    with pytest.raises(
        HarnessError, match=r"no budgeting phase: t_init \(5 steps\) must be < total steps − t_final \(8 − 5 = 3\)"
    ):
        method.start(8)
    method = AdaLoRA(tiny_bert(), AdaLoraConfig(targets=TARGETS), HEAD)
    with pytest.raises(HarnessError, match="start"):
        method.on_step_end(1)


def test_schedule_points_are_steps_or_fractions():
    assert schedule_steps(0.12, 100, "t_init") == 12
    assert schedule_steps(600, 100, "t_init") == 600
    assert schedule_steps(0, 100, "t_init") == 0
    for bad in (1.5, -0.1):
        with pytest.raises(HarnessError, match="method.t_init must be a whole number of steps or a fraction"):
            schedule_steps(bad, 100, "t_init")


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


# -- through the harness --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adalora", "dora_dynamic"])
def test_record_holds_initial_and_final_counts_and_ranks(make_config, name):
    cfg = make_config(
        f"method={name}", "train.max_steps=8", "method.targets=[query,value]", "method.delta_t=1", "method.target_r=1"
    )
    record = execute_run(cfg)
    assert record["status"] == "success", record.get("error")
    params, ranks = record["params"], record["params"]["ranks_final"]
    assert len(ranks) == 4 and sum(ranks.values()) == 4 * 1  # target_r · matrices (32×32 each)
    assert params["adapter"] == 4 * 2 * (32 + 32 + 1)  # initial rank ceil(1.5) = 2
    assert params["adapter_final"] == 4 * (32 + 32 + 1)
    saved = json.loads(Path(cfg.results_dir, "runs", f"{record['run_key']}.json").read_text())
    assert saved["params"]["adapter_final"] == params["adapter_final"]


def test_schedule_error_fails_the_run_with_one_line(make_config):
    record = execute_run(make_config("method=adalora", "method.t_init=1", "method.t_final=1"))  # 2 steps
    assert record["status"] == "failed"
    assert record["error"].startswith("adalora: no budgeting phase: t_init (1 steps)")


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
