"""A method's colour and marker depend on its name only, and the shipped methods never share a pair."""

import re

from harness.report.palette import COLOURS, KNOWN, MARKERS, style


def test_known_methods_have_distinct_colours_and_valid_markers():
    styles = [style(name) for name in KNOWN]
    assert len({s.colour for s in styles}) == len(KNOWN)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", s.colour) and MARKERS[s.marker] == s.symbol for s in styles)
    assert style("full").colour == COLOURS[0] and style("full").marker == "o"


def test_a_variant_keeps_its_base_colour_with_another_marker():
    for label in ("lora[r8]", "lora (method.r=4)"):
        assert style(label).colour == style("lora").colour
        assert style(label).marker != style("lora").marker


def test_an_unknown_label_is_styled_the_same_wherever_it_appears():
    assert style("peft:ia3") == style("peft:ia3")
    assert style("peft:ia3").colour in COLOURS and style("peft:ia3").marker in MARKERS
