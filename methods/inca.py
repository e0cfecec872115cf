"""InCA: cross-attention adapters on frozen intermediate activations (Dukler et al., NeurIPS 2023, "Your
representations are in the network: composable and parallel adaptation for large scale models", arXiv 2303.04105,
first titled "Introspective Cross-Attention Probing for Lightweight Transfer of Pre-trained Models"). No code is
public: the method below follows the paper's abstract and reviews (../shared/methods-spec.md § W3.4).

The backbone runs once per batch under torch.no_grad (nothing is backpropagated through it) while forward hooks
read the outputs of the tapped blocks: the children of one list of blocks (`blocks`; by default the model's longest
nn.ModuleList: BERT's encoder layers, EfficientNet's `_blocks`), `taps` naming their indices ("all", or a list,
negative from the end). A tap's output z is a sequence of T tokens of width D: a text layer's hidden states (the
padding masked out by the batch's attention_mask), or a CNN feature map B×D×H×W flattened to T = H·W tokens. Each
tap ℓ has its own adapter and head, for C classes, with D' = `dim` split over h = `heads` heads of d_h = D'/h:
    u = LN_in(z)                                  (T×D)
    K = u W_K,  V = u W_V                         (W_K, W_V ∈ ℝ^{D×D'}, no bias)
    a_j = softmax(q_j K_jᵀ / √d_h) V_j            (q ∈ ℝ^{1×D'} learned; head j: columns j·d_h … (j+1)·d_h)
    logits_ℓ = LN_out([a_1 … a_h]) W_Hᵀ + b_H     (W_H ∈ ℝ^{C×D'})
Training: every tap's adapter trains from the same forward; the loss is the SUM over taps of each tap's task loss
(cross-entropy; mean squared error for one output), so each adapter gets exactly the gradient it would get alone.
Outputs: `selection: best` returns the logits of the tap that scored best on the validation split at the last
evaluation; `selection: ensemble` (the paper's variant) the mean of all taps' logits. Until the first selection
(and for every output of `ensemble`) the mean is returned, so every tap's tensors take part from step 0.
Tap selection: at every evaluation the training loop calls `select(predict, score)` (methods/base.py) before it
evaluates the splits; InCA predicts the validation split ONCE with every tap's logits side by side (one backbone
pass for all taps), scores each tap's slice with the task's primary metric, keeps the best (the first on a tie) in
the buffer `inca.selected` (a learned tensor: saved and restored with the adapters) and its scores in
`tap_scores`. The evaluation that follows then reports the selected tap; `best` is the loop's usual best evaluation.
Init: the model's own task head is frozen and unused (capability `replaces_head`); outputs at step 0 are the fresh
heads' (not the pretrained model's: no identity at init). q ~ N(0, 0.02²); W_K, W_V, W_H, b_H as nn.Linear's
default; LayerNorms 1 and 0.
Trainable params, per tap of width D (LayerNorms included):
    2·D·D' + D' + (D' + 1)·C + 2·D + 2·D'
summed over the taps (D varies per tap in a CNN). Nothing merges: the adapters are beside the network (not mergeable).
Weight decay (`decay="trainer"`): q, W_K, W_V, W_H decayed; b_H and the LayerNorms not (HF Trainer's rule; the
paper's optimizer settings were not reachable).
Defaults: taps "all" and selection "best" (the paper: several taps from one forward, the best on validation kept);
dim 256 and heads 4 are ours (the paper's adapter size is given only as 1.3 % of ViT-L/16); lr in
conf/method/inca.yaml (untuned).

Reconstructed (not in the reachable text; say so when comparing with the paper's numbers):
- the adapter's internals: LN on the tapped tokens, bias-free key/value projections D → D', one learned query,
  multi-head attention without an output projection or residual, LN, linear head; the init above;
- the backbone in eval mode during training (dropout off, BatchNorm statistics fixed: a fixed feature extractor,
  "execution unaltered at both training and inference");
- a block's width D: that of the last layer in it (or before it) that states one (a norm's features, a Linear's
  or a convolution's outputs);
- the summed loss, and the ensemble of the mean of the logits;
- selection on the last evaluation's validation metric (the paper selects the top-scoring adapter on validation).
With no task head (a generative task) there are no classes: no adapter is built (`generative_ok=False`).
"""

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from harness.checks import require
from harness.errors import HarnessError
from methods.base import Method, MethodConfig
from methods.capabilities import Capabilities
from methods.inject import is_under
from methods.registry import register

SELECTIONS = ("best", "ensemble")


def valid_taps(taps: Any) -> bool:
    if taps == "all":
        return True
    return isinstance(taps, list) and bool(taps) and all(isinstance(t, int) and not isinstance(t, bool) for t in taps)


