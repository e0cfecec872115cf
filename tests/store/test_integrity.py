"""Integrity on read: every reader of a results folder (RecordStore.load_all: the
leaderboard, tune, verify, the site) counts a run key once, refuses a record whose file is not
`<run_key>.json` or whose config hashes to another key, lists a predictions file that is missing or no
longer matches its record's SHA-256 (the run is then scored without per-item data, and the caption says
which cell lost it), and a record of a newer schema is listed by readers and never overwritten by a run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.protocol import verify
from harness.report.board import build_and_write
from harness.report.site import build_site
from harness.store.identity import identify, run_key
from harness.store.records import SCHEMA_VERSION, RecordStore
from tests.report.test_leaderboard import record, write_predictions

SCORES = (0.90, 0.80)  # lora on bbc_news, seeds 0 and 1


@pytest.fixture
def results(tmp_path) -> Path:
    """Two runs of one cell (lora, bbc_news), each with 10 test predictions that give its score."""
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for seed, score in enumerate(SCORES):
        rec = record("lora", None, "bbc_news", seed, score, score, 73_728)
        write_predictions(runs, rec, np.arange(10) < round(10 * score))
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    return tmp_path / "results"


def key_of(results: Path, seed: int) -> str:
    return record("lora", None, "bbc_news", seed, 0, 0, 0)["run_key"]


def counted(results: Path) -> tuple[list[float], list[str], str]:
    """The scores every reader counts (×100, by seed), its problem lines, and the leaderboard's Markdown."""
    records, problems = RecordStore(results).load_all()
    text = build_and_write(str(results), with_plot=False)
    return (
        [100 * r["metrics"]["final"]["test"]["accuracy"] for r in sorted(records, key=lambda r: r["seed"])],
        problems,
        text,
    )


def skipped(text: str) -> list[str]:
    return [line[2:] for line in text.split("## Skipped record files\n\n")[1].splitlines() if line.startswith("- ")]


def test_an_intact_folder_has_no_problems_and_counts_each_run(results):
    scores, problems, text = counted(results)
    assert scores == [90.0, 80.0] and problems == []
    assert "## Skipped record files" not in text and "(n=2)" in text


def test_a_copy_under_another_file_name_is_refused_and_the_run_counts_once(results, capsys):
    key = key_of(results, 1)
    shutil.copyfile(results / "runs" / f"{key}.json", results / "runs" / "copy of a run.json")
    scores, problems, text = counted(results)
    line = f"copy of a run.json: holds run {key}, whose record is {key}.json (a copy or a renamed file); not counted"
    assert scores == [90.0, 80.0] and problems == [line]  # n stays 2, the mean stays 85
    assert skipped(text) == [line] and f"warning: record {line}" in capsys.readouterr().err
    assert "85.00" in text and "(n=2)" in text and "(n=3)" not in text


def test_a_record_whose_config_no_longer_hashes_to_its_key_is_refused(results):
    key = key_of(results, 1)
    path = results / "runs" / f"{key}.json"
    rec = json.loads(path.read_text())
    rec["config"]["seed"] = 7  # edited after the run: the run key no longer names this config
    path.write_text(json.dumps(rec))
    scores, problems, text = counted(results)
    current = run_key(rec["config"])
    line = f"{key}.json: its config hashes to run key {current}, not {key} (changed after the run?); not counted"
    assert scores == [90.0] and problems == [line]
    assert skipped(text) == [line] and "**90.00**" in text and "(n=1)" in text and "(n=2)" not in text


def test_a_truncated_predictions_file_is_listed_and_the_caption_names_the_cell_that_lost_its_items(results, capsys):
    key = key_of(results, 1)
    predictions = results / "runs" / f"{key}.predictions.parquet"
    predictions.write_bytes(predictions.read_bytes()[:100])
    scores, problems, text = counted(results)
    line = f"{key}.predictions.parquet: sha256 differs from the record's; scored without per-item data"
    assert scores == [90.0, 80.0] and problems == [line]  # the record still counts, with its recorded score
    assert skipped(text) == [line] and f"warning: record {line}" in capsys.readouterr().err
    assert "kept no predictions" not in text
    assert "95 % interval over seed variation only (predictions files no longer match their records)" in text
    assert (
        "Per-item data lost (a run's predictions file missing or not the one its record names; listed under Skipped "
        "record files): the run counts with its recorded score, and its cell's interval covers seeds only: lora on "
        f"bbc_news ({key}.predictions.parquet: sha256 differs from the record's)." in text
    )
    half = stats.t.ppf(0.975, 1) * np.std([90, 80], ddof=1) / np.sqrt(2)  # seeds only: t(1)·sd/√2
    assert f"**85.00** [{85 - half:.2f}, {min(85 + half, 100):.2f}] (n=2)" in text
    build_site(str(results), str(results / "site"))
    index = (results / "site" / "index.html").read_text()
    assert f"only: lora on bbc_news ({key}.predictions.parquet: sha256 differs from the record&#x27;s)." in index


