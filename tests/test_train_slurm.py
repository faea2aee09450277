"""A 2-node job on the local SLURM cluster through submitit: `srun` starts one task per node,
the tasks find each other through the Horovod gloo rendezvous hosted by rank 0 (no
horovodrun, no MPI) and train the tiny model on the demo data. Mid-run the job gets
submitit's time-out signal: `CheckpointableTraining.checkpoint` requeues it, and the requeued
job resumes from the last checkpoint and finishes with the steps of an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcaug.config import load_config
from hpcaug.train import load_checkpoint
from hpcaug.train.stages import CheckpointableTraining, run_train

REPO = Path(__file__).resolve().parents[1]
N, STEPS, EPOCHS = 16, 4, 2
# the torch loader backend here (the Horovod tests use DALI): its forked DataLoader workers
# receive SLURM's signals too, which is what CheckpointableTraining must cope with


def _global_step(ckpt: Path) -> int:
    try:
        return int(load_checkpoint(ckpt)["global_step"])
    except (FileNotFoundError, RuntimeError):  # not written yet
        return 0


def test_two_node_horovod_job_requeued_and_resumed(tmp_path: Path, slurm_cluster, demo_data: Path) -> None:
    assert slurm_cluster.nodes >= 2, "the slurm_cluster fixture must offer 2 nodes"
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"data.dir={demo_data}", "data.backend=torch", f"data.batch_size={N}", "data.workers=1",
        f"train.steps_per_epoch={STEPS}", "train.log_interval=1", "train.checkpoint_every_steps=2",
        "augment.copies=1", "dist.backend=horovod"])
    out = tmp_path / "train"
    ex = slurm_cluster.executor(tmp_path / "logs", nodes=2, tasks_per_node=1, cpus_per_task=1)
    job = ex.submit(CheckpointableTraining(run_train), cfg, str(out), "uniform", epochs=EPOCHS)

    # wait for the first checkpoint (step 2 of 8), then send the time-out signal (USR2)
    deadline = time.monotonic() + 120
    while _global_step(out / "checkpoint.pt") < 2:
        assert time.monotonic() < deadline and not job.done(), f"no checkpoint: {job.stderr()}"
        time.sleep(0.2)
    job._interrupt(timeout=True)
    # SLURM holds a requeued job for ~2 minutes (its BeginTime); release it at once
    deadline = time.monotonic() + 60
    while True:
        state = slurm_cluster.run("squeue", "-h", "-o", "%T %r", "-j", job.job_id, check=False).stdout.split()
        if state[:1] == ["PENDING"]:
            slurm_cluster.run("scontrol", "update", f"JobId={job.job_id}", "StartTime=now")
            break
        assert time.monotonic() < deadline, f"job {job.job_id} was not requeued: {state} {job.stderr()}"
        time.sleep(0.2)

    results = job.results()  # one TrainResult per task (rank); raises with the job's stderr on failure
    assert len(results) == 2
    assert results[0].history == results[1].history  # allreduced: the same on both ranks
    assert results[0].steps == EPOCHS * STEPS and len(results[0].history) == EPOCHS
    assert [h["train_samples"] for h in results[0].history] == [STEPS * N * 2] * EPOCHS  # 2 ranks x N
    assert results[0].history[-1]["val_samples"] == 200
    info = json.loads((out / "train.json").read_text())
    assert info["ranks"] == 2 and info["steps"] == EPOCHS * STEPS
    # it really was requeued and resumed from a checkpoint, on two (fake) nodes
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob(f"{job.job_id}_0_log.*"))
    assert "Requeued job" in log and "resuming" in log, log[-3000:]
    slurm_cluster.wait_states([job.job_id], {"COMPLETED"}, timeout=60)
    sacct = slurm_cluster.run("sacct", "-n", "-X", "-P", "-D", "-o", "NodeList,State", "-j", job.job_id).stdout
    assert "REQUEUED" in sacct and "COMPLETED" in sacct, sacct
    assert any(line.split("|")[0] in ("n[1-2]", "n1,n2") for line in sacct.splitlines()), sacct


RENDEZVOUS_WORKER = r"""
import os, time
if os.environ["SLURM_PROCID"] == "0":
    time.sleep(4)  # rank 0 is slow to start: the other rank must wait for its rendezvous server
import torch
from hpcaug.train.dist import init_dist
d = init_dist()
assert init_dist() is d  # a second stage in the same process reuses the rendezvous
print("RANK", d.rank, d.size, float(d.allreduce(torch.ones(1))[0]), flush=True)
if d.rank == 1:
    time.sleep(2)  # rank 1 finalizes last: rank 0 must keep serving until it has
