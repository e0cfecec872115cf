"""Frozen-weight memory per backbone parameter for each storage of the base (model.dtype, model.quantize), on the
models given (default: MiniLM and SmolLM2-135M): `python scripts/frozen_weights.py [model ...]` prints the table
and writes results/bench/frozen-weights.md. The bytes are harness.models.storage.frozen_bytes, as runs record them
(`cost.frozen_weight_mb`)."""

import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose

from harness.config.compose import project_config
from harness.config.sections import parse_settings
from harness.models import load_model
from harness.models.storage import BaseStorage, frozen_bytes, store_frozen_base
from methods.base import is_under
from methods.frozen import parameter_count

STORAGES = [
    ("fp32", None, "fp32"),
    ("bf16", None, "bf16"),
    ("fp32", "nf4", "NF4 linear layers, the rest fp32"),
    ("bf16", "nf4", "NF4 linear layers, the rest bf16"),
    ("fp32", "int8", "int8 linear layers, the rest fp32"),
]


def bytes_per_parameter(model_name: str) -> tuple[int, list[float]]:
    """The backbone's parameter count and its frozen bytes per parameter under each storage."""
    with project_config():
        run = parse_settings(compose("config", overrides=[f"model={model_name}", "method=head"]))
    heads, per_parameter = run.model.head_modules, []
    for dtype, quantize, _ in STORAGES:
        model = load_model(run.model, 3)
        store_frozen_base(model, BaseStorage(dtype, quantize, torch.bfloat16 if dtype == "bf16" else None), heads, "")
        backbone = [(name, param) for name, param in model.named_parameters() if not is_under(name, heads)]
        for name, param in model.named_parameters():
            param.requires_grad_(is_under(name, heads))
        count = sum(parameter_count(param) for _, param in backbone)
        per_parameter.append(frozen_bytes(model) / count)
    return count, per_parameter


def main(models: list[str]) -> None:
    measured = {name: bytes_per_parameter(name) for name in models}
    columns = {f"{name} ({count / 1e6:.1f} M)": values for name, (count, values) in measured.items()}
    frame = pd.DataFrame({"base": [label for *_, label in STORAGES], **columns})
    text = "\n".join(
        [
            "# Frozen-weight memory: bytes per backbone parameter",
            "",
            f"Command: `python scripts/frozen_weights.py {' '.join(models)}`. Every frozen tensor of the backbone (the "
            "task head excluded), quantized weights with their scales and code tables (harness/models/storage.py).",
            "",
            frame.to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    )
    print(text)
    Path("results/bench/frozen-weights.md").write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:] or ["minilm", "smollm2_135m"])
