"""`build_train_loader` / `build_val_loader`: pick the backend (data.backend) and the split."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hpcaug.config import Config

from ._common import warn_empty_classes
from ._dali import DaliTrainLoader, DaliValLoader
from ._torch import TorchTrainLoader, TorchValLoader
from .index import DatasetIndex

__all__ = ["TrainLoader", "ValLoader", "build_train_loader", "build_val_loader"]

TrainLoader = DaliTrainLoader | TorchTrainLoader
ValLoader = DaliValLoader | TorchValLoader


def _device(device: Any) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"loader device {device!r} asks for CUDA but torch sees no GPU; pass device='cpu'")
    return dev


def build_train_loader(cfg: Config, policies: Sequence[Any], rank: int = 0, world: int = 1,
                       device: Any = "cpu", split: str | None = None) -> TrainLoader:
    """The train loader of `rank` out of `world` over lists/<split or data.train_list>.txt.

    M = len(policies) copies per image (AWS: the same policy M times; AdvAA: M policies);
    each step yields a Batch of N*M rows, row n*M+m = image n under policies[m].
    """
    index = DatasetIndex.open(cfg.data.dir)
    lst = index.split(split or cfg.data.train_list)
    warn_empty_classes(lst, index.num_classes)
    cls = DaliTrainLoader if cfg.data.backend == "dali" else TorchTrainLoader
    loader = cls(cfg, lst, list(policies), rank, world, _device(device))
    loader.num_classes = index.num_classes
    return loader


def build_val_loader(cfg: Config, rank: int = 0, world: int = 1, device: Any = "cpu",
                     split: str | None = None) -> ValLoader:
    """The val loader of `rank` over lists/<split or data.val_list>.txt: resize + centre crop,
    no augmentation; the ranks together read every image exactly once."""
    index = DatasetIndex.open(cfg.data.dir)
    lst = index.split(split or cfg.data.val_list)
    cls = DaliValLoader if cfg.data.backend == "dali" else TorchValLoader
    loader = cls(cfg, lst, rank, world, _device(device))
    loader.num_classes = index.num_classes
    return loader
