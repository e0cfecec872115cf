"""Hadamard adapter (Chen, Fu, Fan, Du, Lou, Han, Zhang, Li, Xiao; CIKM 2023, doi 10.1145/3583780.3614904,
arXiv 2407.11033). No code is public: everything below is from the paper's text and figure as summarised in
/work/shared/methods-spec.md § W3.2; the details marked (reconstruction) are choices made here.

Forward. On each layer ℓ's self-attention output A_ℓ (batch × tokens × d) an element-wise affine map,
W_ℓ, b_ℓ ∈ ℝ^d broadcast over batch and tokens:
    A'_ℓ = W_ℓ ⊙ A_ℓ + b_ℓ,      W_ℓ = 1, b_ℓ = 0 at init,
so A' = A exactly at step 0 (1·a + 0 = a in floating point): the outputs are the pretrained model's.
Where A_ℓ is taken relative to the attention output projection W^O (the `o` role, BERT's
attention.output.dense, y = x W^Oᵀ + b^O) is ambiguous between the paper's figure and its summaries
(reconstruction), so both are offered (`side`):
    side=input  (default): y = (W ⊙ x + b) W^Oᵀ + b^O      (A = Concat(head_1..head_H), before W^O)
    side=output:           y = W ⊙ (x W^Oᵀ + b^O) + b      (A = MultiHead(Q, K, V), after W^O)
The default is `input` because the paper writes the self-attention output it adapts as the concatenation
of the heads, A_ℓ = Concat_h softmax(Q_ℓ^h K_ℓ^hᵀ/√d_k) V_ℓ^h, with no W^O (its Section 3 as summarised
in the spec's sources); the figure, which puts the adapter between the attention block and its
LayerNorm, fits either side. For BERT both sides train the same 2d numbers.
Merge (both sides are a diagonal rescale of W^O plus a bias, folded into the projection):
    input:  W^O ← W^O diag(W),   b^O ← b^O + W^O b
    output: W^O ← diag(W) W^O,   b^O ← W ⊙ b^O + b
(a bias-less projection, as Llama's o_proj, gets a frozen bias holding the folded b when merged).

LayerNorm. The paper also trains the normalisation module that follows the attention output (BERT's
post-LN `attention.output.LayerNorm`). It is located by name (`norms`, child names tried in order): the
nearest module, from the projection's parent up, with a child of one of those names (LlamaRMSNorm is no torch
norm class, so the name decides).
BERT family (MiniLM): BertSelfOutput holds dense, LayerNorm and dropout, so the sibling `LayerNorm`.
Llama-family decoders (pre-LN, an extension: the paper is on encoders): o_proj sits in self_attn, and the
decoder layer's `post_attention_layernorm` is the norm applied to the attention's residual sum.
A target with none is refused in one line.

Two phases (the paper's Figure 3: (a) train the classifier with the PLM frozen, (b) inject the adapter and
unfreeze the normalisation module). Within one run of T optimizer steps the first ⌊head_phase·T⌋ steps
train the task head only; the adapter and the LayerNorms then train from step ⌊head_phase·T⌋ + 1 on.
The paper states no length for phase (a) (it is a separate training there); the default head_phase 0.1
is argued, not taken from it (reconstruction): its purpose is to replace the random head before the
adapter moves (as linear probing before fine-tuning), a linear head on frozen features fits fastest in
its first steps, and 90 % of the run's steps stay for the adapter, so its budget is within 10 % of every
other method's under the same protocol. Whether the classifier keeps training in phase (b) is not stated
(the summaries list only the adapter and the LayerNorm as trained there); `head_after: true` (default) keeps
it training: the harness trains every method's head for the whole run, and a head fitted for only 10 % of
the run and then frozen would handicap the method against that convention; `head_after: false` freezes it,
the paper's other reading. A resting tensor (the adapter and LayerNorms in phase (a), the head after it when
head_after is false) keeps requires_grad (the optimizer, data-parallel wrapper and checkpoints see one fixed
set of trained tensors), but its gradient is replaced by zeros in the backward pass (so gradient clipping
measures the training tensors only) and dropped before optimizer.step() (so AdamW neither moves it, decays
it nor builds moments for it: the adapter's Adam state starts fresh at the switch, as a second stage's
optimizer would). The phase is kept by `on_step_end` (a step hook) and saved in checkpoints.

Trainable params: 2·d_in (input side) or 2·d_out (output side) per targeted projection, plus the weight and
bias of each located LayerNorm (2d): 4d per BERT layer. BERT-base (12 layers, d 768): 12·4·768 = 36,864,
0.0337 % of its 109.5 M backbone parameters, the paper's 0.033 % (of ~110 M, truncated). The task head is
counted apart, as for every method.
Weight decay (`decay="trainer"`, W exempt): b is a bias and the LayerNorm's tensors are normalisation
parameters, exempt by HF Trainer's rule; W is exempt too: it is a per-feature scale that starts at 1 like
LayerNorm's γ, and decay would pull it (and the attention output it scales) toward 0, not toward the
pretrained model. No reference code exists to say otherwise. The head's weight decays, its bias does not.

Defaults: targets ${roles:o} (the attention output projection of every layer, the paper's placement); side
input, head_phase 0.1, head_after true (argued above); norms [LayerNorm, post_attention_layernorm]; lr and
head_lr in conf/method/hadamard.yaml.
Not implemented: the paper's pruned variant (0.022 %: adapters removed from redundant layers; choose
layers with method.targets patterns instead).
"""

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import LayerMethod, MethodConfig, role_targets
from methods.capabilities import Capabilities
from methods.frozen import frozen_weight, trained_factory
from methods.layer import AdaptedLayer
from methods.registry import register

