"""The benchmark runs every contender through the loop's step and writes its table (timings are
reported, never asserted)."""
from harness.bench import main


def test_bench_compares_methods_limit_full_and_peft_on_equal_trainable_counts(tmp_path, capsys):
    main(["--model", "tiny_bert", "--methods", "full,lora,dora,adalora,lora_xs", "--steps", "1", "--warmup", "3",
          "--rounds", "1", "--batch", "2", "--length", "8", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| "))}
    assert set(rows) == {"method", "limit", "full", "lora", "dora", "adalora", "lora_xs", "peft_lora", "peft_dora", "peft_adalora"}
    for method in ("lora", "dora", "adalora"):  # PEFT built from the same config trains as many parameters
        assert rows[method][0] == rows[f"peft_{method}"][0] and rows[method][5] != "—" and float(rows[method][6]) > 0
    assert rows["limit"][2] == "1.000" and rows["full"][3] == "1.000"
    assert rows["limit"][0] == f"{32 * 5 + 5:,}"  # the limit trains tiny_bert's head only: 32 -> 5 labels
    (written,) = tmp_path.glob("cpu-tiny_bert-b2x8.md")
    assert written.read_text() + "\n" == text
