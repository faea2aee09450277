"""Adversarial AutoAugment: the controller trained jointly with the target network.

Seed 2, algorithm 1. Each epoch the LSTM controller (``advaa_controller``) emits M policies;
the loader augments every batch of N images once per policy (the N x M enlarged batch,
``augment.copies == advaa.num_policies``); the target network minimises the mean loss over
all N x M samples (``hpcaug.train.loop``). Per-policy training losses are averaged over
the epoch (the paper's moving average, whose length is one epoch: footnote 2), summed
across ranks, normalised across the M policies and used as the REINFORCE reward at the
epoch end: the controller learns to make training harder.

Distributed: the controller lives on the CPU of every rank. Rank 0 samples the policies
and broadcasts the decisions; every rank applies the same Adam step to the same
allreduced rewards, so the controller parameters stay identical (a test checks it).
Records: ``<run>/advaa/epochs.jsonl`` (one line per epoch: policies, losses, rewards,
entropy) for drift plots (paper figure 6). Controller and its optimiser are checkpointed
through the hooks' ``state_dict`` inside the training checkpoint.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hpcaug._atomic import atomic_write_text
from hpcaug.config import Config, load_config
from hpcaug.ops.policy import SubPolicyPolicy
from hpcaug.ops.spaces import ADVAA_SPACE
from hpcaug.ops.table import NUM_BINS, OPS
from hpcaug.search.advaa_controller import (
    AdvAAController,
    ControllerSample,
    actions_to_subpolicies,
    normalise_rewards,
    reinforce_loss,
)
from hpcaug.search.rundir import RunDir
from hpcaug.train.dist import Dist, init_dist
from hpcaug.train.loop import TrainHooks, TrainResult, train

__all__ = ["AdvAAHooks", "AdvAAResult", "run_advaa", "validate_advaa_config", "build_controller",
           "policies_from_actions", "read_epoch_records"]


def validate_advaa_config(cfg: Config) -> None:
    """Raise ValueError (saying what to change) when cfg cannot run AdvAA."""
    a = cfg.advaa
    if cfg.augment.copies != a.num_policies:
        raise ValueError(
            f"AdvAA augments each batch once per policy, so augment.copies (M of the N x M batch, "
            f"now {cfg.augment.copies}) must equal advaa.num_policies (now {a.num_policies}): "
            f"set augment.copies: {a.num_policies} in the config (or pass augment.copies={a.num_policies})")
    num_ops, num_bins = _space_size()
    if a.num_magnitudes != num_bins:
        raise ValueError(f"advaa.num_magnitudes ({a.num_magnitudes}) must equal the {num_bins} magnitude bins "
                         "of the AdvAA space (hpcaug.ops.spaces.ADVAA_SPACE): set advaa.num_magnitudes: "
                         f"{num_bins}")
    if a.ops_per_sub_policy < 1 or a.hidden < 1 or a.embedding < 1:
        raise ValueError("advaa.ops_per_sub_policy, advaa.hidden and advaa.embedding must be >= 1")
    if not (a.lr > 0 and a.entropy_weight >= 0):
        raise ValueError(f"advaa.lr must be > 0 and advaa.entropy_weight >= 0, got {a.lr}, {a.entropy_weight}")
    if cfg.train.epochs < 1:
        raise ValueError("train.epochs must be >= 1 for AdvAA (the controller steps at each epoch end)")


def _space_size() -> tuple[int, int]:
    """(ops, magnitude bins) of the AdvAA space: 16 x 10, element index = op id * bins + bin."""
    if ADVAA_SPACE.num_elements != len(OPS) * NUM_BINS:
        raise RuntimeError(f"ADVAA_SPACE has {ADVAA_SPACE.num_elements} elements, expected every op x bin "
                           f"({len(OPS)} x {NUM_BINS}); the controller indexes ops by their table id")
    return len(OPS), NUM_BINS


def build_controller(cfg: Config, seed: int | None = None) -> AdvAAController:
    """The controller sized from cfg.advaa and the ops module's ADVAA_SPACE (seeded init)."""
    num_ops, _ = _space_size()
    a = cfg.advaa
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed if seed is None else seed)
        return AdvAAController(num_ops=num_ops, num_magnitudes=a.num_magnitudes,
                               sub_policies=a.sub_policies, ops_per_sub_policy=a.ops_per_sub_policy,
                               hidden=a.hidden, embedding=a.embedding)


