"""Full fine-tuning: every backbone weight is trained (closed-form counts on the tiny BERT and CNN)."""

import pytest

from tests.methods.references import check_adapter_count

# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    (
        {},
        100 * 32
        + 64 * 32
        + 2 * 32
        + 2 * 32  # embeddings (word, position, type) + LayerNorm
        + 2 * (4 * (32 * 32 + 32) + 2 * 32 + (48 * 32 + 48) + (32 * 48 + 32) + 2 * 32)  # layers
        + 32 * 32
        + 32,
    ),  # pooler
    ({"model": "cnn"}, 3 * 8 * 9 + 2 * 8 + 8 * 9 + 2 * 8 + 8 * 12 + 12),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("full", values, adapter)
