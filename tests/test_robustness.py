"""Sweeps that survive bad input, crashes and concurrency; determinism; launchers; sweep progress."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose
from omegaconf import OmegaConf

from harness.config.compose import project_config
from harness.config.preflight import command_line_problems, group_options, unknown_choices
from harness.engine.device import pick_device
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.protocol.app import threads_for
from harness.protocol.progress import progress_line, summary
from harness.report.board import build_and_write
from harness.store.identity import identify, run_key
from harness.store.records import RecordStore, new_record

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model=tiny_bert", "task.limit_train=32", "task.limit_eval=16", "train.batch_size=8", "progress=false"]


def tiny_run(results, *overrides: str):
    """The config of a tiny two-step run recording into `results`, caches beside it."""
    with project_config():
        return compose(
            "config",
            overrides=[
                f"results_dir={results}",
                f"cache_dir={results / 'cache'}",
                *TINY,
                "train.max_steps=2",
                *overrides,
            ],
        )


# (overrides, the start of the one-line error): the command line's check reports it (nothing runs), or the
# run does and leaves a failed record; never a success
BAD_RUNS = [
    (["method.r=0"], "method.r must be a positive rank, got 0"),
    (["method.r=-3"], "method.r must be a positive rank, got -3"),
    (["method.r=abc"], "method.r: Value 'abc' of type 'str' could not be converted to Integer"),
    (["method.alpha=abc"], "method.alpha: Value 'abc' of type 'str' could not be converted to Float"),
    (
        ["method.r=1000"],
        "lora: rank r=1000 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query'",
    ),
    (["method.targets=[valeu]"], "lora: target pattern 'valeu' matches no Linear/Conv2d module; the model has: "),
    (["method.dropout=1.5"], "method.dropout must be in [0, 1), got 1.5"),
    (
        ["method=adalora", "method.t_init=1", "method.t_final=2"],
        "adalora: no budgeting phase: t_init (1 steps) must be < total steps − t_final (2 − 2 = 0)",
    ),
    (
        ["method=melora", "method.n=5"],
        "melora: layer 'bert.encoder.layer.0.attention.self.query' (32×32) is not divisible into n=5 blocks",
    ),
    (
        ["method=surm", "method.structure=hexagonal"],
        "method.structure must be one of circulant, toeplitz, kronecker, got 'hexagonal'",
    ),
    (
        ["method=surm", "method.targets=[intermediate.dense]"],
        "surm: structure=circulant needs a square layer, but 'bert.encoder.layer.0.intermediate.dense' is 64×32",
    ),
    (["optimizer=adam"], "unknown optimizer 'adam'; available: adamw, lorafa, loraplus, riemannian, sgd"),
    (
        ["method=surm", "optimizer=lorafa"],
        "optimizer 'lorafa' applies to the methods with LoRA's factor pairs (A, B): dora, lora, lora_ga; not to "
        "method 'surm' (use optimizer=adamw or optimizer=sgd)",
    ),
    (["optimizer=loraplus", "optimizer.lr_ratio=0"], "optimizer.lr_ratio must be > 0 (η_B / η_A), got 0.0"),
    (["optimizer=sgd", "optimizer.lr_ratio=4"], "unknown config key 'optimizer.lr_ratio'"),
    (["train.lr=-1"], "train.lr and train.head_lr must be > 0, got -1.0, 0.005"),
    (["train.batch_size=0"], "train.batch_size must be > 0, got 0"),
    (["train.schedule=cosinus"], "train.schedule 'cosinus' unknown; allowed: linear, cosine, constant"),
    (["train.precision=fp8"], "train.precision 'fp8' unknown; allowed: auto, fp32, bf16, fp16"),
    (["train.warmup_ratio=1.5"], "train.warmup_ratio must be in [0, 1), got 1.5"),
    (["+train.lrr=1"], "train: unknown key 'lrr'; allowed keys: epochs, max_steps, batch_size,"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["threads=0"], "threads must be a number > 0 or null, got 0"),
    (["task.limit_train=0"], "task.limit_train must be a positive number of examples or null, got 0"),
    (["task.max_length=1"], "task.max_length must be > 1, got 1"),
    (
        ["task=digits"],
        "task 'digits' is an image task but model 'tiny_bert' is a text model; choose a model of the task's kind",
    ),
    (
        ["model.path=pkg://no_such_package/model"],
        "packaged asset 'no_such_package' is not installed; install it with: pip install no_such_package",
    ),
    (
        ["model.path=/nonexistent/model"],
        "local path '/nonexistent/model' does not exist; give an existing folder, a hub id",
    ),
    (
        ["task=rte", "task.source=/nonexistent/glue"],
        "GLUE 'rte' split 'train' could not be loaded from '/nonexistent/glue'",
    ),
    (["train.lr=1e30", "train.max_steps=4"], "loss is nan at step 2; lower train.lr or check the data"),
    (
        ["train.device=cuda"] if not torch.cuda.is_available() else ["train.precision=fp8"],
        "train.device=cuda but no CUDA device is visible" if not torch.cuda.is_available() else "train.precision 'fp8'",
    ),
    (
        ["+per_task={bbc_newz:{train:{lr:1}}}"],
        "per_task entry 'bbc_newz' names no task (or method/task); tasks: bbc_news,",
    ),
    (
        ["task.max_length=100000"],
        "task.max_length=100000 exceeds the 512 positions of model 'tiny_bert'; allowed: 2 to 512",
    ),
    (["train=5"], "train must be a section of keys (epochs, max_steps, batch_size,"),
    (["seed="], "seed must be an integer, got ''"),
    (["seed=1.5"], "seed must be an integer, got 1.5"),
    (["seed=true"], "seed must be an integer, got True"),
    (["threads=abc"], "threads must be a number > 0 or null, got 'abc'"),
    (["tags=[[a]]"], "tags must be a list of labels (tags=[a,b], or tags=a for one), got [['a']]"),
    (
        ["cache_dir=/proc/no_cache"],
        "cache_dir: folder '/proc/no_cache' is not writable (No such file or directory); set cache_dir to a writable "
        "folder",
    ),
    (["train.epochs=0"], "train.epochs must be > 0, got 0.0"),
    (["train.eval_every=0"], "train.eval_every must be > 0 or null, got 0"),
    (["train.max_grad_norm=-1"], "train.max_grad_norm must be > 0 or null, got -1.0"),
    (["train.eval_batch_size=0"], "train.eval_batch_size must be > 0, got 0"),
    (["train.device=tpu"], "train.device 'tpu' unknown; allowed: auto, cpu, cuda, mps"),
    (["task.max_length=abc"], "task.max_length: Value 'abc' of type 'str' could not be converted to Integer"),
    (["task.source=/nonexistent"], "bbc_news: no topic folders under /nonexistent"),
    (["logger.mode=sometimes"], "logger.mode 'sometimes' unknown; allowed: auto, online, offline, disabled"),
    (["+model.kind=rnn"], "model.kind 'rnn' unknown; allowed: text, decoder, efficientnet_lite0, mlp_mnist"),
    # caught on the command line, before anything runs (harness.config.preflight)
    (["foo=1"], "unknown config key 'foo' (in 'foo=1'); keys of the config: seed, results_dir, cache_dir,"),
    (
        ["train.lrr=1"],
        "unknown config key 'train.lrr' (in 'train.lrr=1'); keys of train: epochs, max_steps, batch_size,",
    ),
    (["hydra.foo=1"], "unknown config key 'hydra.foo' (in 'hydra.foo=1'); keys of hydra: run, sweep, launcher,"),
    (["+train.lr=1"], "config key 'train.lr' already exists (in '+train.lr=1'); write train.lr=1 to change it"),
    (["~foo"], "config key 'foo' does not exist (in '~foo'); nothing to delete"),
    (["train={a:1}"], "unknown config key 'train.a' (in 'train={a:1}'); keys of train: epochs,"),
    (
        ["tags={a:1}"],
        "cannot set 'tags={a:1}': Cannot merge DictConfig with ListConfig (tags holds a list; write tags=[...])",
    ),
    (["method.r=[1"], "cannot parse override 'method.r=[1': no viable alternative at input '[1'; write key=value"),
    (["seed"], "cannot parse override 'seed': missing EQUAL at '<EOF>'; write key=value"),
    (["method.r=1=2"], "cannot parse override 'method.r=1=2': mismatched input '=' expecting <EOF>; write key=value"),
    (
        ["method=lora", "method.name=dora"],
        "method.name=dora contradicts method=lora (whose name is 'lora'); choose the method with method=dora instead",
    ),
    (
        ["task.name=tweet_sentiment"],
        "task.name=tweet_sentiment contradicts task=bbc_news (whose name is 'bbc_news'); choose the task with "
        "task=tweet_sentiment instead",
    ),
    (
        ["task.max_length=64,128"],
        "'task.max_length=64,128' lists several values but this is not a multirun; add -m to run "
        "one run per value, or write task.max_length=[...] for a list",
    ),
    (
        ["method=lora,full"],
        "'method=lora,full' lists several values but this is not a multirun; add -m to run one run per value",
    ),
    (["method.r=${oops}"], "method.r: Interpolation key 'oops' not found"),
    (["method=dorra"], "unknown method 'dorra'; available: adalora, adalora_glue/adalora-0.3M,"),
    (["task=bbc"], "unknown task 'bbc'; available: bbc_news, bbc_news_instruct, cifar10,"),
    # validated before use: seeds, devices, folder keys
    (["seed=-1"], "seed must be from 0 to 4294967295 (2**32 - 1), got -1"),
    (["seed=4294967296"], "seed must be from 0 to 4294967295 (2**32 - 1), got 4294967296"),
    (["task.split_seed=-1"], "task.split_seed must be from 0 to 4294967295 (2**32 - 1), got -1"),
    (
        ["train.device=cuda:x"],
        "train.device 'cuda:x' unknown; allowed: auto, cpu, cuda, mps, or cuda:N for GPU N (cuda:0, ...)",
    ),
    (  # one past the last GPU; cuda:0 where there is none
        [f"train.device=cuda:{torch.cuda.device_count()}"],
        f"train.device=cuda:{torch.cuda.device_count()} but "
        + (f"{torch.cuda.device_count()} CUDA device" if torch.cuda.is_available() else "no CUDA device is visible"),
    ),
    (
        ["train.device=mps"] if not torch.backends.mps.is_available() else ["train.precision=fp8"],
        "train.device=mps but no MPS (Apple GPU) device is available; use train.device=auto or cpu"
        if not torch.backends.mps.is_available()
        else "train.precision 'fp8'",
    ),
    (["results_dir=''"], "results_dir must be a folder path, got ''; give a folder, e.g. results_dir=results"),
    (["results_dir=null"], "results_dir must be a folder path, got null; give a folder, e.g. results_dir=results"),
    (["cache_dir=''"], "cache_dir must be a folder path or null, got ''; give a folder, e.g. cache_dir="),
    # PEFT bridge options (checked against the tuner's config class) and target patterns naming the head
    (
        ["method=peft/vera", "method.options.r=0"],
        "peft/vera: method.options.r=0: PEFT fails on it (ZeroDivisionError: float division by zero); VeraConfig's "
        "default: r=256",
    ),
    (
        ["method=peft/vera", "method.options.foo=1"],
        "peft/vera: VeraConfig has no option 'foo'; it accepts: r, projection_prng_key, save_projection, vera_dropout, "
        "d_initial, fan_in_fan_out, bias, init_weights, layers_to_transform, layers_pattern",
    ),
    (["method=peft/vera", "method.options.r=abc"], "peft/vera: method.options.r=abc: VeraConfig.r takes an integer"),
    (
        ["method=peft/lora", "method.options.lora_dropout=2"],
        "peft/lora: method.options.lora_dropout=2: PEFT refuses it (dropout probability has to be between 0 and 1, but "
        "got 2); LoraConfig's default: lora_dropout=0.0",
    ),
    (
        ["method.targets=[classifier]"],
        "lora: target pattern 'classifier' matches only the task head (model.head_modules: classifier), which the "
        "harness trains whole and never adapts; choose backbone modules: bert.encoder.layer.<n>.attention.self.query,",
    ),
    (
        ["method=peft/ia3", "method.targets=[re:classifier]"],
        "peft/ia3: target pattern 're:classifier' matches only the task head (model.head_modules: classifier), which "
        "the harness trains whole and never adapts; choose backbone modules: ",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD_RUNS, ids=[" ".join(o) for o, _ in BAD_RUNS])
def test_bad_input_is_one_line_and_never_a_success(tmp_path, overrides, message):
    """As `python -m harness <overrides>` does: the command line's check first (an error there runs
    nothing), then the run, which records the error as a failed run."""
    problems = command_line_problems(overrides)
    if problems:
        error, expected = problems[0], []
    else:
        error, expected = execute_run(tiny_run(tmp_path, *overrides))["error"], ["failed"]
    assert error.startswith(message) and "\n" not in error, error
    stored, invalid = RecordStore(tmp_path).load_all()
    assert [r["status"] for r in stored] == expected and invalid == []


def test_the_catalogue_is_large():
    assert len(BAD_RUNS) >= 40


@pytest.mark.parametrize(
    "overrides,stored",
    [
        (["tags=smoke"], {"tags": ["smoke"]}),
        (["method.targets=query"], {"config": {"method": {"targets": ["query"]}}}),
        (["model.head_modules=classifier"], {"config": {"model": {"head_modules": ["classifier"]}}}),
    ],
)
def test_a_scalar_where_a_list_is_expected_is_a_one_element_list(make_config, overrides, stored):
    record = execute_run(make_config(*overrides))
    assert record["status"] == "success"
    for key, value in stored.items():
        assert (
            record[key] == value
            if key == "tags"
            else all(record["config"][section][k] == v for section, part in value.items() for k, v in part.items())
        )
    listed = [o.replace("=", "=[", 1) + "]" for o in overrides]
    assert record["run_key"] == identify(make_config(*listed)).key  # the same run as the list


def test_unknown_group_choices_are_one_line_before_anything_runs():
    options = group_options()
    assert unknown_choices(["method=dorra", "task=bbc", "model=gpt5", "logger=tensorboard"]) == [
        f"unknown method 'dorra'; available: {', '.join(options['method'])}",
        f"unknown task 'bbc'; available: {', '.join(options['task'])}",
        f"unknown model 'gpt5'; available: {', '.join(options['model'])}",
        "unknown logger 'tensorboard'; available: csv, none, wandb",
    ]


def test_unwritable_or_corrupt_results_are_reported_never_counted(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with project_config():
        cfg = compose("config", overrides=[f"results_dir={blocker}", *TINY, "train.max_steps=2"])
    with pytest.raises(HarnessError, match=f"results_dir: folder '{blocker}/runs' is not writable"):
        execute_run(cfg)
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    (runs / "truncated.json").write_text('{"schema_version": 1, "run_key": "trunc')
    (runs / "empty.json").write_text("")
    (runs / "no_fields.json").write_text('{"status": "success"}')
    (runs / "bad_status.json").write_text(
        json.dumps(
            {
                f: {}
                for f in (
                    "schema_version",
                    "run_key",
                    "method",
                    "task",
                    "model",
                    "seed",
                    "config",
                    "params",
                    "metrics",
                    "cost",
                )
            }
            | {"status": "done"}
        )
    )
    text = build_and_write(str(tmp_path / "results"), with_plot=False)
    assert "No successful runs yet." in text
    skipped = text.split("## Skipped record files")[1]
    assert all(
        name in skipped
        for name in (
            "truncated.json: unreadable",
            "empty.json: unreadable",
            "no_fields.json: record: 'schema_version' is a required property",
            "bad_status.json: record: 'error' is a required property",
        )
    )


def run_twice(tmp_path, *overrides):
    records = []
    for attempt in range(2):
        with project_config():
            cfg = compose(
                "config",
                overrides=[
                    f"results_dir={tmp_path / str(attempt)}",
                    f"cache_dir={tmp_path / 'cache'}",
                    *TINY,
                    "train.max_steps=6",
                    *overrides,
                ],
            )
        records.append(execute_run(cfg))
    return records


@pytest.mark.parametrize("method", ["lora", "adalora", "full"])
def test_same_config_and_seed_give_identical_metrics_and_weights(tmp_path, method):
    first, second = run_twice(tmp_path, f"method={method}", "method.dropout=0.1" if method != "full" else "seed=0")
    assert first["status"] == second["status"] == "success"
    assert (
        first["metrics"]["final"] == second["metrics"]["final"]
        and first["metrics"]["curve"] == second["metrics"]["curve"]
    )
    assert first["params"]["trainable_sha256"] == second["params"]["trainable_sha256"]
    with project_config():
        other = execute_run(
            compose(
                "config",
                overrides=[
                    f"results_dir={tmp_path / 'other'}",
                    f"cache_dir={tmp_path / 'cache'}",
                    *TINY,
                    "train.max_steps=6",
                    f"method={method}",
                    "seed=1",
                ],
            )
        )
    assert other["params"]["trainable_sha256"] != first["params"]["trainable_sha256"]  # the checksum sees the weights


def test_deterministic_option_sets_the_torch_flags_and_is_recorded(tmp_path):
    try:
        first, second = run_twice(tmp_path, "deterministic=true")
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
    assert first["provenance"]["deterministic"] is True and first["config"]["deterministic"] is True
    assert first["params"]["trainable_sha256"] == second["params"]["trainable_sha256"]


def test_parallel_jobs_share_the_cores_and_take_the_gpus_in_turn(monkeypatch):
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
    assert threads_for(joblib, 2) == 1 and threads_for(joblib | {"n_jobs": 3}, 16) == 5
    assert threads_for(joblib | {"n_jobs": -1}, 8) == 1 and threads_for({"_target_": "BasicLauncher"}, 8) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [pick_device("auto", job) for job in range(4)] == [torch.device("cuda", i) for i in (0, 1, 2, 0)]
    assert pick_device("auto") == torch.device("cuda")


def test_launcher_presets_compose():
    with project_config():
        slurm = compose(
            "config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
        parallel = compose("config", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.array_parallelism, launcher.timeout_min) == (1, 16, 240)
    assert parallel.hydra.launcher._target_.endswith("JoblibLauncher") and parallel.hydra.launcher.n_jobs == 2


def test_progress_counts_done_skipped_failed_remaining_with_an_eta(tmp_path):
    store = RecordStore(tmp_path)
    configs = [
        {"method": {"name": "lora"}, "task": {"name": "bbc_news"}, "model": {"name": "minilm"}, "seed": seed}
        for seed in range(5)
    ]
    a, b, c, d, e = (run_key(config) for config in configs)
    scores = {"test": {"accuracy": 0.5}}
    for config, key, status in zip(configs, (a, b, c, d), ("success", "success", "failed", "running")):
        store.write(
            new_record(config, key)
            | {
                "status": status,
                "error": "boom" if status == "failed" else None,
                "params": {"adapter": 1, "head": 1, "trainable": 2, "total": 3, "backbone": 2},
                "cost": {"train_seconds": 1.0, "eval_seconds": 1.0, "wall_seconds": 2.0, "steps": 4},
                "metrics": {
                    "primary": "accuracy",
                    "higher_is_better": True,
                    "report_split": "test",
                    "curve": [],
                    "final": scores,
                    "best": scores,
                    "best_step": 4,
                },
            }
        )
    plan = {"started": 1000.0, "keys": [a, b, c, d, e], "done_before": [a], "results_dir": str(tmp_path)}
    # 2 runs finished in 60 s, 2 remaining: ETA 60 s
    assert progress_line(plan, now=1060.0) == "[sweep 3/5] 1 done, 1 skipped, 1 failed, 2 remaining; ETA 1m00s"
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep_plan.json").write_text(json.dumps(plan))
    text, failed = summary(str(tmp_path / "sweep"))
    assert failed == 3
    assert text.splitlines()[1:] == [
        f"  FAILED lora | bbc_news | minilm | seed 2 ({c}): boom",
        f"  NO RECORD {d}: see its error above",
        f"  NO RECORD {e}: see its error above",
    ]


def test_a_sweep_whose_runs_csv_row_disagrees_with_a_record_fails_whichever_process_ran_it(tmp_path):
    """A launcher's worker whose logger failed after the record was final: the sweep's summary (in the parent)
    sees the row and counts the run as not done."""
    store = RecordStore(tmp_path)
    config = {"method": {"name": "lora"}, "task": {"name": "bbc_news"}, "model": {"name": "minilm"}, "seed": 0}
    key = run_key(config)
    store.write(new_record(config, key) | {"status": "failed", "error": "boom"})
    (tmp_path / "runs.csv").write_text(f"run_key,status\n{key},running\n")
    (tmp_path / "sweep").mkdir()
    plan = {"started": 0.0, "keys": [key], "done_before": [], "results_dir": str(tmp_path), "runs_table": True}
    (tmp_path / "sweep" / "sweep_plan.json").write_text(json.dumps(plan))
    text, failed = summary(str(tmp_path / "sweep"))
    assert failed == 2 and text.splitlines()[-1] == (
        f"  RUNS.CSV {key}: its row in {tmp_path / 'runs.csv'} says running, its record failed (its logger failed: "
        "see the error above); the same command mends it"
    )
    (tmp_path / "runs.csv").write_text(f"run_key,status\n{key},failed\n")
    assert summary(str(tmp_path / "sweep"))[1] == 1


def harness(tmp_path, *args, results="results", **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_HARNESS_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "-m",
            *args,
            f"results_dir={tmp_path / results}",
            f"hydra.sweep.dir={tmp_path / 'multirun' / results}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


SWEEP = ["method=head,lora", "seed=0,1", *TINY, "train.max_steps=20"]


def records_in(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / "runs").glob("*.json"))}


def statuses_in(path: Path) -> list[str]:
    found = []
    for content in records_in(path).values():
        try:
            found.append(json.loads(content)["status"])
        except ValueError:
            found.append("unreadable")
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The results of SWEEP run once, sequentially and uninterrupted: what the tests below must reproduce."""
    where = tmp_path_factory.mktemp("uninterrupted")
    reference = harness(where, *SWEEP, results="reference")
    out, err = reference.communicate(timeout=900)
    assert reference.returncode == 0, err[-2000:]
    assert "[sweep end 4/4] 4 done, 0 skipped, 0 failed, 0 remaining" in out
    return where / "reference"


