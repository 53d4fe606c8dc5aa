"""Training: truncated BPTT over contiguous lanes, AdamW, gradient clipping, validation and checkpoints."""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from . import __version__, checkpoint, corpora, distributed, recipe
from . import folder as store
from .corpus import Corpus, file_sha256, lanes, windows
from .embeddings import initialise_embedding
from .errors import ChargenError, OptionError, check_types
from .model import DEVICES, PRECISIONS, LanguageModel, ModelConfig, State, autocast, check_fits_in_memory, detach_state, resolve_device, resolve_precision
from .distributed import Group
from .progress import TrainingDisplay
from .sample import SEED_LIMIT, Sampler, check_seed

LN2 = math.log(2)
SCHEDULES = ("linear", "cosine", "constant")
DEFAULT_EPOCHS = 10  # the limit of a run given none
COSINE_FINAL_LR = 0.05  # the cosine schedule ends at this fraction of --lr
EVAL_EVERY = 1000  # steps between validations, unless --eval-every says otherwise
VALIDATION_SHARE = 0.02  # of a --max-time run's time, the most its validations may take
TRAINING_BYTES_PER_PARAMETER = 4 * 8  # weights, gradients, two AdamW moments, best weights, and the copies a save makes
SMALLER = ": choose a smaller --hidden, --layers or --embedding-dim"
PACE_WARNING = 2.0  # a run this many times faster or slower than the recipe's probe says so


