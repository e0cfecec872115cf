"""MEFT: the reversible backward against plain autograd through the same coupling (float64, dropout replayed), the
forward against the coupling written here from the paper's formulas and the reference code's blocks (tensors read by
name), the paper's starting-point limit, the saved activations, closed-form counts, the init and every error."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from harness.errors import HarnessError
from methods import METHODS
from methods.meft import MeftConfig, replayed, rng_state
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn
from tests.methods.references import HEAD, check_adapter_count, message

Meft = METHODS["meft"]
DROPOUT = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
FACTORS = {"1": (0.1, 1.0), "2": (1.0, 0.1), "3": (0.1, 0.1)}  # (λ, β), scripts/bert_glue.sh
LABELS = torch.tensor([0, 1, 2, 0])


def padded_batch() -> dict:
    """tiny_batch with padding at the end of two rows, so that the attention mask matters."""
    batch = tiny_batch()
    batch["attention_mask"][1, 7:] = 0
    batch["attention_mask"][3, 4:] = 0
    return batch


def meft(seed: int = 0, layers: int = 2, **values):
    """(pristine float64 tiny BERT, float64 tiny BERT with MEFT applied, the method)."""
    settings = {**DROPOUT, "num_hidden_layers": layers}
    original, model = tiny_bert(seed=seed, **settings).double(), tiny_bert(seed=seed, **settings).double()
    torch.manual_seed(seed + 100)
    return original, model, Meft(model, MeftConfig(**values), HEAD)


def perturb(model) -> None:
    """Every adapter weight and bias well away from its init, so that every path carries signal."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def gradients(model, seed: int, inputs: dict | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss and every trained tensor's gradient of one training step on `inputs` (default padded_batch())."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    loss = model(**(inputs or padded_batch()), labels=LABELS).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("variant, reversible", [("1", None), ("2", None), ("3", None), ("2", 1)])
def test_reversible_backward_equals_plain_autograd_through_the_same_coupling(variant, reversible):
    """Every trained tensor's gradient, dropout 0.1 on (hidden, attention, adapters): replayed masks, to 1e-10;
    the run's random stream is left where plain autograd leaves it."""
    _, plain, _ = meft(variant=variant, reversible_layers=0)
    _, model, method = meft(variant=variant, reversible_layers=reversible)
    perturb(plain), perturb(model)
    loss, expected = gradients(plain, seed=3)
    after_plain = torch.get_rng_state()
    reversible_loss, got = gradients(model, seed=3)
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert reversible_loss == pytest.approx(loss, abs=1e-12)
    assert set(got) == set(expected) and len(got) == 2 * 2 * 4 + 2  # two adapters of 4 tensors per layer, head
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=1e-10), name
        assert torch.count_nonzero(expected[name]) > 0, name
    # the masks matter: another draw gives other gradients, so equal gradients above mean replayed masks
    _, other = gradients(plain, seed=4)
    assert not torch.allclose(
        other["bert.encoder.layer.0.ffn_adapter.dense1.weight"],
        expected["bert.encoder.layer.0.ffn_adapter.dense1.weight"],
        atol=1e-6,
    )


@pytest.mark.parametrize("autocast", [torch.bfloat16, torch.float16, None])
def test_the_backward_recomputes_under_the_forwards_autocast(autocast):
    """An autocast forward (bf16, CPU's default, or fp16) and a backward outside it: F and G are re-run in the
    forward's dtype; a forward without autocast is re-run in fp32, outside autocast."""
    model = tiny_bert(**DROPOUT)
    Meft(model, MeftConfig(), HEAD)
    model.train()
    dtypes = []
    query = model.bert.encoder.layer[1].attention.self.query
    query.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = model(**padded_batch(), labels=LABELS).loss
    loss.backward()
    expected = autocast or torch.float32
    assert dtypes == [expected, expected]  # forward, then the backward's recomputation


