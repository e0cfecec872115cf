"""The training loop, top to bottom (no HF Trainer).

`method.initialise(loss_of, batches)` first for methods that declare they start from data (LoRA-GA:
its `init_batches` first batches of the seeded order, which training then uses as usual), then
`method.start(total_steps, optimizer)`; then per optimizer step: `method.train_mode()` (train
mode, except BatchNorm layers with frozen parameters), `grad_accum` micro-batches (seeded order),
each forward under autocast when on a GPU, loss = task loss + method.extra_loss(), scaled by
1/grad_accum, backward; then gradient clipping, optimizer.step(), scheduler.step(),
method.on_step_end(step) (gradients still present), zero_grad(). The step's loss stays on the device
until the loop reads it (every `logger.every` steps and before each evaluation: one sync for those
steps), then each step's loss is checked and logged. In a data-parallel run (torchrun:
harness/engine/distributed.py) each rank trains its share of the step's grad_accum micro-batches (with the
frozen backbone sharded: harness/engine/sharding.py). Checkpoints (harness/engine/checkpoint.py) on their
cadence, after a step, and the run continues from the last one. Evaluation of every non-train
split every `eval_every` steps (default: once per epoch) and at the end, each after
`method.select(predict, score)`, which lets a method with several candidates keep the best on validation
(InCA's taps); `best` is the evaluation with the best primary metric on the validation split; the model's
outputs at the final and the best evaluation are kept (the run's predictions). The logger flushes at every
evaluation. A non-finite loss stops the run with an error naming its step.
The progress bar shows the loss, "evaluating <split> k/n" (batches) while it evaluates, the validation
split's primary metric (×100, as the run's summary line) after each evaluation, and an ETA of the training
and evaluation left (`time_left`: steps left × measured seconds per step + evaluations left × measured
seconds per evaluation; "+ n evaluations" until one has been measured).
"""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterator

import torch
from tqdm.auto import tqdm

from harness.engine import distributed, sharding
from harness.engine.checkpoint import Checkpointer, from_portable, portable, rng_state, set_rng_state
from harness.engine.evaluate import evaluate, metrics, predict
from harness.engine.schedule import build_optimizer
from harness.errors import HarnessError

SELECT_SPLIT = "validation"


@dataclass
class Plan:
    """How many optimizer steps a run takes and how often it evaluates."""

    total_steps: int
    steps_per_epoch: int
    eval_every: int
    warmup_steps: int


def plan_steps(train, n_train: int) -> Plan:
    steps_per_epoch = max(1, math.ceil(n_train / (train.batch_size * train.grad_accum)))
    total = train.max_steps or max(1, math.ceil(train.epochs * steps_per_epoch))
    return Plan(
        total, steps_per_epoch, train.eval_every or min(steps_per_epoch, total), int(round(train.warmup_ratio * total))
    )


def evaluations_after(step: int, plan: Plan) -> int:
    """The evaluations the loop makes after `step`: every `eval_every` steps and at the last step."""
    if step >= plan.total_steps:
        return 0
    return plan.total_steps // plan.eval_every - step // plan.eval_every + (plan.total_steps % plan.eval_every != 0)


def time_left(step: int, plan: Plan, seconds_per_step: float, seconds_per_evaluation: float | None) -> str:
    """The bar's ETA after `step`: training and evaluation left, each at its measured speed; the evaluations
    are counted, not timed, until one has been measured."""
    seconds = (plan.total_steps - step) * seconds_per_step
    evaluations = evaluations_after(step, plan)
    if seconds_per_evaluation is None and evaluations:
        return f"ETA {tqdm.format_interval(seconds)} + {evaluations} evaluation{'s' if evaluations > 1 else ''}"
    return f"ETA {tqdm.format_interval(seconds + evaluations * (seconds_per_evaluation or 0.0))}"


def batch_indices(n: int, batch_size: int, seed: int) -> Iterator[tuple[float, list[int]]]:
    """Endless (epoch position, indices) batches; each epoch a fresh permutation from one seeded
    generator, so the data order depends only on the seed."""
    generator = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            yield epoch + min(start + batch_size, n) / n, order[start : start + batch_size]
        epoch += 1


