"""`python -m hpcaug.submit` refuses bad input before anything is submitted (no cluster needed)."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from _fixtures_cluster import SlurmCluster

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


# ---------------------------------------------------------------- issue 19.2: bad values stop at config load
@pytest.mark.slurm
@pytest.mark.parametrize("extra, needles", [
    (["--stage", "search", "--no-wait", "--set", "aws.rounds=-1"], ["aws.rounds must be >= 1, got -1"]),
    (["--stage", "search", "--no-wait", "--set", "cluster.time_update=-1"], ["cluster.time_update must be >= 1"]),
    (["--stage", "search", "--no-wait", "--set", "cluster.cpus_per_task=-1"], ["cluster.cpus_per_task must be >= 1"]),
    (["--stage", "finetune", "--no-wait", "--array", "0-3-5"], ["'0-3-5' has 2 '-'", "START-END[:STEP]"]),
], ids=["rounds", "time_update", "cpus_per_task", "array"])
def test_reported_bad_input_submits_nothing(tmp_path: Path, demo_data: Path, slurm_cluster: SlurmCluster,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            extra: list[str], needles: list[str]) -> None:
    """The inputs of the report, on the real cluster: refused with the key named, no run dir, no job."""
    name = f"val{uuid.uuid4().hex[:8]}"  # this test's jobs, if any were submitted
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--executor", "slurm",
            "--set", f"name={name}", f"data.dir={demo_data}", f"run_dir={tmp_path / 'run'}",
            f"cluster.partition={slurm_cluster.partition}", "aws.rounds=2", "aws.trajectories_per_round=4"]
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(extra[:2] + args + extra[2:])
        err = capsys.readouterr().err
    finally:  # before the fix these were submitted: never leave them in the shared queue
        queued = [line.split() for line in slurm_cluster.run("squeue", "-h", "-o", "%i %j").stdout.splitlines()]
        ours = [jid.split("_")[0] for jid, jname in queued if jname.startswith(f"{name}-")]
        if ours:
            slurm_cluster.run("scancel", *sorted(set(ours)), check=False)
    assert rc == 2, err
    for n in needles:
        assert n in err, err
    assert not ours, f"jobs were submitted: {ours}"
    assert not (tmp_path / "run").exists()


# every numeric config field: an out-of-range value, and the edge of its range (which must load)
OUT_OF_RANGE: dict[str, tuple[object, object]] = {
    "data.image_size": (0, 1), "data.val_resize": (0, 32), "data.crop_scale": ([0.0, 1.0], [1.0, 1.0]),
    "data.color_jitter": (-0.1, 0), "data.mean": ([-1, 0, 0], [0, 255, 0]), "data.std": ([1, 0, 1], [1e-3, 1, 1]),
    "data.batch_size": (0, 1), "data.workers": (0, 1), "data.read_ahead": (-1, 0), "data.seed": (-1, 0),
    "augment.copies": (0, 1),
    "train.epochs": (0, 1), "train.lr": (0, 1e-6), "train.lr_ref_batch": (0, 1), "train.warmup_epochs": (-1, 0),
    "train.momentum": (1.0, 0.99), "train.weight_decay": (-1e-4, 0), "train.label_smoothing": (1.0, 0),
    "train.seed": (-1, 0), "train.steps_per_epoch": (-1, 0), "train.log_interval": (0, 1),
    "train.checkpoint_every_steps": (-1, 0), "train.micro_batches": (0, 1),
    "train.val_every": (-1, 0),
    "aws.shared_epochs": (0, 1), "aws.finetune_epochs": (0, 1), "aws.finetune_lr": (0, 1e-6),
    "aws.reward_top_k": (0, 1), "aws.rounds": (-1, 1), "aws.trajectories_per_round": (0, 1),
    "aws.quorum": (0, 1), "aws.policy_lr": (0, 1e-6), "aws.policy_lr_warmup_rounds": (-1, 0),
    "aws.adam_betas": ([0.5, 1.0], [0, 0.999]), "aws.ppo_clip": (1.0, 0.99), "aws.ppo_epochs": (0, 1),
    "aws.ppo_kl_stop": (0, 1e-9), "aws.baseline_momentum": (1.0, 0), "aws.final_epochs": (0, 1),
    "aws.ops_per_trajectory": (0, 1), "aws.result_window": (0, 1),
    "advaa.num_policies": (0, 1), "advaa.sub_policies": (0, 1), "advaa.ops_per_sub_policy": (0, 1),
    "advaa.num_magnitudes": (0, 1), "advaa.hidden": (0, 1), "advaa.embedding": (0, 1), "advaa.lr": (0, 1e-9),
    "advaa.entropy_weight": (-1e-5, 0),
    "cluster.nodes": (0, 1), "cluster.gpus_per_node": (-1, 0), "cluster.cpus_per_task": (-1, 1),
    "cluster.mem_gb": (-1, 0), "cluster.finetune_gpus": (-1, 0), "cluster.array_parallelism": (-1, 0),
    "cluster.time_shared": (0, 1), "cluster.time_finetune": (-1, 1), "cluster.time_update": (-1, 1),
    "cluster.time_final": (0, 1),
}


def _numeric_keys() -> set[str]:
    from dataclasses import fields

    from hpcaug.config import Config

    def numeric(v: object) -> bool:
        if isinstance(v, tuple):
            return bool(v) and all(numeric(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    cfg = Config()
    return {f"{s.name}.{f.name}" for s in fields(cfg) if hasattr(getattr(cfg, s.name), "__dataclass_fields__")
            for f in fields(getattr(cfg, s.name)) if numeric(getattr(getattr(cfg, s.name), f.name))}


def test_every_numeric_field_has_a_range() -> None:
    missing = sorted(_numeric_keys() - set(OUT_OF_RANGE))
    assert not missing, ("numeric config fields with no range test (add them to OUT_OF_RANGE and a check in "
                         f"config.py): {missing}")


@pytest.mark.parametrize("key", sorted(OUT_OF_RANGE))
def test_a_numeric_field_out_of_range_names_its_key_and_range(key: str) -> None:
    import yaml

    from hpcaug.config import load_config

    bad, edge = OUT_OF_RANGE[key]
    demo = REPO / "configs" / "demo.yaml"
    with pytest.raises(ValueError) as e:
        load_config(demo, [f"{key}={yaml.safe_dump(bad, default_flow_style=True).strip()}"])
    msg = str(e.value)
    assert key in msg and re.search(r"must be (>= |> |in [\[(])", msg), msg
    load_config(demo, [f"{key}={yaml.safe_dump(edge, default_flow_style=True).strip()}"])  # the edge is in range


@pytest.mark.parametrize("value, needle", [(".nan", "finite"), (".inf", "finite"), ("[0.5]", "list of 2 numbers"),
                                           ("[0.5, x]", "aws.adam_betas[1] must be a finite number")])
def test_non_finite_and_wrong_length(value: str, needle: str) -> None:
    from hpcaug.config import load_config

    key = "aws.adam_betas" if value.startswith("[") else "train.lr"
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_config(REPO / "configs" / "demo.yaml", [f"{key}={value}"])


SYNTAX = "SLURM array syntax"


@pytest.mark.parametrize("spec, needles", [
    ("0-3-5", ["'0-3-5' has 2 '-': a range is START-END[:STEP]", SYNTAX]), ("-3", ["negative", SYNTAX]),
    ("0,,3", ["empty element", SYNTAX]), ("0-3%x", ["whole number", SYNTAX]), ("5-3", ["empty (END < START)"]),
    ("0-3%0", ["throttle must be >= 1"]), ("0-7:0", ["STEP must be >= 1"]),
])
def test_array_errors_say_what_is_wrong(tmp_path: Path, base_args: list[str], submit, spec: str,  # type: ignore[no-untyped-def]
                                        needles: list[str]) -> None:
    proc = submit("--stage", "finetune", "--array", spec, *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, *needles)


def test_array_step_and_throttle() -> None:
    from hpcaug.search.jobs import parse_array

    assert parse_array("0-15:4%2") == ([0, 4, 8, 12], 2)
    assert parse_array(" 1,3-4 ") == ([1, 3, 4], 0)


def test_advaa_and_round_checks_come_before_the_run_dir(tmp_path: Path, base_args: list[str], submit) -> None:  # type: ignore[no-untyped-def]
    proc = submit("--stage", "advaa", *base_args, "--set", "augment.copies=3", cwd=tmp_path)
    _assert_refused(proc, tmp_path, "must equal advaa.num_policies")
    proc = submit("--stage", "search", "--round", "1", *base_args, cwd=tmp_path)
    _assert_refused(proc, tmp_path, "--round is for --stage finetune or update")
