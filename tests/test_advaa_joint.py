"""AdvAA joint training under real Horovod (2 gloo ranks) on the Fashion-MNIST fixture.

One run SIGKILLed mid-epoch, then resumed to the end (a module fixture); the tests check
- the per-policy losses (after the allreduce) and the controller parameters agree across
  ranks, and the controller really stepped;
- a run SIGKILLed in the middle of an epoch (after a mid-epoch checkpoint) resumes: the
  controller, its Adam state and the epoch's policies it restores equal the saved ones, no
  sample is counted twice, and the records hold each epoch once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
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
EPOCHS = 3
EXTRA = ("train.checkpoint_every_steps=2",)  # global step 4 = epoch 1 after its first step


@dataclass
class KilledThenResumed:
    tmp: Path
    saved: dict  # the hooks state in the checkpoint the kill left behind
    ckpt_pos: tuple[int, int]  # (epoch, step_in_epoch) of that checkpoint
    before: list  # epochs.jsonl after the kill
    after: list  # epochs.jsonl after the resumed run finished


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> KilledThenResumed:
    """Two ranks, 3 epochs; both SIGKILLed at the 2nd step of epoch 1; then the same command again."""
    tmp = tmp_path_factory.mktemp("advaa_joint")
    killed = _horovodrun(tmp, demo_data, epochs=EPOCHS, kill_at="1:2", extra=EXTRA)
    assert killed.returncode != 0, _tail(killed)
    assert not (tmp / "final_rank0.pt").exists(), "the first run should have been killed"
    ckpt = torch.load(tmp / "run" / "advaa" / "checkpoint.pt", weights_only=True)
    before = read_epoch_records(tmp / "run")
    resumed = _horovodrun(tmp, demo_data, epochs=EPOCHS, extra=EXTRA)
    assert resumed.returncode == 0, _tail(resumed)
    return KilledThenResumed(tmp, ckpt["hooks"], (ckpt["epoch"], ckpt["step_in_epoch"]), before,
                             read_epoch_records(tmp / "run"))


def _final(run: KilledThenResumed) -> tuple[dict, dict]:
    r0, r1 = (torch.load(run.tmp / f"final_rank{r}.pt", weights_only=False) for r in (0, 1))
    return r0, r1


def test_two_rank_joint_run_agrees_across_ranks(killed_then_resumed: KilledThenResumed) -> None:
    run = killed_then_resumed
    r0, r1 = _final(run)
    _assert_same_tensors(r0["controller"], r1["controller"], "controller at the end")
    rec0, rec1 = r0["record"], r1["record"]
    assert rec0["epoch"] == EPOCHS - 1 and rec0["mean_loss"] == rec1["mean_loss"] and rec0["reward"] == rec1["reward"]
    # The sums really were allreduced: every policy saw N images x STEPS steps x 2 ranks.
    assert rec0["samples"] == [float(N * STEPS * 2)] * M
    assert all(0.1 < x < 10 for x in rec0["mean_loss"]) and len(set(rec0["mean_loss"])) == M
    assert [r["epoch"] for r in run.after] == list(range(EPOCHS))
    assert run.after[-1]["mean_loss"] == rec0["mean_loss"]
    assert len({json.dumps(r["actions"]) for r in run.after}) == EPOCHS  # fresh policies every epoch
    assert all(len(r["policies"]) == M and all(len(sp) == 5 for sp in r["policies"]) for r in run.after)
    # The controller stepped: it no longer equals its seeded initialisation.
    from hpcaug.config import load_config
    from hpcaug.search.advaa import build_controller

    init = build_controller(load_config(REPO / "configs" / "demo_advaa.yaml")).state_dict()
    assert any(not torch.equal(init[k], r0["controller"][k]) for k in init)
    assert [h["train_loss"] for h in r0["history"]] == [h["train_loss"] for h in r1["history"]]
    assert (run.tmp / "run" / "advaa" / "last_policies.json").is_file()


def test_resume_after_mid_epoch_kill_restores_controller(killed_then_resumed: KilledThenResumed) -> None:
    run = killed_then_resumed
    saved = run.saved
    assert run.ckpt_pos == (1, 1)
    assert saved["epoch"] == 1 and saved["actions"].shape == (M, 20)
    assert saved["count"].tolist() == [float(N)] * M  # rank 0's first step of epoch 1
    assert [r["epoch"] for r in run.before] == [0]
    for r in (0, 1):
        loaded = torch.load(run.tmp / f"loaded_rank{r}.pt", weights_only=False)
        _assert_same_tensors(saved["controller"], loaded["controller"], f"rank {r} restored controller")
        _assert_same_optimizer(saved["optimizer"], loaded["optimizer"])
        assert loaded["epoch"] == 1 and torch.equal(loaded["actions"], saved["actions"])
    after = run.after
    assert after[0] == run.before[0]
    # Epoch 1 kept its policies, and counted rank 0's pre-kill step once plus the 2 steps
    # both ranks ran after the resume (rank 1's pre-kill partial sums were not checkpointed).
    assert after[1]["actions"] == saved["actions"].tolist()
    assert after[1]["samples"] == [float(N * (1 + 2 * (STEPS - 1)))] * M
    # Epoch 1's policies were sampled by the controller as saved: same log-probs.
    from hpcaug.config import load_config
    from hpcaug.search.advaa import build_controller

    ctrl = build_controller(load_config(REPO / "configs" / "demo_advaa.yaml"))
    ctrl.load_state_dict(saved["controller"])
    lp = ctrl.evaluate(saved["actions"]).log_prob.detach()
    torch.testing.assert_close(lp, torch.tensor(after[1]["log_prob"]))
