"""The PEFT bridge (methods/peft_bridge.py, methods/peft_options.py): errors, counts, and cross-checks against
the harness's own methods where the math coincides (LoRA = PEFT's LoRA; LoRA-XS's subspace holds TinyLoRA's update;
SURM's circulant = PEFT's C3A with one block). The generic invariants (identity at init, every
trainable tensor used and stepped, merge, save/load) run over the bridge configs in tests/methods/test_invariants.py."""

import pytest
import torch

from harness.config.preflight import command_line_problems
from harness.errors import HarnessError
from methods import build_method, parse_method_config
from methods.peft_bridge import stand_in
from tests.conftest import tiny_batch, tiny_bert
from tests.training import train_steps

HEAD = ["classifier"]


def bridged(peft_type: str, options: dict | None = None, targets=("query", "value"), model=None, **extra):
    model = tiny_bert() if model is None else model
    node = {"name": "peft", "peft_type": peft_type, "options": options or {}, "targets": list(targets), **extra}
    return model, build_method(model, node, HEAD)


def delta(layer) -> torch.Tensor:
    """A PEFT layer's ΔW (its own get_delta_weight)."""
    return layer.get_delta_weight("default")


@pytest.mark.parametrize(
    "node, message",
    [
        ({"peft_type": "NOPE"}, "peft/nope: unknown method.peft_type 'NOPE'; PEFT 0."),
        (
            {"peft_type": "PROMPT_TUNING"},
            "PEFT type PROMPT_TUNING is prompt learning (virtual tokens, no adapted layers); the bridge drives: ",
        ),
        (
            {"peft_type": "ADALORA"},
            "PEFT type ADALORA is not driven by the bridge (it prunes ranks in a step hook and adds a loss: use "
            "method=adalora",
        ),
        (
            {"peft_type": "VERA", "options": {"rank": 4}},
            "peft/vera: VeraConfig has no option 'rank'; it accepts: r, projection_prng_key,",
        ),
        (
            {"peft_type": "LORA", "options": {"modules_to_save": ["classifier"]}},
            "peft/lora: method.options.modules_to_save is set by the harness (the harness trains the task head "
            "itself); remove it",
        ),
        (
            {"peft_type": "LORA", "options": {"target_modules": ["query"]}},
            "method.options.target_modules is set by the harness (method.targets)",
        ),
        (
            {"peft_type": "C3A", "options": {"block_size": 7}},
            "peft/c3a: method.options.block_size=7: PEFT refuses it (The block size should be a factor of the input "
            "size. However, the input size is 32 and the block size is 7); C3AConfig's default: block_size=256",
        ),
        (
            {"peft_type": "LORA", "options": {"init_lora_weights": "nonsense"}},
            "peft/lora: method.options.init_lora_weights=nonsense: LoraConfig.init_lora_weights takes one of "
            "'gaussian', 'eva', 'olora', 'pissa', 'pissa_niter_[number of iters]',",
        ),
        (
            {"peft_type": "BOFT", "options": {"boft_block_size": 0, "boft_block_num": 0}},
            "peft/boft: method.options.boft_block_size=0, method.options.boft_block_num=0: PEFT refuses them (Either "
            "`boft_block_size` or `boft_block_num` must be non-zero. Currently, boft_block_size = 0 and boft_block_num "
            "= 0.); BOFTConfig's default: boft_block_size=4, boft_block_num=0",
        ),
        (
            {"peft_type": "VERA", "targets": ["quer"]},
            "peft/vera: target pattern 'quer' matches no Module module; the model has: ",
        ),
        (
            {"peft_type": "IA3", "targets": ["key"], "options": {"feedforward_modules": ["nope"]}},
            "peft/ia3 options.feedforward_modules: target pattern 'nope' matches no Module module",
        ),
        ({"peft_type": "LORA", "start": "somewhere"}, "method.start must be one of exact, near, away, got 'somewhere'"),
        (
            {"peft_type": "LORA", "options": {"init_lora_weights": "lora_ga"}},
            "peft/lora: init_lora_weights=lora_ga starts from data, which the bridge does not run (use method=lora_ga",
        ),
        ({"peft_type": "LORA", "options": {"init_lora_weights": "eva"}}, "init_lora_weights=eva starts from data"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_what_is_allowed(node, message):
    node = {"targets": ["query", "value"], **node}
    with pytest.raises(HarnessError) as error:
        build_method(tiny_bert(), {"name": "peft", **node}, HEAD)
    assert message in str(error.value) and "\n" not in str(error.value)
    if "drives: " in str(error.value) or "unknown method.peft_type" in message:
        listed = str(error.value).rsplit(": ", 1)[-1].split(", ")  # the driven types, one per comma
        assert (
            {"LORA", "LOHA", "VERA", "OFT"} <= set(listed) and "PROMPT_TUNING" not in listed and "ADALORA" not in listed
        )


# (peft_type, options, the whole one-line error): a wrong type, a value PEFT refuses in its config, and one its
# tuner crashes on (named by retrying on meta-device copies with the option at its default), for several tuners
OPTION_ERRORS = [
    ("VERA", {"r": "abc"}, "peft/vera: method.options.r=abc: VeraConfig.r takes an integer"),
    (
        "VERA",
        {"r": 0},
        "peft/vera: method.options.r=0: PEFT fails on it (ZeroDivisionError: float division by zero); VeraConfig's "
        "default: r=256",
    ),
    (
        "VERA",
        {"r": -1, "d_initial": 0.5},
        "peft/vera: method.options.r=-1: PEFT fails on it (RuntimeError: Trying to create tensor with negative "
        "dimension -1: [-1, 32]); VeraConfig's default: r=256",
    ),
    ("VERA", {"d_initial": "big"}, "peft/vera: method.options.d_initial=big: VeraConfig.d_initial takes a number"),
    ("LORA", {"lora_alpha": True}, "peft/lora: method.options.lora_alpha=true: LoraConfig.lora_alpha takes an integer"),
    (
        "LORA",
        {"r": 0},
        "peft/lora: method.options.r=0: PEFT refuses it (`r` should be a positive integer value but the value passed "
        "is 0); LoraConfig's default: r=8",
    ),
    (
        "LORA",
        {"bias": "some"},
        "peft/lora: method.options.bias=some: LoraConfig.bias takes one of 'none', 'all', 'lora_only'",
    ),
    (
        "LORA",
        {"layers_to_transform": [0, "a"]},
        "peft/lora: method.options.layers_to_transform=[0, 'a']: LoraConfig.layers_to_transform takes a list of "
        "integers, an integer or null",
    ),
    (
        "IA3",
        {"feedforward_modules": 3},
        "peft/ia3: method.options.feedforward_modules=3: IA3Config.feedforward_modules takes a list of strings, a "
        "string or null",
    ),
    ("LOHA", {"alpha": "a"}, "peft/loha: method.options.alpha=a: LoHaConfig.alpha takes an integer"),
    (
        "LOHA",
        {"r": 0},
        "peft/loha: method.options.r=0: PEFT refuses it (`r` should be a positive integer value but the value passed "
        "is 0); LoHaConfig's default: r=8",
    ),
    (
        "BOFT",
        {"boft_block_size": 5},
        "peft/boft: method.options.boft_block_size=5: PEFT refuses it (in_features (32) must be divisible by "
        "boft_block_size (5)!); BOFTConfig's default: boft_block_size=4",
    ),
    (
        "OFT",
        {"r": 2, "oft_block_size": 16},
        "peft/oft: method.options.r=2, method.options.oft_block_size=16: PEFT refuses them (You can only specify "
        "either r (2) or oft_block_size (16), but not both simultaneously, because r x oft_block_size == "
        "in_features.); OFTConfig's default: r=0, oft_block_size=32",
    ),
    (
        "FOURIERFT",
        {"n_frequency": 0},
        "peft/fourierft: method.options.n_frequency=0: PEFT refuses it (`n_frequency` should be a positive integer "
        "value but the value passed is 0); FourierFTConfig's default: n_frequency=1000",
    ),
    (
        "FOURIERFT",
        {"scaling": "lots"},
        "peft/fourierft: method.options.scaling=lots: FourierFTConfig.scaling takes a number",
    ),
    (
        "VERA",
        {"foo": 1},
        "peft/vera: VeraConfig has no option 'foo'; it accepts: r, projection_prng_key, save_projection, vera_dropout, "
        "d_initial, fan_in_fan_out, bias, init_weights, layers_to_transform, layers_pattern",
    ),
]


@pytest.mark.parametrize("peft_type, options, message", OPTION_ERRORS, ids=[f"{t}-{o}" for t, o, _ in OPTION_ERRORS])
def test_each_bad_option_is_one_line_naming_it_its_value_and_what_the_tuner_takes(peft_type, options, message):
    with pytest.raises(HarnessError) as error:
        bridged(peft_type, options)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "peft_type, options",
    [("LORA", {"r": "abc"}), ("VERA", {"foo": 1}), ("BOFT", {"boft_block_size": 0, "boft_block_num": 0})],
)
def test_options_are_checked_when_the_section_is_parsed_before_any_model(peft_type, options):
    """Names, types and PEFT's config checks need no model: the run fails before one loads."""
    with pytest.raises(HarnessError, match=r"^peft/\w+: "):
        parse_method_config({"name": "peft", "peft_type": peft_type, "options": options})


@pytest.mark.parametrize(
    "peft_type, options",
    [
        ("LORA", {"init_lora_weights": "pissa_niter_4", "layers_to_transform": 1, "rank_pattern": {"query": 4}}),
        ("VERA", {"d_initial": 1}),  # an integer where PEFT's hint says float
        ("OFT", {"r": 0, "oft_block_size": 16}),
    ],
)
def test_values_of_the_hinted_types_pass(peft_type, options):
    assert parse_method_config({"name": "peft", "peft_type": peft_type, "options": options}).options == options


def test_a_crash_is_blamed_on_meta_copies_and_the_model_is_left_as_it_was():
    """stand_in: the targets at their own paths on the meta device, no weight copied; the options PEFT crashed on
    are retried there, never on the model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = tiny_bert()
    model.bert.encoder.layer[0].attention.self.key.requires_grad_(False)  # a frozen weight stays frozen
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention", "bert.embeddings"]
    copy = stand_in(model, names)
    assert {n for n, p in copy.named_parameters() if p.is_meta} == {n for n, _ in copy.named_parameters()}
    assert {n: p.requires_grad for n, p in copy.named_parameters()} == {
        n: p.requires_grad
        for n, p in model.named_parameters()
        if n.startswith(("bert.encoder.layer.0.attention.", "bert.embeddings."))
    }
    buffers = dict(copy.named_buffers())  # the embeddings' position and token-type ids: meta copies too
    assert buffers.keys() == {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
    assert all(b.is_meta for b in buffers.values()) and not any(b.is_meta for b in model.buffers())
    assert not any(p.is_meta for p in model.parameters())
    with pytest.raises(HarnessError, match=r"method.options.r=0: PEFT fails on it \(ZeroDivisionError"):
        bridged("VERA", {"r": 0}, model=model)
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())  # the default r was tried on the copies


def test_method_options_is_an_open_section_so_the_tuner_names_an_unknown_key():
    """`method.options.foo=1` needs no `+`: composing passes, and the run's check lists VeRA's keys (the
    command line's check would list the base method's)."""
    assert command_line_problems(["method=peft/vera", "method.options.foo=1", "model=tiny_bert"]) == []
    assert command_line_problems(["method=lora", "method.foo=1"])[0].startswith("unknown config key 'method.foo'")


def test_without_peft_installed_the_bridge_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(HarnessError) as error:
        bridged("VERA", targets=["query"])
    assert str(error.value) == "peft/vera: the PEFT bridge needs Hugging Face PEFT: pip install 'peft>=0.21'"


@pytest.mark.parametrize(
    "targets, adapted",
    [
        (["key"], ["bert.encoder.layer.0.attention.self.key", "bert.encoder.layer.1.attention.self.key"]),
        (
            ["layer.1.attention.self.query", "layer.0.output.dense"],
            ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.attention.self.query"],
        ),
    ],
)
def test_peft_adapts_exactly_the_modules_method_targets_match(targets, adapted):
    """PEFT gets the harness's resolved targets, not its own per-architecture default (query, value for BERT)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model, _ = bridged("LORA", {"r": 2}, targets=targets)
    assert sorted(name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)) == adapted


def test_a_tuner_that_cannot_merge_fails_with_one_line(monkeypatch):
    _, method = bridged("LORA", {"r": 2})

    def cannot_merge():
        raise NotImplementedError("this tuner has no merge")

    monkeypatch.setattr(method.tuner, "merge_adapter", cannot_merge)
    with pytest.raises(HarnessError) as error:
        method.merge()
    assert str(error.value) == "peft/lora: PEFT cannot merge this tuner: this tuner has no merge"


def test_the_head_is_the_harness_s_and_the_adapter_is_what_peft_added():
    """VeRA on Wq, Wv: per matrix r (Λ_d) + d_out (Λ_b) trained; the shared random A, B are frozen
    buffers, counted nowhere; the head (classifier) trained by the harness, outside PEFT."""
    model, method = bridged("VERA", {"r": 4})
    hidden, matrices = 32, 4  # 2 layers × (Wq, Wv)
    counts = method.param_counts()
    assert counts["adapter"] == matrices * (4 + hidden)
    assert counts["head"] == hidden * 3 + 3 and all(p.requires_grad for p in model.classifier.parameters())
    assert not any("modules_to_save" in n or "original_module" in n for n, _ in model.named_parameters())
    assert counts["backbone"] == sum(
        p.numel() for n, p in tiny_bert().named_parameters() if not n.startswith("classifier.")
    )


def test_peft_lora_through_the_bridge_trains_exactly_like_the_harness_lora():
    """Same model, same A (PEFT draws its own: copied across), same batches, float64: the two runs give
    the same outputs after 6 AdamW steps, and the same merged weights."""
    ours_model = tiny_bert().double()
    ours = build_method(ours_model, {"name": "lora", "targets": ["query", "value"], "r": 4, "alpha": 8}, HEAD)
    peft_model = tiny_bert().double()
    _, theirs = bridged("LORA", {"r": 4, "lora_alpha": 8}, model=peft_model)
    assert theirs.param_counts() == ours.param_counts()
    with torch.no_grad():
        for name, layer in ours.layers.items():
            peft_layer = peft_model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            assert torch.equal(peft_layer.lora_B["default"].weight, layer.lora_B)
    batch = lambda step: {k: v for k, v in tiny_batch(seed=step).items()}
    for method in (ours, theirs):
        train_steps(method, batch, 6)
    torch.testing.assert_close(peft_model(**tiny_batch()).logits, ours_model(**tiny_batch()).logits, rtol=0, atol=1e-12)
    for method in (ours, theirs):
        method.merge()
    for name in ours.layers:
        torch.testing.assert_close(
            peft_model.get_submodule(name).get_base_layer().weight,
            ours_model.get_submodule(name).base.weight,
            rtol=0,
            atol=1e-12,
        )


def test_tinylora_updates_lie_in_the_lora_xs_subspace():
    """TinyLoRA (PEFT, derived from LoRA-XS) trains u numbers mixed by fixed random r×r projections into
    R: ΔW = (U_r √S_r) R (√S_r V_rᵀ). LoRA-XS trains R' directly: ΔW = s · U_r R' (S_r V_rᵀ). So every
    TinyLoRA update is a LoRA-XS update with R' = √S R S^{-1/2} / s (up to the signs of singular
    vectors, which the least-squares fit absorbs); the documented difference is the parametrisation
    (u vs r² numbers) and where √S sits. Checked: for a random v, our LoRA-XS with the fitted R'
    reproduces PEFT's outputs."""
    r = 4
    peft_model = tiny_bert().double()
    _, theirs = bridged("TINYLORA", {"r": r, "u": 8, "projection_seed": 3}, model=peft_model)
    with torch.no_grad():
        for param in theirs.adapter_parameters():
            param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1), dtype=param.dtype))
    ours_model = tiny_bert().double()
    ours = build_method(ours_model, {"name": "lora_xs", "targets": ["query", "value"], "r": r, "alpha": 2.0 * r}, HEAD)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            wanted = delta(peft_model.get_submodule(name)).double()
            assert wanted.abs().max() > 1e-3  # a real update
            fitted = torch.linalg.pinv(layer.lora_B) @ wanted @ torch.linalg.pinv(layer.lora_A) / layer.scaling
            layer.lora_R.copy_(fitted)
            torch.testing.assert_close(layer.delta_weight(), wanted, rtol=0, atol=1e-5)  # PEFT's SVD runs in float32
    torch.testing.assert_close(ours_model(**tiny_batch()).logits, peft_model(**tiny_batch()).logits, rtol=0, atol=1e-5)


