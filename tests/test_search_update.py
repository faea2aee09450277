"""AWS search state and the PPO update, without training or a cluster (fast)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hpcaug.config import Config, load_config
from hpcaug.search import aws, jobs, ppo
from hpcaug.search.rundir import RunDir, read_json, write_json

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **over: object) -> Config:
    sets = [f"run_dir={tmp_path / 'run'}", "aws.trajectories_per_round=4", "aws.rounds=3", "aws.quorum=0.75",
            "aws.policy_lr_warmup_rounds=1", "aws.parametrisation=joint", "aws.policy_lr=0.1",
            "aws.ops_per_trajectory=16"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "demo.yaml", sets)


def _fake_result(rd: RunDir, cfg: Config, traj: int, favoured_share: float, op: int, n: int = 100_000,
                 seed: int = 0) -> None:
    """A per_image finetune result whose trajectory applied `op` with share favoured_share (the rest
    uniform) and whose reward grows with that share: the constructed case the update must follow."""
    g = torch.Generator().manual_seed(seed)  # the same background in every trajectory
    k = int(n * favoured_share)
    counts = torch.bincount(torch.randint(0, ppo.NUM_OPERATIONS, (n - k,), generator=g), minlength=ppo.NUM_OPERATIONS)
    counts[op] += k
    r = aws.round_of(cfg, traj)
    write_json(rd.result_path(r, traj), {"trajectory": traj, "round": r, "reward": 0.5 + favoured_share,
                                         "choice_counts": counts.tolist(), "val_top1": [0.5 + favoured_share]})


def _fake_set_result(rd: RunDir, cfg: Config, traj: int, operations: list[int], reward: float) -> None:
    """An op_set finetune result: the K operations it drew, uniform counts over them, its reward."""
    counts = torch.bincount(torch.tensor(operations), minlength=ppo.NUM_OPERATIONS) * 1000
    r = aws.round_of(cfg, traj)
    write_json(rd.result_path(r, traj), {"trajectory": traj, "round": r, "reward": reward, "operations": operations,
                                         "choice_counts": counts.tolist(), "val_top1": [reward]})


@pytest.mark.parametrize("design", ["per_image", "op_set"])
def test_update_raises_probability_of_the_rewarded_operation(tmp_path: Path, design: str) -> None:
    cfg = _cfg(tmp_path, **{"aws.trajectory": design, "aws.ops_per_trajectory": 4})
    rd = aws.open_run(cfg)
    op = 777
    for r in range(2):
        for i, traj in enumerate(aws.round_trajectories(cfg, r)):
            if design == "per_image":
                _fake_result(rd, cfg, traj, favoured_share=[0.0, 0.05, 0.1, 0.2][i], op=op)
            else:  # trajectories 2, 3 drew only op and score higher than 0, 1 (distinct other operations)
                ops = [op] * 4 if i >= 2 else [100 * r + 10 * traj + j for j in range(4)]
                _fake_set_result(rd, cfg, traj, ops, reward=0.5 + 0.05 * i)
        before = ppo.log_probs(rd.theta(r)).exp()
        summary = aws.run_update(cfg, None, r)
        after = ppo.log_probs(rd.theta(r + 1)).exp()
        assert after[op] > before[op] * 1.05, (r, before[op], after[op])
        others = torch.cat([after[:op], after[op + 1:]])
        assert after[op] > others.max() * 1.05
        assert summary["ppo_epochs"] >= 1 and summary["kl"] > 0
        assert summary["entropy"] < summary["entropy_before"]
        assert summary["trajectory_design"] == design
    u0, u1 = read_json(rd.update_path(0)), read_json(rd.update_path(1))
    # EMA baseline: initialised with round 0's mean reward, then 0.9 b + 0.1 mean
    assert u0["baseline_used"] == pytest.approx(u0["mean_reward"])
    assert u1["baseline_used"] == pytest.approx(u0["baseline"])
    assert u1["baseline"] == pytest.approx(0.9 * u0["baseline"] + 0.1 * u1["mean_reward"])
    # policy.json is the ops module's policy format with the latest theta (aws.result_policy: last)
    from hpcaug.ops.policy import load_policy

    pol = load_policy(str(rd.policy_path))
    assert torch.allclose(pol.theta.double(), rd.theta(2).double(), atol=1e-6)
    assert u1["policy_json"]["rule"] == "last" and u1["policy_json"]["round"] == 2
    # the Adam state travels between rounds
    assert rd.ppo_state_path(2).exists()


def test_round_mean_baseline_centres_each_round(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"aws.baseline": "round_mean", "aws.ops_per_trajectory": 2})
    rd = aws.open_run(cfg)
    for r in range(2):
        for i, traj in enumerate(aws.round_trajectories(cfg, r)):
            _fake_set_result(rd, cfg, traj, [traj, traj + 50], reward=0.2 * r + 0.1 * i)
        u = aws.run_update(cfg, None, r)
        assert u["baseline_kind"] == "round_mean"
        assert u["baseline_used"] == pytest.approx(u["mean_reward"])
        assert sum(u["advantages"]) == pytest.approx(0.0, abs=1e-12)


def test_best_round_result_keeps_the_theta_of_the_best_round(tmp_path: Path) -> None:
    """aws.result_policy: best_round writes the theta the best round sampled from, and says why."""
    cfg = _cfg(tmp_path, **{"aws.result_policy": "best_round", "aws.ops_per_trajectory": 2})
    rd = aws.open_run(cfg)
    means = [0.3, 0.6, 0.4]
    for r, m in enumerate(means):
        for i, traj in enumerate(aws.round_trajectories(cfg, r)):
            _fake_set_result(rd, cfg, traj, [3 * traj, 3 * traj + 1], reward=m + 0.01 * (i - 1.5))
        u = aws.run_update(cfg, None, r)
    assert u["policy_json"] == read_json(rd.root / "search_state.json")["policy_source"]
    assert u["policy_json"]["rule"] == "best_round" and u["policy_json"]["round"] == 1
    assert "highest mean reward" in u["policy_json"]["why"]
    from hpcaug.ops.policy import load_policy

    assert torch.allclose(load_policy(str(rd.policy_path)).theta.double(), rd.theta(1).double(), atol=1e-6)


def test_select_result_rules() -> None:
    thetas = [torch.full((4,), float(i)) for i in range(4)]
    last, why = ppo.select_result(thetas, [0.1, 0.5, 0.2], "last", 2)
    assert torch.equal(last, thetas[3]) and why["round"] == 3
    best, why = ppo.select_result(thetas, [0.1, 0.5, 0.2], "best_round", 2)
    assert torch.equal(best, thetas[1]) and why["round"] == 1
    mean, why = ppo.select_result(thetas, [0.1, 0.5, 0.2], "mean_last", 2)
    assert torch.allclose(mean, torch.full((4,), 2.5)) and why["rounds"] == [2, 3]
    with pytest.raises(ValueError, match="one theta per round"):
        ppo.select_result(thetas[:2], [0.1, 0.5, 0.2], "last", 2)


def test_op_set_draws_are_seeded_per_trajectory_and_applied_as_drawn(tmp_path: Path) -> None:
    """A trajectory's K operations are drawn from p_theta, the same on a rerun, different across
    trajectories; its policy gives each image one of them (choice = the operation index)."""
    from hpcaug.ops.policy import AWSOperationSet, policy_from_json

    cfg = _cfg(tmp_path, **{"aws.ops_per_trajectory": 8})
    theta = torch.full((ppo.NUM_OPERATIONS,), -20.0)
    theta[:36] = 0.0  # p_theta concentrated on the 36 operations with first element 0
    a, b = aws.trajectory_operations(cfg, theta, 5), aws.trajectory_operations(cfg, theta, 5)
    assert a is not None and a == b and len(a) == 8 and all(0 <= k < 36 for k in a)
    assert aws.trajectory_operations(cfg, theta, 6) != a
    assert aws.trajectory_operations(_cfg(tmp_path, **{"aws.trajectory": "per_image"}), theta, 5) is None
    pol = AWSOperationSet(a)
    s = pol.sample(4000, torch.Generator().manual_seed(0))
    assert set(s.choice.tolist()) == set(a)
    counts = torch.bincount(s.choice, minlength=ppo.NUM_OPERATIONS)[sorted(set(a))].double()
    mult = torch.tensor([a.count(k) for k in sorted(set(a))], dtype=torch.float64)
    assert torch.allclose(counts / 4000, mult / 8, atol=0.03)  # uniform over the drawn multiset
    assert policy_from_json(pol.to_json()) == pol
    with pytest.raises(ValueError, match="0..1295"):
        AWSOperationSet([1296])


def test_update_is_idempotent_and_needs_a_quorum(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"aws.trajectory": "per_image"})
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


def test_trajectory_scores_of_both_designs() -> None:
    """per_image: the score is sum_k f_k log p_k (f = counts / total), so scaling counts changes
    nothing; op_set: the score is the summed log-prob of the drawn multiset."""
    theta = torch.zeros(ppo.NUM_OPERATIONS)
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 5, (4, ppo.NUM_OPERATIONS), generator=g)
    counts[:, 3] += torch.tensor([0, 10, 20, 40])
    rewards = torch.tensor([0.1, 0.2, 0.3, 0.4])

    def w(c: torch.Tensor) -> torch.Tensor:
        return torch.stack([ppo.action_weights("per_image", None, row) for row in c])

    a = ppo.ppo_update(theta, w(counts), rewards, ppo.PPOState(), lr=0.05)
    b = ppo.ppo_update(theta, w(counts * 100), rewards, ppo.PPOState(), lr=0.05)
    assert torch.allclose(a.theta, b.theta, atol=1e-6)
    # KL early stop: a huge lr stops after the first epoch
    c = ppo.ppo_update(theta, w(counts), rewards, ppo.PPOState(), lr=5.0)
    assert c.stats["ppo_epochs"] == 1 and c.stats["kl"] > 0.002
    # the factorised parametrisation (authors' code) updates too
    f = ppo.ppo_update(torch.zeros(ppo.num_params("factorised")), w(counts), rewards, ppo.PPOState(), lr=0.05,
                       parametrisation="factorised")
    assert ppo.log_probs(f.theta, "factorised").exp()[3] > 1 / ppo.NUM_OPERATIONS
    # op_set: a drawn multiset weighs each operation by its multiplicity
    row = ppo.action_weights("op_set", [3, 3, 9], counts[0])
    assert row[3] == 2 and row[9] == 1 and row.sum() == 3
    assert float(row @ ppo.log_probs(theta.double())) == pytest.approx(3 * -math.log(ppo.NUM_OPERATIONS))
    with pytest.raises(ValueError, match="no 'operations'"):
        ppo.action_weights("op_set", None, counts[0])


def test_policy_lr_warms_up_then_stays() -> None:
    assert [ppo.policy_lr(r, 0.1, 4) for r in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_array_specs_and_round_split() -> None:
    assert jobs.parse_array("0-9%3") == (list(range(10)), 3)
    assert jobs.parse_array("0,3,5-7") == ([0, 3, 5, 6, 7], 0)
    with pytest.raises(ValueError, match="SLURM array syntax"):
        jobs.parse_array("a-b")
    assert jobs.split_by_round(list(range(3, 13)), 4) == {0: [3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11], 3: [12]}


def test_plans_skip_what_is_done(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"aws.trajectory": "per_image"})
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


def test_a_run_dir_from_before_new_keys_resumes(tmp_path: Path) -> None:
    """A run started before a key existed (or with a key hpcaug has since dropped) resumes when the
    new key keeps the old behaviour; aws.trajectory's old behaviour is per_image, and it is named."""
    cfg = _cfg(tmp_path)
    aws.open_run(cfg)
    path = tmp_path / "run" / "config.json"
    old = json.loads(path.read_text())
    del old["aws"]["trajectory"], old["train"]["micro_batches"]
    old["augment"]["randaugment_n"] = 2  # a key since removed
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"aws.trajectory: run has 'per_image' \(before the key existed\), "
                                         r"config has 'op_set'"):
        aws.open_run(cfg)
    aws.open_run(cfg.replace(**{"aws.trajectory": "per_image"}))


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


