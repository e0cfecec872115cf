"""The rank-budget pieces shared by AdaLoRA and dynamic DoRA (methods/budget.py): schedule points in steps
or fractions, the rank check, pruning nothing, the kept-component count, and the initial and final
counts and ranks written to a run's record."""

import json
from pathlib import Path

import pytest
import torch

from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.budget import schedule_steps
from tests.methods.references import adalora


def test_schedule_points_are_steps_or_fractions():
    assert schedule_steps(0.12, 100, "t_init") == 12
    assert schedule_steps(600, 100, "t_init") == 600
    assert schedule_steps(0, 100, "t_init") == 0
    for bad in (1.5, -0.1):
        with pytest.raises(HarnessError, match="method.t_init must be a whole number of steps or a fraction"):
            schedule_steps(bad, 100, "t_init")


# -- through the harness --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adalora", "dora_dynamic"])
def test_record_holds_initial_and_final_counts_and_ranks(make_config, name):
    cfg = make_config(
        f"method={name}", "train.max_steps=8", "method.targets=[query,value]", "method.delta_t=1", "method.target_r=1"
    )
    record = execute_run(cfg)
    assert record["status"] == "success", record.get("error")
    params, ranks = record["params"], record["params"]["ranks_final"]
    assert len(ranks) == 4 and sum(ranks.values()) == 4 * 1  # target_r · matrices (32×32 each)
    assert params["adapter"] == 4 * 2 * (32 + 32 + 1)  # initial rank ceil(1.5) = 2
    assert params["adapter_final"] == 4 * (32 + 32 + 1)
    saved = json.loads(Path(cfg.results_dir, "runs", f"{record['run_key']}.json").read_text())
    assert saved["params"]["adapter_final"] == params["adapter_final"]


# -- shared budget machinery (methods/budget.py) ---------------------------------------------------


def test_budget_rank_error_names_the_method_and_the_layer():
    with pytest.raises(HarnessError) as error:
        adalora(r=40, target_r=2)
    assert (
        str(error.value)
        == "adalora: rank r=40 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_budget_pruning_nothing_revives_every_component():
    method = adalora()
    scores = {name: 10 * torch.arange(float(method.cfg.r)) + i for i, name in enumerate(method.layers)}  # distinct
    method.prune_lowest(scores, 4)
    assert sum(int((~layer.kept).sum()) for layer in method.layers.values()) == 4
    method.prune_lowest(scores, 0)
    assert all(bool(layer.kept.all()) and layer.kept.dtype == torch.bool for layer in method.layers.values())


def test_budget_trainable_count_is_the_kept_adapter_plus_the_head():
    method = adalora()
    d = {"query": (32, 32), "value": (32, 32), "intermediate.dense": (32, 48)}
    scores = {name: torch.tensor([0.0, 1.0, 2.0]) for name in method.layers}
    method.prune_lowest(scores, len(method.layers))  # drop component 0 everywhere: 2 kept per matrix
    adapter = sum(
        2 * (d_in + d_out + 1) for name in method.layers for key, (d_in, d_out) in d.items() if name.endswith(key)
    )
    head = sum(p.numel() for p in method.model.classifier.parameters())
    counts = method.param_counts()
    assert counts["adapter"] == adapter and counts["trainable"] == adapter + head
