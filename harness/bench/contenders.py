"""What the training-step benchmark times: each method at its default config (conf/method/<name>.yaml, the
benchmarked model's role map resolving its targets), the frozen-backbone limit, and Hugging Face PEFT's LoRA,
DoRA and AdaLoRA built from the same method configs; on one model and one random batch."""

import re

import torch
from hydra import compose
from torch import nn

from harness.config.preflight import group_options
from harness.config.sections import ModelConfig, parse_section
from harness.models import load_model
from methods import METHODS, build_method, parse_method_config
from methods.base import Method, MethodConfig
from methods.budget import schedule_steps
from methods.capabilities import Capabilities

PEFT_METHODS = ("lora", "dora", "adalora")  # the methods PEFT has: each also timed as PEFT builds it


class FrozenBackbone(Method):
    """The frozen-backbone limit: no adapter, the head trained, and gradients flowing back through
    every layer to the input embeddings (what any adapter inside the network needs at least)."""

    name = "limit"

    def apply(self) -> None:
        self.model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: output.requires_grad_(True)
        )


def peft_regex(patterns: list[str]) -> str:
    """Our target patterns (module-name suffixes, or `re:` regexes) as one PEFT target regex."""
    parts = [p[3:] if p.startswith("re:") else rf"(?:.*\.)?{re.escape(p)}" for p in patterns]
    return "|".join(f"(?:{p})" for p in parts)


class PeftMethod(Method):
    """PEFT's LoRA / DoRA / AdaLoRA with our method config, driven by the same StepRunner. AdaLoRA's initial
    rank and schedule are those our run takes from the same config (its rank filled in by the config, its
    t_init/t_final turned into steps as the method does)."""

    def __init__(self, model: nn.Module, cfg, total_steps: int, head: list[str]):
        from peft import AdaLoraConfig, LoraConfig, get_peft_model  # optional (the `bridge` extra)

        self.name = f"peft_{cfg.name}"
        common = dict(
            target_modules=peft_regex(list(cfg.targets)),
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            modules_to_save=head,
        )
        if cfg.name == "adalora":
            config = AdaLoraConfig(
                init_r=cfg.r,
                target_r=cfg.target_r,
                tinit=schedule_steps(cfg.t_init, total_steps, "t_init"),
                tfinal=schedule_steps(cfg.t_final, total_steps, "t_final"),
                deltaT=cfg.delta_t,
                beta1=cfg.beta1,
                beta2=cfg.beta2,
                orth_reg_weight=cfg.orth_reg,
                total_step=total_steps,
                **common,
            )
        else:
            config = LoraConfig(r=cfg.r, use_dora=cfg.name == "dora", **common)
        self.peft_model = get_peft_model(model, config)
        self.model, self.cfg, self.head_modules = self.peft_model, cfg, []
        self.head_names = tuple(f".{h}." for h in head)

    def is_head(self, name: str) -> bool:
        return any(h in name for h in self.head_names)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft_model.named_parameters() if p.requires_grad and self.is_head(n)]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft_model.named_parameters() if p.requires_grad and not self.is_head(n)]

    def on_step_end(self, step: int) -> None:
        if self.cfg.name == "adalora":
            self.peft_model.base_model.update_and_allocate(step)


def text_model(name: str) -> nn.Module:
    """`minilm`: the packaged MiniLM (real weights); `roberta_base_random`: RoBERTa-base's shape
    (12 layers, hidden 768, FFN 3072, 12 heads) with random weights, no download."""
    if name == "roberta_base_random":
        from transformers import RobertaConfig, RobertaForSequenceClassification  # heavy: only when benchmarking

        torch.manual_seed(0)
        config = RobertaConfig(
            vocab_size=50265,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            num_labels=5,
        )
        return RobertaForSequenceClassification(config)
    return load_model(parse_section(ModelConfig, compose("config", overrides=[f"model={name}"]).model, "model"), 5)


def random_batch(vocab: int, batch: int, length: int) -> dict:
    """The one batch every contender steps on: random token ids and labels (5 classes), seeded."""
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, vocab, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": torch.randint(0, 5, (batch,), generator=generator),
    }


def applies_to_transformers(capabilities) -> bool:
    """Full fine-tuning and head-only (no adapted layers), or a method that adapts Linear layers."""
    return not capabilities.layer_kinds or capabilities.adapts(nn.Linear)


def available_methods() -> list[str]:
    """`--methods all`: ours (top level; of the adapters, those of Linear layers: the benchmark's models are
    transformers), then PEFT's tuners through the bridge."""
    options = group_options()["method"]
    ours = [m for m in options if "/" not in m and applies_to_transformers(METHODS[m].capabilities)]
    return ours + [m for m in options if m.startswith("peft/")]


COMPILED = "@compiled"  # a label's suffix: the same contender with its forward compiled (harness/engine/compiled.py)


def contender_labels(methods: list[str], with_peft: bool, compiled: bool = False) -> list[str]:
    """The limit, the methods, PEFT's build of those PEFT has, then (`compiled`) the limit and the methods again
    with their forward compiled."""
    eager = ["limit", *methods]
    return [
        *eager,
        *([f"peft_{m}" for m in PEFT_METHODS if m in methods] if with_peft else []),
        *([label + COMPILED for label in eager] if compiled else []),
    ]


def uncompiled(label: str) -> tuple[str, bool]:
    """A contender label without its `@compiled` suffix, and whether it had one."""
    return label.removesuffix(COMPILED), label.endswith(COMPILED)


def composed(method: str, model_name: str):
    """The config of `method` on `model_name` (its role map resolves the method's targets); the synthetic
    roberta_base_random has RoBERTa's names, those of the default model."""
    overrides = [f"method={method}"] + ([f"model={model_name}"] if model_name in group_options()["model"] else [])
    return compose("config", overrides=overrides)


def head_of(model_name: str) -> list[str]:
    return list(composed("head", model_name).model.head_modules)


def method_config(name: str, model_name: str):
    """`name`'s default config on `model_name`, checked and filled in as a run's."""
    return parse_method_config(composed(name, model_name).method)


def split_label(label: str) -> tuple[str, str | None]:
    """A contender label's method and optimizer: `lora+loraplus` is LoRA trained by LoRA+ (None: AdamW)."""
    method, _, optimizer = label.partition("+")
    return method, optimizer or None


def contender_capabilities(label: str, model_name: str) -> Capabilities:
    """What `label`'s method declares (PEFT's implementation of one of ours: ours'; `limit`: an adapter's defaults)."""
    label = split_label(label)[0]
    if label == "limit":
        return Capabilities()
    if label.startswith("peft_"):
        return METHODS[label[5:]].capabilities
    node = composed(label, model_name).method
    return METHODS[node.name].declared(parse_method_config(node))


def contender_method(model: nn.Module, label: str, total_steps: int, model_name: str) -> Method:
    """`label`'s method applied to `model` (changed in place): `limit`, `peft_<method>` or one of ours (its
    optimizer after a `+` left to the caller)."""
    label = split_label(label)[0]
    head = head_of(model_name)
    if label == "limit":
        return FrozenBackbone(model, MethodConfig(name="limit"), head)
    if label.startswith("peft_"):
        return PeftMethod(model, method_config(label[5:], model_name), total_steps, head)
    return build_method(model, composed(label, model_name).method, head)