def test_ratio_direction_against_the_official_code() -> None:
    """PPO's ratio is p_new / p_old: a positive advantage raises the probability of what the
    trajectory used. The authors' official code (agent/ppo.py) computes exp(old_log - new_log) =
    p_old / p_new, which lowers it (docs/search.md, "The official code's PPO ratio")."""
    counts = torch.full((ppo.NUM_OPERATIONS,), 1000.0)
    counts[777] = 0.25 * float(counts.sum() - 1000.0)  # the pair makes up 20 % of what it applied
    w = ppo.action_weights("per_image", None, counts)[None]
    theta = torch.zeros(ppo.NUM_OPERATIONS, dtype=torch.float64)
    lp_old = ppo.log_probs(theta)

    def one_step(sign: float) -> float:
        p = torch.nn.Parameter(theta.clone())
        opt = torch.optim.Adam([p], lr=0.1, betas=(0.5, 0.999))
        ratio = torch.exp(sign * (w @ ppo.log_probs(p) - w @ lp_old))
        adv = torch.tensor([0.5], dtype=torch.float64)
        (-torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()).backward()
        opt.step()
        return float(ppo.log_probs(p.detach()).exp()[777])

    start = float(lp_old.exp()[777])
    ours = float(ppo.log_probs(ppo.ppo_update(theta, w, torch.tensor([0.5]), ppo.PPOState(baseline=0.0), lr=0.1,
                                              settings=ppo.PPOSettings(epochs=1)).theta).exp()[777])
    assert ours == pytest.approx(one_step(+1.0)) and ours > start
    assert one_step(-1.0) < start  # the official sign moves the other way


def test_reward_of_best_or_last_validated_epochs() -> None:
    """aws.reward_epochs: best = mean of the k best validation accuracies (the paper's); last =
    the last k validated epochs (an epoch without validation, train.val_every, is skipped)."""
    hist = [{"val_top1": 0.9}, {"val_top1": 0.5}, {"train_loss": 1.0}, {"val_top1": 0.7}, {"val_top1": 0.6}]
    assert aws.reward_of(hist, 2) == pytest.approx(0.8)
    assert aws.reward_of(hist, 2, "last") == pytest.approx(0.65)
    assert aws.reward_of(hist, 9, "last") == pytest.approx(0.675)
    with pytest.raises(ValueError, match="no validation accuracy"):
        aws.reward_of([{"train_loss": 1.0}], 1, "last")
