"""scripts/gpu_smoke.sh in CPU mode, so the GPU smoke check cannot rot on machines without a GPU:
every step runs (scaled down) through the project's real code and the script ends with
`SMOKE OK cpu`; a step that fails makes it exit 1 after the other steps ran; bad arguments exit 2."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"
STEPS = ("train", "loader", "ops", "resume", "memory", "dali", "ranks")


def _smoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the script in CPU mode in its own process group (it starts torchrun and child runs):
    on a timeout the whole group is killed, not just the shell."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([str(SCRIPT), "--device", "cpu", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"gpu_smoke.sh ran over {timeout} s:\n{out[-4000:]}\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_cpu_mode_runs_every_step_and_ends_ok(tmp_path: Path) -> None:
    p = _smoke("--json", str(tmp_path / "smoke.json"))
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-5000:]
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith("SMOKE OK cpu "), lines[-5:]
    for step in STEPS:
        assert any(line.startswith(f"[{step}] ") for line in lines), f"step {step} printed nothing"
    rep = json.loads((tmp_path / "smoke.json").read_text())
    r = rep["results"]
    assert rep["failed"] == [] and rep["device"] == "cpu"
    # every step measured through the real code paths
    assert r["train_float32_img_s"] > 0 and r["syncs_float32"] == 0
    assert r["loader_img_s"] > 0 and r["loader_ratio"] > 0 and r["syncs_loader"] == 0
    assert r["ops_img_s"] > 0 and r["parity_max_diff"] == 0  # the device path on the CPU: bit for bit
    assert r["resume_steps"] == 8 and r["resume_rel_diff"] <= 1e-5  # SIGKILLed, resumed, same weights
    assert r["ranks_torchrun_img_s"] > 0  # two DDP ranks (gloo) that end with the same weights
    has_dali = importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None
    assert ("dali_img_s" in r) == has_dali and ("dali" in rep["skipped"]) == (not has_dali)
    # the GPU machines have no submitit: the smoke must not need it
    assert "submitit" not in rep["imports"]


def test_a_failing_step_fails_the_smoke_after_the_others_ran(tmp_path: Path) -> None:
    """An empty --photos folder breaks the ops step (no images); train still runs and reports."""
    empty = tmp_path / "no_photos"
    empty.mkdir()
    p = _smoke("--only", "train,ops", "--photos", str(empty), timeout=600)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert any(line.startswith("[train] tiny_resnet float32") and "img/s" in line for line in lines)
    assert any(line.startswith("[ops] FAILED ops") and "no .jpg/.jpeg/.png files" in line for line in lines)
    assert lines[-1].startswith("SMOKE FAILED cpu") and "failed=ops " in lines[-1]


def test_bad_arguments_exit_2() -> None:
    p = _smoke("--only", "train,nosuchstep", timeout=120)
    assert p.returncode == 2 and "unknown step(s) nosuchstep" in p.stderr
    assert "SMOKE OK" not in p.stdout
