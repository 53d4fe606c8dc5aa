"""Dynamic evaluation (Krause et al., 2018): the model keeps learning from a text while it scores it.

The text is read in segments, state carried. Each segment is scored first, by the weights as they are,
and only then learned from: one step on that segment's loss, each gradient divided by the running root
mean square of its own past gradients (RMSprop, on the evaluated text alone), then every weight pulled
a little back toward the trained one, the harder the larger its gradients. So no token is ever predicted
by weights that have seen it, and the figure stays comparable with the static one: it measures how well
a model adapts to what it reads.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import OptionError, check_types
from .model import LanguageModel
from .state import detach


@dataclass
class DynamicOptions:
    segment: int = 128  # tokens (characters, words or subwords) scored, then learned from, per update: a training window
    lr: float = 5e-4  # step size of each update, in units of a gradient's running RMS
    decay: float = 3e-3  # fraction of the way back to the trained weights per update, for a weight of mean gradient RMS
    smoothing: float = 0.999  # how slowly the running mean square of the gradients moves

    def __post_init__(self) -> None:
        check_types(self)
        if self.segment < 1:
            raise OptionError(f"segment must be at least 1, not {self.segment}")
        for name in ("lr", "decay", "smoothing"):
            value = getattr(self, name)
            if not (0 <= value < 1 and math.isfinite(value)):
                raise OptionError(f"dynamic evaluation's {name} must be in [0, 1), not {value}")


def dynamic_bits(model: LanguageModel, ids: torch.Tensor, options: DynamicOptions = DynamicOptions()) -> torch.Tensor:
    """The bits of each token of ids[1:], each segment scored before the model learns from it, in float32 as the
    static figure is; the model given is left as it was."""
    model = copy.deepcopy(model).eval()  # no dropout: it learns from the text, it is not trained on it
    adaptation = Adaptation(list(model.parameters()), options)
    inputs, targets = ids[:-1], ids[1:]
    bits, state = [], None
    for start in range(0, len(inputs), options.segment):
        x, y = inputs[start : start + options.segment], targets[start : start + options.segment]
        logits, state = model(x[None], state)
        losses = F.cross_entropy(logits[0].float(), y, reduction="none")
        bits.append(losses.detach() / math.log(2))
        model.zero_grad(set_to_none=True)
        losses.mean().backward()
        adaptation.learn()
        state = detach(state)
    return torch.cat(bits) if bits else torch.zeros(0)  # a text of one token has nothing to predict


class Adaptation:
    """What dynamic evaluation keeps between updates: the trained weights, each gradient's running mean square,
    and scratch space, allocated once so that an update allocates nothing."""

    def __init__(self, params: list[torch.Tensor], options: DynamicOptions):
        self.params, self.options = params, options
        self.trained = [p.detach().clone() for p in params]
        self.mean_squares, self.rms, self.away = ([torch.zeros_like(p) for p in params] for _ in range(3))
        self.count = sum(p.numel() for p in params)
        self.updates = 0

    @torch.no_grad()
    def learn(self) -> None:
        """One update: each gradient over its running RMS, then each weight pulled back toward its trained value by the
        decay scaled by its RMS over the mean RMS (Krause et al.'s global prior): weights the text pushes hard are held closer."""
        options = self.options
        self.updates += 1
        unbias = 1 - options.smoothing**self.updates  # the running mean starts at zero
        total = 0.0
        for p, ms, r in zip(self.params, self.mean_squares, self.rms):
            if p.grad is None:  # no gradient in this segment: it neither moves nor is pulled back
                r.zero_()
                continue
            ms.mul_(options.smoothing).addcmul_(p.grad, p.grad, value=1 - options.smoothing)
            torch.div(ms, unbias, out=r).sqrt_().add_(1e-8)
            p.addcdiv_(p.grad, r, value=-options.lr)
            total += r.sum().item()
        if total == 0:
            return
        for p, p0, r, a in zip(self.params, self.trained, self.rms, self.away):
            r.mul_(options.decay * self.count / total).clamp_(max=1.0)  # at most all the way back
            p.addcmul_(torch.sub(p0, p, out=a), r)
