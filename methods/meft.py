"""MEFT: memory-efficient fine-tuning by making the pre-trained encoder reversible (Liao, Tan, Monz, "Make
Pre-trained Model Reversible: From Parameter to Memory Efficient Fine-Tuning", NeurIPS 2023, arXiv 2306.00477);
checked against the reference code BaohaoLiao/mefts (models/modeling_revbert.py, models/modules.py, run_glue.py,
trainers/custom_trainer.py, scripts/bert_glue.sh).

A restructure, not a layer adapter: the BERT-family encoder (a ModuleList `layer` of blocks with `attention`,
`intermediate`, `output`: BERT, MiniLM, RoBERTa) is replaced by a reversible one over the same frozen blocks.
The embeddings' output h is duplicated, [x1, x2] = [h, h]; each layer n is the coupling
    y1 = λ·x1 + F(x2),      y2 = β·x2 + G(y1)
and passes on [y2, y1] (MEFT1, MEFT2: the halves switch) or [y1, y2] (MEFT3); the encoder's output, what the
pooler and head read, is (x1 + x2)/2 of the last pair. `variant` picks F, G and (λ, β) as the reference's script:
    1  F = the pre-trained layer with an adapter parallel to its FFN, G = an adapter;       (λ, β) = (0.1, 1)
    2  F = an adapter, G = the pre-trained layer with an adapter parallel to its FFN;       (λ, β) = (1, 0.1)
    3  F = the attention block with an adapter after its output projection (and dropout),
       G = the FFN block with an adapter parallel to it;                                   (λ, β) = (0.1, 0.1)
Adapter (Houlsby et al. 2019, the reference's `Adapter`): x ↦ W2·dropout(act(W1·x + b1)) + b2, W1 (b×d),
W2 (d×b), the model's own activation (hidden_act) and hidden dropout. "Parallel to the FFN": the block's output is
LayerNorm(dropout(FFN(a)) + adapter(a) + a); "after the attention projection": LayerNorm(o + adapter(o) + x) with
o = dropout(W_O·attention(x)), as RevBertOutput and RevBertSelfOutput compute them.

Memory (the method's point): with `reversible_layers` = every layer (the default), one autograd.Function runs the
whole stack and keeps only the last pair [y1, y2]; its backward rebuilds each layer's input from its output,
    x2 = (y2 − G(y1))/β,      x1 = (y1 − F(x2))/λ,
re-running G and F with grad to get their vector-Jacobian products, and replays their dropout masks from the RNG
state saved before each F and G in the forward (and the forward's autocast), so the activations of the stack are
never stored. `reversible_layers` = k < L runs the first k layers so and the rest through plain autograd (the
reference's num_rev_layers, its Figure 7); 0 runs the same coupling through plain autograd everywhere (the
reference's vanilla gradient, and the tests' twin of the reversible backward).

Init: W1, W2 ~ N(0, σ²) with σ the model's initializer_range (0.02 for BERT and MiniLM; the reference gets it from
HF's _init_weights for the keys missing from the checkpoint), biases 0. So nothing is zero at init and the outputs
are not the pretrained model's: the paper (§3, its starting-point hypothesis) argues they start near a useful
point (MEFT1 with λ → 0 and G → 0 passes [h_{n−1}, h_n] on, so the encoder's output tends to (h_{L−1} + h_L)/2,
adjacent layers' representations being close), not at the pretrained model's; the tests check the forward against
the coupling written from the formula, and that limit exactly.
Trainable params: two adapters per layer, 2·(2db + b + d) per layer (d hidden, b bottleneck), plus the head;
BERT-base, b = 8: 12·2·(2·768·8 + 8 + 768) = 313,536 ≈ 0.29 % of its 110 M [paper]. Nothing else is trained.
Weight decay (`decay="trainer"`): the adapters' and the head's weights decayed, biases not (the reference trains
with HF Trainer, weight_decay 0.1).
Not mergeable (the adapters are non-linear and the encoder is restructured): merge leaves the model as it is.

Where this differs from the reference code (same mathematics):
- the reference makes the embeddings' LayerNorm trainable only so that autograd enters its reversible Function,
  and discards that gradient after each backward (CustomTrainer); here the adapters' parameters are inputs of the
  Function and its backward returns their gradients (torch.autograd.grad), so nothing else needs a gradient, and
  hooks on the parameters (DDP's all-reduce, gradient clipping) see ordinary gradients;
- the reference re-seeds the global generator with a fresh seed before each F and G; here the generator's state
  is saved and restored in a forked RNG scope, so the run's random stream is the same whether or not MEFT replays;
- the reference's options `layernorm_in_adapter` and `freeze_irreversible_layers` (both off in its scripts) are
  not offered.

Decoders of the Llama layout (Llama, SmolLM2, Qwen2, Mistral; the paper ran OPT, the reference code is BERT only, so
this port is a reconstruction): the couplings run over the pre-norm blocks, whose sub-layers are
    attention(x) = x + o (+ adapter(o) in MEFT3's F),  o = W_O·attn(norm₁ x)
    mlp(h)       = h + FFN(n) + adapter(n),             n = norm₂ h   (the FFN-parallel adapter reads the FFN's input)
so "the layer" is mlp(attention(x)); the adapters use the model's activation and no dropout (the layout has no hidden
dropout); the decoder's final norm reads (x1 + x2)/2. The blocks keep their names: the decoder's `layers` becomes a
ModuleList of the same blocks whose loop (`layers[:n]` or iteration) meets one step that runs the couplings with what
the decoder passes a block (causal mask, rotary embeddings, cache). Generation decodes through the key/value cache
(each attention runs once per forward); a forward that records gradients leaves an empty cache out (its backward
re-runs the attention) and refuses a filled one. Needs transformers >= 5 (blocks that return the hidden states).
Precision (measured, MiniLM fp32, 8×64 tokens, dropout off): each inversion divides the rounding error of its output
by λ (or β), so it grows ~10× per reversible layer at 0.1: the adapters' gradients differ from plain autograd's by
1.7e-6 (relative, worst tensor) with 2 reversible layers, 1.5e-4 with 4 and 2.3 with all 6 (MEFT1); MEFT2 4.4e-2
with all 6; MEFT3 5.5e-5 with 2, 3.7e-3 with 3. The reference code computes the same; in float64 they agree to 1e-10.
On MiniLM in fp32, `reversible_layers` ≤ 4 (MEFT1) keeps the gradients right at some cost in memory.
A decoder's residual stream is far larger (SmolLM2-135M: max |h| 35, 193, 928 after its first 3 layers, median ~1), so
the drift starts sooner (SmolLM2 fp32, 4×32 tokens, worst tensor's max|diff|/max|plain|): MEFT1 9.1e-5 with 2
reversible layers, 3.3e-2 with 4, 2.3 with 8; MEFT3 2.4e-2 with 2; MEFT2 6.2 with 4; in float64 MEFT1 3e-16 with 2,
2.2e-5 with 8, and all 30 diverge even there. On such decoders in fp32, `reversible_layers` ≤ 2 (MEFT1), which saves
little (SmolLM2, 8×128 tokens: 1,254.9 MB of saved activations against 1,299.5 with none reversible, 9.0 with all 30).
Not for fsdp=true: the couplings call the blocks' sub-modules directly, outside the blocks' own forward, where FSDP
gathers a block's sharded weights (harness/engine/sharding.py has no refusal for it yet); DDP is fine.
"""

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from harness.checks import require
from harness.errors import HarnessError
from methods.base import Method, MethodConfig
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.registry import register

