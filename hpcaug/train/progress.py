"""Rank-0 progress outputs of the training loop: log lines or a tqdm bar, metrics.jsonl, TensorBoard.

Per step it keeps host-side counters only: the loss is read from the device (a sync) once
every `train.log_interval` steps, never in between.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger("hpcaug.train")

__all__ = ["Progress"]


class Progress:
    """Log lines / tqdm bar, `out_dir/metrics.jsonl` and TensorBoard scalars, on rank 0 only."""

    def __init__(self, out_dir: Path, root: bool, log_interval: int, world: int) -> None:
        self.root, self.log_interval, self.world = root, max(1, log_interval), world
        self.metrics_path = out_dir / "metrics.jsonl"
        self.tb = None
        self.bar = None
        self.interactive = root and sys.stderr.isatty()
        if root:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional (the dev extra)

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                log.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        self._epoch = self._epochs = self._steps = self._first = 0
        self._t0 = self._t_tick = 0.0
        self._rows_tick = self._rows_epoch = 0

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        """Epoch `epoch` of `epochs` starts (or resumes after `done` of its `steps` steps)."""
        self._epoch, self._epochs, self._steps, self._first = epoch, epochs, steps, done
        self._t0 = self._t_tick = time.perf_counter()
        self._rows_tick = self._rows_epoch = 0
        if self.interactive:
            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def step(self, i: int, global_step: int, loss: torch.Tensor, lr: float, rows: int) -> None:
        """Step `i` of the epoch (1-based) is done: `rows` rows on this rank, `loss` its mean loss."""
        if not self.root:
            return
        self._rows_tick += rows
        self._rows_epoch += rows
        tick = i % self.log_interval == 0 or i == self._steps
        if not tick and self.bar is None:
            return
        loss_value = float(loss) if tick else 0.0  # the one device sync, every log_interval steps
        now = time.perf_counter()
        if tick:
            ips = self._rows_tick * self.world / max(1e-9, now - self._t_tick)
        else:
            ips = self._rows_epoch * self.world / max(1e-9, now - self._t0)
        per_step = (now - self._t0) / max(1, i - self._first)
        eta = per_step * ((self._epochs - self._epoch - 1) * self._steps + (self._steps - i))
        if self.bar is not None:
            self.bar.update(1)
            if tick:
                self.bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.4g}", ips=f"{ips:.0f}")
        if not tick:
            return
        self._t_tick, self._rows_tick = now, 0
        if self.bar is None:
            log.info("epoch %d step %d  loss %.4f  lr %.5g  %.1f img/s  ETA %s", self._epoch + 1, global_step,
                     loss_value, lr, ips, _fmt_eta(eta))
        self._write({"kind": "step", "epoch": self._epoch, "step": global_step, "train_loss": loss_value, "lr": lr,
                     "images_per_s": ips})
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss_value, global_step)
            self.tb.add_scalar("train/lr", lr, global_step)
            self.tb.add_scalar("train/images_per_s", ips, global_step)

    def end_epoch(self, entry: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.root:
            return
        val = (f"  val_top1 {entry['val_top1']:.4f}  val_top5 {entry['val_top5']:.4f}" if "val_top1" in entry
               else "  (not validated: train.val_every)")
        log.info("epoch %d done: train_loss %.4f%s  %.1f img/s", entry["epoch"] + 1, entry["train_loss"], val,
                 entry["images_per_s"])
        self._write({"kind": "epoch", **entry})
        if self.tb is not None:
            for k in ("train_loss", "val_top1", "val_top5", "val_loss", "images_per_s"):
                if k in entry:
                    self.tb.add_scalar(f"epoch/{k}", entry[k], entry["epoch"] + 1)
            self.tb.flush()

    def _write(self, rec: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _fmt_eta(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
