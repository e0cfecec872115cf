"""Gradient checkpointing (`train.gradient_checkpointing: true`): the model's own, as transformers writes it for
each of its blocks, non-reentrant (torch.utils.checkpoint with use_reentrant=False, so a frozen base needs no input
that requires a gradient). Each block keeps only its input in the forward and recomputes its activations in the
backward (dropout replayed from the saved RNG state): the same gradients, for one more forward of the blocks.

Models without it of their own (the image models) and methods that run the blocks otherwise are one-line errors: a
restructured encoder (MEFT already keeps no activations but its last output) and a backbone under no_grad (InCA has
no backward through it).
"""

from harness.errors import HarnessError


def refuse_method(method: str, capabilities) -> None:
    """Before the model loads: the methods that do not run the model's blocks through a backward of their own."""
    if capabilities.restructures or capabilities.replaces_head:
        why = (
            "rebuilds the encoder's forward and backward (it keeps no block activations already)"
            if capabilities.restructures
            else "runs the backbone under no_grad (no backward through it to recompute)"
        )
        raise HarnessError(f"train.gradient_checkpointing=true: method '{method}' {why}; leave it false")


def recompute_activations(model, model_name: str) -> None:
    """Switch the loaded model's own gradient checkpointing on (it acts in train mode)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise HarnessError(
            f"train.gradient_checkpointing=true: model '{model_name}' has no gradient checkpointing of its own "
            "(the text and decoder models have: transformers' blocks); leave it false"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
