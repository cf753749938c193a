"""Training batches simulated by worker processes, for machines with more cores than one process feeds.

Why: on a GPU a step of the ``small`` network takes milliseconds, while simulating its 16 varied
pairs takes 0.15-0.4 s of one CPU core (after each process has built the eigen-PSF bases of its 48
microscopes, about 15 s at its start), so a run that draws its own batches leaves the GPU idle; on
the CPU, one worker takes that time off the training step.
torch's DataLoader spreads the draws over processes. So that the batches depend neither on the
number of workers nor on when a run was stopped and resumed, the batch of step k comes from a
generator seeded with ``(seed, k)`` instead of from one running stream (``data_workers: 0``, the
default, keeps the stream). The training record holds ``data_workers``, so a run says which it used.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

STREAM_KEY = 0xDA7A  # keeps per-step generators apart from every other use of the run's seed


def step_generator(seed: int, step: int) -> np.random.Generator:
    """The generator that draws the batch of step ``step`` (0-based) when batches come from workers."""
    return np.random.default_rng([int(seed), STREAM_KEY, int(step)])


class StepBatches(Dataset):
    """Item k is the batch of step k: ``source.make_batch(batch_size, step_generator(seed, k))``."""

    def __init__(self, source, batch_size: int, seed: int):
        self.source, self.batch_size, self.seed = source, int(batch_size), int(seed)

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int):
        return self.source.make_batch(self.batch_size, step_generator(self.seed, step))


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def worker_batches(source, batch_size: int, seed: int, start: int, stop: int, workers: int) -> Iterator:
    """The batches of steps ``start .. stop - 1`` in order, drawn ahead by ``workers`` processes
    (one torch thread each: the cores are theirs, not OpenMP's)."""
    loader = DataLoader(
        StepBatches(source, batch_size, seed),
        batch_size=None,  # an item already is a batch
        sampler=range(int(start), int(stop)),
        num_workers=int(workers),
        prefetch_factor=4,
        worker_init_fn=_one_thread,
    )
    return iter(loader)
