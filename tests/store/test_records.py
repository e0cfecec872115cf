"""The record store: schema checks on write and read, invalid records listed and skipped by every
reader, non-finite scores, the run lock, runs.csv, file modes, predictions and kept adapters."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import harness.engine.run
from harness.config.sections import parse_settings
from harness.digest import sha256_file
from harness.engine.evaluate import predict
from harness.engine.run import execute_run, model_inputs, seed_everything
from harness.report.board import build_and_write
from harness.report.paper import paper_markdown
from harness.store.adapter import load_adapter
from harness.store.identity import identify
from harness.store.records import RecordStore, schema_problem
from methods import build_method
from tasks import load_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real tiny run (kept adapter, evaluation every step), shared by the read-only tests."""
    from hydra import compose

    from harness.config.compose import project_config

    base = tmp_path_factory.mktemp("finished")
    with project_config():
        cfg = compose(
            "config",
            overrides=[
                f"results_dir={base / 'results'}",
                f"cache_dir={base / 'cache'}",
                "model=tiny_bert",
                "task.limit_train=32",
                "task.limit_eval=16",
                "train.batch_size=8",
                "train.max_steps=3",
                "train.eval_every=1",
                "train.lr=0.05",
                "progress=false",
                "save_adapter=true",
            ],
        )
    record = execute_run(cfg)
    assert record["status"] == "success", record["error"]
    return cfg, record


def invalid_variants(good: dict) -> dict[str, tuple[dict, str]]:
    """Malformed records as clusters produce them, and the start of the reason a reader gives."""

    def changed(**parts):
        record = json.loads(json.dumps(good))
        for path, value in parts.items():
            node, *keys = path.split("__")
            target = record
            for key in [node, *keys][:-1]:
                target = target[key]
            if value is DELETE:
                del target[[node, *keys][-1]]
            else:
                target[[node, *keys][-1]] = value
        return record

    return {
        "config_null": (changed(config=None), "config: None is not of type 'object'"),
        "no_report_split": (changed(metrics__report_split=DELETE), "metrics: 'report_split' is a required property"),
        "no_backbone": (changed(params__backbone=DELETE), "params: 'backbone' is a required property"),
        "bad_status": (changed(status="done"), "status: 'done' is not one of"),
        "seed_text": (changed(seed="zero"), "seed: 'zero' is not of type 'integer', 'null'"),
        "key_path": (changed(run_key="../../etc"), "run_key: '../../etc' does not match"),
        "failed_without_error": (changed(status="failed"), "error: None is not of type 'string'"),
        "score_missing": (changed(metrics__final__test={}), "metrics.final: no accuracy on the report split 'test'"),
        "metrics_list": (changed(metrics=[]), "metrics: [] is not of type 'object'"),
        "schema_2": (changed(schema_version=2), "schema_version 2, newer than this harness's 1 (upgrade peft-harness"),
        "negative_count": (changed(params__adapter=-5), "params.adapter: -5 is less than the minimum of 0"),
        "not_an_object": ([1, 2], "record: [1, 2] is not of type 'object'"),
    }


DELETE = object()


def test_every_malformed_record_is_listed_with_its_reason_and_skipped_by_every_reader(finished, tmp_path, capsys):
    cfg, good = finished
    assert schema_problem(good) is None
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    (runs / f"{good['run_key']}.json").write_text(json.dumps(good))
    variants = invalid_variants(good)
    for name, (record, _) in variants.items():
        (runs / f"{name}.json").write_text(json.dumps(record))
    records, problems = RecordStore(tmp_path / "results").load_all()
    assert [r["run_key"] for r in records] == [good["run_key"]]
    for name, (_, reason) in variants.items():
        assert any(p.startswith(f"{name}.json: {reason}") for p in problems), (name, problems)
    board = build_and_write(str(tmp_path / "results"), out_dir=str(tmp_path / "board"), with_plot=False)
    assert "(n=1)" in board and all(f"- {name}.json: " in board for name in variants)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "t.csv").write_text(
        "paper,table,model,method,variant,params,task,metric,split,value,stat,which,protocol,source\n"
        "P,T,tiny_bert,lora,,,bbc_news,accuracy,,50.0,mean,final,,p. 1\n"
    )
    paper = paper_markdown("t", str(tmp_path / "results"), reference)
    assert all(f"- {name}.json: " in paper for name in variants)


