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
- PEFT's other tuners through the bridge (`peft/<tuner>`, conf/method/peft/), each with its config's defaults.
Methods are timed in rounds (every method once per round, in a shuffled order, `--rounds` rounds) so
that slow drifts of the machine hit all of them alike. The table is printed and written to results/bench/<device>.md.
`--overhead` also times the default run (`python -m harness`) and reports the share of its wall time
spent outside training steps and evaluation, with a cold and a warm tokenization cache (medians of
repeated runs; `overhead`).
"""

import argparse
import copy
import ctypes
import gc
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose
from torch import nn

from harness.config.compose import project_config
from harness.config.preflight import group_options
from harness.config.sections import TrainConfig
from harness.engine.device import autocast_dtype, device_name, pick_device
from harness.engine.memory import current_mb, read_peak, reset_peak
from harness.engine.schedule import build_optimizer
from harness.engine.train import StepRunner
from harness.errors import HarnessError, one_line
from methods import build_method
from methods.base import Method, MethodConfig

PEFT_METHODS = ("lora", "dora", "adalora")


class FrozenBackbone(Method):
    """The frozen-backbone limit: no adapter, the head trained, and gradients flowing back through
    every layer to the input embeddings (what any adapter inside the network needs at least)."""

    name = "limit"

    def apply(self) -> None:
        self.model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: output.requires_grad_(True)
        )


def text_model(name: str) -> nn.Module:
    """`minilm`: the packaged MiniLM (real weights); `roberta_base_random`: RoBERTa-base's shape
    (12 layers, hidden 768, FFN 3072, 12 heads) with random weights, no download."""
    if name == "roberta_base_random":
        from transformers import RobertaConfig, RobertaForSequenceClassification

        torch.manual_seed(0)
        config = RobertaConfig(
            vocab_size=50265,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            num_labels=5,
        )
        return RobertaForSequenceClassification(config)
    from harness.config.sections import ModelConfig, parse_section
    from harness.models import load_model

    return load_model(parse_section(ModelConfig, compose("config", overrides=[f"model={name}"]).model, "model"), 5)


def random_batch(vocab: int, batch: int, length: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, vocab, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": torch.randint(0, 5, (batch,), generator=generator),
    }


def peft_regex(patterns: list[str]) -> str:
    """Our target patterns (module-name suffixes, or `re:` regexes) as one PEFT target regex."""
    parts = [p[3:] if p.startswith("re:") else rf"(?:.*\.)?{re.escape(p)}" for p in patterns]
    return "|".join(f"(?:{p})" for p in parts)


class PeftMethod(Method):
    """PEFT's LoRA / DoRA / AdaLoRA with our method config, driven by the same StepRunner."""

    def __init__(self, model: nn.Module, cfg, total_steps: int, head: list[str]):
        from peft import AdaLoraConfig, LoraConfig, get_peft_model

        self.name = f"peft_{cfg.name}"
        common = dict(
            target_modules=peft_regex(list(cfg.targets)),
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            modules_to_save=head,
        )
        if cfg.name == "adalora":
            steps = lambda value: int(value * total_steps) if value < 1 else int(value)
            config = AdaLoraConfig(
                init_r=cfg.r or math.ceil(1.5 * cfg.target_r),
                target_r=cfg.target_r,
                tinit=steps(cfg.t_init),
                tfinal=steps(cfg.t_final),
                deltaT=cfg.delta_t,
                beta1=cfg.beta1,
                beta2=cfg.beta2,
                orth_reg_weight=cfg.orth_reg,
                total_step=total_steps,
                **common,
            )
        else:
            config = LoraConfig(r=cfg.r, use_dora=cfg.name == "dora", **common)
        self.peft_model = get_peft_model(model, config)
        self.model, self.cfg, self.head_modules = self.peft_model, cfg, []
        self.head_names = tuple(f".{h}." for h in head)

    def is_head(self, name: str) -> bool:
        return any(h in name for h in self.head_names)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft_model.named_parameters() if p.requires_grad and self.is_head(n)]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft_model.named_parameters() if p.requires_grad and not self.is_head(n)]

    def on_step_end(self, step: int) -> None:
        if self.cfg.name == "adalora":
            self.peft_model.base_model.update_and_allocate(step)