def test_with_no_reversible_layer_the_encoder_is_plain_autograd_that_torch_func_differentiates():
    """reversible_layers=0 records no custom autograd Function (torch.func's transforms refuse one without
    setup_context): torch.func.grad of the loss in the input embeddings is its derivative, checked along a random
    direction against a central difference (float64, eval mode)."""
    _, model, _ = meft(reversible_layers=0)
    perturb(model)
    batch = padded_batch()
    embeds = model.bert.embeddings.word_embeddings(batch["input_ids"]).detach()
    direction = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(2), dtype=embeds.dtype)

    def loss(inputs_embeds):
        return model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"], labels=LABELS).loss

    grad = torch.func.grad(loss)(embeds)
    with torch.no_grad():
        step = 1e-5
        difference = (loss(embeds + step * direction) - loss(embeds - step * direction)) / (2 * step)
    assert (grad * direction).sum().item() == pytest.approx(difference.item(), rel=1e-6)
    assert abs(difference.item()) > 1e-3


def test_the_reversible_stack_saves_its_last_output_only():
    """Saved for backward in a training forward (each storage once): with every layer reversible, the same bytes for
    2 and 6 layers; through plain autograd they grow with the layers."""

    def saved_bytes(layers: int, reversible) -> int:
        _, model, _ = meft(layers=layers, reversible_layers=reversible)
        model.train()
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(**padded_batch(), labels=LABELS).loss
        del loss
        return sum(storages.values())

    assert saved_bytes(2, None) == saved_bytes(6, None)
    assert saved_bytes(6, 0) > saved_bytes(2, 0) > saved_bytes(2, None)


# -- the forward, written from the formulas ------------------------------------------------------------------------
def tensors(model, prefix: str) -> dict[str, torch.Tensor]:
    return {n[len(prefix) :]: p for n, p in model.named_parameters() if n.startswith(prefix)}


def linear(t: dict, name: str, x):
    return F.linear(x, t[f"{name}.weight"], t[f"{name}.bias"])


def norm(t: dict, name: str, x):
    return F.layer_norm(x, x.shape[-1:], t[f"{name}.weight"], t[f"{name}.bias"], eps=1e-12)


def adapter(t: dict, name: str, x):
    """Houlsby: dense2(gelu(dense1 x)) (modules.py Adapter, eval mode)."""
    return linear(t, f"{name}.dense2", F.gelu(linear(t, f"{name}.dense1", x)))


def attention(t: dict, x, mask, heads: int = 4):
    """BERT self-attention: softmax(QKᵀ/√d_h + mask) V, heads concatenated (before the output projection)."""
    b, n, d = x.shape
    q, k, v = (
        linear(t, f"attention.self.{m}", x).view(b, n, heads, -1).transpose(1, 2) for m in ("query", "key", "value")
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads) + (1 - mask[:, None, None, :]) * -1e30
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


def attention_block(t, x, mask, with_adapter: bool):
    """RevBertSelfOutput: o = W_O·attention(x) (+ attn_adapter(o) for MEFT3), LayerNorm(o + x)."""
    o = linear(t, "attention.output.dense", attention(t, x, mask))
    if with_adapter:
        o = o + adapter(t, "attn_adapter", o)
    return norm(t, "attention.output.LayerNorm", o + x)


def mlp_block(t, a):
    """RevBertOutput with the FFN adapter in parallel: LayerNorm(W2 gelu(W1 a) + ffn_adapter(a) + a)."""
    ffn = linear(t, "output.dense", F.gelu(linear(t, "intermediate.dense", a)))
    return norm(t, "output.LayerNorm", ffn + adapter(t, "ffn_adapter", a) + a)


def reference_encoder(model, original, variant: str, batch: dict, lam: float, beta: float):
    """[h, h] through y1 = λx1 + F(x2), y2 = βx2 + G(y1), [y2, y1] for MEFT1/2 and [y1, y2] for MEFT3; (x1 + x2)/2.
    The frozen tensors are the pristine model's, the adapters' are read from the MEFT model by name."""
    mask = batch["attention_mask"].double()
    h = original.bert.embeddings(input_ids=batch["input_ids"])
    x1 = x2 = h
    for i in range(2):
        t = {**tensors(original, f"bert.encoder.layer.{i}."), **tensors(model, f"bert.encoder.layer.{i}.")}
        layer = lambda x: mlp_block(t, attention_block(t, x, mask, False))  # noqa: E731
        rev_adapter = lambda x: adapter(t, "rev_adapter", x)  # noqa: E731
        f, g = {
            "1": (layer, rev_adapter),
            "2": (rev_adapter, layer),
            "3": (lambda x: attention_block(t, x, mask, True), lambda a: mlp_block(t, a)),
        }[variant]
        y1 = lam * x1 + f(x2)
        y2 = beta * x2 + g(y1)
        x1, x2 = (y1, y2) if variant == "3" else (y2, y1)
    return (x1 + x2) / 2


