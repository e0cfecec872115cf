"""A run with its frozen backbone sharded over two CPU processes (fsdp=true: FSDP2 over gloo,
harness/engine/sharding.py) against one process with the same global accumulation: same run key, loss curve and
metrics within float tolerance, same trained weights; each rank holds half of every sharded frozen weight;
the methods that need whole frozen weights are refused in one line."""

import os
import re
import textwrap

import pytest

from harness.engine import distributed, sharding
from harness.models.storage import BaseStorage, store_frozen_base
from methods import build_method
from tests.conftest import tiny_bert
from tests.engine.test_distributed import BASE, METHOD, curve, launch, only_record
from tests.methods.test_invariants import method_node

SHARDING_METHODS = {
    **METHOD,
    "dora_dynamic": ["method.dropout=0", "method.delta_t=1"],
    "lorta": [],
    "melora": [],
    "head": [],
    "surm": [],
    "lora_xs": [],
    "peft/lora": [],
}

# Prints, on every rank after the run's set-up, the elements of frozen parameters this rank holds against
# the model's total: the proof that the backbone is sharded, not replicated.
ENTRY = """
import sys
import torch.distributed as dist
import harness.engine.sharding
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
original = harness.engine.sharding.shard

def say(line):  # one write of a short line: atomic on a pipe, so the ranks' lines never interleave (print writes twice)
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


def shard(method, device):
    original(method, device)
    frozen = [p for p in method.model.parameters() if not p.requires_grad]
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in frozen)
    say(f"rank {dist.get_rank()}: frozen {local} of {sum(p.numel() for p in frozen)}")
    units = [name or "model" for name, module in method.model.named_modules() if isinstance(module, FSDPModule)]
    say(f"rank {dist.get_rank()}: units {','.join(units)}")

harness.engine.sharding.shard = shard
from harness.protocol.app import main
main()
"""


BLOCKS = {"tiny_bert": "bert.encoder.layer", "tiny_llama": "model.layers"}  # the two layers of each tiny model


def sharded_as_one_process(tmp_path, method: str, extra: tuple = ()) -> tuple[dict, dict]:
    overrides = [*BASE, f"method={method}", *SHARDING_METHODS[method], "train.grad_accum=2", *extra]
    (tmp_path / "entry.py").write_text(textwrap.dedent(ENTRY))
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    two = launch(tmp_path, [*overrides, "fsdp=true", f"results_dir={tmp_path / 'two'}"], 2, "entry", env)
    one = launch(tmp_path, [*overrides, f"results_dir={tmp_path / 'one'}"], 1)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-3000:] + one.stderr[-2000:]
    held = re.findall(r"rank (\d): frozen (\d+) of (\d+)", two.stdout)  # the ranks' lines may interleave
    assert sorted(rank for rank, *_ in held) == ["0", "1"]
    for _, local, total in held:
        assert int(total) / 2 <= int(local) < int(total) * 0.51  # half of each frozen weight (rounded up per tensor)
    blocks = BLOCKS["tiny_llama" if "model=tiny_llama" in extra else "tiny_bert"]
    assert (
        re.findall(r"rank \d: units (\S+)", two.stdout) == [f"model,{blocks}.0,{blocks}.1"] * 2
    )  # one unit per block, one for the rest
    sharded, single = only_record(tmp_path / "two"), only_record(tmp_path / "one")
    assert sharded["provenance"]["processes"] == 2 and sharded["provenance"]["sharding"] == "fsdp"
    assert sharded["run_key"] == single["run_key"] and sharded["cost"]["steps"] == single["cost"]["steps"]
    assert [row[:3] for row in curve(sharded)] == [row[:3] for row in curve(single)]
    assert [row[3] for row in curve(sharded)] == pytest.approx([row[3] for row in curve(single)], rel=1e-5, abs=1e-6)
    assert sharded["params"] == {**single["params"], "trainable_sha256": sharded["params"]["trainable_sha256"]}
    return sharded, single


