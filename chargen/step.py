"""One token at a time through a trained model: the fused layer's arithmetic without its call overhead.

Generation and word search feed one token per stream per step, where calling `nn.LSTM` costs far more
than its arithmetic. A `Stepper` concatenates each layer's input and recurrent weights once, so a step
is one matrix product per layer plus a few element-wise operations, in the same state layout as the
fused layer: a prompt can run through the fused layer and the steps carry on from its state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import LanguageModel, State


class Stepper:
    def __init__(self, model: LanguageModel):
        self.model = model.eval()
        self.cell = model.config.cell
        rnn = model.rnn
        self.layers = []
        with torch.no_grad():
            for layer in range(rnn.num_layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
                if self.cell == "gru":  # the new-gate reads r * (W_hn h + b_hn): input and state products stay apart
                    self.layers.append((w_ih.t().contiguous(), b_ih.clone(), w_hh.t().contiguous(), b_hh.clone()))
                else:
                    self.layers.append((torch.cat([w_ih, w_hh], 1).t().contiguous(), (b_ih + b_hh).clone()))
        self.activation = torch.relu if getattr(rnn, "nonlinearity", "tanh") == "relu" else torch.tanh

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
                i, f, g, o = torch.addmm(weights[1], torch.cat([x, h], 1), weights[0]).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            elif self.cell == "gru":
                h = state[layer]
                w_ih, b_ih, w_hh, b_hh = weights
                ir, iz, in_ = torch.addmm(b_ih, x, w_ih).chunk(3, 1)
                hr, hz, hn = torch.addmm(b_hh, h, w_hh).chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                x = n + z * (h - n)
            else:
                x = self.activation(torch.addmm(weights[1], torch.cat([x, state[layer]], 1), weights[0]))
            hs.append(x)
        logits = self.model.head(self.model.project(x))
        new_state = (torch.stack(hs), torch.stack(cs)) if self.cell == "lstm" else torch.stack(hs)
        return logits, new_state
