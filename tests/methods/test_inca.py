"""InCA: the per-tap forward recomputed in the test from the formula (reading the adapters' tensors by name and the
pristine backbone's activations), the summed loss, tap selection and the ensemble, the closed-form counts, the
frozen backbone under no_grad, the engine's call of `select`, and every error."""

import copy
import math

import numpy as np
import pytest
import torch
from hydra import compose
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from harness.config.compose import project_config
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.store.records import RecordStore
from methods import METHODS
from methods.inca import CrossAttentionAdapter, Inca, IncaConfig
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn, tiny_images
from tests.methods.references import HEAD, build, message
from tests.test_robustness import TINY
from tests.training import LABELS, settings, train_steps


def padded_batch() -> dict:
    batch = tiny_batch(seed=3)
    batch["attention_mask"][0, 6:] = 0
    batch["attention_mask"][2, 3:] = 0
    return batch


def layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def reference_logits(adapter, tokens: torch.Tensor, mask, heads: int) -> torch.Tensor:
    """The formula of methods/inca.py's docstring, head by head, from the adapter's tensors by name."""
    u = layer_norm(tokens, adapter.norm_in)
    keys, values = u @ adapter.key.weight.T, u @ adapter.value.weight.T
    width = keys.shape[-1] // heads
    parts = []
    for j in range(heads):
        cols = slice(j * width, (j + 1) * width)
        scores = torch.einsum("d,btd->bt", adapter.query[0, cols], keys[..., cols]) / math.sqrt(width)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        parts.append(torch.einsum("bt,btd->bd", torch.softmax(scores, -1), values[..., cols]))
    pooled = layer_norm(torch.cat(parts, -1), adapter.norm_out)
    return pooled @ adapter.head.weight.T + adapter.head.bias


def trained_bert(**values):
    original, model, method = build("inca", **{"dim": 12, "heads": 3, **values})
    train_steps(method, lambda step: tiny_batch(seed=step), 3)
    return original, model, method


def bert_tap_logits(original, model, method, batch) -> dict[int, torch.Tensor]:
    with torch.no_grad():
        hidden = original(**batch, output_hidden_states=True).hidden_states
        return {
            i: reference_logits(model.inca.adapters[str(i)], hidden[i + 1], batch["attention_mask"], method.cfg.heads)
            for i in model.inca.indices
        }


def test_text_forward_is_the_mean_of_the_taps_cross_attention_heads_until_a_tap_is_selected():
    original, model, method = trained_bert()
    batch = padded_batch()
    expected = bert_tap_logits(original, model, method, batch)
    assert model.inca.indices == [0, 1]
    with torch.no_grad():
        outputs = model(**batch, labels=LABELS)
    assert torch.allclose(outputs.logits, (expected[0] + expected[1]) / 2, atol=1e-10)
    loss = sum(torch.nn.functional.cross_entropy(expected[i], LABELS) for i in (0, 1))
    assert torch.allclose(outputs.loss, loss, atol=1e-10)
    # a padded token takes no part: changing it changes nothing
    batch["input_ids"][0, 7] = 5
    assert torch.allclose(model(**batch).logits, outputs.logits, atol=1e-12)


