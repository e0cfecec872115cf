"""A protocol's runs as Hydra multiruns that cover exactly them."""

from harness.protocol.launch import as_multiruns


def test_runs_become_hydra_multiruns_that_cover_exactly_them():
    product = [[f"task={t}", f"train.lr={lr}", "train.head_lr=5"] for t in "ab" for lr in (1, 2)]
    assert as_multiruns(product) == [["task=a,b", "train.lr=1,2", "train.head_lr=5"]]
    tied = [[f"task={t}", f"train.lr={lr}", f"train.head_lr={lr}"] for t in "ab" for lr in (1, 2)]
    assert as_multiruns(tied) == [
        ["task=a,b", "train.lr=1", "train.head_lr=1"],
        ["task=a,b", "train.lr=2", "train.head_lr=2"],
    ]
