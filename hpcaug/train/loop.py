"""The one training loop: AWS shared stage, fine-tunes, AdvAA, final/production training.

`train(cfg, out_dir, policies, epochs=...)` trains with SGD Nesterov on the N x M enlarged
batch the loader yields (M = len(policies) copies of each of N images per rank; iterations
per epoch do not change with M; the loss is the mean over all N x M rows), validates on the
exact validation set after every epoch, checkpoints atomically and resumes from
`out_dir/checkpoint.pt` when it exists (mid-epoch too). Rank 0 logs and writes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcaug.config import Config
from hpcaug.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from hpcaug.train.dist import Dist, init_dist
from hpcaug.train.models import build_model

log = logging.getLogger("hpcaug.train")

__all__ = ["train", "evaluate", "TrainResult", "TrainHooks", "LRSchedule", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What `train` returns (identical on every rank)."""

    history: list[dict[str, Any]]  # one entry per epoch: epoch, train_loss, val_top1, val_top5, lr, images_per_s ...
    choice_counts: torch.Tensor  # int64 [num_choices]: how often the loader applied each choice, all ranks, all epochs
    checkpoint: Path  # out_dir/checkpoint.pt (the final state)
    steps: int = 0  # optimizer steps taken in total (resumed runs included)
    model: Optional[nn.Module] = field(default=None, repr=False)  # the trained model (this rank's copy)


class TrainHooks:
    """Callbacks for the AdvAA joint training (or anything that rides along). No-ops here.

    They run on every rank. `on_epoch_start` may return new policies for this epoch; when a
    run resumes mid-epoch it is called again for that epoch and must then return the
    policies it returned before (keep them in `state_dict`).
    """

    def on_epoch_start(self, epoch: int) -> Optional[Sequence[Any]]:
        return None

    def on_step(self, per_sample_loss: torch.Tensor, batch: Any) -> None:
        """per_sample_loss: float [N*M] (detached); batch.copy_ids says which policy made each row."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _Loader(Protocol):
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterable[Any]: ...


@dataclass
class LRSchedule:
    """Per-step lr: linear warm-up to `peak`, then cosine to 0 or constant.

    A pure function of the step, so the saved state is just the peak and the lengths.
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        span = max(1, self.total_steps - self.warmup_steps)
        return 0.5 * self.peak * (1 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))

    def state_dict(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind}


def scaled_lr(cfg: Config, lr: Optional[float], world: int, copies: int) -> float:
    """Linear scaling: `lr` (default train.lr) is per train.lr_ref_batch images of the global batch
    N x ranks (x M when train.scale_lr_with_copies)."""
    base = cfg.train.lr if lr is None else lr
    global_batch = cfg.data.batch_size * world * (copies if cfg.train.scale_lr_with_copies else 1)
    return base * global_batch / cfg.train.lr_ref_batch