def policies_from_actions(actions: torch.Tensor, ops_per_sub_policy: int) -> list[Any]:
    """Controller decisions [M, Q*K*2] -> M ``SubPolicyPolicy`` values (every op fires: p = 1).

    The controller's op index is the op table id, so the ADVAA_SPACE element of (op, bin)
    is ``op * NUM_BINS + bin``.
    """
    return [SubPolicyPolicy.from_advaa([[o * NUM_BINS + b for o, b in sub] for sub in subs])
            for subs in actions_to_subpolicies(actions, ops_per_sub_policy)]


def _policy_names(actions: torch.Tensor, ops_per_sub_policy: int) -> list[list[list[tuple[str, int]]]]:
    """Human-readable decisions for the records: [[("Rotate", 7), ("Invert", 2)], ...] per policy."""
    return [[[(OPS[o].name, b) for o, b in sub] for sub in subs]
            for subs in actions_to_subpolicies(actions, ops_per_sub_policy)]


def read_epoch_records(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch records of an AdvAA run (``<run>/advaa/epochs.jsonl``), oldest first."""
    return RunDir(run_dir).read_advaa_records()


class AdvAAHooks(TrainHooks):
    """Training-loop hooks that run the AdvAA controller (``hpcaug.train.loop.train(hooks=...)``).

    - ``on_epoch_start(e)``: rank 0 samples M policies (generator seeded by train.seed and
      e, so a resumed run draws the same ones), broadcasts them, and the loader gets them.
    - ``on_step(per_sample_loss, batch)``: adds each sample's loss to its policy's sum
      (``batch.copy_ids``); no synchronisation per step.
    - ``on_epoch_end(e, metrics)``: allreduce the sums and counts, mean -> normalise ->
      REINFORCE step (Adam, entropy bonus), rank 0 appends the record (also in ``last_record``).
    - ``state_dict()`` / ``load_state_dict()``: controller, optimiser, the epoch's
      decisions and its partial loss sums (mid-epoch checkpoints), no collectives.
    """

    def __init__(self, cfg: Config, dist: Dist, run_dir: str | os.PathLike[str]) -> None:
        validate_advaa_config(cfg)
        self.cfg = cfg
        self.dist = dist
        self.rd = RunDir(run_dir)
        self.m = cfg.advaa.num_policies
        self.controller = build_controller(cfg)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=cfg.advaa.lr)
        self.epoch: int | None = None  # the epoch whose policies are in use
        self.actions: torch.Tensor | None = None
        self.loss_sum = torch.zeros(self.m, dtype=torch.float64)
        self.count = torch.zeros(self.m, dtype=torch.float64)
        self._pending: torch.Tensor | None = None  # [2, M] (loss sums, counts) on the loss device, folded lazily
        self._synced = False  # controller state made identical across ranks yet?
        self.last_record: dict[str, Any] | None = None

    # -- distribution helpers ------------------------------------------------------------
    def _broadcast(self, obj: Any, name: str) -> Any:
        return self.dist.broadcast_object(obj if self.dist.is_root else None, name=name)

    def _sync_from_root(self) -> None:
        """Once per process: every rank takes rank 0's controller/optimiser (fresh or resumed)."""
        if self._synced:
            return
        self._synced = True
        if self.dist.size == 1:
            return
        state = self._broadcast({"controller": self.controller.state_dict(),
                                 "optimizer": self.optimizer.state_dict(),
                                 "epoch": self.epoch, "actions": self.actions}, name="advaa.sync")
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.actions = state["epoch"], state["actions"]
        if not self.dist.is_root:
            # The checkpoint's partial sums are rank 0's; other ranks restart theirs at 0 so
            # no sample is counted twice after the allreduce.
            self.loss_sum.zero_()
            self.count.zero_()

    # -- hooks ---------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> list[Any]:
        """The M policies for ``epoch`` (sampled once; a resumed epoch keeps its own)."""
        self._sync_from_root()
        if self.epoch != epoch or self.actions is None:
            actions = None
            if self.dist.is_root:
                g = torch.Generator().manual_seed(_epoch_seed(self.cfg.train.seed, epoch))
                with torch.no_grad():
                    actions = self.controller.sample(self.m, g).actions
            self.actions = self._broadcast(actions, name=f"advaa.actions.{epoch}")
            self.epoch = epoch
            self.loss_sum.zero_()
            self.count.zero_()
            self._pending = None
        assert self.actions is not None
        return policies_from_actions(self.actions, self.cfg.advaa.ops_per_sub_policy)

    def on_step(self, per_sample_loss: torch.Tensor, batch: Any) -> None:
        """Accumulate the step's per-sample losses into their policy's sum (no host sync)."""
        loss = per_sample_loss.detach().reshape(-1)
        copy_ids = batch.copy_ids.to(loss.device).reshape(-1).long()
        if copy_ids.numel() != loss.numel():
            raise ValueError(f"per_sample_loss has {loss.numel()} entries but batch.copy_ids has "
                             f"{copy_ids.numel()}: pass the unreduced loss (reduction='none')")
        if self._pending is None or self._pending.device != loss.device:
            self._fold()
            self._pending = torch.zeros(2, self.m, dtype=torch.float64, device=loss.device)
        self._pending[0].index_add_(0, copy_ids, loss.double())
        self._pending[1].index_add_(0, copy_ids, torch.ones_like(loss, dtype=torch.float64))

    def _fold(self) -> None:
        """Move the device-side partial sums into the CPU float64 totals (one host sync)."""
        if self._pending is not None:
            s = self._pending.cpu()
            self.loss_sum += s[0]
            self.count += s[1]
            self._pending = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Allreduce the per-policy losses, take the REINFORCE step, record the epoch (last_record)."""
        self._fold()
        if self.actions is None or self.epoch != epoch:
            raise RuntimeError(f"AdvAAHooks.on_epoch_end({epoch}) without on_epoch_start({epoch}): "
                               "the training loop must call on_epoch_start at every epoch start")
        totals = self.dist.allreduce(torch.stack([self.loss_sum, self.count]), op="sum")  # float64 kept
        loss_sum, count = totals[0], totals[1]
        if bool((count == 0).any()):
            raise RuntimeError(f"AdvAA epoch {epoch}: no samples seen for policies "
                               f"{(count == 0).nonzero().flatten().tolist()}; check that the loader sets "
                               "Batch.copy_ids and that augment.copies equals advaa.num_policies")
        mean_loss = loss_sum / count
        rewards = normalise_rewards(mean_loss)
        self.optimizer.zero_grad(set_to_none=True)
        sample: ControllerSample = self.controller.evaluate(self.actions)
        loss = reinforce_loss(sample, rewards, self.cfg.advaa.entropy_weight)
        loss.backward()
        self.optimizer.step()
        record = {
            "epoch": epoch,
            "policies": _policy_names(self.actions, self.cfg.advaa.ops_per_sub_policy),
            "actions": self.actions.tolist(),
            "mean_loss": mean_loss.tolist(),
            "reward": rewards.tolist(),
            "samples": count.tolist(),
            "log_prob": sample.log_prob.detach().tolist(),
            "entropy": float(sample.entropy.detach().mean()),
            "controller_loss": float(loss.detach()),
            "train": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        }
        self.last_record = record
        if self.dist.is_root:
            self._append_record(record)
        # Sums are consumed; a checkpoint taken after this point resumes at the next epoch.
        self.loss_sum.zero_()
        self.count.zero_()
        self.epoch, self.actions = None, None

    def _append_record(self, record: dict[str, Any]) -> None:
        """Rewrite epochs.jsonl atomically, dropping lines of this epoch or later (a rerun after a kill)."""
        kept = [r for r in self.rd.read_advaa_records() if r["epoch"] < record["epoch"]]
        atomic_write_text(self.rd.advaa_records, "".join(json.dumps(r) + "\n" for r in kept + [record]))

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Controller, optimiser, current epoch's decisions and partial loss sums (tensors only)."""
        self._fold()
        return {
            # Copies, not views: the caller may hold the dict while training goes on.
            "controller": {k: v.detach().clone() for k, v in self.controller.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "epoch": -1 if self.epoch is None else int(self.epoch),
            "actions": self.actions.clone() if self.actions is not None else torch.empty(0, dtype=torch.int64),
            "loss_sum": self.loss_sum.clone(),
            "count": self.count.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ranks are made identical at the next epoch start."""
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        epoch = int(state["epoch"])
        actions = state["actions"]
        self.epoch = None if epoch < 0 else epoch
        self.actions = actions.clone() if actions.numel() else None
        self.loss_sum = state["loss_sum"].clone().double()
        self.count = state["count"].clone().double()
        self._pending = None
        self._synced = False


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


@dataclass
class AdvAAResult:
    """What ``run_advaa`` returns: the training result and where the AdvAA records are."""

    train: TrainResult
    records: Path  # <run>/advaa/epochs.jsonl
    policies: Path  # <run>/advaa/last_policies.json: the last epoch's M policies (JSON)
    history: list[dict[str, Any]] = field(default_factory=list)  # the epoch records (all epochs, resumed too)
    controller: dict[str, torch.Tensor] = field(default_factory=dict)  # final controller state (same on every rank)
    last_record: dict[str, Any] | None = None  # this process's last epoch record (None if nothing ran)


def run_advaa(cfg: Config, run_dir: str | os.PathLike[str], *, dist: Dist | None = None) -> AdvAAResult:
    """The ``advaa`` stage: one joint training run (target network + controller), resumable.

    Runs on every rank of a Horovod / torch.distributed job (srun, horovodrun) or in one
    process. Writes ``<run_dir>/advaa/``: checkpoint.pt (loop + controller), epochs.jsonl,
    last_policies.json. ``dist``: an initialised ``hpcaug.train.dist.Dist`` (default: init_dist).
    """
    validate_advaa_config(cfg)
    rd = RunDir(run_dir)
    dist = dist or init_dist(cfg.dist)
    hooks = AdvAAHooks(cfg, dist, rd.root)
    if dist.is_root:
        rd.advaa_dir.mkdir(parents=True, exist_ok=True)
        if not rd.config_path.exists():
            atomic_write_text(rd.config_path, cfg.to_json())
    # The loop calls on_epoch_start before every epoch (including the first and a resumed
    # one); these initial policies only size the loader (M entries).
    initial = _placeholder_policies(cfg)
    result = train(cfg, rd.advaa_dir, initial, epochs=cfg.train.epochs, hooks=hooks, dist=dist)
    records = rd.read_advaa_records()
    if dist.is_root and records:
        last = records[-1]
        pols = policies_from_actions(torch.tensor(last["actions"]), cfg.advaa.ops_per_sub_policy)
        atomic_write_text(rd.advaa_policies, json.dumps(
            {"epoch": last["epoch"], "policies": [p.to_dict() for p in pols]}, indent=1))
    return AdvAAResult(train=result, records=rd.advaa_records, policies=rd.advaa_policies, history=records,
                       controller={k: v.detach().clone() for k, v in hooks.controller.state_dict().items()},
                       last_record=hooks.last_record)


def _placeholder_policies(cfg: Config) -> list[Any]:
    """M policies drawn from a fresh controller: the loader needs M entries before epoch 0."""
    ctrl = build_controller(cfg)
    with torch.no_grad():
        actions = ctrl.sample(cfg.advaa.num_policies, torch.Generator().manual_seed(cfg.train.seed)).actions
    return policies_from_actions(actions, cfg.advaa.ops_per_sub_policy)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpcaug.search.advaa --config C [--run-dir R] [key=value ...]`` (every rank)."""
    p = argparse.ArgumentParser(prog="python -m hpcaug.search.advaa", description=main.__doc__)
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/imagenet_resnet50_advaa.yaml")
    p.add_argument("--run-dir", default="", help="run directory (default: the config's run_dir or runs/<name>)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=2")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run_path
    result = run_advaa(cfg, run_dir)
    if result.history:
        last = result.history[-1]
        print(f"advaa: {len(result.history)} epochs recorded in {result.records}; "
              f"last epoch {last['epoch']} mean losses {[round(x, 4) for x in last['mean_loss']]}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
