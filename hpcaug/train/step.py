"""One optimizer step on a batch's N x M rows: precision, micro-batches, the gradient average.

The loss of a step is the mean over all its rows. With `train.micro_batches: K` the rows are
cut into K contiguous parts, each forwarded and backpropagated on its own with its share of
that mean (sum of its rows' losses / all rows), so the gradients add up to the full batch's;
the ranks average them once, after the last part (Horovod `backward_passes_per_step`, DDP
`no_sync`). BatchNorm then normalises each part with its own statistics, as if the rank's
batch were K times smaller.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcaug.config import TrainConfig
from hpcaug.train.dist import Dist

__all__ = ["Precision", "precision_for", "prepare_images", "train_step", "rows_advice"]


@dataclass(frozen=True)
class Precision:
    """How the forward runs: `autocast` dtype (None = float32) on `device_type`."""

    device_type: str
    autocast: torch.dtype | None = None

    @property
    def uses_scaler(self) -> bool:
        """float16 needs loss scaling (a GradScaler, one host sync per step); bfloat16 does not."""
        return self.autocast == torch.float16

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.uses_scaler)


def precision_for(tc: TrainConfig, device: torch.device) -> Precision:
    """train.amp / train.amp_dtype on CUDA; CPU runs always compute in float32."""
    if not tc.amp or device.type != "cuda":
        return Precision(device.type)
    if tc.amp_dtype == "bfloat16":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name(device)
            raise ValueError(f"train.amp_dtype=bfloat16 but {name} has no native bfloat16 (compute capability 8.0 "
                             "or newer: A100, H100, ...); set train.amp_dtype=float16")
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16)


def prepare_images(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """The loader's images on `device`, in the layout the model wants. A tensor already on the
    device and already channels_last (the GPU loaders give that) is returned as it is: no copy."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.float16 and device.type != "cuda":
        x = x.float()  # CPU convolutions run in float32 (data.fp16 serves the CUDA autocast)
    if channels_last and not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, dist: Dist,
               images: torch.Tensor, labels: torch.Tensor, *, micro_batches: int, precision: Precision,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Forward/backward the rows in `micro_batches` parts, average the gradients over ranks,
    take the optimizer step. Returns the per-row loss (float32, detached, on the device)."""
    rows = int(labels.shape[0])
    k = max(1, min(micro_batches, rows))
    optimizer.zero_grad()
    parts = []
    for j, (x, y) in enumerate(zip(images.tensor_split(k), labels.tensor_split(k), strict=True)):
        # every part but the last accumulates locally; the last one's backward starts the allreduce
        with dist.no_sync(model) if j < k - 1 else contextlib.nullcontext():
            with precision.context():
                logits = model(x)
            per_row = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=label_smoothing)
            scaler.scale(per_row.sum() / rows).backward()
        parts.append(per_row.detach())
    dist.step(optimizer, scaler)
    return parts[0] if k == 1 else torch.cat(parts)


def rows_advice(rows: int, micro_batches: int, what: str) -> str:
    """The message for too many rows in one pass: the numbers and the knob that fixes it."""
    per_pass = -(-rows // micro_batches)
    return (f"{what} with {rows} rows per GPU per step (data.batch_size x augment.copies) in "
            f"{micro_batches} pass(es) of {per_pass} rows; raise train.micro_batches (e.g. to "
            f"{micro_batches * 2}) so each pass holds fewer rows (same step, same gradients up to BatchNorm), "
            "or lower data.batch_size")
