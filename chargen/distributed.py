"""Data-parallel training under `torchrun`: PyTorch's own process group, one share of the lanes per rank.

Started by torchrun (which sets RANK and WORLD_SIZE), each process trains the same model on its own
contiguous share of the batch lanes; DistributedDataParallel averages the gradients, so a global batch
of B lanes on W ranks computes what one process computes on B lanes. Alone, every function here is a
no-op over a group of one.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import state as states
from .errors import OptionError
from .state import State


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints, metrics and the progress display."""
        return self.rank == 0

    def share(self, batch_size: int) -> slice:
        """This rank's lanes of a global batch."""
        if batch_size % self.world:
            raise OptionError(f"batch-size {batch_size} does not split evenly over {self.world} processes")
        per_rank = batch_size // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: float) -> float:
        """The largest value over all ranks: one figure every rank agrees on."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def any(self, flags: list[bool]) -> list[bool]:
        """Whether any rank raised each flag: every rank then stops at the same step."""
        return [s > 0 for s in self.sum([float(f) for f in flags])]

    def gather_lanes(self, state: State | None) -> State | None:
        """Every rank's lanes' hidden state, in lane order: what a checkpoint keeps, whatever the number of ranks."""
        if self.world == 1 or state is None:
            return state
        return tuple(self.gather_streams(part) for part in state)

    def gather_streams(self, part: torch.Tensor) -> torch.Tensor:
        """One tensor of every rank, joined along the streams (dimension 1) in rank order."""
        pieces = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(pieces, part.contiguous())
        return torch.cat(pieces, dim=1)

    def lanes_of(self, state: State | None, batch_size: int) -> State | None:
        """This rank's share of a saved state of all lanes."""
        return None if state is None else states.streams(state, self.share(batch_size))


def setup(device: torch.device) -> Group:
    """Join the process group torchrun started (nccl on CUDA, gloo on CPU), or a group of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Group(dist.get_rank(), dist.get_world_size())


def shutdown(finished: bool = False) -> None:
    """Leave the process group; a run that finished waits for every rank first, so that none tears its connections
    down while another still uses them. Whatever still holds the group (a DistributedDataParallel in a reference
    cycle) is collected first, so that gloo's threads stop here and not in the interpreter's teardown, where they
    abort the process and torchrun reports a finished run as failed."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def is_writer_process() -> bool:
    """Whether this process writes the run's checkpoint: rank 0 under torchrun (before the group is joined), or alone."""
    return os.environ.get("RANK", "0") == "0"
