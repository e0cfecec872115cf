"""`python -m harness.bench`: every method's training cost, side by side in one process and one run.

For each registered method (its default config, conf/method/<name>.yaml) on one model and batch
shape it measures, through the training loop's own step (`harness.engine.train.StepRunner`: forward, task
+ extra loss, backward, clip, AdamW step, the method's step hook, zero_grad):
- seconds per step: the median over `--steps` timed steps after `--warmup` untimed ones;
- the activation memory autograd saves for backward and the optimizer state's size; with `--isolate`
  (each method in a process of its own) its peak memory (CPU: peak RSS; CUDA: max allocated);
- two references measured in the same run: full fine-tuning, and the frozen-backbone limit (no adapter:
  the trained head plus the backward pass through the whole frozen network down to its input
  embeddings, which is the least any adapter inside the network costs); ratios method/limit and
  method/full;
- for LoRA, DoRA and AdaLoRA, Hugging Face PEFT's implementation with the same settings on the same
  model and batch (ratio ours/PEFT);
- PEFT's other tuners through the bridge (`peft/<tuner>`, conf/method/peft/), each with its config's defaults;
- with `--compile`, the limit and each method again with its forward compiled (`<method>@compiled`: train.compile),
  their ratio to the same method eager and to PEFT's eager build.
Methods are timed in rounds (every method once per round, in a shuffled order, `--rounds` rounds) so
that slow drifts of the machine hit all of them alike. The table is printed and written to results/bench/<device>.md.
`--overhead` also times the default run (`python -m harness`) and reports the share of its wall time
spent outside training steps and evaluation, with a cold and a warm tokenization cache (medians of
repeated runs; harness/bench/overhead.py).
What is timed is in harness/bench/contenders.py; how one contender is stepped and measured in
harness/bench/timing.py (in a process of its own: harness/bench/isolation.py).
"""

import argparse
import copy
import os
import platform
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from harness.bench.contenders import available_methods, contender_labels, random_batch, text_model, uncompiled
from harness.bench.isolation import IsolatedContender, Refused
from harness.bench.overhead import overhead
from harness.bench.timing import build_contender
from harness.config.compose import project_config
from harness.config.sections import ModelConfig
from harness.engine.compiled import BACKEND
from harness.engine.device import autocast_dtype, device_name, pick_device
from harness.errors import HarnessError
from harness.models.storage import resolve_storage
from methods.capabilities import Capabilities

PEAK_NOTES = {
    None: "(Peak RSS is not reported here: all contenders share one process; `--isolate` reports it.)",
    "peak memory MB": "Peak memory: max allocated on the GPU during the method's steps (own process: everything it "
    "holds; shared process: above the memory in use before them).",
    "peak RSS MB": "Peak RSS: the method's own process at its highest during its steps (Python, torch, the model, "
    "gradients, optimizer state and the step's working memory).",
}


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    device = pick_device(args.device)
    section = ModelConfig(name=args.model, dtype=args.dtype, quantize=args.quantize)
    storage = resolve_storage(
        section, args.precision, autocast_dtype(args.precision, device), device, "limit", Capabilities()
    )  # an adapter's: the table's (a method that trains the backbone keeps fp32, or is refused)
    with project_config():
        methods = available_methods() if args.methods == "all" else args.methods.split(",")
        labels = contender_labels(methods, not args.no_peft, args.compile is not None)
        contenders, refused = build_contenders(args, labels, device)
        time_in_rounds(contenders, args)
    peak = (
        ("peak RSS MB" if device.type == "cpu" else "peak memory MB")
        if args.isolate
        else ("peak memory MB" if device.type == "cuda" else None)
    )
    measured = []
    if args.overhead:
        with tempfile.TemporaryDirectory() as scratch:
            measured = overhead(Path(scratch))
    text = report(args, argv, device, storage, table(contenders, peak), peak, refused, measured)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", (device_name(device) if device.type == "cuda" else "cpu").lower()).strip("-")
    suffix = "".join(
        [f"-{storage.dtype}"] * (storage.dtype != "fp32")
        + [f"-{args.quantize}"] * (args.quantize is not None)
        + ["-checkpointed"] * args.gradient_checkpointing
        + ["-compiled"] * (args.compile is not None)
    )
    (out / f"{slug}-{args.model}-b{args.batch}x{args.length}{suffix}.md").write_text(text)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        default="minilm",
        help="a text or decoder model config (minilm, smollm2_135m, ...) or roberta_base_random",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--methods",
        default="all",
        help="comma-separated (e.g. lora,peft/vera), or all (the text methods and the PEFT bridge's configs)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    parser.add_argument(
        "--dtype", default="auto", help="the frozen base's storage (model.dtype): auto | fp32 | bf16 | fp16"
    )
    parser.add_argument("--quantize", default=None, help="the base's linear layers (model.quantize): nf4 | int8")
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="each method in a process of its own (spawned), still interleaved by round: "
        "per-method peak memory (RSS on CPU), no memory shared or left over between methods",
    )
    parser.add_argument(
        "--overhead", action="store_true", help="also time a default run's overhead (~5 min on 2 cores)"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="every contender's blocks recomputed in the backward (train.gradient_checkpointing)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const=BACKEND,
        default=None,
        metavar="BACKEND",
        help="also time the limit and each method with its forward compiled (train.compile; `<method>@compiled` "
        "rows, their ratio to the same method eager and to PEFT's eager build); BACKEND: torch.compile's (inductor)",
    )
    parser.add_argument("--out", default="results/bench")
    return parser.parse_args(argv)