@pytest.mark.parametrize(
    "variant, factors", [("1", {}), ("2", {}), ("3", {}), ("1", {"x1_factor": 0.5, "x2_factor": 2.0})]
)
def test_the_forward_is_the_coupling_of_the_papers_formulas(variant, factors):
    original, model, _ = meft(variant=variant, **factors)
    perturb(model)
    lam, beta = factors.get("x1_factor", FACTORS[variant][0]), factors.get("x2_factor", FACTORS[variant][1])
    batch = padded_batch()
    with torch.no_grad():
        expected = reference_encoder(model, original, variant, batch, lam, beta)
        assert torch.allclose(model.bert(**batch).last_hidden_state, expected, rtol=0, atol=1e-10)
        pooled = torch.tanh(linear(tensors(original, "bert.pooler."), "dense", expected[:, 0]))
        assert torch.allclose(model(**batch).logits, linear(tensors(original, ""), "classifier", pooled), atol=1e-10)


class Wrapper(torch.nn.Module):
    """A model that holds the classifier one level down (the encoder at model.bert.encoder)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config


@pytest.mark.parametrize("where", ["a BertModel", "a wrapper"])
def test_the_encoder_is_replaced_wherever_it_sits(where):
    """MEFT on the bare BertModel (its encoder at the top: `encoder`, the pooler as head) or on a module holding the
    classifier (`model.bert.encoder`): the forward is the coupling of the paper's formulas."""
    original, model = (tiny_bert(seed=0, **DROPOUT).double() for _ in range(2))
    torch.manual_seed(100)
    if where == "a BertModel":
        Meft(model.bert, MeftConfig(), ["pooler"])
    else:
        Meft(Wrapper(model), MeftConfig(), ["model.classifier"])
    perturb(model)
    batch = padded_batch()
    with torch.no_grad():
        expected = reference_encoder(model, original, "1", batch, *FACTORS["1"])
        assert torch.allclose(model.bert(**batch).last_hidden_state, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant, factors", [("1", {"x1_factor": 1e-13}), ("2", {"x2_factor": 1e-13})])
def test_with_zero_adapters_and_a_vanishing_factor_the_output_is_the_mean_of_the_last_two_layers(variant, factors):
    """The paper's starting point (§3): MEFT1 with λ → 0 and G = 0 (MEFT2 with β → 0 and F = 0) passes [h_{n−1}, h_n]
    on, so the encoder's output is (h_{L−1} + h_L)/2 of the pretrained model."""
    original, model, _ = meft(variant=variant, **factors)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter.dense2" in name:
                param.zero_()
        hidden = original.bert(**padded_batch(), output_hidden_states=True).hidden_states
        got = model.bert(**padded_batch()).last_hidden_state
    assert torch.allclose(got, (hidden[-2] + hidden[-1]) / 2, rtol=0, atol=1e-10)
    assert not torch.allclose(got, hidden[-1], atol=1e-3)


# -- what is trained, counts, init ---------------------------------------------------------------------------------
ADAPTERS = {
    "1": ("ffn_adapter", "rev_adapter"),
    "2": ("ffn_adapter", "rev_adapter"),
    "3": ("ffn_adapter", "attn_adapter"),
}


@pytest.mark.parametrize("variant", ["1", "2", "3"])
def test_only_the_two_adapters_of_every_layer_and_the_head_train_and_frozen_names_are_kept(variant):
    original, model, _ = meft(variant=variant)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        f"bert.encoder.layer.{i}.{a}.{dense}.{kind}"
        for i in range(2)
        for a in ADAPTERS[variant]
        for dense in ("dense1", "dense2")
        for kind in ("weight", "bias")
    }
    assert trained == expected | {"classifier.weight", "classifier.bias"}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen.keys() == dict(original.named_parameters()).keys() - {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(p, original.get_parameter(n)) for n, p in frozen.items())


