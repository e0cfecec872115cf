"""One colour and one marker per method, the same in every figure (matplotlib) and on the site (plotly),
whatever other methods a board holds: a method's style depends on its name only.

The methods the harness ships (and those announced for it) have fixed places in `KNOWN`: each gets its
own colour of `COLOURS` (tab20's ten dark shades, then its ten light ones) and a marker of `MARKERS`.
Any other label (a PEFT tuner through the bridge, a variant `lora[r8]`, a config suffix
`lora (method.r=4)`) takes its base method's colour with another marker when the base is known, else a
pair chosen by a hash of its name (two unknown labels may then share a pair; the legend still names them).
"""

import hashlib
import re
from dataclasses import dataclass

COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]
# matplotlib marker → plotly symbol
MARKERS = {
    "o": "circle",
    "s": "square",
    "D": "diamond",
    "^": "triangle-up",
    "v": "triangle-down",
    "P": "cross",
    "X": "x",
    "*": "star",
    "h": "hexagon",
    "p": "pentagon",
    "<": "triangle-left",
    ">": "triangle-right",
}
KNOWN = [
    "full",
    "head",
    "lora",
    "dora",
    "adalora",
    "lora_xs",
    "melora",
    "dora_dynamic",
    "lorta",
    "surm",
    "rac_lora",
    "projection",
    "lora_ga",
    "lora2",
    "hadamard",
    "aurora",
    "inca",
    "meft",
]


@dataclass(frozen=True)
class Style:
    colour: str  # "#rrggbb"
    marker: str  # matplotlib's marker
    symbol: str  # plotly's name for the same marker


def base_name(label: str) -> str:
    """The method a label names: `lora[r8]` and `lora (method.r=4)` are lora's."""
    return re.split(r"[\[ (]", label, maxsplit=1)[0]


def number(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def style(label: str) -> Style:
    """The fixed colour and marker of a method label (module docstring)."""
    markers = list(MARKERS)
    base = base_name(label)
    if base in KNOWN:
        place = KNOWN.index(base)
        offset = 0 if label == base else 1 + number(label) % (len(markers) - 1)
        marker = markers[(place + offset) % len(markers)]
        return Style(COLOURS[place % len(COLOURS)], marker, MARKERS[marker])
    value = number(label)
    marker = markers[value // len(COLOURS) % len(markers)]
    return Style(COLOURS[value % len(COLOURS)], marker, MARKERS[marker])
