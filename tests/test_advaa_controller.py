"""The AdvAA controller alone: shapes, log-prob consistency, and the REINFORCE direction."""
from __future__ import annotations

import pytest
import torch

from hpcaug.search.advaa_controller import (
    AdvAAController,
    actions_to_subpolicies,
    normalise_rewards,
    reinforce_loss,
)


def _controller(seed: int = 0) -> AdvAAController:
    torch.manual_seed(seed)
    return AdvAAController(num_ops=16, num_magnitudes=10, sub_policies=5, ops_per_sub_policy=2,
                           hidden=100, embedding=32)


def test_sample_shapes_ranges_and_determinism() -> None:
    ctrl = _controller()
    s = ctrl.sample(8, torch.Generator().manual_seed(3))
    assert s.actions.shape == (8, 20) and s.actions.dtype == torch.int64
    assert s.actions[:, 0::2].max() < 16 and s.actions[:, 1::2].max() < 10 and s.actions.min() >= 0
    assert s.log_prob.shape == (8,) and s.entropy.shape == (8,)
    assert torch.all(s.log_prob < 0) and torch.all(s.entropy > 0)
    # Near-uniform start: entropy close to the maximum 10 * (ln 16 + ln 10).
    assert s.entropy.mean() > 0.95 * 10 * (torch.log(torch.tensor(16.0)) + torch.log(torch.tensor(10.0)))
    again = ctrl.sample(8, torch.Generator().manual_seed(3))
    assert torch.equal(again.actions, s.actions)
    other = ctrl.sample(8, torch.Generator().manual_seed(4))
    assert not torch.equal(other.actions, s.actions)


def test_evaluate_matches_sample_log_prob() -> None:
    ctrl = _controller()
    s = ctrl.sample(6, torch.Generator().manual_seed(0))
    e = ctrl.evaluate(s.actions)
    torch.testing.assert_close(e.log_prob, s.log_prob)
    torch.testing.assert_close(e.entropy, s.entropy)
    with pytest.raises(ValueError, match="out of range"):
        bad = s.actions.clone()
        bad[0, 0] = 16
        ctrl.evaluate(bad)
    with pytest.raises(ValueError, match=r"\[M, 20\]"):
        ctrl.evaluate(s.actions[:, :19])


def test_normalise_rewards() -> None:
    r = normalise_rewards(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert abs(float(r.mean())) < 1e-9 and abs(float(r.std(unbiased=False)) - 1) < 1e-6
    assert torch.argmax(r) == 3
    assert torch.equal(normalise_rewards(torch.tensor([2.0, 2.0])), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(normalise_rewards(torch.tensor([5.0])), torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("winner", [0, 1])
def test_reinforce_raises_probability_of_higher_reward(winner: int) -> None:
    """Two fixed policies; the one with the higher loss (reward) gains probability, the other loses."""
    ctrl = _controller(1)
    actions = ctrl.sample(2, torch.Generator().manual_seed(7)).actions
    assert not torch.equal(actions[0], actions[1])
    losses = torch.tensor([1.0, 1.0])
    losses[winner] = 3.0  # policy `winner` made training harder
    rewards = normalise_rewards(losses)
    opt = torch.optim.Adam(ctrl.parameters(), lr=0.00035)
    before = ctrl.evaluate(actions).log_prob.detach()
    for _ in range(3):
        opt.zero_grad()
        reinforce_loss(ctrl.evaluate(actions), rewards, entropy_weight=1e-5).backward()
        opt.step()
    after = ctrl.evaluate(actions).log_prob.detach()
    loser = 1 - winner
    assert after[winner] > before[winner] + 1e-3, (before, after)
    assert after[loser] < before[loser] - 1e-3, (before, after)


def test_zero_rewards_only_entropy_moves() -> None:
    """With equal losses the policy-gradient term vanishes; the entropy bonus raises entropy."""
    ctrl = _controller(2)
    actions = ctrl.sample(4, torch.Generator().manual_seed(0)).actions
    opt = torch.optim.SGD(ctrl.parameters(), lr=0.05)
    h0 = ctrl.evaluate(actions).entropy.mean().item()
    opt.zero_grad()
    reinforce_loss(ctrl.evaluate(actions), normalise_rewards(torch.ones(4)), entropy_weight=1.0).backward()
    opt.step()
    assert ctrl.evaluate(actions).entropy.mean().item() > h0


def test_actions_to_subpolicies() -> None:
    actions = torch.arange(20).remainder(10).view(1, 20)
    subs = actions_to_subpolicies(actions, ops_per_sub_policy=2)
    assert len(subs) == 1 and len(subs[0]) == 5
    assert subs[0][0] == [(0, 1), (2, 3)] and subs[0][4] == [(6, 7), (8, 9)]
