"""What a method declares about itself, in one object beside its class (`capabilities = Capabilities(...)`).

The training loop, the sharding set-up, the run's checks and the generic method tests read these
fields instead of guessing from a method's class; tests/methods/test_invariants.py checks each
declaration against what the method does (a declared step hook overrides `on_step_end`, a method that
starts exactly at the pretrained outputs leaves them unchanged, ...).
"""

from dataclasses import dataclass
from typing import Literal

from torch import nn


@dataclass(frozen=True)
class Capabilities:
    """One method's declarations; the defaults are those of an additive adapter on linear layers."""

    # The layer types the method adapts (its targets are matched among these); nn.Module: any, the
    # method decides (PEFT's tuners).
    layer_kinds: tuple[type[nn.Module], ...] = (nn.Linear,)
    # `merge()` folds the update into the base weights (merged outputs = unmerged outputs); False where
    # the update cannot be written as a weight (a non-linear adapter): merge then leaves the model as it is.
    mergeable: bool = True
    # At step 0 the outputs are exactly the pretrained model's; False where the paper starts near them
    # (a small random init) or away from them.
    identity_at_init: bool = True
    # `on_step_end` changes the method's state after optimizer steps (masks, folds, redraws): in a
    # data-parallel run every rank then takes rank 0's state.
    step_hook: bool = False
    # `initialise(loss_of, batches)` reads the first `init_batches` training batches before step 1.
    needs_data_at_init: bool = False
    # Training writes into frozen tensors of the adapted layers (RAC-LoRA folds each link into W0).
    rewrites_frozen: bool = False
    # Every backbone weight is trained (full fine-tuning): nothing is frozen.
    trains_backbone: bool = False
    # The method rebuilds the backbone's forward around its frozen blocks (MEFT's reversible encoder): its outputs at
    # step 0 are its paper's starting point, away from the pretrained model's, and nothing merges into the weights.
    restructures: bool = False
    # The logits come from heads of the method's own that read the backbone's activations (InCA); the model's task
    # head is frozen and unused, so the outputs at step 0 are those heads', not the pretrained model's.
    replaces_head: bool = False
    # Can run on a generative task, where the model answers through its pretrained LM head (no task head).
    generative_ok: bool = True
    # Trains on a base whose linear layers are quantized (model.quantize: harness/models/storage.py): it reads W0 only
    # through methods/frozen.py and never writes into it. Methods that train or rewrite the backbone never do.
    quantized_base_ok: bool = True
    # Its layers' update is LoRA's s·B·A (`lora_pair()`: A r×d_in, B d_out×r): LoRA's optimizers apply (loraplus,
    # lorafa, riemannian: optimizers/).
    lora_pairs: bool = False
    # Which trainable tensors AdamW decays (toward 0, at train.weight_decay), as the method's reference
    # code does (each method's docstring cites it): "trainer", all but biases and normalisation-layer
    # parameters (HF Trainer's rule); "all", every trainable tensor (a plain torch AdamW over all of them).
    decay: Literal["trainer", "all"] = "trainer"

    @property
    def shardable(self) -> bool:
        """Whether the frozen backbone can be sharded over the ranks (fsdp=true): it must stay frozen
        and untouched, the start must not need the gradients of whole frozen weights, and its blocks must
        run through their own forward (where FSDP gathers the shards), not be restructured."""
        return not (self.trains_backbone or self.rewrites_frozen or self.needs_data_at_init or self.restructures)

    @property
    def quantizable(self) -> bool:
        """Whether the method can train on a quantized base (model.quantize=nf4 | int8)."""
        return self.quantized_base_ok and not (self.trains_backbone or self.rewrites_frozen)

    def adapts(self, kind: type[nn.Module]) -> bool:
        """Whether layers of type `kind` can be targets."""
        return any(issubclass(kind, adapted) for adapted in self.layer_kinds)
