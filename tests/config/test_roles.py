"""The role map (harness/config/roles.py): method YAMLs name roles, each model config maps them to its
module names, and the composed config (and so the run key) holds the resolved patterns. Each family's map
is written once (harness/role_maps.py), and every model config of the family extends it."""

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose
from omegaconf import OmegaConf

from harness.config.compose import project_config
from harness.config.paths import CONF_DIR
from harness.config.preflight import group_options
from harness.config.roles import resolve_roles
from harness.errors import HarnessError
from harness.role_maps import BERT_ROLES, LLAMA_ROLES, ROLE_MAPS
from harness.store.identity import run_key
from methods import build_method

ROOT = Path(__file__).resolve().parents[2]
BERT_FFN_OUT = BERT_ROLES["ffn_out"]
DEBERTA_ROLES = BERT_ROLES | {"q": "query_proj", "k": "key_proj", "v": "value_proj"}
FAMILY_OF = {
    "minilm": BERT_ROLES,
    "roberta_base": BERT_ROLES,
    "roberta_large": BERT_ROLES,
    "tiny_bert": BERT_ROLES,
    "deberta_v3_base": DEBERTA_ROLES,
    "hub_decoder": LLAMA_ROLES,
    "llama3_8b": LLAMA_ROLES,
    "smollm2_135m": LLAMA_ROLES,
    "tiny_llama": LLAMA_ROLES,
    "llama32_1b_random": LLAMA_ROLES,
    "efficientnet_lite0": {"default": ["re:.*_(expand|project)_conv", "_conv_head"]},
    "mlp_mnist": {"default": ["l1", "l2", "l3"]},
}


def composed_roles(model: str) -> dict:
    with project_config():
        return OmegaConf.to_container(compose("config", overrides=[f"model={model}"]).model.roles)


@pytest.mark.parametrize("model", sorted(FAMILY_OF))
def test_each_model_config_composes_its_family_s_map_in_order(model):
    expected = {role: list(p) if isinstance(p, list) else p for role, p in FAMILY_OF[model].items()}
    assert list(composed_roles(model).items()) == list(expected.items())


def test_every_model_config_is_listed_above():
    assert sorted(FAMILY_OF) == group_options()["model"]


def test_no_model_config_restates_a_family_s_map():
    """A model YAML's own `roles` holds only what differs from the family map it extends (DeBERTa's
    attention names) or a model's own `default` role: no role of a family's map is written twice."""
    written = {(role, json.dumps(p)) for roles in ROLE_MAPS.values() for role, p in roles.items()}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        own = yaml.safe_load(path.read_text()).get("roles") or {}
        assert not {(role, json.dumps(p)) for role, p in own.items()} & written, path.name


def test_each_family_s_map_is_spelled_once_in_the_repository():
    """The pattern only BERT's map has (its FFN output) and the names only Llama's has (its gated FFN input)
    appear in harness/role_maps.py and in no other model config, code or test. (Method YAMLs written for
    one model, AdaLoRA's DeBERTa variants, list their targets as that model's module names.)"""
    marks = {r"\.layer\.\d+\.output\.dense": "bert", "gate_proj": "llama"}
    folders = ("conf/model", "harness", "methods", "tasks", "tests", "scripts")
    files = [path for folder in folders for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".yaml")]
    found = {
        (mark, path.relative_to(ROOT).as_posix())
        for path in files
        if path != Path(__file__).resolve()
        for mark in marks
        if mark in path.read_text()
    }
    assert found == {(mark, "harness/role_maps.py") for mark in marks}


def test_every_committed_record_s_roles_are_its_model_config_s_roles():
    """Records hold the composed `model.roles` (minilm's, EfficientNet's; older ones none): the maps that
    the configs now extend compose to exactly those, key order included."""
    recorded = {}
    for path in sorted(ROOT.glob("results/*/runs/*.json")):
        config = json.loads(path.read_text())["config"]
        if config["model"].get("roles") is not None:
            recorded.setdefault(config["model"]["name"], []).append(config["model"]["roles"])
    assert sorted(recorded) == ["efficientnet_lite0", "minilm"]
    for model, roles in recorded.items():
        expected = list(composed_roles(model).items())  # composed once per model
        assert all(list(r.items()) == expected for r in roles), model


def targets(make_config, *overrides):
    return OmegaConf.to_container(make_config(*overrides, quick=False).method, resolve=True)["targets"]


