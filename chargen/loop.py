"""The training loop: truncated BPTT over contiguous lanes, AdamW, gradient clipping, the schedule, and when to
validate and stop.

    text  ->  lanes (batch_size contiguous streams)  ->  windows of seq_len tokens
              lane 0: t h e _ q u i c k _ b r o w n ...   | window 0 | window 1 | ...
              lane 1: o v e r _ t h e _ l a z y _ d o ...   the state after window i starts window i + 1

The loop writes nothing itself: what a run keeps (checkpoints, TensorBoard, samples shown) is its Keeper's (run.py).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .resume_file import Progress
from .config import TrainConfig
from .corpus import Corpus, lanes, windows
from .distributed import Group
from .errors import SEED_LIMIT, ChargenError
from . import state as states
from .model import LanguageModel, autocast
from .state import State
from .progress import TrainingDisplay
from .runtime import Runtime

LN2 = math.log(2)
COSINE_FINAL_LR = 0.05  # the cosine schedule ends at this fraction of --lr
EVAL_EVERY = 1000  # steps between validations, unless --eval-every says otherwise
VALIDATION_SHARE = 0.02  # of a --max-time run's time, the most its validations may take
ADAM_BETAS = (0.9, 0.95)  # a second moment that forgets faster than 0.999's: 0.01 to 0.03 bpc better (docs/recipe.md)


def bits_per_char(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits; the loss is always taken in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()) / LN2


@torch.inference_mode()
def bits_per_token(model: LanguageModel, data, batch_size: int, seq_len: int, precision: str = "fp32", group: Group = Group()) -> float:
    """Mean bits per token over a whole stream, state carried from window to window; ranks share the lanes."""
    n_lanes = max(group.world, min(batch_size, (len(data) - 1) // seq_len) // group.world * group.world)
    inputs, targets = lanes(data, n_lanes)
    share = group.share(n_lanes)
    inputs, targets = inputs[share], targets[share]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in windows(inputs, targets, seq_len):
        x, y = x.to(device), y.to(device)
        with autocast(precision, device):
            logits, state = model(x, state)
        total += bits_per_char(logits, y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    total, count = group.sum([total, count])
    return total / count


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable weights; its fused kernel updates them all in one pass, where the device has it."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(trainable, lr=config.lr, betas=ADAM_BETAS, weight_decay=config.weight_decay, fused=fused)


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, state: State | None, precision: str, clip: float
) -> tuple[float, State]:
    """One truncated-BPTT update; returns the window's bits per token and the state to carry, cut from its history."""
    with autocast(precision, x.device):
        logits, state = model(x, state)
    loss = bits_per_char(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), states.detach(state)



@dataclass
class TrainResult:
    steps: int
    chars: int
    elapsed_s: float
    best_val_bpc: float
    last_val_bpc: float
    stopped_because: str
    stop_signal: int | None = None  # stopped by this signal, saved without a last validation: resume it
    folder: Path | None = None  # the checkpoint folder, once a run (run.py) has kept one

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None



def learning_rate(config: TrainConfig, step: int, fraction: float) -> float:
    """The rate for step + 1: a linear warm-up, then a decay that ends with the run (fraction is how far it is)."""
    c = config
    warm = min(1.0, (step + 1) / c.warmup) if c.warmup else 1.0
    if c.schedule == "constant":
        return c.lr * warm
    fraction = min(fraction, 1.0)
    if c.schedule == "linear":
        return c.lr * warm * (1 - fraction)
    return c.lr * warm * (COSINE_FINAL_LR + (1 - COSINE_FINAL_LR) * 0.5 * (1 + math.cos(math.pi * fraction)))


def stop_reason(config: TrainConfig, progress: Progress, epoch: int, elapsed: float) -> str | None:
    """Which limit the run has reached, if any."""
    c = config
    if c.max_steps and progress.step >= c.max_steps:
        return f"reached --max-steps {c.max_steps}"
    if c.max_epochs and epoch >= c.max_epochs:
        return f"reached --max-epochs {c.max_epochs}"
    if c.max_time and elapsed >= c.max_time:
        return f"reached --max-time {c.max_time:g} s"
    if c.patience and progress.evals_since_best >= c.patience:
        return f"validation did not improve for {c.patience} evaluations (--patience)"
    return None