def test_surm_circulant_equals_c3a_with_one_block():
    """SURM's circulant ΔW = α·circ(c), c = c_B ⊙ c_A its first column (C_ij = c[(i−j) mod d]); PEFT's
    C3A with block_size = d: ΔW = circ_row(k)/d_in, k its first row (C_ij = k[(j−i) mod d]). The same map
    when α·c = [k_0, k_{d−1}, …, k_1]/d. Documented differences: C3A trains one d-vector (SURM two,
    2d numbers, whose product is c), divides by d_in, and tiles b×b blocks on non-square layers."""
    d, alpha = 32, 2.0
    peft_model = tiny_bert()
    _, theirs = bridged("C3A", {"block_size": d}, model=peft_model)
    ours_model = tiny_bert()
    ours = build_method(
        ours_model,
        {"name": "surm", "structure": "circulant", "placement": "lora", "targets": ["query", "value"], "alpha": alpha},
        HEAD,
    )
    assert theirs.param_counts()["adapter"] * 2 == ours.param_counts()["adapter"]  # d vs 2d per matrix
    with torch.no_grad():
        for name, layer in ours.layers.items():
            kernel = peft_model.get_submodule(name).c3a_kernel["default"]
            kernel.copy_(torch.randn(kernel.shape, generator=torch.Generator().manual_seed(2)))
            row = kernel.reshape(-1)
            layer.structured.c_A.copy_(torch.cat([row[:1], row[1:].flip(0)]) / (d * alpha))
            layer.structured.c_B.fill_(1.0)
            torch.testing.assert_close(layer.delta_weight(), delta(peft_model.get_submodule(name)), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_model(**tiny_batch()).logits, peft_model(**tiny_batch()).logits, rtol=0, atol=1e-5)


