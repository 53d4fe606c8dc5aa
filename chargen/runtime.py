"""Where and how a command computes: its device, its precision and its process group, resolved once per command."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import distributed
from .distributed import Group
from .model import resolve_device, resolve_precision


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16": what "auto" became on this device
    group: Group = Group()

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", threads: int | None = None, join: bool = False) -> Runtime:
        """Check the device and precision on this machine, set the CPU threads, and (join) enter torchrun's process group."""
        where = resolve_device(device)
        how = resolve_precision(precision, where)
        if threads:
            torch.set_num_threads(threads)
        return cls(where, how, distributed.setup(where) if join else Group())