def test_the_leaderboard_command_lists_a_malformed_record_and_exits_0(finished, tmp_path):
    _, good = finished
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "broken.json").write_text(json.dumps(good | {"config": None}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.leaderboard",
            "--results-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "board"),
            "--no-plot",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "warning: record broken.json: config: None is not of type 'object'"
    assert "No successful runs yet." in done.stdout


def test_a_non_finite_score_is_a_failed_run_with_a_note(finished, tmp_path):
    cfg, good = finished
    store = RecordStore(tmp_path)
    nan = json.loads(json.dumps(good))
    nan["metrics"]["final"]["test"]["accuracy"] = float("nan")
    store.runs_dir.mkdir(parents=True)
    store.path(good["run_key"]).write_text(json.dumps(nan))
    read = store.read(good["run_key"])
    assert read["status"] == "failed" and read["error"] == "non-finite score (final test accuracy = nan)"
    assert store.problems == [
        f"{good['run_key']}.json: non-finite score (final test accuracy = nan); counted as a failed run"
    ]
    assert "No successful runs yet." in build_and_write(str(tmp_path), out_dir=str(tmp_path / "board"), with_plot=False)


def test_a_run_whose_score_is_nan_is_recorded_as_failed(make_config, monkeypatch):
    real = harness.engine.run.train

    def nan_scores(*args, **kwargs):
        outcome = real(*args, **kwargs)
        outcome.final["test"]["accuracy"] = float("nan")
        return outcome

    monkeypatch.setattr(harness.engine.run, "train", nan_scores)
    record = execute_run(make_config())
    assert record["status"] == "failed"
    assert (
        record["error"] == "test accuracy is nan at the final evaluation; a run without a finite score counts as failed"
    )


def test_writing_an_invalid_record_is_refused(tmp_path, finished):
    _, good = finished
    with pytest.raises(
        Exception, match="does not follow record.schema.json: params.head: 'x' is not of type 'integer'"
    ):
        RecordStore(tmp_path).write(good | {"params": good["params"] | {"head": "x"}})
    assert not list((tmp_path / "runs").glob("*.json"))


def test_committed_records_follow_the_schema():
    counts = {}
    for collection in ("official", "rac_lora_mnist"):  # the official collection grows while its protocol runs
        store = RecordStore(ROOT / "results" / collection)
        records, problems = store.load_all()
        assert problems == [] and len(records) == len(list(store.runs_dir.glob("*.json")))
        counts[collection] = len(records)
    assert counts["rac_lora_mnist"] == 27


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process that takes the lock at `path` and keeps it until killed."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; "
            "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(600)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_locked_by_another_process_is_left_to_it_and_a_dead_holders_lock_is_taken_over(make_config, capsys):
    cfg = make_config()
    key = identify(cfg).key
    store = RecordStore(cfg.results_dir)
    holder = hold_lock(store.beside(key, "lock"))
    try:
        started = time.perf_counter()
        assert execute_run(cfg) is None
        assert time.perf_counter() - started < 10
        assert capsys.readouterr().err.strip() == (
            f"skip {key}: another process is training this run (it holds {store.beside(key, 'lock')})"
        )
        assert not store.path(key).exists()
        assert store.is_locked(key)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not store.is_locked(key)  # the OS dropped the dead holder's lock
    assert execute_run(cfg)["status"] == "success"


def test_runs_csv_has_one_row_per_run_key_with_its_latest_state(make_config, monkeypatch):
    good, bad = make_config(), make_config("method.r=0")
    execute_run(good)
    execute_run(good)  # skipped
    execute_run(bad)
    monkeypatch.setattr(harness.engine.run, "fine_tune", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        execute_run(bad)  # redone, interrupted
    rows = list(csv.DictReader(open(Path(good.results_dir) / "runs.csv")))
    assert [(r["run_key"], r["status"]) for r in rows] == [
        (identify(good).key, "success"),
        (identify(bad).key, "interrupted"),
    ]
    assert rows[1]["error"] == "interrupted by SIGINT"


def test_records_and_logs_are_created_with_the_process_umask(make_config):
    previous = os.umask(0o022)
    try:
        record = execute_run(make_config("save_adapter=true"))
        modes = {
            path.name: path.stat().st_mode & 0o777
            for path in (Path(make_config().results_dir)).rglob("*")
            if path.is_file() and not path.name.endswith(".lock")
        }
        assert modes and set(modes.values()) == {0o644}, modes
        assert {
            f"{record['run_key']}.json",
            f"{record['run_key']}.steps.csv",
            f"{record['run_key']}.predictions.parquet",
            f"{record['run_key']}.adapter.safetensors",
            "runs.csv",
        } <= set(modes)
        os.umask(0o002)
        record = execute_run(make_config("seed=1"))
        assert RecordStore(make_config().results_dir).path(record["run_key"]).stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)


def test_the_lr_logged_for_a_step_is_the_one_it_used(make_config):
    cfg = make_config("train.max_steps=3", "train.warmup_ratio=0", "train.schedule=linear", "train.lr=1e-3")
    record = execute_run(cfg)
    steps = list(csv.DictReader(open(RecordStore(cfg.results_dir).beside(record["run_key"], "steps.csv"))))
    lrs = [float(r["value"]) for r in steps if r["metric"] == "train/lr"]
    assert lrs == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])  # linear decay from the full rate at step 1


