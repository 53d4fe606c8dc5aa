"""Sampling: warm the state up on a prompt, then draw one token at a time until the text has the characters asked for."""
from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from . import checkpoint
from . import state as states
from .vocabulary import Vocab
from .errors import ChargenError, OptionError, check_seed, check_types
from .model import LanguageModel
from .predict import WordPrediction, WordSearch, split_context
from .state import State
from .step import Stepper


MAX_SAMPLES = 1024  # streams in one batch: each holds its state and its text until the batch ends
MAX_HELD = 10_000_000  # characters a batch of samples may hold; one sample streams and holds none
MAX_HELD_BACK = 8  # tokens a BPE decoder may hold back for a character to complete (UTF-8 needs at most 4 bytes)
MAX_STOPS, MAX_STOP_LENGTH = 16, 100  # stop sequences: how many, and how long each (each token tests each one's beginnings)
MAX_LOGPROBS = 20  # alternatives given with each token


@dataclass
class SamplingOptions:
    """What sampling takes besides the prompt, checked when made: before anything is loaded or drawn."""

    length: int = 500  # characters after the prompt, for every tokenizer
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()  # the text ends just before the first of these it writes
    logprobs: int = 0  # with each token, the log probabilities of this many likeliest tokens

    def __post_init__(self) -> None:
        if isinstance(self.stop, (str, list)):
            self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        check_types(self)
        if self.length < 0:
            raise OptionError(f"length must be zero or positive, not {self.length}")
        if not (self.temperature >= 0 and _finite(self.temperature)):
            raise OptionError(f"temperature must be zero (greedy) or positive, not {self.temperature}")
        if self.top_k < 0:
            raise OptionError(f"top-k must be zero (off) or positive, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top-p must be in (0, 1], not {self.top_p}")
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise OptionError(f"num-samples must be between 1 and {MAX_SAMPLES:,}, not {self.num_samples:,}")
        if self.num_samples > 1 and self.length * self.num_samples > MAX_HELD:
            raise OptionError(
                f"length times num-samples is {self.length * self.num_samples:,} characters, more than the {MAX_HELD:,} a batch of samples "
                "may hold until it ends: for longer texts draw one sample at a time, which streams"
            )
        check_seed(self.seed)
        if len(self.stop) > MAX_STOPS or not all(isinstance(t, str) and 1 <= len(t) <= MAX_STOP_LENGTH for t in self.stop):
            raise OptionError(f"stop must be at most {MAX_STOPS} texts, each of 1 to {MAX_STOP_LENGTH:,} characters, not {self.stop!r}")
        if not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise OptionError(f"logprobs must be between 0 and {MAX_LOGPROBS}, not {self.logprobs}")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)


def _finite(x: float) -> bool:
    """math.isfinite, where a whole number too large for a float is not finite either."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def check_options(
    length: int, temperature: float, top_k: int, top_p: float, num_samples: int = 1, seed: int | None = None, stop: tuple[str, ...] = (), logprobs: int = 0
) -> SamplingOptions:
    """The sampling options checked, without a model: the command line calls it before it loads a checkpoint."""
    return SamplingOptions(length, temperature, top_k, top_p, num_samples, seed, stop, logprobs)


@dataclass
class Likeliest:
    """How many of the likeliest next words or tokens to give."""

    k: int

    def __post_init__(self) -> None:
        check_types(self)
        if self.k < 1:
            raise OptionError(f"k must be at least 1, not {self.k}")


def check_text(text: object, what: str = "prompt") -> str:
    """A text a vocabulary can encode: a str of whole characters (Python turns a byte that is not UTF-8 into a lone surrogate)."""
    if not isinstance(text, str):
        raise OptionError(f"{what} must be a string, not {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ChargenError(f"the {what} is not valid text: it holds bytes that are not UTF-8 (at character {e.start})") from None
    return text


def pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One id per row of logits (N, V): greedy at temperature 0, else drawn from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() if temperature == 1 else scale(logits.float(), temperature)
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before this id already reaches top_p
        outside[:, 0] = False  # the likeliest id stays however small top_p is (1e-300 is 0 in float32)
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; a row that overflows (a temperature near zero) keeps only its argmax, the greedy choice."""
    scaled = logits / temperature
    if temperature < 1:  # dividing by 1 or more cannot overflow
        overflowed = ~scaled.isfinite().all(-1, keepdim=True)
        if overflowed.any():
            greedy = torch.full_like(scaled, -math.inf).scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
            scaled = torch.where(overflowed, greedy, scaled)
    return scaled