def build_contenders(args: argparse.Namespace, labels: list[str], device) -> tuple[list, list[str]]:
    """The contenders, built one after the other (only one model being built at a time), each on its own copy
    of the model; and one line per method that refuses the model."""
    total = args.warmup + args.rounds * args.steps
    settings = {
        "model": args.model,
        "batch": args.batch,
        "length": args.length,
        "device": args.device,
        "precision": args.precision,
        "total": total,
        "threads": torch.get_num_threads(),
        "checkpointed": args.gradient_checkpointing,
        "backend": args.compile,
        "base": (args.dtype, args.quantize),
    }
    if not args.isolate:
        base = text_model(args.model)
        batch = random_batch(base.config.vocab_size, args.batch, args.length)
    contenders, refused = [], []
    for label in labels:
        try:
            contenders.append(
                IsolatedContender(label, settings)
                if args.isolate
                else build_contender(
                    copy.deepcopy(base),
                    label,
                    batch,
                    device,
                    args.precision,
                    total,
                    model_name=args.model,
                    checkpointed=args.gradient_checkpointing,
                    backend=args.compile,
                    base=(args.dtype, args.quantize),
                )
            )
        except (Refused, HarnessError) as error:  # the method does not apply to this model: said under the table
            refused.append(f"- `{label}`: {error}")
    return contenders, refused


def time_in_rounds(contenders: list, args: argparse.Namespace) -> None:
    """Warm-up steps, then every method once per round in a fresh order (none always goes first), then the
    activation and optimizer-state sizes."""
    for contender in contenders:
        contender.run(args.warmup, timed=False)
    order = random.Random(0)
    for _ in range(args.rounds):
        for contender in order.sample(contenders, len(contenders)):
            contender.run(args.steps, timed=True)
    for contender in contenders:
        contender.finish()


def table(contenders: list, peak: str | None) -> list[dict]:
    """One row per contender; `peak` names the peak-memory column (None: left out)."""
    by_label = {c.label: c for c in contenders}
    median = {c.label: statistics.median(c.seconds) for c in contenders}
    any_compiled = any(uncompiled(label)[1] for label in median)
    rows = []
    for c in contenders:
        eager, compiled = uncompiled(c.label)
        peft = f"peft_{eager}"  # a compiled method against PEFT's eager build
        rows.append(
            {
                "method": c.label,
                "trainable params": f"{c.trainable:,}",
                "s/step": f"{median[c.label]:.4f}",
                "× limit": f"{median[c.label] / median['limit']:.3f}",
                "× full": f"{median[c.label] / median['full']:.3f}" if "full" in median else "—",
                "ours / PEFT": f"{median[c.label] / median[peft]:.3f}" if peft in by_label else "—",
                **(
                    {"compiled / eager": f"{median[c.label] / median[eager]:.3f}" if compiled else "—"}
                    if any_compiled
                    else {}
                ),
                "activations MB": f"{c.activations_mb:,.1f}",
                "frozen weights MB": f"{c.frozen_mb:,.1f}",
                **({peak: f"{c.peak_mb:,.0f}"} if peak else {}),
                "optimizer state MB": f"{c.optimizer_mb:.2f}",
            }
        )
    return rows


def machine(device: torch.device) -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return f"{device_name(device)}; {text}" if device.type == "cuda" else text


def report(
    args, argv, device, storage, rows: list[dict], peak: str | None, refused: list[str], overhead_lines: list[str]
) -> str:
    """The Markdown page: what was measured and how, the table, the methods that refused the model, and the
    harness's overhead where measured."""
    precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[storage.autocast]
    if storage.dtype != "fp32" or storage.quantize:
        precision += f", {storage.dtype} base" + (f" with {storage.quantize} linear layers" if storage.quantize else "")
    command = " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Training-step benchmark: {args.model}, batch {args.batch} × {args.length} tokens, {precision}"
        + (", gradient checkpointing" if args.gradient_checkpointing else "")
        + (f", eager and compiled ({args.compile})" if args.compile else ""),
        "",
        f"Machine: {machine(device)}. Command: `python -m harness.bench {command}`.",
        f"Median of {args.rounds} rounds × {args.steps} timed steps per method (after {args.warmup} warm-up steps), "
        + ("each method in a process of its own" if args.isolate else "all methods in one process")
        + ", interleaved by round (shuffled order per round). `limit` = frozen backbone (no adapter; head trained; "
        "backward through every layer to the input embeddings). Activations: the tensors autograd saves for "
        "the backward of one training forward (each storage once). Frozen weights: the bytes of every frozen tensor "
        "(quantized ones with their scales). Optimizer state: the optimizer's tensors "
        "(AdamW's two moments, or those of the optimizer after a `+`: `lora+lorafa`). " + PEAK_NOTES[peak],
        "",
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
        "",
    ]
    if refused:
        lines += [
            "Not measured: the method refuses this model with its default config (its one-line error).",
            "",
            *refused,
            "",
        ]
    if overhead_lines:
        lines += ["## Harness overhead", "", *overhead_lines, ""]
    return "\n".join(lines)
