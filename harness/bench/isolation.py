"""A contender in a process of its own (`--isolate`): spawned, built there, and driven over a pipe by the
benchmark's process, so that its peak memory is its own and no other method's models or freed memory sit
beside it. A method that refuses the model says so in one line (`Refused`)."""

import ctypes
import gc
import multiprocessing
import sys

import torch

from harness.bench.contenders import random_batch, text_model
from harness.bench.timing import build_contender
from harness.config.compose import project_config
from harness.engine.device import pick_device
from harness.errors import HarnessError, one_line


class Refused(Exception):
    """A method that does not apply to the benchmarked model: its one-line reason."""


def release_heap() -> None:
    """Hand freed heap pages back to the system, or RSS creeps up step after step and model after model."""
    gc.collect()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
                settings["precision"],
                settings["total"],
                absolute_peak=True,
                model_name=settings["model"],
                checkpointed=settings["checkpointed"],
                base=settings["base"],
                backend=settings["backend"],
            )
            release_heap()
            connection.send(("ready", contender.trainable, contender.frozen_mb))
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
        self.trainable, self.frozen_mb = self.receive("ready")

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
