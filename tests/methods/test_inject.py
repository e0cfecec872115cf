"""Target matching (methods/inject.py): an empty target list names the method, and module names in errors
fold their layer indices."""

import pytest

from harness.errors import HarnessError
from methods.inject import match_targets, name_shapes
from tests.conftest import tiny_bert

HEAD = ["classifier"]


# -- target matching -------------------------------------------------------------------------------------------


def test_empty_targets_default_method_name():
    with pytest.raises(HarnessError) as error:
        match_targets(tiny_bert(), [], HEAD)
    assert str(error.value) == "method: method.targets is empty; give module-name patterns or 'all-linear'"
    with pytest.raises(HarnessError) as error:
        match_targets(tiny_bert(), ["nomatch"], HEAD)
    assert str(error.value).startswith("method: target pattern 'nomatch' matches no Linear module; the model has: ")


def test_name_shapes_folds_layer_indices():
    assert name_shapes(["a.0.b", "a.1.b", "c", "d.12.e.3.f"]) == "a.<n>.b, c, d.<n>.e.<n>.f"
