"""In-memory synthetic loaders with the real loaders' interface (benchmarks, loop unit tests).

Images are a per-class pattern plus noise, so a model can learn them; everything is a
deterministic function of (seed, rank, epoch, step), like the real loaders' shuffles.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch

__all__ = ["SyntheticBatch", "SyntheticLoader"]


class SyntheticBatch(NamedTuple):
    images: torch.Tensor  # float [N*M, 3, S, S]
    labels: torch.Tensor  # int64 [N*M]
    choices: torch.Tensor  # int64 [N*M]
    copy_ids: torch.Tensor  # int64 [N*M]


class SyntheticLoader:
    """`steps` batches of N images x M copies per epoch; row n*M+m = image n under copy m.

    With `fixed=True` the same pre-built batch is yielded every step (no per-step cost:
    the "synthetic in-memory tensors" baseline of benchmarks/train.py).
    """

    def __init__(self, batch_size: int, steps: int, *, copies: int = 1, image_size: int = 32,
                 num_classes: int = 10, num_choices: int = 1, rank: int = 0, seed: int = 0,
                 device: torch.device | str = "cpu", fixed: bool = False, total: Optional[int] = None) -> None:
        self.batch_size, self.steps, self.copies = batch_size, steps, copies
        self.image_size, self.num_classes, self.num_choices = image_size, num_classes, num_choices
        self.rank, self.seed, self.device, self.fixed = rank, seed, torch.device(device), fixed
        self.total = total  # val: exact number of samples on this rank (last batch may be short)
        g = torch.Generator().manual_seed(seed)
        self._patterns = torch.randn(num_classes, 3, image_size, image_size, generator=g)
        self.epoch, self.step = 0, 0
        self._fixed_batch: Optional[SyntheticBatch] = None

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
                              torch.randint(0, self.num_choices, (n * m,), generator=g).to(self.device),
                              torch.arange(m).repeat(n).to(self.device))

    def __iter__(self):  # type: ignore[no-untyped-def]
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