def test_predictions_are_stored_checksummed_and_reproduce_the_recorded_metrics(finished):
    cfg, record = finished
    runs = RecordStore(cfg.results_dir).runs_dir
    entry = record["predictions"]
    path = runs / entry["file"]
    assert entry["file"] == f"{record['run_key']}.predictions.parquet" and entry["sha256"] == sha256_file(path)
    assert entry["bytes"] == path.stat().st_size
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["split", "step", "example_id", "label", "prediction", "logits"]
    metrics = record["metrics"]
    steps = {metrics["best_step"], 3}
    assert sorted(frame["step"].unique()) == sorted(steps) and entry["steps"] == {
        "final": 3,
        "best": metrics["best_step"],
    }
    assert len(frame) == len(steps) * 2 * 16  # validation and test, 16 examples each, per evaluation
    task = load_task(parse_settings(cfg).task)
    for (split, step), part in frame.groupby(["split", "step"]):
        logits = np.stack(part["logits"].to_numpy())
        assert (part["prediction"].to_numpy() == logits.argmax(axis=1)).all()
        which = "final" if step == 3 else "best"
        assert task.metric_fn(part["prediction"].to_numpy(), part["label"].to_numpy()) == metrics[which][split]
        assert part["example_id"].is_unique


def test_example_ids_are_the_same_whatever_the_limit(make_config):
    small, large = (execute_run(make_config(f"task.limit_eval={n}")) for n in (8, 16))
    runs = RecordStore(make_config().results_dir).runs_dir
    ids = [
        set(pd.read_parquet(runs / r["predictions"]["file"]).query("split == 'test'")["example_id"])
        for r in (small, large)
    ]
    assert len(ids[0]) == 8 and len(ids[1]) == 16 and ids[0] <= ids[1]


def test_a_kept_adapter_on_a_fresh_model_gives_the_trained_outputs(finished):
    cfg, record = finished
    run = parse_settings(identify(cfg).cfg)
    task = load_task(run.task)
    encoded, _, pad_id = model_inputs(task, run, cfg.cache_dir)
    from harness.models import load_model

    seed_everything(run.seed)
    model = load_model(run.model, task.num_labels)
    method = build_method(model, cfg.method, run.model.head_modules)
    runs = RecordStore(cfg.results_dir).runs_dir
    frame = pd.read_parquet(runs / record["predictions"]["file"]).query("split == 'test' and step == 3")
    trained = np.stack(frame["logits"].to_numpy())
    assert not np.allclose(predict(model, encoded["test"], 64, pad_id, torch.device("cpu"), None), trained)
    assert record["adapter"]["sha256"] == sha256_file(runs / record["adapter"]["file"])
    load_adapter(record, runs, method)
    assert np.array_equal(predict(model, encoded["test"], 64, pad_id, torch.device("cpu"), None), trained)


def test_regression_predictions_store_the_value_and_repeated_examples_get_distinct_ids():
    from types import SimpleNamespace

    from harness.store.predictions import table
    from tasks.base import Split, TaskData

    split = Split([("a b",), ("c",), ("a b",)], [0.5, 1.0, 0.5])
    task = TaskData("toy", {"train": split, "validation": split}, 1, lambda p, l: {}, "pearson", "validation")
    encoded = {"validation": SimpleNamespace(labels=torch.tensor(split.labels))}
    outputs = np.array([[0.25], [0.75], [0.5]], dtype=np.float32)
    frame = table(task, encoded, {4: {"validation": outputs}}).to_pandas()
    assert list(frame.columns) == ["split", "step", "example_id", "label", "prediction", "value"]
    assert frame["value"].tolist() == frame["prediction"].tolist() == [0.25, 0.75, 0.5]
    assert frame["label"].tolist() == [0.5, 1.0, 0.5] and frame["step"].tolist() == [4, 4, 4]
    ids = frame["example_id"].tolist()
    assert ids[2] == f"{ids[0]}~1" and len(set(ids)) == 3
