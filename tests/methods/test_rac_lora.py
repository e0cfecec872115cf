"""RAC-LoRA chains: folding at link boundaries, fresh frozen factors, seeds, counts, optimizer state.

RAC-LoRA (tests that kill mutants): config bounds with their exact one-line
messages, LoRA's kaiming bound 1/√d_in for Chain of LoRA links, the frozen factor's std and
precision, the seeded generator being independent of the global RNG, link boundaries computed in
the test, and the optimizer reset on an empty state."""

import math

import pytest
import torch

from harness.errors import HarnessError
from methods.rac_lora import RacLora, RacLoraConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import LORA_TARGETS, build, check_adapter_count, check_linear_layers
from tests.training import train_steps as train_batches

HEAD = ["classifier"]
QUERY = "bert.encoder.layer.0.attention.self.query"


def train_steps(method, steps: int, total: int) -> torch.optim.Optimizer:
    return train_batches(method, lambda step: tiny_batch(seed=step), steps, total=total)


@pytest.mark.parametrize("frozen, trained", [("A", "B"), ("B", "A")])
def test_link_boundary_folds_the_update_and_restarts_with_a_fresh_frozen_factor(frozen, trained):
    method = chain(frozen=frozen, links=2)
    layer = method.layers[QUERY]
    assert torch.count_nonzero(getattr(layer, f"lora_{trained}")) == 0
    assert getattr(layer, f"lora_{frozen}").std().item() == pytest.approx(1.0, rel=0.3)  # N(0, 1)
    optimizer = train_steps(method, 1, total=4)  # the boundary comes after step 2: do step 2 by hand
    method.model(**tiny_batch(seed=2), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()
    weight, delta = layer.base.weight.detach().clone(), layer.delta_weight().detach().clone()
    old_frozen = getattr(layer, f"lora_{frozen}").detach().clone()
    before = method.model(**tiny_batch(seed=9)).logits
    method.on_step_end(2)
    assert torch.count_nonzero(delta) > 0
    assert torch.allclose(layer.base.weight, weight + delta, atol=1e-7)
    assert torch.count_nonzero(getattr(layer, f"lora_{trained}")) == 0
    assert not torch.equal(getattr(layer, f"lora_{frozen}"), old_frozen)
    assert torch.allclose(method.model(**tiny_batch(seed=9)).logits, before, atol=1e-5)  # outputs unchanged


def test_a_seed_reproduces_the_random_factors():
    first, second, other = chain(seed=3, links=2), chain(seed=3, links=2), chain(seed=4, links=2)
    assert torch.equal(first.layers[QUERY].lora_A, second.layers[QUERY].lora_A)
    assert not torch.equal(first.layers[QUERY].lora_A, other.layers[QUERY].lora_A)
    train_steps(first, 2, total=4)
    train_steps(second, 2, total=4)
    assert torch.equal(first.layers[QUERY].lora_A, second.layers[QUERY].lora_A)  # the second link's draw too


@pytest.mark.parametrize("frozen, per_matrix", [("A", 2 * 32), ("B", 2 * 32), ("none", 2 * (32 + 32))])
def test_trainable_params_per_link(frozen, per_matrix):
    assert chain(frozen=frozen).param_counts()["adapter"] == 4 * per_matrix  # 2 layers × (Wq, Wv), 32×32


def test_asymmetric_lora_keeps_its_frozen_factor_and_chain_of_lora_trains_both():
    asymmetric = chain(frozen="A", links=1)
    frozen = asymmetric.layers[QUERY].lora_A.detach().clone()
    train_steps(asymmetric, 4, total=4)
    assert torch.equal(asymmetric.layers[QUERY].lora_A, frozen)
    cola = chain(frozen="none", links=2)
    assert cola.layers[QUERY].lora_A.requires_grad and cola.layers[QUERY].lora_B.requires_grad
    train_steps(cola, 2, total=4)
    assert torch.count_nonzero(cola.layers[QUERY].lora_B) == 0  # restarted as LoRA after the boundary


@pytest.mark.parametrize("reset", [False, True])
def test_optimizer_state_is_kept_unless_reset(reset):
    method = chain(links=2, reset_optimizer=reset)
    optimizer = train_steps(method, 2, total=4)
    state = optimizer.state.get(method.layers[QUERY].lora_B, {})
    assert (len(state) == 0) == reset


def test_chain_errors():
    with pytest.raises(HarnessError, match="rac_lora: 5 links need at least as many steps; the run has 4"):
        chain(links=5).start(4)
    with pytest.raises(HarnessError, match="method.frozen must be one of A, B, none, got 'C'"):
        RacLoraConfig(frozen="C")


def test_chain_of_lora_with_a_gaussian_factor():
    method = chain(frozen="none", gaussian="B", links=2)
    layer = method.layers[QUERY]
    assert torch.count_nonzero(layer.lora_A) == 0 and layer.lora_B.std().item() == pytest.approx(1.0, rel=0.3)
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert method.param_counts()["adapter"] == 4 * 2 * (32 + 32)
    with pytest.raises(
        HarnessError, match="method.gaussian .* chooses the Gaussian factor of a chain with frozen: none"
    ):
        RacLoraConfig(frozen="A", gaussian="B")


def chain(model=None, seed: int = 0, **values) -> RacLora:
    torch.manual_seed(seed)
    model = model if model is not None else tiny_bert()
    torch.manual_seed(seed)
    return RacLora(model, RacLoraConfig(**{"r": 2, "alpha": 4, **values}), HEAD)


def message(**values) -> str:
    with pytest.raises(HarnessError) as error:
        RacLoraConfig(**values)
    return str(error.value)


def test_gaussian_factor_choices_with_frozen_none():
    for gaussian in ("A", "B", None):
        assert RacLoraConfig(frozen="none", gaussian=gaussian).gaussian == gaussian
    assert message(frozen="none", gaussian="a") == (
        "method.gaussian (A, B or null) chooses the Gaussian factor of a chain with frozen: none, got 'a' with "
        "frozen: none"
    )


def test_links_init_std_and_rslora_bounds():
    assert RacLoraConfig(links=1).links == 1
    assert message(links=0) == "method.links must be >= 1, got 0"
    assert message(init_std=0.0) == "method.init_std must be > 0, got 0.0"
    assert message(init_std=-1.0) == "method.init_std must be > 0, got -1.0"
    assert message(rslora=True) == "method.rslora is not used by rac_lora (scale α/r)"


def test_rank_error_names_the_method_and_the_layer():
    with pytest.raises(HarnessError) as error:
        chain(r=40, targets=["query"])
    assert str(error.value) == (
        "rac_lora: rank r=40 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_start_keeps_the_total_steps():
    method = chain(links=2)
    method.start(10)
    assert method.total_steps == 10


@pytest.mark.parametrize("total, links", [(10, 4), (7, 3), (9, 2), (5, 5), (12, 1)])
def test_links_split_the_steps_at_rounded_boundaries(total, links):
    """W0 moves (a fold) exactly at the steps round(k·T_steps/T), k = 1..T−1, computed here."""
    method = chain(links=links, frozen="A")
    method.start(total)
    expected = {round(k * total / links) for k in range(1, links)}
    layer = method.layers[QUERY]
    folds = set()
    for step in range(1, total + 1):
        with torch.no_grad():
            layer.lora_B.fill_(0.01)  # a non-zero update to fold
        before = layer.base.weight.detach().clone()
        method.on_step_end(step)
        if not torch.equal(before, layer.base.weight):
            folds.add(step)
    assert folds == expected


def test_chain_of_lora_links_restart_with_loras_kaiming_bound():
    """A ~ U(±1/√d_in) (kaiming-uniform with a = √5), at apply and at every fold, B = 0."""
    method = chain(frozen="none", links=3, targets=["query", "value", "intermediate.dense", "output.dense"])
    for _ in range(3):
        ratios = []
        for layer in method.layers.values():
            bound = 1 / math.sqrt(layer.base.in_features)
            ratios.append(layer.lora_A.detach().abs().max().item() / bound)
            assert torch.count_nonzero(layer.lora_B) == 0
        assert max(ratios) <= 1.0 and min(ratios) > 0.93
        for layer in method.layers.values():
            layer.end_link()


@pytest.mark.parametrize("values", [{"frozen": "none"}, {"frozen": "A"}, {"frozen": "none", "gaussian": "B"}])
def test_link_draws_come_from_the_seeded_generator_not_the_global_rng(values):
    """What the global RNG does between links (dropout, data order) does not change the next link's factors."""
    draws = []
    for consume in (False, True):
        method = chain(links=2, **values)
        if consume:
            torch.rand(1000)
        layer = method.layers[QUERY]
        layer.end_link()
        draws.append((layer.lora_A.detach().clone(), layer.lora_B.detach().clone()))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_frozen_factor_std_scales_with_init_std():
    a1 = chain(frozen="A", init_std=1.0).layers[QUERY].lora_A.detach()
    a3 = chain(frozen="A", init_std=3.0).layers[QUERY].lora_A.detach()
    torch.testing.assert_close(a3, 3.0 * a1)
    assert a3.std().item() == pytest.approx(3.0, rel=0.3)


def test_float64_frozen_factor_is_drawn_in_float64():
    """The Gaussian draw is made in the model's dtype: float64 values are not float32 values cast up."""
    model = tiny_bert().double()
    A = chain(model=model, frozen="A").layers[QUERY].lora_A.detach()
    assert A.dtype == torch.float64
    assert not torch.equal(A, A.float().double())


def test_learned_tensors_of_a_chain_without_frozen_factor():
    method = chain(frozen="none", targets=["query"])
    names = set(method.learned_tensors())
    assert f"{QUERY}.base.weight" in names
    assert not any(name.endswith("lora_none") for name in names)
    frozen = chain(frozen="B", targets=["query"])
    assert f"{QUERY}.lora_B" in set(frozen.learned_tensors())


def test_optimizer_reset_without_moments_yet():
    """reset_optimizer at a boundary reached before the optimizer holds any state is a no-op."""
    method = chain(links=2, reset_optimizer=True)
    optimizer = torch.optim.AdamW(method.adapter_parameters(), lr=1e-3)
    method.start(4, optimizer)
    method.on_step_end(2)
    assert len(optimizer.state) == 0


@pytest.mark.parametrize("frozen, gaussian", [("A", None), ("B", None), ("none", None), ("none", "B")])
def test_rac_lora_is_w0_plus_the_sum_of_every_links_update(frozen, gaussian):
    r, alpha, links, total = 2, 3.0, 3, 9
    boundaries = {round(k * total / links) for k in range(1, links)}  # 3 and 6
    folded = {}

    def record_link(step):  # the link's update, just before the method folds it
        if step in boundaries:
            for name, layer in method.layers.items():
                folded[name] = folded.get(name, 0) + (alpha / r) * (layer.lora_B @ layer.lora_A).detach()

    original, model, method = build(
        "rac_lora", r=r, alpha=alpha, links=links, frozen=frozen, gaussian=gaussian, targets=LORA_TARGETS
    )
    train_batches(method, lambda step: tiny_batch(seed=step), total, before_step_end=record_link)
    assert len(folded) == 6 and all(torch.count_nonzero(value) for value in folded.values())
    check_linear_layers(
        original, model, method, lambda name, w0, layer: w0 + folded[name] + (alpha / r) * layer.lora_B @ layer.lora_A
    )


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 2, "frozen": "A", "targets": ["intermediate.dense"]}, 2 * 2 * 48),  # r·d_out
    ({"r": 2, "frozen": "B", "targets": ["intermediate.dense"]}, 2 * 2 * 32),  # r·d_in
    ({"r": 2, "frozen": "none", "targets": ["intermediate.dense"]}, 2 * 2 * (32 + 48)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("rac_lora", values, adapter)
