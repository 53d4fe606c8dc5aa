"""Benchmark: what thread settings and torch.compile give one float32 training step of the default LSTM.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m tests.benchmarks.float32_step

A 2 x 512 LSTM of 82 characters, 16 lanes of 128, chargen's own optimizer and step, in float32: the
eager step on all of PyTorch's threads, the eager step on one thread, and the step with the model's forward
compiled by torch.compile (inductor). The variants take turns, rounds of five steps each, so a burst of load
falls on all of them; the figure is each one's median round. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from chargen.config import TrainConfig
from chargen.loop import make_optimizer, optimizer_step
from chargen.model import LanguageModel, ModelConfig

LANES, WINDOW, VOCABULARY = 16, 128, 82


def training_step(compiled: bool) -> Callable[[], None]:
    """One step of a freshly made model on a fixed random batch; every variant starts from the same weights."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=VOCABULARY, hidden=512, skip_connections=False)).train()
    config = TrainConfig()
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    stepped = torch.compile(model) if compiled else model
    batch = torch.randint(0, VOCABULARY, (LANES, WINDOW + 1))

    def step() -> None:
        optimizer_step(stepped, optimizer, batch[:, :-1], batch[:, 1:], None, "fp32", config.clip)

    return step


def on_threads(step: Callable[[], None], threads: int) -> Callable[[], None]:
    """The step run on a given number of threads, the machine's setting restored after it."""
    def limited() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            step()
        finally:
            torch.set_num_threads(before)
    return limited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    variants = {
        f"eager, {threads} threads": training_step(compiled=False),
        "eager, 1 thread": on_threads(training_step(compiled=False), 1),
        f"torch.compile forward, {threads} threads": training_step(compiled=True),
    }
    print(f"processor: {torch.backends.cpu.get_cpu_capability()}; float32; {LANES} lanes x {WINDOW}")
    for name, step in variants.items():
        began = time.perf_counter()
        for _ in range(3):
            step()
        print(f"{name}: warm-up {time.perf_counter() - began:.1f} s")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            began = time.perf_counter()
            for _ in range(5):
                step()
            rates[name].append(5 * LANES * WINDOW / (time.perf_counter() - began))
    base = statistics.median(rates[next(iter(variants))])
    for name, measured in rates.items():
        median = statistics.median(measured)
        print(f"{name}: {median:,.0f} tokens/s ({median / base:.2f}x; rounds {min(measured):,.0f} to {max(measured):,.0f})")


if __name__ == "__main__":
    main()
