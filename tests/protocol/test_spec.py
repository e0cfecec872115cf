"""A protocol's section read into typed parts: the official suites name their methods one by one, and a
suite that does not is a one-line error naming what is allowed."""

import pytest

from harness.config.compose import project_config
from harness.config.preflight import group_options
from harness.errors import HarnessError
from harness.protocol.cells import Composer, plan_cells
from harness.protocol.spec import parse_protocol


def suites_of(sweep: str) -> list[tuple[str, list[str]]]:
    with project_config():
        return [(suite.model, suite.methods) for suite in parse_protocol(Composer([f"sweep={sweep}"])([])).suites]


def test_the_official_suites_name_exactly_their_methods():
    """A method added to the project joins no official suite until a suite lists it."""
    assert suites_of("official") == [
        ("efficientnet_lite0", ["full", "head", "lora", "projection", "inca"]),
        (
            "minilm",
            [
                "adalora",
                "dora",
                "dora_dynamic",
                "full",
                "head",
                "lora",
                "lora_xs",
                "lorta",
                "melora",
                "rac_lora",
                "surm",
                "lora_ga",
                "lora2",
                "hadamard",
                "aurora",
                "inca",
                "meft",
                "lora+loraplus",
                "lora+lorafa",
                "lora+riemannian",
            ],
        ),
    ]
    assert suites_of("official_decoder") == [
        (
            "smollm2_135m",
            [
                "adalora",
                "dora",
                "dora_dynamic",
                "full",
                "lora",
                "lora_ga",
                "lora_xs",
                "lorta",
                "melora",
                "rac_lora",
                "surm",
            ],
        )
    ]
    tuners = ["vera", "loha", "lokr", "ia3", "oft", "boft", "hra", "fourierft", "c3a", "tinylora", "vblora", "lora"]
    assert suites_of("official_peft") == [
        ("minilm", [*(f"peft/{tuner}" for tuner in tuners), "peft/lora_pissa", "peft/lora_olora"])
    ]


@pytest.mark.parametrize(
    "suite, message",
    [
        (
            "{model:minilm,tasks:[bbc_news],methods:all}",
            "protocol.suites[0].methods: 'all' is not a list of methods; name each method the suite compares "
            "(available: {methods})",
        ),
        (
            "{model:minilm,tasks:[bbc_news]}",
            "protocol.suites[0].methods: None is not a list of methods; name each method the suite compares "
            "(available: {methods})",
        ),
        (
            "{model:minilm,tasks:[bbc_news],methods:[lora,lorra]}",
            "protocol.suites[0].methods names unknown methods ['lorra']; available: {methods}, each as "
            "<method>+<optimizer> with an optimizer of adamw, lorafa, loraplus, riemannian, sgd",
        ),
        (
            "{model:minilm,tasks:[bbc_news],methods:[lora+loraplus,lora+adam,lorra+sgd]}",
            "protocol.suites[0].methods names unknown methods ['lora+adam', 'lorra+sgd']; available: {methods}, each "
            "as <method>+<optimizer> with an optimizer of adamw, lorafa, loraplus, riemannian, sgd",
        ),
        (
            "{model:minilm,tasks:[bbc_news],methods:[lora],exclude:[head]}",
            "protocol.suites[0]: unknown key 'exclude'; allowed keys: model, tasks, methods, overrides, "
            "method_overrides, task_overrides, seeds_overrides",
        ),
    ],
)
def test_a_suite_without_an_explicit_list_of_known_methods_is_a_one_line_error(suite, message):
    with project_config():
        methods = ", ".join(group_options()["method"])
        with pytest.raises(HarnessError) as error:
            parse_protocol(Composer(["sweep=official", f"protocol.suites=[{suite}]"])([]))
    assert str(error.value) == message.format(methods=methods)


def test_axes_must_name_known_methods_and_allowed_axes():
    with project_config():
        composer = Composer(["sweep=official"])
        with pytest.raises(HarnessError, match=r"^protocol.axes names unknown methods \['lorra'\]; available: "):
            parse_protocol(composer(["+protocol.axes.lorra=lr"]))
        with pytest.raises(HarnessError, match=r"^protocol.axes: \{'lora': 'rate'\} is not an axis; allowed: lr, "):
            parse_protocol(composer(["+protocol.axes.lora=rate"]))


def test_flag_notes_are_texts_under_model_names():
    with project_config():
        composer = Composer(["sweep=official"])
        assert sorted(parse_protocol(composer([])).flag_notes) == [
            "efficientnet_lite0",
            "minilm",
        ]  # the committed notes
        protocol = parse_protocol(composer(["protocol.flag_notes.minilm='Budget capped.'"]))
        assert protocol.flag_notes["minilm"] == "Budget capped."
        narrowed = parse_protocol(composer(["protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[lora]}]"]))
        assert sorted(narrowed.flag_notes) == ["efficientnet_lite0", "minilm"]  # kept, unused: no error
        for override, named in (
            ("+protocol.flag_notes.minlm='x'", "minlm"),
            ("protocol.flag_notes.minilm=[a]", "minilm"),
        ):
            with pytest.raises(
                HarnessError,
                match=rf"^protocol.flag_notes: {named}: not a text under a model's name; "
                r"models: .*efficientnet_lite0.*, minilm, .*tiny_bert",
            ):
                parse_protocol(composer([override]))


def test_a_method_with_an_optimizer_is_a_cell_of_its_own_run_with_that_optimizer():
    with project_config():
        composer = Composer(["sweep=official"])
        protocol = parse_protocol(
            composer(["protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[lora,lora+loraplus]}]"])
        )
        plain, plus = plan_cells(protocol, composer)
        assert plus.method == "lora+loraplus" and plus.base_overrides()[:4] == [
            "model=tiny_bert",
            "method=lora",
            "optimizer=loraplus",
            "task=bbc_news",
        ]
        assert composer(plus.run(protocol, 0, 0)).optimizer.name == "loraplus"
        assert composer(plain.run(protocol, 0, 0)).optimizer.name == "adamw"
        assert composer.key(plus.run(protocol, 0, 0)) != composer.key(plain.run(protocol, 0, 0))
        assert (plus.lr, plus.head_lr) == (plain.lr, plain.head_lr)
