"""AWS search state and the PPO update, without training or a cluster (fast)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hpcaug.config import Config, load_config
from hpcaug.search import aws, jobs, ppo
from hpcaug.search.rundir import RunDir, read_json, write_json

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **over: object) -> Config:
    sets = [f"run_dir={tmp_path / 'run'}", "aws.trajectories_per_round=4", "aws.rounds=3", "aws.quorum=0.75",
            "aws.policy_lr_warmup_rounds=1"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "demo.yaml", sets)


def _fake_result(rd: RunDir, cfg: Config, traj: int, favoured_share: float, op: int, n: int = 100_000,
                 seed: int = 0) -> None:
    """A finetune result whose trajectory applied `op` with share favoured_share (the rest uniform)
    and whose reward grows with that share: the constructed case the update must follow."""
    g = torch.Generator().manual_seed(seed)  # the same background in every trajectory
    k = int(n * favoured_share)
    counts = torch.bincount(torch.randint(0, ppo.NUM_OPERATIONS, (n - k,), generator=g), minlength=ppo.NUM_OPERATIONS)
    counts[op] += k
    r = aws.round_of(cfg, traj)
    write_json(rd.result_path(r, traj), {"trajectory": traj, "round": r, "reward": 0.5 + favoured_share,
                                         "choice_counts": counts.tolist(), "val_top1": [0.5 + favoured_share]})


def test_update_raises_probability_of_the_rewarded_operation(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    rd = aws.open_run(cfg)
    op = 777
    for r in range(2):
        for i, traj in enumerate(aws.round_trajectories(cfg, r)):
            _fake_result(rd, cfg, traj, favoured_share=[0.0, 0.05, 0.1, 0.2][i], op=op)
        before = ppo.log_probs(rd.theta(r)).exp()
        summary = aws.run_update(cfg, None, r)
        after = ppo.log_probs(rd.theta(r + 1)).exp()
        assert after[op] > before[op] * 1.05, (r, before[op], after[op])
        others = torch.cat([after[:op], after[op + 1:]])
        assert after[op] > others.max() * 1.05
        assert summary["ppo_epochs"] >= 1 and summary["kl"] > 0
        assert summary["entropy"] < summary["entropy_before"]
    u0, u1 = read_json(rd.update_path(0)), read_json(rd.update_path(1))
    # EMA baseline: initialised with round 0's mean reward, then 0.9 b + 0.1 mean
    assert u0["baseline_used"] == pytest.approx(u0["mean_reward"])
    assert u1["baseline"] == pytest.approx(0.9 * u0["baseline"] + 0.1 * u1["mean_reward"])
    # policy.json is the ops module's policy format with the latest theta
    from hpcaug.ops.policy import load_policy

    pol = load_policy(str(rd.policy_path))
    assert torch.allclose(pol.theta.double(), rd.theta(2).double(), atol=1e-6)
    # the Adam state travels between rounds
    assert rd.ppo_state_path(2).exists()


def test_update_is_idempotent_and_needs_a_quorum(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    rd = aws.open_run(cfg)
    for traj in (0, 1):
        _fake_result(rd, cfg, traj, 0.1 * traj, op=5)
    with pytest.raises(RuntimeError, match=r"only 2 of 4 .* needs 3\. Missing: 2-3.*--stage finetune --round 0"):
        aws.run_update(cfg, None, 0)
    assert not rd.theta_path(1).exists() and not rd.update_done(0)
    _fake_result(rd, cfg, 3, 0.3, op=5)
    first = aws.run_update(cfg, None, 0)
    theta1 = rd.theta(1).clone()
    assert first["trajectories"] == [0, 1, 3] and first["missing"] == [2]
    # a finetune of an updated round refuses instead of writing a reward nobody reads
    with pytest.raises(RuntimeError, match="already updated"):
        aws.run_finetune(cfg, None, 2)
    # a late result and a second update of the same round change nothing (no duplicated rewards)
    _fake_result(rd, cfg, 2, 0.2, op=5)
    again = aws.run_update(cfg, None, 0)
    assert again == first and torch.equal(rd.theta(1), theta1)


def test_trajectory_score_is_mean_log_prob_per_op() -> None:
    """The PPO ratio uses sum_k f_k log p_k (f = counts / total): scaling counts changes nothing."""
    theta = torch.zeros(ppo.NUM_OPERATIONS)
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 5, (4, ppo.NUM_OPERATIONS), generator=g)
    counts[:, 3] += torch.tensor([0, 10, 20, 40])
    rewards = torch.tensor([0.1, 0.2, 0.3, 0.4])
    a = ppo.ppo_update(theta, counts, rewards, ppo.PPOState(), lr=0.05)
    b = ppo.ppo_update(theta, counts * 100, rewards, ppo.PPOState(), lr=0.05)
    assert torch.allclose(a.theta, b.theta, atol=1e-6)
    # KL early stop: a huge lr stops after the first epoch
    c = ppo.ppo_update(theta, counts, rewards, ppo.PPOState(), lr=5.0)
    assert c.stats["ppo_epochs"] == 1 and c.stats["kl"] > 0.002
    # the factorised parametrisation (authors' code) updates too
    f = ppo.ppo_update(torch.zeros(ppo.num_params("factorised")), counts, rewards, ppo.PPOState(), lr=0.05,
                       parametrisation="factorised")
    assert ppo.log_probs(f.theta, "factorised").exp()[3] > 1 / ppo.NUM_OPERATIONS


def test_policy_lr_warms_up_then_stays() -> None:
    assert [ppo.policy_lr(r, 0.1, 4) for r in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_array_specs_and_round_split() -> None:
    assert jobs.parse_array("0-9%3") == (list(range(10)), 3)
    assert jobs.parse_array("0,3,5-7") == ([0, 3, 5, 6, 7], 0)
    with pytest.raises(ValueError, match="SLURM array syntax"):
        jobs.parse_array("a-b")
    assert jobs.split_by_round(list(range(3, 13)), 4) == {0: [3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11], 3: [12]}


def test_plans_skip_what_is_done(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    rd = aws.open_run(cfg)
    keys = [s.key for s in jobs.plan_search(cfg, rd)]
    assert keys == ["shared", "finetune-0", "update-0", "finetune-1", "update-1", "finetune-2", "update-2", "final"]
    write_json(rd.shared_done, {"checkpoint": "shared/checkpoint.pt"})
    for traj in (0, 1, 2, 3):
        _fake_result(rd, cfg, traj, 0.1, op=1)
    aws.run_update(cfg, None, 0)
    _fake_result(rd, cfg, 5, 0.1, op=1)
    plan = jobs.plan_search(cfg, rd)
    assert [s.key for s in plan] == ["finetune-1", "update-1", "finetune-2", "update-2", "final"]
    assert plan[0].trajectories == [4, 6, 7]
    # --array 4-11 = rounds 1 and 2, chained through update 1 only
    assert [(s.key, s.trajectories) for s in jobs.plan_finetune(cfg, rd, list(range(4, 12)))] == [
        ("finetune-1", [4, 6, 7]), ("update-1", []), ("finetune-2", [8, 9, 10, 11])]


def test_run_dir_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    aws.open_run(cfg)
    aws.open_run(cfg.replace(**{"cluster.executor": "inline", "aws.rounds": 7}))  # resumable keys
    lr = cfg.aws.finetune_lr
    with pytest.raises(ValueError, match=rf"different config:\n  aws.finetune_lr: run has {lr}, config has 0.5\n"
                                         r".*--set run_dir=<new dir>"):
        aws.open_run(cfg.replace(**{"aws.finetune_lr": 0.5}))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["aws"]["finetune_lr"] == lr


def test_atomic_writes_leave_no_partial_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"

    class Boom(Exception):
        pass

    from hpcaug._atomic import atomic_write

    def bad(f: object) -> None:
        raise Boom

    with pytest.raises(Boom):
        atomic_write(p, bad)
    assert list(tmp_path.iterdir()) == []
    write_json(p, {"a": 1})
    assert read_json(p) == {"a": 1} and [q.name for q in tmp_path.iterdir()] == ["x.json"]