def test_select_keeps_the_best_scoring_tap_from_one_side_by_side_prediction():
    original, model, method = trained_bert()
    batch = padded_batch()
    expected = bert_tap_logits(original, model, method, batch)
    predicted, scored = [], []

    def predict():
        with torch.no_grad():
            outputs = model(**batch).logits
        predicted.append(outputs)
        return outputs.numpy()

    def score(outputs: np.ndarray) -> float:
        scored.append(outputs)
        return [0.2, 0.7][len(scored) - 1]

    assert method.tap_scores == [] and method.chosen is None  # nothing scored before the first selection
    method.select(predict, score)
    assert len(predicted) == 1 and torch.allclose(predicted[0], torch.cat([expected[0], expected[1]], -1), atol=1e-10)
    assert [s.shape for s in scored] == [(4, 3), (4, 3)]
    assert np.allclose(scored[1], expected[1].numpy())
    assert method.tap_scores == [0.2, 0.7] and int(model.inca.selected) == 1
    assert torch.allclose(model(**batch).logits, expected[1], atol=1e-10)
    assert not method.side_by_side
    method.select(predict, lambda outputs: 0.5)  # a tie: the first tap
    assert int(model.inca.selected) == 0 and torch.allclose(model(**batch).logits, expected[0], atol=1e-10)
    state = method.trainable_state_dict()
    assert int(state["inca.selected"]) == 0
    fresh_model = tiny_bert().double()  # the same backbone, other adapter draws
    torch.manual_seed(5)
    fresh = Inca(fresh_model, IncaConfig(dim=12, heads=3), HEAD)
    assert not torch.allclose(fresh_model(**batch).logits, expected[0], atol=1e-3)
    fresh.load_trainable_state_dict(state)
    assert fresh.chosen == 0 and torch.allclose(fresh_model(**batch).logits, expected[0], atol=1e-10)


def test_the_ensemble_averages_every_tap_and_selects_nothing():
    original, model, method = trained_bert(selection="ensemble", taps=[1, 0])
    batch = padded_batch()
    expected = bert_tap_logits(original, model, method, batch)
    method.select(lambda: pytest.fail("the ensemble predicts nothing to select"), None)
    assert int(model.inca.selected) == -1
    assert torch.allclose(model(**batch).logits, (expected[0] + expected[1]) / 2, atol=1e-10)


def test_one_output_is_trained_by_the_summed_squared_error():
    original = tiny_bert(num_labels=1).double()
    model = tiny_bert(num_labels=1).double()
    method = Inca(model, IncaConfig(dim=8, heads=2, taps=[-1]), HEAD)
    batch, targets = tiny_batch(), torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    expected = bert_tap_logits(original, model, method, batch)[1]
    outputs = model(**batch, labels=targets)
    assert torch.allclose(outputs.loss, ((expected[:, 0] - targets) ** 2).mean(), atol=1e-10)


def test_regression_targets_keep_their_precision_under_bf16_autocast():
    """As the models' own regression heads (MSELoss on the float32 targets): the targets are not rounded to the
    bf16 logits' precision (3.8 is 3.796875 in bf16)."""
    model = tiny_bert(num_labels=1)
    Inca(model, IncaConfig(dim=8, heads=2, taps=[-1]), HEAD)
    batch, targets = tiny_batch(), torch.tensor([3.8, -1.1, 2.3, 0.7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**batch, labels=targets)
    assert outputs.logits.dtype == torch.bfloat16
    expected = ((outputs.logits[:, 0].float() - targets) ** 2).mean()
    rounded = ((outputs.logits[:, 0].float() - targets.bfloat16().float()) ** 2).mean()
    assert not torch.allclose(expected, rounded, rtol=0, atol=1e-4)
    assert torch.allclose(outputs.loss, expected, rtol=1e-6, atol=0)


def test_one_head_and_a_width_of_one_are_valid():
    assert IncaConfig(dim=1, heads=1).dim == 1
    original, model, method = trained_bert(dim=6, heads=1)
    batch = padded_batch()
    expected = bert_tap_logits(original, model, method, batch)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, (expected[0] + expected[1]) / 2, atol=1e-10)


def test_the_query_is_drawn_from_a_normal_of_standard_deviation_0_02():
    torch.manual_seed(0)
    query = CrossAttentionAdapter(width=4, dim=40_000, heads=1, classes=2).query.detach()
    assert query.shape == (1, 40_000)
    assert abs(query.mean().item()) < 1e-3 and abs(query.std().item() - 0.02) < 5e-4


def test_the_first_block_is_tapped_by_minus_the_block_count():
    model = tiny_bert()
    Inca(model, IncaConfig(taps=[-2], dim=8, heads=2), HEAD)
    assert model.inca.indices == [0]


