"""hpcaug.status on a partial AWS run (real stage functions, synthetic training) and with real sacct."""
from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from test_report_aws import build_aws_run


@pytest.fixture()
def partial_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """3 of 4 rounds updated (trajectory 1 of round 0 lost), round 3 has results for 12 and 13."""
    run = tmp_path / "run"
    build_aws_run(run, monkeypatch, rounds_to_run=3, partial=2, lost=(1,))
    return run


def test_status_of_a_partial_run(partial_run: Path) -> None:
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    rd = RunDir(partial_run)
    text = run_status(partial_run, slurm=False)
    assert "AWS search `report-test`" in text
    assert "shared: done" in text
    assert "rounds: 3 of 4 updated" in text
    assert "round 0: updated, 3/4 rewards" in text and "lost trajectories 1 (failed or killed" in text
    assert "round 1: updated, 4/4 rewards" in text
    assert "round 3: running: 2/4 results (the update needs 2); missing 14-15" in text
    assert "final: not started" in text
    assert "job states: not queried" in text
    # the mean printed for round 2 is update.json's
    import json

    u = json.loads(rd.update_path(2).read_text())
    assert f"mean {sum(u['rewards']) / 4:.4f}" in text
    # ETA: 1 round left; `now` far after the round started -> nothing left of the current round
    eta = run_status(partial_run, slurm=False, now=rd.update_path(2).stat().st_mtime + 3600).splitlines()
    line = next(ln for ln in eta if ln.startswith("ETA:"))
    assert line.startswith("ETA: 1 round left x median round time") and "(file timestamps, 3 rounds)" in line


def test_eta_does_not_jump_on_a_round_slowed_by_a_requeue(partial_run: Path) -> None:
    """Rounds of 10 s, 10 s and 130 s (a task requeued: SLURM holds it ~2 min): the ETA comes from
    the median round time (10 s), not the mean (50 s) the one slow round would drag up (issue 19.4)."""
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    rd = RunDir(partial_run)
    t0 = rd.shared_done.stat().st_mtime
    for r, t in ((0, 10.0), (1, 20.0), (2, 150.0)):
        os.utime(rd.update_path(r), (t0 + t, t0 + t))
    text = run_status(partial_run, slurm=False, now=t0 + 151.0)
    line = next(ln for ln in text.splitlines() if ln.startswith("ETA:"))
    assert "median round time 10.0 s (file timestamps, 3 rounds) = about 9.0 s more" in line, line


