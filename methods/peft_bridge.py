"""Any Hugging Face PEFT tuner as a harness method (`method=peft/<name>`, conf/method/peft/).

The tuner is PEFT's own code: its config class (`peft_type`, e.g. VERA, LOHA, OFT) is built from
`options` (the config's keyword arguments: their names, types and PEFT's own checks of them are tried when
the section is parsed, before a model loads, methods/peft_options.py; `options` is an open section, so
`method.options.<key>=...` needs no `+` and an unknown key is met by the tuner's own list) with
`target_modules` = the modules that `method.targets` matches here (full names, resolved by the
harness's matcher, so a pattern that matches nothing fails with the model's module names), and
PEFT's tuner class injects its layers into the model in place (no PeftModel wrapper, so parameter
names, the task head and the training loop stay the harness's). The task head is trained by the
harness, never put in PEFT's `modules_to_save`; the adapter count is every trainable tensor PEFT
added (shared tensors such as VeRA's or VB-LoRA's counted once, frozen random projections not at all).
Merging is PEFT's `merge_adapter` (each tuner layer's `merge`), where the tuner can merge. What PEFT raises
while its tuner injects becomes one line naming the option to blame (tried again on meta-device copies of the
targets with one option at its default), else the tuner.

Formula and parameter count: those of the PEFT tuner named (see its config's `peft_type` and the
paper cited in its YAML); nothing is re-implemented here.
Weight decay (`decay="trainer"`): HF Trainer's rule (biases and normalisation layers exempt), as PEFT's own
training scripts apply it through the Trainer.

Driven tuners are those whose layers act on their own: prompt-learning types (virtual tokens),
ADALORA (needs PEFT's step hook and loss; use `method=adalora`, equal to PEFT's), XLORA and POLY
(need their own model wrapper or task ids) are refused with the list of the types that work.
"""

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from harness.errors import HarnessError
from methods.base import Method, MethodConfig
from methods.capabilities import Capabilities
from methods.inject import is_under, match_targets
from methods.peft_options import check_options, run_peft
from methods.registry import register

# Types that need more than injected layers: a step hook and extra loss (ADALORA), a wrapper model
# (XLORA), task ids at forward time (POLY), a whole-model hook (ADAPTION_PROMPT).
NOT_DRIVEN = {
    "ADALORA": "it prunes ranks in a step hook and adds a loss: use method=adalora (equal to PEFT's)",
    "XLORA": "it needs PEFT's XLoraModel wrapper around the model",
    "POLY": "it needs task ids at every forward",
    "ADAPTION_PROMPT": "it rewrites Llama attention modules (prompt learning)",
}
# Keyword arguments the harness sets itself: targets from method.targets, the head kept out of PEFT.
HARNESS_SET = {
    "target_modules": "method.targets",
    "modules_to_save": "the harness trains the task head itself",
    "task_type": "the harness builds the model and its head",
    "peft_type": "method.peft_type",
    "inference_mode": "the harness trains",
    "base_model_name_or_path": "the harness loads the model",
    "revision": "the harness loads the model",
}
# LoRA initialisations that need a pass over data before injection; through the bridge PEFT would
# silently fall back to its plain init, so they are refused.
DATA_INITS = {
    "lora_ga": "use method=lora_ga (estimated on the run's own batches)",
    "eva": "it needs PEFT's initialize_lora_eva_weights over a data loader",
    "corda": "it needs PEFT's preprocess_corda over a data loader",
}
# Keyword arguments that name modules: resolved like method.targets into full module names.
MODULE_LIST_OPTIONS = ("feedforward_modules",)


@dataclass
class PeftBridgeConfig(MethodConfig):
    name: str = "peft"
    peft_type: str = ""
    # composed open (struct off), unlike the rest of the config: its keys are the tuner's, checked here
    options: dict[str, Any] = field(
        default_factory=dict, metadata={"composed_as": OmegaConf.create({}, flags={"struct": False})}
    )
    # Where the model starts: "exact" at W0's outputs; "near" them (a small random init on both factors,
    # VB-LoRA's bank); "away" (the paper's init changes the outputs: FourierFT's spectrum, C3A's kernels)
    start: str = "exact"

    def __post_init__(self):
        if self.start not in STARTS:
            raise HarnessError(f"method.start must be one of {', '.join(STARTS)}, got '{self.start}'")
        config_class(self)  # type and option names checked with the config, before any model is loaded


STARTS = ("exact", "near", "away")


def driven_types() -> list[str]:
    """PEFT types the bridge drives: layer tuners, not prompt learning, not NOT_DRIVEN."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    return sorted(
        kind.value for kind in PEFT_TYPE_TO_TUNER_MAPPING if kind not in NOT_DRIVEN and not is_prompt_learning(kind)
    )


def is_prompt_learning(kind: str) -> bool:
    from peft import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return issubclass(PEFT_TYPE_TO_CONFIG_MAPPING[kind], PromptLearningConfig)


def label(cfg: "PeftBridgeConfig") -> str:
    """The bridged config's name in messages: peft/<variant>."""
    return f"peft/{cfg.variant or cfg.peft_type.lower()}"