"""


def test_srun_rendezvous_races(tmp_path: Path, slurm_cluster) -> None:
    """Plain `srun` over 2 nodes: start-up and shutdown races of the rank-0 gloo rendezvous."""
    script = tmp_path / "w.py"
    script.write_text(RENDEZVOUS_WORKER)
    env = {**slurm_cluster.env, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        ["timeout", "90", "srun", "-N2", "--ntasks-per-node=1", "-c1", "-t2", sys.executable, str(script)],
        env=env, capture_output=True, text=True, timeout=120, cwd=os.fspath(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert sorted(line for line in p.stdout.splitlines() if line.startswith("RANK")) == \
        ["RANK 0 2 2.0", "RANK 1 2 2.0"], p.stdout + p.stderr[-2000:]


TASK_REPORT = """#!/bin/sh
# stands in for the interpreter (PYTHON=...): reports what the task was given, ignores its arguments
exec python3 -c 'import os; e = os.environ; print("TASK", e["SLURM_PROCID"], e["SLURMD_NODENAME"],
                                                    len(os.sched_getaffinity(0)), flush=True)'
"""


@pytest.mark.parametrize("script", ["final_train.sh", "advaa_train.sh"])
def test_sbatch_script_gives_every_rank_its_cpus(tmp_path: Path, slurm_cluster, script: str) -> None:
    """From Slurm 22.05 srun does not take the job's --cpus-per-task: the scripts pass it on
    (and bind cores), so each of the 2 ranks gets its 2 CPUs. Checked in SLURM's accounting of
    the srun step (the command it ran, the CPUs it allocated) and in what each task may use
    (this cluster runs without an affinity plugin, so the tasks' CPU masks are not narrowed)."""
    fake = tmp_path / "python"
    fake.write_text(TASK_REPORT)
    fake.chmod(0o755)
    env = {**slurm_cluster.env, "PYTHON": str(fake), "CONFIG": "configs/demo.yaml"}
    args = ["configs/demo.yaml", "uniform"] if script == "final_train.sh" else []
    p = subprocess.run(["sbatch", "--parsable", "-p", slurm_cluster.partition, "--time=2", "--nodes=2",
                        "--ntasks-per-node=1", "--cpus-per-task=2", "--gpus-per-node=0",
                        f"--output={tmp_path}/slurm-%j.out", f"slurm/{script}", *args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    slurm_cluster.wait_states([job], {"COMPLETED"}, timeout=120)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert f"{script}: srun --kill-on-bad-exit=1 --cpus-per-task=2 --cpu-bind=cores " in log, log
    tasks = sorted(line.split()[1:] for line in log.splitlines() if line.startswith("TASK "))
    assert [t[0] for t in tasks] == ["0", "1"] and {t[1] for t in tasks} == {"n1", "n2"}, log
    assert all(int(t[2]) >= 2 for t in tasks), log  # each task may use (at least) its 2 CPUs
    # SLURM's own record of the step: the srun line it ran, and 2 tasks x 2 CPUs
    steps = slurm_cluster.run("sacct", "-n", "-P", "-j", job, "-o", "JobID,AllocCPUS,NTasks,SubmitLine").stdout
    step0 = [line.split("|") for line in steps.splitlines() if line.startswith(f"{job}.0|")]
    assert step0 and step0[0][1:3] == ["4", "2"], steps
    assert "--cpus-per-task=2" in step0[0][3] and "--cpu-bind=cores" in step0[0][3], steps


def test_submitit_stage_jobs_give_every_rank_its_cpus(tmp_path: Path, slurm_cluster) -> None:
    """The stages' submitit jobs (hpcaug.search.jobs.make_executor) have the same srun problem:
    submitit's own srun line carries the job's --cpus-per-task, binds cores and stops the step
    when one rank fails. A 2-node final-stage executor (1 task x 2 CPUs per node), checked in
    SLURM's record of the step; the sbatch text of a GPU stage also binds the closest GPUs."""
    from hpcaug.search import jobs
    from hpcaug.search.rundir import RunDir

    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"run_dir={tmp_path}", "cluster.nodes=2", "cluster.cpus_per_task=2", "cluster.time_final=2",
        f"cluster.partition={slurm_cluster.partition}"])
    ex = jobs.make_executor(cfg, RunDir(tmp_path), "slurm", jobs.Step("final"), "slurm")
    job = ex.submit(os.sched_getaffinity, 0)
    cpus = job.results()  # one result per task
    assert len(cpus) == 2 and all(len(c) >= 2 for c in cpus), cpus
    slurm_cluster.wait_states([job.job_id], {"COMPLETED"}, timeout=120)
    steps = slurm_cluster.run("sacct", "-n", "-P", "-j", job.job_id, "-o", "JobID,AllocCPUS,NTasks,SubmitLine").stdout
    step0 = [line.split("|") for line in steps.splitlines() if line.startswith(f"{job.job_id}.0|")]
    assert step0 and step0[0][1:3] == ["4", "2"], steps
    for arg in ("--cpus-per-task=2", "--cpu-bind=cores", "--kill-on-bad-exit=1"):
        assert arg in step0[0][3], steps

    gpu = load_config(REPO / "configs" / "demo.yaml", [f"run_dir={tmp_path}", "cluster.gpus_per_node=4",
                                                       "cluster.cpus_per_task=8"])
    text = jobs.make_executor(gpu, RunDir(tmp_path), "slurm", jobs.Step("shared"), "slurm")._executor \
        ._make_submission_file_text("cmd", "uid")
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    for arg in ("--cpus-per-task=8", "--cpu-bind=cores", "--kill-on-bad-exit=1", "--gpu-bind=closest"):
        assert arg in srun, text
