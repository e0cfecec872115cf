"""`+train.compile=true` (harness/engine/compiled.py): a compiled model computes what the eager model computes.

The reference is the same method on the same model run eagerly (same weights, same dropout masks). Two backends:
- aot_eager (dynamo's graph capture and AOTAutograd's joint forward-backward graph, run by eager kernels): it draws
  dropout from torch's own stream, so the comparison holds in train mode with dropout on; this is where a method's
  Python (hooks, custom autograd Functions, in-place updates, state read in the forward) meets the tracer. Outputs
  and gradients within 1e-5 (measured: 0 for LoRA, DoRA, InCA and MEFT).
- inductor (the backend runs use): generated kernels that fuse and reorder floating-point work, and its own
  dropout stream; compared without dropout, within 1e-5 absolute + 1e-4 relative in fp32.
Compiling is slow on a CPU (dynamo's first trace alone is tens of seconds), so CI runs LoRA's config on aot_eager and
a whole compiled run on aot_eager (config key to record: the same scores as the eager run, under another run key),
both `slow`; every other method's config on aot_eager (34 configs: 2,037 s on 2 loaded cores, all within 1e-5),
LoRA and DoRA on inductor, and a whole run on inductor are `exhaustive`.
"""

import pytest
import torch

from harness.engine.compiled import compile_forward, refuse_compile
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.models.storage import train_in_fp32
from methods import build_method
from tests.methods.test_invariants import CONFIGS, HEAD, batch_for, method_node, model_for, perturb_trainable

REPRESENTATIVE = ["lora"]  # in `slow`; the rest are exhaustive


def outputs_and_grads(name: str, backend: str | None, train: bool) -> tuple[torch.Tensor, dict]:
    """`name` applied to its tiny model (perturbed so every tensor has a gradient), compiled on `backend` (None:
    eager); one forward (seeded dropout) and the backward of a squared-output loss."""
    model = model_for(name)
    torch.manual_seed(100)
    build_method(model, method_node(name), HEAD)
    train_in_fp32(model)
    perturb_trainable(model)
    if backend is not None:
        compile_forward(model, backend)
    model.train(train)
    torch.manual_seed(5)
    logits = model(**batch_for(name)).logits
    logits.pow(2).sum().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def assert_equal_to_eager(name: str, backend: str, train: bool) -> None:
    torch._dynamo.reset()
    eager, eager_grads = outputs_and_grads(name, None, train)
    compiled, compiled_grads = outputs_and_grads(name, backend, train)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    assert compiled_grads.keys() == eager_grads.keys()
    for param, grad in eager_grads.items():
        assert grad is not None and compiled_grads[param] is not None, param
        torch.testing.assert_close(compiled_grads[param], grad, atol=1e-5, rtol=1e-4, msg=param)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow if name in REPRESENTATIVE else pytest.mark.exhaustive)
        for name in CONFIGS
    ],
)
def test_a_method_compiled_for_training_equals_it_eager_dropout_included(name):
    assert_equal_to_eager(name, "aot_eager", train=True)


@pytest.mark.exhaustive
@pytest.mark.parametrize("name", ["lora", "dora"])
def test_inductor_kernels_equal_eager_without_dropout(name):
    assert_equal_to_eager(name, "inductor", train=False)


@pytest.mark.parametrize(
    "backend",
    [pytest.param("aot_eager", marks=pytest.mark.slow), pytest.param("inductor", marks=pytest.mark.exhaustive)],
)
def test_a_compiled_run_succeeds_under_its_own_run_key(make_config, monkeypatch, backend):
    monkeypatch.setattr("harness.engine.compiled.BACKEND", backend)
    plain = execute_run(make_config("train.max_steps=2"))
    compiled = execute_run(make_config("train.max_steps=2", "+train.compile=true"))
    assert plain["status"] == compiled["status"] == "success", compiled.get("error")
    assert compiled["config"]["train"]["compile"] is True and "compile" not in plain["config"]["train"]
    assert compiled["run_key"] != plain["run_key"]  # compiled dropout draws from another stream: not the same run
    assert compiled["params"]["adapter"] == plain["params"]["adapter"]
    if backend == "aot_eager":  # torch's kernels and dropout stream: the eager run's scores
        assert compiled["metrics"]["final"] == plain["metrics"]["final"]
    assert 0 <= compiled["metrics"]["final"]["test"]["accuracy"] <= 1


@pytest.mark.parametrize(
    "fsdp, processes, message",
    [
        (True, 2, "train.compile=true with fsdp=true: a sharded model is not compiled; leave one of them off"),
        (
            False,
            2,
            "train.compile=true in a run over 2 processes: data-parallel runs are not compiled; run one process or "
            "leave train.compile false",
        ),
    ],
)
def test_runs_the_compiled_forward_cannot_own_are_refused_in_one_line(fsdp, processes, message):
    with pytest.raises(HarnessError) as error:
        refuse_compile(fsdp, processes)
    assert str(error.value) == message
    refuse_compile(False, 1)  # one process, unsharded: compiled
