"""The AWS search end to end on the real local SLURM cluster (tiny real trainings).

shared -> 2 rounds x 4 finetunes -> update -> final, once through `sbatch slurm/aws_search.sh`
(shared and final as 2-node Horovod jobs; one finetune task scancel'ed: the round completes on
its quorum) and once through
`python -m hpcaug.submit --stage search` (driver killed, part of the chain cancelled, resumed,
driver killed again and re-attached), and once with `--no-wait` (submit, exit, the chain
runs on without its driver). Then the faults of issue 19 (docs/search.md "Faults"): a
trajectory resubmitted while its round's update is held, or while it runs; a chain cancelled
whole; the shared stage requeued by hand.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
                             CONFIG, "--set", *tiny_sets(data, run), "cluster.nodes=2"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
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
    assert all(a != b for a, b in zip(ids, new_ids, strict=True))

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


def _cli(args: list[str], sets: list[str], config: str = CONFIG, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcaug.submit", *args, "--config", config, "--executor", "slurm",
                           *(["--set", *sets] if sets else [])], cwd=cwd, capture_output=True, text=True, timeout=180)


def _cancel_all(cluster: Any, run: Path) -> None:
    from hpcaug.search.rundir import RunDir

    ids = [r["job_id"] for recs in RunDir(run).all_job_records().values() for r in recs]
    if ids:
        cluster.run("scancel", *ids, check=False)


def test_resubmitted_trajectory_is_counted_by_the_queued_update(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """Round 0's update is held (queued) when `--stage search` runs again and resubmits the round's
    missing trajectory: the held update is made to wait for the new array too, so the result is
    counted, never late. Every submission stays recorded; status never calls a trajectory with a
    result failed, though the task of the first array that had it was cancelled (issue 19.1, 19.3)."""
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=2) + ["aws.quorum=0.5"]
    try:
        first = _cli(["--stage", "search", "--no-wait"], sets)
        assert first.returncode == 0, first.stdout + first.stderr
        # only queued: no summary of a search that has not run, no report yet
        assert "searched policy" not in first.stdout and not (run / "report").exists(), first.stdout
        upd, arr = recorded(run, "update-0"), recorded(run, "finetune-0")
        slurm_cluster.run("scontrol", "hold", upd)
        slurm_cluster.run("scancel", f"{arr}_1")  # still pending behind shared: trajectory 1 never runs
        wait_for(lambda: (run / "rounds/0/results/0.json").exists(), 300, "trajectory 0's result")
        wait_for(lambda: not queued(slurm_cluster, [arr]), 120, "the first array to leave the queue")

        second = _cli(["--stage", "search", "--no-wait"], sets)
        log = second.stdout + second.stderr
        assert second.returncode == 0, log
        new = recorded(run, "finetune-0")
        assert new != arr and f"finetune round 0: trajectories 1: submitted job {new}" in log, log
        assert f"the round's queued update (job {upd}) now waits for it too" in log, log
        assert f"afterany:{new}" in slurm_cluster.run("squeue", "-h", "-j", upd, "-o", "%E").stdout
        slurm_cluster.run("scontrol", "release", upd)  # free to run now, yet it waits for the new array
        wait_for(lambda: (run / "final/done.json").exists(), 300, "the final training")
    finally:
        _cancel_all(slurm_cluster, run)
    u0 = json.loads((run / "rounds/0/update.json").read_text())
    assert u0["trajectories"] == [0, 1] and u0["missing"] == [], u0
    rd = RunDir(run)
    assert rd.late_results(0) == {}
    assert [r["job_id"] for r in rd.job_records("finetune-0")] == [arr, new]
    text = run_status(run, slurm=True)
    assert "rounds: 1 of 1 updated" in text and "FAILED" not in text and "LATE" not in text, text


def test_finetune_not_submitted_while_its_update_runs(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """Round 0's update job is already running when `--stage finetune --round 0` comes: the new
    array would deliver after the update, so it is withdrawn before it runs (no wasted job, no
    uncounted result); status shows the running update and an earlier update submission still
    running (issue 19.1, 19.3). The update jobs are stand-ins under the update's job name."""
    from hpcaug.config import load_config
    from hpcaug.search import aws
    from hpcaug.search.queue import account
    from hpcaug.status import run_status

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=2)
    cfg = load_config(CONFIG, sets)
    rd = aws.open_run(cfg)
    name = f"{cfg.name}-update-0"

    def sleeper() -> str:
        out = slurm_cluster.run("sbatch", "--parsable", "-J", name, "-o", "/dev/null", "--wrap", "sleep 600").stdout
        return out.strip().split(";")[0]

    try:
        stray = sleeper()  # an earlier submission of the update, still running
        rd.record_job("update-0", stray, name=name, trajectories=[], dependency="")
        upd = sleeper()
        rd.record_job("update-0", upd, name=name, trajectories=[], dependency="")
        slurm_cluster.wait_states([stray, upd], done={"RUNNING"}, timeout=120)
        out = _cli(["--stage", "finetune", "--round", "0", "--no-wait"], sets)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log
        assert f"not submitted: update 0 (job {upd}) has already started" in log, log
        (rec,) = rd.job_records("finetune-0")
        assert "has already started" in rec["withdrawn"]
        # account() keeps only rows under the recorded job name: sacct may also know an older job
        # with the same id (a cluster whose ids started again), as CI once showed
        tasks = wait_for(lambda: account({"finetune-0": [rec]}).rows(rec["job_id"]), 60,
                         "sacct to know the withdrawn array")
        assert [t.job_id for t in tasks] == [f"{rec['job_id']}_0", f"{rec['job_id']}_1"], tasks
        assert all(s.state == "CANCELLED" and s.elapsed_s == 0 for s in tasks), tasks  # never ran
        text = run_status(run, slurm=True)
    finally:
        _cancel_all(slurm_cluster, run)
    assert f"update 0: [job {upd}: RUNNING]" in text, text
    assert f"(withdrawn by the submitter: update 0 (job {upd}) has already started)" in text, text
    assert f"also in the queue: job {stray} (update-0, an earlier submission): RUNNING" in text, text
    assert "FAILED" not in text and "stopped" not in text, text


