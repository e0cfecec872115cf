"""The cells of a protocol: each search point's values on the axis the method searches, and every run of
every official suite setting each key once, so that its runs group into Hydra multiruns."""

import pytest

from harness.config.compose import project_config
from harness.protocol.cells import Cell, Composer, plan_cells
from harness.protocol.launch import multirun_groups
from harness.protocol.spec import Suite, parse_protocol


def test_search_points_scale_the_axis_the_method_searches():
    suite = Suite("tiny_bert", ["bbc_news"], ["lora"])
    lora, head, full = (
        Cell(suite, m, "bbc_news", lr, head_lr, axis)
        for m, lr, head_lr, axis in [
            ("lora", 1e-3, 5e-3, "lr"),
            ("head", 1e-3, 5e-3, "head_lr"),
            ("full", 5e-5, 5e-5, "tied"),
        ]
    )
    assert [lora.values(j, 3.0) for j in (-1, 0, 0.5, 2)] == [
        (3.33e-4, 5e-3),
        (1e-3, 5e-3),
        (1.73e-3, 5e-3),
        (9e-3, 5e-3),
    ]
    assert head.values(-1, 3.0) == (1e-3, 1.67e-3) and full.values(1, 3.0) == (1.5e-4, 1.5e-4)


@pytest.mark.parametrize("sweep, cells", [("official", 50), ("official_peft", 28), ("official_decoder", 22)])
def test_the_official_plans_set_each_key_once_per_run_and_group_into_multiruns(sweep, cells):
    """Pinned centres and a suite's own lr overrides (EfficientNet's full fine-tuning) never both reach a run:
    a key given twice would make the multirun grouping fail. Every run of every official suite composes."""
    with project_config():
        composer = Composer([f"sweep={sweep}"])
        protocol = parse_protocol(composer([]))
        planned = plan_cells(protocol, composer)
        runs = [
            list(run)
            for run in dict.fromkeys(
                tuple(cell.run(protocol, j, seed, stage))
                for cell in planned
                for j in (-1, 0, 1)
                for seed in (0, 1)
                for stage in ("search", "seeds")
            )
        ]
        assert len(runs) == 6 * sum(
            2 if cell.seeds_stage else 1 for cell in planned
        )  # a stage without overrides: the search's runs
        composed = [composer(run) for run in runs[::60]]  # a run of every fifth cell: composing is the slow part
    assert len(planned) == cells and all(cfg.sweep == sweep for cfg in composed)
    for run in runs:
        keys = [override.split("=", 1)[0] for override in run]
        assert len(keys) == len(set(keys)), run
    covered = [r for _, group in multirun_groups(runs) for r in group]
    assert sorted(map(tuple, covered)) == sorted(map(tuple, runs))
