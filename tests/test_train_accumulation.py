"""Gradient accumulation (train.micro_batches, issue 18.9) and the gradient allreduce options.

One optimizer step on the N x M rows of a step, cut into K micro-batches, gives the weights
of the same step in one pass: in one process, and on 2 ranks under Horovod
(backward_passes_per_step) and torch.distributed (DDP no_sync), where both must also equal a
single process stepping on the two ranks' rows together. fp16 gradient compression
(dist.compression) stays within fp16 rounding of it. The models have no BatchNorm (with it,
each micro-batch is normalised with its own statistics, by design).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpcaug.config import Config
from hpcaug.train.dist import SingleDist
from hpcaug.train.step import Precision, train_step

REPO = Path(__file__).resolve().parents[1]

# shared by the in-process test and the workers: a small conv net without BatchNorm, and the
# rows of rank r (deterministic, so every process can rebuild every rank's data)
COMMON = r'''
import torch, torch.nn as nn

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 5))

def rows(rank, n=24):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)

def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4)
'''
exec(COMMON)


def _one_step(k: int, precision: Precision) -> list[torch.Tensor]:
    model = make_model()  # noqa: F821 (from COMMON)
    opt = sgd(model)  # noqa: F821
    x, y = rows(0)  # noqa: F821
    for _ in range(2):  # two steps: the second one uses the momentum of the first
        train_step(model, opt, precision.scaler(), SingleDist(), x, y, micro_batches=k, precision=precision,
                   label_smoothing=0.1)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("k", [2, 3, 24])
def test_micro_batches_give_the_weights_of_one_pass(k: int) -> None:
    ref = _one_step(1, Precision("cpu"))
    got = _one_step(k, Precision("cpu"))
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()


def test_bfloat16_autocast_needs_no_grad_scaler() -> None:
    """train.amp_dtype=bfloat16: autocast without loss scaling (no GradScaler, no host sync for
    its inf check); the step runs here through CPU autocast, which supports bfloat16."""
    p = Precision("cpu", torch.bfloat16)
    assert not p.uses_scaler and not p.scaler().is_enabled()
    assert Precision("cuda", torch.float16).uses_scaler
    ref = _one_step(1, Precision("cpu"))
    got = _one_step(2, p)
    for a, b in zip(ref, got, strict=True):
        assert torch.isfinite(b).all() and torch.allclose(a, b, atol=0.05)


def test_micro_batches_cannot_exceed_the_rows_of_a_step(tmp_path: Path) -> None:
    from hpcaug.train import train
    from hpcaug.train.synthetic import SyntheticLoader

    cfg = Config().replace(**{"train.model": "tiny_resnet", "data.batch_size": 4, "train.micro_batches": 9})
    with pytest.raises(ValueError, match=r"train.micro_batches=9 is more than the 8 rows"):
        train(cfg, tmp_path, [None, None], epochs=1, dist=SingleDist(), train_loader=SyntheticLoader(4, 1, copies=2),
              val_loader=SyntheticLoader(4, 1))


WORKER = COMMON + r'''
import json, sys
from hpcaug.config import DistConfig
from hpcaug.train.dist import SingleDist, init_dist
from hpcaug.train.step import Precision, train_step

out, backend = sys.argv[1], sys.argv[2]
results = {}
for compression in ("none", "fp16"):
    d = init_dist(DistConfig(backend=backend, compression=compression))
    assert d.size == 2 and d.backend == backend
    x, y = rows(d.rank)
    for k in (1, 4):
        model = make_model()
        train_model, opt = d.prepare(model, sgd(model), micro_batches=k)
        for _ in range(2):
            train_step(train_model, opt, Precision("cpu").scaler(), d, x, y, micro_batches=k,
                       precision=Precision("cpu"))
        results[f"{compression}-{k}"] = [p.detach().flatten().tolist() for p in model.parameters()]
        results["wrapped"] = type(train_model).__name__
# the reference: one process, both ranks' rows in one batch (the mean over 48 rows)
model = make_model()
opt = sgd(model)
xs, ys = zip(*(rows(r) for r in range(2)))
for _ in range(2):
    train_step(model, opt, Precision("cpu").scaler(), SingleDist(), torch.cat(xs), torch.cat(ys), micro_batches=1,
               precision=Precision("cpu"))
results["single"] = [p.detach().flatten().tolist() for p in model.parameters()]
with open(f"{out}.{d.rank}.json", "w") as f:
    json.dump(results, f)
d.shutdown()
'''


def _close(a: list[list[float]], b: list[list[float]], tol: float) -> bool:
    return all(torch.allclose(torch.tensor(x), torch.tensor(y), rtol=tol, atol=tol) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("launcher", ["horovodrun", "torchrun"])
def test_two_ranks_accumulate_like_one_big_batch(tmp_path: Path, launcher: str) -> None:
    (tmp_path / "w.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).with_name(launcher))
    if launcher == "horovodrun":
        cmd = [exe, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(tmp_path / "w.py"),
               str(tmp_path / "r"), "horovod"]
    else:
        cmd = [exe, "--nproc_per_node=2", str(tmp_path / "w.py"), str(tmp_path / "r"), "torch"]
    p = subprocess.run(["timeout", "-k", "5", "240", *cmd], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = [json.loads((tmp_path / f"r.{r}.json").read_text()) for r in range(2)]
    assert res[0]["wrapped"] == ("DistributedDataParallel" if launcher == "torchrun" else "Sequential")
    for r in res:
        assert _close(r["none-1"], r["single"], 1e-5)  # 2 ranks x 24 rows = one process with 48
        assert _close(r["none-4"], r["none-1"], 1e-5)  # 4 micro-batches = one pass
        assert _close(r["fp16-1"], r["none-1"], 2e-3) and _close(r["fp16-4"], r["none-1"], 2e-3)
        assert r["fp16-1"] != r["none-1"]  # the gradients did travel as float16
    assert res[0]["none-4"] == res[1]["none-4"]  # both ranks hold the same weights
