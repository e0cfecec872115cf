"""What a run says and what it can be told: its summary line names its run key and record file, a skip says
which operational keys it leaves unapplied, `rerun=true` redoes a finished run, several loggers at once, and
W&B with the run's files as an artifact."""

import csv
import json
import sys
import types

from harness.engine.run import execute_run
from harness.store.records import RecordStore


def test_the_summary_line_ends_with_the_run_key_and_the_record_file(make_config, tmp_path, capsys):
    record = execute_run(make_config())
    path = tmp_path / "results" / "runs" / f"{record['run_key']}.json"
    line = capsys.readouterr().out.strip()
    assert line.startswith("lora | bbc_news | tiny_bert | seed 0 | adapter params ")
    assert line.endswith(f" s | run {record['run_key']} → {path}") and path.is_file()
    failed = execute_run(make_config("method.r=0"))
    assert capsys.readouterr().err.strip() == (
        f"lora | bbc_news | tiny_bert | seed 0 | FAILED: {failed['error']} | run {failed['run_key']} → "
        f"{tmp_path / 'results' / 'runs' / (failed['run_key'] + '.json')}"
    )


def test_a_skip_names_the_operational_keys_it_does_not_apply_and_rerun_true_applies_them(make_config, capsys):
    first = execute_run(make_config())
    capsys.readouterr()
    again = execute_run(make_config("logger=none", "save_adapter=true", "progress=false", "threads=1"))
    assert again == first
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"skip {first['run_key']}: already succeeded (lora | bbc_news | tiny_bert | seed 0 |")
    assert err.endswith(
        "; save_adapter=true, logger.use.csv=null differ from its record and are not applied to a finished run: "
        "add rerun=true to do it again with them"
    )  # progress and threads say how this command goes, not what the run keeps: not listed
    assert "differ from its record" not in (execute_run(make_config()) and capsys.readouterr().err)
    redone = execute_run(make_config("save_adapter=true", "rerun=true"))
    assert redone["run_key"] == first["run_key"] and redone["status"] == "success"
    assert redone["adapter"]["file"] == f"{first['run_key']}.adapter.safetensors"
    assert redone["metrics"]["final"] == first["metrics"]["final"]  # the same run, done again


def test_several_loggers_at_once(make_config, tmp_path):
    wandb_dir = tmp_path / "wandb_logs"
    wandb_dir.mkdir()
    record = execute_run(make_config("logger=[csv,wandb]", "logger.mode=offline", f"logger.dir={wandb_dir}"))
    assert record["status"] == "success", record["error"]
    rows = list(csv.DictReader(open(tmp_path / "results" / "runs.csv")))
    assert [(row["run_key"], row["status"]) for row in rows] == [(record["run_key"], "success")]
    assert len(list((wandb_dir / "wandb").glob("offline-run-*"))) == 1
    assert record["config"]["logger"]["use"] == {"csv": True, "wandb": True}


def test_wandb_gets_the_record_predictions_and_adapter_as_one_artifact(make_config, tmp_path, monkeypatch):
    """A stand-in wandb module records what the logger gives it (the real one runs offline above)."""
    given = []

    class Artifact:
        def __init__(self, name, type, metadata):
            self.name, self.type, self.metadata, self.files = name, type, metadata, []
            given.append(self)

        def add_file(self, path):
            self.files.append(path)

    class Run:
        summary, config = {}, types.SimpleNamespace(update=lambda values: None)

        def log(self, values, step):
            pass

        def log_artifact(self, artifact):
            artifact.logged = True

        def finish(self, exit_code):
            self.exit_code = exit_code

    fake = types.SimpleNamespace(Artifact=Artifact, init=lambda **settings: Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    record = execute_run(make_config("logger=wandb", "save_adapter=true"))
    (artifact,) = given
    runs = tmp_path / "results" / "runs"
    key = record["run_key"]
    assert (artifact.name, artifact.type, artifact.logged) == (f"run-{key}", "peft-harness-run", True)
    assert artifact.files == [
        str(runs / f"{key}.{suffix}") for suffix in ("json", "predictions.parquet", "adapter.safetensors")
    ]
    assert artifact.metadata["status"] == "success" and artifact.metadata["run_key"] == key
    stored = json.loads((runs / f"{key}.json").read_text())
    assert stored == RecordStore(tmp_path / "results").read(key)
    assert not (tmp_path / "results" / "runs.csv").exists()  # logger=wandb alone: no CSV view
