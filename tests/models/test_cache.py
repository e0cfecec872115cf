"""Cached assets (harness/models/cache.py): a folder is built in a temporary folder beside it and renamed,
kept while complete, built again where not, and never left half-written."""

import pytest
import torch

from harness.models.cache import cache_root, cached_folder


def has_data(folder) -> bool:
    return (folder / "data").is_file()


def writer(text: str, calls: list):
    def write(scratch):
        calls.append(scratch)
        (scratch / "data").write_text(text)

    return write


def test_building_draws_nothing_from_the_runs_random_stream(tmp_path):
    """The run that builds an asset (GGUF de-quantisation builds a model with a random init) goes on drawing what a run
    that finds the asset built draws: the same seed gives the same fresh head either way."""

    def write(scratch):
        torch.rand(1000)  # a random init
        (scratch / "data").write_text("built")

    torch.manual_seed(3)
    cached_folder(tmp_path / "a", has_data, write)
    after_building = torch.rand(4)
    torch.manual_seed(3)
    cached_folder(tmp_path / "a", has_data, write)  # found: nothing built
    assert torch.equal(torch.rand(4), after_building)


def test_a_folder_is_built_once_then_kept(tmp_path):
    calls = []
    folder = cached_folder(tmp_path / "assets" / "a", has_data, writer("first", calls))
    again = cached_folder(tmp_path / "assets" / "a", has_data, writer("second", calls))
    assert folder == again == tmp_path / "assets" / "a"
    assert (folder / "data").read_text() == "first" and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["a"]  # the scratch folder was renamed
    assert calls[0].parent == folder.parent and calls[0].name.startswith(".building-")


def test_an_incomplete_folder_is_replaced(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "left-over").write_text("half")
    calls = []
    folder = cached_folder(tmp_path / "a", has_data, writer("built", calls))
    assert sorted(p.name for p in folder.iterdir()) == ["data"] and len(calls) == 1


def test_a_folder_another_process_finished_first_is_kept(tmp_path):
    def write(scratch):
        (scratch / "data").write_text("ours")
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "data").write_text("theirs")  # renamed into place while ours was being written

    folder = cached_folder(tmp_path / "a", has_data, write)
    assert (folder / "data").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_a_failed_build_leaves_nothing(tmp_path):
    def write(scratch):
        (scratch / "data").write_text("half")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cached_folder(tmp_path / "a", has_data, write)
    assert list(tmp_path.iterdir()) == []


def test_the_cache_root_is_cache_dir_then_the_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_HARNESS_CACHE", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "given")) == tmp_path / "given"
    assert cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("PEFT_HARNESS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(None) == tmp_path / "home" / ".cache" / "peft-harness"
