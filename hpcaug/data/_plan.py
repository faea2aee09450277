"""Which samples each rank reads at each step: pure functions of (seed, epoch, rank, world).

Both loader backends (DALI and torch) read through these plans, so for the same seed they
visit the same samples in the same order, and a loader restarted at (epoch, step) continues
exactly where an interrupted one stopped.

Train: the epoch's order is a seeded permutation of the whole list (`epoch_order`). Global
step s takes the slice [s * W * N, (s + 1) * W * N) of it and rank r the r-th N of that slice.
Only full global batches are used: the last `len % (W * N)` samples of a permutation are
left out of that epoch (a different few each epoch), so every rank runs the same number of
full-size steps (Horovod collectives and BatchNorm need that).

Val: the list in file order, split into W contiguous shards whose sizes differ by at most
one; every sample is read exactly once. All ranks run the same number of steps
(`ceil(ceil(len / W) / N)`); the last one or two batches of a rank may be smaller than N.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["epoch_order", "train_steps", "train_step_indices", "val_batches", "step_generator"]

_ORDER_SALT = 0x5EED0
_PROGRAM_SALT = 0xA06


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of 0..n-1 used in `epoch` (a pure function of seed and epoch)."""
    rng = np.random.default_rng(np.random.SeedSequence([_ORDER_SALT, int(seed), int(epoch)]))
    return rng.permutation(n).astype(np.int64)


def train_steps(n: int, batch_size: int, world: int, cap: int = 0) -> int:
    """Steps per train epoch on every rank: full global batches only, capped by `cap` (> 0)."""
    steps = n // (batch_size * world)
    if steps == 0:
        raise ValueError(f"the train list has {n} images, fewer than one global batch "
                         f"(data.batch_size {batch_size} x {world} ranks = {batch_size * world}); "
                         "lower data.batch_size or use a larger list")
    return min(steps, cap) if cap > 0 else steps


def train_step_indices(order: np.ndarray, step: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """Indices (into the split list) read by `rank` at `step` of the epoch whose order is `order`."""
    start = (step * world + rank) * batch_size
    return order[start:start + batch_size]


def val_batches(n: int, batch_size: int, rank: int, world: int) -> list[np.ndarray]:
    """The val batches of `rank`: its contiguous shard, cut so that all ranks run the same
    number of steps and every batch holds at least one sample (batch_size 1 excepted)."""
    if n < world:
        raise ValueError(f"the val list has {n} images, fewer than the {world} ranks; every rank needs at least one")
    lo, hi = rank * n // world, (rank + 1) * n // world
    shard = np.arange(lo, hi, dtype=np.int64)
    steps = math.ceil(math.ceil(n / world) / batch_size)
    sizes = [batch_size] * (steps - 1) + [len(shard) - (steps - 1) * batch_size]
    if sizes[-1] == 0 and steps > 1 and batch_size > 1:
        # this shard is one shorter than the longest and divides evenly: move one sample to the end
        sizes[-2] -= 1
        sizes[-1] = 1
    sizes = [s for s in sizes if s > 0]  # batch_size 1 with uneven shards: this rank runs one step fewer
    return list(np.split(shard, np.cumsum(sizes)[:-1]))


def step_generator(seed: int, epoch: int, rank: int, step: int) -> torch.Generator:
    """The generator the policies sample a step's programs from (resume-exact)."""
    state = np.random.SeedSequence([_PROGRAM_SALT, int(seed), int(epoch), int(rank), int(step)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
