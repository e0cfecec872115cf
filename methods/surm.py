"""SURM: Structured Unrestricted-Rank Matrices for parameter-efficient fine-tuning (Sehanobish et
al., NeurIPS 2024, arXiv 2406.17740). Checked against the reference code
(arijitthegame/structured-matrices-PEFT, src/lora/*_lora.py, src/adapter/circulant_adapter.py).

A structured matrix M (methods/structured.py), of full rank in general, takes the place of LoRA's
low-rank product or of an adapter's projections:
- circulant: M = s·circ(c_B ⊙ c_A), c_A ~ N(0, 1) (N(0, 0.02²) in the adapter), c_B = 0, s = α;
  2d parameters; square layers only.
- toeplitz:  M = s·T(b)·T(a), T symmetric Toeplitz, a ~ N(0, 0.02²), b = 0, s = α; 2d parameters;
  square layers only.
- kronecker: M = (α/r)·B ⊗ A, A: r×(d_in/r) kaiming-uniform(a=√5), B: (d_out/r)×r = 0;
  d_in + d_out parameters, any shape with r dividing d_in and d_out.
M = 0 at init in every case. Products use FFTs / reshapes, never the dense M.

placement=lora: y = W0 x + b + M·dropout(x) on the targeted linear layers (default Wq, Wv);
merge W0 ← W0 + M. Params per layer: those of M.
placement=adapter: after the attention-output dense and the FFN-output dense of every layer
(default targets), after the block's own dropout and before its residual add and LayerNorm
(the reference wiring; the block's dropout moves into the wrapper):
    h ← h + act(M·dropout(h)) + β,   β ∈ R^d = 0,  act ∈ {gelu, tanh, silu, identity}
(activations with act(0) = 0, so the adapter is the identity at init, and act'(0) ≠ 0: with relu,
relu'(0) = 0 and M = 0 at init, M would never get a gradient). Not mergeable (act is
non-linear). Params per adapter: those of M (square, d = d_out) + d.
Weight decay (`decay="trainer"`): the structured factors (circulant and Toeplitz vectors included)
decayed, the adapter bias β and other biases and LayerNorm not: the reference's no_decay list
["bias", "LayerNorm.weight"] (src/scripts/run_bert_glue.py; weight_decay 0.25).
"""

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import LayerMethod, MethodConfig
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.inject import bert_targets, replace_module
from methods.lowrank import AdditiveLayer
from methods.registry import register
from methods.structured import STRUCTURES, build_structure

PLACEMENTS = ("lora", "adapter")
DEFAULT_TARGETS = {
    "lora": bert_targets("q", "v"),
    "adapter": bert_targets("o", "ffn_out"),
}  # on a BERT; conf/method/surm.yaml names roles
ACTIVATIONS = {"gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "identity": nn.Identity}


@dataclass
class SurmConfig(MethodConfig):
    name: str = "surm"
    targets: list[str] = field(default_factory=list)  # empty: the placement's default targets
    structure: str = "circulant"  # circulant | toeplitz (square layers) | kronecker
    placement: str = "lora"  # lora | adapter
    alpha: float = 1.0  # circulant/toeplitz scale alpha; kronecker alpha/r
    r: int = 2  # Kronecker factor size (r must divide the layer's sizes); unused otherwise
    dropout: float = 0.0
    activation: str = "gelu"  # adapter placement only: gelu | tanh | silu | identity

    def __post_init__(self):
        require(
            self.structure in STRUCTURES,
            f"method.structure must be one of {', '.join(STRUCTURES)}, got '{self.structure}'",
        )
        require(
            self.placement in PLACEMENTS,
            f"method.placement must be one of {', '.join(PLACEMENTS)}, got '{self.placement}'",
        )
        require(
            self.activation in ACTIVATIONS,
            f"method.activation must be one of {', '.join(ACTIVATIONS)} (act(0) = 0, act'(0) ≠ 0), got "
            f"'{self.activation}'",
        )
        require(self.r > 0, f"method.r must be a positive integer, got {self.r}")
        require(0 <= self.dropout < 1, f"method.dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            self.targets = list(DEFAULT_TARGETS[self.placement])


def structure_scale(cfg: SurmConfig) -> float:
    return cfg.alpha / cfg.r if cfg.structure == "kronecker" else cfg.alpha


class SurmLinear(AdditiveLayer):
    """placement=lora: a frozen nn.Linear plus a structured update M."""

    def __init__(self, base: nn.Linear, structured: nn.Module, scale: float, dropout: float):
        super().__init__(base, dropout)
        self.structured, self.scale = structured, scale

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.structured(x)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * self.structured.dense()


class SurmAdapter(nn.Module):
    """placement=adapter: h = block_dropout(base(x)); h + act(M·dropout(h)) + β."""

    def __init__(
        self,
        base: nn.Linear,
        block_dropout: nn.Module,
        structured: nn.Module,
        scale: float,
        dropout: float,
        activation: str,
    ):
        super().__init__()
        self.base, self.block_dropout, self.structured, self.scale = base, block_dropout, structured, scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.activation = ACTIVATIONS[activation]()
        self.adapter_bias = nn.Parameter(torch.zeros(base.out_features, **trained_factory(base)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.block_dropout(self.base(x))
        return hidden + self.activation(self.scale * self.structured(self.dropout(hidden))) + self.adapter_bias


@register
class Surm(LayerMethod):
    name = "surm"
    Config = SurmConfig
    capabilities = Capabilities()

    @classmethod
    def declared(cls, cfg: SurmConfig) -> Capabilities:
        # the adapter placement is not mergeable: its activation makes the update non-linear
        return replace(cls.capabilities, mergeable=cfg.placement == "lora")

    def make_layer(self, name: str, base: nn.Linear) -> nn.Module:
        cfg = self.cfg
        factory = trained_factory(base)
        if cfg.placement == "lora":
            structured = build_structure(
                cfg.structure, base.in_features, base.out_features, cfg.r, 1.0, name, **factory
            )
            return SurmLinear(base, structured, structure_scale(cfg), cfg.dropout)
        d = base.out_features
        structured = build_structure(cfg.structure, d, d, cfg.r, 0.02, name, **factory)
        return SurmAdapter(
            base, self.take_block_dropout(name), structured, structure_scale(cfg), cfg.dropout, cfg.activation
        )

    def take_block_dropout(self, name: str) -> nn.Module:
        """The dropout that follows `name` in its block (BERT/RoBERTa `<block>.dropout`), moved into
        the adapter so the adapter sees dropped-out outputs, as in the reference; else Identity."""
        parent, _, _ = name.rpartition(".")
        sibling = f"{parent}.dropout" if parent else "dropout"
        try:
            module = self.model.get_submodule(sibling)
        except AttributeError:
            return nn.Identity()
        if not isinstance(module, nn.Dropout):
            raise HarnessError(
                f"surm: expected '{sibling}' after '{name}' to be a Dropout, found {type(module).__name__}"
            )
        replace_module(self.model, sibling, nn.Identity())
        return module
