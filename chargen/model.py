"""The language model: tokens (characters, words or subwords) in, a distribution over the next token out."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import state as states
from .errors import OptionError, check_types
from .mingru import MinGRU
from .state import State


CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "mingru": MinGRU}
INPUTS = ("embedding", "onehot")
NONLINEARITIES = ("tanh", "relu")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight blocks per recurrent layer of PyTorch's cells
# The largest model chargen builds, from the command line or a checkpoint's config.json: sizes past
# these are typing errors or hostile files, and would allocate gigabytes before anything could check them.
MAX_SIZES = {"layers": 64, "hidden": 1 << 16, "embedding_dim": 1 << 16, "vocab_size": 1 << 22}


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    input: str = "embedding"
    embedding_dim: int = 128
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    tie_weights: bool = False  # the output layer reuses the input embedding matrix
    skip_connections: bool = True  # the output layer reads every recurrent layer, not only the last

    def __post_init__(self) -> None:
        check_types(self)
        if self.cell not in CELLS:
            raise OptionError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.input not in INPUTS:
            raise OptionError(f"input must be one of {', '.join(INPUTS)}, not {self.input!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise OptionError(f"nonlinearity must be tanh or relu, not {self.nonlinearity!r}")
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise OptionError("nonlinearity applies only to --cell rnn")
        for name, most in MAX_SIZES.items():
            if not 1 <= getattr(self, name) <= most:
                raise OptionError(f"{name.replace('_', '-')} must be between 1 and {most:,}, not {getattr(self, name):,}")
        if not 0 <= self.dropout < 1:
            raise OptionError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.tie_weights and self.input != "embedding":
            raise OptionError("tie-weights needs --input embedding: there is no input matrix to share with one-hot inputs")

    def to_dict(self) -> dict:
        return asdict(self)

    def num_parameters(self) -> int:
        """What LanguageModel(self).num_parameters() will be, computed without building it."""
        skip = self.skip_connections and self.layers > 1
        inputs = self.embedding_dim if self.input == "embedding" else self.vocab_size
        gates = GATES.get(self.cell, 0) * self.hidden
        count = self.vocab_size * self.embedding_dim if self.input == "embedding" else 0
        if self.cell == "mingru":  # per block: gate and candidate, the input's norm above the first, the MLP's norm and two layers
            h, sizes = self.hidden, [inputs] + [self.hidden] * (self.layers - 1)
            count += sum(2 * h * (n + 1) + (2 * n if i else 0) + 2 * h + 2 * h * (h + 1) + h * (2 * h + 1) for i, n in enumerate(sizes))
        else:
            count += sum(gates * ((inputs if i == 0 else self.hidden) + self.hidden + 2) for i in range(self.layers))
        head_input = self.hidden * (self.layers if skip else 1)
        if self.tie_weights:
            return count + (head_input * self.embedding_dim if head_input != self.embedding_dim else 0) + self.vocab_size
        return count + head_input * self.vocab_size + self.vocab_size


def available_memory() -> int:
    """Bytes of memory the system can still give, from /proc/meminfo where there is one."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # macOS and Windows do not say: nothing is refused for memory there
        return sys.maxsize


def check_fits_in_memory(config: ModelConfig, bytes_per_parameter: int, purpose: str, advice: str = "") -> None:
    """Refuse, before anything is allocated, a model whose float32 copies would not fit in the memory left."""
    needed, free = config.num_parameters() * bytes_per_parameter, available_memory()
    if needed > free:
        raise OptionError(
            f"a model of {config.num_parameters():,} parameters needs about {needed / 1e9:,.1f} GB to {purpose}, "
            f"and this machine has {free / 1e9:,.1f} GB free{advice}"
        )


