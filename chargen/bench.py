"""`chargen bench`: chargen's speed next to plain PyTorch references, measured side by side in one run.

Shared machines are noisy, so the figures that matter are the ratios of runs made minutes apart in
the same process; each measurement is short and follows a warm-up.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .config import TrainConfig
from .corpus import Corpus, lanes, read_text, windows
from .errors import OptionError
from .model import LanguageModel, ModelConfig, cpu_has_native_bf16, resolve_precision
from .progress import TrainingDisplay
from .sample import MAX_SAMPLES, Sampler
from .step import has_int8_kernels
from .state import State
from .loop import Trainer, bits_per_token, optimizer_step
from .runtime import Runtime
from .vocabulary import Vocab


@dataclass
class Row:
    measure: str
    chargen: float
    reference: float | None
    unit: str

    @property
    def ratio(self) -> float | None:
        return self.chargen / self.reference if self.reference else None


class ReferenceLSTM(nn.Module):
    """The plain model every char-rnn port writes: embedding, nn.LSTM, linear, run in float32."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """nn.LSTM's own (h, c) is already chargen's state of an LSTM."""
        output, state = self.lstm(self.embedding(tokens), state)
        return self.head(output), state


def timed(fn: Callable[[], int], repeats: int = 3) -> float:
    """Units of work per second of fn (which returns how many units it did): the median of repeats after a warm-up."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        units = fn()
        rates.append(units / (time.perf_counter() - start))
    return statistics.median(rates)


def training_speed(corpus: Corpus, steps: int, batch_size: int, seq_len: int, cell: str = "lstm") -> tuple[float, float]:
    """Characters per second: chargen's default training step for a 2 × 512 model of the cell, and the plain float32 LSTM of that shape."""
    config = TrainConfig(batch_size=batch_size, seq_len=seq_len)
    model = LanguageModel(ModelConfig(vocab_size=len(corpus.vocab), cell=cell))
    trainer = Trainer(model, corpus, config, Runtime.resolve(config.device, config.precision), TrainingDisplay(quiet=True))
    batches = trainer.batches()

    def chargen_steps() -> int:
        state = None
        for _ in range(steps):
            _, _, x, y = next(batches)
            _, state = trainer.train_step(x, y, state)
        return steps * x.numel()

    ours = timed(chargen_steps)
    m = model.config
    reference = ReferenceLSTM(len(corpus.vocab), m.embedding_dim, m.hidden, m.layers)
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr)
    batches = trainer.batches()

    def reference_steps() -> int:
        state = None
        for _ in range(steps):
            _, _, x, y = next(batches)
            _, state = optimizer_step(reference, optimizer, x, y, state, "fp32", config.clip)
        return steps * x.numel()

    return ours, timed(reference_steps)


