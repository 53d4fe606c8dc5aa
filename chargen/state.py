"""A recurrent model's state: always a tuple of tensors, so no caller asks which cell made it.

    GRU, RNN:  (h,)       h: (layers, streams, hidden)
    LSTM:      (h, c)     c: the cell's memory, shaped as h

          streams (dimension 1): the batch's lanes or samples
          ─────────────────────►
    h  │  [ layer 0 ][ ... ]
       ▼  [ layer 1 ][ ... ]      c: the same grid, for an LSTM only
    layers (dimension 0)

Every operation treats the parts alike. Only LanguageModel converts, where it calls PyTorch's modules
(nn.LSTM takes and returns (h, c), nn.GRU and nn.RNN a bare h).
"""
from __future__ import annotations

import torch

State = tuple[torch.Tensor, ...]


def parts(cell: str) -> int:
    """How many tensors a cell's state holds: h and c for an LSTM, h alone for a GRU or an RNN."""
    return 2 if cell == "lstm" else 1


def zeros(cell: str, layers: int, streams: int, hidden: int) -> State:
    """The state before any token is read: what PyTorch's modules assume when given none."""
    zero = torch.zeros(layers, streams, hidden)
    return (zero,) * parts(cell)


def detach(state: State | None) -> State | None:
    """The same values cut from their history: truncated backpropagation through time (repackage_hidden)."""
    return None if state is None else tuple(s.detach() for s in state)


def to(state: State, device: torch.device) -> State:
    return tuple(s.to(device) for s in state)


def layer(state: State, i: int) -> State:
    """Layer i's part of a stacked state, still three-dimensional: what a one-layer module takes."""
    return tuple(s[i : i + 1] for s in state)


def streams(state: State, which: int | slice) -> State:
    """Some streams of a state (dimension 1): one, kept as a batch of one, or a slice of them."""
    which = slice(which, which + 1) if isinstance(which, int) else which
    return tuple(s[:, which] for s in state)


def repeat(state: State, n: int) -> State:
    """A state of one stream copied to n streams."""
    return tuple(s.repeat(1, n, 1) for s in state)


def cat(states: list[State], dim: int) -> State:
    """States joined part by part: layers stacked (dim 0) or streams side by side (dim 1)."""
    return tuple(torch.cat(same_part, dim=dim) for same_part in zip(*states))
