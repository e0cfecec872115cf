"""One run over two CPU processes (torchrun, gloo: harness/engine/distributed.py) against one process, both with
grad_accum = 2 (the global accumulation): the same loss curve and metrics within float tolerance, the same
trained weights, the same run key; a failing rank
fails the run with one line; a killed rank leaves a checkpoint the next launch continues from."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = [
    "model=tiny_bert",
    "task.limit_train=32",
    "task.limit_eval=16",
    "train.max_steps=8",
    "train.batch_size=4",
    "train.eval_every=4",
    "threads=1",
    "progress=false",
    "++model.overrides.hidden_dropout_prob=0",
    "++model.overrides.attention_probs_dropout_prob=0",
]  # no dropout: each rank draws its own masks
METHOD = {
    "lora": [],
    "dora": ["method.dropout=0"],
    "adalora": ["method.t_init=2", "method.t_final=2", "method.delta_t=2"],
    "rac_lora": ["method.links=3"],
}


def launch(tmp_path: Path, overrides: list[str], processes: int, module: str = "harness", env: dict | None = None):
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        if processes > 1
        else [sys.executable]
    )
    return subprocess.run(
        [*prefix, "-m", module, *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )


def only_record(results: Path) -> dict:
    [path] = (results / "runs").glob("*.json")
    return json.loads(path.read_text())


def curve(record: dict) -> list[tuple]:
    return [
        (row["step"], row["split"], name, value)
        for row in record["metrics"]["curve"]
        for name, value in row["values"].items()
    ]


def equivalent(tmp_path: Path, method: str, extra: tuple[str, ...] = ()) -> None:
    overrides = [*BASE, f"method={method}", *METHOD[method], *extra]
    two = launch(tmp_path, [*overrides, "train.grad_accum=2", f"results_dir={tmp_path / 'two'}"], processes=2)
    one = launch(tmp_path, [*overrides, "train.grad_accum=2", f"results_dir={tmp_path / 'one'}"], processes=1)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:] + one.stderr[-2000:]
    ddp, single = only_record(tmp_path / "two"), only_record(tmp_path / "one")
    assert (
        ddp["provenance"]["processes"] == 2
        and single["provenance"]["processes"] == 1
        and ddp["run_key"] == single["run_key"]
    )
    assert ddp["cost"]["steps"] == single["cost"]["steps"] == 8 and ddp["cost"]["examples_per_second"] > 0
    assert [row[:3] for row in curve(ddp)] == [row[:3] for row in curve(single)]
    assert [row[3] for row in curve(ddp)] == pytest.approx([row[3] for row in curve(single)], rel=1e-5, abs=1e-6)
    assert ddp["params"]["adapter"] == single["params"]["adapter"]
    assert ddp["params"].get("ranks_final") == single["params"].get("ranks_final")
    assert ddp["params"]["trainable_sha256"] == single["params"]["trainable_sha256"]  # measured: equal on these four


def test_two_processes_train_lora_as_one_process_with_the_same_accumulation(tmp_path):
    equivalent(tmp_path, "lora")


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("dora", marks=pytest.mark.exhaustive),  # -m exhaustive; not in CI
        *[pytest.param(method, marks=pytest.mark.slow) for method in ("adalora", "rac_lora")],
    ],
)
def test_two_processes_train_methods_with_step_hooks_as_one_process(tmp_path, method):
    equivalent(tmp_path, method)


@pytest.mark.parametrize(
    "optimizer",
    [pytest.param("lorafa", marks=pytest.mark.exhaustive), pytest.param("riemannian", marks=pytest.mark.slow)],
)
def test_two_processes_train_with_an_optimizer_of_lora_s_pairs_as_one_process(tmp_path, optimizer):
    """Both precondition the averaged gradients; LoRA-FA's frozen A is also outside DDP's buckets (no gradient):
    -m exhaustive, not in CI."""
    equivalent(tmp_path, "lora", (f"optimizer={optimizer}",))


ENTRY = """
import os, sys
import harness.engine.train
original = harness.engine.train.StepRunner.__call__

