"""Step-level checkpoints (harness/engine/checkpoint.py): a run killed after a checkpoint continues from it and
ends bit for bit where the uninterrupted run ends (CPU), for methods with optimizer state only and for
those with running state of their own (AdaLoRA, dynamic DoRA, RAC-LoRA) or a data-dependent init (LoRA-GA)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import harness.engine.train
from harness.config.sections import CheckpointConfig
from harness.engine.checkpoint import Checkpointer
from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.adalora import AdaLora, AdaLoraConfig
from methods.dora_dynamic import DoraDynamic, DoraDynamicConfig
from methods.rac_lora import RacLora, RacLoraConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.training import settings, train_steps

RUN = [
    "train.max_steps=9",
    "train.eval_every=4",
    "task.limit_train=48",
    "task.limit_eval=12",
    "train.batch_size=4",
    "logger.every=4",
]  # losses read at steps 4, 8, 9: the checkpoint at 3 must read steps 1-3 itself


def killed_after(monkeypatch, step: int) -> None:
    """The process dies (SystemExit: nothing catches it, as nothing survives a SIGKILL) during step `step`."""
    original = harness.engine.train.StepRunner.__call__

    def dying(self, current, micro_batches):
        if current == step:
            raise SystemExit(137)
        return original(self, current, micro_batches)

    monkeypatch.setattr(harness.engine.train.StepRunner, "__call__", dying)


def outputs(record: dict) -> tuple:
    runs = Path(record["config"]["results_dir"]) / "runs"
    return (
        record["params"]["trainable_sha256"],
        json.dumps(record["metrics"], sort_keys=True),
        pd.read_parquet(runs / record["predictions"]["file"]).to_json(),
        (runs / f"{record['run_key']}.steps.csv").read_text(),
    )


@pytest.mark.parametrize(
    "method",
    [
        "lora",
        "adalora",
        "rac_lora",
        "lora_ga",
        *(pytest.param(m, marks=pytest.mark.slow) for m in ("dora", "dora_dynamic", "full")),
    ],
)
def test_a_killed_run_continues_from_its_checkpoint_and_ends_bit_for_bit_as_an_uninterrupted_one(
    make_config, tmp_path, monkeypatch, method
):
    continues_bit_for_bit(make_config, tmp_path, monkeypatch, method, [])


@pytest.mark.parametrize("optimizer", ["lorafa", "riemannian", "loraplus", "sgd"])
def test_an_optimizer_s_state_continues_from_the_checkpoint_bit_for_bit(make_config, tmp_path, monkeypatch, optimizer):
    continues_bit_for_bit(make_config, tmp_path, monkeypatch, "lora", [f"optimizer={optimizer}"])


def continues_bit_for_bit(make_config, tmp_path, monkeypatch, method: str, extra: list[str]) -> None:
    extra = extra + {
        "adalora": [
            "method.t_init=2",
            "method.t_final=2",
            "method.delta_t=2",
            "method.beta1=0.99",
            "method.beta2=0.99",
        ],
        "rac_lora": ["method.links=3"],
        "lora_ga": ["method.grad_batches=2"],
    }.get(method, [])
    whole = execute_run(make_config(f"method={method}", *RUN, *extra, f"results_dir={tmp_path / 'whole'}"))
    assert whole["status"] == "success", whole.get("error")

    # checkpoints at steps 3 and 6; killed in step 5, so the run continues from 3: AdaLoRA's importance averages,
    # dynamic DoRA's scores and RAC-LoRA's redraw at its link at step 6 all come from the checkpoint
    cfg = make_config(
        f"method={method}", *RUN, *extra, "++checkpoint.every_steps=3", f"results_dir={tmp_path / 'killed'}"
    )
    killed_after(monkeypatch, 5)
    with pytest.raises(SystemExit):
        execute_run(cfg)
    checkpoint = tmp_path / "killed" / "runs" / f"{whole['run_key']}.checkpoint.pt"
    assert (
        checkpoint.exists()
        and json.loads(checkpoint.with_name(f"{whole['run_key']}.json").read_text())["status"] == "running"
    )
    monkeypatch.undo()
    resumed = execute_run(cfg)
    assert resumed["status"] == "success" and resumed["cost"]["resumed_from_step"] == 3
    assert resumed["run_key"] == whole["run_key"] and not checkpoint.exists()
    assert outputs(resumed) == outputs(whole)


def test_a_checkpoint_of_another_run_or_cut_short_is_not_used(tmp_path):
    path = tmp_path / "k.checkpoint.pt"
    checkpointer = Checkpointer(CheckpointConfig(every_steps=1), path)
    checkpointer.save({"run_key": "abc", "step": 3})
    assert checkpointer.load("abc")["step"] == 3 and checkpointer.load("other") is None
    path.write_bytes(path.read_bytes()[:20])
    assert checkpointer.load("abc") is None


def test_checkpoints_fall_due_by_steps_or_minutes_but_never_at_the_last_step(monkeypatch):
    by_steps = Checkpointer(CheckpointConfig(every_steps=5), Path("x"))
    assert [s for s in range(1, 21) if by_steps.due(s, 20)] == [5, 10, 15]
    assert not Checkpointer(CheckpointConfig(), Path("x")).due(5, 20)
    clock = iter([0.0, 59.0, 61.0])
    monkeypatch.setattr("harness.engine.checkpoint.time.monotonic", lambda: next(clock))
    by_minutes = Checkpointer(CheckpointConfig(every_minutes=1), Path("x"))
    assert not by_minutes.due(1, 20) and by_minutes.due(2, 20)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"every_steps": 0}, "checkpoint.every_steps must be a positive number of steps or null, got 0"),
        ({"every_minutes": -1}, "checkpoint.every_minutes must be > 0 or null, got -1"),
    ],
)
def test_bad_checkpoint_settings_are_one_line_errors(section, message):
    with pytest.raises(HarnessError, match=message):
        CheckpointConfig(**section)


@pytest.mark.parametrize(
    "build",
    [
        lambda: AdaLora(tiny_bert(), AdaLoraConfig(targets=["query", "value"], t_init=1, t_final=2), ["classifier"]),
        lambda: DoraDynamic(tiny_bert(), DoraDynamicConfig(targets=["query", "value"]), ["classifier"]),
        lambda: RacLora(tiny_bert(), RacLoraConfig(targets=["query", "value"], links=2), ["classifier"]),
    ],
    ids=["adalora", "dora_dynamic", "rac_lora"],
)
def test_the_methods_own_state_round_trips_into_a_fresh_method(build):
    trained = build()
    train_steps(trained, lambda step: tiny_batch(seed=step), steps=6, total=10)  # past RAC-LoRA's link at step 5
    saved = trained.checkpoint_state()
    fresh = build()
    fresh.start(10, torch.optim.AdamW(fresh.param_groups(settings())))
    fresh.restore_checkpoint_state(saved)
    assert flat(fresh.checkpoint_state()) == flat(saved) and flat(saved) != flat(build_started(build))


def test_adalora_state_keys_split_at_the_last_bar():
    """Keys are "<layer>|<factor>"; torch allows '|' in a module's name, never in AdaLoRA's factor names."""
    method = AdaLora(tiny_bert(), AdaLoraConfig(targets=["query"], t_init=1, t_final=2), ["classifier"])
    method.restore_checkpoint_state({"sensitivity": {"enc|0.query|lora_E": torch.ones(2)}, "uncertainty": {}})
    assert list(method.sensitivity) == [("enc|0.query", "lora_E")] and method.uncertainty == {}


def build_started(build):
    method = build()
    method.start(10, torch.optim.AdamW(method.param_groups(settings())))
    return method.checkpoint_state()


def flat(state) -> list:
    """A state's leaves in order, tensors as lists, for exact comparison."""
    if isinstance(state, dict):
        return [(key, flat(value)) for key, value in sorted(state.items())]
    if isinstance(state, torch.Tensor):
        return state.tolist()
    return state
