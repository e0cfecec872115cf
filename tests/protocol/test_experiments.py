"""Paper experiments (per-task tables) and the dry-run plans of sweeps (`python -m harness ... --dry-run`)."""

import math

import pytest
from hydra import compose
from omegaconf import OmegaConf

from harness.config.compose import project_config
from harness.config.per_task import apply_per_task
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.protocol.cells import Composer
from harness.protocol.plan import main as plan
from harness.protocol.progress import planned_keys
from harness.store.identity import resolved_config, run_key
from tasks.glue import GLUE_TASKS
from tests.conftest import QUICK


def composed(*overrides: str):
    with project_config():
        return apply_per_task(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize(
    "method,task,expected",
    [
        (
            "adalora_glue/adalora-0.3M",
            "rte",
            {
                "train.lr": 1.2e-3,
                "train.head_lr": 1.2e-3,
                "train.epochs": 50,
                "train.batch_size": 32,
                "method.t_init": 600,
                "method.delta_t": 1,
                "method.t_final": 1800,
                "method.orth_reg": 0.3,
                "method.target_r": 2,
            },
        ),
        (
            "adalora_glue/adalora-1.2M",
            "cola",
            {
                "train.lr": 5e-4,
                "train.epochs": 25,
                "method.orth_reg": 0.5,
                "method.t_final": 3500,
                "method.target_r": 8,
                "method.r": 12,
            },
        ),
        (
            "adalora_glue/lora-r2",
            "stsb",
            {"train.lr": 2.2e-3, "train.epochs": 25, "method.r": 2, "method.variant": "r2"},
        ),
        ("full", "mnli", {"train.lr": 2e-5, "train.head_lr": 2e-5, "train.epochs": 7}),
    ],
)
def test_adalora_experiment_gives_each_method_and_task_the_papers_values(method, task, expected):
    cfg = composed("experiment=adalora_glue_debertav3_base", f"method={method}", f"task={task}")
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected
    assert cfg.model.name == "deberta_v3_base" and cfg.sweep == "adalora_glue_debertav3_base"


def test_lora_experiment_table9_values_apply_to_lora_only():
    lora = composed("experiment=lora_glue_roberta_base", "method=lora", "task=cola")
    full = composed("experiment=lora_glue_roberta_base", "method=full", "task=cola")
    assert (lora.train.batch_size, lora.train.epochs, lora.train.lr, lora.train.head_lr) == (32, 80, 4e-4, 4e-4)
    assert (lora.method.r, lora.method.alpha, list(lora.method.targets)) == (8, 8, ["query", "value"])
    assert (full.train.batch_size, full.train.epochs, full.train.lr) == (32, 10, 2e-5)
    large = composed("experiment=lora_glue_roberta_large", "method=lora", "task=rte")
    assert (large.train.batch_size, large.train.epochs, large.train.lr, large.method.alpha, large.task.max_length) == (
        8,
        20,
        4e-4,
        16,
        512,
    )


def test_per_task_values_are_in_the_record_and_the_run_key_but_the_table_is_not(make_config, capsys):
    cfg = make_config(
        "+per_task={bbc_news:{train:{lr:0.0123}},lora/bbc_news:{method:{r:2}},head/bbc_news:{method:{r:3}}}"
    )
    record = execute_run(cfg)
    assert record["status"] == "success"
    assert record["config"]["train"]["lr"] == 0.0123 and record["config"]["method"]["r"] == 2
    same = make_config("train.lr=0.0123", "method.r=2")
    assert record["run_key"] == run_key(resolved_config(same))
    # the tuning protocol, the dry-run listing and sweep progress key the run as the run does
    table = "+per_task={bbc_news:{train:{lr:0.0123}},lora/bbc_news:{method:{r:2}},head/bbc_news:{method:{r:3}}}"
    with project_config():
        assert Composer([f"results_dir={cfg.results_dir}", *QUICK]).key([table]) == record["run_key"]
        assert planned_keys([*QUICK, table]) == [record["run_key"]]
    plan([*QUICK, table, f"results_dir={cfg.results_dir}"])
    assert f"#0: {record['run_key']} success" in capsys.readouterr().out


@pytest.mark.parametrize(
    "table,message",
    [
        ("{bbc_newz:{train:{lr:1}}}", "per_task entry 'bbc_newz' names no task (or method/task); tasks: bbc_news, "),
        ("{lorra/bbc_news:{train:{lr:1}}}", "per_task entry 'lorra/bbc_news' names no task"),
        ("{bbc_news:{train:{lrr:1}}}", "per_task.bbc_news: unknown key 'train.lrr'"),
    ],
)
def test_bad_per_task_tables_are_one_line_errors(make_config, table, message):
    with pytest.raises(HarnessError) as error:
        apply_per_task(make_config(f"+per_task={table}"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_dry_run_lists_every_run_with_its_steps_and_the_device_hours(capsys):
    plan(["experiment=adalora_glue_debertav3_base", "task=rte,mrpc", "seed=0", "--dry-run", "--steps-per-second", "4"])
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("#")]
    assert len(runs) == 5 * 2  # five methods × two tasks × one seed
    rte = next(line for line in runs if "adalora[0.3M] rte deberta_v3_base seed 0" in line)
    assert "lr 0.0012 batch 32 epochs 50 steps 3900" in rte  # 50 × ceil(2,490 / 32)
    steps = 5 * (50 * math.ceil(GLUE_TASKS["rte"].train_size / 32) + 30 * math.ceil(GLUE_TASKS["mrpc"].train_size / 32))
    assert lines[-1] == (
        f"10 runs, 10 to do: {steps:,} optimizer steps = {steps / 4 / 3600:,.1f} device-hours at 4 "
        "steps/s (training only, evaluation not counted)"
    )


def test_the_decoder_plan_counts_steps_from_the_recipes_approximate_size_and_says_so(capsys):
    plan(["experiment=dora_commonsense_llama3_8b", "--dry-run", "--steps-per-second", "2"])
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("#")]
    steps = 3 * math.ceil(170_000 / 16)  # 3 epochs of the recipe's approximate 170,000 at batch 16
    assert [run.split()[4] for run in runs] == ["lora[r32]", "dora[r16]", "dora[r32]"]
    assert all(f"llama3_8b seed 0 lr 0.0001 batch 16 epochs 3 steps ~{steps}" in run for run in runs)
    assert lines[-1] == (
        f"3 runs, 3 to do: {3 * steps:,} optimizer steps = {3 * steps / 2 / 3600:,.1f} device-hours at 2 steps/s "
        "(training only, evaluation not counted); 3 runs (~) from a hub dataset's approximate size, not loadable here"
    )