# variant → (F, G, λ, β, switch the halves): scripts/bert_glue.sh (f_arch layer | adapter | attn)
VARIANTS = {
    "1": ("layer", "adapter", 0.1, 1.0, True),
    "2": ("adapter", "layer", 1.0, 0.1, True),
    "3": ("attention", "mlp", 0.1, 0.1, False),
}


@dataclass
class MeftConfig(MethodConfig):
    name: str = "meft"
    variant: Optional[str] = "1"  # MEFT1, 2 or 3 (also the leaderboard's label: meft[1])
    bottleneck: int = 8  # b, the adapters' inner width (--adapter_bottleneck_dim 8)
    x1_factor: Optional[float] = None  # λ; None: the variant's
    x2_factor: Optional[float] = None  # β; None: the variant's
    reversible_layers: Optional[int] = None  # the first k layers reversible; None: all; 0: plain autograd

    def __post_init__(self):
        require(self.variant in VARIANTS, f"method.variant must be one of 1, 2, 3 (MEFT1/2/3), got '{self.variant}'")
        require(self.bottleneck >= 1, f"method.bottleneck must be >= 1, got {self.bottleneck}")
        for key in ("x1_factor", "x2_factor"):
            value = getattr(self, key)
            require(value is None or value > 0, f"method.{key} must be > 0 (the backward divides by it), got {value}")
        require(
            self.reversible_layers is None or self.reversible_layers >= 0,
            f"method.reversible_layers must be >= 0 (0: plain autograd), got {self.reversible_layers}",
        )
        require(
            not self.targets,
            f"method.targets must be empty for meft (it restructures every encoder layer), got {self.targets}",
        )