@dataclass
class IncaConfig(MethodConfig):
    name: str = "inca"
    taps: Any = "all"
    blocks: str = ""
    dim: int = 256
    heads: int = 4
    selection: str = "best"

    def __post_init__(self):
        require(
            valid_taps(self.taps), f"method.taps must be 'all' or a non-empty list of block indices, got {self.taps!r}"
        )
        require(self.dim > 0, f"method.dim must be a positive width, got {self.dim}")
        require(
            self.heads > 0 and self.dim % self.heads == 0,
            f"method.heads must be a positive divisor of method.dim={self.dim}, got {self.heads}",
        )
        require(self.selection in SELECTIONS, f"method.selection must be 'best' or 'ensemble', got {self.selection!r}")


class CrossAttentionAdapter(nn.Module):
    """One tap's adapter: a learned query attends over LN(z) (keys and values projected to D'), LN, linear head."""

    def __init__(self, width: int, dim: int, heads: int, classes: int, **placement):
        super().__init__()
        self.heads = heads
        self.norm_in = nn.LayerNorm(width, **placement)
        self.query = nn.Parameter(torch.randn(1, dim, **placement) * 0.02)
        self.key = nn.Linear(width, dim, bias=False, **placement)
        self.value = nn.Linear(width, dim, bias=False, **placement)
        self.norm_out = nn.LayerNorm(dim, **placement)
        self.head = nn.Linear(dim, classes, **placement)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """tokens B×T×D, mask B×T (nonzero: a real token) or None → logits B×C."""
        batch, length, _ = tokens.shape
        normed = self.norm_in(tokens)

        def split(x: torch.Tensor) -> torch.Tensor:  # B×T×D' → B×h×T×d_h
            return x.view(batch, length, self.heads, -1).transpose(1, 2)

        query = self.query.view(1, self.heads, 1, -1)
        attended = F.scaled_dot_product_attention(
            query.expand(batch, -1, -1, -1),
            split(self.key(normed)),
            split(self.value(normed)),
            attn_mask=None if mask is None else mask[:, None, None, :].bool(),
        )
        return self.head(self.norm_out(attended.reshape(batch, -1)))


def as_tokens(output: Any) -> torch.Tensor:
    """A block's output as B×T×D tokens: the first element of a tuple; a B×D×H×W map flattened to H·W tokens;
    a B×D vector as one token."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 4:
        return output.flatten(2).transpose(1, 2)
    if output.dim() == 2:
        return output[:, None, :]
    return output


def stated_width(module: nn.Module) -> int | None:
    """The output width a layer states: a norm's features, a Linear's or a convolution's outputs."""
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    for attribute in ("num_features", "num_channels", "out_features", "out_channels"):
        if isinstance(getattr(module, attribute, None), int):
            return getattr(module, attribute)
    return None


def block_widths(blocks: list[nn.Module]) -> list[int | None]:
    """Each block's output width: that of the last layer in it, or before it, that states one."""
    widths, width = [], None
    for block in blocks:
        for module in block.modules():
            width = stated_width(module) or width
        widths.append(width)
    return widths


def find_blocks(model: nn.Module, name: str, head_modules: list[str]) -> tuple[str, list[nn.Module]]:
    """The list of blocks to tap: module `name`, or (name empty) the model's longest nn.ModuleList outside the head."""
    if not name:
        lists = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) and not is_under(n, head_modules)
        ]
        if not lists:
            raise HarnessError(
                "inca: the model has no nn.ModuleList of blocks to tap; "
                "set method.blocks to the module whose children to tap"
            )
        name, module = max(lists, key=lambda item: len(item[1]))
        return name, list(module)
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise HarnessError(
            f"inca: method.blocks='{name}' is not a module of the model; top-level modules: "
            f"{[n for n, _ in model.named_children()]}"
        ) from None
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or not len(module):
        raise HarnessError(
            f"inca: method.blocks='{name}' is a {type(module).__name__}, not a list of blocks "
            "(a non-empty nn.ModuleList or nn.Sequential)"
        )
    return name, list(module)


def tap_indices(taps: Any, count: int, name: str) -> list[int]:
    if taps == "all":
        return list(range(count))
    if any(not -count <= t < count for t in taps):
        raise HarnessError(
            f"inca: method.taps={taps} is out of range for the {count} blocks of '{name}'; "
            f"allowed: {-count} to {count - 1}"
        )
    indices = [t % count for t in taps]
    if len(set(indices)) < len(indices):
        raise HarnessError(f"inca: method.taps={taps} names a block twice among the {count} blocks of '{name}'")
    return indices


