"""Data: the dataset index (file lists) and the loaders that read it.

```
loader = build_train_loader(cfg, [policy] * M, rank, world, device)
for epoch in range(start_epoch, epochs):
    loader.set_epoch(epoch)
    for batch in loader:          # Batch(images, labels, choices, copy_ids, indices)
        ...
```
See docs/data.md: the knobs, last-batch handling, resume (state_dict / load_state_dict)
and CPU vs GPU decode.
"""
from __future__ import annotations

from ._common import Batch, CorruptImageError
from ._torch import LoaderTimeoutError
from .loaders import TrainLoader, ValLoader, build_train_loader, build_val_loader

__all__ = ["Batch", "CorruptImageError", "LoaderTimeoutError", "TrainLoader", "ValLoader", "build_train_loader",
           "build_val_loader"]
