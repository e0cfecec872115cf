"""LoRTA: Low-Rank Tensor Adaptation (Hounie et al. 2024, arXiv 2410.04060).

One CP tensor holds the updates of all targeted attention matrices of all layers,
    ΔT ∈ R^{d × d_h × H × L × M} = Σ_k a_k ∘ b_k ∘ c^H_k ∘ c^L_k ∘ c^M_k,
with factors A (d×r), B (r×d_h), C_h (H×r), C_l (L×r), C_m (M×r) shared by the whole model
(H heads of size d_h = d/H, L layers, M matrix types: Wq, Wk, Wv, Wo by default). For layer l and
matrix m, with λ_h = C_h[h] ⊙ C_m[m] ⊙ C_l[l] ∈ R^r,
    ΔW_{l,m} = [A diag(λ_1) B, …, A diag(λ_H) B]   (d × H·d_h, heads along the input side)
    y = W0 x + b + s · ΔW_{l,m} dropout(x),   s = α/r (reference default α = 1)
Init: A kaiming-uniform(a=√5), B = 0 (ΔW = 0 at start), C_h, C_l, C_m kaiming-uniform (a = 0).
Each layer computes its update from the factors in its own forward, in O(r·(d + H·d_h)) per token:
x split into heads (…, H, d_h) → ·Bᵀ (…, H, r) → ·λ and summed over heads (…, r) → ·Aᵀ (…, d);
the reference rebuilds all L·M dense d×d matrices on every forward (scripts/bench_structured.py
measures the difference). Merge: W0 ← W0 + s·ΔW_{l,m} for every adapted matrix.
Layers and matrix types come from module names (the layer index in `…layer.<l>.…`, the matrix
type from the target pattern it matches) and H from the model config; every target takes the hidden
size d = H·d_h as input.
Grouped-query attention (Llama-3, SmolLM2: k and v map d → H_kv·d_h, narrower than q and o): the paper
and its code define ΔT for d×d matrices only. Here the head split stays on the input side, which is d
for q, k, v and o alike, and the narrower outputs get their own output factor A_kv ∈ R^{H_kv·d_h × r}
(kaiming-uniform like A), sharing B, C_h, C_l and C_m: ΔW_{l,m} = [A_kv diag(λ_1) B, …, A_kv diag(λ_H) B]
for k and v. The CP tensor's output mode is thus split by output width; nothing else changes, and a model
without narrower targets has no A_kv (its factors and their initial values are the paper's); with k and v
only, A is H_kv·d_h × r and there is no A_kv.
Trainable params: r·(d + d_h + H + L + M) for the whole model, plus r·H_kv·d_h with GQA k/v beside q/o
(k, v only: r·(H_kv·d_h + d_h + H + L + M)).
Weight decay (`decay="trainer"`): the CP factors and the head's weight decayed, biases and LayerNorm
not (ihounie/lorta nlu/glue/run_glue.py CustomTrainer.create_optimizer; its GLUE scripts decay the
adapter at 0 and the classifier weight at 0.1, a separate value the harness does not have).
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import LayerMethod, role_targets
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.inject import inject, match_targets, pattern_matches
from methods.lowrank import AdditiveLayer, LowRankConfig
from methods.registry import register

LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)\.")


@dataclass
class LortaConfig(LowRankConfig):
    name: str = "lorta"
    targets: list[str] = role_targets("q", "k", "v", "o")
    alpha: float = 1.0


class LortaFactors(nn.Module):
    """The five CP factors shared by every adapted matrix."""

    def __init__(
        self,
        d: int,
        heads: int,
        layers: int,
        matrices: int,
        r: int,
        narrow: int | None = None,
        width: int | None = None,
        **factory,
    ):
        """d: the targets' input size (H heads of d/H); width: A's rows, the outputs' size (default d); narrow:
        A_kv's rows, where the targets have a second, narrower output size."""
        super().__init__()
        self.heads, self.head_size = heads, d // heads
        self.A = nn.Parameter(torch.empty(width or d, r, **factory))
        self.B = nn.Parameter(torch.zeros(r, self.head_size, **factory))
        self.C_h = nn.Parameter(torch.empty(heads, r, **factory))
        self.C_l = nn.Parameter(torch.empty(layers, r, **factory))
        self.C_m = nn.Parameter(torch.empty(matrices, r, **factory))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        for factor in (self.C_h, self.C_l, self.C_m):
            nn.init.kaiming_uniform_(factor)
        if narrow is not None:  # grouped-query k/v outputs (module docstring)
            self.A_kv = nn.Parameter(torch.empty(narrow, r, **factory))
            nn.init.kaiming_uniform_(self.A_kv, a=math.sqrt(5))

    def output(self, narrow: bool) -> torch.Tensor:
        """The output factor: A (d × r), or A_kv for the narrower grouped-query outputs."""
        return self.A_kv if narrow else self.A

    def head_weights(self, layer: int, matrix: int) -> torch.Tensor:
        """λ_h = C_h[h] ⊙ C_m[m] ⊙ C_l[l] for every head: H × r."""
        return self.C_h * (self.C_m[matrix] * self.C_l[layer])

    def product(self, x: torch.Tensor, layer: int, matrix: int, narrow: bool) -> torch.Tensor:
        """ΔW_{l,m} x without building ΔW."""
        per_head = F.linear(x.reshape(*x.shape[:-1], self.heads, self.head_size), self.B)  # (…, H, r)
        return F.linear((per_head * self.head_weights(layer, matrix)).sum(dim=-2), self.output(narrow))

    def delta_weight(self, layer: int, matrix: int, narrow: bool) -> torch.Tensor:
        """ΔW_{l,m} (d × H·d_h, or H_kv·d_h × H·d_h for a narrower output)."""
        output = self.output(narrow)
        blocks = torch.einsum("dr,hr,re->dhe", output, self.head_weights(layer, matrix), self.B)
        return blocks.reshape(output.shape[0], -1)


