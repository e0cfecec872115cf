"""A run with an optimizer: the record names it, tables label it, LoRA-FA's held A is not counted as trained."""

from harness.engine.run import execute_run
from harness.store.records import record_label


def test_a_run_records_its_optimizer_and_lorafa_counts_b_only(make_config):
    plain = execute_run(make_config())
    lorafa = execute_run(make_config("optimizer=lorafa"))
    assert plain["status"] == lorafa["status"] == "success", lorafa.get("error")
    assert plain["optimizer"] == "adamw" and record_label(plain) == "lora"
    assert lorafa["optimizer"] == "lorafa" and record_label(lorafa) == "lora+lorafa"
    # LoRA on q and v (square 32×32 in tiny_bert): A and B the same size, A held fixed
    assert lorafa["params"]["adapter"] * 2 == plain["params"]["adapter"] == 2 * 2 * 2 * 8 * 32
    assert lorafa["params"]["head"] == plain["params"]["head"]
    assert lorafa["run_key"] != plain["run_key"]


def test_a_record_from_before_the_optimizer_axis_is_labelled_as_adamw():
    record = {"method": "lora", "variant": None}
    assert record_label(record) == "lora" == record_label(record | {"optimizer": "adamw"})
    assert record_label({"method": "lora", "variant": "r8", "optimizer": "loraplus"}) == "lora[r8]+loraplus"
