"""Head only: no adapter parameter (closed-form counts on the tiny BERT and CNN)."""

import pytest

from tests.methods.references import check_adapter_count

# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [({}, 0), ({"model": "cnn"}, 0)]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("head", values, adapter)
