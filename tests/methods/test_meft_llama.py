"""MEFT on a Llama-layout decoder (a tiny random Llama with grouped-query attention, float64): the reversible backward
against plain autograd through the same coupling (attention dropout replayed), the forward against the coupling
written here from the paper's formulas over a pristine copy's sub-layers (adapters read by name), the starting-point
limit, decoding with a key/value cache, what is trained, closed-form counts and the errors."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from harness.errors import HarnessError
from methods import METHODS
from methods.meft import MeftConfig
from tests.methods.test_meft import gradients, per_layer, perturb

Meft = METHODS["meft"]
HEAD = ["score"]
FACTORS = {"1": (0.1, 1.0), "2": (1.0, 0.1), "3": (0.1, 0.1)}  # (λ, β), as on BERT
SHAPE = {
    "vocab_size": 100,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
}


def llama(seed: int = 0, layers: int = 2, causal: bool = False, **overrides):
    torch.manual_seed(seed)
    config = LlamaConfig(**{**SHAPE, "num_hidden_layers": layers, "num_labels": 3, **overrides})
    return (LlamaForCausalLM if causal else LlamaForSequenceClassification)(config).double().eval()


def meft(seed: int = 0, layers: int = 2, **values):
    """(pristine float64 tiny Llama, float64 tiny Llama with MEFT applied, the method); attention dropout 0.1."""
    original, model = (llama(seed, layers, attention_dropout=0.1) for _ in range(2))
    torch.manual_seed(seed + 100)
    return original, model, Meft(model, MeftConfig(**values), HEAD)


def batch() -> dict:
    """Right padding on two rows (the classifier reads each row's last token before the first pad)."""
    input_ids = torch.randint(1, 100, (4, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(4, 9, dtype=torch.long)
    attention_mask[1, 6:] = attention_mask[3, 3:] = 0
    return {"input_ids": input_ids.masked_fill(attention_mask == 0, 0), "attention_mask": attention_mask}


@pytest.mark.parametrize("variant, reversible", [("1", None), ("2", None), ("3", None), ("1", 1)])
def test_reversible_backward_equals_plain_autograd_through_the_same_coupling(variant, reversible):
    _, plain, _ = meft(variant=variant, reversible_layers=0)
    _, model, _ = meft(variant=variant, reversible_layers=reversible)
    perturb(plain), perturb(model)
    loss, expected = gradients(plain, 3, batch())
    after_plain = torch.get_rng_state()
    reversible_loss, got = gradients(model, 3, batch())
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert reversible_loss == pytest.approx(loss, abs=1e-12)
    assert set(got) == set(expected) and len(got) == 2 * 2 * 4 + 1  # two adapters of 4 tensors per layer, score
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=1e-10), name
        assert torch.count_nonzero(expected[name]) > 0, name
    _, other = gradients(plain, 4, batch())  # the attention dropout matters: equal gradients above mean replayed masks
    assert not torch.allclose(
        other["model.layers.0.ffn_adapter.dense1.weight"], expected["model.layers.0.ffn_adapter.dense1.weight"]
    )


# -- the forward, written from the formulas over a pristine copy's sub-layers ---------------------------------------
def block_inputs(original, inputs: dict) -> tuple[torch.Tensor, dict]:
    """The embeddings and what the pristine decoder passes its first block (mask, rotary embeddings, positions)."""
    seen = {}

    def keep(module, args, kwargs):
        seen.update(kwargs, hidden=args[0] if args else kwargs["hidden_states"])

    handle = original.model.layers[0].register_forward_pre_hook(keep, with_kwargs=True)
    original.model(**inputs, use_cache=False)  # no cache: the reference re-runs each attention
    handle.remove()
    hidden = seen.pop("hidden", None)
    seen.pop("hidden_states", None)
    return hidden, seen


def adapter(model, name: str, x):
    """Houlsby: dense2(silu(dense1 x)), the tensors read from the MEFT model by name (no dropout on Llama)."""
    t = dict(model.named_parameters())
    inner = F.silu(F.linear(x, t[f"{name}.dense1.weight"], t[f"{name}.dense1.bias"]))
    return F.linear(inner, t[f"{name}.dense2.weight"], t[f"{name}.dense2.bias"])


def reference_decoder(model, original, variant: str, inputs: dict, lam: float, beta: float):
    """[h, h] through y1 = λx1 + F(x2), y2 = βx2 + G(y1), [y2, y1] (MEFT1/2) or [y1, y2] (MEFT3), then the final
    norm of (x1 + x2)/2. Pre-norm sub-layers: attention x + o (+ adapter(o) in MEFT3's F), o = W_O·attn(norm₁ x);
    FFN with its parallel adapter h + FFN(n) + adapter(n), n = norm₂ h."""
    h, kwargs = block_inputs(original, inputs)
    x1 = x2 = h
    for i, block in enumerate(original.model.layers):
        prefix = f"model.layers.{i}"

        def attention(x, with_adapter=False):
            o = block.self_attn(hidden_states=block.input_layernorm(x), **kwargs)[0]
            return x + o + (adapter(model, f"{prefix}.attn_adapter", o) if with_adapter else 0)

        def mlp(h):
            n = block.post_attention_layernorm(h)
            return h + block.mlp(n) + adapter(model, f"{prefix}.ffn_adapter", n)

        rev_adapter = lambda x: adapter(model, f"{prefix}.rev_adapter", x)  # noqa: E731
        f, g = {
            "1": (lambda x: mlp(attention(x)), rev_adapter),
            "2": (rev_adapter, lambda x: mlp(attention(x))),
            "3": (lambda x: attention(x, True), mlp),
        }[variant]
        y1 = lam * x1 + f(x2)
        y2 = beta * x2 + g(y1)
        x1, x2 = (y1, y2) if variant == "3" else (y2, y1)
    return original.model.norm((x1 + x2) / 2)


@pytest.mark.parametrize("variant, factors", [("1", {}), ("2", {}), ("3", {}), ("3", {"x1_factor": 0.5})])
def test_the_forward_is_the_coupling_of_the_papers_formulas(variant, factors):
    original, model, _ = meft(variant=variant, **factors)
    perturb(model)
    lam, beta = factors.get("x1_factor", FACTORS[variant][0]), FACTORS[variant][1]
    with torch.no_grad():
        expected = reference_decoder(model, original, variant, batch(), lam, beta)
        assert torch.allclose(model.model(**batch()).last_hidden_state, expected, rtol=0, atol=1e-10)
        last = torch.tensor([8, 5, 8, 2])  # each row's last token before its padding
        scores = original.score(expected[torch.arange(4), last])
        assert torch.allclose(model(**batch()).logits, scores, rtol=0, atol=1e-10)


def test_with_zero_adapters_and_a_vanishing_factor_the_output_is_the_mean_of_the_last_two_layers():
    """MEFT1 with λ → 0 and G = 0 passes [h_{n−1}, h_n] on: the decoder's output is norm((h_{L−1} + h_L)/2)."""
    original, model, _ = meft(layers=3, x1_factor=1e-13)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter.dense2" in name:
                param.zero_()
        h, kwargs = block_inputs(original, batch())
        hidden = [h]
        for block in original.model.layers:
            hidden.append(block(hidden[-1], **kwargs))
        got = model.model(**batch()).last_hidden_state
    assert torch.allclose(got, original.model.norm((hidden[-2] + hidden[-1]) / 2), rtol=0, atol=1e-10)
    assert not torch.allclose(got, original.model.norm(hidden[-1]), atol=1e-3)


@pytest.mark.parametrize("variant", ["1", "2", "3"])
def test_decoding_with_a_key_value_cache_gives_the_full_forwards_logits(variant):
    """Generation: a prefix, then one token at a time through the cache, equals the whole sequence at once."""
    model = llama(causal=True)
    torch.manual_seed(100)
    Meft(model, MeftConfig(variant=variant), ["lm_head"])
    perturb(model)
    ids = torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, :5], cache=cache, use_cache=True).logits]
        for t in range(5, 8):
            steps.append(model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    assert cache.get_seq_length() == 8
    assert torch.allclose(torch.cat(steps, dim=1), whole, rtol=0, atol=1e-10)


def test_a_forward_with_gradients_on_a_filled_cache_is_one_line():
    model = llama(causal=True)
    Meft(model, MeftConfig(), ["lm_head"])
    ids = torch.randint(1, 100, (2, 4), generator=torch.Generator().manual_seed(3))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True)
    with pytest.raises(HarnessError) as error:
        model(input_ids=ids[:, :1], cache=cache, use_cache=True)
    assert str(error.value) == (
        "method meft: a forward that records gradients cannot continue a filled key/value cache (cache), as its "
        "backward re-runs the attention; generate under torch.no_grad()"
    )


