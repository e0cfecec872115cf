"""What the benchmark times: PEFT's AdaLoRA is built from our AdaLoRA's default config with the initial rank
and budget schedule a run of ours takes from it (nothing re-derived), and `--methods all` names our text
methods and the PEFT bridge's configs."""

import math

from harness.bench.contenders import PeftMethod, available_methods, contender_method, head_of, method_config, text_model
from harness.config.compose import project_config
from harness.config.preflight import group_options


def test_peft_adalora_gets_the_rank_and_schedule_our_adalora_runs_with():
    total = 50
    with project_config():
        ours = contender_method(text_model("tiny_bert"), "adalora", total, "tiny_bert")
        ours.start(total)
        cfg = method_config("adalora", "tiny_bert")
        peft = PeftMethod(text_model("tiny_bert"), cfg, total, head_of("tiny_bert")).peft_model.peft_config["default"]
    # the defaults (conf/method/adalora.yaml, methods/adalora.py): target rank 2 → initial rank ⌈1.5·2⌉ = 3;
    # t_init 0.12 and t_final 0.5 of the total steps
    expected = (math.ceil(1.5 * 2), int(0.12 * total), int(0.5 * total))
    assert (ours.cfg.r, ours.schedule.t_init, ours.schedule.t_final) == expected
    assert (peft.init_r, peft.tinit, peft.tfinal, peft.total_step) == (*expected, total)
    assert (peft.target_r, peft.deltaT, peft.beta1, peft.beta2, peft.orth_reg_weight) == (
        cfg.target_r,
        cfg.delta_t,
        cfg.beta1,
        cfg.beta2,
        cfg.orth_reg,
    )


def test_all_means_our_text_methods_then_the_peft_bridges_configs():
    with project_config():
        options = group_options()["method"]
        assert available_methods() == [
            "adalora",
            "aurora",
            "dora",
            "dora_dynamic",
            "full",
            "hadamard",
            "head",
            "inca",
            "lora",
            "lora2",
            "lora_ga",
            "lora_xs",
            "lorta",
            "meft",
            "melora",
            "rac_lora",
            "surm",
            *(m for m in options if m.startswith("peft/")),
        ]
