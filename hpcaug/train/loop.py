"""The one training loop: AWS shared stage, fine-tunes, AdvAA, final/production training.

`train(cfg, out_dir, policies, epochs=...)` trains with SGD Nesterov on the N x M enlarged
batch the loader yields (M = len(policies) copies of each of N images per rank; iterations
per epoch do not change with M; the loss is the mean over all N x M rows), validates on the
exact validation set after every epoch, checkpoints atomically and resumes from
`out_dir/checkpoint.pt` when it exists (mid-epoch too). Rank 0 logs and writes.

Pieces: `_setup` builds the run, `Checkpointer.restore` (train/state.py) resumes it,
`_run_epoch` trains and validates one epoch, `train_step` (train/step.py) is one optimizer step.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcaug.config import Config
from hpcaug.data import build_train_loader, build_val_loader
from hpcaug.train._logging import setup_logging
from hpcaug.train.dist import Dist, init_dist
from hpcaug.train.memory import check_rows_fit
from hpcaug.train.models import build_model
from hpcaug.train.progress import Progress
from hpcaug.train.state import CHECKPOINT_NAME, Checkpointer, TrainState
from hpcaug.train.step import Precision, precision_for, prepare_images, rows_advice, train_step

log = logging.getLogger("hpcaug.train")

__all__ = ["train", "evaluate", "TrainResult", "TrainHooks", "LRSchedule", "CHECKPOINT_NAME",
           "TrainLoaderProtocol", "ValLoaderProtocol"]


@dataclass
class TrainResult:
    """What `train` returns (identical on every rank)."""

    history: list[dict[str, Any]]  # one entry per epoch: epoch, train_loss, val_top1, val_top5, lr, images_per_s ...
    choice_counts: torch.Tensor  # int64 [num_choices]: how often the loader applied each choice, all ranks, all epochs
    checkpoint: Path  # out_dir/checkpoint.pt (the final state)
    steps: int = 0  # optimizer steps taken in total (resumed runs included)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (this rank's copy)


class TrainHooks:
    """Callbacks for the AdvAA joint training (or anything that rides along). No-ops here.

    They run on every rank. `on_epoch_start` may return new policies for this epoch; when a
    run resumes mid-epoch it is called again for that epoch and must then return the
    policies it returned before (keep them in `state_dict`).
    """

    def on_epoch_start(self, epoch: int) -> Sequence[Any] | None:
        return None

    def on_step(self, per_sample_loss: torch.Tensor, batch: Any) -> None:
        """per_sample_loss: float [N*M] (detached); batch.copy_ids says which policy made each row."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ValLoaderProtocol(Protocol):
    """What the loop needs of a validation loader (hpcaug.data.build_val_loader gives one)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


class TrainLoaderProtocol(ValLoaderProtocol, Protocol):
    """What the loop needs of a train loader: batches with images, labels, choices (on the CPU),
    copy_ids; epoch and position (resume); new policies between epochs (AdvAA)."""

    num_classes: int

    def set_epoch(self, epoch: int) -> None: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...
    def set_policies(self, policies: Sequence[Any]) -> None: ...


@dataclass
class LRSchedule:
    """Per-step lr: linear warm-up to `peak`, then cosine to 0 or constant.

    A pure function of the step, so the saved state is just the peak and the lengths. `offset`:
    the schedule's step at this run's step 0 (a run that continues another run's schedule).
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"
    offset: int = 0

    def __call__(self, step: int) -> float:
        step += self.offset
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        span = max(1, self.total_steps - self.warmup_steps)
        return 0.5 * self.peak * (1 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))

    def state_dict(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The schedule is rebuilt from the config on resume; the saved copy is for reading."""


def scaled_lr(cfg: Config, lr: float | None, world: int, copies: int) -> float:
    """Linear scaling: `lr` (default train.lr) is per train.lr_ref_batch images of the global batch
    N x ranks (x M when train.scale_lr_with_copies)."""
    base = cfg.train.lr if lr is None else lr
    global_batch = cfg.data.batch_size * world * (copies if cfg.train.scale_lr_with_copies else 1)
    return base * global_batch / cfg.train.lr_ref_batch


# ---------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, loader: ValLoaderProtocol, dist: Dist, *, precision: Precision | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1/top-5 and mean loss over the whole validation split.

    Correct counts and sample counts are summed over ranks (not means of means), so the
    result is exact when ranks hold different numbers of samples.
    """
    model.eval()
    device = dist.device
    precision = precision or Precision(device.type)
    acc = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, n
    with torch.no_grad():
        for batch in loader:
            images, labels = prepare_images(batch.images, device, channels_last), batch.labels.to(device)
            with precision.context():
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[1])
            hit = logits.topk(k, dim=1).indices.eq(labels[:, None])
            acc[0] += hit[:, 0].sum()
            acc[1] += hit.any(1).sum()
            acc[2] += F.cross_entropy(logits, labels, reduction="sum").double()
            acc[3] += labels.numel()
    tot = dist.allreduce(acc.cpu(), "sum")
    n = max(1.0, float(tot[3]))
    model.train()
    return {"val_top1": float(tot[0]) / n, "val_top5": float(tot[1]) / n, "val_loss": float(tot[2]) / n,
            "val_samples": int(tot[3])}