class LanguageModel(nn.Module):
    """Embedding (or one-hot) -> stacked fused RNN/GRU/LSTM (or minGRU blocks, chargen/mingru.py) -> dropout -> linear head.

    With skip connections the head reads the outputs of every layer side by side, so each layer's
    gradient reaches it straight from the loss: a stack learns sooner from the same steps (docs/recipe.md).
    A stacked module returns only its top layer's outputs, so then each layer is a module of its own; it
    runs the same fused kernel.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.input == "embedding":
            self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
            rnn_input = config.embedding_dim
        else:
            self.embedding = None
            rnn_input = config.vocab_size
        extra = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        self.skip = config.skip_connections and config.layers > 1
        if self.skip:
            self.rnn = nn.ModuleList(
                CELLS[config.cell](
                    rnn_input if i == 0 else config.hidden, config.hidden, 1, batch_first=True, **extra, **({"first": i == 0} if config.cell == "mingru" else {})
                )
                for i in range(config.layers)
            )
        else:
            self.rnn = CELLS[config.cell](
                rnn_input,
                config.hidden,
                config.layers,
                batch_first=True,
                dropout=config.dropout if config.layers > 1 else 0.0,
                **extra,
            )
        self.drop = nn.Dropout(config.dropout)
        head_input = config.hidden * (config.layers if self.skip else 1)
        if config.tie_weights:
            # the shared matrix is vocab x embedding_dim: project the hidden state down to it when sizes differ
            self.project = nn.Linear(head_input, config.embedding_dim, bias=False) if head_input != config.embedding_dim else nn.Identity()
            self.head = nn.Linear(config.embedding_dim, config.vocab_size)
            self.head.weight = self.embedding.weight
        else:
            self.project = nn.Identity()
            self.head = nn.Linear(head_input, config.vocab_size)

    def encode_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (batch, time) to the vectors the recurrent layers read."""
        if self.embedding is None:
            return F.one_hot(tokens, self.config.vocab_size).to(self.head.weight.dtype)
        return self.embedding(tokens)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, vocab) for every position, and the state after the last one."""
        inputs = self.encode_inputs(tokens)
        output, state = self.run_layers(inputs, state) if self.skip else self.recur(self.rnn, inputs, state)
        return self.head(self.project(self.drop(output))), state

    def recur(self, module: nn.RNNBase, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """A PyTorch recurrent module on x: the one place a state is converted, as nn.LSTM takes (h, c) and nn.GRU or nn.RNN h alone."""
        lstm = self.config.cell == "lstm"
        output, native = module(x, state if state is None or lstm else state[0])
        return output, (native if lstm else (native,))

    def run_layers(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The layers one by one: every layer's outputs side by side, and the state laid out as a stacked module's."""
        outputs, per_layer = [], []
        for i, module in enumerate(self.rnn):
            x, layer_state = self.recur(module, self.drop(x) if i else x, None if state is None else states.layer(state, i))
            outputs.append(x)
            per_layer.append(layer_state)
        return torch.cat(outputs, dim=-1), states.cat(per_layer, dim=0)

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input weights, recurrent weights, input bias, recurrent bias) of one layer of PyTorch's cells, in their gate order."""
        module, index = (self.rnn[layer], 0) if self.skip else (self.rnn, layer)
        return tuple(getattr(module, f"{name}_l{index}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def mingru_blocks(self) -> list:
        """A minGRU model's blocks, lowest first, whether each layer is a module of its own or one module holds them all."""
        return [block for module in (self.rnn if self.skip else [self.rnn]) for block in module.blocks]

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """Every parameter of one recurrent layer: what freezing a layer fixes."""
        if self.config.cell == "mingru":
            return list(self.mingru_blocks()[layer].parameters())
        return list(self.layer_weights(layer))

    def input_weight(self) -> torch.Tensor:
        """The first layer's input matrix, whose columns are the tokens when the input is one-hot."""
        if self.config.cell == "mingru":
            return self.mingru_blocks()[0].project.weight
        return self.layer_weights(0)[0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def resolve_device(device: str = "auto") -> torch.device:
    """auto means a CUDA GPU if there is one, else Apple's MPS, else the CPU."""
    if device not in DEVICES:
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device == "auto":
        device = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[device]:
        raise OptionError(f"device {device} is not available on this machine")
    return torch.device(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively, as PyTorch will run it here.

    The processor must have AVX-512 BF16 or AMX, PyTorch's kernels must use AVX-512
    (ATEN_CPU_CAPABILITY can lower them), and oneDNN must build its bf16 LSTM (ONEDNN_MAX_CPU_ISA can
    forbid it): the last is tried on a tiny layer, away from the global random numbers.
    """
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return False
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    with torch.random.fork_rng(devices=[]):
        layer = nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    return True


def resolve_precision(precision: str, device: torch.device = torch.device("cpu")) -> str:
    """auto means bfloat16 where the device computes it natively (AVX-512 BF16 or AMX; a recent GPU), else float32.

    bf16 asked for on a device without it is refused: oneDNN has no bf16 LSTM for such a CPU.
    """
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and cpu_has_native_bf16()
    if precision == "bf16" and not native and device.type == "cpu":
        raise OptionError(
            "precision bf16 needs a processor that computes bf16 natively (AVX-512 BF16 or AMX), and PyTorch "
            "finds none here: use --precision fp32 or auto"
        )
    if precision != "auto":
        return precision
    return "bf16" if native else "fp32"


def autocast(precision: str, device: torch.device = torch.device("cpu")) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
