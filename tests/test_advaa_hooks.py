"""AdvAA hooks without the training loop: per-policy loss bookkeeping, the epoch-end step, records, state."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hpcaug.config import Config, load_config
from hpcaug.ops.policy import SubPolicyPolicy
from hpcaug.search.advaa import AdvAAHooks, read_epoch_records, validate_advaa_config
from hpcaug.train.dist import SingleDist

REPO = Path(__file__).resolve().parents[1]


@dataclass
class FakeBatch:
    copy_ids: torch.Tensor


def _cfg(m: int = 4) -> Config:
    return load_config(REPO / "configs" / "demo_advaa.yaml").replace(
        **{"advaa.num_policies": m, "augment.copies": m})


def _feed(hooks: AdvAAHooks, losses_per_policy: list[float], steps: int = 3, n: int = 5) -> None:
    m = len(losses_per_policy)
    copy_ids = torch.arange(m).repeat(n)  # row n * M + m is image n under policy m
    for s in range(steps):
        noise = 0.01 * torch.randn(n * m, generator=torch.Generator().manual_seed(s))
        hooks.on_step(torch.tensor(losses_per_policy)[copy_ids] + noise, FakeBatch(copy_ids))


def test_validation_says_how_to_fix() -> None:
    bad = load_config(REPO / "configs" / "demo_advaa.yaml").replace(**{"augment.copies": 3})
    with pytest.raises(ValueError, match="augment.copies: 4"):
        validate_advaa_config(bad)
    with pytest.raises(ValueError, match="num_magnitudes"):
        validate_advaa_config(_cfg().replace(**{"advaa.num_magnitudes": 11}))
    validate_advaa_config(load_config(REPO / "configs" / "imagenet_resnet50_advaa.yaml"))


def test_epoch_cycle_step_direction_and_record(tmp_path: Path) -> None:
    hooks = AdvAAHooks(_cfg(), SingleDist(), tmp_path)
    policies = hooks.on_epoch_start(0)
    assert len(policies) == 4 and all(isinstance(p, SubPolicyPolicy) for p in policies)
    assert all(p.num_choices == 5 and all(len(sp) == 2 for sp in p.sub_policies) for p in policies)
    assert hooks.on_epoch_start(0) == policies  # idempotent within an epoch (resumed epoch)
    actions = hooks.actions.clone()
    before = hooks.controller.evaluate(actions).log_prob.detach()
    _feed(hooks, [1.0, 1.0, 4.0, 1.0])  # policy 2 made training hardest
    hooks.on_epoch_end(0, {"train_loss": 1.5})
    rec = hooks.last_record
    assert rec is not None
    after = hooks.controller.evaluate(actions).log_prob.detach()
    gain = after - before
    assert gain[2] > 0 and int(torch.argmax(gain)) == 2, gain  # the hardest policy gained most
    assert rec["samples"] == [15.0] * 4
    assert rec["mean_loss"][2] == pytest.approx(4.0, abs=0.02)
    assert max(range(4), key=lambda i: rec["reward"][i]) == 2
    assert rec["train"] == {"train_loss": 1.5}
    on_disk = read_epoch_records(tmp_path)
    assert len(on_disk) == 1 and on_disk[0]["epoch"] == 0 and on_disk[0]["actions"] == actions.tolist()
    assert len(on_disk[0]["policies"]) == 4 and len(on_disk[0]["policies"][0]) == 5
    # Next epoch: new policies from the updated controller, fresh sums.
    hooks.on_epoch_start(1)
    assert float(hooks.count.sum()) == 0.0
    # Rerunning epoch 1 (after a kill) replaces its line instead of duplicating it.
    _feed(hooks, [2.0, 1.0, 1.0, 1.0])
    hooks.on_epoch_end(1, {})
    hooks.on_epoch_start(1)
    _feed(hooks, [2.0, 1.0, 1.0, 1.0])
    hooks.on_epoch_end(1, {})
    assert [r["epoch"] for r in read_epoch_records(tmp_path)] == [0, 1]


def test_epoch_end_refuses_missing_policy_samples(tmp_path: Path) -> None:
    hooks = AdvAAHooks(_cfg(), SingleDist(), tmp_path)
    hooks.on_epoch_start(0)
    hooks.on_step(torch.ones(6), FakeBatch(torch.tensor([0, 1, 2, 0, 1, 2])))  # policy 3 never seen
    with pytest.raises(RuntimeError, match="no samples seen for policies \\[3\\]"):
        hooks.on_epoch_end(0, {})
    with pytest.raises(ValueError, match="reduction='none'"):
        hooks.on_step(torch.ones(5), FakeBatch(torch.tensor([0, 1, 2, 3])))


def test_state_dict_round_trip_mid_epoch(tmp_path: Path) -> None:
    a = AdvAAHooks(_cfg(), SingleDist(), tmp_path)
    a.on_epoch_start(0)
    _feed(a, [1.0, 2.0, 3.0, 4.0])
    a.on_epoch_end(0, {})
    pols = a.on_epoch_start(1)
    _feed(a, [1.0, 1.0, 1.0, 3.0], steps=2)
    state = a.state_dict()
    b = AdvAAHooks(_cfg(), SingleDist(), tmp_path / "other")
    b.load_state_dict(state)
    for k, v in a.controller.state_dict().items():
        assert torch.equal(v, b.controller.state_dict()[k]), k
    assert b.optimizer.state_dict()["state"][0]["step"] == 1
    assert b.on_epoch_start(1) == pols  # the resumed epoch keeps its policies ...
    assert torch.equal(b.loss_sum, a.loss_sum) and torch.equal(b.count, a.count)  # ... and its partial sums
    _feed(a, [1.0, 1.0, 1.0, 3.0], steps=1)
    _feed(b, [1.0, 1.0, 1.0, 3.0], steps=1)
    a.on_epoch_end(1, {})
    b.on_epoch_end(1, {})
    ra, rb = a.last_record, b.last_record
    assert ra is not None and rb is not None
    assert ra["mean_loss"] == rb["mean_loss"] and ra["reward"] == rb["reward"]
    for k, v in a.controller.state_dict().items():
        assert torch.equal(v, b.controller.state_dict()[k]), k
    # A fresh epoch draws the same policies on both (generator seeded per epoch).
    assert a.on_epoch_start(2) == b.on_epoch_start(2)
