"""Next-word prediction: an exact best-first search over token continuations up to a word boundary.

A word is a run of letters (and combining marks). After a text that does not end in whitespace, the
next word is " " + letters; after whitespace, just letters. Its probability is the model's
probability of the tokens that spell it (the tokenizer's own spelling of it, for word and BPE
vocabularies) times the probability that the token after it is not a letter: the product of real
next-token probabilities, never renormalised. Prefixes are expanded most probable first, and a word
is reported only when no unexplored prefix is more probable, so the k words returned are the model's
k most probable words, in order, with their exact probabilities. A prefix less probable than k words
already found is never expanded: none of its words could rank among the k.
"""
from __future__ import annotations

import heapq
import itertools
import math
import unicodedata
from dataclasses import dataclass

import torch

from . import state as states
from .vocabulary import Vocab
from .state import State
from .step import Stepper

MAX_EXPANSIONS = 4096  # prefixes the search may expand before it gives up on finding more words
BATCH = 32  # prefixes expanded in one batched model step


@dataclass(frozen=True)
class WordPrediction:
    word: str
    probability: float


def is_word_char(c: str) -> bool:
    return unicodedata.category(c)[0] in "LM"


def split_context(text: str) -> tuple[str, str]:
    """(context, lead): a trailing space belongs to the next word, so "of " predicts as "of" + " France"."""
    end, lead = split_point(text, len(text))
    return text[:end], lead


def split_point(text: str, end: int) -> tuple[int, str]:
    """split_context of text[:end] without copying it: where the context ends, and the lead."""
    if end and text[end - 1] == " ":
        return end - 1, " "
    if not end or text[end - 1].isspace():
        return end, ""
    return end, " "


@dataclass
class TokenClasses:
    """Which tokens can start, continue or end a word, from their text."""

    letters: torch.Tensor  # all letters: starts a word after whitespace, continues one
    spaced: torch.Tensor  # " " + letters: starts a word after a non-space
    space: torch.Tensor  # exactly " "
    boundary: torch.Tensor  # empty or starting with a non-letter: ends a word

    @classmethod
    def of(cls, vocab: Vocab) -> TokenClasses:
        texts = vocab.token_texts
        letters = [bool(t) and all(map(is_word_char, t)) for t in texts]
        spaced = [len(t) > 1 and t[0] == " " and all(map(is_word_char, t[1:])) for t in texts]
        boundary = [not t or not is_word_char(t[0]) for t in texts]
        as_tensor = lambda flags: torch.tensor(flags, dtype=torch.bool)  # noqa: E731
        return cls(as_tensor(letters), as_tensor(spaced), as_tensor([t == " " for t in texts]), as_tensor(boundary))


@dataclass
class _Prefix:
    text: str  # what follows the context so far, lead included
    ids: tuple[int, ...]
    state: State  # the state before the last id
    logp: float


@dataclass
class _Children:
    """The ids that may follow a prefix, most probable first: only the next of them waits in the search's heap."""

    text: str  # the parent prefix's
    ids: tuple[int, ...]  # the parent prefix's
    state: State  # the state after the parent's last id
    candidates: torch.Tensor  # the ids that may follow
    logps: torch.Tensor  # the log-probability of the prefix each makes, float64, descending
    taken: int = 0

    def next_logp(self) -> float:
        return self.logps[self.taken].item()

    def take(self, texts: list[str]) -> _Prefix:
        """The most probable child not taken yet, as a prefix of its own."""
        i = int(self.candidates[self.taken])
        prefix = _Prefix(self.text + texts[i], self.ids + (i,), self.state, self.next_logp())
        self.taken += 1
        return prefix


class WordSearch:
    """Best-first search for the k most probable next words of one model and vocabulary."""

    def __init__(self, stepper: Stepper, vocab: Vocab, max_expansions: int = MAX_EXPANSIONS):
        self.stepper, self.vocab, self.max_expansions = stepper, vocab, max_expansions
        self.classes = TokenClasses.of(vocab)
        self.starting = (self.classes.space | self.classes.spaced).nonzero().squeeze(1)
        self.continuing = self.classes.letters.nonzero().squeeze(1)
        self.ending = self.classes.boundary.nonzero().squeeze(1)

    def canonical(self, text: str, ids: tuple[int, ...]) -> bool:
        """Only the tokenizer's own spelling of a word counts: "Ġso" + "me" is not how " some" is written."""
        return self.vocab.kind == "char" or tuple(self.vocab.encode(text).tolist()) == ids

    def allowed(self, text: str, lead: str) -> torch.Tensor:
        """The ids that may come next: after a non-space a word starts with its space, then letters continue it."""
        return self.starting if text == "" and lead == " " else self.continuing

    @torch.inference_mode()
    def run(self, logits: torch.Tensor, state: State, lead: str, k: int) -> list[WordPrediction]:
        """The k most probable words after a context whose last logits (V,) and state are given.

        A prefix's children wait in the heap one at a time, most probable first: the next is pushed when
        one is taken, so an expansion costs a sort of the vocabulary, not a heap entry per token.
        Stops early, with fewer than k words, only if max_expansions prefixes did not complete them.
        """
        heap: list = []
        order = itertools.count()
        found: list[WordPrediction] = []
        best: list[float] = []  # the k highest log-probabilities of words pushed so far (a min-heap)
        texts = self.vocab.token_texts

        def threshold() -> float:
            """A prefix less probable than k known words cannot lead to one of the k best: it is dropped."""
            return best[0] if len(best) == k else -math.inf

        def push(children: _Children) -> None:
            if children.taken < len(children.logps) and children.next_logp() >= threshold():
                heapq.heappush(heap, (-children.next_logp(), next(order), children))

        def push_children(prefix: _Prefix, logprobs: torch.Tensor, end: float, state: State) -> None:
            """The prefix as a word (end: the log-probability that a boundary follows it) and its children."""
            if prefix.text.strip() and self.canonical(prefix.text, prefix.ids):
                logp = prefix.logp + end
                heapq.heappush(heap, (-logp, next(order), prefix.text[len(lead) :]))
                (heapq.heappush if len(best) < k else heapq.heappushpop)(best, logp)
            ids = self.allowed(prefix.text, lead)
            logps = prefix.logp + logprobs[ids].double()
            keep = logps >= threshold()
            logps, rank = logps[keep].sort(descending=True, stable=True)
            push(_Children(prefix.text, prefix.ids, state, ids[keep][rank], logps))

        push_children(_Prefix("", (), state, 0.0), logits.float().log_softmax(-1), -math.inf, state)
        expansions = 0
        while heap and len(found) < k:
            if isinstance(heap[0][2], str):
                neg_logp, _, word = heapq.heappop(heap)
                found.append(WordPrediction(word, math.exp(-neg_logp)))
                continue
            if expansions >= self.max_expansions:
                break
            batch = []
            while heap and not isinstance(heap[0][2], str) and len(batch) < BATCH:
                children = heapq.heappop(heap)[2]
                prefix = children.take(texts)
                push(children)
                if prefix.logp >= threshold():
                    batch.append(prefix)
            if not batch:
                continue
            expansions += len(batch)
            tokens = torch.tensor([p.ids[-1] for p in batch])
            out, after = self.stepper.step(tokens, states.cat([p.state for p in batch], dim=1))
            logprobs = out.float().log_softmax(-1)
            ends = logprobs[:, self.ending].logsumexp(1).tolist()
            for j, prefix in enumerate(batch):
                push_children(prefix, logprobs[j], ends[j], states.streams(after, j))
        return found
