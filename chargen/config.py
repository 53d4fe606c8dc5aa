"""The options of a run, grouped by what they shape and checked when made: how its text is read and encoded
(CorpusOptions) and how its model is trained (TrainConfig). The model's own are ModelConfig (model.py), and
the five the recipe chooses unless given are recipe.Choices."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from . import recipe
from .errors import OptionError, check_seed, check_types
from .model import DEVICES, PRECISIONS
from .tokenizer import check_vocab_options

SCHEDULES = ("linear", "cosine", "constant")
DEFAULT_EPOCHS = 10  # the limit of a run given none


@dataclass(frozen=True)
class CorpusOptions:
    """How text files become a training stream: their split, decoding, line endings, the separator between them, and the tokenizer."""

    val_fraction: float = 0.05  # the last part of the text, held out for validation
    encoding: str = "utf-8"
    keep_newlines: bool = False  # keep \r\n and lone \r as they are
    tokenizer: str = "char"  # char, word or bpe
    vocab_size: int | None = None  # the largest word or BPE vocabulary; None: tokenizer.DEFAULT_VOCAB_SIZE
    min_frequency: int = 2  # fewest occurrences for a word or merge to enter the vocabulary
    separator: str = "\n"  # between the texts of many files: after a text's last newline, a blank line

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 < self.val_fraction < 1:
            raise OptionError(f"val-fraction must be between 0 and 1 (exclusive), not {self.val_fraction}")
        check_vocab_options(self.tokenizer, self.vocab_size, self.min_frequency)

    @classmethod
    def take(cls, options: dict) -> CorpusOptions:
        """Those of the options that shape the corpus, taken out of options."""
        return cls(**{f.name: options.pop(f.name) for f in fields(cls) if f.name in options})

    def to_dict(self) -> dict:
        return asdict(self)


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