@pytest.mark.slow
def test_a_sweep_killed_mid_run_resumes_to_the_uninterrupted_leaderboard(tmp_path, uninterrupted):
    killed = harness(tmp_path, *SWEEP)
    deadline = time.time() + 600
    while time.time() < deadline:  # SIGKILL once two runs finished and the third is running
        states = statuses_in(tmp_path / "results")
        if states.count("success") >= 2 and "running" in states:
            break
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    before = records_in(tmp_path / "results")
    finished = {name: content for name, content in before.items() if json.loads(content)["status"] == "success"}
    assert len(finished) >= 2 and sorted(json.loads(c)["status"] for c in before.values()).count("running") == 1

    resumed = harness(tmp_path, *SWEEP)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-2000:]
    after = records_in(tmp_path / "results")
    assert len(after) == 4 and all(json.loads(c)["status"] == "success" for c in after.values())
    assert {name: after[name] for name in finished} == finished  # finished records untouched, byte for byte
    assert f"{len(finished)} skipped" in out and err.count("skip ") == len(finished)
    assert set(after) == set(records_in(uninterrupted))  # same run keys, none duplicated
    ours = build_and_write(str(tmp_path / "results"), out_dir=str(tmp_path / "board_resumed"), with_plot=False)
    theirs = build_and_write(str(uninterrupted), out_dir=str(tmp_path / "board_reference"), with_plot=False)
    assert ours == theirs