def _average_buffers(model: nn.Module, dist: Dist) -> None:
    """Average floating-point buffers (BatchNorm running mean/var) over ranks in one allreduce.

    Horovod and DDP (broadcast_buffers=False) average gradients only, so each rank's BN
    statistics follow its own shard; after this every rank holds the same model, validates
    the same model and rank 0 saves it.
    """
    if dist.size == 1:
        return
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = dist.allreduce(torch.cat([b.detach().float().flatten() for b in bufs]).cpu(), "mean")
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.device, b.dtype))
        offset += b.numel()


# ---------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything one training run holds (built by `_setup`)."""

    cfg: Config
    dist: Dist
    model: nn.Module  # the bare model: saved, evaluated, returned
    train_model: nn.Module  # what the steps call (DDP wraps `model` under torch.distributed)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    channels_last: bool
    schedule: LRSchedule
    steps_per_epoch: int
    epochs: int
    num_choices: int
    train_loader: TrainLoaderProtocol
    val_loader: ValLoaderProtocol
    hooks: TrainHooks | None
    checkpointer: Checkpointer
    progress: Progress


@dataclass
class _EpochSums:
    """This rank's running sums over an epoch: loss (on the device, no sync), rows, choices."""

    loss_sum: torch.Tensor
    rows: int
    counts: torch.Tensor  # int64 [num_choices] on the CPU
    seconds: float = 0.0

    def reduced(self, dist: Dist) -> dict[str, Any]:
        """Sums over all ranks (a collective): loss_sum, n, counts."""
        acc = dist.allreduce(torch.stack([self.loss_sum.cpu(), torch.tensor(float(self.rows), dtype=torch.float64)]),
                             "sum")
        counts = dist.allreduce(self.counts, "sum").to(torch.int64)
        return {"loss_sum": float(acc[0]), "n": int(acc[1]), "counts": counts}


def _count_choices(sums: _EpochSums, choices: torch.Tensor, num_choices: int) -> None:
    """Add the step's choices (-1 = none) to the counts; on the CPU, so no device sync."""
    ch = choices.cpu()  # the loaders hand choices over on the CPU: a no-op then
    ch = ch[ch >= 0]
    if ch.numel():
        top = int(ch.max())
        if top >= num_choices:
            raise ValueError(f"the loader reported choice {top} but the policies have {num_choices} choices")
        sums.counts += torch.bincount(ch, minlength=num_choices)


def _train_steps(run: _Run, state: TrainState, sums: _EpochSums, epoch: int) -> None:
    """The epoch's optimizer steps from `state.step_in_epoch` on; mid-epoch checkpoints."""
    tc, spe = run.cfg.train, run.steps_per_epoch
    i = state.step_in_epoch
    t0 = time.perf_counter()
    with run.dist.joined(run.train_model):
        for batch in run.train_loader:
            lr = run.schedule(epoch * spe + i)
            for g in run.optimizer.param_groups:
                g["lr"] = lr
            images = prepare_images(batch.images, run.dist.device, run.channels_last)
            labels = batch.labels.to(run.dist.device, non_blocking=True)
            try:
                per_row = train_step(run.train_model, run.optimizer, run.scaler, run.dist, images, labels,
                                     micro_batches=tc.micro_batches, precision=run.precision,
                                     label_smoothing=tc.label_smoothing)
            except torch.cuda.OutOfMemoryError as e:
                raise RuntimeError(rows_advice(len(labels), tc.micro_batches, "CUDA ran out of memory")) from e
            i += 1
            state.global_step += 1
            sums.loss_sum += per_row.double().sum()
            sums.rows += per_row.numel()
            _count_choices(sums, batch.choices, run.num_choices)
            if run.hooks is not None:
                run.hooks.on_step(per_row, batch)
            run.progress.step(i, state.global_step, per_row.mean(), lr, per_row.numel())
            if tc.checkpoint_every_steps and state.global_step % tc.checkpoint_every_steps == 0 and i < spe:
                state.step_in_epoch = i
                state.partial = {**sums.reduced(run.dist), "time": sums.seconds + time.perf_counter() - t0}
                # rank 0 saves one copy of the BN statistics: their mean over ranks, which every rank
                # then continues from (the epoch-end mean comes out the same: the updates are affine)
                _average_buffers(run.model, run.dist)
                run.checkpointer.save(state)
    sums.seconds += time.perf_counter() - t0


