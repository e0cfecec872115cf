"""Config composition: every option of every group composes and validates; standard keys exist."""

from dataclasses import MISSING
from dataclasses import fields as dataclass_fields

import pytest
from hydra import compose
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.config.compose import project_config
from harness.config.preflight import CONF_DIR, group_options, unknown_choices
from harness.config.sections import CACHE_DIR, CheckpointConfig, OperationalConfig, TrainConfig, parse_settings
from harness.errors import HarnessError
from methods import METHODS, parse_method_config

STANDARD_KEYS = [
    "seed",
    "results_dir",
    "sweep",
    "train.max_steps",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.head_lr",
    "train.eval_every",
    "task.name",
    "task.max_length",
    "task.limit_train",
    "task.limit_eval",
    "model.name",
    "model.path",
    "method.name",
    "method.targets",
]
OPTIONS = [(group, option) for group, options in group_options().items() for option in options]


def test_groups_have_the_expected_options():
    options = group_options()
    assert {o for o in options["method"] if "/" not in o} == set(METHODS) - {"peft"}  # one top-level file per method
    assert {"peft/vera", "peft/c3a", "peft/tinylora", "peft/lora_pissa"} <= set(
        options["method"]
    )  # the PEFT bridge's configs
    assert "rac_mnist/rac-A" in options["method"] and "rac_lora_mnist" in options["experiment"]
    assert {"bbc_news", "tweet_sentiment", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"} <= set(
        options["task"]
    )
    assert {"minilm", "tiny_bert", "roberta_base", "roberta_large", "deberta_v3_base"} <= set(options["model"])
    assert set(options["logger"]) == {"csv", "wandb", "none"}
    assert "demo" in options["sweep"]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_validates_and_has_standard_keys(make_config, group, option):
    cfg = make_config(f"{group}={option}", quick=False)
    for key in STANDARD_KEYS:
        assert OmegaConf.select(cfg, key, throw_on_missing=True, default="<absent>") != "<absent>", key
    settings = parse_settings(cfg)
    method = parse_method_config(cfg.method)
    if group == "method":
        assert method.name == option if "/" not in option else method.name in METHODS
        assert settings.train.lr == method.lr and settings.train.head_lr == method.head_lr
    if group in ("task", "model"):
        assert getattr(settings, group).name == option


def test_rank_keys_exist_where_a_method_has_a_rank(make_config):
    cfg = make_config("method=lora")
    assert cfg.method.r == 8 and cfg.method.alpha == 8