def test_late_result_is_kept_and_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 0's update finishes while trajectory 3 still trains (a resubmitted task racing a queued
    update, issue 19.1): the result goes to rounds/0/late/, never silently into results/ after the
    update; status and report name it."""
    import hpcaug.train.loop as loop
    from hpcaug.report import write_report
    from hpcaug.search import aws
    from hpcaug.search.rundir import RunDir, read_json
    from hpcaug.status import run_status

    run = tmp_path / "run"
    cfg = build_aws_run(run, monkeypatch, rounds_to_run=0, partial=3)  # round 0: 3 of 4 results, quorum 2
    synthetic = loop.train

    def train_while_the_update_runs(*args: Any, **kwargs: Any) -> Any:
        res = synthetic(*args, **kwargs)
        aws.run_update(cfg, run, 0)  # the round's update job ran meanwhile
        return res

    monkeypatch.setattr(loop, "train", train_while_the_update_runs)
    result = aws.run_finetune(cfg, run, 3)
    rd = RunDir(run)
    assert not rd.has_result(0, 3) and rd.late_results(0) == {3: result}
    assert read_json(rd.update_path(0))["trajectories"] == [0, 1, 2]
    text = run_status(run, slurm=False)
    assert f"LATE results: trajectories 3 finished after the update: kept in {rd.late_dir(0)}, not counted" in text
    assert "LATE results of trajectories 3" in write_report(run, tmp_path / "rep").read_text()
    # a fine-tune started after the update refuses, naming the next round (0-based, as --round)
    with pytest.raises(RuntimeError,
                       match=r"round 0 is already updated.*the next round is 1: `--stage finetune --round 1`"):
        aws.run_finetune(cfg, run, 3)


def test_slurm_output_parsing() -> None:
    from hpcaug.search.queue import parse_elapsed, parse_sacct, parse_squeue

    assert parse_elapsed("1-02:03:04") == ((26 * 60) + 3) * 60 + 4 and parse_elapsed("05:06") == 306
    assert parse_elapsed("") == 0.0 and parse_elapsed("INVALID") == 0.0
    acct = parse_sacct("12|COMPLETED|0:0|00:00:05|demo-shared\n13_[2-6:2%1]|PENDING|0:0|00:00:00|demo-finetune-0\n"
                       "13_0|CANCELLED by 0|0:0|00:00:01|demo-finetune-0\n")
    assert sorted(acct) == ["12", "13_0", "13_2", "13_4", "13_6"]
    assert acct["13_0"].state == "CANCELLED" and acct["13_0"].failed and acct["13_4"].waiting
    assert acct["12"].completed and acct["12"].elapsed_s == 5 and acct["13_6"].task == 6
    q = parse_squeue("13_0|13|RUNNING|None|demo-finetune-0\n13_1|13|PENDING|Dependency|demo-finetune-0\n"
                     "14|14|PENDING|JobHeldUser|demo-update-0\n")
    assert q["13"].alive and q["13_1"].reason == "Dependency" and q["14"].waiting and q["14"].name == "demo-update-0"


def test_status_without_slurm_and_cli(partial_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpcaug.status import main, run_status

    assert "job states: none recorded (inline or local executor)" in run_status(partial_run)
    with pytest.raises(RuntimeError, match="no SLURM job ids are recorded"):
        run_status(partial_run, slurm=True)
    assert main([str(partial_run), "--no-slurm"]) == 0
    assert "rounds: 3 of 4 updated" in capsys.readouterr().out
    assert main([str(partial_run.parent / "missing")]) == 2
    assert "not an hpcaug run dir" in capsys.readouterr().err


def test_status_with_sacct(partial_run: Path, slurm_cluster: object) -> None:
    """Job ids recorded by RunDir.record_job with the job names they were submitted under (as the
    submitter records them: account() drops sacct rows of an older job with the same id); states
    from the real cluster's sacct."""
    from hpcaug.search.queue import account
    from hpcaug.search.rundir import RunDir, read_json, write_json
    from hpcaug.status import run_status

    c = slurm_cluster
    rd = RunDir(partial_run)

    def sbatch(key: str, *args: str) -> str:
        name = f"report-test-{key}"
        out = c.run("sbatch", "--parsable", "-p", c.partition, "-o", "/dev/null", "-J", name,  # type: ignore[attr-defined]
                    *args).stdout
        job_id = out.strip().split(";")[0]
        rd.record_job(key, job_id, name=name, trajectories=[] if key == "shared" else [14, 15])
        return job_id

    shared = sbatch("shared", "--wrap", "true")
    held = sbatch("finetune-3", "--hold", "--array=0-1", "--wrap", "true")  # the two missing trajectories, queued
    c.wait_states([shared])  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while len(account(rd.all_job_records()).rows(held)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)  # until accounting knows both tasks
        text = run_status(partial_run, slurm=True)
    finally:
        c.run("scancel", held, check=False)  # type: ignore[attr-defined]
    assert re.search(rf"shared: done.*\[job {shared}: COMPLETED\]", text)
    assert f"[job {held}: 2 PENDING]" in text, text
    assert "job states: sacct (2 recorded submission(s))" in text, text

    # task 1 (trajectory 15) fails: the status names it
    failing = sbatch("finetune-3", "--array=0-1", "--wrap", 'test "$SLURM_ARRAY_TASK_ID" = 0')
    c.wait_states([f"{failing}_0", f"{failing}_1"])  # type: ignore[attr-defined]
    text = run_status(partial_run)
    assert f"[job {failing}: 1 COMPLETED, 1 FAILED]" in text
    assert "FAILED tasks: trajectories 15" in text
    # every submission is kept: the first (cancelled) array is still recorded beside the second
    assert [r["job_id"] for r in rd.job_records("finetune-3")] == [held, failing]
    # trajectory 15 delivered after all (e.g. by a resubmission): a result file is never "failed"
    write_json(rd.result_path(3, 15), read_json(rd.result_path(3, 13)))
    text = run_status(partial_run)
    assert "FAILED" not in text.replace(f"[job {failing}: 1 COMPLETED, 1 FAILED]", ""), text
    # and nothing of the run is queued any more: the chain is stopped, the status says how to resume
    assert "round 3: stopped: 3/4 results" in text and "ETA: none while stopped" in text, text
    # the command resumes this run from any directory: absolute paths, the run dir fixed
    hint = shlex.join(["python", "-m", "hpcaug.submit", "--stage", "search", "--config", str(rd.config_path),
                       "--set", f"run_dir={rd.root}"])
    assert rd.root.is_absolute() and f"stopped: no job of this run is queued or running and the search is not " \
           f"finished: rerun `{hint}` to resume" in text, text


def test_sacct_unreachable_is_reported(partial_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    RunDir(partial_run).record_job("shared", "12345")
    monkeypatch.setenv("PATH", str(partial_run))  # no sacct on PATH
    text = run_status(partial_run)
    assert "SLURM not reachable (sacct is not on PATH): from the run dir only" in text
    assert "[job 12345]" in text
    with pytest.raises(RuntimeError, match="SLURM is not reachable"):
        run_status(partial_run, slurm=True)