def test_pissa_moves_w0_so_the_model_starts_where_it_was_and_round_trips():
    """PiSSA (PEFT's init_lora_weights="pissa"): W0 ← W0 − s·B A with the top singular pairs in A, B;
    the residual is rebuilt the same way from the config in a fresh model, so the saved adapter restores
    the trained outputs."""
    reference = tiny_bert()(**tiny_batch()).logits
    model, method = bridged("LORA", {"r": 4, "lora_alpha": 4, "init_lora_weights": "pissa"})
    torch.testing.assert_close(model(**tiny_batch()).logits, reference, rtol=0, atol=1e-5)
    query, original = (
        model.bert.encoder.layer[0].attention.self.query,
        tiny_bert().bert.encoder.layer[0].attention.self.query.weight,
    )
    singular = torch.linalg.svdvals(original.detach().double())[:4]
    # B = U_r √S_r and A = √S_r V_rᵀ: column / row norms √S_r, whatever the singular vectors' signs
    torch.testing.assert_close(query.lora_B["default"].weight.double().norm(dim=0), singular.sqrt(), rtol=1e-5, atol=0)
    torch.testing.assert_close(query.lora_A["default"].weight.double().norm(dim=1), singular.sqrt(), rtol=1e-5, atol=0)
    residual = query.get_base_layer().weight
    torch.testing.assert_close(residual + query.get_delta_weight("default"), original, rtol=0, atol=1e-5)
    assert torch.linalg.matrix_norm(residual - original) > 0.5 * singular[0]  # W0 itself moved
    train_steps(method, lambda step: tiny_batch(seed=step), 3)
    trained = model(**tiny_batch()).logits
    fresh, fresh_method = bridged("LORA", {"r": 4, "lora_alpha": 4, "init_lora_weights": "pissa"})
    fresh_method.load_trainable_state_dict(method.trainable_state_dict())
    torch.testing.assert_close(fresh(**tiny_batch()).logits, trained, rtol=0, atol=0)
