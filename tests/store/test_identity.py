"""Run identity: every committed record keeps its run key; operational keys never move a key, every
semantic key does; the key version is recorded and checked."""

import copy
import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config.sections import OperationalConfig
from harness.store.identity import (
    DEFAULT_OPTIMIZER,
    RUN_KEY_VERSION,
    SEMANTIC_SECTIONS,
    identify,
    resolved_config,
    run_key,
)
from harness.store.records import new_record, schema_problem

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(ROOT.glob("results/*/runs/*.json"))


def committed_records() -> list[dict]:
    return [json.loads(path.read_text()) for path in COMMITTED]


def test_every_committed_record_keeps_its_run_key():
    records = committed_records()
    assert len(records) >= 297  # the official protocol's 270 records and the RAC-LoRA MNIST experiment's 27
    moved = [record["run_key"] for record in records if run_key(record["config"]) != record["run_key"]]
    assert moved == []
    assert {record.get("run_key_version", 1) for record in records} == {RUN_KEY_VERSION} == {1}


def test_a_committed_config_run_again_keeps_its_key():
    """`harness.verify` reruns a record from its stored config: taken through `identify` again, it has the
    record's key (one record of each collection, method, task and model)."""
    shapes = {}
    for path, record in zip(COMMITTED, committed_records()):
        shapes.setdefault(
            (path.parts[-3], record["method"], record["variant"], record["task"], record["model"]), record
        )
    assert len(shapes) >= 30
    moved = [
        record["run_key"]
        for record in shapes.values()
        if identify(OmegaConf.create(record["config"])).key != record["run_key"]
    ]
    assert moved == []


def test_the_semantic_part_of_every_committed_record_is_the_allow_list():
    """Each committed config has the semantic sections (the optimizer's where the record was written after the
    optimizer axis came), and its every other key is an operational one (a field of the typed run config's
    operational section). A recorded optimizer section is the whole config of a registered rule: every field of
    its dataclass and nothing else (the official protocol's LoRA+ and LoRA-FA records among them)."""
    from optimizers import OPTIMIZERS

    assert SEMANTIC_SECTIONS == ("seed", "train", "method", "optimizer", "task", "model")
    before_the_optimizer_axis = {"seed", "train", "method", "task", "model"}
    operational = {spec.name for spec in fields(OperationalConfig)}
    optimizers_seen = set()
    for record in committed_records():
        assert before_the_optimizer_axis <= set(record["config"]), record["run_key"]
        assert set(record["config"]) - set(SEMANTIC_SECTIONS) <= operational, record["run_key"]
        optimizer = record["config"].get("optimizer", DEFAULT_OPTIMIZER)
        rule = OPTIMIZERS[optimizer["name"]]
        assert set(optimizer) == {spec.name for spec in fields(rule.Config)}, record["run_key"]
        optimizers_seen.add(optimizer["name"])
    assert "adamw" in optimizers_seen
    assert not operational & set(SEMANTIC_SECTIONS)


def test_the_default_optimizer_is_adamw_with_its_config_defaults():
    from optimizers import OPTIMIZERS

    assert (
        DEFAULT_OPTIMIZER
        == asdict(OPTIMIZERS["adamw"].Config())
        == {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8}
    )


def test_every_committed_record_with_the_default_optimizer_section_keeps_its_key():
    """A committed AdamW config run again today is composed with `optimizer: adamw` (conf/config.yaml's
    default): the same run, the same key, for every such record, whether it was written before the optimizer
    axis (no section) or after it (the default section). A record of another optimizer is another run: given
    the default section instead of its own, its key moves."""
    records = committed_records()
    adamw = [r for r in records if r["config"].get("optimizer", DEFAULT_OPTIMIZER) == DEFAULT_OPTIMIZER]
    others = [r for r in records if r not in adamw]
    assert len(adamw) >= 297
    assert {"optimizer" in r["config"] for r in adamw} == {True, False}
    moved = [r["run_key"] for r in adamw if run_key(r["config"] | {"optimizer": DEFAULT_OPTIMIZER}) != r["run_key"]]
    assert moved == []
    kept = [r["run_key"] for r in others if run_key(r["config"] | {"optimizer": DEFAULT_OPTIMIZER}) == r["run_key"]]
    assert kept == []


