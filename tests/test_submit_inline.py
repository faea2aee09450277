"""The CLI without a cluster: executor inline (a tiny real search in this process, then single
stages rerun by hand: resubmit only the missing trajectory, idempotent update) and executor
local (submitit's LocalExecutor: every step a real subprocess with its own log)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcaug.submit import main

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


def tiny_args(executor: str, data: Path, run: Path, rounds: int) -> list[str]:
    return ["--config", str(REPO / "configs" / "demo.yaml"), "--executor", executor, "--set",
            f"data.dir={data}", f"run_dir={run}", f"aws.rounds={rounds}", "aws.trajectories_per_round=2",
            "aws.quorum=1.0", "aws.shared_epochs=1", "aws.finetune_epochs=1", "aws.final_epochs=1",
            "train.steps_per_epoch=1", "data.batch_size=8", "data.workers=1", "data.backend=torch"]


def test_inline_search_then_single_stages(demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    run = tmp_path / "run"
    base = tiny_args("inline", demo_data, run, rounds=2)
    # round 0 only, through the single-stage commands
    assert main(["--stage", "shared", *base]) == 0
    assert main(["--stage", "finetune", "--round", "0", *base]) == 0
    r0 = json.loads((run / "rounds/0/results/1.json").read_text())
    assert r0["round"] == 0 and len(r0["choice_counts"]) == 1296 and sum(r0["choice_counts"]) == 8
    assert not (run / "rounds/0/finetune/1/checkpoint.pt").exists()  # deleted once the result is written
    (run / "rounds/0/results/1.json").unlink()  # a lost trajectory
    capsys.readouterr()
    assert main(["--stage", "update", "--round", "0", *base]) == 1
    err = capsys.readouterr().err
    assert "only 1 of 2" in err and "--stage finetune --round 0" in err, err
    kept = (run / "rounds/0/results/0.json").stat().st_mtime_ns
    assert main(["--stage", "finetune", "--array", "0-1", *base]) == 0
    out = capsys.readouterr().out
    assert "- finetune round 0: trajectories 1\n" in out, out  # only the missing one
    assert (run / "rounds/0/results/0.json").stat().st_mtime_ns == kept
    assert main(["--stage", "update", *base]) == 0
    theta1 = (run / "rounds/1/theta.pt").read_bytes()
    assert main(["--stage", "update", "--round", "0", *base]) == 0  # idempotent
    assert (run / "rounds/1/theta.pt").read_bytes() == theta1
    # the search resumes from there: round 1 and the final training only
    capsys.readouterr()
    assert main(["--stage", "search", *base]) == 0
    out = capsys.readouterr().out
    assert "- shared" not in out and "finetune round 0" not in out and "- finetune round 1: trajectories 2-3" in out
    # progress lines count rounds from 0, as --round R and rounds/<r>/ do (issue 19.5)
    assert "round 1: 2/2 fine-tunes done" in out and "round 1 updated (2 of 2 rounds): 2 rewards" in out, out
    assert "Searched policy after 2 round(s)" in out and "uniform = 0.00077" in out
    assert f"report: {run}/report/report.md" in out and (run / "report/report.md").is_file()
    tops = [line for line in out.splitlines() if line.startswith("  0.0")]
    assert len(tops) == 10 and " + " in tops[0]
    assert json.loads((run / "final/done.json").read_text())["history"]
    assert main(["--stage", "search", *base]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["--stage", "status", *base]) == 0
    out = capsys.readouterr().out
    assert "rounds: 2 of 2 updated" in out and "Searched policy after 2 round(s)" in out, out
    assert main(["--status", str(run)]) == 0  # from the run dir alone, no config
    assert "rounds: 2 of 2 updated" in capsys.readouterr().out
    assert main(["--stage", "status"]) == 2  # neither --config nor --status
    assert "--status RUN_DIR" in capsys.readouterr().err
    # a fine-tune of an updated round refuses, and names no round beyond the last (0-1 here)
    from hpcaug.config import load_config
    from hpcaug.search import aws

    (run / "rounds/1/results/3.json").unlink()
    cfg = load_config(REPO / "configs" / "demo.yaml", base[base.index("--set") + 1:])
    with pytest.raises(RuntimeError, match=r"round 1 is already updated; trajectory 3 would not count: all 2 rounds "
                                           r"\(0-1\) are updated: raise aws.rounds"):
        aws.run_finetune(cfg, run, 3)


def test_local_executor_search(demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    run = tmp_path / "run"
    args = ["--stage", "search", *tiny_args("local", demo_data, run, rounds=1)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "with executor local" in out and "Searched policy after 1 round(s)" in out, out
    u0 = json.loads((run / "rounds/0/update.json").read_text())
    assert u0["missing"] == [] and len(u0["rewards"]) == 2
    assert json.loads((run / "final/done.json").read_text())["history"]
    # each step ran in its own process, logged by submitit: shared, 2 finetunes, update, final
    logs = sorted(p.name for p in (run / "logs").rglob("*_log.out"))
    assert len(logs) >= 5, logs
    assert main(args) == 0  # rerun: everything is done, nothing is started again
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("schedule", ["continue", "constant"])
def test_finetune_schedule_of_a_real_trajectory(demo_data: Path, tmp_path: Path, schedule: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """aws.finetune_schedule on real data: continue = the shared stage and each fine-tune are the
    two parts of one cosine schedule (the lrs of one uninterrupted run); constant = the fine-tune runs
    at aws.finetune_lr after a shared stage that annealed on its own."""
    from hpcaug.config import load_config
    from hpcaug.search import aws
    from hpcaug.train.loop import LRSchedule, scaled_lr

    monkeypatch.delenv("SLURM_CONF", raising=False)
    sets = tiny_args("inline", demo_data, tmp_path / "run", rounds=1)[5:]  # the --set values
    cfg = load_config(REPO / "configs" / "demo.yaml", [*sets, "aws.shared_epochs=3", "aws.finetune_epochs=2",
                                                       "train.steps_per_epoch=2", f"aws.finetune_schedule={schedule}"])
    shared = aws.run_shared(cfg)
    result = aws.run_finetune(cfg, None, 0)
    got = [h["lr"] for h in shared["history"]] + [h["lr"] for h in result["history"]]
    peak = scaled_lr(cfg, None, 1, cfg.augment.copies)
    if schedule == "continue":
        whole = LRSchedule(peak, 5 * 2, 1, "cosine")  # warmup_epochs 0.5 of 2 steps per epoch
        assert got == pytest.approx([whole(2 * e + 1) for e in range(5)])
    else:
        alone = LRSchedule(peak, 3 * 2, 1, "cosine")
        ft = scaled_lr(cfg, cfg.aws.finetune_lr, 1, cfg.augment.copies)
        assert got == pytest.approx([alone(2 * e + 1) for e in range(3)] + [ft, ft])
    assert result["reward"] > 0 and sum(result["choice_counts"]) == 2 * 2 * 8
