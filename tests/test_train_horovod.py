"""Real Horovod (gloo, 2 ranks via horovodrun) training the tiny model on the real demo data
through the real loaders: ranks agree, loss falls, metrics are exact, a killed run resumes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hpcaug.config import load_config
from hpcaug.ops import load_policy
from hpcaug.train import TrainHooks, build_model, evaluate, load_checkpoint, train
from hpcaug.train.dist import SingleDist

REPO = Path(__file__).resolve().parents[1]
BACKEND = "dali"  # the default loader backend; DALI runs its CPU operators here
N, STEPS, EPOCHS, M = 32, 3, 2, 2


def _overrides(data_dir: Path, **extra: Any) -> list[str]:
    base = {"data.dir": str(data_dir), "data.backend": BACKEND, "data.batch_size": N, "data.workers": 1,
            "train.steps_per_epoch": STEPS, "train.lr": 0.8, "train.warmup_epochs": 0, "train.log_interval": 1,
            "train.checkpoint_every_steps": 2, "augment.copies": M, "augment.policy": "uniform"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


WORKER = r'''
import json, os, sys, torch
from hpcaug.config import load_config
from hpcaug.ops import load_policy
from hpcaug.train import TrainHooks, init_dist, train

out, crash_at, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
d = init_dist()
assert d.backend == "horovod" and d.size == 2, (d.backend, d.size)
cfg = load_config(os.path.join(os.environ["HPCAUG_REPO"], "configs", "demo.yaml"), overrides)

class Crash(TrainHooks):
    n = 0
    def on_step(self, loss, batch):
        self.n += 1
        if self.n == crash_at:
            os._exit(17)  # a hard kill on every rank: no cleanup, no final checkpoint

r = train(cfg, out, [load_policy(cfg.augment.policy)] * cfg.augment.copies,
          epochs=int(os.environ["EPOCHS"]), dist=d, hooks=Crash())
sd = r.model.state_dict()
ck = [float(v.double().sum()) for v in sd.values()]
allck = d.allgather_object(ck, name="checksums")
if d.is_root:
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"history": r.history, "steps": r.steps, "checksums": allck,
                   "choice_counts": r.choice_counts.tolist()}, f)
d.shutdown()
'''


def _horovodrun(tmp_path: Path, out: Path, crash_at: int, overrides: list[str]) -> subprocess.CompletedProcess:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "HPCAUG_REPO": str(REPO), "EPOCHS": str(EPOCHS), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    hvdrun = Path(sys.executable).with_name("horovodrun")
    cmd = ["timeout", "150", str(hvdrun), "-np", "2", "-H", "localhost:2", "--gloo",
           sys.executable, str(worker), str(out), str(crash_at), *overrides]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def test_horovod_two_ranks_kill_resume_and_exact_metrics(tmp_path: Path, demo_data: Path) -> None:
    out = tmp_path / "run"
    ov = _overrides(demo_data)
    # 1) killed in global step 5 (epoch 2, step 2); the last checkpoint is from step 4
    p = _horovodrun(tmp_path, out, 5, ov)
    assert p.returncode != 0, p.stdout[-3000:] + p.stderr[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"], ck["world_size"]) == (1, 1, 4, 2)
    assert not (out / "result.json").exists()
    # 2) the same command resumes and finishes with the steps and epochs of an uninterrupted run
    p = _horovodrun(tmp_path, out, 0, ov)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    assert res["steps"] == EPOCHS * STEPS and [h["epoch"] for h in res["history"]] == list(range(EPOCHS))
    # both ranks hold identical weights (parameters and BN buffers, after the steps)
    assert res["checksums"][0] == res["checksums"][1]
    # every step saw N x M rows on each of the 2 ranks; every row's op is counted once, over both ranks
    assert [h["train_samples"] for h in res["history"]] == [STEPS * N * M * 2] * EPOCHS
    assert sum(res["choice_counts"]) == EPOCHS * STEPS * N * M * 2
    # the loss falls below chance level (ln 10 = 2.303) and from epoch to epoch
    h0, h1 = res["history"]
    assert h1["train_loss"] < h0["train_loss"] and h1["val_loss"] < math.log(10), res["history"]
    # 3) the allreduced validation metrics equal a single-process pass over the whole val split
    cfg = load_config(REPO / "configs" / "demo.yaml", ov)
    from hpcaug.data import build_val_loader

    model = build_model("tiny_resnet", 10)
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    ref = evaluate(model, build_val_loader(cfg, 0, 1, "cpu"), SingleDist())
    assert ref["val_samples"] == h1["val_samples"] == 200  # search_val: 20 per class, each read once
    assert ref["val_top1"] == h1["val_top1"] and ref["val_top5"] == h1["val_top5"]
    assert ref["val_loss"] == pytest.approx(h1["val_loss"], rel=1e-4)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [0, 1]
    assert "images_per_s" in lines[0] and "lr" in lines[0]


def test_enlarged_batch_m4_real_loader(tmp_path: Path, demo_data: Path) -> None:
    """M = 4 copies: every step trains on N x M rows, row n*M+m = image n under copy m."""
    cfg = load_config(REPO / "configs" / "demo.yaml", _overrides(demo_data, **{
        "data.batch_size": 8, "augment.copies": 4, "train.steps_per_epoch": 2, "train.checkpoint_every_steps": 0}))
    seen: list[Any] = []

    class Spy(TrainHooks):
        def on_step(self, per_sample_loss: torch.Tensor, batch: Any) -> None:
            seen.append((per_sample_loss.numel(), batch.copy_ids.clone(), batch.labels.clone()))

    pol = load_policy("uniform")
    r = train(cfg, tmp_path, [pol] * 4, epochs=1, hooks=Spy(), dist=SingleDist())
    assert [s[0] for s in seen] == [8 * 4, 8 * 4]
    assert seen[0][1].tolist() == [0, 1, 2, 3] * 8
    assert torch.equal(seen[0][2].view(8, 4), seen[0][2].view(8, 4)[:, :1].expand(8, 4))  # copies share labels
    assert r.history[0]["train_samples"] == 2 * 8 * 4
    assert int(r.choice_counts.sum()) == 2 * 8 * 4 and r.choice_counts.numel() == pol.num_choices


SYNTH_WORKER = r'''
import os, sys, torch
from hpcaug.config import Config
from hpcaug.train import TrainHooks, init_dist, train
from hpcaug.train.synthetic import SyntheticLoader

out, crash_at = sys.argv[1], int(sys.argv[2])
d = init_dist()
cfg = Config().replace(**{"train.model": "tiny_resnet", "data.batch_size": 8, "train.warmup_epochs": 0,
                          "train.lr": 0.4, "train.log_interval": 100, "train.checkpoint_every_steps": 2})

class Crash(TrainHooks):
    n = 0
    def on_step(self, loss, batch):
        self.n += 1
        if self.n == crash_at:
            os._exit(17)

r = train(cfg, out, [None], epochs=2, dist=d, hooks=Crash(),
          train_loader=SyntheticLoader(8, 3, num_classes=4, image_size=16, rank=d.rank),
          val_loader=SyntheticLoader(8, 1, num_classes=4, image_size=16, rank=d.rank))
if d.is_root:
    torch.save(r.model.state_dict(), os.path.join(out, "final.pt"))
d.shutdown()
'''


def test_horovod_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """Killed after a mid-epoch checkpoint and resumed, a 2-rank Horovod run ends with the
    weights of a run that was never killed: the optimizer's momentum is restored into
    Horovod's DistributedOptimizer (a new optimizer object with empty state), not lost."""
    worker = tmp_path / "w.py"
    worker.write_text(SYNTH_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    hvdrun = Path(sys.executable).with_name("horovodrun")

    def run(out: Path, crash_at: int) -> subprocess.CompletedProcess:
        return subprocess.run(["timeout", "150", str(hvdrun), "-np", "2", "-H", "localhost:2", "--gloo",
                               sys.executable, str(worker), str(out), str(crash_at)],
                              env=env, capture_output=True, text=True, timeout=180)

    p = run(tmp_path / "ref", 0)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    p = run(tmp_path / "run", 5)  # killed in step 5; the last checkpoint is from step 4 (epoch 2, step 1)
    assert p.returncode != 0 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["global_step"] == 4
    p = run(tmp_path / "run", 0)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ref = torch.load(tmp_path / "ref" / "final.pt")
    got = torch.load(tmp_path / "run" / "final.pt")
    for k in ref:
        assert torch.allclose(got[k].float(), ref[k].float(), atol=1e-5), k
