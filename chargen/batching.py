"""Many samples written at once, one batched step per token: requests join the batch between steps and leave it
when they are done or cancelled, so a server's users share the model's steps instead of queueing for them.

A recurrent model's state is a few vectors per stream, so a stream costs the batch one row:

    step t:   rows [ a  b  c ]      each row draws its token from its own logits, with its own options and seed
    joins:    d (its prompt read by the fused layers, once)   leaves: b (done, or its reader went away)
    step t+1: rows [ a  c  d ]      one Stepper.step for all of them

Whoever runs the batch calls step() (or run_for(seconds)) while it is busy: a server's event loop, between the
other work it has, so no thread hands pieces to another. Each stream's pieces go to the stream's sink, which must
not block: a slow reader therefore slows nobody, its pieces wait in its queue.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import state as states
from .errors import OptionError
from .sample import Piece, Sampler, SamplingOptions, Writing, pick
from .state import State

Sink = Callable[[int, Piece | None], None]  # (choice, piece); piece None: that choice is done


@dataclass
class Request:
    """One prompt with its options, written as options.num_samples choices; cancel() takes it out of the batch."""

    prompt: str
    options: SamplingOptions
    sink: Sink
    cancelled: threading.Event = field(default_factory=threading.Event)
    read: tuple[torch.Tensor, State] | None = None  # the prompt's last logits and state, once Batcher.read_prompt has read it

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class Stream:
    """One choice of a request, as a row of the batch."""

    request: Request
    choice: int
    writing: Writing
    generator: torch.Generator


class Batcher:
    """Writes every request submitted, all in one batch: at most max_streams rows at a time, the rest waiting their turn."""

    def __init__(self, sampler: Sampler, max_streams: int = 256):
        if max_streams < 1:
            raise OptionError(f"max-streams must be at least 1, not {max_streams}")
        self.sampler, self.max_streams = sampler, max_streams
        self.waiting: collections.deque[Request] = collections.deque()
        self.streams: list[Stream] = []
        self.logits: torch.Tensor | None = None  # (rows, V): each row's next-token logits
        self.state: State | None = None
        self.generator = torch.Generator()  # the draws of every request that gives no seed
        self.generator.seed()

    def submit(self, request: Request) -> Request:
        """Queue a request to join at the next step; its prompt must already be checked (Sampler.prompt_ids)."""
        self.waiting.append(request)
        return request

    @property
    def rows(self) -> int:
        return len(self.streams)

    @property
    def busy(self) -> bool:
        """Whether a step has anything to do: rows writing, or requests waiting to join."""
        return bool(self.streams or self.waiting)

    def step(self) -> None:
        """Let the first waiting request join if its rows fit (one a step: a long prompt's reading holds up the others),
        then one batched step for every row."""
        while self.waiting and self.waiting[0].cancelled.is_set():
            self.waiting.popleft()
        if self.waiting and (not self.streams or self.rows + self.waiting[0].options.num_samples <= self.max_streams):
            self._join(self.waiting.popleft())
        if self.streams:
            self._step()

    def run_for(self, seconds: float) -> None:
        """Steps while busy, for about seconds: what one turn of an event loop gives the batch."""
        end = time.perf_counter() + seconds
        while self.busy:
            self.step()
            if time.perf_counter() >= end:
                return

    def finish(self) -> None:
        """End every request now, written or not, waiting or not: each choice is told it is done."""
        for stream in self.streams:
            stream.request.sink(stream.choice, None)
        for request in self.waiting:
            for choice in range(request.options.num_samples):
                request.sink(choice, None)
        self.streams, self.logits, self.state = [], None, None
        self.waiting.clear()

    @torch.inference_mode()
    def read_prompt(self, request: Request) -> Request:
        """Read the prompt through the fused layers, once for all its choices: from any thread, so that a server reads a
        long prompt beside the batch instead of holding every row up while it does (the weights are only read)."""
        logits, state = self.sampler.model(self.sampler.prompt_ids(request.prompt)[None])
        request.read = (logits[:, -1], state)
        return request

    @torch.inference_mode()
    def _join(self, request: Request) -> None:
        """Each choice starts from the state after the prompt (read now if it was not), with the request's generator."""
        n = request.options.num_samples
        logits, state = (request.read or self.read_prompt(request).read)
        generator = self.generator
        if request.options.seed is not None:
            generator = torch.Generator()
            generator.manual_seed(request.options.seed)
        new = [Stream(request, i, Writing(self.sampler.vocab, request.options), generator) for i in range(n)]
        rows = logits.expand(n, -1)
        self.streams += new
        self.logits = rows if self.logits is None else torch.cat([self.logits, rows])
        self.state = states.repeat(state, n) if self.state is None else states.cat([self.state, states.repeat(state, n)], dim=1)

    @torch.inference_mode()
    def _step(self) -> None:
        """Each row draws its token and hands its piece to its sink; the rows still writing take one batched step."""
        ids = self._pick()
        going = []
        for row, (stream, token) in enumerate(zip(self.streams, ids.tolist())):
            if stream.request.cancelled.is_set():
                continue
            piece = stream.writing.take(token, self.logits[row] if stream.writing.logprobs else None)
            if piece.text or piece.token is not None:
                stream.request.sink(stream.choice, piece)
            if stream.writing.done:
                stream.request.sink(stream.choice, None)
            else:
                going.append(row)
        if len(going) < len(self.streams):
            keep = torch.tensor(going, dtype=torch.long)
            self.streams = [self.streams[i] for i in going]
            ids, self.state = ids[keep], states.streams(self.state, keep)
        if not self.streams:
            self.logits = self.state = None
            return
        self.logits, self.state = self.sampler.stepper.step(ids, self.state)

    def _pick(self) -> torch.Tensor:
        """Every row's next token: rows that share a generator and options draw in one call, in row order, so a seeded
        request's choices draw what Sampler.generate draws for its samples, and unseeded requests alike share one draw."""
        groups: dict[tuple, list[int]] = {}
        for row, stream in enumerate(self.streams):
            o = stream.request.options
            groups.setdefault((id(stream.generator), o.temperature, o.top_k, o.top_p), []).append(row)
        if len(groups) == 1:  # one draw for the whole batch, in its own order
            o, generator = self.streams[0].request.options, self.streams[0].generator
            return pick(self.logits, o.temperature, o.top_k, o.top_p, generator)
        ids = torch.empty(len(self.streams), dtype=torch.long)
        for rows in groups.values():
            first = self.streams[rows[0]]
            o, which = first.request.options, torch.tensor(rows)
            ids[which] = pick(self.logits[which], o.temperature, o.top_k, o.top_p, first.generator)
        return ids