def test_status_says_a_cancelled_chain_is_stopped(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """Every job of the chain cancelled: status says the run is stopped and how to resume, with no
    ETA; the command it prints resumes the run, also from another directory than the one a run
    with the default run_dir (runs/<name>) was started from (issue 19.3)."""
    from hpcaug.search.queue import account
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()
    run = start / "runs" / "demo"  # run_dir "" (the default): runs/<name> under the directory it started from
    sets = [s for s in tiny_sets(data, run, rounds=2, trajectories=2) if not s.startswith("run_dir=")]
    rd = RunDir(run)
    try:
        sub = _cli(["--stage", "search", "--no-wait"], sets, cwd=start)
        assert sub.returncode == 0, sub.stdout + sub.stderr
        ids = [r["job_id"] for recs in rd.all_job_records().values() for r in recs]
        slurm_cluster.run("scancel", *ids)
        wait_for(lambda: not queued(slurm_cluster, ids), 120, "the chain to leave the queue")
        recs = rd.all_job_records()  # account(): only rows under the recorded names (see above)

        def all_cancelled() -> bool:  # every recorded id known to sacct (it may have no row yet), all cancelled
            acct = account(recs)
            return all(acct.knows(j) for j in ids) and all(s.state == "CANCELLED" for s in acct.states.values())

        wait_for(all_cancelled, 60, "sacct")
        text = run_status(run, slurm=True)
        assert "round 0: stopped: 0/2 results" in text and "ETA: none while stopped (2 rounds left)" in text, text
        hint = shlex.join(["python", "-m", "hpcaug.submit", "--stage", "search", "--config", str(rd.config_path),
                           "--set", f"run_dir={run}"])
        assert f"stopped: no job of this run is queued or running and the search is not finished: rerun `{hint}`" \
               f" to resume" in text, text
        again = subprocess.run([sys.executable, *shlex.split(hint)[1:], "--no-wait"], cwd=elsewhere,
                               capture_output=True, text=True, timeout=180)
        assert again.returncode == 0 and "submitted 6 job(s)" in again.stdout, again.stdout + again.stderr
        assert not (elsewhere / "runs").exists() and all(len(v) == 2 for v in rd.all_job_records().values())
        assert "stopped" not in run_status(run, slurm=True)
    finally:
        _cancel_all(slurm_cluster, run)


@pytest.mark.timeout(600)
def test_requeued_shared_stage_counts_every_run(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """The shared stage requeued by hand while it runs (SLURM holds it ~2 min, then it runs again):
    its done.json's wall_s covers the last run only; the report's wall time and GPU-hours and the
    status count both runs, from sacct (issue 19.4)."""
    from hpcaug.report import aws_stage_times, write_report
    from hpcaug.search.queue import account
    from hpcaug.search.rundir import RunDir
    from hpcaug.search.runview import read_run
    from hpcaug.status import run_status

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=2)
    held = "(SLURM holds a requeued job about 2 min before it may start again)"
    try:
        sub = _cli(["--stage", "shared", "--no-wait"], sets)
        assert sub.returncode == 0, sub.stdout + sub.stderr
        jid = recorded(run, "shared")
        slurm_cluster.wait_states([jid], done={"RUNNING"}, timeout=120)
        time.sleep(5)  # a first run of a few seconds
        slurm_cluster.run("scontrol", "requeue", jid)
        # while SLURM holds it (PENDING, reason BeginTime; sacct: an earlier run REQUEUED) status says why
        note = wait_for(lambda: next((ln for ln in run_status(run, slurm=True).splitlines()
                                      if ln.startswith("shared:") and "PENDING; requeued" in ln), None), 60,
                        "sacct to show the held job")
        assert f"[job {jid}: PENDING; requeued 1x] {held}" in note, note
        states = slurm_cluster.wait_states([jid], timeout=500)
    finally:
        _cancel_all(slurm_cluster, run)
    assert states[jid] == "COMPLETED"
    # account(): only rows under the recorded name (sacct may know an older job with the same id)
    runs = account({"shared": RunDir(run).job_records("shared")}).runs_of(jid)
    assert [s.state for s in runs] == ["REQUEUED", "COMPLETED"] and runs[0].elapsed_s > 0, runs
    done = json.loads((run / "shared/done.json").read_text())
    aws_run = read_run(run)
    shared = {s.stage: s for s in aws_stage_times(aws_run, account(aws_run.jobs))}["shared"]
    assert shared.jobs == 2 and shared.wall_s == sum(s.elapsed_s for s in runs) > float(done["wall_s"])
    assert "1 requeued" in shared.source
    md = write_report(run).read_text()
    assert any(ln.startswith("| shared | 2 |") and "sacct, every run, 1 requeued" in ln for ln in md.splitlines()), md
    text = run_status(run, slurm=True)
    assert f"[job {jid}: COMPLETED; requeued 1x]" in text and held not in text, text


# ---------------------------------------------------------------- the submitter's own checks
def _held_stand_in(cluster: Any, run: Path, key: str, name: str) -> str:
    """A real queued job of the run that never starts: held, under step `key`'s job name, and
    recorded as that step's submission (so the submitter treats it as the step still queued)."""
    from hpcaug.search.rundir import RunDir

    out = cluster.run("sbatch", "--parsable", "--hold", "-J", name, "-o", "/dev/null", "--wrap", "sleep 600").stdout
    jid = out.strip().split(";")[0]
    RunDir(run).record_job(key, jid, name=name, trajectories=[], dependency="")
    return jid


def _dependency(cluster: Any, job_id: str) -> str:
    return cluster.run("squeue", "-h", "-j", job_id, "-o", "%E").stdout.strip()


def test_failed_sbatch_cancels_what_the_submission_queued(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """sbatch refuses the final job (it asks for a GPU, and this cluster has none) after the
    round's fine-tune array and update were queued: both are cancelled and their records marked
    withdrawn, the shared job queued by an earlier submission (reused) stays, and the error names
    them (issue 19.2)."""
    from hpcaug.config import load_config
    from hpcaug.search import aws
    from hpcaug.search.rundir import RunDir

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=2)
    cfg = load_config(CONFIG, sets)
    aws.open_run(cfg)
    rd = RunDir(run)
    try:
        shared = _held_stand_in(slurm_cluster, run, "shared", f"{cfg.name}-shared")
        out = _cli(["--stage", "search", "--no-wait"], [*sets, "cluster.gpus_per_node=1", "cluster.finetune_gpus=0"])
        log = out.stdout + out.stderr
        assert out.returncode == 1, log
        assert "Invalid generic resource" in log and "submitting final failed" in log, log
        (arr,), (upd,) = rd.job_records("finetune-0"), rd.job_records("update-0")
        assert "final" not in rd.all_job_records()
        for rec in (arr, upd):
            assert "submitting final failed" in rec["withdrawn"], rec
        assert f"cancelled finetune-0 (job {arr['job_id']}), update-0 (job {upd['job_id']})" in log, log
        assert f"left queued (submitted before): shared (job {shared})" in log, log
        wait_for(lambda: not queued(slurm_cluster, [arr["job_id"], upd["job_id"]]), 60, "the cancelled jobs to go")
        assert queued(slurm_cluster, [shared]) == [shared]
    finally:
        _cancel_all(slurm_cluster, run)


def test_queued_array_is_reused_only_for_the_trajectories_it_covers(slurm_cluster: Any, data: Path,
                                                                  tmp_path: Path) -> None:
    """Round 0's array waits (behind a held shared job) when three of its four tasks are
    cancelled: a resubmission reuses it for the one trajectory it still covers and submits the
    other three, which the queued update then waits for too; a third submission reuses both arrays
    and submits nothing."""
    from hpcaug.config import load_config
    from hpcaug.search import aws

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=4)
    cfg = load_config(CONFIG, sets)
    aws.open_run(cfg)
    try:
        _held_stand_in(slurm_cluster, run, "shared", f"{cfg.name}-shared")
        first = _cli(["--stage", "search", "--no-wait"], sets)
        assert first.returncode == 0, first.stdout + first.stderr
        arr, upd = recorded(run, "finetune-0"), recorded(run, "update-0")
        slurm_cluster.run("scancel", f"{arr}_0", f"{arr}_1", f"{arr}_2")
        tasks = ["squeue", "-h", "-r", "-j", arr, "-t", "PD,R", "-o", "%i"]
        wait_for(lambda: slurm_cluster.run(*tasks).stdout.split() == [f"{arr}_3"], 60, "only task 3 to be left")
        second = _cli(["--stage", "search", "--no-wait"], sets)
        log = second.stdout + second.stderr
        assert second.returncode == 0, log
        new = recorded(run, "finetune-0")
        assert f"finetune round 0: trajectories 3: job {arr} is still queued: reused" in log, log
        assert new != arr and f"finetune round 0: trajectories 0-2: submitted job {new}" in log, log
        assert f"the round's queued update (job {upd}) now waits for it too" in log, log
        assert f"afterany:{new}" in _dependency(slurm_cluster, upd)  # type: ignore[arg-type]
        third = _cli(["--stage", "search", "--no-wait"], sets)
        log3 = third.stdout + third.stderr
        assert third.returncode == 0 and "submitted job" not in log3, log3
        assert f"trajectories 3: job {arr} is still queued: reused" in log3, log3
        assert f"trajectories 0-2: job {new} is still queued: reused" in log3, log3
    finally:
        _cancel_all(slurm_cluster, run)


