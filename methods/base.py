"""The method interface (docs/design.md): what the training loop drives for every PEFT method.

A method is constructed on a loaded model: it freezes the backbone, keeps the task head trainable,
injects its modules (`apply`) and then answers the loop's questions: optimizer groups, extra loss,
the step-end hook, merging, and parameter counts for the run record.
"""

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Optional

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from methods.capabilities import Capabilities
from methods.frozen import parameter_count
from methods.inject import bert_targets, inject, is_under, match_targets

NORM_LAYERS = tuple(
    t for t in (nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None), nn.modules.batchnorm._BatchNorm) if t
)


def is_bias(name: str) -> bool:
    """Whether a parameter name is a bias by HF Trainer's rule ("bias" in the name; its last part here)."""
    return "bias" in name.rsplit(".", 1)[-1]


def role_targets(*roles: str):
    """A config's `targets` field defaulting to model roles (q, v, ffn_out, ...): their BERT module names in
    a config built in code, the `${roles:...}` interpolation resolved on the chosen model in a composed
    one (harness/config/compose.py)."""
    # pragma below: this runs at import (class bodies), where mutmut cannot switch mutants on; its mutants, applied
    # by hand, fail tests/config/test_roles.py (no default → import error; no/renamed metadata or no BERT names →
    # role tests)
    return field(default_factory=lambda: bert_targets(*roles), metadata={"roles": roles})  # pragma: no mutate


@dataclass
class MethodConfig:
    """Keys every method has. `lr`/`head_lr` are the method's recommended rates, written in its
    conf/method YAML only (train.lr and train.head_lr default to them; None for a config built in
    code); `variant` names a configuration in leaderboards."""

    name: str = ""
    targets: list[str] = field(default_factory=list)
    lr: Optional[float] = None
    head_lr: Optional[float] = None
    variant: Optional[str] = None