@dataclass
class Outcome:
    curve: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    best_step: int | None = None
    final_outputs: dict = field(default_factory=dict)  # split -> the model's outputs at the final evaluation
    best_outputs: dict = field(default_factory=dict)  # ... at the best one
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0  # the method's initialisation pass included
    eval_seconds: float = 0.0
    init_seconds: float = 0.0
    resumed_from_step: int | None = None  # the checkpoint's step, when the run continued from one
    best_score: float | None = None  # the loop's running state (kept in checkpoints)
    loss_sum: float = 0.0
    loss_count: int = 0


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    return best is None or (value > best if higher_is_better else value < best)


class StepRunner:
    """One optimizer step over its micro-batches: forward under autocast, task loss + the method's
    extra loss, backward (scaled by 1/micro-batches), unscale, clip, step, schedule, the method's
    step-end hook (gradients still present), zero_grad. Returns the micro-batches' losses as a tensor on
    the device (reading it is a device sync: the loop does so only when it logs; the step's loss is their
    mean). The training loop and the benchmark (harness/bench/timing.py) both step through it."""

    def __init__(
        self,
        model,
        method,
        optimizer,
        scheduler,
        device: torch.device,
        dtype: torch.dtype | None,
        max_grad_norm: float | None,
    ):
        self.model, self.method, self.optimizer, self.scheduler = model, method, optimizer, scheduler
        self.device, self.dtype, self.max_grad_norm = device, dtype, max_grad_norm
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.trainable = [p for group in optimizer.param_groups for p in group["params"]]
        self.forward = model
        self.sharded = sharding.is_sharded(
            model
        )  # its trained tensors' gradients averaged here (harness/engine/sharding.py)
        if (
            distributed.is_distributed() and not self.sharded
        ):  # gradients averaged by DDP (harness/engine/distributed.py)
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        self.hook_rewrites = method.capabilities.step_hook

    def __call__(self, step: int, micro_batches: list[dict]) -> torch.Tensor:
        self.method.train_mode()
        losses = []
        for number, batch in enumerate(micro_batches, 1):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            synced = (
                self.forward.no_sync()
                if self.forward is not self.model and number < len(micro_batches)
                else nullcontext()
            )
            with synced:  # a data-parallel run averages the gradients once, after the last micro-batch
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    loss = self.forward(**batch).loss
                    extra = self.method.extra_loss()
                    if extra is not None:
                        loss = loss + extra
                self.scaler.scale(loss / len(micro_batches)).backward()
            losses.append(loss.detach().float())  # stays on the device: no sync per micro-batch
        if self.sharded:
            sharding.average_gradients(self.trainable)
        self.scaler.unscale_(self.optimizer)  # true gradients for clipping and for methods that read them
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.on_step_end(step)
        if self.hook_rewrites:  # masks, folds, redraws: every rank keeps rank 0's
            distributed.share_from_main(self.method.state_tensors())
        self.optimizer.zero_grad(set_to_none=True)
        return distributed.mean_over_ranks(torch.stack(losses))


class BarStatus:
    """The progress bar's postfix: the loss, the last validation score and the ETA (`parts`), or what the loop
    is doing now (evaluating a split, batch k of n; redrawn at most every `bar.mininterval` seconds)."""

    def __init__(self, bar):
        self.bar = bar
        self.parts = {"loss": "", "score": "", "eta": ""}
        self.drawn = 0.0

    def text(self, doing: str | None = None) -> str:
        return ", ".join(part for part in [*self.parts.values(), doing] if part)

    def show(self, doing: str | None = None, refresh: bool = True) -> None:
        self.bar.set_postfix_str(self.text(doing), refresh=refresh)
        self.drawn = time.monotonic()

    def batches_of(self, split: str):
        """`on_batch` for evaluate: "evaluating <split> k/n" (None where the bar is off)."""
        if self.bar.disable:
            return None

        def on_batch(number: int, batches: int) -> None:
            if number == batches or time.monotonic() - self.drawn >= self.bar.mininterval:
                self.show(f"evaluating {split} {number}/{batches}")

        return on_batch