def _run_epoch(run: _Run, state: TrainState, epoch: int) -> None:
    """Train epoch `epoch` (from where `state` stands), validate, checkpoint; updates `state`."""
    dist, first = run.dist, state.step_in_epoch
    if run.hooks is not None:
        new = run.hooks.on_epoch_start(epoch)
        if new is not None:
            run.train_loader.set_policies(list(new))
    run.train_loader.set_epoch(epoch)
    if first:
        run.train_loader.load_state_dict(state.loader)
    sums = _EpochSums(torch.zeros((), dtype=torch.float64, device=dist.device), 0,
                      torch.zeros(run.num_choices, dtype=torch.int64))
    if first and state.partial is not None and dist.is_root:  # a mid-epoch checkpoint's sums (all ranks')
        sums.loss_sum += state.partial["loss_sum"]
        sums.rows += int(state.partial["n"])
        sums.counts += state.partial["counts"]
        sums.seconds = float(state.partial["time"])
    run.progress.start_epoch(epoch, run.epochs, run.steps_per_epoch, first)
    _train_steps(run, state, sums, epoch)
    seconds = float(dist.allreduce(torch.tensor([sums.seconds], dtype=torch.float64), "max")[0])  # slowest rank
    total = sums.reduced(dist)
    _average_buffers(run.model, dist)  # BN running stats differ per rank: average them so all agree
    validate = run.cfg.train.validates_after(epoch, run.epochs)
    metrics = evaluate(run.model, run.val_loader, dist, precision=run.precision,
                       channels_last=run.channels_last) if validate else {}
    spe = run.steps_per_epoch
    entry = {"epoch": epoch, "step": state.global_step, "train_loss": total["loss_sum"] / max(1, total["n"]),
             "train_samples": total["n"], **metrics, "lr": run.schedule(epoch * spe + spe - 1),
             "images_per_s": total["n"] / max(1e-9, seconds), "epoch_time_s": seconds}
    state.history.append(entry)
    state.choice_counts = state.choice_counts + total["counts"]
    if run.hooks is not None:
        run.hooks.on_epoch_end(epoch, entry)
    run.progress.end_epoch(entry)
    state.epoch, state.step_in_epoch, state.partial = epoch + 1, 0, None
    run.checkpointer.save(state)


# ---------------------------------------------------------------------------------------------
def _loaders(cfg: Config, policies: list[Any], dist: Dist, train_loader: TrainLoaderProtocol | None,
             val_loader: ValLoaderProtocol | None) -> tuple[TrainLoaderProtocol, ValLoaderProtocol]:
    if train_loader is None or val_loader is None:
        train_loader = train_loader or build_train_loader(cfg, policies, dist.rank, dist.size, dist.device)
        val_loader = val_loader or build_val_loader(cfg, dist.rank, dist.size, dist.device)
    return train_loader, val_loader


