"""RAC-LoRA chains: folding at link boundaries, fresh frozen factors, seeds, counts, optimizer state."""

import pytest
import torch

from harness.errors import HarnessError
from methods.rac_lora import RacLora, RacLoraConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.training import train_steps as train_batches

HEAD = ["classifier"]
QUERY = "bert.encoder.layer.0.attention.self.query"


def chain(seed: int = 0, **values) -> RacLora:
    torch.manual_seed(seed)
    model = tiny_bert()
    torch.manual_seed(seed)
    return RacLora(model, RacLoraConfig(**{"r": 2, "alpha": 4, **values}), HEAD)


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
