"""The Adversarial AutoAugment controller: an LSTM that emits augmentation policies.

Seed 2 (AdvAA), section 3.3 and figure 3: a one-layer LSTM (hidden 100, embedding 32)
predicts, autoregressively, the op type and then the magnitude of each of the 2 ops of
each of the Q = 5 sub-policies: 20 decisions per policy. The embedding of each predicted
action is the next step's input. It is trained with REINFORCE (eq. 8-9) to *raise* the
target network's training loss, with normalised per-policy losses as rewards and a small
entropy bonus (weight 1e-5) against premature convergence.

This module is pure torch: no data, no distribution. `hpcaug.search.advaa` wires it into
the training loop. Decisions are laid out as
``actions[m] = [op_0, mag_0, op_1, mag_1, ...]`` for sub-policy 0, then 1, ...: an int64
tensor [M, Q * K * 2] (K = ops per sub-policy).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "AdvAAController",
    "ControllerSample",
    "normalise_rewards",
    "reinforce_loss",
    "actions_to_subpolicies",
]


@dataclass(frozen=True)
class ControllerSample:
    """M sampled policies: the decisions, and (with grad) their log-probs and entropies."""

    actions: torch.Tensor  # int64 [M, Q*K*2]
    log_prob: torch.Tensor  # float [M]: log p_m, the sum over the decisions
    entropy: torch.Tensor  # float [M]: sum over the decisions of each step's entropy


class AdvAAController(nn.Module):
    """One-layer LSTM policy network over Q sub-policies of K (op, magnitude) pairs.

    Parameters
    ----------
    num_ops, num_magnitudes:
        Sizes of the two softmax layers (AdvAA: 16 ops, 10 magnitudes).
    sub_policies, ops_per_sub_policy:
        Q and K (AdvAA: 5 and 2, so 20 decisions).
    hidden, embedding:
        LSTM hidden size and action-embedding size (AdvAA: 100 and 32).
    """

    def __init__(self, num_ops: int = 16, num_magnitudes: int = 10, sub_policies: int = 5,
                 ops_per_sub_policy: int = 2, hidden: int = 100, embedding: int = 32) -> None:
        super().__init__()
        if min(num_ops, num_magnitudes, sub_policies, ops_per_sub_policy, hidden, embedding) < 1:
            raise ValueError("AdvAAController sizes must all be >= 1; check the advaa.* config fields")
        self.num_ops = num_ops
        self.num_magnitudes = num_magnitudes
        self.sub_policies = sub_policies
        self.ops_per_sub_policy = ops_per_sub_policy
        self.hidden = hidden
        # Input of the first step: a learned "start" embedding (there is no previous action).
        self.start = nn.Parameter(torch.zeros(1, embedding))
        self.op_embedding = nn.Embedding(num_ops, embedding)
        self.magnitude_embedding = nn.Embedding(num_magnitudes, embedding)
        self.lstm = nn.LSTMCell(embedding, hidden)
        self.op_head = nn.Linear(hidden, num_ops)
        self.magnitude_head = nn.Linear(hidden, num_magnitudes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-0.1, 0.1) as in the NAS / AutoAugment controllers; near-uniform policies at start."""
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    @property
    def num_decisions(self) -> int:
        return self.sub_policies * self.ops_per_sub_policy * 2

    def _run(self, m: int, actions: torch.Tensor | None,
             generator: torch.Generator | None) -> ControllerSample:
        """Unroll the LSTM over all decisions; sample them, or score the given ``actions``."""
        device = self.start.device
        x = self.start.expand(m, -1)
        h = torch.zeros(m, self.hidden, device=device)
        c = torch.zeros(m, self.hidden, device=device)
        chosen: list[torch.Tensor] = []
        log_prob = torch.zeros(m, device=device)
        entropy = torch.zeros(m, device=device)
        for t in range(self.num_decisions):
            h, c = self.lstm(x, (h, c))
            is_op = t % 2 == 0
            logits = (self.op_head if is_op else self.magnitude_head)(h)
            logp = F.log_softmax(logits, dim=-1)
            if actions is None:
                a = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
            else:
                a = actions[:, t].to(device)
            chosen.append(a)
            log_prob = log_prob + logp.gather(1, a[:, None]).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            x = (self.op_embedding if is_op else self.magnitude_embedding)(a)
        return ControllerSample(torch.stack(chosen, 1), log_prob, entropy)

    def sample(self, m: int, generator: torch.Generator | None = None) -> ControllerSample:
        """Draw ``m`` independent policies (batched); log-probs and entropies carry grad."""
        if m < 1:
            raise ValueError(f"need m >= 1 policies to sample, got {m}")
        return self._run(m, None, generator)

    def evaluate(self, actions: torch.Tensor) -> ControllerSample:
        """Log-probs and entropies of given decisions ([M, Q*K*2] int64), with grad."""
        if actions.dim() != 2 or actions.shape[1] != self.num_decisions:
            raise ValueError(f"actions must be [M, {self.num_decisions}], got {tuple(actions.shape)}")
        ops, mags = actions[:, 0::2], actions[:, 1::2]
        if ops.min() < 0 or ops.max() >= self.num_ops or mags.min() < 0 or mags.max() >= self.num_magnitudes:
            raise ValueError(f"actions out of range: ops must be in 0..{self.num_ops - 1}, "
                             f"magnitudes in 0..{self.num_magnitudes - 1}")
        return self._run(actions.shape[0], actions.long(), None)

    def forward(self, actions: torch.Tensor) -> ControllerSample:  # noqa: D401
        """Same as :meth:`evaluate` (so hooks/DDP-style wrappers see a forward)."""
        return self.evaluate(actions)


def normalise_rewards(losses: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(L_m - mean) / std across the M policies (seed 2, eq. 9: the normalised L~_m).

    With a single policy, or M equal losses, every reward is 0 (no signal, no update
    beyond the entropy bonus).
    """
    losses = losses.double()
    if losses.numel() < 2:
        return torch.zeros_like(losses)
    centred = losses - losses.mean()
    std = losses.std(unbiased=False)
    return centred / (std + eps) if std > eps else torch.zeros_like(losses)


def reinforce_loss(sample: ControllerSample, rewards: torch.Tensor,
                   entropy_weight: float) -> torch.Tensor:
    """Loss whose gradient step is the REINFORCE ascent of seed 2, eq. 9, plus an entropy bonus.

    ``-(1/M) sum_m r_m log p_m - w * mean_m H_m``: minimising it raises the probability of
    policies with a high (normalised) training loss.
    """
    if rewards.shape != sample.log_prob.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} must match log_prob {tuple(sample.log_prob.shape)}")
    r = rewards.detach().to(sample.log_prob)
    return -(r * sample.log_prob).mean() - entropy_weight * sample.entropy.mean()


def actions_to_subpolicies(actions: torch.Tensor, ops_per_sub_policy: int = 2) -> list[list[list[tuple[int, int]]]]:
    """[M, Q*K*2] decisions -> per policy, Q sub-policies of K (op index, magnitude bin)."""
    out: list[list[list[tuple[int, int]]]] = []
    for row in actions.tolist():
        pairs = [(int(row[i]), int(row[i + 1])) for i in range(0, len(row), 2)]
        out.append([pairs[q:q + ops_per_sub_policy] for q in range(0, len(pairs), ops_per_sub_policy)])
    return out
