"""Head only (linear probing of the frozen backbone): the floor every method should beat.

Trainable params: the task head only (adapter = 0).
"""
from methods.base import Method
from methods.registry import register


@register
class HeadOnly(Method):
    name = "head"