class Adapter(nn.Module):
    """Houlsby bottleneck d → b → d: W2·dropout(act(W1·x + b1)) + b2, weights N(0, σ²), biases 0; d and the device and
    dtype are those of `output` (the block's FFN output projection), `act` the block's activation."""

    def __init__(self, output: nn.Linear, act, dropout: float, bottleneck: int, std: float, training: bool):
        super().__init__()
        d, factory = output.out_features, trained_factory(output)
        self.dense1 = nn.Linear(d, bottleneck, **factory)
        self.dense2 = nn.Linear(bottleneck, d, **factory)
        for dense in (self.dense1, self.dense2):
            nn.init.normal_(dense.weight, std=std)
            nn.init.zeros_(dense.bias)
        self.act = act
        self.dropout = nn.Dropout(dropout)
        self.train(training)  # in the mode of the model it joins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.dropout(self.act(self.dense1(x))))


class BertBlock:
    """A post-LN BERT-family block (BERT, MiniLM, RoBERTa): attention.self, attention.output (dense, dropout,
    LayerNorm), intermediate (the FFN's first layer and activation) and output (dense, dropout, LayerNorm). Its
    encoder holds the blocks in a ModuleList `layer`; the context of a coupling is {attention_mask}."""

    container = "layer"

    @staticmethod
    def matches(block: nn.Module) -> bool:
        return all(hasattr(block, part) for part in ("attention", "intermediate", "output")) and all(
            hasattr(block.attention, part) for part in ("self", "output")
        )

    @staticmethod
    def adapter(block: nn.Module, bottleneck: int, std: float) -> Adapter:
        """The model's activation (hidden_act) and hidden dropout."""
        act, dropout = block.intermediate.intermediate_act_fn, block.output.dropout.p
        return Adapter(block.output.dense, act, dropout, bottleneck, std, block.training)

    @staticmethod
    def attention(block: nn.Module, x: torch.Tensor, context: dict, adapter: Optional[Adapter]) -> torch.Tensor:
        """The self-attention sub-layer, an adapter after its output projection and dropout if given:
        LayerNorm(o + adapter(o) + x), o = dropout(W_O·attention(x))."""
        out = block.attention.output
        hidden = out.dropout(out.dense(block.attention.self(x, attention_mask=context["attention_mask"])[0]))
        if adapter is not None:
            hidden = hidden + adapter(hidden)
        return out.LayerNorm(hidden + x)

    @staticmethod
    def mlp(block: nn.Module, a: torch.Tensor) -> torch.Tensor:
        """The FFN sub-layer with its adapter in parallel: LayerNorm(dropout(FFN(a)) + adapter(a) + a)."""
        out = block.output
        return out.LayerNorm(out.dropout(out.dense(block.intermediate(a))) + block.ffn_adapter(a) + a)


