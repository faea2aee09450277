"""The torch.distributed backend (DDP over gloo, 2 ranks via torchrun) behind the same Dist
interface: ranks agree on weights, uneven validation shards are counted exactly, and rank 0
logs why it chose the backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, os, sys, torch
from hpcaug.config import Config
from hpcaug.train import init_dist, train
from hpcaug.train.synthetic import SyntheticLoader

d = init_dist()  # dist.backend=auto: torchrun -> torch.distributed
assert (d.backend, d.size) == ("torch", 2), (d.backend, d.size)
cfg = Config().replace(**{"train.model": "tiny_resnet", "data.batch_size": 8, "train.warmup_epochs": 0,
                          "train.log_interval": 100})
class P:
    num_choices = 3
train_loader = SyntheticLoader(8, 3, num_classes=10, num_choices=3, rank=d.rank)
val_loader = SyntheticLoader(16, 1, num_classes=10, rank=d.rank, total=16 if d.rank == 0 else 9)
r = train(cfg, sys.argv[1], [P()], epochs=1, train_loader=train_loader, val_loader=val_loader, dist=d)
ck = [float(v.double().sum()) for v in r.model.state_dict().values()]
allck = d.allgather_object(ck, name="ck")
if d.is_root:
    json.dump({"history": r.history, "same": allck[0] == allck[1], "counts": r.choice_counts.tolist()},
              open(os.path.join(sys.argv[1], "result.json"), "w"))
d.shutdown()
'''


def test_torchrun_two_ranks(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    p = subprocess.run(["timeout", "120", str(torchrun), "--nproc_per_node=2", str(tmp_path / "w.py"),
                        str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    # rank 0 (only) says which backend it chose and why
    chosen = [line for line in p.stderr.splitlines() if "distributed backend:" in line]
    assert len(chosen) == 1 and "torch, 2 rank(s)" in chosen[0] and "launched by torchrun" in chosen[0], p.stderr
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["same"]  # parameters and (averaged) BN buffers identical on both ranks
    h = res["history"][0]
    assert h["val_samples"] == 25 and h["train_samples"] == 3 * 8 * 2 and sum(res["counts"]) == 48
