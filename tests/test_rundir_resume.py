"""A run dir across resumes: config.json follows the keys a resume may change, old policy
spellings do not block a resume, and job records of run dirs from before jobs/<key>/ are read."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpcaug.config import Config, load_config
from hpcaug.submit import main

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


def _cfg(sets: list[str]) -> Config:
    return load_config(CONFIG, sets)


def tiny_sets(data: Path, run: Path, rounds: int) -> list[str]:
    return [f"data.dir={data}", f"run_dir={run}", f"aws.rounds={rounds}", "aws.trajectories_per_round=2",
            "aws.quorum=1.0", "aws.shared_epochs=1", "aws.finetune_epochs=1", "aws.final_epochs=1",
            "train.steps_per_epoch=1", "data.batch_size=8", "data.workers=1", "data.backend=torch"]


def test_resume_rewrites_the_keys_it_may_change(demo_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run resumed with more rounds and a lower quorum: config.json, and so status, say so
    (before, status kept the first start's aws.rounds and called the search done early)."""
    from hpcaug.search.rundir import RunDir, read_json
    from hpcaug.status import run_status

    monkeypatch.delenv("SLURM_CONF", raising=False)
    run = tmp_path / "run"
    sets = tiny_sets(demo_data, run, rounds=1)
    assert main(["--stage", "shared", "--config", str(CONFIG), "--executor", "inline", "--set", *sets]) == 0
    assert "rounds: 0 of 1 updated" in run_status(run, slurm=False)
    # the resume: the shared stage is done, so nothing runs, but the run goes on with the new keys
    assert main(["--stage", "shared", "--config", str(CONFIG), "--executor", "inline", "--set", *sets,
                 "aws.rounds=3", "aws.quorum=0.5", "data.workers=2"]) == 0
    cfg = read_json(RunDir(run).config_path)
    assert cfg["aws"]["rounds"] == 3 and cfg["aws"]["quorum"] == 0.5 and cfg["data"]["workers"] == 2, cfg
    text = run_status(run, slurm=False)
    assert "rounds: 0 of 3 updated" in text and "round 0: started: 0/2 results (the update needs 1)" in text, text
    # a job submitted before the resume (it carries the old config) does not put the old keys back
    from hpcaug.search import aws

    aws.run_shared(_cfg(sets))
    assert read_json(RunDir(run).config_path) == cfg
    # a refused resume changes nothing
    with pytest.raises(ValueError, match="aws.finetune_lr"):
        RunDir(run).init(_cfg(sets + ["aws.rounds=5", "aws.finetune_lr=0.5"]), 1)
    assert read_json(RunDir(run).config_path) == cfg


@pytest.mark.parametrize(("old", "n_m", "new"), [
    ("autoaugment_imagenet", None, "autoaugment-imagenet"),
    ("randaugment", None, "randaugment-n2-m9"),  # n and m came from the keys' defaults
    ("randaugment", (3, 5), "randaugment-n3-m5"),
])
def test_old_policy_spellings_resume(tmp_path: Path, old: str, n_m: tuple[int, int] | None, new: str) -> None:
    """A run dir started when augment.policy was spelled autoaugment_imagenet / randaugment resumes
    with the same policy's current name, not with another policy; config.json then holds the
    current spelling (a valid --config again)."""
    from hpcaug.search import aws
    from hpcaug.search.rundir import RunDir, read_json

    sets = [f"run_dir={tmp_path / 'run'}", f"augment.policy={new}"]
    rd = aws.open_run(_cfg(sets))
    started = read_json(rd.config_path)
    started["augment"]["policy"] = old
    if n_m is not None:
        started["augment"]["randaugment_n"], started["augment"]["randaugment_m"] = n_m
    rd.config_path.write_text(json.dumps(started))
    other = "randaugment-n1-m9" if old == "randaugment" else "trivialaugment"
    with pytest.raises(ValueError, match=f"augment.policy: run has '{new}', config has '{other}'"):
        aws.open_run(_cfg([sets[0], f"augment.policy={other}"]))
    aws.open_run(_cfg(sets))
    assert read_json(RunDir(tmp_path / "run").config_path)["augment"]["policy"] == new


def test_legacy_job_record_files_are_read(tmp_path: Path) -> None:
    """Run dirs from before jobs/<key>/ kept one jobs/<key>.json per step: each is read as one
    submission (so a resume does not resubmit a step still queued, and status names its job)."""
    from hpcaug.search.rundir import RunDir, write_json
    from hpcaug.search.runview import read_run
    from hpcaug.status import run_status

    rd = RunDir(tmp_path / "run")
    rd.init(_cfg([f"run_dir={rd.root}", "aws.trajectories_per_round=2"]), 1)
    t0 = time.time() - 100
    write_json(rd.jobs_dir / "shared.json", {"job_id": "812", "name": "demo-shared", "trajectories": [],
                                             "dependency": "", "submitted": t0})
    write_json(rd.jobs_dir / "finetune-0.json", {"job_id": "813", "name": "demo-finetune-0", "trajectories": [0, 1],
                                                 "dependency": "afterok:812", "submitted": t0 + 1})
    rd.record_job("finetune-0", "900", name="demo-finetune-0", trajectories=[1], dependency="")
    assert rd.recorded_job("shared") == {"job_id": "812", "name": "demo-shared", "trajectories": [],
                                         "dependency": "", "submitted": t0}
    assert [r["job_id"] for r in rd.job_records("finetune-0")] == ["813", "900"]
    assert {k: [r["job_id"] for r in v] for k, v in rd.all_job_records().items()} == {
        "finetune-0": ["813", "900"], "shared": ["812"]}
    # withdrawing the legacy submission records it under jobs/<key>/, read once, not twice
    rd.withdraw_job("finetune-0", "813", "a test")
    recs = rd.job_records("finetune-0")
    assert [(r["job_id"], r.get("withdrawn")) for r in recs] == [("813", "a test"), ("900", None)]
    assert read_run(rd.root).latest_job("shared") == rd.recorded_job("shared")
    text = run_status(rd.root, slurm=False)
    assert "shared: not started  [job 812]" in text, text
