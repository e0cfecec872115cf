"""LoRA²: the dense reference (bb·aa) diag(E) (B·A)·α/(r0 + 1e-5) with pruned triplets zero, the allocation
against the reference code's RankAllocator math written here (scores on E, aa and B only), the four-term
orthogonality loss, initialisation, closed-form counts (and the paper's 0.72 % of DeBERTaV3-base), and every
config error with its exact one-line message."""

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods import METHODS
from methods.lora2 import Lora2, Lora2Config
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    FFN_OUT,
    LORA_TARGETS,
    TARGETS,
    check_adapter_count,
    check_linear_layers,
    labels,
    message,
    trained,
)
from tests.training import settings

HEAD = ["classifier"]
FACTORS = ("A", "E", "B", "aa", "bb")


def lora2(model=None, **values) -> Lora2:
    return Lora2(
        model if model is not None else tiny_bert(),
        Lora2Config(**{"targets": TARGETS, "r": 4, "target_r": 2, "k": 3, **values}),
        HEAD,
    )


def lora_params(method) -> list[torch.nn.Parameter]:
    return [getattr(layer, f"lora_{factor}") for layer in method.layers.values() for factor in FACTORS]


# -- the update ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r, k", [(3, 4), (4, 2)])  # k above r (the reference's CoLA: r 4, k 8) and below
def test_lora2_is_bb_aa_diag_e_b_a_over_r0_with_pruned_triplets_zero(r, k):
    target_r, alpha = 2, 6.0
    original, model, method = trained(
        "lora2",
        steps=12,
        total=12,
        r=r,
        target_r=target_r,
        k=k,
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

    def reference(name, w0, layer):  # P diag(E) Q · α/(r0 + 1e-5), P = bb·aa, Q = B·A (reference forward)
        P, Q = layer.lora_bb @ layer.lora_aa, layer.lora_B @ layer.lora_A
        assert P.shape == (w0.shape[0], r) and Q.shape == (r, w0.shape[1])
        return w0 + alpha / (r + 1e-5) * P @ torch.diag(layer.lora_E) @ Q

    check_linear_layers(original, model, method, reference)


def test_lora2_initialisation_and_scaling():
    method = Lora2(tiny_bert(), Lora2Config(targets=TARGETS, r=6, target_r=4, k=5, alpha=32), HEAD)
    layer = method.layers["bert.encoder.layer.0.intermediate.dense"]  # 32 → 48
    shapes = {factor: tuple(getattr(layer, f"lora_{factor}").shape) for factor in FACTORS}
    assert shapes == {"A": (5, 32), "E": (6,), "B": (6, 5), "aa": (5, 6), "bb": (48, 5)}
    assert layer.kept.tolist() == [True] * 6
    assert layer.scaling == pytest.approx(32 / (6 + 1e-5), rel=1e-12)
    for factor in ("A", "B", "aa", "bb"):  # N(0, 0.02²) each (reference reset_parameters)
        values = torch.cat([getattr(l, f"lora_{factor}").flatten() for l in method.layers.values()])
        assert values.std().item() == pytest.approx(0.02, rel=0.15), factor
        assert abs(values.mean().item()) < 0.004, factor
    assert all(torch.count_nonzero(l.lora_E) == 0 for l in method.layers.values())


def test_lora2_defaults_are_the_reference_scripts():
    cfg = Lora2Config()
    assert (cfg.r, cfg.target_r, cfg.k, cfg.alpha, cfg.orth_reg, cfg.beta1, cfg.beta2, cfg.dropout) == (
        8,
        3,
        8,
        32,
        0.1,
        0.85,
        0.85,
        0.0,
    )
    assert Lora2Config(r=None, target_r=4).r == 6  # null: ceil(1.5·target_r), AdaLoRA's


# -- orthogonality ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.1, 0.3])
def test_lora2_orthogonality_loss_is_the_mean_of_the_four_frobenius_distances(gamma):
    method = lora2(model=tiny_bert().double(), orth_reg=gamma)
    norms = []
    for layer in method.layers.values():
        A, B, aa, bb = (getattr(layer, f"lora_{f}").detach() for f in ("A", "B", "aa", "bb"))
        eye = torch.eye(3, dtype=torch.float64)  # every Gram is k×k
        for gram in (A @ A.T, B.T @ B, aa @ aa.T, bb.T @ bb):
            norms.append(torch.sqrt(((gram - eye) ** 2).sum()))
    assert len(norms) == 4 * 6
    assert method.extra_loss().item() == pytest.approx(gamma * sum(norms).item() / len(norms), rel=1e-12)


def test_lora2_without_orthogonality_weight_adds_no_loss():
    assert lora2(orth_reg=0.0).extra_loss() is None


def test_lora2_orthogonality_loss_keeps_the_adapters_dtype():
    """float64 beside a float64 base; fp32 beside a bf16 one (trained tensors stay fp32: methods/frozen.py)."""
    for base, adapters in [(torch.float64, torch.float64), (torch.bfloat16, torch.float32)]:
        method = lora2(model=tiny_bert().to(base))
        assert {p.dtype for p in method.adapter_parameters()} == {adapters}
        assert method.extra_loss().dtype == adapters


def test_lora2_mask_and_orthogonality_loss_on_the_base_device():
    """A backbone on another device than the default (here meta): the kept-triplet mask is created beside the
    factors, and the loss's identity matrices beside the Gram matrices (a CPU identity cannot meet them)."""
    method = lora2(model=tiny_bert().to("meta"))
    assert {layer.kept.device.type for layer in method.layers.values()} == {"meta"}
    assert {layer.lora_E.device.type for layer in method.layers.values()} == {"meta"}
    loss = method.extra_loss()
    assert loss.device.type == "meta" and loss.shape == ()


# -- the allocation -----------------------------------------------------------------------------------------


def test_lora2_allocation_follows_the_reference_rank_allocator():
    """RankAllocator.update_ipt / mask_to_target_rank (LoRA2.py), written out: EMAs of |p·∇p| on E, aa and B
    only, S_i = s(E_i) + mean_j s(aa[j, i]) + mean_j s(B[i, j]), E_i zeroed at or below the (b0 − b(t))-th
    smallest score on AdaLoRA's cubic schedule, the last mask at T − t_final held afterwards."""
    total, t_init, t_final, delta_t, r, target_r = 12, 2, 3, 2, 4, 2
    model = tiny_bert().double()
    method = lora2(model=model, r=r, target_r=target_r, t_init=t_init, t_final=t_final, delta_t=delta_t)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_E.normal_(generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.SGD(lora_params(method), lr=0.5)
    method.start(total, optimizer)
    freeze, b0, bT = total - t_final, r * 6, target_r * 6
    ipt, unc, masked_at = {}, {}, []
    for step in range(1, total + 1):
        (model(**tiny_batch(seed=step), labels=labels(step)).loss + method.extra_loss()).backward()
        optimizer.step()
        if step < freeze:
            for name, layer in method.layers.items():
                for factor in ("E", "aa", "B"):
                    p = getattr(layer, f"lora_{factor}")
                    now = (p * p.grad).abs().detach()
                    ipt[name, factor] = 0.85 * ipt.get((name, factor), 0) + 0.15 * now
                    unc[name, factor] = 0.85 * unc.get((name, factor), 0) + 0.15 * (now - ipt[name, factor]).abs()
        budget = None
        if step == freeze:
            budget = bT
        elif t_init < step < freeze and step % delta_t == 0:
            budget = int(bT + (b0 - bT) * (1 - (step - t_init) / (total - t_final - t_init)) ** 3)
        before = {name: (layer.lora_E.detach().clone(), layer.kept.clone()) for name, layer in method.layers.items()}
        method.on_step_end(step)
        if budget is not None:
            masked_at.append(step)
            s = {key: ipt[key] * unc[key] for key in ipt}
            scores = {name: s[name, "E"] + s[name, "aa"].mean(dim=0) + s[name, "B"].mean(dim=1) for name in before}
            threshold = torch.cat(list(scores.values())).sort().values[b0 - budget - 1]
            for name, layer in method.layers.items():
                assert torch.equal(layer.kept, scores[name] > threshold), f"{name} at step {step}"
                assert torch.equal(layer.lora_E, torch.where(layer.kept, before[name][0], 0.0))
            assert sum(int(layer.kept.sum()) for layer in method.layers.values()) == budget
        else:
            for name, layer in method.layers.items():
                assert torch.equal(layer.kept, before[name][1])
                held = step > freeze
                expected = torch.where(layer.kept, before[name][0], 0.0) if held else before[name][0]
                assert torch.equal(layer.lora_E, expected), f"{name} at step {step}"
        optimizer.zero_grad()
    assert masked_at == [4, 6, 8, 9]  # t % ΔT == 0 after t_init, then T − t_final
    assert method.sensitivity == {} and method.uncertainty == {}  # scores dropped once the mask is frozen


def test_lora2_scores_only_e_aa_and_b():
    method = lora2(t_init=1, t_final=2, delta_t=1)
    method.start(10)
    method.on_step_end(1)  # no backward: zero importance, but every scored entry has its averages
    assert sorted({factor for _, factor in method.sensitivity}) == ["B", "E", "aa"]
    assert {name for name, _ in method.sensitivity} == set(method.layers)
    layer = method.layers["bert.encoder.layer.0.attention.self.query"]
    assert method.sensitivity["bert.encoder.layer.0.attention.self.query", "aa"].shape == layer.lora_aa.shape


# -- parameter counts ---------------------------------------------------------------------------------------


def per_matrix(d_in: int, d_out: int, k: int, r: int) -> int:
    return k * (d_in + d_out) + r * (2 * k + 1)


# tiny BERT: query/value 32×32, intermediate 32→48, FFN output 48→32; 2 layers
COUNTS = [
    ({"r": 8, "k": 8, "target_r": 3, "targets": ["query", "value"]}, 4 * per_matrix(32, 32, 8, 8)),
    ({"r": 4, "k": 8, "target_r": 1, "targets": ["intermediate.dense"]}, 2 * per_matrix(32, 48, 8, 4)),
    (
        {"r": 3, "k": 2, "target_r": 2, "targets": ["query", FFN_OUT]},
        2 * sum(per_matrix(d, 32, 2, 3) for d in (32, 48)),
    ),
    ({"r": 2, "k": 1, "target_r": 1, "targets": ["value"]}, 2 * per_matrix(32, 32, 1, 2)),  # k = 1: rank-1 P, Q
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("lora2", values, adapter)


def test_the_reported_count_after_pruning_is_the_shared_factors_plus_the_kept_triplets():
    _, _, method = trained(
        "lora2", steps=8, total=8, r=3, target_r=2, k=4, t_init=1, t_final=2, delta_t=1, targets=TARGETS
    )
    kept = method.allocation()
    assert sum(kept.values()) == 2 * 6 and len(set(kept.values())) > 1  # pruned unevenly across matrices
    shapes = {name: (layer.base.in_features, layer.base.out_features) for name, layer in method.layers.items()}
    expected = sum(4 * (d_in + d_out) + kept[name] * (2 * 4 + 1) for name, (d_in, d_out) in shapes.items())
    assert method.param_counts()["adapter"] == expected
    assert method.param_counts()["trainable"] == expected + 32 * 3 + 3


def test_deberta_v3_base_count_is_the_papers_0_72_percent():
    """6 matrices × 12 layers of DeBERTaV3-base (hidden 768, FFN 3072), k = r = 8: the closed form, and the
    method's trainable tensors on the real architecture built on the meta device (184 M parameters)."""
    d, ffn, k, r = 768, 3072, 8, 8
    formula = 12 * (4 * per_matrix(d, d, k, r) + per_matrix(d, ffn, k, r) + per_matrix(ffn, d, k, r))
    assert formula == 1_336_896
    config = DebertaV2Config(
        vocab_size=128100,
        hidden_size=d,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=ffn,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        num_labels=2,
    )
    with torch.device("meta"):
        model = DebertaV2ForSequenceClassification(config)
        total = sum(p.numel() for p in model.parameters())
        targets = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", FFN_OUT]
        method = Lora2(model, Lora2Config(targets=targets, r=r, k=k), ["pooler", "classifier"])
    assert len(method.layers) == 72
    assert sum(p.numel() for p in method.adapter_parameters()) == formula
    assert round(total / 1e6) == 184
    assert round(100 * formula / total, 2) == 0.72


# -- config and schedule errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, text",
    [
        ({"k": 0}, "method.k must be a positive inner rank, got 0"),
        ({"k": -2}, "method.k must be a positive inner rank, got -2"),
        ({"target_r": 9}, "method.target_r (9) must be <= the initial rank method.r (8)"),
        ({"target_r": 0}, "method.target_r must be a positive rank, got 0"),
        ({"r": 0, "target_r": 1}, "method.r must be a positive rank, got 0"),
        ({"r": -1, "target_r": -1}, "method.target_r must be a positive rank, got -1"),
        ({"alpha": 0}, "method.alpha must be > 0, got 0"),
        ({"dropout": 1.0}, "method.dropout must be in [0, 1), got 1.0"),
        ({"beta1": 1.0}, "method.beta1/beta2 must be in (0, 1), got 1.0, 0.85"),
        ({"beta2": 0.0}, "method.beta1/beta2 must be in (0, 1), got 0.85, 0.0"),
        ({"orth_reg": -0.1}, "method.orth_reg must be >= 0, got -0.1"),
        ({"delta_t": 0}, "method.delta_t must be >= 1 step, got 0"),
    ],
)
def test_lora2_bad_config_is_one_line(values, text):
    assert message(values, Lora2Config) == text


def test_lora2_schedule_that_cannot_fit_names_the_method():
    method = lora2(t_init=5, t_final=5)
    with pytest.raises(HarnessError) as error:
        method.start(8)
    assert str(error.value) == (
        "lora2: no budgeting phase: t_init (5 steps) must be < total steps − t_final (8 − 5 = 3); lower "
        "method.t_init/t_final or train longer"
    )
    with pytest.raises(HarnessError) as error:
        lora2().on_step_end(1)
    assert str(error.value) == "lora2: start(total_steps) must be called before training steps"


def test_lora2_rank_above_the_layer_is_an_error():
    with pytest.raises(HarnessError) as error:
        lora2(r=40, target_r=2)
    assert str(error.value) == (
        "lora2: rank r=40 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_lora2_decays_its_five_factors_and_the_head_weight_not_the_head_bias():
    method = lora2()
    names = {id(p): n for n, p in method.model.named_parameters()}
    decays = {
        names[id(p)]: group["weight_decay"]
        for group in method.param_groups(settings(weight_decay=0.25))
        for p in group["params"]
    }
    assert len(decays) == 5 * 6 + 2
    for name, value in decays.items():
        assert value == (0.0 if name == "classifier.bias" else 0.25), name


def test_the_class_declares_a_mergeable_step_hook_adapter():
    capabilities = METHODS["lora2"].capabilities
    assert capabilities.step_hook and capabilities.mergeable and capabilities.identity_at_init
    assert capabilities.decay == "trainer" and capabilities.adapts(torch.nn.Linear)


def test_lora2_runs_and_records_its_final_count(make_config):
    record = execute_run(make_config("method=lora2"))  # 2 steps: the mask freezes at step 1 (t_final 0.5)
    assert record["status"] == "success", record.get("error")
    params = record["params"]
    # model=tiny_bert (hidden 32, FFN 64), 2 layers × (4 of 32×32, 32→64, 64→32), k = r0 = 8, 3 triplets kept on average
    shared = 2 * 8 * (4 * 64 + 2 * 96)
    assert params["adapter"] == shared + 12 * 8 * 17
    assert params["adapter_final"] == shared + 12 * 3 * 17


def test_lora2_schedule_error_fails_the_run_with_one_line(make_config):
    record = execute_run(make_config("method=lora2", "method.t_init=1", "method.t_final=1"))  # 2 steps
    assert record["status"] == "failed"
    assert record["error"] == (
        "lora2: no budgeting phase: t_init (1 steps) must be < total steps − t_final (2 − 1 = 1); lower "
        "method.t_init/t_final or train longer"
    )
