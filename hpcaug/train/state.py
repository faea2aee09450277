"""What a training run resumes from: the counters (`TrainState`) and `Checkpointer`, which
writes and restores out_dir/checkpoint.pt (docs/training.md lists its fields).

Restore and save are collectives: rank 0 reads and writes the file, the other ranks get
what they need by broadcast (weights, optimizer, counters) or give it by allgather (their
RNG states).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn

from hpcaug.config import Config
from hpcaug.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from hpcaug.train.dist import Dist

log = logging.getLogger("hpcaug.train")

__all__ = ["TrainState", "Checkpointer", "CHECKPOINT_NAME", "CHECKPOINT_FORMAT"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class TrainState:
    """Where a run stands: `step_in_epoch` batches of `epoch` are trained (0 = at its start)."""

    num_choices: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    choice_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    # epoch accumulators (summed over ranks) of a mid-epoch checkpoint: loss_sum, n, counts, time
    partial: dict[str, Any] | None = None
    loader: dict[str, int] = field(default_factory=dict)  # the loader's {epoch, step, samples}

    def __post_init__(self) -> None:
        if self.choice_counts.numel() == 0:
            self.choice_counts = torch.zeros(self.num_choices, dtype=torch.int64)


class Checkpointer:
    """Saves and restores everything a run needs to continue exactly where it stopped.

    `model` is the bare module (not a DDP wrapper), `optimizer` the one the loop steps (after
    `Dist.prepare`: Horovod's DistributedOptimizer is a new object with empty state, so the
    saved state is loaded into it, not into the optimizer it wrapped).
    """

    def __init__(self, path: Path, cfg: Config, dist: Dist, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, schedule: _Stateful, hooks: _Stateful | None = None) -> None:
        self.path, self.cfg, self.dist = path, cfg, dist
        self.model, self.optimizer, self.scaler, self.schedule, self.hooks = model, optimizer, scaler, schedule, hooks

    def restore(self, num_choices: int, init_from: Path | None = None) -> TrainState:
        """Resume from `path` if it exists (every rank gets rank 0's copy), else start fresh
        (with `init_from`'s weights if given). Seeds this rank's RNG stream either way."""
        dist, seed = self.dist, self.cfg.train.seed
        exists = dist.broadcast_object(self.path.is_file() if dist.is_root else None, name="hpcaug.resume.exists")
        if not exists:
            if init_from is not None and dist.is_root:
                self.model.load_state_dict(load_checkpoint(init_from)["model"])
            torch.manual_seed(seed * 1000 + dist.rank + 1)  # per-rank stream for anything stochastic
            dist.broadcast_model(self.model)  # rank 0's weights (and BN buffers) everywhere
            return TrainState(num_choices)
        meta = self._read_on_root()
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise RuntimeError(f"{self.path} has checkpoint format {meta.get('format')}, expected "
                               f"{CHECKPOINT_FORMAT}; move it away to start over")
        self.optimizer.load_state_dict(meta["optimizer"])
        self.scaler.load_state_dict(meta["scaler"])
        if self.hooks is not None and meta.get("hooks") is not None:
            self.hooks.load_state_dict(meta["hooks"])
        rng = meta.get("rng") or []
        if len(rng) == dist.size:
            set_rng_state(rng[dist.rank])
        else:  # another rank count: fresh per-rank streams
            torch.manual_seed(seed * 1000 + dist.rank + 1)
        dist.broadcast_model(self.model)
        state = TrainState(num_choices, epoch=int(meta["epoch"]), step_in_epoch=int(meta["step_in_epoch"]),
                           global_step=int(meta["global_step"]), history=list(meta["history"]),
                           choice_counts=meta["choice_counts"].clone(), partial=meta.get("partial"),
                           loader=dict(meta["loader"]))
        if dist.is_root:
            log.info("resuming %s at epoch %d step %d (global step %d)", self.path, state.epoch + 1,
                     state.step_in_epoch, state.global_step)
        return state

    def _read_on_root(self) -> dict[str, Any]:
        """Rank 0 loads the file and its model weights; everything else is broadcast."""
        meta: dict[str, Any] | None = None
        if self.dist.is_root:
            state = load_checkpoint(self.path, map_location="cpu")
            self.model.load_state_dict(state["model"])
            meta = {k: v for k, v in state.items() if k != "model"}
        meta = self.dist.broadcast_object(meta, name="hpcaug.resume.meta")
        assert meta is not None
        return meta

    def save(self, state: TrainState) -> None:
        """Write `state` (every rank calls it: the RNG states of all ranks go in)."""
        dist = self.dist
        rngs = dist.allgather_object(rng_state(), name=f"hpcaug.ckpt.rng.{state.epoch}.{state.step_in_epoch}")
        if not dist.is_root:
            return
        batch = self.cfg.data.batch_size
        save_checkpoint(self.path, {
            "format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "schedule": self.schedule.state_dict(), "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch, "global_step": state.global_step, "history": state.history,
            "choice_counts": state.choice_counts, "partial": state.partial,
            # where the loader stands: `step_in_epoch` batches of `epoch` consumed (the loader's own
            # state_dict lags one batch inside the for-loop, so it is written from our counters)
            "loader": {"epoch": state.epoch, "step": state.step_in_epoch,
                       "samples": state.step_in_epoch * batch * dist.size},
            "rng": rngs, "hooks": self.hooks.state_dict() if self.hooks is not None else None,
            "world_size": dist.size, "model_name": self.cfg.train.model, "config": self.cfg.to_json(),
        })