def test_a_training_forward_with_use_cache_fills_no_cache_and_gives_the_same_gradients():
    """use_cache=True while training: the reversible stack leaves the empty cache out (its backward re-runs each
    attention), so the gradients are those of a forward without one."""
    model = llama(causal=True)
    Meft(model, MeftConfig(), ["lm_head"])
    perturb(model)
    ids = torch.randint(1, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    grads = []
    for use_cache in (False, True):
        model.zero_grad()
        model(input_ids=ids, labels=ids, use_cache=use_cache).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


# -- what is trained, counts, the adapter -------------------------------------------------------------------------
@pytest.mark.parametrize("variant, second", [("1", "rev_adapter"), ("2", "rev_adapter"), ("3", "attn_adapter")])
def test_only_the_two_adapters_of_every_layer_and_the_head_train_and_block_names_are_kept(variant, second):
    original, model, _ = meft(variant=variant)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        f"model.layers.{i}.{a}.{dense}.{kind}"
        for i in range(2)
        for a in ("ffn_adapter", second)
        for dense in ("dense1", "dense2")
        for kind in ("weight", "bias")
    } | {"score.weight"}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen.keys() == dict(original.named_parameters()).keys() - {"score.weight"}
    assert all(torch.equal(p, original.get_parameter(n)) for n, p in frozen.items())
    assert model.model.layers[1] is model.get_submodule("model.layers.1") and len(model.model.layers) == 2