class LortaLinear(AdditiveLayer):
    def __init__(self, base: nn.Linear, factors: LortaFactors, layer: int, matrix: int, scale: float, dropout: float):
        super().__init__(base, dropout)
        object.__setattr__(self, "factors", factors)  # shared, registered once on the model (not per layer)
        self.layer, self.matrix, self.scale = layer, matrix, scale
        self.narrow = base.out_features != factors.A.shape[0]  # a grouped-query k/v projection beside wider ones

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.factors.product(x, self.layer, self.matrix, self.narrow)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * self.factors.delta_weight(self.layer, self.matrix, self.narrow)


@register
class Lorta(LayerMethod):
    name = "lorta"
    Config = LortaConfig
    capabilities = Capabilities()

    def apply(self) -> None:
        names = match_targets(self.model, self.cfg.targets, self.head_modules, method=self.name)
        positions = {name: self.position(name) for name in names}
        if len(set(positions.values())) != len(positions):
            raise HarnessError(
                f"lorta: several targets map to the same (layer, matrix): {sorted(names)}; give one pattern per "
                "matrix type"
            )
        first = self.model.get_submodule(names[0])
        d, heads = first.in_features, self.attention_heads()
        modules = {name: self.model.get_submodule(name) for name in names}
        for name, module in modules.items():
            if module.in_features != d or module.out_features > d:
                raise HarnessError(
                    f"lorta: every target must map the hidden size {d} to {d} (q, o) or fewer (grouped-query k, v); "
                    f"'{name}' is {module.out_features}×{module.in_features}"
                )
        widths = sorted({module.out_features for module in modules.values()}, reverse=True)
        if len(widths) > 2 or (len(widths) == 2 and widths[0] != d):
            raise HarnessError(
                f"lorta: the targets narrower than {d} must share one output width (grouped-query k, v); "
                f"got {[width for width in widths if width < d]}"
            )
        width, *narrow = widths  # A: the widest outputs' (only k/v targeted: theirs); A_kv: the narrower ones
        if d % heads:
            raise HarnessError(f"lorta: hidden size {d} is not divisible by num_attention_heads={heads}")
        layer_ids = sorted({layer for layer, _ in positions.values()})
        factory = trained_factory(first)
        self.factors = LortaFactors(
            d, heads, len(layer_ids), len(self.cfg.targets), self.cfg.r, *narrow, width=width, **factory
        )
        self.model.add_module("lorta_factors", self.factors)
        scale, index = self.cfg.alpha / self.cfg.r, {layer: i for i, layer in enumerate(layer_ids)}

        def wrap(name: str, base: nn.Linear) -> LortaLinear:
            layer, matrix = positions[name]
            return LortaLinear(base, self.factors, index[layer], matrix, scale, self.cfg.dropout)

        self.layers = inject(self.model, names, wrap)

    def position(self, name: str) -> tuple[int, int]:
        """(layer id from the module name, matrix type = index of the first target pattern it matches)."""
        found = LAYER_INDEX.search(name)
        if found is None:
            raise HarnessError(f"lorta: cannot find a layer index ('…layer.<n>.…') in target module '{name}'")
        matrix = next(i for i, pattern in enumerate(self.cfg.targets) if pattern_matches(pattern, name))
        return int(found.group(1)), matrix

    def attention_heads(self) -> int:
        heads = getattr(getattr(self.model, "config", None), "num_attention_heads", None)
        if not heads:
            raise HarnessError(
                "lorta: the model config has no num_attention_heads; LoRTA splits the matrices by attention head"
            )
        return int(heads)