def classes_of(model: nn.Module, head_modules: list[str]) -> int | None:
    """The task's class count: the outputs of the task head's last Linear (None without a head)."""
    linears = [m for h in head_modules for m in model.get_submodule(h).modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, or for one output (regression) the mean squared error, as the models' own heads compute it
    (the targets as given: under bf16 autocast not rounded to the logits' dtype)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels)
    return F.cross_entropy(logits, labels)


class Taps(nn.Module):
    """The adapters by tapped block index, and the selected one (-1: none yet, the taps' mean)."""

    def __init__(self, adapters: dict[int, CrossAttentionAdapter], device: torch.device):
        super().__init__()
        self.indices = list(adapters)
        self.adapters = nn.ModuleDict({str(i): a for i, a in adapters.items()})
        self.register_buffer("selected", torch.tensor(-1, device=device))


@register
class Inca(Method):
    name = "inca"
    Config = IncaConfig
    capabilities = Capabilities(
        layer_kinds=(), mergeable=False, identity_at_init=False, generative_ok=False, replaces_head=True
    )

    def apply(self) -> None:
        for param in self.model.parameters():  # the model's own head is not used: frozen with the backbone
            param.requires_grad_(False)
        self.tap_scores: list[float] = []
        self.side_by_side = False  # during `select`: every tap's logits, concatenated
        self.chosen: int | None = None  # `inca.selected` as a number (read without a device sync)
        classes = classes_of(self.model, self.head_modules)
        if classes is None:
            return
        cfg = self.cfg
        blocks_name, blocks = find_blocks(self.model, cfg.blocks, self.head_modules)
        indices = tap_indices(cfg.taps, len(blocks), blocks_name)
        widths = block_widths(blocks)
        reference = next(p for p in self.model.parameters() if p.is_floating_point())
        placement = {"device": reference.device, "dtype": reference.dtype}
        adapters = {}
        for index in indices:
            if widths[index] is None:
                raise HarnessError(
                    f"inca: block {index} of '{blocks_name}' has no layer in or before it that states its width "
                    "(a norm, Linear or convolution); tap a later block"
                )
            adapters[index] = CrossAttentionAdapter(widths[index], cfg.dim, cfg.heads, classes, **placement)
        self.model.inca = Taps(adapters, reference.device)
        self.captured: dict[int, Any] = {}
        for index in indices:
            blocks[index].register_forward_hook(self.capture(index))
        self.backbone_forward = self.model.forward
        self.model.forward = self.forward

    def capture(self, index: int) -> Callable:
        def hook(module, args, output) -> None:
            self.captured[index] = output

        return hook

    def forward(self, labels: torch.Tensor | None = None, **inputs) -> SequenceClassifierOutput:
        """The model's forward while InCA is applied: the backbone under no_grad, then every tap's adapter."""
        with torch.no_grad():
            self.backbone_forward(**inputs)
        taps, mask = self.model.inca, inputs.get("attention_mask")
        logits = []
        for index in taps.indices:
            tokens = as_tokens(self.captured.pop(index))
            tap_mask = mask if mask is not None and mask.shape == tokens.shape[:2] else None
            logits.append(taps.adapters[str(index)](tokens, tap_mask))
        loss = None if labels is None else sum(task_loss(tap, labels) for tap in logits)
        if self.side_by_side:
            output = torch.cat(logits, dim=-1)
        elif self.cfg.selection == "best" and self.chosen is not None:
            output = logits[taps.indices.index(self.chosen)]
        else:
            output = torch.stack(logits).mean(0)
        return SequenceClassifierOutput(loss=loss, logits=output)

    def select(self, predict: Callable[[], np.ndarray], score: Callable[[np.ndarray], float]) -> None:
        """Keeps the tap whose logits score best on the validation split (`best`); nothing to choose for `ensemble`."""
        if self.cfg.selection != "best" or not hasattr(self.model, "inca"):
            return
        self.side_by_side = True
        try:
            outputs = predict()
        finally:
            self.side_by_side = False
        taps = self.model.inca
        classes = outputs.shape[1] // len(taps.indices)
        self.tap_scores = [score(outputs[:, k * classes : (k + 1) * classes]) for k in range(len(taps.indices))]
        self.chosen = taps.indices[int(np.argmax(self.tap_scores))]
        taps.selected.fill_(self.chosen)

    def train_mode(self) -> None:
        """The backbone is a fixed feature extractor (eval mode: no dropout, BatchNorm statistics kept); the
        adapters train."""
        self.model.eval()
        if hasattr(self.model, "inca"):
            self.model.inca.train()

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().learned_tensors()
        if hasattr(self.model, "inca"):
            tensors["inca.selected"] = self.model.inca.selected
        return tensors

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_trainable_state_dict(state)
        if hasattr(self.model, "inca"):
            selected = int(self.model.inca.selected)
            self.chosen = None if selected < 0 else selected
