"""The default recipe: the width, dropout and learning rate that fit the text, the run's limits and this machine's speed.

A model trained for minutes learns most when its size fits what it will see. The rules, in order:

1. Budget: the tokens the run will train on, the smallest of --max-steps × lanes × window,
   --max-epochs × the training text, and --max-time × SPEED_KEPT × the measured speed of a model of that width.
   A run keeps up less than the few steps measured at its start: it also validates, and a shared machine
   seldom holds its first seconds' pace.
2. Width: the widest of WIDTHS whose budget is at least TOKENS_PER_WEIGHT tokens for each recurrent weight.
   Wider models learn more from each character but run slower; below about that many tokens per weight
   they no longer catch up within the budget. Widths are tried from the narrowest up, each measured.
3. Learning rate: BASE_LR up to BASE_WIDTH units, and for wider models BASE_LR × BASE_WIDTH / width, since
   Adam's step moves every weight by about the rate and a wider layer sums more of them (as in μP).
4. Dropout: none while the budget covers the text at most FREE_PASSES times; then DROPOUT_PER_PASS for
   each further pass, up to MAX_DROPOUT, because a model that sees the same text again and again learns it by heart.
5. Lanes: LANES while the budget covers the text at most REPEAT_PASSES times, REPEAT_LANES beyond. On a CPU
   16 lanes train as many characters per second as 32 and make twice the updates, which helps while the
   text is new; on text seen many times, twice the updates per pass learn it by heart sooner. 16 lanes won
   at two passes, the two were level at five and 32 won far at twelve: the switch sits between, so that
   a run near two passes does not flip with the speed its machine happens to run at.
6. Skip connections (the output layer reads every layer) while the text is new, at most REPEAT_PASSES
   passes, and none beyond: they let a model learn faster from each step, which on text seen many times
   means learning it by heart sooner.

The constants come from the measurements in docs/recipe.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

WIDTHS = (64, 96, 128, 192, 256, 384, 512, 768, 1024)
TOKENS_PER_WEIGHT = 1.0
SPEED_KEPT = 0.85
BASE_LR = 5e-3
BASE_WIDTH = 512
FREE_PASSES = 2.0
DROPOUT_PER_PASS = 0.05
MAX_DROPOUT = 0.5
LANES = 16
REPEAT_LANES = 32
REPEAT_PASSES = 4.0


@dataclass
class Choices:
    """The options the recipe chooses for a run unless they are given: None leaves one to it."""

    hidden: int | None = None
    dropout: float | None = None
    lr: float | None = None
    batch_size: int | None = None  # lanes
    skip_connections: bool | None = None

    @classmethod
    def take(cls, options: dict) -> Choices:
        """Those of the options that the recipe would choose, taken out of options."""
        return cls(**{f.name: options.pop(f.name, None) for f in fields(cls)})

    def given(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def complete(self) -> bool:
        return None not in asdict(self).values()


@dataclass
class Recipe:
    hidden: int
    dropout: float
    lr: float
    lanes: int
    skip_connections: bool
    budget: int | None  # tokens the run is expected to train on; None when nothing bounds it
    speed: float | None  # measured training tokens per second at this width; None when time does not bound the run
    why: str

    def to_dict(self) -> dict:
        return {
            "hidden": self.hidden, "dropout": self.dropout, "lr": self.lr, "lanes": self.lanes, "skip_connections": self.skip_connections,
            "budget_tokens": self.budget, "tokens_per_s": self.speed, "why": self.why,
        }


def choose(
    train_tokens: int,
    window: int,
    weights_at: Callable[[int], int],
    budget_for: Callable[[float | None, int], float | None],
    speed_at: Callable[[int], float] | None,
    hidden: int | None = None,
    dropout: float | None = None,
    lr: float | None = None,
    lanes: int | None = None,
    skip_connections: bool | None = None,
) -> Recipe:
    """The recipe for a run; a hidden size, dropout, learning rate, number of lanes or skip connections the user gave are kept as they are.

    window is the BPTT window in tokens: a text too short for REPEAT_LANES of them keeps LANES.
    weights_at(width) counts the recurrent weights of a model that wide; budget_for(speed, lanes) is the run's
    budget in tokens at a speed in tokens per second (None when nothing bounds it); speed_at(width) measures a
    speed, and is None when the run has no --max-time, so no speed is needed.
    """
    speeds: dict[int, float] = {}

    def budget_at(width: int, lanes: int) -> float | None:
        if speed_at is not None and width not in speeds:
            speeds[width] = speed_at(width)
        return budget_for(speeds.get(width), lanes)

    if hidden is None:
        hidden = WIDTHS[0]  # even when the budget is too small for it
        for width in WIDTHS:  # a wider model is slower too: the first that does not fit ends the search
            budget = budget_at(width, lanes or LANES)
            if budget is not None and weights_at(width) * TOKENS_PER_WEIGHT > budget:
                break
            hidden = width
    budget = budget_at(hidden, lanes or LANES)
    repeats = budget is not None and budget / train_tokens > REPEAT_PASSES
    if lanes is None:
        lanes = REPEAT_LANES if repeats and REPEAT_LANES * window < train_tokens else LANES
    if skip_connections is None:
        skip_connections = not repeats
    budget = budget_at(hidden, lanes)  # more lanes make a step-bound run longer
    passes = None if budget is None else budget / train_tokens
    if dropout is None:
        extra = 0.0 if passes is None else passes - FREE_PASSES
        dropout = round(min(MAX_DROPOUT, max(0.0, DROPOUT_PER_PASS * extra)) * 20) / 20  # in steps of 0.05
    if lr is None:
        lr = BASE_LR * min(1.0, BASE_WIDTH / hidden)
    speed = speeds.get(hidden)
    if budget is None:
        why = "no limit bounds the run"
    else:
        why = f"about {budget:,.0f} tokens to train on, {passes:.1f} passes over the text"
        why += f", at {speed:,.0f} tokens/s measured here" if speed else ""
    return Recipe(hidden, dropout, lr, lanes, skip_connections, None if budget is None else int(budget), speed, why)