def sampling_speed(vocab: Vocab, length: int, streams: int, cell: str = "lstm") -> dict[str, float]:
    """Characters per second for one stream and for a batch of streams, the per-character nn.LSTM loop,
    and seconds from a loaded model to its first character."""
    model = LanguageModel(ModelConfig(vocab_size=len(vocab), cell=cell))
    sampler = Sampler(model, vocab)
    prompt = "The "
    one = timed(lambda: len(sampler.generate(prompt, length, seed=1)) - len(prompt))
    int8 = Sampler(model, vocab, precision="int8") if has_int8_kernels() else None
    one_int8 = timed(lambda: len(int8.generate(prompt, length, seed=1)) - len(prompt)) if int8 else None
    batch = timed(lambda: sum(len(t) - len(prompt) for t in sampler.generate(prompt, length, seed=1, num_samples=streams)))

    @torch.inference_mode()
    def module_loop() -> int:
        logits, state = model(sampler.prompt_ids(prompt)[None])
        generator = torch.Generator().manual_seed(1)
        for _ in range(length // 4):
            ids = torch.multinomial(logits[:, -1].softmax(-1), 1, generator=generator)
            logits, state = model(ids, state)
        return length // 4

    loop = timed(module_loop)
    start = time.perf_counter()
    next(Sampler(model, vocab).generate_ids(prompt, 1, 1.0, 0, 1.0, 1, 1))
    first = time.perf_counter() - start
    return {"one": one, "one_int8": one_int8, "batch": batch, "loop": loop, "first": first}


def encoding_speed(path: Path) -> float:
    """Megabytes of text per second read, decoded, split and encoded."""
    size = path.stat().st_size

    def encode() -> int:
        Corpus.from_text(read_text(path), 0.05)
        return size

    return timed(encode) / 1e6


def processor() -> str:
    """What the figures depend on most: the kernels PyTorch picked here, and whether bf16 is native."""
    return f"{torch.backends.cpu.get_cpu_capability()}, {'native bf16' if cpu_has_native_bf16() else 'no native bf16'}, {torch.get_num_threads()} threads"


def run(
    corpus_path: Path | None, steps: int = 10, length: int = 2000, streams: int = 32,
    batch_size: int = TrainConfig.batch_size, seq_len: int = TrainConfig.seq_len, cell: str = "lstm",
) -> list[Row]:
    """Every measurement of a model of the cell, in one process, on this machine."""
    ModelConfig(vocab_size=1, cell=cell)  # checks it before anything is timed
    for name, value, least, most in (("steps", steps, 1, None), ("length", length, 4, None), ("streams", streams, 1, MAX_SAMPLES)):
        if value < least or most is not None and value > most:
            raise OptionError(f"{name} must be at least {least}{'' if most is None else f' and at most {most:,}'}, not {value}")
    TrainConfig(batch_size=batch_size, seq_len=seq_len)  # checks them before anything is timed
    if corpus_path is not None:
        corpus = Corpus.from_text(read_text(corpus_path), 0.05)
    else:  # any text trains at the same speed: a synthetic one of English's alphabet size
        generator = torch.Generator().manual_seed(0)
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-\n()0123456789"
        text = "".join(letters[i] for i in torch.randint(len(letters), (2_000_000,), generator=generator).tolist())
        corpus = Corpus.from_text(text, 0.05)
    sampling = sampling_speed(corpus.vocab, length, streams, cell)
    ours, reference = training_speed(corpus, steps, batch_size, seq_len, cell)
    rows = [
        Row(f"training ({ModelConfig.layers} × {ModelConfig.hidden} {cell}, batch {batch_size} × {seq_len})", ours, reference, "chars/s"),
        Row(f"sampling, one stream, {resolve_precision('auto')}", sampling["one"], sampling["loop"], "chars/s"),
        *([Row("sampling, one stream, int8", sampling["one_int8"], sampling["loop"], "chars/s")] if sampling["one_int8"] else []),
        Row(f"sampling, {streams} streams in one batch", sampling["batch"], sampling["loop"], "chars/s"),
        Row("loaded model to first character", sampling["first"], None, "s"),
    ]
    if corpus_path is not None:
        rows.append(Row(f"reading and encoding {corpus_path.name}", encoding_speed(corpus_path), None, "MB/s"))
    return rows


@dataclass
class ReferenceResult:
    val_bpc: float
    steps: int
    chars: int
    seconds: float
    precision: str


def reference_run(corpus_path: Path | None, seconds: float, precision: str = "auto", seed: int = 1337) -> ReferenceResult:
    """Train the plain reference LSTM on the recipe protocol for `seconds`, then validate it over the whole split.

    The reference is what a careful user writes by hand: embedding 128, nn.LSTM 2 × 512, linear head,
    Adam 2e-3 at a constant rate, 64 lanes × 128 characters, global-norm clip 5, state carried,
    bfloat16 autocast where the processor has it natively. chargen's default recipe is measured against
    it by `chargen train --max-time`.
    """
    precision = resolve_precision(precision)
    if corpus_path is None:
        raise OptionError("--reference needs --corpus FILE: the text to train the reference on")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise OptionError(f"reference must be a positive number of seconds, not {seconds}")
    corpus = Corpus.from_file(corpus_path, 0.1)
    torch.manual_seed(seed)
    model = ReferenceLSTM(len(corpus.vocab), 128, 512, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    inputs, targets = lanes(corpus.train, 64)
    steps, chars, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state = None  # each pass starts from a zero state
        for x, y in windows(inputs, targets, 128):
            if time.perf_counter() - start >= seconds:
                break
            _, state = optimizer_step(model, optimizer, x, y, state, precision, clip=5.0)
            steps, chars = steps + 1, chars + y.numel()
    elapsed = time.perf_counter() - start
    with torch.inference_mode():
        val = bits_per_token(model, corpus.val, 64, 128, precision)
    return ReferenceResult(val, steps, chars, elapsed, precision)
