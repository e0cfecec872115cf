"""One run's record life cycle: the record's fields, resume, failures that do not stop a sweep,
corrupt records, the run key, and the loggers' views."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

import harness.engine.run
from harness.config.preflight import CONF_DIR
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.store.identity import resolved_config, run_key
from harness.store.records import RecordStore


def records_of(cfg) -> dict:
    found, problems = RecordStore(cfg.results_dir).load_all()
    assert problems == []
    return {r["run_key"]: r for r in found}


def test_success_record_has_every_field_of_the_schema(make_config):
    cfg = make_config("method=lora", "seed=3", "tags=[smoke]")
    record = execute_run(cfg)
    assert record["status"] == "success" and record["error"] is None
    stored = json.loads(RecordStore(cfg.results_dir).path(record["run_key"]).read_text())
    assert stored == json.loads(json.dumps(record, default=str))
    assert (stored["method"], stored["task"], stored["model"], stored["seed"], stored["tags"]) == (
        "lora",
        "bbc_news",
        "tiny_bert",
        3,
        ["smoke"],
    )
    assert (
        stored["config"]["train"]["lr"] == OmegaConf.load(CONF_DIR / "method" / "lora.yaml").lr
    )  # the method's default, resolved
    params = stored["params"]
    assert params["adapter"] == 2 * 2 * 8 * (32 + 32)  # 2 layers × {query, value} × r(d_in + d_out)
    assert params["trainable"] == params["adapter"] + params["head"] and params["head"] == 32 * 5 + 5
    metrics = stored["metrics"]
    assert metrics["primary"] == "accuracy" and metrics["report_split"] == "test" and metrics["higher_is_better"]
    assert set(metrics["final"]) == {"validation", "test"} and metrics["best_step"] == 2
    assert {p["split"] for p in metrics["curve"]} == {"train", "validation", "test"}
    cost = stored["cost"]
    assert cost["steps"] == 2 and cost["train_seconds"] > 0 and cost["peak_memory_mb"] > 0
    assert set(cost) >= {
        "train_seconds",
        "eval_seconds",
        "wall_seconds",
        "steps",
        "examples_per_second",
        "peak_memory_mb",
    }
    prov = stored["provenance"]
    assert prov["versions"]["torch"] == torch.__version__ and prov["device"] == "cpu"
    assert prov["started_at"] <= prov["ended_at"] and "git_sha" in prov and "git_dirty" in prov
    assert prov["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability() and prov["cpu"]["name"]


def test_resume_skips_a_finished_run_and_redoes_a_failed_one(make_config, monkeypatch):
    cfg = make_config()
    first = execute_run(cfg)
    monkeypatch.setattr(harness.engine.run, "fine_tune", lambda *a: pytest.fail("a finished run was redone"))
    assert execute_run(cfg) == first
    monkeypatch.undo()

    failing = make_config("method.targets=[nope]")
    assert execute_run(failing)["status"] == "failed"

    def retried(*args):
        raise HarnessError("retried")

    monkeypatch.setattr(harness.engine.run, "fine_tune", retried)
    assert execute_run(failing)["error"] == "retried"  # redone, not skipped


def test_a_failing_run_in_the_middle_of_a_sweep_is_recorded_and_the_sweep_goes_on(make_config):
    configs = [
        make_config("method=head"),
        make_config("method=lora", "method.targets=[valeu]"),
        make_config("method=lora"),
    ]
    statuses = [execute_run(cfg)["status"] for cfg in configs]
    assert statuses == ["success", "failed", "success"]
    stored = records_of(configs[0])
    assert len(stored) == 3
    failed = stored[run_key(resolved_config(configs[1]))]
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    assert failed["error"].startswith("lora: target pattern 'valeu' matches no Linear/Conv2d module")


def test_nan_loss_is_a_failed_run(make_config, monkeypatch):
    real = harness.engine.run.build_method

    def poisoned(model, node, head):
        method = real(model, node, head)
        with torch.no_grad():
            model.classifier.weight.fill_(float("nan"))
        return method

    monkeypatch.setattr(harness.engine.run, "build_method", poisoned)
    record = execute_run(make_config())
    assert record["status"] == "failed" and record["error"].startswith("loss is nan at step 1")


def test_bad_config_fails_before_loading_and_is_not_a_success(make_config, monkeypatch):
    monkeypatch.setattr(harness.engine.run, "load_task", lambda *a: pytest.fail("data loaded despite a bad config"))
    record = execute_run(make_config("method.r=0"))
    assert record["status"] == "failed" and record["error"] == "method.r must be a positive rank, got 0"


def test_run_key_ignores_where_and_how_results_are_shown_only(make_config, tmp_path):
    key = lambda *o: run_key(resolved_config(make_config(*o)))  # noqa: E731
    base = key()
    assert key("logger=none") == key("progress=true") == key("threads=1") == key(f"results_dir={tmp_path}/x") == base
    assert key("seed=1") != base and key("train.lr=0.1") != base and key("method=full") != base


def test_corrupt_and_truncated_records_are_reported_and_redone(make_config):
    cfg = make_config()
    record = execute_run(cfg)
    store = RecordStore(cfg.results_dir)
    path = store.path(record["run_key"])
    path.write_text(path.read_text()[:100])  # truncated by a crash
    (store.runs_dir / "garbage.json").write_text("[1, 2]")
    found, problems = store.load_all()
    assert found == [] and len(problems) == 2 and any("unreadable" in p for p in problems)
    assert execute_run(cfg)["status"] == "success"  # the truncated run is redone
    assert len(store.load_all()[0]) == 1
    assert not list(store.runs_dir.glob("*.tmp"))


def test_unwritable_results_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="results_dir: folder .* is not writable"):
        RecordStore(blocker / "results").ensure_writable()


def test_csv_logger_writes_step_rows_and_the_sweep_runs_csv(make_config):
    cfg = make_config("train.max_steps=3")
    record = execute_run(cfg)
    steps = list(csv.DictReader(open(RecordStore(cfg.results_dir).runs_dir / f"{record['run_key']}.steps.csv")))
    assert [r["step"] for r in steps if r["metric"] == "train/loss"] == ["1", "2", "3"]
    assert any(r["metric"] == "test/accuracy" for r in steps)
    execute_run(make_config("method=head", "train.max_steps=3"))
    runs = list(csv.DictReader(open(f"{cfg.results_dir}/runs.csv")))
    assert [r["method"] for r in runs] == ["lora", "head"] and runs[0]["status"] == "success"
    assert float(runs[0]["final"]) == record["metrics"]["final"]["test"]["accuracy"]


def test_wandb_logger_offline_writes_one_wandb_run_per_harness_run(make_config, tmp_path):
    wandb_dir = tmp_path / "wandb_logs"
    wandb_dir.mkdir()
    for seed in (0, 1):
        record = execute_run(
            make_config("logger=wandb", "logger.mode=offline", f"logger.dir={wandb_dir}", f"seed={seed}")
        )
        assert record["status"] == "success", record["error"]
    runs = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
