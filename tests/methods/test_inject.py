"""Target matching (methods/inject.py): an empty target list names the method, a pattern that names only the
task head says so, and module names in errors fold their layer indices."""

from collections import OrderedDict

import pytest
from torch import nn

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


@pytest.mark.parametrize("pattern", ["classifier", "re:classifier", "re:class.*"])
def test_a_pattern_naming_only_the_head_says_the_head_is_trained_whole(pattern):
    backbone = "bert.encoder.layer.<n>.attention.self.query, bert.encoder.layer.<n>.attention.self.key"
    with pytest.raises(HarnessError) as error:
        match_targets(tiny_bert(), ["query", pattern], HEAD, method="lora")
    assert str(error.value).startswith(
        f"lora: target pattern '{pattern}' matches only the task head (model.head_modules: classifier), which the "
        f"harness trains whole and never adapts; choose backbone modules: {backbone}, "
    )


def test_a_head_container_counts_as_the_head_and_a_pattern_on_head_and_backbone_adapts_the_backbone():
    """A head that is a container (RoBERTa's classifier.dense, classifier.out_proj) is the head too; `dense`
    also matches backbone modules, which it adapts, leaving the head's dense out."""
    model = tiny_bert()
    model.classifier = nn.Sequential(OrderedDict(dense=nn.Linear(32, 32), out_proj=nn.Linear(32, 3)))
    with pytest.raises(HarnessError, match="target pattern 'classifier' matches only the task head"):
        match_targets(model, ["classifier"], HEAD)
    with pytest.raises(HarnessError, match="target pattern 'out_proj' matches only the task head"):
        match_targets(model, ["out_proj"], HEAD)
    assert match_targets(model, ["pooler.dense"], HEAD) == ["bert.pooler.dense"]
    assert not any(n.startswith("classifier") for n in match_targets(model, ["dense"], HEAD))


def test_name_shapes_folds_layer_indices():
    assert name_shapes(["a.0.b", "a.1.b", "c", "d.12.e.3.f"]) == "a.<n>.b, c, d.<n>.e.<n>.f"