def checkpoint_state(step: int, outcome: Outcome, method, step_once: StepRunner, train_seconds: float) -> dict:
    """What a run continues from after `step` (harness/engine/checkpoint.py)."""
    saved = {
        field: getattr(outcome, field)
        for field in (
            "curve",
            "final",
            "best",
            "best_step",
            "steps",
            "examples",
            "eval_seconds",
            "init_seconds",
            "best_score",
            "loss_sum",
            "loss_count",
        )
    }
    return {
        "step": step,
        "outcome": {
            **saved,
            "train_seconds": train_seconds,
            "final_outputs": portable(outcome.final_outputs),
            "best_outputs": portable(outcome.best_outputs),
        },
        "method": method.trainable_state_dict(),
        "method_state": method.checkpoint_state(),
        "optimizer": step_once.optimizer.state_dict(),
        "scheduler": step_once.scheduler.state_dict(),
        "scaler": step_once.scaler.state_dict(),
        "rng": rng_state(),
    }


def restore(saved: dict, outcome: Outcome, method, step_once: StepRunner) -> None:
    method.load_trainable_state_dict(saved["method"])
    method.restore_checkpoint_state(saved["method_state"])
    step_once.optimizer.load_state_dict(saved["optimizer"])
    step_once.scheduler.load_state_dict(saved["scheduler"])
    step_once.scaler.load_state_dict(saved["scaler"])
    for name, value in saved["outcome"].items():
        setattr(outcome, name, from_portable(value) if name.endswith("_outputs") else value)
    outcome.resumed_from_step = saved["step"]
    set_rng_state(saved["rng"])


