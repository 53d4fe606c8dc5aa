"""Dynamic evaluation (Krause et al., 2018): the model keeps learning from a text while it scores it.

The text is read in segments, state carried. Each segment is scored first, by the weights as they are,
and only then learned from: one step on that segment's loss, each gradient divided by the running root
mean square of its own past gradients (RMSprop, on the evaluated text alone), then every weight pulled
a little back toward the trained one. So no token is ever predicted by weights that have seen it, and
the figure stays comparable with the static one: it measures how well a model adapts to what it reads.
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
    decay: float = 3e-3  # fraction of the way back to the trained weights per update
    smoothing: float = 0.99  # how slowly the running mean square of the gradients moves

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
    trained = [p.detach().clone() for p in model.parameters()]
    mean_squares = [torch.zeros_like(p) for p in trained]
    inputs, targets = ids[:-1], ids[1:]
    bits, state = [], None
    for update, start in enumerate(range(0, len(inputs), options.segment), 1):
        x, y = inputs[start : start + options.segment], targets[start : start + options.segment]
        logits, state = model(x[None], state)
        losses = F.cross_entropy(logits[0].float(), y, reduction="none")
        bits.append(losses.detach() / math.log(2))
        model.zero_grad(set_to_none=True)
        losses.mean().backward()
        with torch.no_grad():
            unbias = 1 - options.smoothing**update  # the running mean starts at zero
            for p, p0, ms in zip(model.parameters(), trained, mean_squares):
                if p.grad is not None:
                    ms.mul_(options.smoothing).addcmul_(p.grad, p.grad, value=1 - options.smoothing)
                    p.addcdiv_(p.grad, (ms / unbias).sqrt_().add_(1e-8), value=-options.lr)
                p.add_(p0 - p, alpha=options.decay)
        state = detach(state)
    return torch.cat(bits) if bits else torch.zeros(0)  # a text of one token has nothing to predict
