"""The AWS policy update: PPO-clip on theta, with the trajectory design and baseline as config values.

The distribution (AWS section 3.4): operation k = (element k // 36, element k % 36), 1296 of them.
- joint:      theta[1296],        p_k = sigmoid(theta_k) / sum_j sigmoid(theta_j)
- factorised: theta[36 + 36*36],  p(e1) * p(e2 | e1), each a normalised sigmoid (authors' code)
(hpcaug.ops.policy.aws_log_probs defines both; the loaders sample from the same policies.)

What a trajectory (one finetune task) is, `aws.trajectory` (docs/search.md, "Trajectory designs"):
- `op_set` (default): the task draws K = aws.ops_per_trajectory operations from p_theta once, and
  its fine-tune gives each image one of those K, uniformly. Its action is the drawn multiset, so
  its score is the summed log-probability sum_{k in set} log p_k. Trajectories of one round apply
  markedly different operation mixes, so the reward differences carry the operations' effect
  whatever the size of the fine-tune.
- `per_image` (the paper's wording): every image draws its own operation from p_theta. The action
  is the vector of applied counts c; the score is the mean log-probability per applied operation,
  sum_k f_k log p_k with f = c / sum(c) (the summed form's PPO ratio would be a product of ~10^6
  per-image ratios). Trajectories differ only by multinomial noise in f, so the signal falls as
  n^-1/2 with the fine-tune's n images (benchmarks/search_power.py measures it).
Both designs give `ppo_update` a weight matrix W [T, 1296]: score_i = W_i . log p.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hpcaug.config import BASELINES, RESULT_RULES, TRAJECTORY_DESIGNS
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


def element_marginals(theta: torch.Tensor, parametrisation: str = "joint") -> torch.Tensor:
    """[36]: each element's mean share of the first and the second place (uniform: 1/36)."""
    p = log_probs(theta.detach().double(), parametrisation).exp().view(NUM_ELEMENTS, NUM_ELEMENTS)
    return (p.sum(1) + p.sum(0)) / 2


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
    baseline: str = "ema"  # ema: the paper's moving average | round_mean: the round's own mean reward


@dataclass
class PPOState:
    """What one update hands to the next: the Adam state and the EMA baseline."""

    adam: dict[str, Any] | None = None
    baseline: float | None = None
    step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"adam": self.adam, "baseline": self.baseline, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOState:
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


def draw_operations(theta: torch.Tensor, parametrisation: str, k: int, generator: torch.Generator) -> list[int]:
    """The op_set design's action: k operation indices drawn from p_theta with replacement."""
    p = log_probs(theta.detach().double(), parametrisation).exp()
    return [int(i) for i in torch.multinomial(p, k, replacement=True, generator=generator)]


def action_weights(design: str, operations: list[int] | None, counts: torch.Tensor) -> torch.Tensor:
    """One trajectory's row of W (score = W . log p): the drawn multiset (op_set) or the applied
    frequencies (per_image). `counts` [1296] are the operations the fine-tune applied."""
    if design == "op_set":
        if not operations:
            raise ValueError("an op_set trajectory result has no 'operations' (was it run with aws.trajectory: "
                             "per_image? a run dir keeps the design it was started with)")
        return torch.bincount(torch.as_tensor(operations, dtype=torch.int64), minlength=NUM_OPERATIONS).double()
    if design == "per_image":
        c = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        return c / c.sum().clamp_min(1.0)
    raise ValueError(f"aws.trajectory must be one of {TRAJECTORY_DESIGNS}, got {design!r}")


def advantages(rewards: torch.Tensor, state: PPOState, settings: PPOSettings) -> tuple[torch.Tensor, float]:
    """(A_i = R_i - b, b). ema: b is the moving average before this round's rewards enter it
    (round 0: the round's mean, so it is centred); round_mean: b = this round's mean (no lag;
    leave-one-out would only rescale A by T/(T-1), which Adam's normalisation cancels)."""
    mean_r = float(rewards.mean())
    if settings.baseline == "round_mean" or state.baseline is None:
        b = mean_r
    elif settings.baseline == "ema":
        b = float(state.baseline)
    else:
        raise ValueError(f"aws.baseline must be one of {BASELINES}, got {settings.baseline!r}")
    return rewards - b, b


