"""minGRU ("Were RNNs All We Needed?", Feng et al., 2024): a recurrent layer whose gates read only its input.

    z_t = sigmoid(W_z x_t + b_z)             how much of its candidate each unit takes at t
    c_t = W_c x_t + b_c                      the candidate
    a_t = max(1 - z_t, e^-8)                 what it keeps of its state (FLOOR)
    h_t = a_t * h_{t-1} + z_t * c_t          element-wise: the only work left in time

No product reads the state, so a window's products are one matrix product over all its positions, and
what is left in time is h_t = a_t * h_{t-1} + b_t, solved a chunk of positions at a time by running
sums (`linear_recurrence`). Generation steps a block one position at a time (`MinGRUBlock.step`) from a state
of one vector per layer, shaped as a GRU's, so the sampler, the word search and the server take it as is.

The recurrence alone is nearly linear in its input, so each block adds what depth needs: above the first
block its input is normalised and added back (a residual connection), and a small position-wise MLP (also
normalised and residual) puts a nonlinearity between layers.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

CHUNK = 8  # positions solved at once; the chunks follow one another
FLOOR = -8.0  # the least log(1 - z): every unit keeps at least e^-8 of its state per position, so 1 / A fits in float32
Product = Callable[[nn.Linear, torch.Tensor], torch.Tensor]


def linear_recurrence(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t for every t of (B, T, H) inputs, from h0 (B, H), with a = exp(log_a) in (0, 1].

    Within a chunk, with A_t = a_1 ... a_t, h_t = A_t * (h0 + sum_s<=t b_s / A_s): two running sums and
    element-wise products. With each log_a at least FLOOR, 1 / A_s of a chunk is at most e^(-FLOOR * CHUNK) = e^64,
    inside float32's range; every term is a product, so none loses digits to a difference.
    """
    log_a, b, h = log_a.float().clamp_min(FLOOR), b.float(), h0.float()
    outputs = []
    for log_a_chunk, b_chunk in zip(log_a.split(CHUNK, dim=1), b.split(CHUNK, dim=1)):  # split, not sliced: a slice's gradient fills a whole copy
        log_products = log_a_chunk.cumsum(1)  # log A_t
        chunk = log_products.exp() * (h[:, None] + (b_chunk * (-log_products).exp()).cumsum(1))
        h = chunk[:, -1]
        outputs.append(chunk)
    return torch.cat(outputs, dim=1)


def kept(gate: torch.Tensor) -> torch.Tensor:
    """log a: log(1 - sigmoid(gate)) = -softplus(gate), exact for any gate, held above FLOOR."""
    return (-F.softplus(gate)).clamp_min(FLOOR)


class MinGRUBlock(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, above_first: bool):
        super().__init__()
        self.norm = nn.LayerNorm(input_size) if above_first else nn.Identity()
        self.project = nn.Linear(input_size, 2 * hidden_size)  # gate and candidate, side by side
        self.residual = above_first  # not the first block, whose input is the tokens' vectors
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp_in = nn.Linear(hidden_size, 2 * hidden_size)
        self.mlp_out = nn.Linear(2 * hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole window (B, T, input) from h0 (B, H): the outputs (B, T, H) and the last state (B, H)."""
        gate, candidate = self.project(self.norm(x)).float().chunk(2, dim=-1)
        h = linear_recurrence(kept(gate), torch.sigmoid(gate) * candidate, h0.float())
        return self.outputs(x, h, lambda layer, v: layer(v)), h[:, -1]

    def step(self, x: torch.Tensor, h: torch.Tensor, product: Product) -> tuple[torch.Tensor, torch.Tensor]:
        """One position (B, input) from h (B, H): the output and the new state, each product made by product(layer, x)."""
        gate, candidate = product(self.project, self.norm(x)).chunk(2, dim=-1)
        h = kept(gate).exp() * h + torch.sigmoid(gate) * candidate
        return self.outputs(x, h, product), h

    def outputs(self, x: torch.Tensor, h: torch.Tensor, product: Product) -> torch.Tensor:
        """What the block passes up from its states h: the residual input, then the MLP's residual nonlinearity."""
        y = h + x.float() if self.residual else h
        return y + product(self.mlp_out, F.gelu(product(self.mlp_in, self.mlp_norm(y))))


class MinGRU(nn.Module):
    """Stacked minGRU blocks, called as nn.GRU is: (B, T, input) and a state (layers, B, H) in, outputs and state out."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = True, dropout: float = 0.0, first: bool = True):
        super().__init__()
        assert batch_first, "chargen's layers read (batch, time, features)"
        self.hidden_size = hidden_size
        self.blocks = nn.ModuleList(
            MinGRUBlock(input_size if i == 0 else hidden_size, hidden_size, above_first=i > 0 or not first) for i in range(num_layers)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if h0 is None:
            h0 = x.new_zeros(len(self.blocks), x.size(0), self.hidden_size, dtype=torch.float32)
        states = []
        for i, block in enumerate(self.blocks):
            x, h = block(self.drop(x) if i else x, h0[i])
            states.append(h)
        return x, torch.stack(states)
