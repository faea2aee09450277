"""The local SLURM cluster end to end, through submitit as the stages use it (real daemons, sacct)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from _fixtures_cluster import LOCAL

pytestmark = pytest.mark.slurm

# Jobs unpickle these functions in a fresh interpreter whose sys.path lacks tests/: ship the
# functions by value instead of as references to an importable module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _square_and_record(x: int, out_dir: str) -> int:
    Path(out_dir, f"rec_{x}.txt").write_text(f"{x * x} {os.environ['SLURMD_NODENAME']}")
    return x * x


def _sum_records(out_dir: str) -> tuple[int, list[str]]:
    recs = [p.read_text().split() for p in sorted(Path(out_dir).glob("rec_*.txt"))]
    return sum(int(v) for v, _ in recs), sorted({node for _, node in recs})


def _where_am_i() -> tuple[str, int, int, str]:
    env = submitit.JobEnvironment()
    return os.environ["SLURMD_NODENAME"], env.global_rank, env.num_tasks, os.environ["SLURM_JOB_NUM_NODES"]


def _sleep_if_one(i: int) -> int:
    if i == 1:
        time.sleep(600)
    return i


def _fail() -> None:
    raise ValueError("this job fails on purpose")


def _touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


def test_map_array_then_dependent_job(slurm_cluster, tmp_path):
    ex = slurm_cluster.executor(tmp_path / "logs", cpus_per_task=1, slurm_array_parallelism=8)
    xs = [2, 3, 4, 5]
    jobs = ex.map_array(_square_and_record, xs, [str(tmp_path)] * len(xs))
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(len(xs))]
    # afterok on the array id waits for every task: the dependent must see all 4 records
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{array_id}"})
    dep = ex.submit(_sum_records, str(tmp_path))
    total, nodes = dep.result()
    assert total == 4 + 9 + 16 + 25
    assert set(nodes) <= {f"n{i}" for i in range(1, slurm_cluster.nodes + 1)}
    assert [j.result() for j in jobs] == [4, 9, 16, 25]
    states = slurm_cluster.wait_states([j.job_id for j in jobs] + [dep.job_id], timeout=60)
    assert set(states.values()) == {"COMPLETED"}, states


def test_two_node_job_runs_one_task_per_node(slurm_cluster, tmp_path):
    assert slurm_cluster.nodes >= 2, "start the cluster with NODES=2 (scripts/test.sh does)"
    ex = slurm_cluster.executor(tmp_path / "logs", nodes=2, tasks_per_node=1, cpus_per_task=1)
    job = ex.submit(_where_am_i)
    results = job.results()  # submitit srun's the function once per task
    assert sorted(r[0] for r in results) == ["n1", "n2"]
    assert sorted(r[1] for r in results) == [0, 1]
    assert all(r[2] == 2 and r[3] == "2" for r in results)


def test_srun_spans_every_node(slurm_cluster):
    n = slurm_cluster.nodes
    out = slurm_cluster.run("srun", f"-N{n}", f"--ntasks={n}", "-l", "printenv", "SLURMD_NODENAME").stdout
    assert sorted(line.split(": ")[1] for line in out.splitlines()) == [f"n{i}" for i in range(1, n + 1)]


def test_scancel_one_array_task(slurm_cluster, tmp_path):
    ex = slurm_cluster.executor(tmp_path / "logs", cpus_per_task=1, slurm_array_parallelism=8)
    jobs = ex.map_array(_sleep_if_one, [0, 1, 2])
    victim = jobs[1].job_id
    slurm_cluster.wait_states([victim], done={"RUNNING"}, timeout=60)
    slurm_cluster.run("scancel", victim)
    assert [jobs[0].result(), jobs[2].result()] == [0, 2]
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        jobs[1].result()
    states = slurm_cluster.wait_states([j.job_id for j in jobs], timeout=60)
    assert states == {jobs[0].job_id: "COMPLETED", victim: "CANCELLED", jobs[2].job_id: "COMPLETED"}
    assert jobs[1].state.startswith("CANCELLED")


def test_afterok_dependent_of_failed_job_does_not_pend(slurm_cluster, tmp_path):
    ex = slurm_cluster.executor(tmp_path / "logs")
    bad = ex.submit(_fail)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{bad.job_id}"})
    marker = tmp_path / "dependent_ran"
    dep = ex.submit(_touch, str(marker))
    with pytest.raises(submitit.core.utils.FailedJobError, match="fails on purpose"):
        bad.result()
    # kill_invalid_depend in slurm.conf: the dependent is cancelled instead of pending forever
    states = slurm_cluster.wait_states([bad.job_id, dep.job_id], timeout=60)
    assert states == {bad.job_id: "FAILED", dep.job_id: "CANCELLED"}
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        dep.result()
    assert not marker.exists()


def test_start_is_idempotent(slurm_cluster):
    """A second start.sh on a running cluster restarts nothing and returns quickly."""
    base = slurm_cluster.conf.parent.parent
    pidfiles = sorted(base.glob("run/*.pid")) + [base / "db/mysqld.pid", base / "munge/munged.pid"]
    before = {p.name: p.read_text() for p in pidfiles}
    env = {**slurm_cluster.env, "BASE": str(base), "NODES": str(slurm_cluster.nodes),
           "PARTITION": slurm_cluster.partition, "CPUS": str(slurm_cluster.cpus_per_node)}
    t0 = time.monotonic()
    proc = subprocess.run([str(LOCAL / "start.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 30
    assert "starting" not in proc.stdout, proc.stdout
    assert {p.name: p.read_text() for p in pidfiles} == before


def _pkill9(pattern: str) -> None:
    subprocess.run(["pkill", "-9", "-f", pattern], check=False)


def test_start_after_unclean_stop_cancels_the_dead_jobs():
    """Every daemon SIGKILLed with a job running and one pending (a reboot, a killed CI session):
    the saved state brings both back on the next start, the running one holding its node with no
    process behind it. start.sh cancels them, and a new job runs at once. A cluster of its own
    (own BASE and ports, 1 node, no accounting): the shared one is left alone."""
    base = Path(tempfile.mkdtemp(prefix="hpcaug-cold-", dir="/tmp"))  # short: unix socket paths
    env = {**os.environ, "BASE": str(base), "NODES": "1", "ACCOUNTING": "0", "CPUS": "1",
           "CTLD_PORT": "16917", "SLURMD_PORT0": "17101", "SLURM_CONF": str(base / "etc/slurm.conf")}

    def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        first = run(str(LOCAL / "start.sh"), timeout=180)
        assert first.returncode == 0, first.stdout + first.stderr
        running = run("sbatch", "--parsable", "--wrap", "sleep 613").stdout.strip()
        pending = run("sbatch", "--parsable", "-d", f"afterok:{running}", "--wrap", "true").stdout.strip()
        job_state = base / "state/ctld/job_state"  # polled until both jobs are saved to disk
        deadline = time.monotonic() + 60
        while run("squeue", "-h", "-j", running, "-o", "%T").stdout.strip() != "RUNNING" or \
                f"afterok:{running}".encode() not in (job_state.read_bytes() if job_state.exists() else b""):
            assert time.monotonic() < deadline, run("squeue").stdout
            time.sleep(0.5)
        # the crash: daemons, the job's step daemon and its processes, no pid file removed
        for pf in [*base.glob("run/*.pid"), base / "munge/munged.pid"]:
            os.kill(int(pf.read_text()), signal.SIGKILL)
        _pkill9(rf"slurmstepd: \[{running}\.")
        _pkill9(f"{base}/state/slurmd")
        _pkill9("sleep 613")
        second = run(str(LOCAL / "start.sh"), timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        assert run("squeue", "-h").stdout.strip() == "", second.stdout
        assert run("sbatch", "--wait", "--wrap", "true", timeout=60).returncode == 0
        assert "left from an unclean stop" in second.stdout, second.stdout
        assert f" {running} " in second.stdout and f" {pending} " in second.stdout, second.stdout
        # a clean restart has nothing to cancel
        assert run(str(LOCAL / "stop.sh")).returncode == 0
        third = run(str(LOCAL / "start.sh"), timeout=180)
        assert third.returncode == 0 and "unclean" not in third.stdout, third.stdout + third.stderr
    finally:
        run(str(LOCAL / "stop.sh"), "--purge", timeout=120)
        shutil.rmtree(base, ignore_errors=True)