def ppo_update(theta: torch.Tensor, weights: torch.Tensor, rewards: torch.Tensor, state: PPOState, *,
               lr: float, settings: PPOSettings = PPOSettings(), parametrisation: str = "joint") -> UpdateOutput:
    """One AWS policy update from a round's trajectories.

    theta: the sampling policy of the round; weights [T, 1296]: each trajectory's action as a row
    of W (`action_weights`); rewards [T]. Up to `settings.epochs` full-batch Adam steps on the
    clipped surrogate with ratio exp(W_i . (log p_new - log p_old)), stopping early once the exact
    KL(p_old || p_new) exceeds `settings.kl_stop`. The EMA baseline is kept in the state whatever
    `settings.baseline` is (status and report show it).
    """
    if weights.ndim != 2 or weights.shape[0] != rewards.numel() or weights.shape[1] != NUM_OPERATIONS:
        raise ValueError(f"weights must be [T, {NUM_OPERATIONS}] with T = len(rewards); got {tuple(weights.shape)}")
    w = weights.double()
    rewards = rewards.double()
    mean_r = float(rewards.mean())
    adv, b = advantages(rewards, state, settings)

    theta0 = theta.detach().double().clone()
    lp_old = log_probs(theta0, parametrisation)
    score_old = w @ lp_old  # each trajectory's score under the sampling policy
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
        ratio = torch.exp(w @ lp - score_old)
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
    ema = mean_r if state.baseline is None else float(state.baseline)
    new_ema = settings.baseline_momentum * ema + (1 - settings.baseline_momentum) * mean_r
    stats = {
        "lr": lr, "ppo_epochs": epochs_run, "kl": kl, "clip_fraction": clip_frac, "loss": loss_v,
        "baseline_kind": settings.baseline, "baseline_used": b, "baseline": new_ema, "mean_reward": mean_r,
        "advantages": [float(a) for a in adv],
        "entropy_before": entropy(theta0, parametrisation), "entropy": entropy(new_theta, parametrisation),
        "max_entropy": math.log(NUM_OPERATIONS),
    }
    return UpdateOutput(new_theta, PPOState(adam=opt.state_dict(), baseline=new_ema, step=state.step + 1), stats)


def select_result(thetas: list[torch.Tensor], mean_rewards: list[float], rule: str,
                  window: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The theta that becomes policy.json after len(mean_rewards) updates, and why.

    thetas[r] is the policy round r sampled from (thetas[-1]: the newest, not yet evaluated);
    mean_rewards[r] is round r's mean reward. Rules (aws.result_policy):
    - last: the newest theta (what PPO ended at);
    - best_round: the theta of the round with the highest mean reward (the authors' code);
    - mean_last: the mean of the newest `window` thetas (averages out the last steps' noise).
    """
    n = len(mean_rewards)
    if len(thetas) != n + 1:
        raise ValueError(f"select_result needs one theta per round plus the newest: {len(thetas)} thetas, {n} rounds")
    if rule == "last":
        return thetas[-1], {"rule": rule, "round": n, "why": f"the theta after the last of {n} update(s)"}
    if rule == "best_round":
        r = max(range(n), key=lambda i: mean_rewards[i])
        return thetas[r], {"rule": rule, "round": r, "why": f"round {r} had the highest mean reward "
                                                            f"({mean_rewards[r]:.4f}) of {n} round(s)"}
    if rule == "mean_last":
        k = max(1, min(window, len(thetas)))
        first = len(thetas) - k
        mean = torch.stack([t.double() for t in thetas[first:]]).mean(0).to(thetas[-1].dtype)
        return mean, {"rule": rule, "rounds": [first, n], "why": f"the mean of the thetas of rounds {first}-{n} "
                                                                 f"(the last {k})"}
    raise ValueError(f"aws.result_policy must be one of {RESULT_RULES}, got {rule!r}")
