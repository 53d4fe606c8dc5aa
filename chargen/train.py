"""Training: truncated BPTT over contiguous lanes, Adam, gradient clipping, validation and checkpoints."""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__, checkpoint
from .corpus import Corpus, file_sha256, lanes, read_text, windows
from .embeddings import initialise_embedding
from .errors import ChargenError, OptionError
from .model import PRECISIONS, LanguageModel, ModelConfig, State, autocast, detach_state, resolve_precision
from .progress import TrainingDisplay

LN2 = math.log(2)


@dataclass
class TrainConfig:
    seq_len: int = 128
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip: float = 5.0
    seed: int = 1337
    max_steps: int | None = None
    max_epochs: int | None = 10
    max_time: float | None = None
    eval_every: int = 250
    patience: int | None = 5
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "eval_every", "max_steps", "max_epochs", "patience"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise OptionError(f"{name.replace('_', '-')} must be at least 1, not {value}")
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


def bits_per_char(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits; the loss is always taken in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()) / LN2


@torch.inference_mode()
def bits_per_token(model: LanguageModel, data, batch_size: int, seq_len: int, precision: str = "fp32") -> float:
    """Mean bits per token over a whole stream, state carried from window to window."""
    n_lanes = max(1, min(batch_size, (len(data) - 1) // seq_len))
    inputs, targets = lanes(data, n_lanes)
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in windows(inputs, targets, seq_len):
        with autocast(precision):
            logits, state = model(x, state)
        total += bits_per_char(logits, y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


@dataclass
class TrainResult:
    folder: Path
    steps: int
    chars: int
    elapsed_s: float
    best_val_bpc: float
    last_val_bpc: float
    stopped_because: str


class Trainer:
    """Runs the training loop for one model on one corpus and keeps its checkpoint folder current."""

    def __init__(self, model: LanguageModel, corpus: Corpus, config: TrainConfig, folder: Path, meta: dict, display: TrainingDisplay):
        self.model, self.corpus, self.config = model, corpus, config
        self.folder, self.meta, self.display = folder, meta, display
        self.precision = resolve_precision(config.precision)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.inputs, self.targets = lanes(corpus.train, config.batch_size)
        # bits per token times tokens per character is bits per character, whatever the tokenizer
        self.train_tokens_per_char = len(corpus.train) / corpus.train_chars
        self.val_tokens_per_char = len(corpus.val) / corpus.val_chars
        self.steps_per_epoch = math.ceil(self.inputs.size(1) / config.seq_len)
        self.step = self.tokens = 0
        self.best_val = self.last_val = math.inf
        self.evals_since_best = 0
        self.vocabulary_entry = checkpoint.write_vocabulary(folder, corpus.vocab)

    @property
    def chars(self) -> int:
        """Characters of text trained on so far (tokens for a character model)."""
        return round(self.tokens / self.train_tokens_per_char)

    def batches(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(epoch, window index, inputs, targets) for ever; window 0 starts a new pass over the lanes."""
        for epoch in itertools.count():
            for i, (x, y) in enumerate(windows(self.inputs, self.targets, self.config.seq_len)):
                yield epoch, i, x, y

    def train_step(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[float, State]:
        with autocast(self.precision):
            logits, state = self.model(x, state)
        loss = bits_per_char(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        return loss.item(), detach_state(state)

    def fraction_done(self, epoch: int, window: int, elapsed: float) -> float:
        """How far training is towards the nearest of its stopping limits."""
        c = self.config
        parts = [0.0]
        if c.max_steps:
            parts.append(self.step / c.max_steps)
        if c.max_epochs:
            parts.append((epoch + window / self.steps_per_epoch) / c.max_epochs)
        if c.max_time:
            parts.append(elapsed / c.max_time)
        return max(parts)

    def stop_reason(self, epoch: int, elapsed: float) -> str | None:
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return f"reached --max-steps {c.max_steps}"
        if c.max_epochs and epoch >= c.max_epochs:
            return f"reached --max-epochs {c.max_epochs}"
        if c.max_time and elapsed >= c.max_time:
            return f"reached --max-time {c.max_time:g} s"
        if c.patience and self.evals_since_best >= c.patience:
            return f"validation did not improve for {c.patience} evaluations (--patience)"
        return None

    def run(self) -> TrainResult:
        c = self.config
        self.model.train()
        start = time.perf_counter()
        state, window_bits, window_chars = None, 0.0, 0
        reason = None
        with self.display:
            try:
                for epoch, window, x, y in self.batches():
                    reason = self.stop_reason(epoch, time.perf_counter() - start)
                    if reason:
                        break
                    if window == 0:
                        state = None  # each pass over the data starts from a zero state
                    bpc, state = self.train_step(x, y, state)
                    if not math.isfinite(bpc):
                        raise ChargenError(
                            f"the loss became {bpc} at step {self.step + 1}; try a lower --lr or a tighter --clip "
                            f"(the last good checkpoint in {self.folder} is kept)"
                        )
                    self.step += 1
                    self.tokens += y.numel()
                    window_bits += bpc * y.numel()
                    window_chars += y.numel() / self.train_tokens_per_char
                    elapsed = time.perf_counter() - start
                    if self.step % c.eval_every == 0:
                        self.validate_and_save(window_bits / window_chars, elapsed)
                        window_bits, window_chars = 0.0, 0
                    self.display.update(
                        self.fraction_done(epoch, window + 1, elapsed),
                        self.step,
                        window_bits / window_chars if window_chars else None,
                        None if math.isinf(self.last_val) else self.last_val,
                        self.chars / elapsed,
                    )
            except KeyboardInterrupt:
                reason = "interrupted"
            if window_chars:  # steps since the last evaluation still deserve one
                self.validate_and_save(window_bits / window_chars, time.perf_counter() - start)
        return TrainResult(self.folder, self.step, self.chars, time.perf_counter() - start, self.best_val, self.last_val, reason or "done")

    def validate_and_save(self, train_bpc: float, elapsed: float) -> None:
        c = self.config
        val = bits_per_token(self.model, self.corpus.val, c.batch_size, c.seq_len, self.precision) * self.val_tokens_per_char
        self.last_val = val
        improved = val < self.best_val
        if improved:
            self.best_val, self.evals_since_best = val, 0
        else:
            self.evals_since_best += 1
        record = {"step": self.step, "chars": self.chars, "elapsed_s": round(elapsed, 3), "train_bpc": train_bpc, "val_bpc": val}
        self.save(improved, record, elapsed)
        self.display.show_val(val)
        mark = "  (best, saved)" if improved else ""
        self.display.log(f"step {self.step:>6}  train {train_bpc:.4f}  val {val:.4f} bpc{mark}")

    def save(self, improved: bool, record: dict, elapsed: float) -> None:
        """Weights and optimizer first, config.json last: the config marks a complete checkpoint."""
        if improved:
            checkpoint.write_atomically(self.folder / checkpoint.WEIGHTS, checkpoint.weights_bytes(self.model))
        checkpoint.write_atomically(self.folder / checkpoint.LAST_WEIGHTS, checkpoint.weights_bytes(self.model))
        checkpoint.write_atomically(self.folder / checkpoint.OPTIMIZER, checkpoint.optimizer_bytes(self.optimizer))
        checkpoint.append_metrics(self.folder, record)
        config = {
            "format_version": checkpoint.FORMAT_VERSION,
            "chargen_version": __version__,
            "model": self.model.config.to_dict(),
            "vocabulary": self.vocabulary_entry,
            "training": {**asdict(self.config), "precision_used": self.precision},
            **self.meta,
            "progress": {
                "step": self.step,
                "chars": self.chars,
                "elapsed_s": round(elapsed, 3),
                "best_val_bpc": self.best_val,
                "last_val_bpc": self.last_val,
            },
        }
        checkpoint.write_json(self.folder / checkpoint.CONFIG, config)


def prepare_folder(folder: Path, overwrite: bool) -> None:
    """Refuse to replace an existing checkpoint unless asked, and check the folder is writable now."""
    if folder.exists() and not folder.is_dir():
        raise ChargenError(f"--out {folder} is a file, not a folder")
    if checkpoint.is_checkpoint(folder):
        if not overwrite:
            raise ChargenError(f"{folder} already holds a checkpoint: choose another --out, or pass --overwrite to replace it")
        (folder / checkpoint.METRICS).unlink(missing_ok=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.write_atomically(folder / ".write-test", b"")
        (folder / ".write-test").unlink()
    except OSError as e:
        raise ChargenError(f"cannot write to {folder} ({e.strerror})") from None


MODEL_OPTIONS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}


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
    quiet: bool = False,
    **options,
) -> TrainResult:
    """Train a model on a text file and write its checkpoint folder; options are ModelConfig and TrainConfig fields."""
    unknown = set(options) - MODEL_OPTIONS - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train() got unknown options: {', '.join(sorted(unknown))}")
    model_config = ModelConfig(vocab_size=1, **{k: v for k, v in options.items() if k in MODEL_OPTIONS})
    config = TrainConfig(**{k: v for k, v in options.items() if k not in MODEL_OPTIONS})
    if freeze_embeddings and embeddings is None:
        raise OptionError("freeze-embeddings needs --embeddings FILE: there is nothing pre-trained to keep fixed")
    if embeddings is not None and model_config.input != "embedding":
        raise OptionError("embeddings needs --input embedding")
    path = Path(corpus)
    data = Corpus.from_text(read_text(path, encoding, keep_newlines), val_fraction, tokenizer, vocab_size, min_frequency)
    needed = config.batch_size * config.seq_len + 1
    if len(data.train) < needed:
        raise ChargenError(
            f"the training part of {path} has {len(data.train)} tokens, fewer than one batch window "
            f"(batch-size {config.batch_size} × seq-len {config.seq_len} + 1 = {needed}): "
            "use a longer text or a smaller --batch-size or --seq-len"
        )
    folder = Path(out) if out is not None else checkpoint.DEFAULT_ROOT / path.stem
    prepare_folder(folder, overwrite)
    torch.manual_seed(config.seed)
    model = LanguageModel(replace(model_config, vocab_size=len(data.vocab)))
    display = TrainingDisplay(quiet=quiet)
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
        },
    }
    if embeddings is not None:
        covered = initialise_embedding(model.embedding, embeddings, data.vocab.token_texts, freeze_embeddings)
        meta["embeddings"] = {"path": str(embeddings), "covered": covered, "frozen": freeze_embeddings}
        display.log(f"{embeddings}: vectors for {covered:,} of {len(data.vocab):,} vocabulary tokens{' (frozen)' if freeze_embeddings else ''}")
    unit = "characters" if tokenizer == "char" else f"{tokenizer} tokens"
    display.log(
        f"{path}: {len(data.train):,} training and {len(data.val):,} validation {unit}, "
        f"{len(data.vocab):,} distinct; model {model.num_parameters():,} parameters; "
        f"precision {resolve_precision(config.precision)}; checkpoint in {folder}"
    )
    return Trainer(model, data, config, folder, meta, display).run()