def _setup(cfg: Config, out: Path, policies: list[Any], epochs: int, dist: Dist, *, lr: float | None,
           schedule: str | None, span: tuple[int, int], warmup: bool, hooks: TrainHooks | None,
           loaders: tuple[TrainLoaderProtocol, ValLoaderProtocol]) -> _Run:
    """Model, precision, optimizer, distributed wrapping, lr schedule, checkpointer, progress."""
    tc, device = cfg.train, dist.device
    train_loader, val_loader = loaders
    copies = max(1, len(policies))
    rows = cfg.data.batch_size * copies
    if tc.micro_batches > rows:
        raise ValueError(f"train.micro_batches={tc.micro_batches} is more than the {rows} rows of a step per rank "
                         "(data.batch_size x augment.copies); lower train.micro_batches")
    torch.manual_seed(tc.seed)  # identical initialisation everywhere (and broadcast anyway)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv algorithms once
    precision = precision_for(tc, device)
    channels_last = tc.channels_last and device.type == "cuda"
    model = build_model(tc.model, int(train_loader.num_classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    check_rows_fit(model, rows, tc.micro_batches, cfg.data.image_size, precision, device, channels_last)
    sgd = torch.optim.SGD(model.parameters(), lr=0.0, momentum=tc.momentum, nesterov=tc.nesterov,
                          weight_decay=tc.weight_decay)
    train_model, optimizer = dist.prepare(model, sgd, tc.micro_batches)
    scaler = precision.scaler()
    # steps per epoch: the same on every rank so the lr schedule agrees
    spe = int(dist.allreduce(torch.tensor([len(train_loader)]), "max")[0])
    if spe < 1:
        raise ValueError("the train loader yields no batches: check data.train_list and data.batch_size")
    start, length = span  # this run is epochs start .. start + epochs of a schedule `length` epochs long
    warm = int(round(tc.warmup_epochs * spe)) if warmup else 0
    sched = LRSchedule(scaled_lr(cfg, lr, dist.size, copies), max(1, length * spe), min(warm, length * spe),
                       schedule or tc.schedule, offset=start * spe)
    num_choices = max([int(getattr(p, "num_choices", 1)) for p in policies] + [1])
    ckpt = Checkpointer(out / CHECKPOINT_NAME, cfg, dist, model, optimizer, scaler, sched, hooks)
    return _Run(cfg, dist, model, train_model, optimizer, scaler, precision, channels_last, sched, spe, epochs,
                num_choices, train_loader, val_loader, hooks, ckpt, Progress(out, dist.is_root, tc.log_interval,
                                                                             dist.size))


def train(cfg: Config, out_dir: str | os.PathLike[str], policies: Sequence[Any], *, epochs: int,
          lr: float | None = None, schedule: str | None = None, schedule_span: tuple[int, int] | None = None,
          init_from: str | Path | None = None, hooks: TrainHooks | None = None, dist: Dist | None = None,
          train_loader: TrainLoaderProtocol | None = None,
          val_loader: ValLoaderProtocol | None = None) -> TrainResult:
    """Train `cfg.train.model` for `epochs` epochs with `policies` (M = len(policies) copies).

    - `lr` replaces train.lr (same linear scaling); `schedule` replaces train.schedule.
    - `schedule_span=(start, length)`: the lr follows epochs start .. start + `epochs` of a
      schedule `length` epochs long (warm-up included), default (0, epochs). The AWS shared stage
      and its fine-tunes split one schedule this way (aws.finetune_schedule: continue).
    - `init_from`: a checkpoint whose model weights start the run (AWS fine-tunes); no
      warm-up then unless the run continues a schedule (start > 0). Ignored when
      `out_dir/checkpoint.pt` exists (the run resumes instead).
    - `dist`: an initialised backend (default: `init_dist(cfg.dist)`).
    - `train_loader`/`val_loader`: default `hpcaug.data.build_train_loader/build_val_loader`.
    Every rank must call it; every rank gets the same `TrainResult`. In a multi-rank run an
    error on one rank ends the whole job (`Dist.stop_job_on_error`).
    """
    dist = dist or init_dist(cfg.dist)
    with dist.stop_job_on_error():
        out = Path(out_dir)
        if dist.is_root:
            out.mkdir(parents=True, exist_ok=True)
        setup_logging(dist.is_root)
        policies = list(policies)
        span = schedule_span or (0, epochs)
        if span[0] < 0 or span[0] + epochs > span[1]:
            raise ValueError(f"schedule_span={span}: epochs {span[0]}..{span[0] + epochs} are not inside a "
                             f"schedule of {span[1]} epochs")
        run = _setup(cfg, out, policies, epochs, dist, lr=lr, schedule=schedule, span=span,
                     warmup=init_from is None or span[0] > 0,
                     hooks=hooks, loaders=_loaders(cfg, policies, dist, train_loader, val_loader))
        state = run.checkpointer.restore(run.num_choices, Path(init_from) if init_from is not None else None)
        start = state.epoch
        run.model.train()
        try:
            for epoch in range(start, epochs):
                _run_epoch(run, state, epoch)
        finally:
            run.progress.close()
        if start >= epochs and dist.is_root:
            log.info("nothing to do: %s already holds %d epochs", run.checkpointer.path, start)
    return TrainResult(history=state.history, choice_counts=state.choice_counts.to(torch.int64),
                       checkpoint=run.checkpointer.path, steps=state.global_step, model=run.model)
