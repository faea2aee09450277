"""`python -m hpcaug.submit` refuses bad input before anything is submitted (no cluster needed)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcaug.submit import main

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def submit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `python -m hpcaug.submit ARGS` in this process (the CLI's main), with no cluster configured."""
    monkeypatch.delenv("SLURM_CONF", raising=False)  # nothing may reach a cluster: validation comes first

    def run(*args: str, cwd: Path) -> Proc:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        rc = main(list(args))
        out = capsys.readouterr()
        return Proc(rc, out.out, out.err)

    return run


@pytest.fixture()
def base_args(tmp_path: Path, demo_data: Path) -> list[str]:
    return ["--config", str(REPO / "configs" / "demo.yaml"), "--executor", "slurm",
            "--set", f"data.dir={demo_data}", f"run_dir={tmp_path / 'run'}", "aws.rounds=2",
            "aws.trajectories_per_round=4"]


def _assert_refused(proc: Proc, tmp_path: Path, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()  # no run dir, no job


def test_unknown_op_in_a_policy(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad_policy.json"
    from hpcaug.ops.policy import SubPolicyPolicy

    d = json.loads(SubPolicyPolicy([[("ShearX", 0.5, 3), ("Rotate", 0.5, 3)]]).to_json())
    d["sub_policies"][0][0][0] = "Warp"
    bad.write_text(json.dumps(d))
    proc = submit("--stage", "final", "--policy", str(bad), *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "--policy", "Warp")


def test_missing_data_dir(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    proc = submit("--stage", "search", *base_args, "--set", f"data.dir={tmp_path / 'nowhere'}", cwd=tmp_path)
    _assert_refused(proc, tmp_path, "has no dataset.json", "data_prep")


def test_array_beyond_rounds_times_trajectories(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    proc = submit("--stage", "finetune", "--array", "0-8%2", *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "trajectory 8", "aws.rounds=2 x aws.trajectories_per_round=4", "0-7")
    proc = submit("--stage", "finetune", "--array", "3-x", *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "SLURM array syntax")


def test_unknown_config_key_and_round(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    proc = submit("--stage", "search", *base_args, "--set", "aws.roundz=3", cwd=tmp_path)
    _assert_refused(proc, tmp_path, "aws.roundz")
    proc = submit("--stage", "update", "--round", "5", *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "--round 5 is outside 0..1")


def test_no_cluster_says_how_to_run_without_one(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as m:
        m.setenv("PATH", "/nonexistent")
        proc = submit("--stage", "search", *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "--executor local or inline")


def test_a_run_dir_started_with_another_config_refuses(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    inline = [a if a != "slurm" else "inline" for a in base_args]
    from hpcaug.config import load_config
    from hpcaug.search import aws

    sets = inline[inline.index("--set") + 1:]
    aws.open_run(load_config(REPO / "configs" / "demo.yaml", sets))
    proc = submit("--stage", "search", *inline, "--set", "aws.finetune_lr=0.5", cwd=tmp_path)
    assert proc.returncode == 2 and "different config" in proc.stderr and "aws.finetune_lr" in proc.stderr, proc.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "logs", "rounds"]