@dataclass
class TrainConfig:
    seq_len: int = 128
    batch_size: int = recipe.LANES  # the recipe takes recipe.REPEAT_LANES for a run that repeats the text
    lr: float = recipe.BASE_LR  # the recipe scales it down for layers wider than recipe.BASE_WIDTH
    schedule: str = "linear"  # linear: down to 0 at the nearest limit (time, steps, epochs); never worse than the cosine (docs/recipe.md)
    warmup: int = 50  # steps of linear warm-up
    weight_decay: float = 0.1  # AdamW's decoupled decay: 0.01 to 0.03 bpc better at 600 s (docs/recipe.md)
    clip: float = 5.0
    seed: int = 1337
    max_steps: int | None = None
    max_epochs: int | None = None  # DEFAULT_EPOCHS when no limit is given
    max_time: float | None = None
    eval_every: int | None = None  # None: every EVAL_EVERY steps, fewer where they would eat into a --max-time run
    patience: int | None = 5  # 0 or None: never stop early
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None  # CPU threads; None leaves PyTorch's choice
    sample_every: int | None = None  # steps between short samples shown while training
    tensorboard: bool = False  # also write TensorBoard event files into the checkpoint folder

    def __post_init__(self) -> None:
        check_types(self)
        if self.max_steps is None and self.max_epochs is None and self.max_time is None:
            self.max_epochs = DEFAULT_EPOCHS
        for name in ("seq_len", "batch_size", "eval_every", "max_steps", "max_epochs", "threads", "sample_every"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise OptionError(f"{name.replace('_', '-')} must be at least 1, not {value}")
        check_seed(self.seed)
        if self.patience is not None and self.patience < 0:
            raise OptionError(f"patience must be zero (never stop early) or more, not {self.patience}")
        for name in ("lr", "max_time"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise OptionError(f"{name.replace('_', '-')} must be a positive number, not {value}")
        for name in ("clip", "weight_decay"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise OptionError(f"{name.replace('_', '-')} must be zero or positive, not {value}")
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.warmup < 0:
            raise OptionError(f"warmup must be zero or positive, not {self.warmup}")
        if self.device not in DEVICES:
            raise OptionError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")


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
    return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


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
    return loss.item(), detach_state(state)


@dataclass
class TrainResult:
    folder: Path
    steps: int
    chars: int
    elapsed_s: float
    best_val_bpc: float
    last_val_bpc: float
    stopped_because: str
    stop_signal: int | None = None  # stopped by this signal, saved without a last validation: resume it

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None


@dataclass
class Progress:
    """Where a run stands, besides its tensors: saved with them, so a resumed run continues exactly."""

    step: int = 0
    tokens: int = 0
    epoch: int = 0
    window: int = 0  # the next window of the epoch to train on
    elapsed_s: float = 0.0  # wall-clock time of the run so far, earlier sessions included
    best_val: float | None = None
    last_val: float | None = None
    evals_since_best: int = 0
    validation_s: float = 0.0  # of elapsed_s, the time spent on validation passes
    last_validation_s: float = 0.0
    bits_since_eval: float = 0.0  # for the training bpc reported at the next evaluation
    chars_since_eval: float = 0.0


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: finish the step, save, stop."""


class Trainer:
    """Runs the training loop for one model on one corpus and keeps its checkpoint folder current."""

    def __init__(self, model: LanguageModel, corpus: Corpus, config: TrainConfig, folder: Path, meta: dict, display: TrainingDisplay):
        self.model, self.corpus, self.config = model, corpus, config
        self.folder, self.meta, self.display = folder, meta, display
        self.device = resolve_device(config.device)
        self.group = distributed.setup(self.device)
        if not self.group.is_writer:  # rank 0 speaks for the run
            self.display = TrainingDisplay(quiet=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model.to(self.device)
        # DistributedDataParallel averages gradients over the ranks; alone, the model is used as it is
        self.parallel = DistributedDataParallel(model) if self.group.world > 1 else model
        if self.group.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed((config.seed + self.group.rank) % SEED_LIMIT)
        self.precision = resolve_precision(config.precision, self.device)
        self.tensorboard = open_tensorboard(folder) if config.tensorboard and self.group.is_writer else None
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
        self.vocabulary_entry, self.vocabulary_files = checkpoint.vocabulary_files(corpus.vocab)
        self.metrics: list[dict] = []  # every evaluation of the run, rewritten whole with each save
        self.saved = False  # the first save of a run replaces whatever the folder held, all of it
        self.saved_weights = False  # model.safetensors holds this run's weights
        self.pace_checked = False

    def restore(self, saved: checkpoint.ResumeState) -> None:
        """Continue from a saved run: weights, optimizer, lanes' hidden state, random numbers, position."""
        self.model.load_state_dict(saved.model)
        self.optimizer.load_state_dict(saved.optimizer)
        lanes_here = self.group.lanes_of(saved.lanes, self.config.batch_size)
        self.lane_state = None if lanes_here is None else move_state(lanes_here, self.device)
        torch.set_rng_state(saved.rng)
        if self.group.rank:  # dropout masks differ from rank to rank
            torch.manual_seed((self.config.seed + self.group.rank + saved.progress["step"]) % SEED_LIMIT)
        self.progress = Progress(**saved.progress)
        self.metrics = [r for r in checkpoint.read_metrics(self.folder) if r["step"] <= self.progress.step]
        self.saved = True
        self.saved_weights = store.current(self.folder, checkpoint.WEIGHTS).is_file()
        self.pace_checked = True  # the recipe's probe was another session's

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

    def learning_rate(self, fraction: float) -> float:
        """The rate for the next step: linear warm-up, then a decay that ends with the run."""
        c = self.config
        warm = min(1.0, (self.progress.step + 1) / c.warmup) if c.warmup else 1.0
        if c.schedule == "constant":
            return c.lr * warm
        fraction = min(fraction, 1.0)
        if c.schedule == "linear":
            return c.lr * warm * (1 - fraction)
        return c.lr * warm * (COSINE_FINAL_LR + (1 - COSINE_FINAL_LR) * 0.5 * (1 + math.cos(math.pi * fraction)))

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

    def stop_reason(self, epoch: int, elapsed: float) -> str | None:
        c = self.config
        if c.max_steps and self.progress.step >= c.max_steps:
            return f"reached --max-steps {c.max_steps}"
        if c.max_epochs and epoch >= c.max_epochs:
            return f"reached --max-epochs {c.max_epochs}"
        if c.max_time and elapsed >= c.max_time:
            return f"reached --max-time {c.max_time:g} s"
        if c.patience and self.progress.evals_since_best >= c.patience:
            return f"validation did not improve for {c.patience} evaluations (--patience)"
        return None

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """The first SIGINT or SIGTERM ends the run after the current step, saved; a second stops it at once."""

        def request_stop(signum, frame) -> None:
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def run(self) -> TrainResult:
        p = self.progress
        self.model.train()
        start = time.perf_counter() - p.elapsed_s
        state, reason = self.lane_state, None
        with self.display, self.stop_on_signals():
            for epoch, window, x, y in self.batches():
                reason = self.stop_reason(epoch, time.perf_counter() - start)
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
                    group["lr"] = self.learning_rate(fraction)
                bpc, state = self.train_step(x, y, state)
                if self.group.world > 1 and self.group.any([not math.isfinite(bpc)])[0]:
                    bpc = math.nan
                if not math.isfinite(bpc):
                    kept = f"the last good checkpoint in {self.folder} is kept" if self.saved else "nothing was saved"
                    raise ChargenError(f"the loss became {bpc} at step {p.step + 1}; try a lower --lr or a tighter --clip ({kept})")
                p.step += 1
                p.tokens += y.numel() * self.group.world
                p.bits_since_eval += bpc * y.numel()
                p.chars_since_eval += y.numel() / self.train_tokens_per_char
                p.epoch, p.window = (epoch + 1, 0) if window + 1 == self.steps_per_epoch else (epoch, window + 1)
                self.lane_state = None if p.window == 0 else state
                p.elapsed_s = time.perf_counter() - start
                if self.validation_due():
                    self.validate_and_save()
                if self.config.sample_every and p.step % self.config.sample_every == 0 and self.group.is_writer:
                    self.show_sample()
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
                self.save()  # no validation: the user is waiting
            elif p.chars_since_eval:  # steps since the last evaluation still deserve one
                self.validate_and_save()
        best, last = (math.inf if v is None else v for v in (p.best_val, p.last_val))
        return TrainResult(self.folder, p.step, self.chars, p.elapsed_s, best, last, reason or "done", self.stop_signal)

    def validation_due(self) -> bool:
        """Every --eval-every steps; by default every EVAL_EVERY, skipping those that would take a --max-time
        run's validations past VALIDATION_SHARE of its time: each pass over the text and save is time not trained."""
        c, p = self.config, self.progress
        if c.eval_every is not None:
            return p.step % c.eval_every == 0
        if p.step % EVAL_EVERY:
            return False
        if c.max_time is None:
            return True
        fits = p.validation_s + p.last_validation_s <= VALIDATION_SHARE * p.elapsed_s
        return self.group.any([fits])[0]  # ranks' clocks differ: all validate if any may

    def show_sample(self) -> None:
        """A few lines from the model as it is now, so the user watches it learn."""
        if self.device.type != "cpu":
            return  # the sampler's steps run on the CPU
        text = Sampler(self.model, self.corpus.vocab, precision="fp32").generate(length=200, temperature=0.8, seed=self.progress.step)
        self.model.train()
        self.display.log(f"sample at step {self.progress.step}:\n{text.strip()}\n")

    def validate_and_save(self) -> None:
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
        self.metrics.append({"step": p.step, "chars": self.chars, "elapsed_s": round(p.elapsed_s, 3), "train_bpc": train_bpc, "val_bpc": val})
        self.commit(lanes, improved)
        self.check_pace()
        if self.tensorboard is not None:
            self.tensorboard.add_scalars("bits per character", {"train": train_bpc, "validation": val}, self.chars)
            self.tensorboard.flush()
        self.display.show_val(val)
        mark = "  (best, saved)" if improved else ""
        self.display.log(f"step {p.step:>6}  train {train_bpc:.4f}  val {val:.4f} bpc{mark}")

    def save(self) -> None:
        """The run as it stands, without a validation; the weights too while the folder has none of this run's."""
        lanes = self.group.gather_lanes(self.lane_state)
        if self.group.is_writer:
            self.commit(lanes, weights=False)

    def commit(self, lanes: State | None, weights: bool) -> None:
        """Replace the checkpoint's files together (folder.py); a failed write (a full disk, a folder gone)
        stops the run with the previous checkpoint whole."""
        files = {
            checkpoint.RESUME: checkpoint.resume_bytes(self.model, self.optimizer, lanes, asdict(self.progress)),
            checkpoint.CONFIG: checkpoint.json_bytes(self.config_record()),
            checkpoint.METRICS: checkpoint.metrics_bytes(self.metrics),
        }
        if weights or not self.saved_weights:
            files[checkpoint.WEIGHTS] = checkpoint.weights_bytes(self.model)
        remove: tuple[str, ...] = ()
        if not self.saved:  # a run's first save replaces an --overwrite'n checkpoint whole
            files.update(self.vocabulary_files)
            remove = tuple(name for name in (checkpoint.TOKENIZER,) if name not in files)
        try:
            store.commit(self.folder, files, remove)
        except OSError as e:
            kept = "the previous one is kept" if self.saved else "nothing was saved"
            raise ChargenError(f"could not save the checkpoint in {self.folder} ({e.strerror or e}); {kept}") from None
        self.saved = self.saved_weights = True

    def check_pace(self) -> None:
        """Say so, once, when the run trains far faster or slower than the speed the recipe chose its model by."""
        probe = self.meta.get("recipe", {}).get("tokens_per_s")
        p = self.progress
        if self.pace_checked or not probe or p.elapsed_s <= p.validation_s:
            return
        self.pace_checked = True
        pace = p.tokens / (p.elapsed_s - p.validation_s)
        if 1 / PACE_WARNING <= pace / probe <= PACE_WARNING:
            return
        self.display.log(
            f"note: this run trains at {pace:,.0f} tokens/s, {pace / probe:.1f}× the {probe:,.0f} the recipe measured before it chose "
            f"{self.model.config.hidden} units: the machine's load changed. To repeat a run exactly, pin its model "
            f"(chargen train --config {self.folder / checkpoint.CONFIG} ...)"
        )

    def config_record(self) -> dict:
        p = self.progress
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "chargen_version": __version__,
            "model": self.model.config.to_dict(),
            "vocabulary": self.vocabulary_entry,
            "training": {**asdict(self.config), "precision_used": self.precision},
            **self.meta,
            "progress": {"step": p.step, "chars": self.chars, "elapsed_s": round(p.elapsed_s, 3), "best_val_bpc": p.best_val, "last_val_bpc": p.last_val},
        }


def move_state(state: State, device: torch.device) -> State:
    return tuple(s.to(device) for s in state) if isinstance(state, tuple) else state.to(device)


def open_tensorboard(folder: Path):
    """A SummaryWriter into folder/tensorboard; tensorboard is an optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionError("--tensorboard needs tensorboard: pip install 'chargen[tensorboard]'") from None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


def check_out(folder: Path, overwrite: bool) -> None:
    """Refuse to replace an existing checkpoint unless asked; nothing is replaced until the new run's first save."""
    if folder.exists() and not folder.is_dir():
        raise ChargenError(f"--out {folder} is a file, not a folder")
    if checkpoint.is_checkpoint(folder) and not overwrite:
        raise ChargenError(
            f"{folder} already holds a checkpoint: continue it with --resume {folder}, choose another --out, "
            "or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def run_folder(folder: Path) -> Iterator[None]:
    """Create the checkpoint folder if need be and hold it for the run (folder.hold); a folder the run
    created and never saved into is removed again, so a refused or failed run leaves nothing behind."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ChargenError(f"cannot write to {folder} ({e.strerror})") from None
    try:
        with store.hold(folder) if distributed.is_writer_process() else contextlib.nullcontext():
            yield
    finally:
        if created and distributed.is_writer_process() and not checkpoint.is_checkpoint(folder):
            (folder / store.LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


MODEL_OPTIONS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
LIMITS = {"max_steps", "max_epochs", "max_time", "patience", "device", "threads", "sample_every", "tensorboard"}  # what a resumed run may change


def check_space(folder: Path, model_config: ModelConfig) -> None:
    """Refuse to start a run whose checkpoint cannot fit on the disk."""
    # best weights and resume file (weights and two Adam moments), and the new set of both while a save replaces them
    needed = model_config.num_parameters() * 4 * (1 + 3) * 2
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ChargenError(f"{folder} has {free / 1e6:,.1f} MB free; this model's checkpoint needs about {needed / 1e6:,.1f} MB")


def check_length(data: Corpus, config: TrainConfig, path: Path) -> None:
    needed = config.batch_size * config.seq_len + 1
    if len(data.train) < needed:
        raise ChargenError(
            f"the training part of {path} has {len(data.train)} tokens, fewer than one batch window "
            f"(batch-size {config.batch_size} × seq-len {config.seq_len} + 1 = {needed}): "
            "use a longer text or a smaller --batch-size or --seq-len"
        )


def measure_speed(
    model_config: ModelConfig, data: Corpus, config: TrainConfig, seconds: float = 1.0, fewest_steps: int = 5, most_steps: int = 30, warmup_steps: int = 2
) -> float:
    """Training tokens per second of a model of this shape on this machine: the median step of at least a second of them,
    after two to warm up (the first builds the kernels, the second still runs slow).

    The median, because a shared machine can stall any one step; the fastest would promise more than a run keeps up.
    A second of steps rides out a short burst of load that a few steps would take for the machine's speed.
    Under torchrun every rank measures its share of the lanes at once, and the speeds add up.
    """
    device = resolve_device(config.device)
    group = distributed.setup(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = LanguageModel(model_config).to(device)
    optimizer = make_optimizer(model, config, device)
    share = group.share(config.batch_size)
    inputs, targets = (t[share] for t in lanes(data.train, config.batch_size))
    batches = itertools.cycle(windows(inputs, targets, config.seq_len))
    precision = resolve_precision(config.precision, device)
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


def plan_model(
    model_config: ModelConfig,
    data: Corpus,
    config: TrainConfig,
    hidden: int | None,
    dropout: float | None,
    lr: float | None,
    batch_size: int | None,
    skip_connections: bool | None,
) -> recipe.Recipe:
    """The default recipe (recipe.py) for this run: its budget from the limits, speeds measured on this machine."""

    def weights_at(width: int) -> int:
        return sum(p.numel() for p in LanguageModel(replace(model_config, hidden=width)).rnn.parameters())

    def budget_for(speed: float | None, lanes: int) -> float | None:
        limits = [config.max_steps * lanes * config.seq_len if config.max_steps else None,
                  config.max_epochs * len(data.train) if config.max_epochs else None,
                  config.max_time * speed * recipe.SPEED_KEPT if config.max_time and speed else None]
        return min((limit for limit in limits if limit is not None), default=None)

    def speed_at(width: int) -> float:
        return measure_speed(replace(model_config, hidden=width, dropout=dropout or 0.0), data, config)

    measure = speed_at if config.max_time else None
    return recipe.choose(len(data.train), config.seq_len, weights_at, budget_for, measure, hidden, dropout, lr, batch_size, skip_connections)


def describe(trainer: Trainer, path: Path) -> None:
    """The run in a line or two, as the trainer has set it up."""
    data, config, group = trainer.corpus, trainer.config, trainer.group
    unit = "characters" if data.vocab.kind == "char" else f"{data.vocab.kind} tokens"
    if group.world > 1:
        trainer.display.log(f"{group.world} processes: each trains {config.batch_size // group.world} of the {config.batch_size} lanes")
    trainer.display.log(
        f"{path}: {len(data.train):,} training and {len(data.val):,} validation {unit}, "
        f"{len(data.vocab):,} distinct; model {trainer.model.num_parameters():,} parameters; "
        f"precision {trainer.precision} on {trainer.device}; checkpoint in {trainer.folder}"
    )
    if "recipe" in trainer.meta:
        r = trainer.meta["recipe"]
        trainer.display.log(
            f"recipe: {r['hidden']} units per layer, dropout {r['dropout']:g}, learning rate {r['lr']:g}, {config.batch_size} lanes, "
            f"{'skip connections' if trainer.model.skip else 'no skip connections'} ({r['why']})"
        )


def train(
    corpus: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    val_fraction: float = 0.05,
    encoding: str = "utf-8",
    keep_newlines: bool = False,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    min_frequency: int = 2,
    embeddings: str | Path | None = None,
    freeze_embeddings: bool = False,
    cache: bool = True,
    quiet: bool = False,
    **options,
) -> TrainResult:
    """Train a model on a text file and write its checkpoint folder; options are ModelConfig and TrainConfig fields."""
    unknown = set(options) - MODEL_OPTIONS - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise OptionError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(sorted(unknown))}")
    chosen = {k: options.pop(k, None) for k in ("hidden", "dropout", "lr", "batch_size", "skip_connections")}  # None: the recipe decides
    given = options | {k: v for k, v in chosen.items() if v is not None}
    model_config = ModelConfig(vocab_size=1, **{k: v for k, v in given.items() if k in MODEL_OPTIONS})
    config = TrainConfig(**{k: v for k, v in given.items() if k not in MODEL_OPTIONS})
    check_corpus_options(corpus, out, encoding, val_fraction, embeddings)
    if freeze_embeddings and embeddings is None:
        raise OptionError("freeze-embeddings needs --embeddings FILE: there is nothing pre-trained to keep fixed")
    if embeddings is not None and model_config.input != "embedding":
        raise OptionError("embeddings needs --input embedding")
    resolve_precision(config.precision, resolve_device(config.device))  # a device or precision this machine lacks, before any work
    path = corpora.resolve(corpus).resolve()  # recorded as it is, so the checkpoint finds it from any folder
    vocab_options = {"tokenizer": tokenizer, "vocab_size": vocab_size, "min_frequency": min_frequency}
    data = Corpus.from_file(path, val_fraction, encoding, keep_newlines, cache, **vocab_options)
    check_length(data, config, path)
    folder = Path(out) if out is not None else checkpoint.DEFAULT_ROOT / path.stem
    check_out(folder, overwrite)
    model_config = replace(model_config, vocab_size=len(data.vocab))
    if chosen["hidden"] is not None:
        check_fits_in_memory(model_config, TRAINING_BYTES_PER_PARAMETER, "train", SMALLER)
    with run_folder(folder):
        plan = plan_model(model_config, data, config, **chosen) if None in chosen.values() else None
        if plan is not None:
            model_config = replace(model_config, hidden=plan.hidden, dropout=plan.dropout, skip_connections=plan.skip_connections)
            config = replace(config, lr=plan.lr, batch_size=plan.lanes)
        check_fits_in_memory(model_config, TRAINING_BYTES_PER_PARAMETER, "train", SMALLER)
        check_space(folder, model_config)
        torch.manual_seed(config.seed)
        model = LanguageModel(model_config)
        meta = {
            "corpus": {
                "path": str(path),
                "sha256": file_sha256(path),
                "characters": data.train_chars + data.val_chars,
                "train_characters": data.train_chars,
                "val_characters": data.val_chars,
                "train_tokens": len(data.train),
                "val_tokens": len(data.val),
                "val_fraction": val_fraction,
                "encoding": encoding,
                "keep_newlines": keep_newlines,
                **vocab_options,
            },
        }
        if plan is not None:
            meta["recipe"] = plan.to_dict()
        if embeddings is not None:
            covered = initialise_embedding(model.embedding, embeddings, data.vocab.token_texts, freeze_embeddings)
            meta["embeddings"] = {"path": str(Path(embeddings).resolve()), "covered": covered, "frozen": freeze_embeddings}
        try:
            trainer = Trainer(model, data, config, folder, meta, TrainingDisplay(quiet=quiet))
            if embeddings is not None:
                frozen = " (frozen)" if freeze_embeddings else ""
                trainer.display.log(f"{embeddings}: vectors for {meta['embeddings']['covered']:,} of {len(data.vocab):,} vocabulary tokens{frozen}")
            describe(trainer, path)
            return trainer.run()
        finally:
            distributed.shutdown()


def check_corpus_options(corpus: object, out: object, encoding: object, val_fraction: object, embeddings: object) -> None:
    """The Python API's arguments of the kinds the command line gives them."""
    for name, value, optional in (("corpus", corpus, False), ("out", out, True), ("embeddings", embeddings, True)):
        if not (isinstance(value, (str, os.PathLike)) or optional and value is None):
            raise OptionError(f"{name} must be a path, not {value!r}")
    if not isinstance(encoding, str):
        raise OptionError(f"encoding must be the name of a text encoding, not {encoding!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise OptionError(f"val-fraction must be a number, not {val_fraction!r}")


def resume(folder: str | Path, corpus: str | Path | None = None, *, cache: bool = True, quiet: bool = False, **limits) -> TrainResult:
    """Continue a saved run exactly where it stopped; only its limits (max_steps, max_time, ...) may change.

    The limits count the whole run, earlier sessions included. corpus names the text if it has moved.
    """
    changed = set(limits) - LIMITS
    if changed:
        raise OptionError(f"a resumed run keeps its options; only {', '.join(sorted(LIMITS))} can change, not {', '.join(sorted(changed))}")
    if not isinstance(folder, (str, os.PathLike)) or not (corpus is None or isinstance(corpus, (str, os.PathLike))):
        raise OptionError(f"resume takes a checkpoint folder and a corpus path, not {folder!r} and {corpus!r}")
    folder = Path(folder)
    ckpt = checkpoint.load(folder)
    with store.hold(folder) if distributed.is_writer_process() else contextlib.nullcontext():
        saved = checkpoint.read_resume(folder, ckpt)
        recorded = ckpt.config["corpus"]
        path = Path(corpus) if corpus is not None else Path(recorded["path"])
        if not path.is_file():
            raise ChargenError(f"the run's corpus {path} is not here: name it with  chargen train --resume {folder} CORPUS")
        if file_sha256(path) != recorded["sha256"]:
            raise ChargenError(f"{path} is not the text this run trained on (its sha256 differs)")
        options = {k: recorded[k] for k in ("tokenizer", "vocab_size", "min_frequency") if k in recorded}
        data = Corpus.from_file(path, recorded["val_fraction"], recorded["encoding"], recorded["keep_newlines"], cache, **options)
        if data.vocab != ckpt.vocab:
            raise ChargenError(f"{path} no longer gives the vocabulary in {folder}: the run cannot continue on it")
        training = {k: v for k, v in ckpt.config["training"].items() if k != "precision_used"}
        config = TrainConfig(**{**training, **limits})
        resolve_precision(config.precision, resolve_device(config.device))
        model = ckpt.model
        if ckpt.config.get("embeddings", {}).get("frozen"):
            model.embedding.weight.requires_grad_(False)
        meta = {k: ckpt.config[k] for k in ("corpus", "recipe", "embeddings") if k in ckpt.config}
        try:
            trainer = Trainer(model, data, config, folder, meta, TrainingDisplay(quiet=quiet))
            trainer.restore(saved)
            describe(trainer, path)
            trainer.display.log(f"resuming at step {trainer.progress.step:,} ({trainer.progress.elapsed_s:.0f} s trained so far)")
            return trainer.run()
        finally:
            distributed.shutdown()