# ---------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, loader: _Loader, dist: Dist, *, amp: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1/top-5 and mean loss over the whole validation split.

    Correct counts and sample counts are summed over ranks (not means of means), so the
    result is exact when ranks hold different numbers of samples.
    """
    model.eval()
    device = dist.device
    acc = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, n
    with torch.no_grad():
        for batch in loader:
            images, labels = _to_device(batch.images, device, channels_last), batch.labels.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top.eq(labels[:, None])
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

    Horovod averages gradients only, so each rank's BN statistics follow its own shard; after
    this every rank holds the same model, validates the same model and rank 0 saves it.
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


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.float16 and device.type != "cuda":
        x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------------
class _Reporter:
    """Rank-0 outputs: log lines / tqdm bar, metrics.jsonl, TensorBoard (if installed)."""

    def __init__(self, out_dir: Path, root: bool, log_interval: int) -> None:
        self.root, self.log_interval = root, max(1, log_interval)
        self.metrics_path = out_dir / "metrics.jsonl"
        self.tb = None
        self.bar = None
        self.interactive = root and sys.stderr.isatty()
        if root:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                log.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def step(self, step: int, epoch: int, loss: float, lr: float, ips: float, eta_s: float, tick: bool) -> None:
        if not self.root:
            return
        if self.bar is not None:
            self.bar.update(1)
            if tick:
                self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.4g}", ips=f"{ips:.0f}")
        if tick:
            if self.bar is None:
                log.info("epoch %d step %d  loss %.4f  lr %.5g  %.1f img/s  ETA %s", epoch + 1, step, loss, lr, ips,
                         _fmt_eta(eta_s))
            self._write({"kind": "step", "epoch": epoch, "step": step, "train_loss": loss, "lr": lr,
                         "images_per_s": ips})
            if self.tb is not None:
                self.tb.add_scalar("train/loss", loss, step)
                self.tb.add_scalar("train/lr", lr, step)
                self.tb.add_scalar("train/images_per_s", ips, step)

    def end_epoch(self, entry: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.root:
            return
        log.info("epoch %d done: train_loss %.4f  val_top1 %.4f  val_top5 %.4f  %.1f img/s", entry["epoch"] + 1,
                 entry["train_loss"], entry["val_top1"], entry["val_top5"], entry["images_per_s"])
        self._write({"kind": "epoch", **entry})
        if self.tb is not None:
            for k in ("train_loss", "val_top1", "val_top5", "val_loss", "images_per_s"):
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


def _setup_logging(root: bool) -> None:
    logger = logging.getLogger("hpcaug")
    if not logger.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    if not root:
        logger.setLevel(logging.WARNING)  # rank-0-only logging
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _num_classes(cfg: Config, loader: Any) -> int:
    n = getattr(loader, "num_classes", None)
    if n:
        return int(n)
    from hpcaug.data.index import DatasetIndex

    return int(DatasetIndex.open(cfg.data.dir).num_classes)


# ---------------------------------------------------------------------------------------------
def train(cfg: Config, out_dir: Union[str, "os.PathLike[str]"], policies: Sequence[Any], *, epochs: int,
          lr: Optional[float] = None, schedule: Optional[str] = None, init_from: Optional[Union[str, Path]] = None,
          hooks: Optional[TrainHooks] = None, dist: Optional[Dist] = None,
          train_loader: Optional[_Loader] = None, val_loader: Optional[_Loader] = None) -> TrainResult:
    """Train `cfg.train.model` for `epochs` epochs with `policies` (M = len(policies) copies).

    - `lr` replaces train.lr (same linear scaling); `schedule` replaces train.schedule.
    - `init_from`: a checkpoint whose model weights start the run (AWS fine-tunes); no
      warm-up then. Ignored when `out_dir/checkpoint.pt` exists (the run resumes instead).
    - `dist`: an initialised backend (default: `init_dist(cfg.dist)`).
    - `train_loader`/`val_loader`: default `hpcaug.data.build_train_loader/build_val_loader`.
    Every rank must call it; every rank gets the same `TrainResult`.
    """
    tc = cfg.train
    dist = dist or init_dist(cfg.dist)
    device = dist.device
    out = Path(out_dir)
    if dist.is_root:
        out.mkdir(parents=True, exist_ok=True)
    _setup_logging(dist.is_root)
    policies = list(policies)
    copies = max(1, len(policies))
    if train_loader is None or val_loader is None:
        from hpcaug.data import build_train_loader, build_val_loader

        if train_loader is None:
            train_loader = build_train_loader(cfg, policies, dist.rank, dist.size, device)
        if val_loader is None:
            val_loader = build_val_loader(cfg, dist.rank, dist.size, device)
    num_choices = max([int(getattr(p, "num_choices", 1)) for p in policies] + [1])

    # identical initialisation everywhere (and broadcast below anyway)
    torch.manual_seed(tc.seed)
    use_cuda = device.type == "cuda"
    amp, channels_last = tc.amp and use_cuda, tc.channels_last and use_cuda
    model = build_model(tc.model, _num_classes(cfg, train_loader)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=tc.momentum, nesterov=tc.nesterov,
                                weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    # steps per epoch: the same on every rank so the lr schedule agrees
    spe = int(dist.allreduce(torch.tensor([len(train_loader)]), "max")[0])  # type: ignore[arg-type]
    if spe < 1:
        raise ValueError("the train loader yields no batches: check data.train_list and data.batch_size")
    warm = 0 if init_from is not None else int(round(tc.warmup_epochs * spe))
    sched = LRSchedule(scaled_lr(cfg, lr, dist.size, copies), max(1, epochs * spe), min(warm, epochs * spe),
                       schedule or tc.schedule)

    # ---- resume (rank 0 reads, everyone gets it) or init_from
    ckpt = out / CHECKPOINT_NAME
    exists = dist.broadcast_object(ckpt.is_file() if dist.is_root else None, name="hpcaug.resume.exists")
    meta: Optional[dict[str, Any]] = None
    if exists:
        state = load_checkpoint(ckpt, map_location="cpu") if dist.is_root else None
        if state is not None:
            model.load_state_dict(state["model"])
            meta = {k: v for k, v in state.items() if k != "model"}
        meta = dist.broadcast_object(meta, name="hpcaug.resume.meta")
        assert meta is not None
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise RuntimeError(f"{ckpt} has checkpoint format {meta.get('format')}, expected {CHECKPOINT_FORMAT}; "
                               "move it away to start over")
        optimizer.load_state_dict(meta["optimizer"])
        scaler.load_state_dict(meta["scaler"])
        if hooks is not None and meta.get("hooks") is not None:
            hooks.load_state_dict(meta["hooks"])
        rng = meta.get("rng") or []
        if len(rng) == dist.size:
            set_rng_state(rng[dist.rank])
        else:
            torch.manual_seed(tc.seed * 1000 + dist.rank + 1)
    else:
        if init_from is not None and dist.is_root:
            model.load_state_dict(load_checkpoint(init_from)["model"])
        torch.manual_seed(tc.seed * 1000 + dist.rank + 1)  # per-rank stream for anything stochastic
    dist.broadcast_model(model)  # rank 0's weights (and BN buffers) everywhere
    optimizer = dist.wrap_optimizer(optimizer, model)

    history: list[dict[str, Any]] = list(meta["history"]) if meta else []
    choice_counts = (meta["choice_counts"].clone() if meta else torch.zeros(num_choices, dtype=torch.int64))
    start_epoch = int(meta["epoch"]) if meta else 0
    start_in_epoch = int(meta["step_in_epoch"]) if meta else 0
    global_step = int(meta["global_step"]) if meta else 0
    loader_state = dict(meta["loader"]) if meta else {}
    part = meta.get("partial") if meta else None  # epoch accumulators (summed over ranks) of a mid-epoch checkpoint
    if meta and dist.is_root:
        log.info("resuming %s at epoch %d step %d (global step %d)", ckpt, start_epoch + 1, start_in_epoch,
                 global_step)

    rep = _Reporter(out, dist.is_root, tc.log_interval)

    def save(epoch: int, step_in_epoch: int, partial: Optional[dict[str, Any]]) -> None:
        rngs = dist.allgather_object(rng_state(), name=f"hpcaug.ckpt.rng.{epoch}.{step_in_epoch}")
        if not dist.is_root:
            return
        save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "schedule": sched.state_dict(), "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step, "history": history,
            "choice_counts": choice_counts, "partial": partial,
            # where the loader stands: `step_in_epoch` batches of `epoch` consumed (the loader's own
            # state_dict lags one batch inside the for-loop, so it is written from our counters)
            "loader": {"epoch": epoch, "step": step_in_epoch,
                       "samples": step_in_epoch * cfg.data.batch_size * dist.size}, "rng": rngs,
            "hooks": hooks.state_dict() if hooks is not None else None, "world_size": dist.size,
            "model_name": tc.model, "config": cfg.to_json(),
        })

    model.train()
    try:
        for epoch in range(start_epoch, epochs):
            resumed_mid = epoch == start_epoch and start_in_epoch > 0
            if hooks is not None:
                new = hooks.on_epoch_start(epoch)
                if new is not None:
                    if not hasattr(train_loader, "set_policies"):
                        raise TypeError("hooks returned policies but the train loader has no set_policies()")
                    train_loader.set_policies(list(new))  # type: ignore[union-attr]
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)  # type: ignore[union-attr]
            first = start_in_epoch if resumed_mid else 0
            if resumed_mid and hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(loader_state)  # type: ignore[union-attr]
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            n_rows = torch.zeros((), dtype=torch.int64, device=device)
            counts = torch.zeros(num_choices, dtype=torch.int64, device=device)
            elapsed = 0.0
            if resumed_mid and part is not None and dist.is_root:
                loss_sum += part["loss_sum"]
                n_rows += part["n"]
                counts += part["counts"].to(device)
                elapsed = float(part["time"])
            rep.start_epoch(epoch, epochs, spe, first)
            t0 = time.perf_counter()
            t_tick, rows_tick = t0, 0
            i = first
            for batch in train_loader:
                cur_lr = sched(epoch * spe + i)
                for g in optimizer.param_groups:
                    g["lr"] = cur_lr
                images = _to_device(batch.images, device, channels_last)
                labels = batch.labels.to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    logits = model(images)
                per_sample = F.cross_entropy(logits.float(), labels, reduction="none",
                                             label_smoothing=tc.label_smoothing)
                loss = per_sample.mean()  # mean over all N x M rows
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                dist.step(optimizer, scaler)
                global_step += 1
                i += 1
                ps = per_sample.detach()
                loss_sum += ps.double().sum()
                n_rows += ps.numel()
                ch = batch.choices.to(device)
                ch = ch[ch >= 0]
                if ch.numel():
                    if int(ch.max()) >= num_choices:
                        raise ValueError(f"the loader reported choice {int(ch.max())} but the policies have "
                                         f"{num_choices} choices")
                    counts += torch.bincount(ch, minlength=num_choices)
                if hooks is not None:
                    hooks.on_step(ps, batch)
                rows_tick += ps.numel()
                tick = dist.is_root and (i % rep.log_interval == 0 or i == spe)
                if dist.is_root and (tick or rep.bar is not None):
                    now = time.perf_counter()
                    dt = max(1e-9, now - t_tick) if tick else max(1e-9, now - t0)
                    ips = (rows_tick if tick else float(n_rows)) * dist.size / dt
                    per_step = (now - t0) / max(1, i - first)
                    eta = per_step * ((epochs - epoch - 1) * spe + (spe - i))
                    rep.step(global_step, epoch, float(loss.detach()), cur_lr, ips, eta, tick)
                    if tick:
                        t_tick, rows_tick = now, 0
                if tc.checkpoint_every_steps and global_step % tc.checkpoint_every_steps == 0 and i < spe:
                    acc = dist.allreduce(torch.cat([loss_sum.reshape(1), n_rows.double().reshape(1)]).cpu(), "sum")
                    cnt = dist.allreduce(counts.cpu(), "sum")
                    save(epoch, i, {"loss_sum": float(acc[0]), "n": int(acc[1]), "counts": cnt,
                                    "time": elapsed + time.perf_counter() - t0})
            # this rank is out of batches; let the others finish theirs (uneven shards)
            dist.join()
            elapsed += time.perf_counter() - t0
            elapsed = float(dist.allreduce(torch.tensor([elapsed], dtype=torch.float64), "max")[0])  # slowest rank
            acc = dist.allreduce(torch.cat([loss_sum.reshape(1), n_rows.double().reshape(1)]).cpu(), "sum")
            counts = dist.allreduce(counts.cpu(), "sum").to(torch.int64)
            choice_counts = choice_counts + counts
            _average_buffers(model, dist)  # BN running stats differ per rank: average them so all agree
            metrics = evaluate(model, val_loader, dist, amp=amp, channels_last=channels_last)
            entry = {"epoch": epoch, "step": global_step, "train_loss": float(acc[0]) / max(1.0, float(acc[1])),
                     "train_samples": int(acc[1]), **metrics, "lr": sched(epoch * spe + spe - 1),
                     "images_per_s": float(acc[1]) / max(1e-9, elapsed), "epoch_time_s": elapsed}
            history.append(entry)
            if hooks is not None:
                hooks.on_epoch_end(epoch, entry)
            rep.end_epoch(entry)
            part = None
            save(epoch + 1, 0, None)
    finally:
        rep.close()
    if not history and dist.is_root:
        log.info("nothing to do: %s already holds %d epochs", ckpt, start_epoch)
    return TrainResult(history=history, choice_counts=choice_counts.to(torch.int64), checkpoint=ckpt,
                       steps=global_step, model=model)
