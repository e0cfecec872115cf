"""Head only (linear probing of the frozen backbone): the floor every method should beat.

Trainable params: the task head only (adapter = 0). Weight decay: the head's weight, not its bias.
"""

from methods.base import Method
from methods.registry import register


@register
class HeadOnly(Method):
    name = "head"
