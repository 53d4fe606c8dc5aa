"""Planning a run: the speed of a model on this machine, measured, and the default recipe (recipe.py) it feeds."""
from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import replace

from . import recipe
from .corpus import Corpus, lanes, windows
from .config import TrainConfig
from .loop import make_optimizer, optimizer_step
from .model import LanguageModel, ModelConfig
from .runtime import Runtime


def measure_speed(
    model_config: ModelConfig, data: Corpus, config: TrainConfig, runtime: Runtime, seconds: float = 1.0, fewest_steps: int = 5, most_steps: int = 30, warmup_steps: int = 2
) -> float:
    """Training tokens per second of a model of this shape on this machine: the median step of at least a second of them,
    after two to warm up (the first builds the kernels, the second still runs slow).

    The median, because a shared machine can stall any one step; the fastest would promise more than a run keeps up.
    A second of steps rides out a short burst of load that a few steps would take for the machine's speed.
    Under torchrun every rank measures its share of the lanes at once, and the speeds add up.
    """
    device, precision, group = runtime.device, runtime.precision, runtime.group
    model = LanguageModel(model_config).to(device)
    optimizer = make_optimizer(model, config, device)
    share = group.share(config.batch_size)
    inputs, targets = (t[share] for t in lanes(data.train, config.batch_size))
    batches = itertools.cycle(windows(inputs, targets, config.seq_len))
    state = None

    def step_speed() -> float:
        nonlocal state
        x, y = (t.to(device) for t in next(batches))
        began = time.perf_counter()
        _, state = optimizer_step(model, optimizer, x, y, state, precision, config.clip)
        return y.numel() / (time.perf_counter() - began)

    for _ in range(warmup_steps):
        step_speed()
    speeds, start = [], time.perf_counter()
    while len(speeds) < fewest_steps or (len(speeds) < most_steps and time.perf_counter() - start < seconds):
        speeds.append(step_speed())
    return group.sum([statistics.median(speeds)])[0]


def plan_model(model_config: ModelConfig, data: Corpus, config: TrainConfig, runtime: Runtime, given: recipe.Choices) -> recipe.Recipe:
    """The default recipe (recipe.py) for this run: its budget from the limits, speeds measured on this machine."""

    def weights_at(width: int) -> int:
        return sum(p.numel() for p in LanguageModel(replace(model_config, hidden=width)).rnn.parameters())

    def budget_for(speed: float | None, lanes: int) -> float | None:
        limits = [config.max_steps * lanes * config.seq_len if config.max_steps else None,
                  config.max_epochs * len(data.train) if config.max_epochs else None,
                  config.max_time * speed * recipe.SPEED_KEPT if config.max_time and speed else None]
        return min((limit for limit in limits if limit is not None), default=None)

    def speed_at(width: int) -> float:
        return measure_speed(replace(model_config, hidden=width, dropout=given.dropout or 0.0), data, config, runtime)

    measure = speed_at if config.max_time else None
    return recipe.choose(
        len(data.train), config.seq_len, weights_at, budget_for, measure, given.hidden, given.dropout, given.lr, given.batch_size, given.skip_connections
    )