@pytest.mark.parametrize(
    "layers, values", [(2, {}), (2, {"variant": "2", "bottleneck": 3}), (1, {"variant": "3", "bottleneck": 16})]
)
def test_adapter_count_is_two_bottleneck_adapters_per_layer(layers, values):
    _, _, method = meft(layers=layers, **values)
    assert method.param_counts()["adapter"] == layers * per_layer(32, values.get("bottleneck", 8))


def test_smollm2_135m_with_bottleneck_8():
    """SmolLM2-135M's shape (30 layers, hidden 576), on the meta device: 30 × 2·(2·576·8 + 8 + 576) = 588,000."""
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        num_labels=2,
        pad_token_id=0,
    )
    with torch.device("meta"):
        model = LlamaForSequenceClassification(config)
    counts = Meft(model, MeftConfig(), HEAD).param_counts()
    assert counts["adapter"] == 30 * per_layer(576, 8) == 588_000


def test_the_adapter_is_dense2_of_the_models_activation_of_dense1_without_dropout():
    model = llama(hidden_act="tanh")
    Meft(model, MeftConfig(), HEAD)
    module = model.model.layers[1].rev_adapter.train()
    assert module.dropout.p == 0.0
    x = torch.linspace(-2, 2, 5 * 32, dtype=torch.float64).view(5, 32)
    inner = torch.tanh(F.linear(x, module.dense1.weight, module.dense1.bias))
    assert torch.equal(module(x), F.linear(inner, module.dense2.weight, module.dense2.bias))


# -- errors --------------------------------------------------------------------------------------------------------
def test_a_loop_over_the_layers_runs_the_reversible_stack_once():
    """The decoder's loop, by slice (transformers 5's Llama) or by iteration, meets one step: the couplings."""
    original, model, _ = meft()
    perturb(model)
    with torch.no_grad():
        h, kwargs = block_inputs(original, batch())
        expected = model.model(**batch()).last_hidden_state
        for loop in (model.model.layers[:2], model.model.layers):
            hidden = h
            for block in loop:
                hidden = block(hidden, **kwargs)
            assert torch.allclose(model.model.norm(hidden), expected, rtol=0, atol=1e-12)


def test_part_of_the_reversible_layers_is_one_line():
    _, model, _ = meft()
    with pytest.raises(HarnessError) as error:
        model.model.layers[:1]
    assert str(error.value) == (
        "method meft runs the decoder's 2 layers as one reversible stack; layers[slice(None, 1, None)] asks for "
        "part of it"
    )


def test_more_reversible_layers_than_the_decoder_has_is_one_line():
    with pytest.raises(HarnessError) as error:
        meft(reversible_layers=3)
    assert str(error.value) == "method.reversible_layers=3: the model has 2 encoder layers"


class TupleLayer(LlamaDecoderLayer):
    """A decoder block as transformers 4 wrote them: it returns a tuple (hidden states first)."""

    def forward(self, hidden_states, **kwargs) -> tuple:
        return (super().forward(hidden_states, **kwargs),)


def test_a_decoder_whose_blocks_return_a_tuple_is_one_line():
    model = llama(layers=1)
    model.model.layers = torch.nn.ModuleList([TupleLayer(model.config, 0)])
    with pytest.raises(HarnessError) as error:
        Meft(model, MeftConfig(), HEAD)
    assert str(error.value) == (
        "method meft on a decoder needs transformers >= 5 (its decoder blocks return the hidden states), and "
        "TupleLayer returns a tuple here"
    )
