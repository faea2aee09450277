"""Statistical power of the AWS search: the real update stage fed with simulated fine-tune rewards.

A planted reward model stands in for the fine-tunes: a trajectory's reward is
    1 - effect x (share of its images augmented with an operation containing the planted element)
      + N(0, sigma^2),
with the op counts drawn as the loaders draw them (op_set: each image picks one of the
trajectory's K operations uniformly; per_image: each image draws from p_theta). Everything else
is the search's own code: the operation sets come from `aws.trajectory_operations`, the PPO
action from `ppo.action_weights`, the step from `ppo.ppo_update` with `aws.ppo_settings`, and the
policy.json rule from `ppo.select_result`, exactly as `aws.run_update` calls them.
`simulate(..., run_dir=...)` goes through a real run dir and `aws.run_update` instead (slower);
the tests check that both paths give the same thetas. Used by benchmarks/search_power.py and
tests/test_search_power.py.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpcaug.config import Config
from hpcaug.ops.spaces import AWS_SPACE
from hpcaug.search import aws, ppo
from hpcaug.search.rundir import write_json

E = AWS_SPACE.num_elements


def containing(elements: str | Sequence[str]) -> torch.Tensor:
    """bool [1296]: the operations that contain any of `elements` (e.g. 'Invert', 'Rotate:9') in either place."""
    names = [elements] if isinstance(elements, str) else list(elements)
    k = torch.arange(ppo.NUM_OPERATIONS)
    out = torch.zeros(ppo.NUM_OPERATIONS, dtype=torch.bool)
    for name in names:
        e = AWS_SPACE.element_index(name)
        out |= (k // E == e) | (k % E == e)
    return out


@dataclass
class SimResult:
    """One simulated search: the planted element's mass per round and the thetas."""

    masses: list[float] = field(default_factory=list)  # planted mass of the sampling theta of each round
    thetas: list[torch.Tensor] = field(default_factory=list)  # theta of rounds 0..R (R = rounds run)
    mean_rewards: list[float] = field(default_factory=list)

    def rounds_to_halve(self) -> int | None:
        """Updates until the planted mass is at most half its start, or None if it never was."""
        start = self.masses[0]
        return next((r for r, m in enumerate(self.masses) if m <= start / 2), None)


def _counts(rng: np.random.Generator, n: int, probs: np.ndarray) -> np.ndarray:
    return rng.multinomial(n, probs / probs.sum())


def simulate(cfg: Config, *, planted: str | Sequence[str] = "Invert", effect: float = 0.5, sigma: float = 0.003,
             images: int = 1_280_000, rounds: int = 350, seed: int = 0, stop_when_halved: bool = False,
             run_dir: Path | None = None) -> SimResult:
    """Run `rounds` updates of the search configured by cfg.aws against the planted reward model
    (`planted`: one element or several; an image counts as harmed when its operation contains any).

    images: operations one fine-tune applies (epochs x train images). stop_when_halved ends the
    run at the round where the planted element's mass first halves.
    """
    a = cfg.aws
    t = a.trajectories_per_round
    rng = np.random.default_rng(seed)
    mask = containing(planted)
    maskn = mask.numpy()
    settings = aws.ppo_settings(cfg)
    theta = torch.zeros(ppo.num_params(a.parametrisation))
    state = ppo.PPOState()
    rd = aws.open_run(cfg, run_dir) if run_dir is not None else None
    draws = cfg.replace(**{"data.seed": cfg.data.seed + seed * 1_000_003})  # each seed draws other operation sets
    out = SimResult(thetas=[theta])
    for r in range(rounds):
        p = ppo.log_probs(theta.double(), a.parametrisation).exp()
        out.masses.append(float(p[mask].sum()))
        if stop_when_halved and out.masses[-1] <= out.masses[0] / 2:
            return out
        weights, rewards, results = [], [], {}
        for traj in range(r * t, (r + 1) * t):
            ops = aws.trajectory_operations(draws, theta, traj)
            q = p.numpy() if ops is None else np.bincount(ops, minlength=ppo.NUM_OPERATIONS).astype(np.float64)
            counts = _counts(rng, images, q)
            reward = 1.0 - effect * counts[maskn].sum() / images + rng.normal(0.0, sigma)
            weights.append(ppo.action_weights(a.trajectory, ops, torch.from_numpy(counts)))
            rewards.append(reward)
            results[traj] = {"trajectory": traj, "round": r, "reward": reward, "operations": ops,
                             "choice_counts": counts.tolist(), "val_top1": [reward]}
        if rd is not None:  # the real stage: results on disk, aws.run_update reads and writes them
            for traj, res in results.items():
                write_json(rd.result_path(r, traj), res)
            u = aws.run_update(cfg, rd.root, r)
            theta = rd.theta(r + 1)
            out.mean_rewards.append(float(u["mean_reward"]))
        else:
            lr = ppo.policy_lr(r, a.policy_lr, a.policy_lr_warmup_rounds)
            step = ppo.ppo_update(theta, torch.stack(weights), torch.tensor(rewards, dtype=torch.float64), state,
                                  lr=lr, settings=settings, parametrisation=a.parametrisation)
            theta, state = step.theta, step.state
            out.mean_rewards.append(step.stats["mean_reward"])
        out.thetas.append(theta)
    p = ppo.log_probs(theta.double(), a.parametrisation).exp()
    out.masses.append(float(p[mask].sum()))
    return out