def config_class(cfg: "PeftBridgeConfig"):
    """PEFT's config class for cfg.peft_type, with cfg.options checked against it (methods/peft_options.py):
    one-line errors for unknown or undriven types, data-driven inits, and each option PEFT's class would
    refuse."""
    try:
        from peft import PeftType
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    except ImportError:
        raise HarnessError(f"{label(cfg)}: the PEFT bridge needs Hugging Face PEFT: pip install 'peft>=0.21'") from None

    kind, where = cfg.peft_type.upper(), label(cfg)
    if kind not in PeftType.__members__:
        raise HarnessError(
            f"{where}: unknown method.peft_type '{cfg.peft_type}'; PEFT {_peft_version()} has: "
            f"{', '.join(driven_types())}"
        )
    if kind in NOT_DRIVEN:
        raise HarnessError(
            f"{where}: PEFT type {kind} is not driven by the bridge ({NOT_DRIVEN[kind]}); it drives: "
            f"{', '.join(driven_types())}"
        )
    if is_prompt_learning(kind):
        raise HarnessError(
            f"{where}: PEFT type {kind} is prompt learning (virtual tokens, no adapted layers); "
            f"the bridge drives: {', '.join(driven_types())}"
        )
    found = PEFT_TYPE_TO_CONFIG_MAPPING[kind]
    init = str(cfg.options.get("init_lora_weights", "")).lower()
    if init in DATA_INITS:
        raise HarnessError(
            f"{where}: init_lora_weights={init} starts from data, which the bridge does not run ({DATA_INITS[init]})"
        )
    check_options(where, found, cfg.options, HARNESS_SET)
    return found


def stand_in(model: nn.Module, names: list[str]) -> nn.Module:
    """A module holding meta-device copies of `model`'s modules `names` at the same paths (no weight copied),
    where PEFT's tuner can be tried with other options without touching the model."""
    root = nn.Module()
    for name in names:
        module = model.get_submodule(name)
        memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in module.parameters()}
        memo |= {id(b): torch.empty_like(b, device="meta") for b in module.buffers()}
        *path, leaf = name.split(".")
        parent = root
        for part in path:
            if part not in parent._modules:
                parent.add_module(part, nn.Module())
            parent = parent._modules[part]
        parent.add_module(leaf, copy.deepcopy(module, memo))
    return root


def _peft_version() -> str:
    import peft

    return peft.__version__


# Measured on a quantized base (tests/models/test_storage.py): these tuners read the packed weight as a matrix, and
# PEFT refuses the SVD starts on one ("initialize PiSSA under float32, float16, or bfloat16")
UNQUANTIZABLE_TUNERS = {"C3A", "HRA", "LOHA", "LOKR", "TINYLORA"}
UNQUANTIZABLE_INITS = {"pissa", "olora"}


@register
class PeftBridge(Method):
    name = "peft"
    Config = PeftBridgeConfig
    capabilities = Capabilities(layer_kinds=(nn.Module,))  # any: PEFT says which module types its tuner supports

    @classmethod
    def declared(cls, cfg: PeftBridgeConfig) -> Capabilities:
        init = str(cfg.options.get("init_lora_weights", "")).lower()
        quantizable = cfg.peft_type.upper() not in UNQUANTIZABLE_TUNERS and init not in UNQUANTIZABLE_INITS
        return replace(cls.capabilities, identity_at_init=cfg.start == "exact", quantized_base_ok=quantizable)

    def apply(self) -> None:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        kinds, where = self.capabilities.layer_kinds, label(self.cfg)
        targets = match_targets(self.model, self.cfg.targets, self.head_modules, kinds, method=where)
        module_options = {
            key: match_targets(
                self.model, list(self.cfg.options[key]), self.head_modules, kinds, method=f"{where} options.{key}"
            )
            for key in MODULE_LIST_OPTIONS
            if key in self.cfg.options
        }
        found = config_class(self.cfg)
        tuner = PEFT_TYPE_TO_TUNER_MAPPING[self.cfg.peft_type.upper()]

        def applied(model: nn.Module, options: dict[str, Any]):
            return tuner(model, found(target_modules=targets, **{**options, **module_options}), adapter_name="default")

        self.tuner = run_peft(
            where,
            found,
            self.cfg.options,
            lambda options: applied(self.model, options),
            trial=lambda options: applied(stand_in(self.model, targets), options),
        )
        for name, param in self.model.named_parameters():  # PEFT froze everything but its adapters
            if is_under(name, self.head_modules):
                param.requires_grad_(True)

    def merge(self) -> None:
        try:
            self.tuner.merge_adapter()
        except (TypeError, ValueError, NotImplementedError, AttributeError) as error:
            raise HarnessError(
                f"{label(self.cfg)}: PEFT cannot merge this tuner: {str(error).strip().splitlines()[0]}"
            ) from None