class LlamaBlock:
    """A pre-norm decoder block of the Llama layout (Llama, SmolLM2, Qwen2, Mistral): input_layernorm, self_attn,
    post_attention_layernorm, mlp (its down_proj the FFN's output). Its decoder holds the blocks in a ModuleList
    `layers`; the context of a coupling is what the decoder passes each block (mask, rotary embeddings, cache...).
    The BERT sub-layers carried over to pre-norm (a reconstruction: the reference code is BERT only): the adapter
    parallel to the FFN reads the FFN's input, the normalised stream; the attention's adapter reads its output."""

    container = "layers"

    @staticmethod
    def matches(block: nn.Module) -> bool:
        return all(hasattr(block, p) for p in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"))

    @staticmethod
    def adapter(block: nn.Module, bottleneck: int, std: float) -> Adapter:
        """The model's activation (hidden_act); no dropout, as the Llama layout has no hidden dropout."""
        return Adapter(block.mlp.down_proj, block.mlp.act_fn, 0.0, bottleneck, std, block.training)

    @staticmethod
    def attention(block: nn.Module, x: torch.Tensor, context: dict, adapter: Optional[Adapter]) -> torch.Tensor:
        """x + o + adapter(o) (the adapter if given), o = W_O·attention(norm(x))."""
        hidden = block.self_attn(hidden_states=block.input_layernorm(x), **context)[0]
        if adapter is not None:
            hidden = hidden + adapter(hidden)
        return x + hidden

    @staticmethod
    def mlp(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """The FFN sub-layer with its adapter in parallel: h + FFN(n) + adapter(n), n = norm(h)."""
        normed = block.post_attention_layernorm(h)
        return h + block.mlp(normed) + block.ffn_adapter(normed)


class Coupling:
    """One reversible layer over a frozen block (its adapters are the block's children, so its parameter names stay
    the model's): (x1, x2) ↦ (y1, y2), switched for MEFT1/2, and its inverse with vector-Jacobian products."""

    def __init__(self, block: nn.Module, kind, variant: str, x1_factor: float, x2_factor: float):
        f, g, _, _, self.switch = VARIANTS[variant]
        self.block, self.kind, self.x1_factor, self.x2_factor = block, kind, x1_factor, x2_factor
        self.f, self.g = getattr(self, f), getattr(self, g)

    def layer(self, x, context):
        return self.kind.mlp(self.block, self.kind.attention(self.block, x, context, None))

    def adapter(self, x, context):
        return self.block.rev_adapter(x)

    def attention(self, x, context):
        return self.kind.attention(self.block, x, context, self.block.attn_adapter)

    def mlp(self, x, context):
        return self.kind.mlp(self.block, x)

    def trained(self) -> list[nn.Parameter]:
        return [p for p in self.block.parameters() if p.requires_grad]

    def ordered(self, first, second):
        return (second, first) if self.switch else (first, second)

    def __call__(self, x1, x2, context: dict, rng: Optional[list] = None):
        """The coupling; `rng`, if given, gets the RNG state before F and before G (for the replay)."""
        if rng is not None:
            rng.append(rng_state(x2.device))
        y1 = self.x1_factor * x1 + self.f(x2, context)
        if rng is not None:
            rng.append(rng_state(x2.device))
        y2 = self.x2_factor * x2 + self.g(y1, context)
        return self.ordered(y1, y2)

    def inverse(self, out1, out2, grad1, grad2, context: dict, rng: list):
        """From the layer's outputs and their gradients: its inputs, their gradients and those of `trained()`."""
        (y1, y2), (dy1, dy2), params = self.ordered(out1, out2), self.ordered(grad1, grad2), self.trained()
        with torch.enable_grad(), replayed(rng[1], y1.device):
            y1 = y1.detach().requires_grad_(True)
            g = self.g(y1, context)
            dy1_from_g, *g_grads = torch.autograd.grad(g, [y1, *params], dy2, allow_unused=True)
        dy1 = dy1 + dy1_from_g
        x2 = (y2 - g.detach()) / self.x2_factor
        with torch.enable_grad(), replayed(rng[0], y1.device):
            x2 = x2.requires_grad_(True)
            f = self.f(x2, context)
            dx2_from_f, *f_grads = torch.autograd.grad(f, [x2, *params], dy1, allow_unused=True)
        x1 = (y1.detach() - f.detach()) / self.x1_factor
        grads = [g_grad if f_grad is None else f_grad for f_grad, g_grad in zip(f_grads, g_grads)]  # F's or G's
        return (x1, x2.detach()), (self.x1_factor * dy1, self.x2_factor * dy2 + dx2_from_f), grads


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


class replayed:
    """A scope with the generators (CPU, and `device`'s if CUDA) at a saved state, restored after it."""

    def __init__(self, state: tuple, device: torch.device):
        self.state, self.device = state, device
        self.fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def __enter__(self):
        self.fork.__enter__()
        torch.set_rng_state(self.state[0])
        if self.state[1] is not None:
            torch.cuda.set_rng_state(self.state[1], self.device)  # the model's GPU, not the current one

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)


class ReversibleStack(torch.autograd.Function):
    """The couplings run without keeping activations; backward rebuilds each layer's input from its output.
    Inputs: the couplings, their context (the attention mask, ...), x1, x2, then every trained parameter of the
    couplings (so that autograd calls this backward and takes the parameters' gradients from it)."""

    @staticmethod
    def forward(ctx, couplings, context, x1, x2, *params):
        device = x1.device
        ctx.autocast = (device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.couplings, ctx.context, ctx.rng = couplings, context, []
        for coupling in couplings:
            states = []
            x1, x2 = coupling(x1, x2, context, states)
            ctx.rng.append(states)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, grad1, grad2):
        y1, y2 = ctx.saved_tensors
        device_type, enabled, dtype = ctx.autocast
        grads = []
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            for coupling, rng in zip(reversed(ctx.couplings), reversed(ctx.rng)):
                (y1, y2), (grad1, grad2), layer_grads = coupling.inverse(y1, y2, grad1, grad2, ctx.context, rng)
                grads = layer_grads + grads
        return None, None, grad1, grad2, *grads


def without_cache(context: dict) -> dict:
    """The context for the reversible stack: an empty key/value cache left out (the backward re-runs each attention,
    which would append to it a second time; a training forward starts with none filled), a filled one refused."""
    caches = {key: value for key, value in context.items() if isinstance(value, Cache)}
    for key, cache in caches.items():
        require(
            cache.get_seq_length() == 0,
            f"method meft: a forward that records gradients cannot continue a filled key/value cache ({key}), "
            "as its backward re-runs the attention; generate under torch.no_grad()",
        )
    return {key: value for key, value in context.items() if key not in caches}


def run_couplings(couplings: list[Coupling], reversible: int, hidden: torch.Tensor, context: dict) -> torch.Tensor:
    """[h, h] through the couplings, the first `reversible` of them by ReversibleStack while autograd records;
    (x1 + x2)/2 of the last pair."""
    x1 = x2 = hidden
    lower, upper = couplings[:reversible], couplings[reversible:]
    if lower and torch.is_grad_enabled():
        params = [p for coupling in lower for p in coupling.trained()]
        x1, x2 = ReversibleStack.apply(lower, without_cache(context), x1, x2, *params)
    else:
        upper = lower + upper
    for coupling in upper:
        x1, x2 = coupling(x1, x2, context)
    return (x1 + x2) / 2


class ReversibleEncoder(nn.Module):
    """A BERT-family encoder over the same blocks (`layer`, so the model's parameter names are kept), run as
    couplings; its output (x1 + x2)/2 is what the pooler and head read."""

    def __init__(self, layer: nn.ModuleList, couplings: list[Coupling], reversible: int):
        super().__init__()
        self.layer, self.couplings, self.reversible = layer, couplings, reversible

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        context = {"attention_mask": attention_mask}
        out = run_couplings(self.couplings, self.reversible, hidden_states, context)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=out)


