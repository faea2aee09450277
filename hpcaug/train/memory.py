"""Startup check on CUDA: do the rows of one pass (N x M / train.micro_batches) fit on the GPU?

N x M grows fast (AdvAA on ImageNet: 2048 images x 8 policies over 16 GPUs is 1,024
ResNet-50 rows per GPU, beyond 80 GB). Rather than a table of guesses per model, the check
measures: the peak memory of a forward + backward at two small row counts gives the fixed
part and the cost per row, extrapolated to the rows of one pass plus the optimizer state
still to come. Too many rows fail here, at once, with the knob that fixes it, instead of
an out-of-memory error after the data pipeline has started.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from hpcaug.train.step import Precision, rows_advice

log = logging.getLogger("hpcaug.train")

__all__ = ["check_rows_fit", "micro_batches_needed"]

_BUDGET = 0.92  # of the GPU's memory: the caching allocator's fragmentation and the loader's tensors
_PROBE_ROWS = (4, 8)
_GIB = float(1 << 30)


def micro_batches_needed(rows: int, fixed_bytes: float, per_row_bytes: float, budget_bytes: float) -> int:
    """The smallest K for which ceil(rows / K) rows fit: fixed + rows_per_pass x per_row <= budget.
    0 when not even one row fits."""
    room = budget_bytes - fixed_bytes
    if room < per_row_bytes:
        return 0
    if per_row_bytes <= 0:
        return 1
    return math.ceil(rows / math.floor(room / per_row_bytes))


def check_rows_fit(model: nn.Module, rows: int, micro_batches: int, image_size: int, precision: Precision,
                   device: torch.device, channels_last: bool) -> None:
    """Raise ValueError (naming train.micro_batches) when one pass of this step would not fit
    on the GPU; a no-op off CUDA or when a pass holds no more rows than the probe."""
    per_pass = math.ceil(rows / micro_batches)
    if device.type != "cuda" or per_pass <= _PROBE_ROWS[1]:
        return
    a, b = (_peak_bytes(model, n, image_size, precision, device, channels_last) for n in _PROBE_ROWS)
    per_row = max(0.0, (b - a) / (_PROBE_ROWS[1] - _PROBE_ROWS[0]))
    optimizer_state = sum(p.numel() * p.element_size() for p in model.parameters())  # SGD momentum, not yet made
    fixed = b - _PROBE_ROWS[1] * per_row + optimizer_state
    total = torch.cuda.get_device_properties(device).total_memory
    need = micro_batches_needed(rows, fixed, per_row, _BUDGET * total)
    predicted = fixed + per_pass * per_row
    log.info("memory check: %d rows per pass need about %.1f GiB of %.1f GiB (%.1f MiB per row)", per_pass,
             predicted / _GIB, total / _GIB, per_row / (1 << 20))
    if need == 0 or need > micro_batches:
        what = (f"the GPU ({total / _GIB:.0f} GiB) cannot hold one pass: about {predicted / _GIB:.1f} GiB "
                f"({per_row / (1 << 20):.1f} MiB per row, measured)")
        hint = f"; train.micro_batches={need} fits" if need else "; not even one row fits: use a smaller model"
        raise ValueError(rows_advice(rows, micro_batches, what) + hint)


def _peak_bytes(model: nn.Module, n: int, image_size: int, precision: Precision, device: torch.device,
                channels_last: bool) -> float:
    """Peak allocated bytes of one forward + backward of `n` random rows; leaves the model as it was."""
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}  # BatchNorm statistics
    x = torch.randn(n, 3, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    with precision.context():
        out = model(x)
    out.float().sum().backward()
    torch.cuda.synchronize(device)
    peak = float(torch.cuda.max_memory_allocated(device))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    return peak