SIDES = ("input", "output")


@dataclass
class HadamardConfig(MethodConfig):
    name: str = "hadamard"
    targets: list[str] = role_targets("o")
    side: str = "input"  # where A is taken: the input of W^O (the heads' concatenation) or its output
    head_phase: float = 0.1  # fraction of the run's optimizer steps that train the task head only
    head_after: bool = True  # the head keeps training after the head-only phase
    # child names of the normalisation layer after the attention output: BERT's, then Llama's
    norms: list[str] = field(default_factory=lambda: ["LayerNorm", "post_attention_layernorm"])

    def __post_init__(self):
        require(self.side in SIDES, f"method.side must be one of {', '.join(SIDES)}, got {self.side!r}")
        require(0 <= self.head_phase < 1, f"method.head_phase must be in [0, 1), got {self.head_phase}")
        require(bool(self.norms), "method.norms is empty; give the child names of the LayerNorm after the attention")
        require(
            self.head_after or self.head_phase > 0,
            "method.head_after=false with method.head_phase=0 never trains the task head; "
            "give head_phase > 0 or head_after=true",
        )


class HadamardLinear(AdaptedLayer):
    """A frozen attention output projection with W ⊙ · + b on its input or output side."""

    def __init__(self, base: nn.Linear, side: str):
        super().__init__(base)
        size = base.in_features if side == "input" else base.out_features
        factory = trained_factory(base)
        self.hadamard_weight = nn.Parameter(torch.ones(size, **factory))
        self.hadamard_bias = nn.Parameter(torch.zeros(size, **factory))
        self.side = side

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        if self.side == "input":
            return self.base(x * self.hadamard_weight + self.hadamard_bias)
        return self.base(x) * self.hadamard_weight + self.hadamard_bias

    def merged_weight(self) -> torch.Tensor:
        weight = frozen_weight(self.base)
        if self.side == "input":
            return weight * self.hadamard_weight  # W^O diag(W): column j scaled by W_j
        return self.hadamard_weight[:, None] * weight  # diag(W) W^O: row i scaled by W_i

    def merged_bias(self) -> torch.Tensor:
        weight = frozen_weight(self.base)
        bias = (
            self.base.bias.detach().to(weight.dtype) if self.base.bias is not None else torch.zeros_like(weight[:, 0])
        )
        if self.side == "input":
            return bias + weight @ self.hadamard_bias
        return self.hadamard_weight * bias + self.hadamard_bias

    def fold(self) -> None:
        with torch.no_grad():
            weight, bias = self.merged_weight(), self.merged_bias()  # both from the unfolded W^O
            self.write_base_weight(weight)
            if self.base.bias is None:  # a bias-less projection (Llama's o_proj) gets one, frozen
                self.base.bias = nn.Parameter(bias, requires_grad=False)
            else:
                self.base.bias.copy_(bias)