class ReversibleLayers(nn.ModuleList):
    """A decoder's `layers`, the same blocks under the same names, as the decoder's loop sees them: one step that runs
    the couplings on what the loop passes a block and returns (x1 + x2)/2, which the decoder then normalises. The loop
    takes the whole list (`layers[:num_hidden_layers]`, or iterates it); indexing one block still gives the block."""

    def __init__(self, blocks: nn.ModuleList, couplings: list[Coupling], reversible: int):
        super().__init__(blocks)
        self.couplings, self.reversible = couplings, reversible

    def step(self, hidden_states: torch.Tensor, **context) -> torch.Tensor:
        return run_couplings(self.couplings, self.reversible, hidden_states, context)

    def __iter__(self):
        return iter([self.step])

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return super().__getitem__(index)
        require(
            range(len(self))[index] == range(len(self)),
            f"method meft runs the decoder's {len(self)} layers as one reversible stack; layers[{index}] asks for "
            "part of it",
        )
        return [self.step]


KINDS = (BertBlock, LlamaBlock)


def layer_stack(model: nn.Module) -> tuple[str, nn.Module, type]:
    """The model's outermost BERT-family encoder or Llama-layout decoder: its name, the module and the block kind."""
    for name, module in model.named_modules():
        for kind in KINDS:
            blocks = getattr(module, kind.container, None)
            if isinstance(blocks, nn.ModuleList) and len(blocks) and all(map(kind.matches, blocks)):
                return name, module, kind
    raise HarnessError(
        f"method meft restructures a BERT-family encoder (a ModuleList `layer` of blocks with attention, "
        f"intermediate and output) or a Llama-layout decoder (a ModuleList `layers` of blocks with self_attn, mlp, "
        f"input_layernorm and post_attention_layernorm), and {type(model).__name__} has neither; use a BERT, "
        f"MiniLM, RoBERTa or Llama-layout model"
    )