def validation_due(config: TrainConfig, progress: Progress, group: Group, fraction: float) -> bool:
    """Every --eval-every steps; by default every EVAL_EVERY, skipping one that the run's last validation would
    follow within a quarter of that (fraction is how far the run is), and those that would take a --max-time run's
    validations past VALIDATION_SHARE of its time: each pass over the text and save is time not trained."""
    c, p = config, progress
    if c.eval_every is not None:
        return p.step % c.eval_every == 0
    if p.step % EVAL_EVERY:
        return False
    steps_left = p.step * (1 - fraction) / fraction if fraction > 0 else math.inf
    fits = steps_left >= EVAL_EVERY / 4
    if c.max_time is not None:
        fits = fits and p.validation_s + p.last_validation_s <= VALIDATION_SHARE * p.elapsed_s
    return group.any([fits])[0]  # ranks' clocks differ: all validate if any may


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """The first SIGINT or SIGTERM ends the run after the current step, saved; a second stops it at once."""

    def request_stop(signum, frame) -> None:
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt
        trainer.stop_signal = signum

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Keeper:
    """What a run keeps of its training, told by the loop; this one keeps nothing (a benchmark's steps)."""

    saved = False  # whether a checkpoint of this run is on disk

    def evaluated(self, trainer: Trainer, lanes: State | None, record: dict, improved: bool) -> None:
        """After each validation, on rank 0: record holds the step, characters, time and both bpc figures."""

    def stopped(self, trainer: Trainer, lanes: State | None) -> None:
        """A signal stopped the run, on rank 0: keep it as it stands, unvalidated."""

    def stepped(self, trainer: Trainer) -> None:
        """After every step, on rank 0."""


