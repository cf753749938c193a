"""Data-parallel training on several GPUs (or CPU processes) under ``torchrun``.

    torchrun --nproc_per_node N -m napari_dgno.cli train --config configs/dgno-small-face-v3.yaml

Design: **every rank draws the same global batch** (``batch_size`` pairs) from the run's one seeded
stream and keeps its own ``batch_size / N`` slice; DDP averages the gradients. With equal slices the
mean of the ranks' mean losses is the global mean, so N processes follow the single-process run up to
float reduction order, the RNG state is the same on every rank (rank 0 saves it, all ranks restore
it), and a run may resume with another number of processes. The price: data synthesis is repeated
on every rank instead of being split (on GPUs it costs CPU time, not step time, while the CPU keeps
up). Rank 0 alone validates, writes checkpoints and exports; barriers after each write keep the other
ranks from running ahead of a checkpoint. A stop request on any rank stops all of them at the same step.

Without ``WORLD_SIZE`` > 1 in the environment, every helper here is a no-op: single-process training
is untouched.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class Context:
    """Where this process stands in a torchrun job (rank 0 of 1 when there is none)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives run (nccl needs CUDA tensors)

    @classmethod
    def from_env(cls, device: torch.device) -> Context:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; on CUDA, pick the local GPU."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as err:
            raise InputError(f"bad torchrun environment ({err})") from None
        if world <= 1:
            return cls(device=device)
        if device.type == "cuda":  # one GPU per process, whatever cuda:N the config names
            if local >= torch.cuda.device_count():
                raise InputError(
                    f"LOCAL_RANK {local} has no GPU (this machine has {torch.cuda.device_count()}); "
                    "use --nproc_per_node <= the GPU count"
                )
            device = torch.device("cuda", local)
        return cls(rank, world, local, device)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops for one process) --------------------------------------------------------
    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise InputError(
                f"batch_size {batch_size} does not split evenly over {self.world} processes; "
                f"use a multiple of {self.world}"
            )

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (the whole batch for one process)."""
        if not self.enabled:
            return batch
        n = batch.shape[0] // self.world
        return batch[self.rank * n : (self.rank + 1) * n]

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over ranks: the global batch's loss, for logging."""
        if not self.enabled:
            return float(value)
        t = value.detach().float().reshape(1).to(self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (so all ranks stop at the same step)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def same(self, value: int, what: str) -> None:
        """Refuse to go on unless every rank holds the same integer (e.g. the resumed step)."""
        if not self.enabled:
            return
        t = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        high, low = int(t[0]), -int(t[1])
        if high != low:
            raise InputError(
                f"processes disagree on {what} ({low} .. {high}): every rank must see the same run folder"
            )

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A DDP wrapper whose forward is ``model.forward_multiscale``; None for one process."""
        if not self.enabled:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Without the score gate (score_gate=False, e.g. the no-gate ablation) the scan's sort scores
        # get no gradient (argsort), so some parameters can be unused.
        return DistributedDataParallel(_Multiscale(model), device_ids=ids, find_unused_parameters=True)


class _Multiscale(torch.nn.Module):
    """DDP syncs gradients only through ``forward``; training needs every output scale."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_multiscale(x)


@contextlib.contextmanager
def process_group(ctx: Context):
    """Initialise the default process group for a torchrun job (nccl on CUDA, gloo on CPU), and
    tear it down afterwards; a group the caller already set up is used as it is."""
    if not ctx.enabled or dist.is_initialized():
        yield
        return
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
        dist.init_process_group("nccl", device_id=ctx.device)
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_from_env() -> int:
    """This process's rank (0 outside torchrun), for deciding who prints and writes logs."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0
