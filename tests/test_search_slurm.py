"""The AWS search end to end on the real local SLURM cluster (tiny real trainings).

shared -> 2 rounds x 4 finetunes -> update -> final, once through `sbatch slurm/aws_search.sh`
(shared and final as 2-node Horovod jobs; one finetune task scancel'ed: the round completes on
its quorum) and once through
`python -m hpcaug.submit --stage search` (driver killed, part of the chain cancelled, resumed,
driver killed again and re-attached), and once with `--no-wait` (submit, exit, the chain
runs on without its driver).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "demo.yaml")


def tiny_data(src: Path, dst: Path, val_every: int = 5) -> Path:
    """A view of the prepared demo data with a 5x smaller search_val list (validation dominates
    the tiny fine-tunes); images are read from the original directory."""
    meta = json.loads((src / "dataset.json").read_text())
    meta["root"] = str((src / meta["root"]).resolve())
    meta.pop("h5", None)  # read the JPEGs through the lists, not the HDF5 copy
    (dst / "lists").mkdir(parents=True)
    for name in ("classes", "search_train", "train", "val"):
        (dst / "lists" / f"{name}.txt").write_text((src / "lists" / f"{name}.txt").read_text())
    val = (src / "lists" / "search_val.txt").read_text().splitlines()[::val_every]
    (dst / "lists" / "search_val.txt").write_text("\n".join(val) + "\n")
    meta["lists"] = {**meta["lists"], "search_val": len(val)}
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


def tiny_sets(data: Path, run: Path, rounds: int = 2, trajectories: int = 4) -> list[str]:
    return [f"data.dir={data}", f"run_dir={run}", f"aws.rounds={rounds}", f"aws.trajectories_per_round={trajectories}",
            "aws.quorum=0.75", "aws.shared_epochs=1", "aws.finetune_epochs=1", "aws.reward_top_k=1",
            "aws.final_epochs=1", "train.steps_per_epoch=1", "data.batch_size=8", "data.workers=1",
            "train.log_interval=1", "cluster.nodes=1", "cluster.gpus_per_node=0", "cluster.finetune_gpus=0",
            "cluster.cpus_per_task=1", "cluster.time_shared=5", "cluster.time_finetune=5",
            "cluster.time_update=5", "cluster.time_final=5"]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def recorded(run: Path, key: str) -> str | None:
    """The job id of the latest submission of step `key` the submitter recorded."""
    from hpcaug.search.rundir import RunDir

    rec = RunDir(run).recorded_job(key)
    return rec["job_id"] if rec else None


def queued(cluster: Any, job_ids: list[str]) -> list[str]:
    out = cluster.run("squeue", "-h", "-o", "%F", check=False).stdout.split()
    return [j for j in job_ids if j in out]


def check_complete_run(run: Path, missing0: list[int]) -> None:
    u0 = json.loads((run / "rounds/0/update.json").read_text())
    u1 = json.loads((run / "rounds/1/update.json").read_text())
    assert u0["missing"] == missing0 and len(u0["rewards"]) == 4 - len(missing0)
    assert u1["missing"] == [] and u1["trajectories"] == [4, 5, 6, 7]
    for r, n in ((0, 4 - len(missing0)), (1, 4)):
        res = sorted((run / f"rounds/{r}/results").glob("*.json"))
        assert len(res) == n
        for p in res:
            d = json.loads(p.read_text())
            assert 0 <= d["reward"] <= 1 and sum(d["choice_counts"]) == d["num_samples"] > 0
    assert (run / "rounds/2/theta.pt").exists() and (run / "policy.json").exists()
    assert json.loads((run / "final/done.json").read_text())["history"]


@pytest.fixture()
def data(demo_data: Path, tmp_path: Path) -> Path:
    return tiny_data(demo_data, tmp_path / "data")


def test_sbatch_search_with_a_cancelled_finetune(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**slurm_cluster.env, "PYTHON": sys.executable}
    out = tmp_path / "driver.out"
    driver = subprocess.run(["sbatch", "--parsable", f"--output={out}", str(REPO / "slurm" / "aws_search.sh"),
                             CONFIG, "--set", *tiny_sets(data, run), "cluster.nodes=2"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True).stdout.strip()
    # round 0's array is submitted up front and waits for the shared stage: cancel one task
    arr = wait_for(lambda: recorded(run, "finetune-0"), 120, "the finetune-0 array to be submitted")
    assert slurm_cluster.run("squeue", "-h", "-j", f"{arr}_3", "-o", "%T").stdout.strip() == "PENDING"
    slurm_cluster.run("scancel", f"{arr}_3")
    states = slurm_cluster.wait_states([driver], timeout=360)
    log = out.read_text()
    assert states[driver] == "COMPLETED", log
    check_complete_run(run, missing0=[3])
    assert not (run / "rounds/0/results/3.json").exists()
    assert "Searched policy after 2 round(s)" in log and "final training done" in log, log
    # every dependent job was submitted with --kill-on-invalid-dep
    sub = (run / "logs" / recorded(run, "update-0") / f"{recorded(run, 'update-0')}_submission.sh").read_text()  # type: ignore[operator]
    assert "--kill-on-invalid-dep=yes" in sub and f"--dependency=afterany:{arr}" in sub
    # shared and final ran as 2-node Horovod jobs (one rank per node), fine-tunes on one node
    for key in ("shared", "final"):
        jid = recorded(run, key)
        assert "#SBATCH --nodes=2" in (run / "logs" / jid / f"{jid}_submission.sh").read_text()  # type: ignore[operator]
        assert (run / "logs" / jid / f"{jid}_1_log.out").exists()  # type: ignore[operator]


def _driver(sets: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hpcaug.submit", "--stage", "search", "--config", CONFIG,
                             "--executor", "slurm", "--set", *sets], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def test_cli_search_killed_and_resumed(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = tiny_sets(data, run)
    first = _driver(sets, tmp_path / "d1.log")
    try:
        wait_for(lambda: (run / "rounds/0/update.json").exists() or first.poll() is not None, 300, "round 0's update")
        assert first.poll() is None, (tmp_path / "d1.log").read_text()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    shared_mtime = (run / "shared/done.json").stat().st_mtime
    u0 = (run / "rounds/0/update.json").read_text()
    # the chain dies too: cancel round 1's array; its update (afterany) fails its quorum and the
    # final job is removed by --kill-on-invalid-dep, so nothing is left pending
    ids = [recorded(run, k) for k in ("finetune-1", "update-1", "final")]
    slurm_cluster.run("scancel", ids[0])
    wait_for(lambda: not queued(slurm_cluster, ids), 120, "the rest of the chain to leave the queue")
    assert not (run / "rounds/1/update.json").exists()

    # resume: only what is missing is submitted; kill this driver too once all is submitted
    second = _driver(sets, tmp_path / "d2.log")
    try:
        wait_for(lambda: recorded(run, "final") != ids[2] or second.poll() is not None, 120, "the resubmission")
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait()
    log2 = (tmp_path / "d2.log").read_text()
    assert "- shared" not in log2 and "finetune round 0" not in log2, log2
    assert "finetune round 1: trajectories 4-7: submitted" in log2, log2
    new_ids = [recorded(run, k) for k in ("finetune-1", "update-1", "final")]
    assert all(a != b for a, b in zip(ids, new_ids))

    # a third driver re-attaches to the queued jobs (no duplicates) and follows them to the end
    third = subprocess.run([sys.executable, "-m", "hpcaug.submit", "--stage", "search", "--config", CONFIG,
                            "--executor", "slurm", "--set", *sets], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    log3 = third.stdout + third.stderr
    assert third.returncode == 0, log3
    if "nothing to do" not in log3:
        assert "submitted job" not in log3 and "still queued: reused" in log3, log3
    assert [recorded(run, k) for k in ("finetune-1", "update-1", "final")] == new_ids
    check_complete_run(run, missing0=[])
    assert (run / "shared/done.json").stat().st_mtime == shared_mtime
    assert (run / "rounds/0/update.json").read_text() == u0
    assert "Searched policy after 2 round(s)" in log3


def test_cli_no_wait_submits_and_exits(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=2)
    cmd = [sys.executable, "-m", "hpcaug.submit", "--stage", "search", "--config", CONFIG, "--executor", "slurm",
           "--set", *sets]
    sub = subprocess.run([*cmd, "--no-wait"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    # shared, one finetune array, update, final: submitted, and the driver is gone before they ran
    assert "submitted 4 job(s)" in sub.stdout and "--stage status" in sub.stdout, sub.stdout
    ids = [recorded(run, k) for k in ("shared", "finetune-0", "update-0", "final")]
    assert all(ids) and not (run / "final/done.json").exists()
    # (sacct lists an array by its tasks, so the array itself is checked through the update)
    states = slurm_cluster.wait_states([ids[0], ids[2], ids[3]], timeout=300)  # type: ignore[list-item]
    assert set(states.values()) == {"COMPLETED"}, states
    assert json.loads((run / "final/done.json").read_text())["history"]
    status = subprocess.run([sys.executable, "-m", "hpcaug.submit", "--stage", "status", "--config", CONFIG,
                             "--set", *sets], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "rounds: 1 of 1 updated" in status.stdout, status.stdout + status.stderr
