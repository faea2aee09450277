"""The installed stack: the imports the project needs, and a real 2-rank Horovod (gloo) run."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["torch", "torchvision", "nvidia.dali", "horovod.torch", "submitit", "h5py",
                                    "hpcaug"])
def test_import(module):
    importlib.import_module(module)


def test_horovod_is_the_gloo_build_for_this_torch():
    import horovod.torch as hvd
    import torch

    assert hvd.gloo_built(), "Horovod was built without gloo: rerun scripts/setup.sh"
    # the extension is compiled against one torch ABI; a mismatch fails at import, so reaching
    # here with the pinned torch means the cached wheel fits
    assert torch.__version__.startswith("2.14.1"), torch.__version__


def test_dali_cpu_pipeline_runs():
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)  # device_id=None: CPU only
    def pipe():
        x = fn.random.uniform(range=[0, 255], shape=[8, 8, 3], seed=1)
        return fn.cast(x, dtype=types.UINT8)

    p = pipe()
    p.build()
    (out,) = p.run()
    assert len(out) == 4 and out.as_array().shape == (4, 8, 8, 3)


@pytest.mark.parametrize("module", ["data_prep.fashion_mnist", "data_prep.imagenet"])
def test_data_prep_runs_from_any_directory(tmp_path, module):
    """data_prep is installed with hpcaug: `python -m data_prep.X` works outside the repo too."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout


HVD_SCRIPT = """
import json
import torch, torch.nn as nn
import horovod.torch as hvd

hvd.init()
rank, size = hvd.rank(), hvd.size()
torch.manual_seed(1234 + rank)          # a different init per rank: the broadcast must fix it
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
init_ck = sum(p.sum().item() for p in model.parameters())
opt = torch.optim.SGD(model.parameters(), lr=0.05)
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
hvd.broadcast_optimizer_state(opt, root_rank=0)
opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(), op=hvd.Average)
g = torch.Generator().manual_seed(rank)  # each rank trains on different data
x = torch.randn(64, 8, generator=g); y = x.sum(1, keepdim=True)
losses = []
for step in range(30):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    losses.append(hvd.allreduce(loss.detach(), name="loss", op=hvd.Average).item())
ck = sum(p.detach().double().sum().item() for p in model.parameters())
cfg = hvd.broadcast_object({"lr": 0.05} if rank == 0 else None, root_rank=0, name="cfg")
print("HVDRESULT " + json.dumps({"rank": rank, "size": size, "init_ck": init_ck, "ck": ck,
                                 "first": losses[0], "last": losses[-1], "cfg": cfg}), flush=True)
hvd.join()
"""


@pytest.mark.horovod
def test_horovodrun_two_ranks_agree(tmp_path):
    script = tmp_path / "hvd_check.py"
    script.write_text(textwrap.dedent(HVD_SCRIPT))
    horovodrun = Path(sys.executable).parent / "horovodrun"
    # a mismatched collective hangs instead of failing: bound it with timeout
    cmd = ["timeout", "240", str(horovodrun), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"horovodrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = [json.loads(line.split("HVDRESULT ", 1)[1]) for line in proc.stdout.splitlines() if "HVDRESULT " in line]
    assert sorted(r["rank"] for r in results) == [0, 1], proc.stdout
    r0, r1 = sorted(results, key=lambda r: r["rank"])
    assert r0["size"] == r1["size"] == 2
    assert r0["init_ck"] != r1["init_ck"]  # the ranks really started apart ...
    assert r0["ck"] == pytest.approx(r1["ck"], abs=1e-6)  # ... and ended with the same weights
    assert r0["first"] == r1["first"] and r0["last"] == r1["last"]  # allreduced losses agree
    assert r0["last"] < 0.5 * r0["first"]  # and it trained
    assert r0["cfg"] == r1["cfg"] == {"lr": 0.05}
