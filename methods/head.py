"""Head only (linear probing of the frozen backbone): the floor every method should beat.

Trainable params: the task head only (adapter = 0). Weight decay (`decay="trainer"`): the head's weight, not
its bias.
"""

from methods.base import Method
from methods.capabilities import Capabilities
from methods.registry import register


@register
class HeadOnly(Method):
    name = "head"
    # no adapted layers; a generative task has no task head to train
    capabilities = Capabilities(layer_kinds=(), generative_ok=False)