class Trainer:
    """The training loop for one model on one corpus, on a resolved runtime, from a position that restore() may set."""

    def __init__(self, model: LanguageModel, corpus: Corpus, config: TrainConfig, runtime: Runtime, display: TrainingDisplay, keeper: Keeper | None = None):
        self.model, self.corpus, self.config, self.runtime = model, corpus, config, runtime
        self.device, self.precision, self.group = runtime.device, runtime.precision, runtime.group
        self.display = display if self.group.is_writer else TrainingDisplay(quiet=True)  # rank 0 speaks for the run
        self.keeper = keeper or Keeper()
        self.model.to(self.device)
        # DistributedDataParallel averages gradients over the ranks; alone, the model is used as it is
        self.parallel = DistributedDataParallel(model) if self.group.world > 1 else model
        if self.group.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed((config.seed + self.group.rank) % SEED_LIMIT)
        self.optimizer = make_optimizer(model, config, self.device)
        self.inputs, self.targets = lanes(corpus.train, config.batch_size)
        share = self.group.share(config.batch_size)  # this rank's contiguous lanes
        self.inputs, self.targets = self.inputs[share], self.targets[share]
        # bits per token times tokens per character is bits per character, whatever the tokenizer
        self.train_tokens_per_char = len(corpus.train) / corpus.train_chars
        self.val_tokens_per_char = len(corpus.val) / corpus.val_chars
        self.steps_per_epoch = math.ceil(self.inputs.size(1) / config.seq_len)
        self.progress = Progress()
        self.lane_state: State | None = None
        self.stop_signal: int | None = None

    def restore(self, saved) -> None:
        """Continue from a saved run (resume_file.ResumeState): weights, optimizer, lanes' hidden state, random numbers, position."""
        self.model.load_state_dict(saved.model)
        self.optimizer.load_state_dict(saved.optimizer)
        lanes_here = self.group.lanes_of(saved.lanes, self.config.batch_size)
        self.lane_state = None if lanes_here is None else states.to(lanes_here, self.device)
        if self.lane_state is not None and self.precision != "bf16":  # saved by a bf16 run, continued in float32
            self.lane_state = tuple(s.float() for s in self.lane_state)
        torch.set_rng_state(saved.rng)
        if self.group.rank:  # dropout masks differ from rank to rank
            torch.manual_seed((self.config.seed + self.group.rank + saved.progress["step"]) % SEED_LIMIT)
        self.progress = Progress(**saved.progress)

    @property
    def chars(self) -> int:
        """Characters of text trained on so far (tokens for a character model)."""
        return round(self.progress.tokens / self.train_tokens_per_char)

    def batches(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(epoch, window index, inputs, targets) from the saved position on; window 0 starts a new pass."""
        first = self.progress.window
        for epoch in itertools.count(self.progress.epoch):
            for i, (x, y) in enumerate(windows(self.inputs, self.targets, self.config.seq_len, first * self.config.seq_len), first):
                yield epoch, i, x, y
            first = 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[float, State]:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return optimizer_step(self.parallel, self.optimizer, x, y, state, self.precision, self.config.clip)

    def fraction_done(self, elapsed: float) -> float:
        """How far training is towards the nearest of its stopping limits."""
        c, p = self.config, self.progress
        parts = [0.0]
        if c.max_steps:
            parts.append(p.step / c.max_steps)
        if c.max_epochs:
            parts.append((p.epoch + p.window / self.steps_per_epoch) / c.max_epochs)
        if c.max_time:
            parts.append(elapsed / c.max_time)
        return max(parts)

    def run(self) -> TrainResult:
        p = self.progress
        self.model.train()
        start = time.perf_counter() - p.elapsed_s
        state, reason = self.lane_state, None
        with self.display, stop_on_signals(self):
            for epoch, window, x, y in self.batches():
                reason = stop_reason(self.config, p, epoch, time.perf_counter() - start)
                if reason is None and self.stop_signal is not None:
                    reason = f"stopped by {signal.Signals(self.stop_signal).name}"
                if self.group.world > 1:  # all ranks stop at the same step, whichever saw the reason
                    stop, signalled = self.group.any([reason is not None, self.stop_signal is not None])
                    if signalled and self.stop_signal is None:
                        self.stop_signal = signal.SIGTERM
                    reason = reason or ("stopped with another process" if stop else None)
                if reason:
                    break
                if window == 0:
                    state = None  # each pass over the data starts from a zero state
                fraction = self.group.max(self.fraction_done(time.perf_counter() - start))  # ranks' clocks differ
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(self.config, p.step, fraction)
                bpc, state = self.train_step(x, y, state)
                if self.group.world > 1 and self.group.any([not math.isfinite(bpc)])[0]:
                    bpc = math.nan
                if not math.isfinite(bpc):
                    kept = "the last good checkpoint is kept" if self.keeper.saved else "nothing was saved"
                    raise ChargenError(f"the loss became {bpc} at step {p.step + 1}; try a lower --lr or a tighter --clip ({kept})")
                p.step += 1
                p.tokens += y.numel() * self.group.world
                p.bits_since_eval += bpc * y.numel()
                p.chars_since_eval += y.numel() / self.train_tokens_per_char
                p.epoch, p.window = (epoch + 1, 0) if window + 1 == self.steps_per_epoch else (epoch, window + 1)
                self.lane_state = None if p.window == 0 else state
                p.elapsed_s = time.perf_counter() - start
                if validation_due(self.config, p, self.group, self.fraction_done(p.elapsed_s)):
                    self.validate()
                if self.group.is_writer:
                    self.keeper.stepped(self)
                self.display.update(
                    self.fraction_done(p.elapsed_s),
                    p.step,
                    p.bits_since_eval / p.chars_since_eval if p.chars_since_eval else None,
                    p.last_val,
                    self.chars / p.elapsed_s,
                )
            if self.stop_signal is not None and p.step == 0:
                raise ChargenError(f"stopped by {signal.Signals(self.stop_signal).name} before the first step: nothing was saved")
            if self.stop_signal is not None:
                self.stop()
            elif p.chars_since_eval:  # steps since the last evaluation still deserve one
                self.validate()
        self.parallel = self.model  # DistributedDataParallel holds the process group: a finished run lets go of it
        best, last = (math.inf if v is None else v for v in (p.best_val, p.last_val))
        return TrainResult(p.step, self.chars, p.elapsed_s, best, last, reason or "done", self.stop_signal)

    def validate(self) -> None:
        """A pass over the validation text; rank 0's keeper then saves and shows it."""
        c, p = self.config, self.progress
        began = time.perf_counter()
        val = bits_per_token(self.model, self.corpus.val, c.batch_size, c.seq_len, self.precision, self.group) * self.val_tokens_per_char
        bits, chars = self.group.sum([p.bits_since_eval, p.chars_since_eval])
        train_bpc = bits / chars
        improved = p.best_val is None or val < p.best_val
        p.last_val = val
        p.best_val, p.evals_since_best = (val, 0) if improved else (p.best_val, p.evals_since_best + 1)
        p.bits_since_eval = p.chars_since_eval = 0.0
        lanes = self.group.gather_lanes(self.lane_state)  # every rank takes part; only rank 0 writes
        p.last_validation_s = time.perf_counter() - began
        p.validation_s += p.last_validation_s
        if not self.group.is_writer:
            return
        record = {"step": p.step, "chars": self.chars, "elapsed_s": round(p.elapsed_s, 3), "train_bpc": train_bpc, "val_bpc": val}
        self.keeper.evaluated(self, lanes, record, improved)
        self.display.show_val(val)
        mark = "  (best, saved)" if improved else ""
        self.display.log(f"step {p.step:>6}  train {train_bpc:.4f}  val {val:.4f} bpc{mark}")

    def stop(self) -> None:
        """Keep the run as it stands, without a validation: the user is waiting."""
        lanes = self.group.gather_lanes(self.lane_state)
        if self.group.is_writer:
            self.keeper.stopped(self, lanes)

