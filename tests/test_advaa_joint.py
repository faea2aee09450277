"""AdvAA joint training under real Horovod (2 gloo ranks) on the Fashion-MNIST fixture.

- the per-policy losses (after the allreduce) and the controller parameters agree across
  ranks, and the controller really stepped;
- a run SIGKILLed in the middle of an epoch (after a mid-epoch checkpoint) resumes: the
  controller, its Adam state and the epoch's policies it restores equal the saved ones, no
  sample is counted twice, and the records hold each epoch once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hpcaug.search.advaa import read_epoch_records

REPO = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
M, N, STEPS = 4, 8, 3

# Runs on every rank: run_advaa, then each rank dumps what it ended with. ADVAA_KILL_AT=e:s
# makes both ranks SIGKILL themselves at the s-th step (1-based) of epoch e, after a barrier
# (so rank 0 has finished writing the previous checkpoint). Every load_state_dict call is
# recorded, so the test can compare what was restored with what was saved.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    from hpcaug.config import load_config
    from hpcaug.search import advaa
    from hpcaug.train.dist import init_dist

    cfg = load_config(sys.argv[1], sys.argv[3:])
    out = Path(sys.argv[2])
    dist = init_dist(cfg.dist)
    kill_at = tuple(int(x) for x in os.environ.get("ADVAA_KILL_AT", "-1:-1").split(":"))
    steps = {}
    on_step, load = advaa.AdvAAHooks.on_step, advaa.AdvAAHooks.load_state_dict

    def on_step_then_maybe_die(self, per_sample_loss, batch):
        steps[self.epoch] = steps.get(self.epoch, 0) + 1
        if (self.epoch, steps[self.epoch]) == kill_at:
            dist.barrier()
            os.kill(os.getpid(), signal.SIGKILL)
        on_step(self, per_sample_loss, batch)

    def load_state_dict(self, state):
        load(self, state)
        torch.save({"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "epoch": self.epoch, "actions": self.actions, "count": self.count.clone()},
                   out / f"loaded_rank{dist.rank}.pt")

    advaa.AdvAAHooks.on_step, advaa.AdvAAHooks.load_state_dict = on_step_then_maybe_die, load_state_dict
    result = advaa.run_advaa(cfg, out / "run", dist=dist)
    torch.save({"controller": result.controller, "record": result.last_record,
                "history": result.train.history}, out / f"final_rank{dist.rank}.pt")
""")


def _overrides(data: Path, epochs: int) -> list[str]:
    return [f"data.dir={data}", "data.backend=torch", f"data.batch_size={N}", "data.workers=1",
            "data.val_list=search_val", f"train.epochs={epochs}", f"train.steps_per_epoch={STEPS}",
            "train.log_interval=100", f"advaa.num_policies={M}", f"augment.copies={M}"]


