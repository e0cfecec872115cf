"""The training loop: step plan, schedules, hook order, gradient accumulation, NaN handling."""

import math
from itertools import islice
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers

from harness.config.sections import TrainConfig
from harness.engine.loggers import NullLogger
from harness.engine.schedule import build_scheduler
from harness.engine.train import batch_indices, plan_steps, train
from harness.errors import HarnessError
from methods.lora import Lora, LoraConfig
from tasks import metrics
from tasks.base import Split, TaskData
from tasks.tokenize import tokenize
from tests.conftest import tiny_bert

CPU = torch.device("cpu")


class Tokens:
    """A stand-in tokenizer: words are ids (enough for the loop)."""

    name_or_path = "test-words"

    def __len__(self):
        return 100

    def __call__(self, texts, truncation=True, max_length=16):
        return {"input_ids": [[int(w) for w in t.split()][:max_length] for t in texts]}


def synthetic(n: int = 24) -> tuple[TaskData, dict]:
    rng = np.random.default_rng(0)
    texts = [(" ".join(str(x) for x in rng.integers(1, 100, size=rng.integers(3, 12))),) for _ in range(n)]
    labels = [i % 3 for i in range(n)]
    split = Split(texts, labels)
    task = TaskData("synthetic", {"train": split, "validation": split}, 3, metrics.accuracy, "accuracy", "validation")
    encoded = {name: tokenize(s, Tokens(), 16, False) for name, s in task.splits.items()}
    return task, encoded


def settings(**train) -> SimpleNamespace:
    return SimpleNamespace(
        train=TrainConfig(
            **{"max_steps": 2, "batch_size": 8, "max_grad_norm": None, "lr": 5e-4, "head_lr": 5e-4, **train}
        ),
        seed=0,
        optimizer=None,  # the default, AdamW
    )


def run_loop(method, logger=None, every: int = 1, **train_cfg):
    task, encoded = synthetic()
    run = settings(**train_cfg)
    run.operational = SimpleNamespace(logger=SimpleNamespace(every=every))
    return train(method.model, method, task, encoded, run, CPU, None, 0, logger or NullLogger(), False)


class ListLogger(NullLogger):
    def __init__(self):
        self.logged = []

    def log(self, step, epoch, values):
        self.logged.append((step, epoch, dict(values)))


def test_plan_counts_steps_epochs_and_warmup():
    plan = plan_steps(TrainConfig(epochs=3, batch_size=16, grad_accum=2, warmup_ratio=0.1, lr=1e-3, head_lr=1e-3), 1000)
    assert plan.steps_per_epoch == math.ceil(1000 / 32) == 32 and plan.total_steps == 96
    assert plan.eval_every == 32 and plan.warmup_steps == 10
    assert plan_steps(TrainConfig(max_steps=7, eval_every=5, lr=1e-3, head_lr=1e-3), 1000).total_steps == 7


def test_batch_order_depends_only_on_seed_and_covers_each_epoch():
    def take(seed):
        return [indices for _, indices in islice(batch_indices(10, 4, seed), 6)]

    first, again, other = take(3), take(3), take(4)
    assert first == again and first != other
    assert sorted(sum(first[:3], [])) == list(range(10)) and sorted(sum(first[3:], [])) == list(range(10))


@pytest.mark.parametrize(
    "kind,name", [("linear", "linear"), ("cosine", "cosine"), ("constant", "constant_with_warmup")]
)
def test_schedules_equal_transformers(kind, name):
    ours_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ours = build_scheduler(ours_opt, kind, 5, 40)
    theirs = transformers.get_scheduler(name, theirs_opt, num_warmup_steps=5, num_training_steps=40)
    for _ in range(40):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12)
        ours_opt.step(), theirs_opt.step(), ours.step(), theirs.step()
    assert ours.get_last_lr()[0] == pytest.approx(0.0 if kind != "constant" else 1.0)


class Recording(Lora):
    """LoRA that records the loop's calls to its hooks."""

    def apply(self):
        super().apply()
        self.events = []

    def extra_loss(self):
        self.events.append("extra_loss")
        return None

    def on_step_end(self, step):
        has_grads = all(p.grad is not None for p in self.adapter_parameters())
        self.events.append(f"step_end {step} grads={has_grads}")


def test_hooks_run_in_order_with_gradients_present():
    method = Recording(tiny_bert(), LoraConfig(r=2), ["classifier"])
    outcome = run_loop(method, max_steps=2, grad_accum=2)
    assert method.events == [
        "extra_loss",
        "extra_loss",
        "step_end 1 grads=True",
        "extra_loss",
        "extra_loss",
        "step_end 2 grads=True",
    ]
    assert outcome.steps == 2 and outcome.examples == 32
    assert all(p.grad is None for p in method.adapter_parameters())  # zero_grad after the hook


def test_extra_loss_is_added_to_the_task_loss():
    class Penalised(Lora):
        def extra_loss(self):
            return 1000 * sum(p.pow(2).sum() for p in self.adapter_parameters())

    plain = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    penalised = Penalised(tiny_bert(), LoraConfig(r=2), ["classifier"])
    run_loop(plain, max_steps=3, lr=1e-2)
    run_loop(penalised, max_steps=3, lr=1e-2)
    norm = lambda m: sum(p.norm() for p in m.adapter_parameters())  # noqa: E731
    assert norm(penalised) < norm(plain)


def test_gradient_accumulation_equals_one_big_batch():
    big = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    accumulated = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    run_loop(big, max_steps=1, batch_size=8, grad_accum=1, lr=1e-2, warmup_ratio=0.0)
    run_loop(accumulated, max_steps=1, batch_size=4, grad_accum=2, lr=1e-2, warmup_ratio=0.0)
    for a, b in zip(big.model.parameters(), accumulated.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_evaluations_every_n_steps_and_at_the_end_with_best_tracked():
    method = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    outcome = run_loop(method, max_steps=5, eval_every=2)
    steps = [point["step"] for point in outcome.curve if point["split"] == "validation"]
    assert steps == [2, 4, 5]
    scores = {p["step"]: p["values"]["accuracy"] for p in outcome.curve if p["split"] == "validation"}
    assert outcome.best["validation"]["accuracy"] == max(scores.values())
    assert scores[outcome.best_step] == max(scores.values())
    assert outcome.final["validation"]["accuracy"] == scores[5]


def test_non_finite_loss_stops_with_a_clear_error():
    method = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    with torch.no_grad():
        method.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(HarnessError, match="loss is nan at step 1"):
        run_loop(method)


def test_losses_read_every_n_steps_log_exactly_what_reading_every_step_logs():
    """logger.every: the loop reads the device's losses once per n steps (and before each evaluation),
    yet logs every step's loss, learning rate and the curve exactly as reading every step does."""
    outcomes, logs = [], []
    for every in (1, 4):
        logger = ListLogger()
        method = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
        outcomes.append(
            run_loop(method, logger=logger, every=every, max_steps=7, eval_every=3, grad_accum=2, batch_size=4)
        )
        logs.append(logger.logged)
    assert logs[0] == logs[1] and len([entry for entry in logs[0] if "train/loss" in entry[2]]) == 7
    assert outcomes[0].curve == outcomes[1].curve


def test_a_non_finite_loss_read_late_still_names_its_step():
    method = Lora(tiny_bert(), LoraConfig(r=2), ["classifier"])
    with torch.no_grad():
        method.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(HarnessError, match="loss is nan at step 1;"):
        run_loop(method, every=5, max_steps=5)