def test_the_default_optimizer_composed_or_named_keeps_the_key_and_any_other_moves_it(make_config):
    plain = resolved_config(make_config(quick=False))
    assert plain["optimizer"] == DEFAULT_OPTIMIZER
    without = {key: value for key, value in plain.items() if key != "optimizer"}
    assert run_key(plain) == run_key(without) == identify(make_config("optimizer=adamw", quick=False)).key
    keys = {
        identify(make_config(*choice, quick=False)).key
        for choice in [
            [],
            ["optimizer.eps=1e-6"],
            ["optimizer.betas=[0.9,0.99]"],
            ["optimizer=sgd"],
            ["optimizer=sgd", "optimizer.momentum=0.9"],
            ["optimizer=loraplus"],
            ["optimizer=loraplus", "optimizer.lr_ratio=8"],
            ["optimizer=lorafa"],
            ["optimizer=riemannian"],
            ["optimizer=riemannian", "optimizer.reg=0.1"],
        ]
    }
    assert len(keys) == 10


def test_the_key_is_the_hash_of_the_semantic_sections(make_config):
    """An independent reference: the first 12 hex digits of SHA-256 over the sorted JSON of the five
    semantic sections, the model's role map left out."""
    config = resolved_config(make_config("method=lora", quick=False))
    semantic = {key: copy.deepcopy(config[key]) for key in ("seed", "train", "method", "task", "model")}
    del semantic["model"]["roles"]
    expected = hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:12]
    assert run_key(config) == expected == identify(make_config("method=lora", quick=False)).key


OPERATIONAL_OVERRIDES = [
    "results_dir=/elsewhere/results",
    "cache_dir=/elsewhere/cache",
    "logger=wandb",
    "logger=none",
    "logger.every=5",
    "logger.project=other",
    "progress=false",
    "threads=3",
    "deterministic=true",
    "save_adapter=true",
    "rerun=true",
    "checkpoint.every_steps=7",
    "checkpoint.every_minutes=2.5",
    "fsdp=true",
    "caption='a sweep of one'",
    "tags=[smoke,nightly]",
    "tags=smoke",
    "+job_index=3",
    "+tuning={stage:search,split:validation}",
    "+protocol={search_seed:0}",
    "+per_task={cola:{train:{lr:0.5}}}",  # an entry for another task: nothing applied to this run
]


@pytest.mark.parametrize("override", OPERATIONAL_OVERRIDES)
def test_an_operational_key_never_moves_the_key(make_config, override):
    assert identify(make_config(override)).key == identify(make_config()).key


def test_the_overrides_cover_every_operational_key():
    named = {override.lstrip("+").split("=")[0].split(".")[0] for override in OPERATIONAL_OVERRIDES}
    assert named | {"sweep"} == {spec.name for spec in fields(OperationalConfig)}  # sweep: a group, below


def test_the_sweep_name_and_an_unknown_top_level_key_never_move_the_key(make_config):
    config = resolved_config(make_config())
    assert run_key(config | {"sweep": "another", "colour": "blue"}) == run_key(config)


def changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    return 1  # None


def semantic_leaves(config: dict) -> list[tuple[str, ...]]:
    """The path of every value in the semantic sections (a section's keys, and seed), the role map aside."""
    leaves = [("seed",)]
    for section in ("train", "method", "optimizer", "task", "model"):
        leaves += [(section, key) for key in config[section] if (section, key) != ("model", "roles")]
    return leaves


@pytest.mark.parametrize("choice", ["method=lora", "method=adalora", "method=full"])
def test_every_semantic_key_moves_the_key(make_config, choice):
    config = resolved_config(make_config(choice, quick=False))
    leaves = semantic_leaves(config)
    assert len(leaves) > 30
    for path in leaves:
        other = copy.deepcopy(config)
        node = other
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = changed(node[path[-1]])
        assert run_key(other) != run_key(config), path
    for section in ("train", "method", "optimizer", "task", "model"):  # a key added to a section: another run
        assert run_key(config | {section: {**config[section], "extra": 1}}) != run_key(config), section


def test_the_role_map_is_outside_the_key(make_config):
    config = resolved_config(make_config())
    renamed = copy.deepcopy(config)
    renamed["model"]["roles"] = {"q": "other.query"}
    assert run_key(renamed) == run_key(config)


def test_a_new_record_states_its_key_version_and_the_schema_checks_it(make_config):
    identity = identify(make_config())
    record = new_record(identity.config, identity.key)
    assert record["run_key_version"] == RUN_KEY_VERSION == 1
    assert schema_problem(json.loads(json.dumps(record))) is None
    without = {key: value for key, value in record.items() if key != "run_key_version"}
    assert schema_problem(json.loads(json.dumps(without))) is None  # made before keys had versions: version 1
    problem = schema_problem(json.loads(json.dumps(record | {"run_key_version": 2})))
    assert problem is not None and problem.startswith("run_key_version: 2 is not one of [1]")