def returns_a_tensor(block: nn.Module) -> bool:
    """Whether the decoder's loop reads a block's output as the hidden states themselves (transformers 5), not as a
    tuple whose first element they are (earlier versions)."""
    return inspect.signature(type(block).forward).return_annotation is torch.Tensor


@register
class Meft(Method):
    name = "meft"
    Config = MeftConfig
    capabilities = Capabilities(layer_kinds=(), mergeable=False, identity_at_init=False, restructures=True)

    def apply(self) -> None:
        cfg = self.cfg
        f, _, x1_factor, x2_factor, _ = VARIANTS[cfg.variant]
        x1_factor = x1_factor if cfg.x1_factor is None else cfg.x1_factor
        x2_factor = x2_factor if cfg.x2_factor is None else cfg.x2_factor
        name, stack, kind = layer_stack(self.model)
        layers = getattr(stack, kind.container)
        reversible = len(layers) if cfg.reversible_layers is None else cfg.reversible_layers
        require(
            reversible <= len(layers),
            f"method.reversible_layers={reversible}: the model has {len(layers)} encoder layers",
        )
        require(
            kind is BertBlock or returns_a_tensor(layers[0]),
            f"method meft on a decoder needs transformers >= 5 (its decoder blocks return the hidden states), "
            f"and {type(layers[0]).__name__} returns a tuple here",
        )
        std = self.model.config.initializer_range
        second = "attn_adapter" if f == "attention" else "rev_adapter"
        for block in layers:
            block.ffn_adapter = kind.adapter(block, cfg.bottleneck, std)
            setattr(block, second, kind.adapter(block, cfg.bottleneck, std))
        couplings = [Coupling(block, kind, cfg.variant, x1_factor, x2_factor) for block in layers]
        if kind is LlamaBlock:
            stack.layers = ReversibleLayers(layers, couplings, reversible)
            return
        parent, _, attribute = name.rpartition(".")
        setattr(self.model.get_submodule(parent), attribute, ReversibleEncoder(layers, couplings, reversible))
