"""hpcaug.status on a partial AWS run (real stage functions, synthetic training) and with real sacct."""
from __future__ import annotations

import re
import time
from pathlib import Path

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
    assert line.startswith("ETA: 1 round left x mean round time") and "(file timestamps, 3 rounds)" in line


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
    """Job ids recorded by RunDir.record_job; states from the real cluster's sacct."""
    from hpcaug.search.rundir import RunDir
    from hpcaug.search.queue import accounting_states
    from hpcaug.status import run_status

    c = slurm_cluster
    rd = RunDir(partial_run)

    def sbatch(*args: str) -> str:
        out = c.run("sbatch", "--parsable", "-p", c.partition, "-o", "/dev/null", *args).stdout  # type: ignore[attr-defined]
        return out.strip().split(";")[0]

    shared = sbatch("--wrap", "true")
    held = sbatch("--hold", "--array=0-1", "--wrap", "true")  # the two missing trajectories, queued
    rd.record_job("shared", shared, trajectories=[])
    rd.record_job("finetune-3", held, trajectories=[14, 15])
    c.wait_states([shared])  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while len(accounting_states([held])) < 2 and time.monotonic() < deadline:  # until accounting knows it
            time.sleep(0.5)
        text = run_status(partial_run, slurm=True)
    finally:
        c.run("scancel", held, check=False)  # type: ignore[attr-defined]
    assert re.search(rf"shared: done.*\[job {shared}: COMPLETED\]", text)
    assert f"[job {held}: 2 PENDING]" in text, text
    assert "job states: sacct (2 recorded job(s))" in text, text

    # task 1 (trajectory 15) fails: the status names it
    failing = sbatch("--array=0-1", "--wrap", 'test "$SLURM_ARRAY_TASK_ID" = 0')
    rd.record_job("finetune-3", failing, trajectories=[14, 15])
    c.wait_states([f"{failing}_0", f"{failing}_1"])  # type: ignore[attr-defined]
    text = run_status(partial_run)
    assert f"[job {failing}: 1 COMPLETED, 1 FAILED]" in text
    assert "FAILED tasks: trajectories 15" in text


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
