"""In-memory synthetic loaders with the real loaders' interface (benchmarks, loop unit tests),
and `train_synthetic`: the training loop on them, on any device (GPU smoke checks).

Images are a per-class pattern plus noise, so a model can learn them; everything is a
deterministic function of (seed, rank, epoch, step), like the real loaders' shuffles.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from hpcaug.config import Config
from hpcaug.train.dist import Dist, SingleDist
from hpcaug.train.loop import TrainHooks, TrainResult, train

__all__ = ["SyntheticBatch", "SyntheticLoader", "SyntheticPolicy", "train_synthetic"]


class SyntheticBatch(NamedTuple):
    images: torch.Tensor  # float [N*M, 3, S, S], on the loader's device
    labels: torch.Tensor  # int64 [N*M], on the loader's device
    choices: torch.Tensor  # int64 [N*M], on the CPU (as the real loaders hand them over)
    copy_ids: torch.Tensor  # int64 [N*M], on the loader's device


class SyntheticLoader:
    """`steps` batches of N images x M copies per epoch; row n*M+m = image n under copy m.

    With `fixed=True` the same pre-built batch is yielded every step (no per-step cost:
    the "synthetic in-memory tensors" baseline of benchmarks/train.py).
    """

    def __init__(self, batch_size: int, steps: int, *, copies: int = 1, image_size: int = 32,
                 num_classes: int = 10, num_choices: int = 1, rank: int = 0, seed: int = 0,
                 device: torch.device | str = "cpu", fixed: bool = False, total: int | None = None) -> None:
        self.batch_size, self.steps, self.copies = batch_size, steps, copies
        self.image_size, self.num_classes, self.num_choices = image_size, num_classes, num_choices
        self.rank, self.seed, self.device, self.fixed = rank, seed, torch.device(device), fixed
        self.total = total  # val: exact number of samples on this rank (last batch may be short)
        g = torch.Generator().manual_seed(seed)
        self._patterns = torch.randn(num_classes, 3, image_size, image_size, generator=g)
        self.epoch, self.step = 0, 0
        self._fixed_batch: SyntheticBatch | None = None

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def set_policies(self, policies: Sequence[Any]) -> None:
        self.copies = len(policies)
        self._fixed_batch = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def _make(self, step: int) -> SyntheticBatch:
        n = self.batch_size
        if self.total is not None:
            n = min(n, self.total - step * self.batch_size)
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, self.epoch, step)) & 0x7FFFFFFF)
        labels = torch.randint(0, self.num_classes, (n,), generator=g)
        imgs = self._patterns[labels] + torch.randn(n, 3, self.image_size, self.image_size, generator=g)
        m = self.copies
        images = imgs.repeat_interleave(m, 0) + 0.1 * torch.randn(n * m, 3, self.image_size, self.image_size,
                                                                   generator=g)
        return SyntheticBatch(images.to(self.device), labels.repeat_interleave(m).to(self.device),
                              torch.randint(0, self.num_choices, (n * m,), generator=g),
                              torch.arange(m).repeat(n).to(self.device))

    def __iter__(self) -> Iterator[SyntheticBatch]:
        if self.step >= self.steps:  # a finished pass: iterate again from the start (val loaders)
            self.step = 0
        while self.step < self.steps:
            if self.fixed:
                if self._fixed_batch is None:
                    self._fixed_batch = self._make(0)
                batch = self._fixed_batch
            else:
                batch = self._make(self.step)
            self.step += 1
            yield batch


@dataclass(frozen=True)
class SyntheticPolicy:
    """Stands in for a policy: the loop only asks how many choices it has."""

    num_choices: int = 1


def train_synthetic(cfg: Config, out_dir: str | os.PathLike[str], *, steps: int, epochs: int = 1,
                    copies: int | None = None, num_classes: int = 100, device: str | torch.device = "cpu",
                    dist: Dist | None = None, hooks: TrainHooks | None = None,
                    fixed: bool = True) -> TrainResult:
    """`train()` for `epochs` x `steps` steps on in-memory batches of data.batch_size x `copies`
    (default augment.copies) rows of data.image_size pixels, on `device` (or `dist.device`).
    Everything else (AMP, channels_last, micro-batches, checkpoints, resume) is the real loop;
    `fixed=True` yields one pre-built batch every step (no per-step data cost)."""
    dist = dist or SingleDist(device=torch.device(device))
    m = cfg.augment.copies if copies is None else copies
    size, n = cfg.data.image_size, cfg.data.batch_size
    tl = SyntheticLoader(n, steps, copies=m, image_size=size, num_classes=num_classes, num_choices=2, rank=dist.rank,
                         seed=cfg.train.seed, device=dist.device, fixed=fixed)
    vl = SyntheticLoader(n, 1, image_size=size, num_classes=num_classes, rank=dist.rank, seed=cfg.train.seed + 1,
                         device=dist.device, fixed=True)
    return train(cfg, out_dir, [SyntheticPolicy(2)] * m, epochs=epochs, dist=dist, hooks=hooks, train_loader=tl,
                 val_loader=vl)