def saved_activations_mb(contender: "Contender", batch: dict) -> float:
    """Bytes autograd keeps for the backward pass of one training forward (each storage counted
    once): the activation memory a method costs, the same on every device."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    contender.method.train_mode()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = contender.method.model(**batch).loss
        extra = contender.method.extra_loss()
        if extra is not None:
            loss = loss + extra
    del loss
    return sum(storages.values()) / 2**20


def optimizer_state_mb(optimizer: torch.optim.Optimizer) -> float:
    return (
        sum(
            t.numel() * t.element_size()
            for state in optimizer.state.values()
            for t in state.values()
            if torch.is_tensor(t)
        )
        / 2**20
    )


class Contender:
    """One method on its own copy of the model, ready to step."""

    def __init__(
        self,
        label: str,
        model: nn.Module,
        method: Method,
        batch: dict,
        device,
        dtype,
        total_steps: int,
        absolute_peak: bool = False,
    ):
        self.label, self.model, self.method = label, model.to(device), method
        self.batch, self.device, self.absolute_peak = batch, device, absolute_peak
        train = TrainConfig(lr=1e-4, head_lr=1e-4, schedule="constant", warmup_ratio=0.0)
        optimizer, scheduler = build_optimizer(method, train, 0, total_steps)  # the loop's builder
        method.start(total_steps, optimizer)
        self.step = StepRunner(method.model, method, optimizer, scheduler, device, dtype, train.max_grad_norm)
        self.trainable = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
        self.seconds: list[float] = []
        self.peak_mb = 0.0
        self.activations_mb = self.optimizer_mb = 0.0
        self.done = 0

    def run(self, steps: int, timed: bool) -> None:
        """`steps` training steps on the batch; with `timed`, their seconds are kept. The peak memory
        is the process's (own process) or above the memory in use before the steps (shared process)."""
        device = self.device
        gc.collect()
        before = 0.0 if self.absolute_peak else current_mb(device)
        reset_peak(device)
        for _ in range(steps):
            self.done += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            self.step(self.done, [self.batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if timed:
                self.seconds.append(time.perf_counter() - started)
        self.peak_mb = max(self.peak_mb, read_peak(device)["peak_memory_mb"] - before)

    def finish(self) -> None:
        """Activation and optimizer-state sizes."""
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        self.activations_mb = saved_activations_mb(self, batch)
        self.optimizer_mb = optimizer_state_mb(self.step.optimizer)


def contender_labels(methods: list[str], with_peft: bool) -> list[str]:
    return ["limit", *methods, *([f"peft_{m}" for m in PEFT_METHODS if m in methods] if with_peft else [])]


def composed(method: str, model_name: str):
    """The config of `method` on `model_name` (its role map resolves the method's targets); the synthetic
    roberta_base_random has RoBERTa's names, those of the default model."""
    overrides = [f"method={method}"] + ([f"model={model_name}"] if model_name in group_options()["model"] else [])
    return compose("config", overrides=overrides)


def head_of(model_name: str) -> list[str]:
    return list(composed("head", model_name).model.head_modules)


def build_contender(
    model: nn.Module,
    label: str,
    batch: dict,
    device,
    dtype,
    total_steps: int,
    absolute_peak: bool = False,
    model_name: str = "minilm",
) -> Contender:
    """`label`'s method applied to `model` (changed in place)."""
    head = head_of(model_name)
    if label == "limit":
        method = FrozenBackbone(model, MethodConfig(name="limit"), head)
    elif label.startswith("peft_"):
        method = PeftMethod(model, method_config(label[5:], model_name), total_steps, head)
    else:
        method = build_method(model, composed(label, model_name).method, head)
    return Contender(label, model, method, batch, device, dtype, total_steps, absolute_peak)


def release_heap() -> None:
    """Hand freed heap pages back to the system, or RSS creeps up step after step and model after model."""
    gc.collect()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Refused(Exception):
    """A method that does not apply to the benchmarked model: its one-line reason."""


def contender_process(connection, settings: dict, label: str) -> None:
    """A worker's life: build one contender, then step / finish on the parent's commands."""
    try:
        torch.set_num_threads(settings["threads"])
        with project_config():
            device = pick_device(settings["device"])
            model = text_model(settings["model"])
            batch = random_batch(model.config.vocab_size, settings["batch"], settings["length"])
            contender = build_contender(
                model,
                label,
                batch,
                device,
                autocast_dtype(settings["precision"], device),
                settings["total"],
                absolute_peak=True,
                model_name=settings["model"],
            )
            release_heap()
            connection.send(("ready", contender.trainable))
            while True:
                command, steps, timed = connection.recv()
                if command == "finish":
                    contender.finish()
                    connection.send(("finished", contender.activations_mb, contender.optimizer_mb))
                    return
                contender.run(steps, timed)
                release_heap()  # an idle worker holds its model and optimizer state, not its last step's memory
                connection.send(("ran", contender.seconds[-steps:] if timed else [], contender.peak_mb))
    except HarnessError as error:
        connection.send(("refused", str(error)))
    except Exception as error:
        connection.send(("error", one_line(error)))


class IsolatedContender:
    """A contender in a process of its own (spawned), driven over a pipe by the benchmark's process:
    its peak memory is its own, and no other method's models or freed memory sit beside it."""

    def __init__(self, label: str, settings: dict):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=contender_process, args=(child, settings, label), daemon=True)
        self.process.start()
        self.label, self.seconds, self.peak_mb = label, [], 0.0
        (self.trainable,) = self.receive("ready")

    def receive(self, expected: str) -> tuple:
        try:
            kind, *payload = self.connection.recv()
        except EOFError:
            self.process.join()
            raise RuntimeError(
                f"{self.label}: its benchmark process died (exit code {self.process.exitcode}; "
                "out of memory? run fewer --methods at once)"
            ) from None
        if kind == "refused":
            self.process.join()
            raise Refused(payload[0])
        if kind == "error":
            raise RuntimeError(f"{self.label}: {payload[0]}")
        assert kind == expected, (kind, expected)
        return tuple(payload)

    def run(self, steps: int, timed: bool) -> None:
        self.connection.send(("run", steps, timed))
        seconds, self.peak_mb = self.receive("ran")
        self.seconds += seconds

    def finish(self) -> None:
        self.connection.send(("finish", 0, False))
        self.activations_mb, self.optimizer_mb = self.receive("finished")
        self.process.join()


def method_config(name: str, model_name: str):
    from methods import parse_method_config

    return parse_method_config(composed(name, model_name).method)


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


PEAK_NOTES = {
    None: "(Peak RSS is not reported here: all contenders share one process; `--isolate` reports it.)",
    "peak memory MB": "Peak memory: max allocated on the GPU during the method's steps (own process: everything it "
    "holds; shared process: above the memory in use before them).",
    "peak RSS MB": "Peak RSS: the method's own process at its highest during its steps (Python, torch, the model, "
    "gradients, optimizer state and the step's working memory).",
}


def table(contenders: list, peak: str | None) -> list[dict]:
    """One row per contender; `peak` names the peak-memory column (None: left out)."""
    by_label = {c.label: c for c in contenders}
    median = {c.label: statistics.median(c.seconds) for c in contenders}
    rows = []
    for c in contenders:
        peft = f"peft_{c.label}"
        rows.append(
            {
                "method": c.label,
                "trainable params": f"{c.trainable:,}",
                "s/step": f"{median[c.label]:.4f}",
                "× limit": f"{median[c.label] / median['limit']:.3f}",
                "× full": f"{median[c.label] / median['full']:.3f}" if "full" in median else "—",
                "ours / PEFT": f"{median[c.label] / median[peft]:.3f}" if peft in by_label else "—",
                "activations MB": f"{c.activations_mb:,.1f}",
                **({peak: f"{c.peak_mb:,.0f}"} if peak else {}),
                "optimizer state MB": f"{c.optimizer_mb:.2f}",
            }
        )
    return rows


def timed_default_run(results: Path, cache: Path, *overrides: str) -> tuple[float, dict]:
    """Runs `python -m harness` (the default run, plus `overrides`) in a fresh process: its wall time and record's cost."""
    env = {**os.environ, "PEFT_HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness", f"results_dir={results}", "progress=false", "logger=csv", *overrides],
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    return wall, record["cost"]


def overhead(scratch: Path, repeats: int = 5) -> list[str]:
    """The default run's wall time outside its training steps and evaluations. The time outside does not
    depend on the number of steps, and one measurement of it varies by about a second on a shared
    machine, so it is the median of `repeats` short runs (2 steps) with a cold tokenization cache (emptied
    before each) and `repeats` with a warm one, set against one whole default run (1 epoch)."""
    outside = {"cold": [], "warm": []}
    for attempt in range(repeats):
        for cache in ("cold", "warm"):
            if cache == "cold":
                shutil.rmtree(scratch / "cache", ignore_errors=True)
            results = scratch / f"{cache}{attempt}"
            wall, cost = timed_default_run(results, scratch / "cache", "train.max_steps=2")
            outside[cache].append(wall - cost["train_seconds"] - cost["eval_seconds"])
    wall, cost = timed_default_run(scratch / "whole", scratch / "cache")
    steps = cost["train_seconds"] + cost["eval_seconds"]
    lines = [
        f"- default run (`python -m harness`: lora, bbc_news, 1 epoch = {cost['steps']} steps): training steps "
        f"{cost['train_seconds']:.1f} s, evaluation {cost['eval_seconds']:.1f} s (process wall {wall:.1f} s)"
    ]
    for cache, seconds in outside.items():
        middle = statistics.median(seconds)
        lines.append(
            f"- outside steps and evaluation, {cache} tokenization cache: median {middle:.1f} s (range "
            f"{min(seconds):.1f}–{max(seconds):.1f} s over {repeats} runs) = **{100 * middle / (steps + middle):.1f} %** "
            f"of the default run"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    with project_config():
        options = group_options()[
            "method"
        ]  # ours (top level, convolution-only projection aside), then PEFT's tuners through the bridge
        available = [m for m in options if "/" not in m and m != "projection"] + [
            m for m in options if m.startswith("peft/")
        ]
        methods = available if args.methods == "all" else args.methods.split(",")
        total = args.warmup + args.rounds * args.steps
        labels = contender_labels(methods, not args.no_peft)
        settings = {
            "model": args.model,
            "batch": args.batch,
            "length": args.length,
            "device": args.device,
            "precision": args.precision,
            "total": total,
            "threads": torch.get_num_threads(),
        }
        if not args.isolate:
            base = text_model(args.model)
            batch = random_batch(base.config.vocab_size, args.batch, args.length)
        contenders, refused = [], []
        for label in labels:  # built one after the other, so that only one model is being built at a time
            try:
                contenders.append(
                    IsolatedContender(label, settings)
                    if args.isolate
                    else build_contender(copy.deepcopy(base), label, batch, device, dtype, total, model_name=args.model)
                )
            except (Refused, HarnessError) as error:  # the method does not apply to this model: said under the table
                refused.append(f"- `{label}`: {error}")
        for contender in contenders:
            contender.run(args.warmup, timed=False)
        order = random.Random(0)
        for _ in range(args.rounds):  # every method once per round, in a fresh order: none always goes first
            for contender in order.sample(contenders, len(contenders)):
                contender.run(args.steps, timed=True)
        for contender in contenders:
            contender.finish()
    peak = (
        ("peak RSS MB" if device.type == "cpu" else "peak memory MB")
        if args.isolate
        else ("peak memory MB" if device.type == "cuda" else None)
    )
    rows = table(contenders, peak)
    import pandas as pd

    precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[dtype]
    lines = [
        f"# Training-step benchmark: {args.model}, batch {args.batch} × {args.length} tokens, {precision}",
        "",
        f"Machine: {machine(device)}. Command: `python -m harness.bench {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        f"Median of {args.rounds} rounds × {args.steps} timed steps per method (after {args.warmup} warm-up steps), "
        + ("each method in a process of its own" if args.isolate else "all methods in one process")
        + ", interleaved by round (shuffled order per round). `limit` = frozen backbone (no adapter; head trained; "
        "backward through every layer to the input embeddings). Activations: the tensors autograd saves for "
        "the backward of one training forward (each storage once). Optimizer state: AdamW's moments. "
        + PEAK_NOTES[peak],
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
    if args.overhead:
        with tempfile.TemporaryDirectory() as scratch:
            lines += ["## Harness overhead", "", *overhead(Path(scratch)), ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", (device_name(device) if device.type == "cuda" else "cpu").lower()).strip("-")
    (out / f"{slug}-{args.model}-b{args.batch}x{args.length}.md").write_text(text)
