"""Gradient checkpointing (`+train.gradient_checkpointing=true`): the same gradients bit for bit, fewer saved
activations, and a one-line error where the model or the method cannot recompute its blocks."""

import pytest
import torch

from harness.engine.recompute import recompute_activations
from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.lora import Lora, LoraConfig
from tests.conftest import tiny_batch, tiny_bert


def lora_on_tiny_bert(checkpointed: bool) -> Lora:
    model = tiny_bert(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    if checkpointed:
        recompute_activations(model, "tiny_bert")
    method = Lora(model, LoraConfig(r=4, alpha=8.0, targets=["query", "value"]), ["classifier"])
    method.train_mode()
    return method


def saved_bytes_and_gradients(method: Lora) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for the backward of one forward (each storage once), and the gradients it gives."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    torch.manual_seed(7)  # the same dropout masks on both sides
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = method.model(**tiny_batch(batch=8, length=32)).logits
    logits.pow(2).sum().backward()
    return sum(storages.values()), {n: p.grad for n, p in method.model.named_parameters() if p.requires_grad}


def test_checkpointed_blocks_give_the_same_gradients_bit_for_bit_from_fewer_saved_activations():
    plain_bytes, plain = saved_bytes_and_gradients(lora_on_tiny_bert(False))
    kept_bytes, checkpointed = saved_bytes_and_gradients(lora_on_tiny_bert(True))
    assert plain.keys() == checkpointed.keys() and len(plain) == 2 * 2 * 2 + 2
    assert all(torch.equal(plain[name], checkpointed[name]) for name in plain)  # dropout replayed, same order
    assert kept_bytes < plain_bytes / 2  # each block keeps its input only (measured: see the bench)


def test_a_run_with_checkpointing_ends_as_the_plain_run(make_config):
    dropout = ["++model.overrides.hidden_dropout_prob=0.1", "train.max_steps=3"]
    plain = execute_run(make_config(*dropout))
    checkpointed = execute_run(make_config(*dropout, "+train.gradient_checkpointing=true"))
    assert plain["status"] == checkpointed["status"] == "success", checkpointed.get("error")
    assert checkpointed["config"]["train"]["gradient_checkpointing"] is True
    assert checkpointed["params"]["trainable_sha256"] == plain["params"]["trainable_sha256"]
    assert checkpointed["metrics"]["final"] == plain["metrics"]["final"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["method=meft"],
            "train.gradient_checkpointing=true: method 'meft' rebuilds the encoder's forward and backward (it keeps "
            "no block activations already); leave it false",
        ),
        (
            ["method=inca"],
            "train.gradient_checkpointing=true: method 'inca' runs the backbone under no_grad (no backward through it "
            "to recompute); leave it false",
        ),
    ],
)
def test_a_method_that_does_not_backpropagate_through_the_blocks_is_refused_in_one_line(
    make_config, overrides, message
):
    record = execute_run(make_config(*overrides, "+train.gradient_checkpointing=true"))
    assert record["status"] == "failed" and record["error"] == message


def test_a_model_without_checkpointing_of_its_own_is_refused_in_one_line():
    from tests.conftest import tiny_cnn

    with pytest.raises(HarnessError) as error:
        recompute_activations(tiny_cnn(), "tiny_cnn")
    assert str(error.value) == (
        "train.gradient_checkpointing=true: model 'tiny_cnn' has no gradient checkpointing of its own (the text and "
        "decoder models have: transformers' blocks); leave it false"
    )