def step(self, current, micro_batches):
    broken = os.environ["RANK"] == "1" and current == 5
    if broken and os.environ["HOW"] == "raise":
        raise RuntimeError("rank one broke at step 5")
    losses = original(self, current, micro_batches)
    if broken:  # after step 5's all-reduce, so rank 0 has saved step 4's checkpoint; it cannot finish step 6
        os._exit(9)  # killed: no handler runs
    return losses

harness.engine.train.StepRunner.__call__ = step
from harness.protocol.app import main
main()
"""


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_in_one_line_and_a_killed_rank_leaves_a_checkpoint_to_continue_from(tmp_path):
    (tmp_path / "failing_entry.py").write_text(textwrap.dedent(ENTRY))
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    overrides = [*BASE, "method=lora", "train.grad_accum=2", "++checkpoint.every_steps=2"]
    raised = launch(
        tmp_path, [*overrides, f"results_dir={tmp_path / 'raised'}"], 2, "failing_entry", {**env, "HOW": "raise"}
    )
    record = only_record(tmp_path / "raised")
    assert raised.returncode != 0 and record["status"] == "failed"
    assert record["error"] == "rank 1: RuntimeError: rank one broke at step 5"

    killed = launch(
        tmp_path, [*overrides, f"results_dir={tmp_path / 'killed'}"], 2, "failing_entry", {**env, "HOW": "kill"}
    )
    assert killed.returncode != 0 and only_record(tmp_path / "killed")["status"] == "interrupted"
    assert list((tmp_path / "killed" / "runs").glob("*.checkpoint.pt"))
    resumed = launch(tmp_path, [*overrides, f"results_dir={tmp_path / 'killed'}"], 2)
    whole = launch(tmp_path, [*overrides, f"results_dir={tmp_path / 'whole'}"], 2)
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr[-2000:]
    after, uninterrupted = only_record(tmp_path / "killed"), only_record(tmp_path / "whole")
    assert after["cost"]["resumed_from_step"] == 4 and curve(after) == curve(uninterrupted)
    assert after["params"]["trainable_sha256"] == uninterrupted["params"]["trainable_sha256"]


def test_an_accumulation_the_processes_cannot_share_is_one_line(tmp_path):
    done = launch(tmp_path, [*BASE, "method=lora", f"results_dir={tmp_path / 'odd'}"], processes=2)
    record = only_record(tmp_path / "odd")
    assert done.returncode != 0 and record["status"] == "failed"
    assert record["error"] == (
        "train.grad_accum=1 must be a multiple of the run's 2 processes (each accumulates "
        "grad_accum / 2 micro-batches); allowed: 2, 4, ..."
    )


@pytest.mark.slow
def test_a_submitit_job_of_two_tasks_is_one_data_parallel_run_and_a_failing_job_exits_1(tmp_path):
    """hydra/launcher=slurm with tasks_per_node=2, through submitit's local executor: the tasks become the
    run's two ranks (RANK, WORLD_SIZE, MASTER_ADDR from the job's environment) and write one record; the sweep's
    other job (targets that match nothing) fails, the sweep finishes, lists it and exits 1."""
    overrides = [*BASE, "method=lora", "train.grad_accum=2"]
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=2",
            *overrides,
            "method.targets=[query,value],[valeu]",
            f"results_dir={tmp_path / 'job'}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    launch(tmp_path, [*overrides, "method.targets=[query,value]", f"results_dir={tmp_path / 'one'}"], processes=1)
    said = job.stdout + job.stderr
    assert job.returncode == 1 and "[sweep end 2/2] 1 done, 0 skipped, 1 failed, 0 remaining" in said, said[-2000:]
    assert "  FAILED lora | bbc_news | tiny_bert | seed 0" in said and "target pattern 'valeu' matches no" in said
    records = [json.loads(path.read_text()) for path in (tmp_path / "job" / "runs").glob("*.json")]
    assert sorted(record["status"] for record in records) == ["failed", "success"]
    (ran,) = [record for record in records if record["status"] == "success"]
    single = only_record(tmp_path / "one")
    assert ran["provenance"]["processes"] == 2 and ran["run_key"] == single["run_key"]
    assert ran["params"]["trainable_sha256"] == single["params"]["trainable_sha256"]
    assert list((tmp_path / "multirun" / ".submitit").iterdir())  # submitit's own job folders