@pytest.mark.parametrize(
    "model, method, expected",
    [
        ("minilm", "lora", ["query", "value"]),
        ("minilm", "dora", ["query", "key", "value", "intermediate.dense", BERT_FFN_OUT]),
        ("minilm", "adalora", ["query", "key", "value", "attention.output.dense", "intermediate.dense", BERT_FFN_OUT]),
        ("minilm", "lorta", ["query", "key", "value", "attention.output.dense"]),
        ("minilm", "lora_xs", ["query", "value", "attention.output.dense", BERT_FFN_OUT]),
        ("deberta_v3_base", "lora", ["query_proj", "value_proj"]),
        (
            "roberta_base",
            "dora_dynamic",
            ["query", "key", "value", "attention.output.dense", "intermediate.dense", BERT_FFN_OUT],
        ),
        (
            "efficientnet_lite0",
            "lora",
            ["re:.*_(expand|project)_conv", "_conv_head"],
        ),  # no attention: the model's default role
        ("mlp_mnist", "rac_lora", ["l1", "l2", "l3"]),
    ],
)
def test_method_targets_resolve_to_the_model_s_modules(make_config, model, method, expected):
    assert targets(make_config, f"method={method}", f"model={model}") == expected


def test_every_method_config_composes_on_every_model_with_roles(make_config):
    """Each method YAML that names roles resolves on every model (a role the model lacks falls back to its
    default role, or fails with one line). Each method's node is composed once with its interpolations kept, each
    model's once, and every pair resolved as their composed config resolves it (the method YAMLs interpolate
    nothing but roles): 11 models × 50 methods without 550 compositions."""
    methods = {
        method: OmegaConf.to_container(make_config(f"method={method}", quick=False).method, resolve=False)
        for method in group_options()["method"]
    }
    for model in group_options()["model"]:
        model_node = OmegaConf.to_container(make_config(f"model={model}", quick=False).model, resolve=False)
        roles = model_node.get("roles") or {}
        for method, method_node in methods.items():
            cfg = OmegaConf.create({"model": model_node, "method": method_node})
            try:
                resolved = OmegaConf.to_container(cfg.method, resolve=True)["targets"]
            except Exception as error:  # a model without the roles asked and without a default role
                assert "has no role" in str(error) and "default" not in roles, (model, method, error)
                continue
            assert isinstance(resolved, list)


def test_the_role_map_stays_out_of_the_run_key(make_config):
    """The key is the same whether targets came from roles or were typed: the record holds the resolved
    patterns, and the map itself is not part of what was trained."""
    by_role = OmegaConf.to_container(make_config("method=lora"), resolve=True)
    typed = OmegaConf.to_container(make_config("method=lora", "method.targets=[query,value]"), resolve=True)
    renamed = OmegaConf.to_container(
        make_config("method=lora", "method.targets=[query,value]", "model.roles.q=other"), resolve=True
    )
    assert by_role["method"]["targets"] == typed["method"]["targets"] == ["query", "value"]
    assert run_key(by_role) == run_key(typed) == run_key(renamed)


def test_a_missing_role_is_one_line_naming_the_model_s_roles():
    root = OmegaConf.create({"model": {"name": "m", "roles": {"q": "wq", "v": ["wv"]}}})
    assert resolve_roles("q", "v", _root_=root) == ["wq", "wv"]
    with pytest.raises(HarnessError) as error:
        resolve_roles("q", "k", _root_=root)
    assert str(error.value) == (
        "model 'm' has no role k (method targets ${roles:q,k}); its roles: q, v; give method.targets "
        "as module-name patterns"
    )
    fallback = OmegaConf.create({"model": {"name": "cnn", "roles": {"default": ["conv1", "conv2"]}}})
    assert resolve_roles("q", "v", _root_=fallback) == ["conv1", "conv2"]


def test_lora_runs_on_the_cnn_without_target_overrides(make_config):
    """`method=lora model=efficientnet_lite0` needed a regex before the role map; now LoRA adapts the
    model's 32 1×1 convolutions: r·(C_in + C_out) each (a 1×1 kernel)."""
    from torch import nn

    from harness.config.sections import parse_settings
    from harness.models import load_model

    cfg = make_config("method=lora", "model=efficientnet_lite0", "task=digits", quick=False)
    model = load_model(parse_settings(cfg).model, 10)
    method = build_method(model, cfg.method, ["classifier"])
    assert len(method.layers) == 32
    assert all(layer.base.kernel_size == (1, 1) for layer in method.layers.values())
    r = cfg.method.r
    assert method.param_counts()["adapter"] == sum(
        r * (layer.base.in_channels + layer.base.out_channels) for layer in method.layers.values()
    )
    assert all(isinstance(layer.base, nn.Conv2d) and layer.base.groups == 1 for layer in method.layers.values())
