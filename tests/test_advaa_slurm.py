"""`sbatch slurm/advaa_train.sh` on the local SLURM cluster: 2 fake nodes x 1 task form one
Horovod job (gloo rendezvous on rank 0, no horovodrun), train and step the controller."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from hpcaug.search.advaa import read_epoch_records

REPO = Path(__file__).resolve().parents[1]
M, N, STEPS = 2, 8, 2


def test_sbatch_advaa_two_nodes(slurm_cluster: Any, demo_data: Path, tmp_path: Path) -> None:
    assert slurm_cluster.nodes >= 2, "the slurm_cluster fixture must offer 2 nodes"
    run, log = tmp_path / "run", tmp_path / "advaa.out"
    env = {**slurm_cluster.env, "CONFIG": str(REPO / "configs" / "demo_advaa.yaml"), "RUN_DIR": str(run),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}
    cmd = ["timeout", "-k", "5", "170", "sbatch", "--wait", "--parsable", "-p", slurm_cluster.partition,
           "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=5",
           "--signal=B:USR1@30",  # the script's 10-minute warning would fire at once in a 5-minute job
           f"--output={log}", "--kill-on-invalid-dep=yes", str(REPO / "slurm" / "advaa_train.sh"),
           f"data.dir={demo_data}", "data.backend=torch", f"data.batch_size={N}", "data.workers=1",
           "train.epochs=1", f"train.steps_per_epoch={STEPS}", f"advaa.num_policies={M}", f"augment.copies={M}"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    job_id = p.stdout.strip().split(";")[0]
    if p.returncode != 0 and job_id:
        slurm_cluster.run("scancel", job_id, check=False)  # never leave a job behind
    out = log.read_text() if log.exists() else ""
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stderr[-2000:]}\n--- job output\n{out[-4000:]}"
    records = read_epoch_records(run)
    assert [r["epoch"] for r in records] == [0]
    assert records[0]["samples"] == [float(N * STEPS * 2)] * M  # both ranks' losses were summed
    ckpt = torch.load(run / "advaa" / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 1 and "lstm.weight_ih" in ckpt["hooks"]["controller"]