def _horovodrun(tmp: Path, data: Path, epochs: int, kill_at: str = "-1:-1", timeout: int = 150,
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    (tmp / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ADVAA_KILL_AT": str(kill_at),
           "HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}
    cmd = ["timeout", "-k", "5", str(timeout), str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo",
           sys.executable, str(tmp / "driver.py"), str(REPO / "configs" / "demo_advaa.yaml"), str(tmp),
           *_overrides(data, epochs), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout + 30)


def _tail(p: subprocess.CompletedProcess) -> str:
    return f"rc={p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def _assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][i][k])), f"optimizer state {i}.{k}"


pytestmark = pytest.mark.skipif(not HOROVODRUN.exists(), reason="horovodrun missing: run scripts/setup.sh")


def test_two_rank_joint_run_agrees_across_ranks(tmp_path: Path, demo_data: Path) -> None:
    p = _horovodrun(tmp_path, demo_data, epochs=2)
    assert p.returncode == 0, _tail(p)
    r0, r1 = (torch.load(tmp_path / f"final_rank{r}.pt", weights_only=False) for r in (0, 1))
    _assert_same_tensors(r0["controller"], r1["controller"], "controller after 2 epochs")
    rec0, rec1 = r0["record"], r1["record"]
    assert rec0["epoch"] == 1 and rec0["mean_loss"] == rec1["mean_loss"] and rec0["reward"] == rec1["reward"]
    # The sums really were allreduced: every policy saw N images x STEPS steps x 2 ranks.
    assert rec0["samples"] == [float(N * STEPS * 2)] * M
    assert all(0.1 < x < 10 for x in rec0["mean_loss"]) and len(set(rec0["mean_loss"])) == M
    records = read_epoch_records(tmp_path / "run")
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1]["mean_loss"] == rec0["mean_loss"]
    assert records[0]["actions"] != records[1]["actions"]  # fresh policies every epoch
    assert all(len(r["policies"]) == M and all(len(sp) == 5 for sp in r["policies"]) for r in records)
    # The controller stepped: it no longer equals its seeded initialisation.
    from hpcaug.config import load_config
    from hpcaug.search.advaa import build_controller

    init = build_controller(load_config(REPO / "configs" / "demo_advaa.yaml")).state_dict()
    assert any(not torch.equal(init[k], r0["controller"][k]) for k in init)
    assert [h["train_loss"] for h in r0["history"]] == [h["train_loss"] for h in r1["history"]]
    assert len(r0["history"]) == 2
    assert (tmp_path / "run" / "advaa" / "last_policies.json").is_file()


def test_resume_after_mid_epoch_kill_restores_controller(tmp_path: Path, demo_data: Path) -> None:
    # Checkpoints every 2 steps: global step 4 = epoch 1 after its first step. Die at its 2nd step.
    extra = ("train.checkpoint_every_steps=2",)
    killed = _horovodrun(tmp_path, demo_data, epochs=3, kill_at="1:2", extra=extra)
    assert killed.returncode != 0, _tail(killed)
    assert not (tmp_path / "final_rank0.pt").exists(), "the first run should have been killed"
    ckpt = torch.load(tmp_path / "run" / "advaa" / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 1), (ckpt["epoch"], ckpt["step_in_epoch"])
    saved = ckpt["hooks"]
    assert saved["epoch"] == 1 and saved["actions"].shape == (M, 20)
    assert saved["count"].tolist() == [float(N)] * M  # rank 0's first step of epoch 1
    before = read_epoch_records(tmp_path / "run")
    assert [r["epoch"] for r in before] == [0]

    resumed = _horovodrun(tmp_path, demo_data, epochs=3, extra=extra)
    assert resumed.returncode == 0, _tail(resumed)
    for r in (0, 1):
        loaded = torch.load(tmp_path / f"loaded_rank{r}.pt", weights_only=False)
        _assert_same_tensors(saved["controller"], loaded["controller"], f"rank {r} restored controller")
        _assert_same_optimizer(saved["optimizer"], loaded["optimizer"])
        assert loaded["epoch"] == 1 and torch.equal(loaded["actions"], saved["actions"])
    r0, r1 = (torch.load(tmp_path / f"final_rank{r}.pt", weights_only=False) for r in (0, 1))
    _assert_same_tensors(r0["controller"], r1["controller"], "controller after resume")
    after = read_epoch_records(tmp_path / "run")
    assert [r["epoch"] for r in after] == [0, 1, 2]
    assert after[0] == before[0]
    # Epoch 1 kept its policies, and counted rank 0's pre-kill step once plus the 2 steps
    # both ranks ran after the resume (rank 1's pre-kill partial sums were not checkpointed).
    assert after[1]["actions"] == saved["actions"].tolist()
    assert after[1]["samples"] == [float(N * (1 + 2 * (STEPS - 1)))] * M
    assert after[2]["samples"] == [float(N * STEPS * 2)] * M
    # Epoch 1's policies were sampled by the controller as saved: same log-probs.
    from hpcaug.config import load_config
    from hpcaug.search.advaa import build_controller

    ctrl = build_controller(load_config(REPO / "configs" / "demo_advaa.yaml"))
    ctrl.load_state_dict(saved["controller"])
    lp = ctrl.evaluate(saved["actions"]).log_prob.detach()
    torch.testing.assert_close(lp, torch.tensor(after[1]["log_prob"]))
