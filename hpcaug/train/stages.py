"""Training stages as plain functions, and the submitit job wrapper that requeues them.

`run_final(cfg, run_dir, policy_spec)` is the `final` stage: train from scratch with a
searched or baseline policy on the N x M enlarged batch (M = augment.copies) for
`aws.final_epochs` epochs. The CLI
(`python -m hpcaug.submit --stage final`), `slurm/final_train.sh` and the tests call it.
`CheckpointableTraining(run_final)` is the submitit job that requeues itself on timeout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from hpcaug._atomic import atomic_write_text
from hpcaug.config import Config
from hpcaug.ops.policy import load_policy
from hpcaug.policy_names import is_policy_file
from hpcaug.train.dist import Dist, init_dist
from hpcaug.train.loop import TrainResult, train

__all__ = ["run_train", "run_final", "final_dir", "requeue_signal_lead_s", "CheckpointableTraining",
           "shield_forked_children"]


def final_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Where the final stage writes: R/final (checkpoint.pt, metrics.jsonl, tb/, policy.json)."""
    return Path(run_dir) / "final"


def run_train(cfg: Config, out_dir: str | os.PathLike[str], policy_spec: str | None = None, *,
              epochs: int | None = None, dist: Dist | None = None) -> TrainResult:
    """Train `cfg.train.model` from scratch with one policy into `out_dir` (resumes if it can).

    policy_spec: a policy name (hpcaug.policy_names) or a policy JSON file (e.g. R/policy.json
    of a search); None = `cfg.augment.policy`. Each of the M = augment.copies copies of an
    image is augmented independently by that policy. epochs: default train.epochs.
    Every rank of a multi-rank launch calls this; rank 0 writes out_dir/train.json at the end.
    """
    spec = policy_spec or cfg.augment.policy
    if is_policy_file(spec) and not Path(spec).is_file():
        raise FileNotFoundError(f"policy file {spec!r} not found; pass a policy name or the policy.json a search wrote")
    policy = load_policy(spec)
    out = Path(out_dir)
    dist = dist or init_dist(cfg.dist)
    result = train(cfg, out, [policy] * cfg.augment.copies, epochs=cfg.train.epochs if epochs is None else epochs,
                   dist=dist)
    if dist.is_root:
        atomic_write_text(out / "train.json", json.dumps(
            {"policy": spec, "policy_json": policy.to_dict(), "copies": cfg.augment.copies,
             "ranks": dist.size, "history": result.history, "choice_counts": result.choice_counts.tolist(),
             "steps": result.steps}, indent=2))
    # submitit pickles the return value through the shared folder: leave the weights in checkpoint.pt
    return dataclasses.replace(result, model=None)


def run_final(cfg: Config, run_dir: str | os.PathLike[str], policy_spec: str | None = None, *,
              epochs: int | None = None, dist: Dist | None = None) -> TrainResult:
    """The `final` stage: `run_train` into R/final (checkpoint.pt, metrics.jsonl, tb/, train.json).

    policy_spec: the searched R/policy.json, a baseline name, or None for augment.policy.
    epochs: default `aws.final_epochs`, the one setting of the final stage's length (the CLI's
    `--stage final`, slurm/final_train.sh and a search's last step all train that many);
    `train.epochs` is the length of `python -m hpcaug.train` / `run_train` runs and of AdvAA.
    """
    return run_train(cfg, final_dir(run_dir), policy_spec, epochs=cfg.aws.final_epochs if epochs is None else epochs,
                     dist=dist)


def requeue_signal_lead_s(time_limit_min: float, wanted_s: int = 90, max_fraction: float = 0.1) -> int:
    """Seconds before a job's time limit at which SLURM should send it the requeue signal:
    `wanted_s`, capped at `max_fraction` of the time limit (at least 1 s). A fixed lead (e.g.
    `--signal=USR2@600`) longer than the job itself fires at once, and the requeued job gets
    the signal at once again: it requeues forever. slurm/_requeue.sh applies the same rule to
    the sbatch scripts (600 s wanted there)."""
    if time_limit_min <= 0:
        raise ValueError(f"a job's time limit must be > 0 minutes, got {time_limit_min}")
    return max(1, min(int(wanted_s), int(time_limit_min * 60 * max_fraction)))


class CheckpointableTraining(submitit.helpers.Checkpointable):
    """A submitit job that resumes on requeue: `executor.submit(CheckpointableTraining(fn), *args)`.

    `fn(*args, **kwargs)` must resume from its own checkpoint when restarted (every stage
    built on `train()` does: it resumes from out_dir/checkpoint.pt). On a timeout or a
    preemption submitit calls `checkpoint()`, which asks for a requeue with the same
    arguments; the requeued job picks up the last saved checkpoint (set
    train.checkpoint_every_steps on preemptible queues so little work is lost).
    Example: `CheckpointableTraining(run_final)` with args (cfg, run_dir, policy_spec).
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        shield_forked_children()
        return self.fn(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # train() writes its checkpoints itself; requeue the same call and let it resume
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


_SHIELDED = False


def shield_forked_children() -> None:
    """Make forked children ignore SIGUSR2; call it first thing in any submitit job function.

    Forked helpers (DataLoader workers, DALI's parallel external_source) inherit submitit's
    SIGUSR2 handler; SLURM signals every process of the step, so each child would requeue the
    job a second time and report the failed `scontrol requeue` as the job's result. Children
    ignore SIGUSR2 instead; the task's main process alone checkpoints and requeues."""
    global _SHIELDED
    if _SHIELDED or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
    _SHIELDED = True