def test_demo_sweep_is_a_multirun_over_every_text_method(make_config):
    cfg = make_config("sweep=demo", quick=False)
    assert cfg.sweep == "demo"
    assert cfg.train.max_steps is not None
    with project_config():
        hydra_cfg = compose("config", overrides=["sweep=demo"], return_hydra_config=True).hydra
    assert hydra_cfg.mode == RunMode.MULTIRUN
    assert hydra_cfg.sweeper.params.method == "glob(*,exclude=projection)"
    assert "joblib" in hydra_cfg.launcher._target_ and hydra_cfg.launcher.n_jobs == 2  # two runs at a time
    from harness.protocol.plan import expand

    with project_config():  # the glob sees the method YAMLs only (not the base/ nodes they extend, nor peft/*)
        runs = expand(["sweep=demo"])
    assert sorted(o for run in runs for o in run if o.startswith("method=")) == sorted(
        f"method={m}" for m in set(METHODS) - {"peft", "projection"}
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=-1", "train.lr and train.head_lr must be > 0"),
        ("train.batch_size=0", "train.batch_size must be > 0"),
        ("train.schedule=step", "train.schedule 'step' unknown; allowed: linear, cosine, constant"),
        ("train.precision=fp8", "train.precision 'fp8' unknown"),
        ("train.batch_size=abc", "train.batch_size: Value 'abc' of type 'str' could not be converted to Integer"),
        ("+train.colour=blue", "train: unknown key 'colour'"),
        ("task.limit_train=0", "task.limit_train must be a positive number"),
        ("task.max_length=1", "task.max_length must be > 1"),
        ("caption=[a,b]", "caption must be a text or null, got"),
        ("threads=0", "threads must be a number > 0 or null, got 0"),
        ("fsdp=maybe", "fsdp must be true or false, got 'maybe'"),
        ("progress=2", "progress must be true or false, got 2"),
        ("checkpoint.every_steps=0", "checkpoint.every_steps must be a positive number of steps or null, got 0"),
        ("+checkpoint.every_hours=1", "checkpoint: unknown key 'every_hours'"),
        ("logger.mode=loud", "logger.mode 'loud' unknown; allowed: auto, online, offline, disabled"),
    ],
)
def test_bad_values_give_one_line_errors(make_config, override, message):
    with pytest.raises(HarnessError) as error:
        parse_settings(make_config(override))
    assert message in str(error.value) and "\n" not in str(error.value) and "full_key" not in str(error.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.r=0", "method.r must be a positive rank, got 0"),
        ("method.r=-4", "method.r must be a positive rank, got -4"),
        ("method.dropout=1.5", "method.dropout must be in [0, 1)"),
        ("+method.rank=4", "method: unknown key 'rank'"),
        ("method.name=nope", "unknown method 'nope'; available: "),
        ("method.r=abc", "method.r: Value 'abc' of type 'str' could not be converted to Integer"),
    ],
)
def test_bad_method_values_give_one_line_errors(make_config, override, message):
    with pytest.raises(HarnessError) as error:
        parse_method_config(make_config(override).method)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_group_options_are_caught_before_hydra():
    assert unknown_choices(["method=lora", "task=bbc_news"]) == []
    assert unknown_choices(["method=full,lora", "seed=0,1,2"]) == []
    problems = unknown_choices(["method=lora,dorra", "model=bert_huge"])
    assert problems[0] == f"unknown method 'dorra'; available: {', '.join(group_options()['method'])}"
    assert set(METHODS) - {"peft"} < set(
        group_options()["method"]
    )  # the bridge is chosen by its configs (peft/<tuner>)
    assert problems[1].startswith("unknown model 'bert_huge'; available: ")
    assert unknown_choices(["-m", "method=glob(*)"]) == []


def test_config_yaml_states_no_default_of_its_own():
    """conf/config.yaml extends the top-level base node and chooses the groups; seed, train and the operational
    keys are the dataclasses' defaults (nothing written twice), and no method config carries a learning rate
    of its own outside the method YAMLs."""
    from methods.base import MethodConfig

    config_yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    assert set(config_yaml) == {"defaults", "hydra"}
    assert config_yaml["defaults"][:2] == ["/base/run@_here_", "_self_"]
    assert MethodConfig().lr is None and MethodConfig().head_lr is None


def test_the_top_level_is_the_dataclasses_defaults():
    """The composed top level, key by key in order: seed, the operational keys, train (its lr and head_lr the
    method's), then the groups."""
    with project_config():
        cfg = OmegaConf.to_container(compose("config"), resolve=False)
    train = {spec.name: spec.default for spec in dataclass_fields(TrainConfig) if spec.metadata.get("composed", True)}
    train |= {"lr": "${method.lr}", "head_lr": "${method.head_lr}"}
    assert cfg["train"] == train and list(cfg["train"]) == list(train)
    operational = {
        spec.name: spec.default_factory() if spec.default is MISSING else spec.default
        for spec in dataclass_fields(OperationalConfig)
        if spec.metadata.get("composed", True)
    }
    operational |= {"cache_dir": CACHE_DIR, "checkpoint": {"every_steps": None, "every_minutes": None}}
    assert {key: cfg[key] for key in operational} == operational
    assert list(cfg) == ["seed", *operational, "train", "method", "optimizer", "task", "model", "logger"]
    assert cfg["seed"] == 0 and type(cfg["train"]["epochs"]) is int  # `epochs: 1` as the YAML wrote it: same key