def text_decoder(vocab: Vocab) -> Callable[[int], str]:
    """Each id's new text as soon as it is whole; bytes held back longer than any character needs come out as U+FFFD."""
    if vocab.kind == "char":
        return vocab.stream_decoder()
    decode, held = vocab.stream_decoder(), []

    def step(i: int) -> str:
        nonlocal decode
        piece = decode(i)
        if piece:
            held.clear()
            return piece
        held.append(i)
        if len(held) < MAX_HELD_BACK:
            return ""
        decode, text = vocab.stream_decoder(), vocab.decode(held) or "\ufffd"
        held.clear()
        return text

    return step


@dataclass
class Piece:
    """What one drawn token adds to a sample: its new text (cut at the length, and before a stop sequence), and,
    when asked, the token with its log probability and those of the likeliest tokens at its place."""

    text: str
    token: str | None = None
    logprob: float | None = None
    top: list[tuple[str, float]] | None = None


class StopText:
    """A text as it is written, cut just before the first stop sequence: what may be the start of one is held back
    until the next piece shows whether it is."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.held, self.stopped = stops, "", False

    def feed(self, piece: str) -> str:
        """The part of held + piece that is surely text."""
        if self.stopped or not self.stops:
            return "" if self.stopped else piece
        text = self.held + piece
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if found:
            self.stopped, self.held = True, ""
            return text[: min(found)]
        keep = max((self._started(stop, text) for stop in self.stops), default=0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    @staticmethod
    def _started(stop: str, text: str) -> int:
        """The length of the longest end of text that is a beginning of stop (shorter than stop): tried from the longest
        down, only where stop's character there is text's last, so a writing that matches a long stop costs one test."""
        last = text[-1:] or None
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if stop[k - 1] == last and text.endswith(stop[:k]):
                return k
        return 0

    def flush(self) -> str:
        """The text held back, once the sample ends without a stop."""
        held, self.held = self.held, ""
        return held


class Writing:
    """One sample as it is written: its decoder, the characters it still wants, its stop sequences, its log probabilities."""

    def __init__(self, vocab: Vocab, options: SamplingOptions):
        self.vocab, self.logprobs = vocab, options.logprobs
        self.decode, self.missing, self.stop = text_decoder(vocab), options.length, StopText(options.stop)

    @property
    def done(self) -> bool:
        return self.missing == 0

    def take(self, token: int, logits: torch.Tensor | None) -> Piece:
        """The piece a drawn token adds, given the logits (V,) it was drawn from (needed only for log probabilities)."""
        raw = self.decode(token)[: self.missing]
        self.missing -= len(raw)
        text = self.stop.feed(raw)
        if self.stop.stopped:
            self.missing = 0
        elif self.missing == 0:
            text += self.stop.flush()
        if not self.logprobs:
            return Piece(text)
        logp = logits.float().log_softmax(-1)
        top = logp.topk(min(self.logprobs, logp.numel()))
        names = self.vocab.token_texts
        return Piece(text, names[token], logp[token].item(), [(names[i], v) for i, v in zip(top.indices.tolist(), top.values.tolist())])


class Sampler:
    """A trained model and its vocabulary: writes text in the style of its corpus and predicts what comes next."""

    def __init__(self, model: LanguageModel, vocab: Vocab, folder: Path | None = None, precision: str = "auto"):
        self.model = model.eval()
        self.vocab = vocab
        self.folder = folder
        self.stepper = Stepper(model, precision)  # for generation; predictions always use float32 figures

    @cached_property
    def start_ids(self) -> torch.Tensor:
        """A newline, read before every prompt (nothing if the vocabulary has none).

        A model trained with its state carried from window to window has seldom read from a zero state,
        and from one a prompt can leave it lost (docs/sampling.md); the state after a newline is one it knows.
        """
        try:
            return torch.from_numpy(self.vocab.encode("\n")).long()
        except ChargenError:
            return torch.zeros(0, dtype=torch.long)

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """The ids the model reads before it writes: start_ids, then the prompt (or the first token, if both are empty)."""
        ids = torch.cat([self.start_ids, torch.from_numpy(self.vocab.encode(check_text(prompt), what="prompt")).long()])
        return ids if len(ids) else torch.zeros(1, dtype=torch.long)

    def generate_ids(
        self, prompt: str, length: int, temperature: float, top_k: int, top_p: float, seed: int | None, num_samples: int
    ) -> Iterator[torch.Tensor]:
        """Check everything now, then yield (num_samples,) ids one step at a time until every sample has length characters."""
        return (ids for ids, _ in self._samples(prompt, check_options(length, temperature, top_k, top_p, num_samples, seed)))

    def pieces(self, prompt: str, options: SamplingOptions) -> Iterator[list[Piece]]:
        """Check the prompt now; then, step by step, what each sample's token adds, until each has its length or has stopped."""
        return (pieces for _, pieces in self._samples(prompt, options))

    def _samples(self, prompt: str, options: SamplingOptions) -> Iterator[tuple[torch.Tensor, list[Piece]]]:
        prompt_ids = self.prompt_ids(prompt)
        generator = torch.Generator()
        if options.seed is None:
            generator.seed()
        else:
            generator.manual_seed(options.seed)
        return self._written(self._steps(prompt_ids, options, generator), options)

    @torch.inference_mode()
    def _steps(self, prompt_ids: torch.Tensor, options: SamplingOptions, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The prompt runs through the fused layers in one call; then one small step per new token: each step's ids and their logits."""
        logits, state = self.model(prompt_ids[None])
        logits, state = logits[:, -1].expand(options.num_samples, -1), states.repeat(state, options.num_samples)
        while True:
            ids = pick(logits, options.temperature, options.top_k, options.top_p, generator)
            yield ids, logits
            logits, state = self.stepper.step(ids, state)

    def _written(self, steps: Iterator[tuple[torch.Tensor, torch.Tensor]], options: SamplingOptions) -> Iterator[tuple[torch.Tensor, list[Piece]]]:
        """Draws until each sample is done: a character model draws length ids, a word or BPE model as many as that takes."""
        samples = [Writing(self.vocab, options) for _ in range(options.num_samples)]
        while not all(sample.done for sample in samples):
            ids, logits = next(steps)
            yield ids, [Piece("") if sample.done else sample.take(i, row) for sample, i, row in zip(samples, ids.tolist(), logits)]

    def stream(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: tuple[str, ...] = (),
    ) -> Iterator[str]:
        """The prompt, then the new text as soon as each token is drawn: length characters in all (or fewer, cut before
        the first stop sequence), in constant memory."""
        options = check_options(length, temperature, top_k, top_p, 1, seed, stop)
        return itertools.chain([prompt] if prompt else [], (piece.text for pieces in self.pieces(prompt, options) for piece in pieces if piece.text))

    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        num_samples: int = 1,
        stop: tuple[str, ...] = (),
    ) -> str | list[str]:
        """Prompt plus length new characters (fewer when a stop sequence comes first: it is left out), for every
        tokenizer; a list when num_samples > 1 (a batch, held until it ends)."""
        options = check_options(length, temperature, top_k, top_p, num_samples, seed, stop)
        texts = [io.StringIO() for _ in range(num_samples)]
        for pieces in self.pieces(prompt, options):
            for text, piece in zip(texts, pieces):
                text.write(piece.text)
        samples = [prompt + text.getvalue() for text in texts]
        return samples[0] if num_samples == 1 else samples

    @torch.inference_mode()
    def context(self, text: str) -> tuple[torch.Tensor, State]:
        """The logits (V,) for the token after text, and the state that reads it."""
        logits, state = self.model(self.prompt_ids(text)[None])
        return logits[0, -1], state

    def next_token_probs(self, text: str, k: int | None = None) -> list[tuple[str, float]]:
        """The model's distribution over the next token, most probable first (all tokens unless k)."""
        k = None if k is None else Likeliest(k).k
        probs = self.context(text)[0].float().softmax(-1)
        top = probs.topk(len(probs) if k is None else min(k, len(probs)))
        return [(self.vocab.token_texts[i], p) for i, p in zip(top.indices.tolist(), top.values.tolist())]

    def predict_next_word(self, text: str, k: int = 5) -> list[WordPrediction]:
        """The k most probable next words after text, best first, with the model's probabilities."""
        k = Likeliest(k).k
        context, lead = split_context(check_text(text))
        logits, state = self.context(context)
        return self.word_search.run(logits, state, lead, k)

    @cached_property
    def word_search(self) -> WordSearch:
        """Word probabilities in float32, equal to the products of next_token_probs."""
        return WordSearch(Stepper(self.model, "fp32"), self.vocab)


def load(path: str | Path | None = None, precision: str = "auto") -> Sampler:
    """The best model of a checkpoint folder (default: the newest under ./checkpoints/), ready to generate.

    precision "auto" steps in bf16 where the processor computes it natively; "fp32" gives the fused float32
    layer's figures exactly; "int8" steps with int8 weights, the fastest.
    """
    Stepper.kinds(precision)  # the steps run on the CPU: checked before the checkpoint is read
    ckpt = checkpoint.read(path if path is not None else checkpoint.latest())
    return Sampler(ckpt.model, ckpt.vocab, ckpt.folder, precision)