def per_layer(d: int, b: int) -> int:
    return 2 * (2 * d * b + b + d)


@pytest.mark.parametrize(
    "values, adapter",
    [
        ({}, 2 * per_layer(32, 8)),
        ({"variant": "2", "bottleneck": 3}, 2 * per_layer(32, 3)),
        ({"variant": "3", "bottleneck": 16}, 2 * per_layer(32, 16)),
        ({"variant": "3", "bottleneck": 1, "reversible_layers": 0}, 2 * per_layer(32, 1)),
    ],
)
def test_adapter_count_is_two_bottleneck_adapters_per_layer(values, adapter):
    check_adapter_count("meft", values, adapter)


def test_bert_base_with_bottleneck_8_trains_0_29_percent():
    """The paper's figure: 12 layers × 2·(2·768·8 + 8 + 768) = 313,536 ≈ 0.29 % of BERT-base (on the meta device)."""
    config = BertConfig(num_labels=2)  # BERT-base's shape: 12 layers, hidden 768, FFN 3072, 12 heads
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    counts = Meft(model, MeftConfig(), HEAD).param_counts()
    assert counts["adapter"] == 12 * per_layer(768, 8) == 313_536
    assert round(100 * counts["adapter"] / counts["backbone"], 2) == 0.29


def test_adapter_init_is_normal_at_the_models_initializer_range_with_zero_biases():
    model = tiny_bert(initializer_range=0.5)
    Meft(model, MeftConfig(bottleneck=64), HEAD)
    weights = torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if "adapter" in n and n.endswith("weight")]
    )
    assert weights.numel() == 2 * 2 * 2 * 32 * 64 and abs(weights.std().item() - 0.5) < 0.02
    assert abs(weights.mean().item()) < 0.02
    assert all(
        torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if "adapter" in n and n.endswith("bias")
    )


def test_the_adapter_is_dense2_of_dropout_of_the_models_activation_of_dense1():
    """modules.py Adapter: dense2(dropout(act(dense1 x))), act the model's hidden_act, dropout its hidden dropout."""
    model = tiny_bert(hidden_act="tanh", hidden_dropout_prob=0.3)
    Meft(model, MeftConfig(), HEAD)
    adapter = model.bert.encoder.layer[1].rev_adapter.train()
    x = torch.linspace(-2, 2, 5 * 32).view(5, 32)
    inner = torch.tanh(F.linear(x, adapter.dense1.weight, adapter.dense1.bias))
    torch.manual_seed(4)
    mask = F.dropout(torch.ones_like(inner), p=0.3)
    assert 0 < torch.count_nonzero(mask) < mask.numel()
    torch.manual_seed(4)
    got = adapter(x)
    assert torch.allclose(got, F.linear(mask * inner, adapter.dense2.weight, adapter.dense2.bias), atol=1e-6)


def test_the_class_declares_a_restructure_that_neither_merges_nor_starts_at_the_pretrained_outputs():
    capabilities = Meft.capabilities
    assert capabilities.restructures and not capabilities.mergeable and not capabilities.identity_at_init
    assert capabilities.layer_kinds == () and capabilities.decay == "trainer"


# -- errors ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, text",
    [
        ({"variant": "4"}, "method.variant must be one of 1, 2, 3 (MEFT1/2/3), got '4'"),
        ({"variant": None}, "method.variant must be one of 1, 2, 3 (MEFT1/2/3), got 'None'"),
        ({"bottleneck": 0}, "method.bottleneck must be >= 1, got 0"),
        ({"x1_factor": 0.0}, "method.x1_factor must be > 0 (the backward divides by it), got 0.0"),
        ({"x2_factor": -1.0}, "method.x2_factor must be > 0 (the backward divides by it), got -1.0"),
        ({"reversible_layers": -1}, "method.reversible_layers must be >= 0 (0: plain autograd), got -1"),
        (
            {"targets": ["query"]},
            "method.targets must be empty for meft (it restructures every encoder layer), got ['query']",
        ),
    ],
)
def test_config_errors_are_one_line(values, text):
    assert message(values, MeftConfig) == text


def test_more_reversible_layers_than_the_model_has_is_one_line():
    with pytest.raises(HarnessError) as error:
        Meft(tiny_bert(), MeftConfig(reversible_layers=3), HEAD)
    assert str(error.value) == "method.reversible_layers=3: the model has 2 encoder layers"