def train(
    model,
    method,
    task,
    encoded: dict,
    run,
    device: torch.device,
    dtype: torch.dtype | None,
    pad_id: int,
    logger,
    progress: bool,
    checkpointer: Checkpointer | None = None,
    run_key: str = "",
) -> Outcome:
    """`run` holds the validated settings (run.train, run.seed, run.operational.logger); `encoded` the
    encoded splits; `checkpointer` saves and restores the run's state (harness/engine/checkpoint.py)."""
    cfg = run.train
    rank = distributed.world()[0]
    plan = plan_steps(cfg, len(encoded["train"]))
    optimizer, scheduler = build_optimizer(method, cfg, run.optimizer, plan.warmup_steps, plan.total_steps)
    log_every = run.operational.logger.every
    step_once = StepRunner(model, method, optimizer, scheduler, device, dtype, cfg.max_grad_norm)
    batches = batch_indices(len(encoded["train"]), cfg.batch_size, run.seed)
    outcome = Outcome()

    evaluations = 0  # in this attempt (the ETA's measured seconds per evaluation)

    def run_evaluation(step: int, epoch: float) -> None:
        nonlocal evaluations
        started = time.perf_counter()
        validation = encoded[SELECT_SPLIT]
        method.select(  # a method with candidates keeps the best on validation (InCA's taps)
            lambda: predict(model, validation, cfg.eval_batch_size, pad_id, device, dtype),
            lambda outputs: metrics(task, validation, outputs)[task.primary] * (1 if task.higher_is_better else -1),
        )
        evaluated = {}
        for split in task.eval_splits:
            status.show(f"evaluating {split}")
            evaluated[split] = evaluate(
                model, encoded, task, split, cfg.eval_batch_size, pad_id, device, dtype, status.batches_of(split)
            )
        values = task.with_report({split: split_values for split, (split_values, _) in evaluated.items()})
        outputs = {split: split_outputs for split, (_, split_outputs) in evaluated.items()}
        outcome.eval_seconds += time.perf_counter() - started
        evaluations += 1
        if outcome.loss_count:
            outcome.curve.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "split": "train",
                    "values": {"loss": outcome.loss_sum / outcome.loss_count},
                }
            )
            outcome.loss_sum, outcome.loss_count = 0.0, 0
        for split, split_values in values.items():
            outcome.curve.append({"step": step, "epoch": epoch, "split": split, "values": split_values})
            logger.log(step, epoch, {f"{split}/{k}": v for k, v in split_values.items()})
        logger.flush()
        outcome.final, outcome.final_outputs = values, outputs
        score = values[SELECT_SPLIT][task.primary]
        status.parts["score"] = f"{SELECT_SPLIT} {task.primary} {100 * score:.2f}"  # as the run's summary line
        if is_better(score, outcome.best_score, task.higher_is_better):
            outcome.best_score, outcome.best, outcome.best_step, outcome.best_outputs = score, values, step, outputs

    started = time.perf_counter()
    if method.capabilities.needs_data_at_init:

        def loss_of(batch: dict) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}).loss

        first = batch_indices(len(encoded["train"]), cfg.batch_size, run.seed)  # the run's own first batches
        method.initialise(loss_of, (encoded["train"].batch(next(first)[1], pad_id) for _ in range(method.init_batches)))
        outcome.init_seconds = time.perf_counter() - started
    method.start(plan.total_steps, optimizer)
    saved = checkpointer.load(run_key) if checkpointer is not None else None
    first_step, spent = 1, 0.0  # spent: training time of earlier attempts
    if saved is not None:
        restore(saved, outcome, method, step_once)
        first_step, spent = saved["step"] + 1, outcome.train_seconds
        for _ in range(saved["step"] * cfg.grad_accum):  # the seeded order, replayed to the checkpoint's position
            next(batches)
        logger.resume(saved["step"])
    eval_before = outcome.eval_seconds

    def train_seconds() -> float:
        return spent + time.perf_counter() - started - (outcome.eval_seconds - eval_before)

    bar = tqdm(
        total=plan.total_steps,
        initial=first_step - 1,
        desc=f"{method.name}/{task.name}",
        disable=not progress,
        leave=False,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]",  # the ETA: time_left
    )
    status = BarStatus(bar)
    unlogged = []  # (step, epoch, lr, loss on the device) since the last read

    def read_losses() -> None:
        """One device sync for the steps since the last: check and log their losses."""
        read = torch.stack([losses for *_, losses in unlogged]).tolist()
        values = [
            sum(loss / len(losses) for loss in losses) for losses in read
        ]  # in float64, micro-batch by micro-batch
        for (step, epoch, lr, _), value in zip(unlogged, values):
            if not math.isfinite(value):
                raise HarnessError(f"loss is {value} at step {step}; lower train.lr or check the data")
            outcome.loss_sum, outcome.loss_count = outcome.loss_sum + value, outcome.loss_count + 1
            logger.log(step, epoch, {"train/loss": value, "train/lr": lr})
        status.parts["loss"] = f"loss {values[-1]:.4f}"
        unlogged.clear()

    for step in range(first_step, plan.total_steps + 1):
        micro = [next(batches) for _ in range(cfg.grad_accum)]
        epoch = micro[-1][0]
        lr = scheduler.get_last_lr()[0]  # the rate this step uses (the scheduler moves on inside the step)
        mine = distributed.my_share(micro)
        unlogged.append(
            (step, epoch, lr, step_once(step, [encoded["train"].batch(indices, pad_id) for _, indices in mine]))
        )
        outcome.examples += sum(len(indices) for _, indices in micro)
        outcome.steps = step
        evaluate_now = step % plan.eval_every == 0 or step == plan.total_steps
        if evaluate_now or step % log_every == 0:
            read_losses()
        bar.update()
        if evaluate_now and (
            rank == 0 or step_once.sharded
        ):  # rank 0 only, unless every forward needs every rank's shards
            run_evaluation(step, epoch)
        if progress:
            status.parts["eta"] = time_left(
                step,
                plan,
                (train_seconds() - spent) / (step - first_step + 1),
                (outcome.eval_seconds - eval_before) / evaluations if evaluations else None,
            )
            status.show(refresh=evaluate_now)  # else drawn with the next step
        if rank == 0 and checkpointer is not None and checkpointer.due(step, plan.total_steps):
            if unlogged:
                read_losses()
            logger.flush()
            checkpointer.save(
                {"run_key": run_key, **checkpoint_state(step, outcome, method, step_once, train_seconds())}
            )
    bar.close()
    outcome.train_seconds = train_seconds()
    return outcome