@pytest.mark.slow
def test_two_joblib_jobs_and_a_second_launcher_writing_at_once_give_the_sequential_leaderboard(tmp_path, uninterrupted):
    parallel = harness(tmp_path, *SWEEP, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    other = harness(
        tmp_path, *SWEEP, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "seed=1,0"
    )  # same runs, other order
    assert parallel.wait(timeout=900) == 0 and other.wait(timeout=900) == 0
    records = records_in(tmp_path / "results")
    assert set(records) == set(records_in(uninterrupted)) and len(records) == 4
    assert all(json.loads(c)["status"] == "success" for c in records.values())
    assert not list((tmp_path / "results" / "runs").glob("*.tmp"))
    ours = build_and_write(str(tmp_path / "results"), out_dir=str(tmp_path / "board_parallel"), with_plot=False)
    theirs = build_and_write(str(uninterrupted), out_dir=str(tmp_path / "board_sequential"), with_plot=False)
    assert ours == theirs


def run_until_evaluated(tmp_path, results: Path) -> tuple[subprocess.Popen, Path]:
    """A long tiny run in a process of its own, returned once its first evaluation is in steps.csv."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_HARNESS_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            *TINY,
            "train.max_steps=100000",
            "train.eval_every=2",
            f"results_dir={results}",
            f"hydra.run.dir={tmp_path / 'outputs'}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = list((results / "runs").glob("*.steps.csv"))
        if steps and statuses_in(results) == ["running"] and "validation/accuracy" in steps[0].read_text():
            return process, steps[0]  # the steps were flushed at the evaluation, mid-run
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("no evaluation within 300 s")


@pytest.mark.slow
def test_sigint_and_sigterm_record_the_run_as_interrupted_with_one_line_and_a_rerun_redoes_it(tmp_path):
    results = tmp_path / "results"
    for signum, code, name in ((signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")):
        process, steps = run_until_evaluated(tmp_path, results)
        key = steps.name.split(".")[0]
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
        assert process.returncode == code
        assert err.strip().splitlines() == [
            f"peft-harness: 1 run (lora | bbc_news | tiny_bert | seed 0) → {results / 'runs'}/; loading torch and the "
            "config ...",
            f"interrupted by {name}: run lora | bbc_news | tiny_bert | seed 0 ({key}) recorded as "
            f"interrupted; the same command redoes it; exit status {code}",
        ]
        record = json.loads((results / "runs" / f"{key}.json").read_text())
        assert (record["status"], record["error"]) == ("interrupted", f"interrupted by {name}")
        assert "skip" not in out  # the second round (SIGTERM) redid the interrupted run


def test_a_failing_end_of_sweep_step_is_one_error_line_and_a_failed_exit(monkeypatch, tmp_path, capsys):
    import harness.protocol.app
    import harness.report.board
    from harness.protocol import progress
    from harness.protocol.callbacks import LeaderboardCallback

    monkeypatch.setitem(progress.OUTCOME, "step_errors", 0)
    monkeypatch.setitem(progress.OUTCOME, "failed_runs", 0)

    def broken(*args, **kwargs):
        raise KeyError("report_split")

    monkeypatch.setattr(harness.report.board, "build_and_write", broken)
    config = OmegaConf.create(
        {"results_dir": str(tmp_path), "sweep": None, "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}
    )
    LeaderboardCallback().on_multirun_end(config)
    assert capsys.readouterr().err.strip() == "error: the sweep's leaderboard failed: KeyError: 'report_split'"
    assert progress.OUTCOME["step_errors"] == 1
    monkeypatch.setattr(sys, "argv", ["harness"])
    monkeypatch.setattr(harness.protocol.app, "app", lambda: None)  # every run succeeded
    with pytest.raises(SystemExit) as exit_:
        harness.protocol.app.main()
    assert exit_.value.code == 1


def full_disk_at(monkeypatch, ending: str) -> None:
    """os.replace of a file whose name ends with `ending` fails as on a full disk."""
    real = os.replace

    def replace(source, target, *args, **kwargs):
        if str(target).endswith(ending):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


# (the file that cannot be written, overrides, where the error shows: the run's record or the command)
FULL_DISK = [
    ("predictions.parquet", [], "record"),
    ("checkpoint.pt", ["checkpoint.every_steps=1", "train.max_steps=3"], "record"),
    ("adapter.safetensors", ["save_adapter=true"], "record"),
    ("runs.csv", [], "record"),
    (".pt", [], "record"),  # the tokenization cache
    (".json", [], "command"),  # the record itself: it cannot say so
]


@pytest.mark.parametrize("ending,overrides,where", FULL_DISK, ids=[ending for ending, _, _ in FULL_DISK])
def test_a_full_disk_names_the_file_and_the_key_that_chose_its_folder_and_is_never_a_success(
    tmp_path, monkeypatch, ending, overrides, where
):
    cfg = tiny_run(tmp_path, *overrides)
    full_disk_at(monkeypatch, ending)
    if where == "record":
        error = execute_run(cfg)["error"]
    else:
        with pytest.raises(HarnessError) as raised:
            execute_run(cfg)
        error = str(raised.value)
    key = "cache_dir" if ending == ".pt" else "results_dir"
    folder = (
        tmp_path / "cache" / "tokenized" if ending == ".pt" else tmp_path / ("" if ending == "runs.csv" else "runs")
    )
    assert error.startswith(f"could not write {folder}/") and "\n" not in error, error
    assert error.endswith(
        f" (No space left on device); {key} chooses this folder: set it to a writable one with free space"
    )
    monkeypatch.undo()
    assert "success" not in statuses_in(tmp_path)


def test_hydra_s_own_output_folder_unwritable_is_one_line_naming_its_key(tmp_path, monkeypatch, capsys):
    import harness.protocol.app

    for multirun, key in ((False, "hydra.run.dir"), (True, "hydra.sweep.dir")):
        argv = ["harness", *(["-m"] if multirun else []), *TINY, f"results_dir={tmp_path}", f"{key}=/proc/no/such"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            harness.protocol.app.main()
        assert exit_.value.code == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: could not write /proc/no (No such file or directory); {key} chooses this folder: set it to a "
            "writable one with free space"
        )
    assert statuses_in(tmp_path) == []


@pytest.mark.parametrize("suffix", ["json", "lock", "checkpoint.pt", "predictions.parquet", "steps.csv"])
def test_a_folder_where_a_run_writes_a_file_is_refused_before_the_run_starts(tmp_path, suffix):
    cfg = tiny_run(tmp_path)
    path = tmp_path / "runs" / f"{identify(cfg).key}.{suffix}"
    path.mkdir(parents=True)
    with pytest.raises(HarnessError) as error:
        execute_run(cfg)
    assert str(error.value) == (
        f"{path} is a folder, where run {identify(cfg).key} writes a file; move it away (results_dir chooses this "
        "folder)"
    )
    if suffix != "json":  # (a folder named <key>.json is no record either)
        assert statuses_in(tmp_path) == []


def test_a_runs_csv_that_is_not_a_runs_table_is_moved_aside_and_rebuilt_from_the_records(tmp_path, capsys):
    cfg, other = tiny_run(tmp_path), tiny_run(tmp_path, "seed=1")
    first = execute_run(cfg)
    (tmp_path / "runs.csv").write_text("garbage,without\n1,2\n")
    second = execute_run(other)
    assert capsys.readouterr().err.splitlines()[0] == (
        f"note: {tmp_path / 'runs.csv'} is not a runs table (no run_key column); moved to runs.csv.unreadable and "
        f"rebuilt from the 2 records in {tmp_path / 'runs'}"
    )
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [(row["run_key"], row["status"]) for row in rows] == [
        (first["run_key"], "success"),
        (second["run_key"], "success"),
    ]
    assert (tmp_path / "runs.csv.unreadable").read_text() == "garbage,without\n1,2\n"


def test_a_full_disk_under_the_step_log_names_it_and_the_run_fails(tmp_path, monkeypatch):
    import harness.engine.loggers

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(harness.engine.loggers, "open", lambda *a, **k: FullDisk(open(*a, **k)), raising=False)
    cfg = tiny_run(tmp_path)
    record = execute_run(cfg)
    assert (record["status"], record["error"]) == (
        "failed",
        f"could not write {tmp_path / 'runs' / (record['run_key'] + '.steps.csv')} (No space left on device); "
        "results_dir chooses this folder: set it to a writable one with free space",
    )