@register
class Hadamard(LayerMethod):
    name = "hadamard"
    Config = HadamardConfig
    capabilities = Capabilities(layer_kinds=(nn.Linear,), step_hook=True)
    head_steps = 0  # the head-only phase's length, set by start()
    completed = 0  # optimizer steps taken
    hooks: tuple = ()  # the gradient and optimizer hooks of the last start()

    def make_layer(self, name: str, base: nn.Linear) -> HadamardLinear:
        return HadamardLinear(base, self.cfg.side)

    def apply(self) -> None:
        super().apply()
        self.norms = {name: self.following_norm(name) for name in self.layers}
        for norm in set(self.norms.values()):
            self.model.get_submodule(norm).requires_grad_(True)

    def following_norm(self, name: str) -> str:
        """The normalisation layer after the targeted projection `name`: the nearest module, from its parent up,
        with a child named one of `norms` (tried in order)."""
        parent = name
        while parent:
            parent = parent.rpartition(".")[0]
            children = dict(self.model.get_submodule(parent).named_children())
            for child in self.cfg.norms:
                if child in children:
                    return f"{parent}.{child}" if parent else child
        raise HarnessError(
            f"hadamard: no normalisation layer named {' or '.join(self.cfg.norms)} after '{name}' (in its parent "
            "or above); the Hadamard adapter trains the LayerNorm after the attention output: target attention "
            "output projections (role o), or name that LayerNorm with method.norms"
        )

    def undecayed(self) -> set[str]:
        return super().undecayed() | {f"{name}.hadamard_weight" for name in self.layers}

    # -- the two phases -----------------------------------------------------------------------------
    def start(self, total_steps: int, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        super().start(total_steps, optimizer)
        self.head_steps, self.completed = math.floor(self.cfg.head_phase * total_steps), 0
        for hook in self.hooks:
            hook.remove()
        self.adapter_ids = {id(p) for p in self.adapter_parameters()}
        self.head_ids = {id(p) for p in self.head_parameters()}
        hooks = [p.register_hook(self.rested_gradient(p)) for p in self.adapter_parameters() + self.head_parameters()]
        if optimizer is not None:
            hooks.append(optimizer.register_step_pre_hook(lambda *_: self.drop_resting_gradients()))
        self.hooks = tuple(hooks)

    def resting(self) -> set[int]:
        """The ids of the trained tensors that sit out the step being taken."""
        if self.completed < self.head_steps:
            return self.adapter_ids
        return set() if self.cfg.head_after else self.head_ids

    def rested_gradient(self, param: nn.Parameter):
        """A gradient hook: zeros for a resting tensor (so clipping measures only the training ones)."""
        return lambda grad: torch.zeros_like(grad) if id(param) in self.resting() else grad

    def drop_resting_gradients(self) -> None:
        """Before optimizer.step(): AdamW skips a tensor without a gradient (no move, decay or moments)."""
        resting = self.resting()
        for param in self.adapter_parameters() + self.head_parameters():
            if id(param) in resting:
                param.grad = None

    def on_step_end(self, step: int) -> None:
        self.completed = step

    def checkpoint_state(self) -> dict:
        return {"completed": self.completed}

    def restore_checkpoint_state(self, state: dict) -> None:
        self.completed = int(state["completed"])
