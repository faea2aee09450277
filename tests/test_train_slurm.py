"""A 2-node job on the local SLURM cluster through submitit: `srun` starts one task per node,
the tasks find each other through the Horovod gloo rendezvous hosted by rank 0 (no
horovodrun, no MPI), train the tiny model on the demo data and agree on the result."""
from __future__ import annotations

import json
from pathlib import Path

from hpcaug.config import load_config
from hpcaug.train import load_checkpoint
from hpcaug.train.stages import CheckpointableTraining, run_train

REPO = Path(__file__).resolve().parents[1]
N, STEPS = 16, 2


def test_two_node_horovod_job_through_submitit(tmp_path: Path, slurm_cluster, demo_data: Path) -> None:
    assert slurm_cluster.nodes >= 2, "the slurm_cluster fixture must offer 2 nodes"
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"data.dir={demo_data}", "data.backend=torch", f"data.batch_size={N}", "data.workers=1",
        f"train.steps_per_epoch={STEPS}", "train.log_interval=1", "augment.copies=1", "dist.backend=horovod"])
    out = tmp_path / "train"
    ex = slurm_cluster.executor(tmp_path / "logs", nodes=2, tasks_per_node=1, cpus_per_task=1,
                                slurm_additional_parameters={"kill-on-invalid-dep": "yes"})
    job = ex.submit(CheckpointableTraining(run_train), cfg, str(out), "uniform", epochs=1)
    results = job.results()  # one TrainResult per task (rank); raises with the job's stderr on failure
    assert len(results) == 2
    assert results[0].history == results[1].history  # allreduced: the same on both ranks
    h = results[0].history[0]
    assert h["train_samples"] == STEPS * N * 2  # two ranks, N images each per step
    assert h["val_samples"] == 200 and results[0].steps == STEPS
    info = json.loads((out / "train.json").read_text())
    assert info["ranks"] == 2 and info["steps"] == STEPS
    assert load_checkpoint(out / "checkpoint.pt")["world_size"] == 2
    # the two tasks really ran on two different (fake) nodes
    nodes = slurm_cluster.run("sacct", "-n", "-X", "-P", "-o", "NodeList", "-j", job.job_id).stdout.strip()
    assert nodes in ("n[1-2]", "n1,n2"), nodes
