"""The benchmark runs every contender through the loop's step and writes its table (timings are
reported, never asserted)."""

import pytest

from harness.bench.driver import main

TINY = ["--model", "tiny_bert", "--steps", "1", "--batch", "2", "--length", "8"]


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """The printed Markdown table: method -> column -> cell."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    header, *body = lines
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def test_bench_compares_methods_limit_full_and_peft_on_equal_trainable_counts(tmp_path, capsys):
    main(
        [*TINY, "--methods", "full,lora,dora,adalora,lora_xs", "--warmup", "3", "--rounds", "1", "--out", str(tmp_path)]
    )
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert set(rows) == {
        "limit",
        "full",
        "lora",
        "dora",
        "adalora",
        "lora_xs",
        "peft_lora",
        "peft_dora",
        "peft_adalora",
    }
    for method in ("lora", "dora", "adalora"):  # PEFT built from the same config trains as many parameters
        ours, peft = rows[method], rows[f"peft_{method}"]
        assert ours["trainable params"] == peft["trainable params"] and ours["ours / PEFT"] != "—"
        assert float(ours["activations MB"]) > 0
    assert rows["limit"]["× limit"] == "1.000" and rows["full"]["× full"] == "1.000"
    assert (
        rows["limit"]["trainable params"] == f"{32 * 5 + 5:,}"
    )  # the limit trains tiny_bert's head only: 32 -> 5 labels
    assert "peak RSS MB" not in rows["lora"]  # one shared process: no per-method RSS
    (written,) = tmp_path.glob("cpu-tiny_bert-b2x8.md")
    assert written.read_text() + "\n" == text


def test_bench_on_a_decoder_resolves_its_roles_and_head(tmp_path, capsys):
    """A GQA Llama: the methods' targets come from its role map (q_proj, v_proj; v narrower), its head is
    `score`, and PEFT's LoRA and the bridge's configs train as many parameters as ours."""
    main(
        [
            "--model",
            "tiny_llama",
            "--steps",
            "1",
            "--batch",
            "2",
            "--length",
            "8",
            "--methods",
            "lora,peft/lora",
            "--warmup",
            "3",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    rows = table_rows(capsys.readouterr().out)
    lora = 2 * 8 * ((32 + 32) + (32 + 16))  # 2 layers × r·(d_in + d_out) for q (32→32) and v (32→16)
    head = 32 * 5  # score: 32 → 5 labels, no bias
    assert rows["limit"]["trainable params"] == f"{head:,}"
    assert (
        rows["lora"]["trainable params"]
        == rows["peft/lora"]["trainable params"]
        == rows["peft_lora"]["trainable params"]
        == f"{lora + head:,}"
    )


SURM_REFUSES_TINY_LLAMA = (
    "- `surm`: surm: structure=circulant needs a square layer, but 'model.layers.0.self_attn.v_proj' is 16×32; "
    "target square layers or use structure=kronecker"
)


def test_a_method_that_refuses_the_model_is_listed_under_the_table_and_the_others_are_measured(tmp_path, capsys):
    """SURM's circulant default targets q and v; on the GQA Llama v is 32 → 16, so SURM refuses it (in a process of
    its own: the isolated test below)."""
    main(
        [
            "--model",
            "tiny_llama",
            "--steps",
            "1",
            "--batch",
            "2",
            "--length",
            "8",
            "--methods",
            "surm,lora",
            "--no-peft",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    text = capsys.readouterr().out
    assert set(table_rows(text)) == {"limit", "lora"}
    assert SURM_REFUSES_TINY_LLAMA in text.splitlines()


@pytest.mark.slow
def test_isolated_bench_runs_each_method_in_its_own_process_and_reports_its_peak_rss(tmp_path, capsys):
    """Each contender in a process of its own, and a refusal in one (SURM on the GQA Llama) sent back to the table."""
    tiny_llama = ["--model", "tiny_llama", *TINY[2:]]
    main(
        [
            *tiny_llama,
            "--methods",
            "lora,surm",
            "--no-peft",
            "--warmup",
            "1",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
            "--isolate",
        ]
    )
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert set(rows) == {"limit", "lora"}
    lora = int(rows["lora"]["trainable params"].replace(",", ""))
    assert rows["lora"]["optimizer state MB"] == f"{2 * 4 * lora / 2**20:.2f}"  # AdamW's two fp32 moments
    for row in rows.values():  # a whole process's peak: Python, torch and the model, well over 100 MB
        assert float(row["peak RSS MB"].replace(",", "")) > 100
    assert SURM_REFUSES_TINY_LLAMA in text.splitlines()


def test_bench_times_lora_under_each_optimizer_with_its_state_and_refuses_one_that_does_not_apply(tmp_path, capsys):
    main([*TINY, "--methods", "lora,lora+lorafa,lora+sgd,surm+lorafa", "--no-peft", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert set(rows) == {"limit", "lora", "lora+lorafa", "lora+sgd"}
    head = 32 * 5 + 5
    adapter = 2 * 2 * 2 * 8 * 32  # A and B of q and v (32×32, r 8) in 2 layers
    assert rows["lora"]["trainable params"] == f"{adapter + head:,}"
    assert rows["lora+lorafa"]["trainable params"] == f"{adapter // 2 + head:,}"  # A held fixed
    four_bytes = 4 / 2**20
    assert float(rows["lora"]["optimizer state MB"]) == pytest.approx(2 * (adapter + head) * four_bytes, abs=0.006)
    assert float(rows["lora+lorafa"]["optimizer state MB"]) == pytest.approx(
        2 * (adapter // 2 + head) * four_bytes, abs=0.006
    )
    assert rows["lora+sgd"]["optimizer state MB"] == "0.00"
    assert "- `surm+lorafa`: optimizer 'lorafa' applies to the methods with LoRA's factor pairs" in text


def test_bench_with_gradient_checkpointing_keeps_fewer_activations_and_refuses_meft(tmp_path, capsys):
    main([*TINY, "--methods", "lora", "--no-peft", "--out", str(tmp_path)])
    plain = table_rows(capsys.readouterr().out)
    main([*TINY, "--methods", "lora,meft", "--no-peft", "--gradient-checkpointing", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    checkpointed = table_rows(text)
    assert text.startswith("# Training-step benchmark: tiny_bert, batch 2 × 8 tokens, fp32, gradient checkpointing")
    assert set(checkpointed) == {"limit", "lora"}
    for label in ("limit", "lora"):
        assert float(checkpointed[label]["activations MB"]) < float(plain[label]["activations MB"])
    assert "- `meft`: train.gradient_checkpointing=true: method 'meft' rebuilds the encoder's" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-tiny_bert-b2x8-checkpointed.md", "cpu-tiny_bert-b2x8.md"]


def test_bench_on_a_quantized_base_reports_its_frozen_bytes_and_refuses_full_fine_tuning(tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    main([*TINY, "--methods", "lora,full", "--out", str(tmp_path)])
    plain = table_rows(capsys.readouterr().out)
    main([*TINY, "--methods", "lora,full", "--quantize", "nf4", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    quantized = table_rows(text)
    assert text.startswith("# Training-step benchmark: tiny_bert, batch 2 × 8 tokens, fp32, fp32 base with nf4 linear")
    assert set(quantized) == {"limit", "lora", "peft_lora"}  # PEFT's LoRA on the same bitsandbytes layers
    for label in quantized:
        assert float(quantized[label]["frozen weights MB"]) < float(plain[label]["frozen weights MB"])
        assert quantized[label]["trainable params"] == plain[label]["trainable params"]
    assert "- `full`: model.quantize=nf4: method 'full' trains the backbone's weights" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-tiny_bert-b2x8-nf4.md", "cpu-tiny_bert-b2x8.md"]


@pytest.mark.slow
def test_bench_with_compile_times_each_contender_eager_and_compiled_side_by_side(tmp_path, capsys):
    main([*TINY, "--methods", "lora", "--compile", "aot_eager", "--out", str(tmp_path)])  # inductor: minutes here
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert text.startswith("# Training-step benchmark: tiny_bert, batch 2 × 8 tokens, fp32, eager and compiled (aot_")
    assert set(rows) == {"limit", "lora", "peft_lora", "limit@compiled", "lora@compiled"}
    for label in ("limit", "lora"):  # the same contender: as many trained parameters, a ratio to its eager self
        compiled = rows[f"{label}@compiled"]
        assert compiled["trainable params"] == rows[label]["trainable params"]
        ratio = float(compiled["s/step"]) / float(rows[label]["s/step"])  # of s/step rounded to 4 decimals
        assert float(compiled["compiled / eager"]) == pytest.approx(ratio, rel=0.02)
        assert rows[label]["compiled / eager"] == "—"
    ratio = float(rows["lora@compiled"]["s/step"]) / float(rows["peft_lora"]["s/step"])
    assert float(rows["lora@compiled"]["ours / PEFT"]) == pytest.approx(ratio, rel=0.02)  # PEFT's eager build
    assert [p.name for p in tmp_path.iterdir()] == ["cpu-tiny_bert-b2x8-compiled.md"]