def test_a_sharded_backbone_trains_lora_as_one_process(tmp_path):
    sharded, single = sharded_as_one_process(tmp_path, "lora")
    assert sharded["params"]["trainable_sha256"] == single["params"]["trainable_sha256"]  # measured: bitwise equal


# The slow suite keeps one method of each kind; the same check on the others: -m exhaustive (not in CI).
@pytest.mark.parametrize(
    "method",
    [
        *[pytest.param(method, marks=pytest.mark.slow) for method in ("dora", "lora_xs", "peft/lora")],
        *[
            pytest.param(method, marks=pytest.mark.exhaustive)
            for method in ("adalora", "dora_dynamic", "lorta", "melora", "head", "surm")
        ],
    ],
)  # dora: a magnitude beside the pair; lora_xs: factors from the frozen weight; the bridge. AdaLoRA's step hooks
# over two processes: tests/engine/test_distributed.py
def test_a_sharded_backbone_trains_each_method_as_one_process(tmp_path, method):
    sharded_as_one_process(tmp_path, method)


@pytest.mark.slow
def test_a_sharded_decoder_generates_its_answers_as_one_process(tmp_path):
    """A generative task on the tiny grouped-query Llama: every rank generates (each forward gathers the
    shards), rank 0 records the same exact match and curve as one process."""
    extra = ("model=tiny_llama", "task=bbc_news_instruct", "task.limit_eval=6", "task.max_length=96")
    sharded, single = sharded_as_one_process(tmp_path, "lora", extra)
    assert sharded["metrics"]["primary"] == "exact_match"
    assert sharded["metrics"]["final"] == single["metrics"]["final"]


@pytest.mark.parametrize(
    "method, why",
    [
        (
            "full",
            "fsdp=true shards the frozen weights, and method 'full' trains every weight; run it with fsdp=false "
            "(data-parallel)",
        ),
        (
            "rac_lora",
            "method 'rac_lora' changes frozen weights during training (folds into W0), which fsdp=true keeps sharded; "
            "run it with fsdp=false",
        ),
        (
            "lora_ga",
            "method 'lora_ga' initialises from the gradients of every frozen weight, which fsdp=true keeps sharded; "
            "run it with fsdp=false",
        ),
        (
            "meft",
            "method 'meft' restructures the model and calls parts of its blocks outside their forward, where "
            "fsdp=true gathers the shards; run it with fsdp=false",
        ),
    ],
)
def test_methods_that_need_whole_frozen_weights_are_refused_in_one_line(monkeypatch, method, why):
    method = build_method(tiny_bert(), method_node(method), ["classifier"])
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    assert sharding.refusal(method) == why


def test_a_refused_two_process_run_is_recorded_as_failed_with_its_one_line(tmp_path):
    done = launch(
        tmp_path, [*BASE, "method=full", "train.grad_accum=2", "fsdp=true", f"results_dir={tmp_path / 'r'}"], 2
    )
    record = only_record(tmp_path / "r")
    assert done.returncode != 0 and record["status"] == "failed"
    assert record["error"] == (
        "fsdp=true shards the frozen weights, and method 'full' trains every weight; run it with fsdp=false "
        "(data-parallel)"
    )


def test_sharding_one_process_is_refused_in_one_line(monkeypatch):
    method = build_method(tiny_bert(), method_node("lora"), ["classifier"])
    monkeypatch.setattr(distributed, "world", lambda: (0, 1))
    assert sharding.refusal(method) == (
        "fsdp=true shards the frozen weights over the processes of a torchrun run "
        "(torchrun --nproc_per_node N -m harness ... fsdp=true); this run has one process"
    )


def test_a_quantized_base_is_refused_in_one_line(monkeypatch):
    pytest.importorskip("bitsandbytes")
    model = tiny_bert()
    store_frozen_base(model, BaseStorage("fp32", "nf4", None), ["classifier"], "tiny")
    method = build_method(model, method_node("lora"), ["classifier"])
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    assert sharding.refusal(method) == (
        "model.quantize packs the frozen weights in bitsandbytes' own tensors, which fsdp=true does not shard; "
        "run it with fsdp=false (data-parallel) or model.quantize=null"
    )