def test_the_selection_buffer_is_made_on_the_models_device():
    model = tiny_bert().to("meta")
    Inca(model, IncaConfig(dim=8, heads=2), HEAD)
    assert model.inca.selected.device.type == "meta" and int(model.inca.selected.numel()) == 1
    assert all(p.device.type == "meta" for p in model.inca.parameters())


class TupleBlock(nn.Module):
    """A block that returns (hidden states, another tensor), as older transformers layers do."""

    def __init__(self, width_in: int, width_out: int):
        super().__init__()
        self.dense = nn.Linear(width_in, width_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tanh(self.dense(x))
        return y, y.transpose(1, 2)


class MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class ToyTextModel(nn.Module):
    """Three lists of blocks: the longest (`layers`) is neither the first registered nor the last by name; its
    blocks return tuples, and its last one pools the tokens to one vector (no width of its own, no attention_mask
    of its shape)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(100, 6)
        self.extra = nn.ModuleList([nn.Linear(6, 6)])
        self.layers = nn.ModuleList([TupleBlock(6, 8), TupleBlock(8, 8), MeanPool()])
        self.zz_side = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6)])
        self.classifier = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask, labels=None):
        x = self.embed(input_ids)
        x = self.layers[0](x)[0]
        x = self.layers[1](x)[0]
        return self.classifier(self.layers[2](x))


def test_the_longest_block_list_is_tapped_through_tuples_and_a_pooled_token():
    original = ToyTextModel().double()
    model = copy.deepcopy(original)
    torch.manual_seed(6)
    method = Inca(model, IncaConfig(dim=4, heads=2), HEAD)
    assert model.inca.indices == [0, 1, 2]
    assert method.param_counts()["adapter"] == 3 * per_tap(8, 4, 3)
    batch = padded_batch()
    mask = batch["attention_mask"]
    adapters = model.inca.adapters
    with torch.no_grad():
        first = original.layers[0](original.embed(batch["input_ids"]))[0]
        second = original.layers[1](first)[0]
        expected = (
            reference_logits(adapters["0"], first, mask, 2)
            + reference_logits(adapters["1"], second, mask, 2)
            + reference_logits(adapters["2"], second.mean(1)[:, None, :], None, 2)
        ) / 3
        assert torch.allclose(model(**batch).logits, expected, atol=1e-10)


@pytest.mark.parametrize(
    "norm", [nn.BatchNorm2d(3), nn.GroupNorm(1, 3), nn.InstanceNorm2d(3, affine=True)], ids=lambda n: type(n).__name__
)
def test_a_norm_states_the_width_of_the_first_block(norm):
    from harness.models.vision import ImageClassifier

    torch.manual_seed(2)
    backbone = nn.Sequential(norm, nn.Conv2d(3, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    original = ImageClassifier(backbone, 8, 3).double().eval()
    model = copy.deepcopy(original)
    method = Inca(model, IncaConfig(blocks="backbone", taps=[0], dim=4, heads=2), HEAD)
    assert method.param_counts()["adapter"] == per_tap(3, 4, 3)
    pixels = tiny_images(seed=9)["pixel_values"].double()
    with torch.no_grad():
        tokens = original.backbone[0](pixels).flatten(2).transpose(1, 2)  # 256 tokens of width 3
        expected = reference_logits(model.inca.adapters["0"], tokens, None, 2)
        assert torch.allclose(model(pixel_values=pixels).logits, expected, atol=1e-10)


def test_image_taps_read_the_feature_map_as_h_times_w_tokens():
    original, model, method = build("inca", model_fn=tiny_cnn, blocks="backbone", taps=[2, 6, -1], dim=8, heads=2)
    train_steps(method, lambda step: {"pixel_values": tiny_images(seed=step)["pixel_values"].double()}, 3)
    pixels = tiny_images(seed=9)["pixel_values"].double()
    with torch.no_grad():
        maps = {i: original.backbone[: i + 1](pixels) for i in (2, 6, 8)}
        expected = {}
        for i, value in maps.items():
            tokens = value.flatten(2).transpose(1, 2) if value.dim() == 4 else value[:, None, :]
            expected[i] = reference_logits(model.inca.adapters[str(i)], tokens, None, 2)
        assert maps[6].shape == (4, 12, 8, 8)  # 64 tokens of width 12
        assert torch.allclose(model(pixel_values=pixels).logits, sum(expected.values()) / 3, atol=1e-10)


def test_the_backbone_runs_under_no_grad_in_eval_mode_and_only_the_adapters_train():
    _, model, method = build("inca", dim=8, heads=2)
    grad_enabled = []
    model.bert.encoder.layer[1].register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    method.train_mode()
    assert not model.bert.training and model.inca.training
    model(**tiny_batch(), labels=LABELS).loss.backward()
    assert grad_enabled == [False]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if n.startswith("inca.")
    ]
    assert all(p.grad is not None for p in model.inca.parameters())
    assert method.learned_tensors() == {"inca.selected": model.inca.selected}


def per_tap(width: int, dim: int, classes: int) -> int:
    """2·D·D' + D' + (D' + 1)·C + LayerNorms 2·D + 2·D'."""
    return 2 * width * dim + dim + (dim + 1) * classes + 2 * width + 2 * dim


@pytest.mark.parametrize(
    "values, model_fn, expected",
    [
        ({}, tiny_bert, 2 * per_tap(32, 256, 3)),  # the YAML's dim 256, every layer of tiny BERT (hidden 32)
        ({"taps": [-1], "dim": 8, "heads": 2}, tiny_bert, per_tap(32, 8, 3)),
        (
            {"blocks": "backbone", "taps": [2, 5, 6], "dim": 16, "heads": 2},
            tiny_cnn,
            2 * per_tap(8, 16, 3) + per_tap(12, 16, 3),
        ),
    ],
)
def test_adapter_count_is_the_closed_form_per_tap(values, model_fn, expected):
    _, model, method = build("inca", model_fn=model_fn, **values)
    counts = method.param_counts()
    assert counts["adapter"] == expected and counts["trainable"] == expected and counts["head"] == 0


def test_minilm_shape_count_all_six_layers():
    """all-MiniLM-L6-v2's shape (6 layers, hidden 384), two classes, the YAML's dim 256: 6 × 198,658."""
    config = BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_labels=2
    )
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
        method = Inca(model, IncaConfig(), HEAD)
    assert per_tap(384, 256, 2) == 198_658
    assert method.param_counts()["adapter"] == 6 * 198_658


def test_efficientnet_blocks_are_found_and_their_widths_read():
    """EfficientNet-Lite0's 16 `_blocks` are the longest ModuleList; each block's width is its last BatchNorm's."""
    from efficientnet_lite_pytorch import EfficientNet

    from harness.models.vision import ImageClassifier

    net = EfficientNet.from_name("efficientnet-lite0")
    widths = [block._bn2.num_features for block in net._blocks]
    net._fc = torch.nn.Identity()
    model = ImageClassifier(net, 1280, 5)
    method = Inca(model, IncaConfig(taps=[0, -1], dim=16, heads=2), HEAD)
    assert len(net._blocks) == 16 and model.inca.indices == [0, 15]
    assert method.param_counts()["adapter"] == per_tap(widths[0], 16, 5) + per_tap(widths[-1], 16, 5)
    logits = model(pixel_values=torch.randn(2, 3, 64, 64)).logits
    assert logits.shape == (2, 5)


def test_no_task_head_builds_nothing():
    model = tiny_bert()
    method = Inca(model, IncaConfig(), [])
    assert not hasattr(model, "inca") and not any(p.requires_grad for p in model.parameters())
    assert method.learned_tensors() == {}


def test_a_run_selects_a_tap_at_each_evaluation(tmp_path, monkeypatch):
    chosen = []
    select = Inca.select

    def spy(self, predict, score):
        select(self, predict, score)
        chosen.append((self.chosen, list(self.tap_scores)))

    monkeypatch.setattr(Inca, "select", spy)
    overrides = [f"results_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *TINY, "train.max_steps=2"]
    with project_config():
        cfg = compose("config", overrides=[*overrides, "method=inca", "method.dim=8", "method.heads=2"])
    record = execute_run(cfg)
    assert record["status"] == "success", record.get("error")
    assert len(chosen) == 1 and chosen[0][0] in (0, 1) and len(chosen[0][1]) == 2
    assert max(chosen[0][1]) == pytest.approx(record["metrics"]["best"]["validation"][record["metrics"]["primary"]])
    stored, _ = RecordStore(tmp_path).load_all()
    assert [r["status"] for r in stored] == ["success"]


CONFIG_ERRORS = [
    ({"taps": []}, "method.taps must be 'all' or a non-empty list of block indices, got []"),
    ({"taps": "last"}, "method.taps must be 'all' or a non-empty list of block indices, got 'last'"),
    ({"taps": [1, True]}, "method.taps must be 'all' or a non-empty list of block indices, got [1, True]"),
    ({"dim": 0}, "method.dim must be a positive width, got 0"),
    ({"heads": 0}, "method.heads must be a positive divisor of method.dim=256, got 0"),
    ({"heads": 3}, "method.heads must be a positive divisor of method.dim=256, got 3"),
    ({"selection": "mean"}, "method.selection must be 'best' or 'ensemble', got 'mean'"),
]


@pytest.mark.parametrize("values, expected", CONFIG_ERRORS)
def test_config_errors(values, expected):
    assert message(values, IncaConfig) == expected


def apply_error(model, **values) -> str:
    with pytest.raises(HarnessError) as error:
        Inca(model, IncaConfig(**values), HEAD)
    return str(error.value)


def test_apply_errors():
    assert apply_error(tiny_bert(), taps=[2]) == (
        "inca: method.taps=[2] is out of range for the 2 blocks of 'bert.encoder.layer'; allowed: -2 to 1"
    )
    assert apply_error(tiny_bert(), taps=[-3]).startswith("inca: method.taps=[-3] is out of range")
    assert apply_error(tiny_bert(), taps=[1, -1]) == (
        "inca: method.taps=[1, -1] names a block twice among the 2 blocks of 'bert.encoder.layer'"
    )
    assert apply_error(tiny_bert(), blocks="bert.nothing") == (
        "inca: method.blocks='bert.nothing' is not a module of the model; top-level modules: ['bert', 'dropout', "
        "'classifier']"
    )
    assert apply_error(tiny_bert(), blocks="bert.pooler") == (
        "inca: method.blocks='bert.pooler' is a BertPooler, not a list of blocks (a non-empty nn.ModuleList or "
        "nn.Sequential)"
    )
    assert apply_error(tiny_cnn()) == (
        "inca: the model has no nn.ModuleList of blocks to tap; set method.blocks to the module whose children to tap"
    )
    model = tiny_cnn()
    model.backbone.insert(0, torch.nn.ReLU())
    assert apply_error(model, blocks="backbone", taps=[0, 1]) == (
        "inca: block 0 of 'backbone' has no layer in or before it that states its width (a norm, Linear or "
        "convolution); tap a later block"
    )


def test_the_class_declares_its_own_heads_and_no_merge():
    capabilities = METHODS["inca"].capabilities
    assert capabilities.replaces_head and not capabilities.mergeable and not capabilities.identity_at_init
    assert capabilities.layer_kinds == () and not capabilities.generative_ok


def test_weights_are_decayed_but_not_the_head_bias_or_the_layer_norms():
    _, _, method = build("inca", dim=8, heads=2)
    decay = {
        name: group["weight_decay"]
        for group in method.param_groups(settings(weight_decay=0.25))
        for param in group["params"]
        for name, candidate in method.model.named_parameters()
        if candidate is param
    }
    decayed = {"query", "key.weight", "value.weight", "head.weight"}
    assert len(decay) == 2 * 9 and {n.split(".", 3)[3] for n in decay} == decayed | {
        "head.bias",
        "norm_in.weight",
        "norm_in.bias",
        "norm_out.weight",
        "norm_out.bias",
    }
    for name, value in decay.items():
        assert value == (0.25 if name.split(".", 3)[3] in decayed else 0.0), name