class Method:
    """Base class: full backbone frozen, head trainable, no adapter. Subclasses declare their
    `capabilities`, override `apply` and the hooks they need."""

    name: ClassVar[str]
    Config: ClassVar[type] = MethodConfig
    # What the method declares (methods/capabilities.py); a method whose declarations depend on its config
    # (PEFT bridge's start and tuner, SURM's placement) narrows them in `declared(cfg)`.
    capabilities: Capabilities = Capabilities()
    total_steps: Optional[int] = None  # set by start()
    optimizer: Optional[torch.optim.Optimizer] = None

    @classmethod
    def declared(cls, cfg: MethodConfig) -> Capabilities:
        """The capabilities of the method under `cfg` (known before a model loads)."""
        return cls.capabilities

    def __init__(self, model: nn.Module, cfg: MethodConfig, head_modules: list[str]):
        self.capabilities = self.declared(cfg)
        self.model, self.cfg, self.head_modules = model, cfg, list(head_modules)
        self.fixed: dict[str, nn.Parameter] = {}  # trained tensors an optimizer holds fixed (hold_fixed)
        modules = dict(model.named_modules())
        missing = [h for h in self.head_modules if h not in modules]
        if missing:
            raise HarnessError(
                f"head modules {missing} not found in the model; top-level modules: "
                f"{[n for n, _ in model.named_children()]}"
            )
        self.backbone_params = sum(
            parameter_count(p) for n, p in model.named_parameters() if not is_under(n, self.head_modules)
        )
        for name, param in model.named_parameters():
            param.requires_grad_(is_under(name, self.head_modules))
        self.apply()

    def apply(self) -> None:
        """Inject modules / unfreeze parameters. The base method trains the head only."""

    # -- what the loop drives -------------------------------------------------------------------
    def train_mode(self) -> None:
        """model.train(), except BatchNorm layers whose parameters are all frozen: they keep their
        pretrained running statistics (eval mode). Otherwise a frozen backbone's statistics drift
        to the new data during training and no longer match the features the head was trained on
        (measured: EfficientNet-Lite0 head-only on mnist5k, 35.7 % vs 87.9 % test accuracy)."""
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)
            ):
                module.eval()

    def named_head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and is_under(n, self.head_modules)]

    def named_adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (n, p) for n, p in self.model.named_parameters() if p.requires_grad and not is_under(n, self.head_modules)
        ]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_head_parameters()]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_adapter_parameters()]

    def undecayed(self) -> set[str]:
        """Names of the trainable parameters AdamW must not decay, by the declared `capabilities.decay`."""
        if self.capabilities.decay == "all":
            return set()
        in_norm_layers = {
            f"{module_name}.{name}" if module_name else name
            for module_name, module in self.model.named_modules()
            if isinstance(module, NORM_LAYERS)
            for name, _ in module.named_parameters(recurse=False)
        }
        return {n for n, p in self.model.named_parameters() if p.requires_grad and (is_bias(n) or n in in_norm_layers)}

    def param_groups(self, train, adapter_rate: Optional[Callable[[str, nn.Parameter], float]] = None) -> list[dict]:
        """The optimizer's groups: adapter at train.lr, head at train.head_lr, each split into the tensors the
        method's policy decays (at train.weight_decay) and the others (weight decay 0). `adapter_rate(name,
        tensor)` multiplies train.lr per adapter tensor (LoRA+'s B), a group per distinct factor."""
        undecayed, groups = self.undecayed(), []
        for named, lr, rate in (
            (self.named_adapter_parameters(), train.lr, adapter_rate),
            (self.named_head_parameters(), train.head_lr, None),
        ):
            for decay in (True, False):
                by_rate: dict[float, list[nn.Parameter]] = {}
                for n, p in named:
                    if (n not in undecayed) == decay:
                        by_rate.setdefault(1.0 if rate is None else rate(n, p), []).append(p)
                for factor, chosen in by_rate.items():
                    groups.append(
                        {"params": chosen, "lr": lr * factor, "weight_decay": train.weight_decay if decay else 0.0}
                    )
        return groups

    def lora_pairs(self) -> list[tuple[str, nn.Parameter, nn.Parameter, float]]:
        """(layer name, A, B, scaling s) of every layer whose update is LoRA's s·B·A (a method whose capabilities
        declare `lora_pairs`): what LoRA's optimizers (LoRA+, LoRA-FA, Riemannian) act on."""
        return [
            (name, *module.lora_pair()) for name, module in self.model.named_modules() if hasattr(module, "lora_pair")
        ]

    def hold_fixed(self, tensors: dict[str, nn.Parameter]) -> None:
        """Freeze trained tensors that stay part of the method's function (LoRA-FA's A): no longer trained or
        counted as trained, still saved, checksummed and restored with what the method learned."""
        for tensor in tensors.values():
            tensor.requires_grad_(False)
        self.fixed.update(tensors)

    def initialise(self, loss_of: Callable[[dict], torch.Tensor], batches: Iterable[dict]) -> None:
        """A data-dependent start, before `start` (LoRA-GA's gradient), called where the method declares
        `needs_data_at_init` and then says how many batches it reads (`init_batches`): `batches` are the
        first `init_batches` batches of the run's training order and `loss_of(batch)` their task loss (on
        the device, under the run's autocast)."""

    def start(self, total_steps: int, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Called once before the first optimizer step with the loop's total number of steps and its
        optimizer (methods with a schedule over training set it up here: AdaLoRA's budget,
        RAC-LoRA's chain, which may reset the optimizer's state between links)."""
        self.total_steps, self.optimizer = total_steps, optimizer

    def extra_loss(self) -> Optional[torch.Tensor]:
        """A regularizer added to the task loss, or None."""
        return None

    def on_step_end(self, step: int) -> None:
        """Called after optimizer.step() and before zero_grad() (gradients are still there)."""

    def select(self, predict: Callable[[], np.ndarray], score: Callable[[np.ndarray], float]) -> None:
        """Called at every evaluation before the splits are evaluated, for methods that train several candidates
        and keep the best on validation (InCA's taps): `predict()` gives the model's validation outputs (N×width),
        `score(outputs)` the primary metric of N×classes outputs, higher better."""

    def merge(self) -> None:
        """Fold the update into the base weights; outputs stay the same (nothing to fold here)."""

    def allocation(self) -> Optional[dict[str, int]]:
        """Rank kept per adapted module, for methods that reallocate a rank budget; else None."""
        return None

    def param_counts(self) -> dict[str, int]:
        adapter = sum(p.numel() for p in self.adapter_parameters())
        head = sum(p.numel() for p in self.head_parameters())
        return {
            "adapter": adapter,
            "head": head,
            "trainable": adapter + head,
            "total": sum(parameter_count(p) for p in self.model.parameters()),
            "backbone": self.backbone_params,
        }

    # -- saving ---------------------------------------------------------------------------------
    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors outside the optimizer that training changes and the model's function depends on,
        by their names in the model: the running statistics of BatchNorm layers that are trained
        (they run in train mode); subclasses add theirs (masks, folded weights, redrawn factors)."""
        tensors = dict(self.fixed)  # held fixed by the optimizer (hold_fixed)
        for name, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(
                p.requires_grad for p in module.parameters(recurse=False)
            ):
                tensors.update({f"{name}.{buffer}": value for buffer, value in module.named_buffers(recurse=False)})
        return tensors

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything the method learned, live (not copied): every trained parameter and the learned
        tensors. Its bytes are the record's `params.trainable_sha256`."""
        return {**{n: p for n, p in self.model.named_parameters() if p.requires_grad}, **self.learned_tensors()}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of `state_tensors()`: loaded into a freshly built model of the same config it gives
        the same outputs."""
        return {name: tensor.detach().clone() for name, tensor in self.state_tensors().items()}

    def checkpoint_state(self) -> dict:
        """What the method keeps besides its learned tensors and needs to continue a run from a
        checkpoint (harness/engine/checkpoint.py): running scores, generators. Tensors, numbers, strings only."""
        return {}

    def restore_checkpoint_state(self, state: dict) -> None:
        """The inverse of `checkpoint_state`, called after `start`."""

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        tensors = self.state_tensors()
        unknown, missing = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
        if unknown:
            raise HarnessError(f"state holds tensors this method does not learn: {unknown[:5]}")
        if missing:
            raise HarnessError(f"state lacks tensors this method learns: {missing[:5]}")
        with torch.no_grad():
            for name, value in state.items():
                tensors[name].copy_(value)


class LayerMethod(Method):
    """A method that wraps every targeted layer in an adapter layer (LoRA and its relatives).

    Subclasses implement `make_layer(name, base)`, returning an adapter layer that wraps `base`
    (methods/layer.py: it owns merging); target matching (over the declared `layer_kinds`), injection
    and merging are shared.
    """

    def make_layer(self, name: str, base: nn.Module) -> nn.Module:
        raise NotImplementedError

    def apply(self) -> None:
        kinds = self.capabilities.layer_kinds
        names = match_targets(self.model, self.cfg.targets, self.head_modules, kinds, method=self.name)
        self.layers = inject(self.model, names, self.make_layer)

    def merge(self) -> None:
        if not self.capabilities.mergeable:  # the update is not a weight: outputs stay as they are
            return
        for layer in self.layers.values():
            layer.merge()