def test_finetune_and_update_need_the_theta_of_their_round(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """`--stage finetune|update --round 1` before round 0's update: refused, nothing submitted;
    with round 0's update queued (from an earlier submission), accepted, and the new jobs wait
    for it (afterok), the update for the round's queued array too (afterany)."""
    from hpcaug.config import load_config
    from hpcaug.search import aws
    from hpcaug.search.rundir import RunDir

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=2, trajectories=2)
    cfg = load_config(CONFIG, sets)
    aws.open_run(cfg)
    try:
        for stage in ("finetune", "update"):
            out = _cli(["--stage", stage, "--round", "1", "--no-wait"], sets)
            log = out.stdout + out.stderr
            assert out.returncode == 2, log
            assert "round 1 has no theta yet" in log and "--stage update --round 0" in log, log
            assert RunDir(run).all_job_records() == {}
        upd0 = _held_stand_in(slurm_cluster, run, "update-0", f"{cfg.name}-update-0")
        ft = _cli(["--stage", "finetune", "--round", "1", "--no-wait"], sets)
        assert ft.returncode == 0, ft.stdout + ft.stderr
        arr = recorded(run, "finetune-1")
        assert f"afterok:{upd0}" in _dependency(slurm_cluster, arr)  # type: ignore[arg-type]
        up = _cli(["--stage", "update", "--round", "1", "--no-wait"], sets)
        assert up.returncode == 0, up.stdout + up.stderr
        deps = _dependency(slurm_cluster, recorded(run, "update-1"))  # type: ignore[arg-type]
        assert f"afterany:{arr}" in deps and f"afterok:{upd0}" in deps, deps
    finally:
        _cancel_all(slurm_cluster, run)


def test_no_finetune_past_the_last_round(slurm_cluster: Any, data: Path, tmp_path: Path) -> None:
    """A search whose every round is updated (here aws.rounds=1, run in this process):
    `--stage finetune` without --round would fine-tune round 1, which aws.rounds leaves out:
    refused, naming the round and aws.rounds, nothing submitted."""
    from hpcaug.config import load_config
    from hpcaug.search import aws
    from hpcaug.search.rundir import RunDir

    run = tmp_path / "run"
    sets = tiny_sets(data, run, rounds=1, trajectories=1)
    cfg = load_config(CONFIG, sets)
    aws.run_shared(cfg)
    aws.run_finetune(cfg, None, 0)
    aws.run_update(cfg, None, 0)
    assert RunDir(run).rounds_done() == 1
    try:
        for stage in ("finetune", "update"):
            out = _cli(["--stage", stage, "--no-wait"], sets)
            log = out.stdout + out.stderr
            assert out.returncode == 2 and "round 1" in log and "aws.rounds=1" in log, log
        assert RunDir(run).all_job_records() == {}
    finally:
        _cancel_all(slurm_cluster, run)
