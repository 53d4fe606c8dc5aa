"""Evaluation of a trained model on a text: bits per character and next-word accuracy."""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .corpus import read_text
from .dynamic import DynamicOptions, dynamic_bits
from .errors import OptionError, check_types
from .inputs import validation_split
from .ngram import WordTrigram
from .predict import is_word_char, split_point
from .sample import Sampler, check_text

CHUNK = 4096  # tokens per model call when reading a long text


def word_pattern(text: str) -> re.Pattern:
    """Runs of letters and combining marks, as a regex over the word characters this text uses."""
    chars = sorted(c for c in set(text) if is_word_char(c))
    return re.compile(f"[{re.escape(''.join(chars))}]+" if chars else "(?!)")


def words(text: str) -> list[str]:
    return word_pattern(text).findall(text)


def word_positions(text: str) -> list[tuple[int, str]]:
    """(offset, word) of each word that follows whitespace: the positions next-word accuracy scores."""
    return [(m.start(), m.group()) for m in word_pattern(text).finditer(text) if m.start() > 0 and text[m.start() - 1].isspace()]


def scored_positions(text: str, max_words: int | None) -> list[tuple[int, str]]:
    """The word positions next-word accuracy scores, at most max_words spread evenly: those with text before them to predict from."""
    return evenly([(p, w) for p, w in word_positions(text) if split_point(text, p)[0]], max_words)


def evenly(items: list, n: int | None) -> list:
    """At most n items spread evenly over the list (all of them when n is None)."""
    if n is None or len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


@dataclass
class Report:
    file: str
    characters: int
    tokens: int
    bits_per_char: float
    perplexity: float  # per token: per character for a character model, per word or subword otherwise
    words_scored: int
    top1: float
    top5: float
    baseline_top1: float | None = None
    baseline_top5: float | None = None
    seconds: float = 0.0  # the static evaluation's time
    dynamic_bits_per_char: float | None = None  # with dynamic evaluation: the model learning as it reads
    dynamic_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scoring:
    """What evaluate scores besides the bits: at most words positions (all when None), and the trigram's guesses if baseline."""

    words: int | None = 1000
    baseline: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        if self.words is not None and self.words < 1:
            raise OptionError(f"words must be at least 1, not {self.words}")


@torch.inference_mode()
def evaluate_text(sampler: Sampler, text: str, max_words: int | None = 1000, k: int = 5, baseline: WordTrigram | None = None) -> dict:
    """Read the text once as one stream, state carried: total bits, and top-1/top-k next-word hits at chosen words.

    The cost is one pass over the text's tokens, one model step after another (a stream, not lanes side by
    side as training validates), plus a word search at each scored word; nothing grows faster than the text.
    """
    model, vocab = sampler.model, sampler.vocab
    pattern = word_pattern(check_text(text, "text to evaluate"))
    positions = scored_positions(text, max_words)
    search = sampler.word_search
    state, last_logits, bits, tokens = None, None, 0.0, 0

    def read(segment: str) -> None:
        nonlocal state, last_logits, bits, tokens
        ids = torch.from_numpy(vocab.encode(segment)).long()
        for chunk in ids.split(CHUNK):
            logits, state = model(chunk[None], state)
            if last_logits is not None:  # the first token of the text has nothing before it to predict it
                bits += F.cross_entropy(last_logits[None].float(), chunk[:1]).item() / math.log(2)
            bits += F.cross_entropy(logits[0, :-1].float(), chunk[1:], reduction="sum").item() / math.log(2)
            tokens += len(chunk)
            last_logits = logits[0, -1]

    hits = {"top1": 0, "top5": 0, "baseline_top1": 0, "baseline_top5": 0}
    done = 0
    for position, word in positions:
        end, lead = split_point(text, position)
        read(text[done:end])
        done = end
        predicted = [p.word for p in search.run(last_logits, state, lead, k)]
        hits["top1"] += predicted[:1] == [word]
        hits["top5"] += word in predicted
        if baseline:
            guesses = baseline.top(pattern.findall(text, max(0, position - 200), position)[-2:], k)
            hits["baseline_top1"] += guesses[:1] == [word]
            hits["baseline_top5"] += word in guesses
    if done < len(text):
        read(text[done:])
    n = max(len(positions), 1)
    rates = {name: count / n for name, count in hits.items()} if baseline else {"top1": hits["top1"] / n, "top5": hits["top5"] / n}
    return {"tokens": tokens, "bits": bits, "words_scored": len(positions), **rates}


def evaluate(
    path: str | Path | None = None, file: str | Path | None = None, max_words: int | None = 1000, baseline: bool = False,
    dynamic: DynamicOptions | None = None,
) -> Report:
    """Bits per character, perplexity and next-word top-1/top-5 accuracy of a checkpoint on a text; with dynamic, also
    the bits per character of dynamic evaluation, beside the static figure.

    Without a file, the text is the validation part of the checkpoint's own corpus.
    """
    Scoring(max_words, baseline)
    folder = Path(path) if path is not None else checkpoint.latest()
    ckpt = checkpoint.read(folder)
    sampler = Sampler(ckpt.model, ckpt.vocab, folder)
    if file is None:
        text, train_text = validation_split(ckpt.record.corpus)
        name = f"{ckpt.record.corpus.name} (validation part)"
    else:
        corpus = ckpt.record.corpus.options
        text = read_text(file, corpus.encoding, corpus.keep_newlines)
        name, train_text = str(file), None
    if baseline and train_text is None:
        train_text = validation_split(ckpt.record.corpus)[1]  # the baseline counts what the model trained on
    trigram = WordTrigram.fit(words(train_text)) if baseline else None
    start = time.perf_counter()
    r = evaluate_text(sampler, text, max_words, 5, trigram)
    seconds = time.perf_counter() - start
    dynamic_bpc = dynamic_seconds = None
    if dynamic is not None:
        start = time.perf_counter()
        dynamic_bpc = dynamic_bits(ckpt.model, torch.from_numpy(ckpt.vocab.encode(text)).long(), dynamic).sum().item() / len(text)
        dynamic_seconds = time.perf_counter() - start
    return Report(
        file=name,
        characters=len(text),
        tokens=r["tokens"],
        bits_per_char=r["bits"] / len(text),
        perplexity=2 ** (r["bits"] / max(r["tokens"] - 1, 1)),
        words_scored=r["words_scored"],
        top1=r["top1"],
        top5=r["top5"],
        baseline_top1=r.get("baseline_top1"),
        baseline_top5=r.get("baseline_top5"),
        seconds=seconds,
        dynamic_bits_per_char=dynamic_bpc,
        dynamic_seconds=dynamic_seconds,
    )
