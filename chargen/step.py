"""One token at a time through a trained model: the fused layer's arithmetic without its call overhead.

Generation and word search feed one token per stream per step, where calling `nn.LSTM` costs far more
than its arithmetic. A `Stepper` prepares each layer's weights once, so a step is two matrix products
per layer plus a few element-wise operations, in the same state layout as the fused layer: a prompt can
run through the fused layer and the steps carry on from its state. For a small vocabulary, the first
layer's input product is a table lookup: every token's product is computed once, in float32.

In reduced precision ("bf16"), one stream's step, bound by reading the weights from memory, reads them
as float16 (half the bytes, and more exact than bf16; measured 25 % faster than bf16 here), while a
batch, bound by arithmetic, multiplies on the processor's bf16 units. Gates, cell state and the output
layer stay in float32, as under training's bf16 autocast.

With "int8" every matrix product of a step reads int8 weights (a quarter of float32's bytes, one scale
per output row) and quantises its input on the fly, one scale for the whole batch (PyTorch's dynamic
quantisation kernels): on both kinds of processor the fastest, at 0.0002 bpc over 50,000 characters
(docs/processors.md). It is asked for, never chosen by "auto": a batch's rows share a scale, so a row's
text would depend on the rows beside it, and a server's batches change with its load.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import state as states
from .errors import OptionError
from .model import PRECISIONS, LanguageModel, resolve_precision
from .state import State

TABLE_LIMIT = 4096  # largest vocabulary whose first-layer input products are precomputed
STEP_PRECISIONS = (*PRECISIONS, "int8")  # how generation may step: training's precisions, and int8 weights

Product = Callable[[torch.Tensor], torch.Tensor]  # x -> x W^T + b in float32, whatever the weights are stored as


def dense(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> Product:
    """x W^T + b with W stored in dtype: the product in that precision and the result in float32."""
    weight = weight.to(dtype).contiguous()
    if dtype == torch.float32:
        return lambda x: F.linear(x, weight, bias)
    return lambda x: F.linear(x.to(dtype), weight).float() + bias


def has_int8_kernels() -> bool:
    """Whether this build of PyTorch has the dynamic quantisation kernels int8 steps need."""
    return hasattr(torch.ops.quantized, "linear_dynamic") and torch.backends.quantized.engine != "none"


def int8(weight: torch.Tensor, bias: torch.Tensor) -> Product:
    """x W^T + b with W in int8, one scale per output row, and x quantised per call (dynamic quantisation)."""
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao, which is not a dependency
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight.float(), scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    bias = bias.detach().clone()
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True) + bias


class Stepper:
    def __init__(self, model: LanguageModel, precision: str = "fp32"):
        self.model = model.eval()
        self.cell = model.config.cell
        hidden = model.config.hidden
        kinds = self.kinds(precision)
        # PyTorch orders an LSTM's gates i, f, g, o; i, f, o, g lets one sigmoid cover three of them
        order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden), torch.arange(2 * hidden, 3 * hidden)])
        # per kind of product (one stream's, a batch's): per layer, its input and its recurrent product
        self.products: list[list[tuple[Product, Product]]] = [[] for _ in kinds]
        self.table: torch.Tensor | None = None
        # a minGRU model's blocks make their own products: per kind, each of their linear layers prepared once
        self.blocks = model.mingru_blocks() if self.cell == "mingru" else []
        self.block_products: list[dict[torch.nn.Linear, Product]] = [{} for _ in kinds]
        with torch.no_grad():
            for linear in (m for block in self.blocks for m in block.modules() if isinstance(m, torch.nn.Linear)):
                for products, kind in zip(self.block_products, kinds):
                    products[linear] = int8(linear.weight, linear.bias) if kind == "int8" else dense(linear.weight, linear.bias.clone(), kind)
            for layer in range(0 if self.blocks else model.config.layers):
                w_ih, w_hh, b_ih, b_hh = model.layer_weights(layer)
                if self.cell == "lstm":
                    w_ih, w_hh, b_ih, b_hh = w_ih[order], w_hh[order], b_ih[order], b_hh[order]
                for products, kind in zip(self.products, kinds):
                    make = int8 if kind == "int8" else lambda w, b: dense(w, b.clone(), kind)
                    products.append((make(w_ih, b_ih), make(w_hh, b_hh)))
                if layer == 0 and model.config.vocab_size <= TABLE_LIMIT:
                    self.table = F.linear(model.encode_inputs(torch.arange(model.config.vocab_size)[None])[0], w_ih, b_ih)
        self.activation = torch.relu if model.config.nonlinearity == "relu" else torch.tanh

    @staticmethod
    def kinds(precision: str) -> tuple[torch.dtype | str, ...]:
        """The weights one stream steps with, then (if other) those a batch steps with."""
        if precision not in STEP_PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(STEP_PRECISIONS)}, not {precision!r}")
        if precision == "int8":
            if not has_int8_kernels():
                raise OptionError("precision int8 needs PyTorch's quantized kernels, which this build of PyTorch lacks: use fp32")
            return ("int8",)
        return (torch.float16, torch.bfloat16) if resolve_precision(precision) == "bf16" else (torch.float32,)

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Logits (B, V) for the token after ids (B,), and the new state."""
        batch, hidden = ids.size(0), self.model.config.hidden
        if state is None:
            state = states.zeros(self.cell, self.model.config.layers, batch, hidden)
        if self.blocks:
            return self.block_step(ids, state)
        products = self.products[0 if batch == 1 else -1]
        x = None if self.table is not None else self.model.encode_inputs(ids[:, None])[:, 0]
        hs, cs = [], []
        for layer, (input_product, state_product) in enumerate(products):
            from_input = self.table[ids] if layer == 0 and self.table is not None else input_product(x)
            h = state[0][layer]
            from_state = state_product(h)
            if self.cell == "lstm":
                gates = from_input + from_state
                i, f, o = gates[:, : 3 * hidden].sigmoid().chunk(3, 1)
                c = torch.addcmul(f * state[1][layer], i, gates[:, 3 * hidden :].tanh())
                x = o * c.tanh()
                cs.append(c)
            elif self.cell == "gru":
                ir, iz, in_ = from_input.chunk(3, 1)
                hr, hz, hn = from_state.chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                x = n + z * (h - n)
            else:
                x = self.activation(from_input + from_state)
            hs.append(x)
        logits = self.model.head(self.model.project(torch.cat(hs, dim=1) if self.model.skip else x))
        return logits, ((torch.stack(hs), torch.stack(cs)) if self.cell == "lstm" else (torch.stack(hs),))

    def block_step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """A minGRU model's step: each block steps itself, with the products prepared for it."""
        products = self.block_products[0 if ids.size(0) == 1 else -1]
        x = self.model.encode_inputs(ids[:, None])[:, 0]
        outputs, hs = [], []
        for block, h in zip(self.blocks, state[0]):
            x, h = block.step(x, h, lambda linear, v: products[linear](v))
            outputs.append(x)
            hs.append(h)
        logits = self.model.head(self.model.project(torch.cat(outputs, dim=1) if self.model.skip else x))
        return logits, (torch.stack(hs),)
