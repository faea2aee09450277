"""The AWS policy update: PPO-clip on theta with an exponential-moving-average baseline.

The distribution (AWS section 3.4): operation k = (element k // 36, element k % 36), 1296 of them.
- joint:      theta[1296],        p_k = sigmoid(theta_k) / sum_j sigmoid(theta_j)
- factorised: theta[36 + 36*36],  p(e1) * p(e2 | e1), each a normalised sigmoid (authors' code)
(hpcaug.ops.policy.aws_log_probs defines both; the loaders sample from the same AWSPolicy.)

A trajectory (one finetune task) applies thousands of sampled operations, so its "action" is the
vector of counts c[k] of operations it used. We score a trajectory by the **mean log-probability
per applied operation**, sum_k f_k log p_k with f = c / sum(c) (documented in docs/search.md):
its gradient points the same way as the summed log-probability sum_k c_k log p_k (a factor
sum(c) apart), but the PPO ratio exp(sum_k f_k (log p'_k - log p_k)) stays O(1) so the 0.2 clip
means what it means in PPO; with the summed form the ratio is a product of ~10^4 per-image
ratios and is clipped after a vanishing step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hpcaug.ops.policy import aws_log_probs, aws_theta_size

NUM_ELEMENTS = 36
NUM_OPERATIONS = NUM_ELEMENTS * NUM_ELEMENTS


def num_params(parametrisation: str) -> int:
    """Length of theta for a parametrisation ('joint' or 'factorised')."""
    return aws_theta_size(parametrisation)


def log_probs(theta: torch.Tensor, parametrisation: str = "joint") -> torch.Tensor:
    """log p over the 1296 operations, differentiable in theta (the ops module's definition)."""
    if theta.numel() != aws_theta_size(parametrisation):
        raise ValueError(f"theta has {theta.numel()} entries; a {parametrisation} policy needs "
                         f"{aws_theta_size(parametrisation)}: check aws.parametrisation against the run dir")
    return aws_log_probs(theta, parametrisation)


def entropy(theta: torch.Tensor, parametrisation: str = "joint") -> float:
    lp = log_probs(theta.detach(), parametrisation)
    return float(-(lp.exp() * lp).sum())


def kl_divergence(lp_old: torch.Tensor, lp_new: torch.Tensor) -> torch.Tensor:
    """Exact KL(p_old || p_new) over all operations."""
    return (lp_old.exp() * (lp_old - lp_new)).sum()


@dataclass(frozen=True)
class PPOSettings:
    clip: float = 0.2
    epochs: int = 5
    kl_stop: float = 0.002
    betas: tuple[float, float] = (0.5, 0.999)
    baseline_momentum: float = 0.9


@dataclass
class PPOState:
    """What one update hands to the next: the Adam state and the EMA baseline."""

    adam: dict[str, Any] | None = None
    baseline: float | None = None
    step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"adam": self.adam, "baseline": self.baseline, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PPOState":
        return cls(adam=d.get("adam"), baseline=d.get("baseline"), step=int(d.get("step", 0)))


@dataclass
class UpdateOutput:
    theta: torch.Tensor
    state: PPOState
    stats: dict[str, Any] = field(default_factory=dict)


def policy_lr(round_index: int, lr: float, warmup_rounds: int) -> float:
    """Linear warm-up over the first `warmup_rounds` updates, then constant (our choice)."""
    if warmup_rounds <= 0:
        return lr
    return lr * min(1.0, (round_index + 1) / warmup_rounds)


def ppo_update(theta: torch.Tensor, counts: torch.Tensor, rewards: torch.Tensor, state: PPOState, *,
               lr: float, settings: PPOSettings = PPOSettings(), parametrisation: str = "joint") -> UpdateOutput:
    """One AWS policy update from a round's trajectories.

    theta: the sampling policy of the round; counts [T, 1296] operations each trajectory used;
    rewards [T]. Advantage A_i = R_i - b with b the EMA baseline (initialised to the first round's
    mean reward so round 0 is centred); b <- m b + (1 - m) mean(R) afterwards. Up to
    `settings.epochs` full-batch Adam steps on the clipped surrogate, stopping early once the exact
    KL(p_old || p_new) exceeds `settings.kl_stop`.
    """
    if counts.ndim != 2 or counts.shape[0] != rewards.numel() or counts.shape[1] != NUM_OPERATIONS:
        raise ValueError(f"counts must be [T, {NUM_OPERATIONS}] with T = len(rewards); got {tuple(counts.shape)}")
    totals = counts.sum(1, keepdim=True).clamp_min(1)
    freqs = counts.double() / totals.double()
    rewards = rewards.double()
    mean_r = float(rewards.mean())
    b = mean_r if state.baseline is None else float(state.baseline)
    adv = rewards - b

    theta0 = theta.detach().double().clone()
    lp_old = log_probs(theta0, parametrisation)
    score_old = freqs @ lp_old  # mean log-prob per op of each trajectory, under the sampling policy
    param = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.Adam([param], lr=lr, betas=settings.betas)
    if state.adam is not None:
        opt.load_state_dict(state.adam)
        for g in opt.param_groups:
            g["lr"] = lr
            g["betas"] = settings.betas
    epochs_run, kl, clip_frac, loss_v = 0, 0.0, 0.0, 0.0
    for _ in range(settings.epochs):
        lp = log_probs(param, parametrisation)
        ratio = torch.exp(freqs @ lp - score_old)
        surr = torch.minimum(ratio * adv, ratio.clamp(1 - settings.clip, 1 + settings.clip) * adv)
        loss = -surr.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        epochs_run += 1
        loss_v = float(loss.detach())
        clip_frac = float(((ratio.detach() - 1).abs() > settings.clip).double().mean())
        with torch.no_grad():
            kl = float(kl_divergence(lp_old, log_probs(param, parametrisation)))
        if kl > settings.kl_stop:
            break
    new_theta = param.detach().to(theta.dtype)
    new_b = settings.baseline_momentum * b + (1 - settings.baseline_momentum) * mean_r
    stats = {
        "lr": lr, "ppo_epochs": epochs_run, "kl": kl, "clip_fraction": clip_frac, "loss": loss_v,
        "baseline_used": b, "baseline": new_b, "mean_reward": mean_r,
        "advantages": [float(a) for a in adv],
        "entropy_before": entropy(theta0, parametrisation), "entropy": entropy(new_theta, parametrisation),
        "max_entropy": math.log(NUM_OPERATIONS),
    }
    return UpdateOutput(new_theta, PPOState(adam=opt.state_dict(), baseline=new_b, step=state.step + 1), stats)
