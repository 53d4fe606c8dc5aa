"""One token at a time through a trained model: the fused layer's arithmetic without its call overhead.

Generation and word search feed one token per stream per step, where calling `nn.LSTM` costs far more
than its arithmetic. A `Stepper` concatenates each layer's input and recurrent weights once, so a step
is one matrix product per layer plus a few element-wise operations, in the same state layout as the
fused layer: a prompt can run through the fused layer and the steps carry on from its state.

One stream's step is bound by reading the weights from memory, and a batch's by the matrix units:
in bf16 the weights are half the bytes and the products run on the processor's bf16 units, while the
gates, the cell state and the output layer stay in float32, as under training's bf16 autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import LanguageModel, State, resolve_precision


class Stepper:
    def __init__(self, model: LanguageModel, precision: str = "fp32"):
        self.model = model.eval()
        self.dtype = torch.bfloat16 if resolve_precision(precision) == "bf16" else torch.float32
        self.cell = model.config.cell
        rnn = model.rnn
        self.layers = []
        with torch.no_grad():
            for layer in range(rnn.num_layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
                if self.cell == "gru":  # the new-gate reads r * (W_hn h + b_hn): input and state products stay apart
                    self.layers.append((w_ih.to(self.dtype), b_ih.clone(), w_hh.to(self.dtype), b_hh.clone()))
                else:
                    weight, bias = torch.cat([w_ih, w_hh], 1), b_ih + b_hh
                    if self.cell == "lstm":  # gates i, f, g, o reordered to i, f, o, g: one sigmoid covers three
                        order = torch.cat([torch.arange(0, 2 * rnn.hidden_size), torch.arange(3 * rnn.hidden_size, 4 * rnn.hidden_size), torch.arange(2 * rnn.hidden_size, 3 * rnn.hidden_size)])
                        weight, bias = weight[order], bias[order]
                    self.layers.append((weight.to(self.dtype).contiguous(), bias.clone()))
        self.activation = torch.relu if getattr(rnn, "nonlinearity", "tanh") == "relu" else torch.tanh

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x W^T + b, the product in the stepper's precision and the result in float32."""
        if self.dtype == torch.float32:
            return F.linear(x, weight, bias)
        return F.linear(x.to(self.dtype), weight).float() + bias

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Logits (B, V) for the token after ids (B,), and the new state."""
        x = self.model.encode_inputs(ids[:, None])[:, 0]
        batch, hidden = ids.size(0), self.model.config.hidden
        if state is None:
            zeros = x.new_zeros(len(self.layers), batch, hidden)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        hs, cs = [], []
        for layer, weights in enumerate(self.layers):
            if self.cell == "lstm":
                h, c = state[0][layer], state[1][layer]
                gates = self.linear(torch.cat([x, h], 1), weights[0], weights[1])
                i, f, o = gates[:, : 3 * hidden].sigmoid().chunk(3, 1)
                c = torch.addcmul(f * c, i, gates[:, 3 * hidden :].tanh())
                x = o * c.tanh()
                cs.append(c)
            elif self.cell == "gru":
                h = state[layer]
                w_ih, b_ih, w_hh, b_hh = weights
                ir, iz, in_ = self.linear(x, w_ih, b_ih).chunk(3, 1)
                hr, hz, hn = self.linear(h, w_hh, b_hh).chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                x = n + z * (h - n)
            else:
                x = self.activation(self.linear(torch.cat([x, state[layer]], 1), weights[0], weights[1]))
            hs.append(x)
        logits = self.model.head(self.model.project(x))
        new_state = (torch.stack(hs), torch.stack(cs)) if self.cell == "lstm" else torch.stack(hs)
        return logits, new_state