def test_the_typed_run_config_groups_the_operational_keys(make_config):
    settings = parse_settings(
        make_config(
            "seed=3",
            "results_dir=/elsewhere",
            "checkpoint.every_steps=5",
            "logger=wandb",
            "logger.every=4",
            "threads=2",
            "tags=[a,b]",
            "fsdp=true",
            "+job_index=1",
            "method=lora",
        )
    )
    assert settings.seed == 3 and settings.method.name == "lora" and settings.model.name == "tiny_bert"
    operational = settings.operational
    assert operational.results_dir == "/elsewhere" and operational.threads == 2 and operational.tags == ["a", "b"]
    assert operational.checkpoint == CheckpointConfig(every_steps=5) and operational.checkpoint.enabled
    assert operational.logger.names == ["wandb"] and operational.logger.every == 4
    assert operational.fsdp and operational.job_index == 1 and operational.protocol is None


# Run keys of the plain configs (`python -m harness method=... model=...`): a refactoring of how configs
# are composed must not move them (the defaults' move into the config dataclasses kept all 516 composed
# configs' keys), else records are no longer found by resume and verify. A changed default value moves its
# configs' keys on purpose (the official protocol's lr picks did: scripts/write_method_defaults.py) and updates
# them here.
PINNED_KEYS = {
    ("method=adalora", "model=minilm"): "ecfb7412a174",
    ("method=dora", "model=minilm"): "ff4577446143",
    ("method=dora_dynamic", "model=minilm"): "3ee77c495cb2",
    ("method=full", "model=minilm"): "eea7c4333fe5",
    ("method=head", "model=minilm"): "89faf40a1db3",
    ("method=lora", "model=minilm"): "eb70283904f5",
    ("method=lora_ga", "model=minilm"): "7e5e663a8ed8",
    ("method=lora_xs", "model=minilm"): "e52fd9f22c8e",
    ("method=lorta", "model=minilm"): "2b795d0c9f49",
    ("method=melora", "model=minilm"): "0540e228df0b",
    ("method=peft/lora", "model=minilm"): "a0ec4a05a349",
    ("method=rac_lora", "model=minilm"): "3a49f3648838",
    ("method=surm", "model=minilm"): "59d83d546821",
    ("method=projection", "model=efficientnet_lite0"): "1e9ddf498dac",
    ("method=lora", "model=tiny_llama"): "0d144456e9fc",
}


@pytest.mark.parametrize("overrides", PINNED_KEYS, ids=[" ".join(o) for o in PINNED_KEYS])
def test_run_keys_do_not_move(overrides):
    from harness.store.identity import identify

    with project_config():
        assert identify(compose("config", overrides=list(overrides))).key == PINNED_KEYS[overrides]


def field_defaults(schema: type) -> dict:
    """A dataclass's defaults as a config states them: a `targets` default made of roles as `${roles:...}`."""
    from dataclasses import MISSING
    from dataclasses import fields as dataclass_fields

    return {
        spec.name: f"${{roles:{','.join(spec.metadata['roles'])}}}"
        if "roles" in spec.metadata
        else spec.default_factory()
        if spec.default is MISSING
        else spec.default
        for spec in dataclass_fields(schema)
        if spec.metadata.get("composed", True)
    }