def test_a_missing_predictions_file_is_listed(results):
    key = key_of(results, 0)
    (results / "runs" / f"{key}.predictions.parquet").unlink()
    scores, problems, text = counted(results)
    assert scores == [90.0, 80.0]
    assert problems == [f"{key}.predictions.parquet: missing; scored without per-item data"]
    assert f"lora on bbc_news ({key}.predictions.parquet: missing)." in text


def test_a_record_without_predictions_is_said_to_have_kept_none(results):
    for seed in (0, 1):
        path = results / "runs" / f"{key_of(results, seed)}.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"predictions": None}))
    _, problems, text = counted(results)
    assert problems == [] and "seed variation only (these records kept no predictions)" in text
    assert "Per-item data lost" not in text


def test_verify_checks_each_chosen_records_predictions(results, monkeypatch, capsys):
    key = key_of(results, 1)
    monkeypatch.setattr(verify, "rerun", lambda rec, scratch: rec)  # the rerun reproduces: only the files differ
    verify.main([str(results), "--keys", key])
    assert "predictions: sha256 matches the record's" in capsys.readouterr().out
    predictions = results / "runs" / f"{key}.predictions.parquet"
    predictions.write_bytes(predictions.read_bytes() + b"x")
    with pytest.raises(SystemExit) as stop:
        verify.main([str(results), "--keys", key])
    assert stop.value.code == 1
    output = capsys.readouterr()
    assert f"FAIL {key}" in output.out
    assert f"predictions: {key}.predictions.parquet: sha256 differs from the record's" in output.out
    assert f"warning: record {key}.predictions.parquet: sha256 differs" in output.err


def test_verify_fails_on_a_collection_with_a_refused_record_even_when_the_sample_reproduces(results, monkeypatch):
    shutil.copyfile(results / "runs" / f"{key_of(results, 0)}.json", results / "runs" / "copy.json")
    monkeypatch.setattr(verify, "rerun", lambda rec, scratch: rec)
    with pytest.raises(SystemExit) as stop:
        verify.main([str(results), "--keys", key_of(results, 1)])
    assert stop.value.code == 1


def test_a_record_of_a_newer_schema_is_listed_and_never_overwritten_by_a_run(make_config, tmp_path):
    cfg = make_config("seed=0")
    key = identify(cfg).key
    store = RecordStore(cfg.results_dir)
    store.runs_dir.mkdir(parents=True)
    newer = {"schema_version": SCHEMA_VERSION + 1, "run_key": key, "status": "success", "shape": "of the future"}
    store.path(key).write_text(json.dumps(newer))
    store.beside(key, "predictions.parquet").write_bytes(b"a newer harness's predictions")
    before = {path.name: path.read_bytes() for path in store.runs_dir.iterdir()}
    message = (
        f"{store.path(key)}: schema_version {SCHEMA_VERSION + 1}, newer than this harness's {SCHEMA_VERSION}: the "
        "record is never overwritten; upgrade peft-harness (pip install -U peft-harness) or use another results_dir"
    )
    with pytest.raises(HarnessError) as refused:
        execute_run(cfg)
    assert str(refused.value) == message
    with pytest.raises(HarnessError):  # no writer replaces it
        store.write(record("lora", None, "bbc_news", 0, 0.9, 0.9, 1) | {"run_key": key})
    assert {path.name: path.read_bytes() for path in store.runs_dir.iterdir() if path.suffix != ".lock"} == before
    assert RecordStore(cfg.results_dir).load_all() == (
        [],
        [
            f"{key}.json: schema_version {SCHEMA_VERSION + 1}, newer than this harness's {SCHEMA_VERSION} "
            "(upgrade peft-harness to read it); not counted"
        ],
    )


def test_a_run_whose_record_config_was_changed_is_done_again_not_skipped(make_config, capsys):
    cfg = make_config()
    first = execute_run(cfg)
    path = RecordStore(cfg.results_dir).path(first["run_key"])
    changed = json.loads(path.read_text())
    changed["config"]["method"]["r"] = 99  # the record now claims another run
    path.write_text(json.dumps(changed))
    capsys.readouterr()
    again = execute_run(cfg)
    assert capsys.readouterr().err.splitlines()[0] == (
        f"note: {path.name}: its config hashes to run key {run_key(changed['config'])}, not {first['run_key']} "
        "(changed after the run?); the run is done again"
    )
    assert again["status"] == "success" and json.loads(path.read_text())["config"]["method"]["r"] == cfg.method.r