@pytest.mark.parametrize("missing", ["intermediate", "attention.self"])
def test_an_encoder_whose_blocks_lack_a_bert_part_is_one_line(missing):
    """Blocks without their FFN's `intermediate`, or whose attention has no `self`: not a BERT encoder."""
    model = tiny_bert()
    for block in model.bert.encoder.layer:
        parent, _, part = missing.rpartition(".")
        delattr(block.get_submodule(parent), part)
    with pytest.raises(HarnessError) as error:
        Meft(model, MeftConfig(), HEAD)
    assert str(error.value) == (
        "method meft restructures a BERT-family encoder (a ModuleList `layer` of blocks with attention, "
        "intermediate and output) or a Llama-layout decoder (a ModuleList `layers` of blocks with self_attn, mlp, "
        "input_layernorm and post_attention_layernorm), and BertForSequenceClassification has neither; use a BERT, "
        "MiniLM, RoBERTa or Llama-layout model"
    )


def test_a_model_without_a_bert_encoder_is_one_line():
    with pytest.raises(HarnessError) as error:
        Meft(tiny_cnn(), MeftConfig(), HEAD)
    assert str(error.value) == (
        "method meft restructures a BERT-family encoder (a ModuleList `layer` of blocks with attention, "
        "intermediate and output) or a Llama-layout decoder (a ModuleList `layers` of blocks with self_attn, mlp, "
        "input_layernorm and post_attention_layernorm), and ImageClassifier has neither; use a BERT, "
        "MiniLM, RoBERTa or Llama-layout model"
    )


# -- the RNG replay on a GPU (torch.cuda's generators faked: two GPUs, the current one 0) ---------------------------
class FakeCudaGenerators:
    """torch.cuda.get_rng_state / set_rng_state over one state per GPU, with their signatures and device rules
    (a device without an index, or "cuda", is the current GPU, 0; None has no index: an error, as in torch)."""

    def __init__(self):
        self.states = {0: torch.tensor([10], dtype=torch.uint8), 1: torch.tensor([11], dtype=torch.uint8)}
        self.calls = 0

    @staticmethod
    def index(device) -> int:
        device = torch.device(device) if isinstance(device, str) else device
        device = torch.device("cuda", device) if isinstance(device, int) else device
        return 0 if device.index is None else device.index

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        self.calls += 1
        return self.states[self.index(device)].clone()

    def set_rng_state(self, new_state: torch.Tensor, device="cuda") -> None:
        self.calls += 1
        self.states[self.index(device)] = new_state.clone()


@pytest.fixture
def cuda_generators(monkeypatch) -> FakeCudaGenerators:
    fake = FakeCudaGenerators()
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set_rng_state)
    return fake


def test_the_replay_on_a_gpu_sets_that_gpus_generator_and_restores_it(cuda_generators):
    """A model on cuda:1 while the current GPU is 0: the state saved before F is cuda:1's; replayed, cuda:1's
    generator (and the CPU's) is at it, cuda:0's untouched; after the replay both are back where they were."""
    device = torch.device("cuda", 1)
    torch.manual_seed(5)
    state = rng_state(device)
    assert torch.equal(state[0], torch.get_rng_state()) and torch.equal(state[1], torch.tensor([11], dtype=torch.uint8))
    torch.rand(3)  # the run goes on: both generators move
    cuda_generators.states[1] = torch.tensor([21], dtype=torch.uint8)
    cpu_after = torch.get_rng_state()
    with replayed(state, device):
        assert torch.equal(torch.get_rng_state(), state[0])
        assert cuda_generators.states == {0: torch.tensor([10]), 1: torch.tensor([11])}
        cuda_generators.states[1] = torch.tensor([31], dtype=torch.uint8)  # the replayed dropout draws
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), cpu_after)
    assert cuda_generators.states == {0: torch.tensor([10]), 1: torch.tensor([21])}


def test_the_replay_on_the_cpu_never_touches_a_gpus_generator(cuda_generators):
    _, model, _ = meft()
    perturb(model)
    gradients(model, seed=3)
    assert cuda_generators.calls == 0
    assert rng_state(torch.device("cpu"))[1] is None