def yaml_schema(group: str, raw: dict) -> type:
    from harness.config.sections import LoggerConfig, ModelConfig, TaskConfig

    return (
        METHODS[raw.get("name", "peft")].Config
        if group == "method"
        else {"task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}[group]
    )


EXTENDING = [
    (group, option)
    for group, option in OPTIONS
    if group in ("method", "task", "model", "logger")
    and any(
        str(entry).startswith("/base/")
        for entry in OmegaConf.load(CONF_DIR / group / f"{option}.yaml").get("defaults", [])
    )
]


def test_every_method_task_model_and_logger_yaml_extends_its_dataclass_defaults():
    extending = {f"{group}={option}" for group, option in EXTENDING}
    variants = {
        "method=adalora_glue",
        "method=dora_commonsense",
        "method=rac_mnist",
    }  # paper variants extend a method YAML
    based = {
        f"{g}={o}"
        for g, o in OPTIONS
        if g in ("method", "task", "model", "logger") and f"{g}={o.split('/')[0]}" not in variants
    }
    assert extending == based


@pytest.mark.parametrize("group,option", EXTENDING, ids=[f"{g}={o}" for g, o in EXTENDING])
def test_a_yaml_states_only_what_differs_from_its_dataclass(group, option):
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"), resolve=False)
    defaults = field_defaults(yaml_schema(group, raw))
    if group != "method":
        defaults.pop("name")  # a task, model or logger names itself; a method's name is its registry name
    repeated = [
        key
        for key, value in raw.items()
        if key in defaults and defaults[key] == value and type(defaults[key]) is type(value)
    ]
    assert repeated == [], f"conf/{group}/{option}.yaml repeats its dataclass's defaults {repeated}"


@pytest.mark.parametrize("option", [o for g, o in EXTENDING if g == "method"])
def test_a_composed_method_is_its_yaml_over_its_dataclass_defaults(make_config, option):
    raw = OmegaConf.load(CONF_DIR / "method" / f"{option}.yaml")
    cfg = make_config(f"method={option}", "model=minilm", quick=False)
    parsed = parse_method_config(cfg.method)
    schema = METHODS[parsed.name].Config
    assert set(cfg.method) == set(field_defaults(schema))  # every field composed: `method.<key>=...` overrides it
    stated = {key: value for key, value in OmegaConf.to_container(cfg.method, resolve=True).items() if key in raw}
    # the rest are the dataclass's defaults; targets given as roles resolve on MiniLM to the BERT names it defaults to
    assert parsed == schema(**{"name": parsed.name, **stated})


def test_a_gpu_index_is_allowed_and_checked_against_the_visible_gpus(monkeypatch):
    """train.device=cuda:N: the section allows GPU N; the device choice (before any data loads) takes
    it where it is visible and refuses it in one line where it is not; a malformed index is the section's line."""
    import torch

    from harness.engine.device import pick_device

    base = {"lr": 1e-3, "head_lr": 1e-3}
    assert TrainConfig(**base, device="cuda:1").device == "cuda:1"
    with pytest.raises(
        HarnessError, match=r"^train.device 'cuda:-1' unknown; allowed: auto, cpu, cuda, mps, or cuda:N"
    ):
        TrainConfig(**base, device="cuda:-1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda:1", job_index=0) == torch.device("cuda", 1)  # named, not taken in turn
    with pytest.raises(HarnessError) as refused:
        pick_device("cuda:2")
    assert str(refused.value) == (
        "train.device=cuda:2 but 2 CUDA devices are visible (cuda:0 to cuda:1); use one of them, cuda or auto"
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(HarnessError, match=r"^train.device=cuda:7 but 1 CUDA device is visible \(cuda:0\); "):
        pick_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        HarnessError, match=r"^train.device=cuda:0 but no CUDA device is visible; use train.device=auto"
    ):
        pick_device("cuda:0")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"results_dir": ""}, "results_dir must be a folder path, got ''; give a folder, e.g. results_dir=results"),
        ({"results_dir": "  "}, "results_dir must be a folder path, got '  '; give a folder, e.g. results_dir=results"),
        ({"results_dir": None}, "results_dir must be a folder path, got null; give a folder, e.g. results_dir=results"),
        ({"cache_dir": ""}, "cache_dir must be a folder path or null, got ''; give a folder, e.g. cache_dir=~/.cache/"),
    ],
)
def test_a_folder_key_that_names_no_folder_is_one_line(values, message):
    """The typed section refuses it, and so does identify, before the record store or a cache opens."""
    from harness.store.identity import identify

    with pytest.raises(HarnessError) as refused:
        OperationalConfig(**values)
    assert str(refused.value).startswith(message)
    with project_config():
        cfg = compose("config")
    cfg.merge_with(values)
    with pytest.raises(HarnessError) as refused:
        identify(cfg)
    assert str(refused.value).startswith(message)
    assert OperationalConfig(cache_dir=None).cache_dir is None  # null: no tokenization cache
