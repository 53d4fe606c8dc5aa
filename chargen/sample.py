"""Sampling: warm the state up on a prompt, then draw one token at a time."""
from __future__ import annotations

import itertools
import math
from functools import cached_property
from collections.abc import Iterator
from pathlib import Path

import torch

from . import checkpoint
from .corpus import Vocabulary
from .errors import ChargenError, OptionError
from .model import PRECISIONS, LanguageModel, State
from .predict import WordPrediction, WordSearch, split_context
from .step import Stepper
from .tokenizer import TokenVocabulary


def check_options(length: int, temperature: float, top_k: int, top_p: float, num_samples: int = 1) -> None:
    if not length >= 0:
        raise OptionError(f"length must be zero or positive, not {length}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise OptionError(f"temperature must be zero (greedy) or positive, not {temperature}")
    if not top_k >= 0:
        raise OptionError(f"top-k must be zero (off) or positive, not {top_k}")
    if not 0 < top_p <= 1:
        raise OptionError(f"top-p must be in (0, 1], not {top_p}")
    if not num_samples >= 1:
        raise OptionError(f"num-samples must be at least 1, not {num_samples}")


def pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One id per row of logits (N, V): greedy at temperature 0, else drawn from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() if temperature == 1 else logits.float() / temperature
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before this id already reaches top_p
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def repeat_state(state: State, n: int) -> State:
    """The state of one stream copied to n streams (the batch is dimension 1)."""
    if isinstance(state, tuple):
        return tuple(s.repeat(1, n, 1) for s in state)
    return state.repeat(1, n, 1)


class Sampler:
    """A trained model and its vocabulary: writes text in the style of its corpus and predicts what comes next."""

    def __init__(self, model: LanguageModel, vocab: Vocabulary | TokenVocabulary, folder: Path | None = None, precision: str = "auto"):
        self.model = model.eval()
        self.vocab = vocab
        self.folder = folder
        self.stepper = Stepper(model, precision)  # for generation; predictions always use float32 figures

    @cached_property
    def start_ids(self) -> torch.Tensor:
        """A newline, read before every prompt (nothing if the vocabulary has none).

        A model trained with its state carried from window to window has seldom read from a zero state,
        and from one a prompt can leave it lost (README, Sampling); the state after a newline is one it knows.
        """
        try:
            return torch.from_numpy(self.vocab.encode("\n")).long()
        except ChargenError:
            return torch.zeros(0, dtype=torch.long)

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """The ids the model reads before it writes: start_ids, then the prompt (or the first token, if both are empty)."""
        ids = torch.cat([self.start_ids, torch.from_numpy(self.vocab.encode(prompt, what="prompt")).long()])
        return ids if len(ids) else torch.zeros(1, dtype=torch.long)

    def generate_ids(
        self, prompt: str, length: int, temperature: float, top_k: int, top_p: float, seed: int | None, num_samples: int
    ) -> Iterator[torch.Tensor]:
        """Check everything now, then yield (num_samples,) ids one step at a time."""
        check_options(length, temperature, top_k, top_p, num_samples)
        prompt_ids = self.prompt_ids(prompt)
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return self._steps(prompt_ids, length, temperature, top_k, top_p, generator, num_samples)

    @torch.inference_mode()
    def _steps(self, prompt_ids, length, temperature, top_k, top_p, generator, num_samples) -> Iterator[torch.Tensor]:
        """The prompt runs through the fused layers in one call; then one small step per new token."""
        logits, state = self.model(prompt_ids[None])
        logits, state = logits[:, -1].expand(num_samples, -1), repeat_state(state, num_samples)
        for i in range(length):
            ids = pick(logits, temperature, top_k, top_p, generator)
            yield ids
            if i + 1 < length:
                logits, state = self.stepper.step(ids, state)

    def stream(
        self, prompt: str = "", length: int = 500, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None
    ) -> Iterator[str]:
        """The prompt, then each new character as soon as it is drawn."""
        steps = self.generate_ids(prompt, length, temperature, top_k, top_p, seed, 1)
        decode = self.vocab.stream_decoder()
        return itertools.chain([prompt] if prompt else [], (decode(ids[0]) for ids in steps))

    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        num_samples: int = 1,
    ) -> str | list[str]:
        """Prompt plus length new tokens (characters for a character model); a list when num_samples > 1."""
        steps = list(self.generate_ids(prompt, length, temperature, top_k, top_p, seed, num_samples))
        ids = torch.stack(steps, dim=1) if steps else torch.empty(num_samples, 0, dtype=torch.long)
        texts = [prompt + self.vocab.decode(row) for row in ids]
        return texts[0] if num_samples == 1 else texts


    @torch.inference_mode()
    def context(self, text: str) -> tuple[torch.Tensor, State]:
        """The logits (V,) for the token after text, and the state that reads it."""
        logits, state = self.model(self.prompt_ids(text)[None])
        return logits[0, -1], state

    def next_token_probs(self, text: str, k: int | None = None) -> list[tuple[str, float]]:
        """The model's distribution over the next token, most probable first (all tokens unless k)."""
        probs = self.context(text)[0].float().softmax(-1)
        top = probs.topk(min(k or len(probs), len(probs)))
        return [(self.vocab.token_texts[i], p) for i, p in zip(top.indices.tolist(), top.values.tolist())]

    def predict_next_word(self, text: str, k: int = 5) -> list[WordPrediction]:
        """The k most probable next words after text, best first, with the model's probabilities."""
        if not k >= 1:
            raise OptionError(f"k must be at least 1, not {k}")
        context, lead = split_context(text)
        logits, state = self.context(context)
        return self.word_search.run(logits, state, lead, k)

    @cached_property
    def word_search(self) -> WordSearch:
        """Word probabilities in float32, equal to the products of next_token_probs."""
        return WordSearch(Stepper(self.model, "fp32"), self.vocab)


def load(path: str | Path | None = None, precision: str = "auto") -> Sampler:
    """The best model of a checkpoint folder (default: the newest under ./checkpoints/), ready to generate.

    precision "auto" steps in bf16 where the processor computes it natively; "fp32" gives the fused
    float32 layer's figures exactly.
    """
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    ckpt = checkpoint.load(path if path is not None else checkpoint.latest())
    return Sampler(ckpt.model, ckpt.vocab, ckpt.folder, precision)
