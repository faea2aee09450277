"""Launch robustness: the srun rendezvous port, the local executor's tasks, the requeue
signal's lead time, and the final stage's length (aws.final_epochs)."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from hpcaug.config import load_config

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
_LAUNCHER_ENV = ("SLURM_", "HOROVOD_", "OMPI_", "PMI", "PMIX_", "SUBMITIT_", "MASTER_", "TORCHELASTIC_")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_ENV)
            and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "HPCAUG_RENDEZVOUS_PORT", "HPCAUG_RENDEZVOUS_ADDR")}


# ------------------------------------------------------------------ rendezvous port
RANK_WORKER = r"""
import torch
from hpcaug.train.dist import init_dist
d = init_dist()
print("RANK", d.rank, d.size, float(d.allreduce(torch.ones(1))[0]), flush=True)
d.shutdown()
"""


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another job's HTTP server: answers every GET with 200 and its own id."""

    def do_GET(self) -> None:
        body = b"999.0.0"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_srun_rendezvous_takes_the_next_port_when_one_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two srun-like tasks on this host (the SLURM variables srun sets, no SLURM): the first
    candidate port is held by a socket that never answers, the second by another job's HTTP
    server. Rank 0 must listen on the third, and rank 1 must find it there, not at the others."""
    from hpcaug.train.job_env import slurm_launch_info
    from hpcaug.train.rendezvous import rendezvous_ports

    for k in ("HPCAUG_RENDEZVOUS_PORT", "MASTER_PORT", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(k, raising=False)
    job_id = str(4_000_000 + os.getpid())
    slurm = {"SLURM_JOB_ID": job_id, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
             "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_STEP_NODELIST": "localhost,localhost",
             "SLURM_LOCALID": "0"}
    info = slurm_launch_info({**slurm, "SLURM_PROCID": "0", "SLURM_NODEID": "0"})
    ports = rendezvous_ports(info)
    assert len(ports) > 2 and len(set(ports)) == len(ports)
    assert all(20000 <= p < 32768 for p in ports)  # below Linux's default ephemeral range

    silent = socket.socket()
    silent.bind(("", ports[0]))
    silent.listen(8)  # connections queue up, nothing ever answers
    foreign = http.server.ThreadingHTTPServer(("", ports[1]), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        script = tmp_path / "w.py"
        script.write_text(RANK_WORKER)
        env = {**_clean_env(), **slurm, "PYTHONPATH": str(REPO), "HPCAUG_RENDEZVOUS_ADDR": "127.0.0.1",
               "HOROVOD_GLOO_IFACE": "lo", "HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}
        procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**env, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)})
                 for r in (1, 0)]  # rank 1 first: it waits for rank 0's server
        outs = [p.communicate(timeout=150) for p in procs]
    finally:
        foreign.shutdown()
        foreign.server_close()
        silent.close()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err[-3000:]
    assert sorted(o for o, _ in outs) == ["RANK 0 2 2.0\n", "RANK 1 2 2.0\n"], outs


def test_requeued_launch_uses_other_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcaug.train.job_env import slurm_launch_info
    from hpcaug.train.rendezvous import rendezvous_ports

    info = slurm_launch_info({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"})
    monkeypatch.delenv("HPCAUG_RENDEZVOUS_PORT", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    first = rendezvous_ports(info)
    assert rendezvous_ports(info) == first  # every rank computes the same list
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert rendezvous_ports(info)[0] != first[0]  # not the port of the job before its requeue
    monkeypatch.setenv("HPCAUG_RENDEZVOUS_PORT", "23456")
    assert rendezvous_ports(info) == [23456]


# ------------------------------------------------------------------ local executor
def test_init_dist_refuses_a_local_job_split_into_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcaug.train.dist import init_dist

    for k in list(os.environ):
        if k.startswith(_LAUNCHER_ENV) or k in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "8")
    with pytest.raises(RuntimeError, match="8 tasks.*do not form"):
        init_dist()
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert init_dist().size == 1


def test_local_executor_runs_a_multi_node_final_stage_as_one_task(demo_data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """cluster.nodes=2 x gpus_per_node=8 through --executor local: one task trains (not 16
    separate runs into one directory, and not a LocalExecutor error for 2 nodes)."""
    from hpcaug.search import aws, jobs

    monkeypatch.delenv("SLURM_CONF", raising=False)
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"data.dir={demo_data}", f"run_dir={tmp_path / 'run'}", "cluster.executor=local", "cluster.nodes=2",
        "cluster.gpus_per_node=8", "aws.final_epochs=1", "train.steps_per_epoch=2", "data.batch_size=8",
        "data.workers=1", "data.backend=torch", "dist.backend=auto"])
    rd = aws.open_run(cfg)
    jobs.run_local(cfg, rd, [jobs.Step("final", policy="uniform")])
    info = json.loads((tmp_path / "run" / "final" / "train.json").read_text())
    assert info["ranks"] == 1 and info["steps"] == 2 and len(info["history"]) == 1
    tasks = {p.name.split("_")[1] for p in rd.logs_dir.rglob("*_log.out")}
    assert tasks == {"0"}, sorted(p.name for p in rd.logs_dir.rglob("*_log.*"))


# ------------------------------------------------------------------ requeue signal lead
def test_requeue_lead_is_at_most_a_tenth_of_the_time_limit() -> None:
    from hpcaug.train.stages import requeue_signal_lead_s

    assert requeue_signal_lead_s(48 * 60) == 90  # submitit's lead on long jobs
    assert requeue_signal_lead_s(10) == 60
    assert requeue_signal_lead_s(1) == 6
    assert requeue_signal_lead_s(48 * 60, wanted_s=600) == 600
    assert requeue_signal_lead_s(5, wanted_s=600) == 30
    with pytest.raises(ValueError):
        requeue_signal_lead_s(0)


def test_submitit_slurm_jobs_get_a_lead_shorter_than_their_time_limit(tmp_path: Path) -> None:
    from hpcaug.search import jobs
    from hpcaug.search.rundir import RunDir

    cfg = load_config(REPO / "configs" / "demo.yaml", [f"run_dir={tmp_path}", "cluster.time_final=1",
                                                       "cluster.time_update=2880"])
    rd = RunDir(tmp_path)
    short = jobs.make_executor(cfg, rd, "slurm", jobs.Step("final"), "slurm")
    long = jobs.make_executor(cfg, rd, "slurm", jobs.Step("update", 0), "slurm")
    assert "#SBATCH --signal=USR2@6\n" in short._executor._make_submission_file_text("cmd", "uid")
    assert "#SBATCH --signal=USR2@90\n" in long._executor._make_submission_file_text("cmd", "uid")


def _requeue_timer(tmp_path: Path, limit: str, left: str, lead: str | None = None) -> str:
    """Run slurm/_requeue.sh's requeue_timer with a fake squeue; the timer is killed at exit."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "squeue").write_text(f"#!/bin/sh\necho '{limit} {left}'\n")
    (fake / "squeue").chmod(0o755)
    env = {**_clean_env(), "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "5"}
    if lead is not None:
        env["REQUEUE_LEAD_S"] = lead
    p = subprocess.run(["bash", "-c", "set -euo pipefail; source slurm/_requeue.sh; requeue_timer t.sh"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_sbatch_scripts_requeue_timer_lead(tmp_path: Path) -> None:
    assert "requeue signal in 54 s (6 s before the end)" in _requeue_timer(tmp_path, "1:00", "1:00")
    assert "requeue signal in 270 s (30 s before the end)" in _requeue_timer(tmp_path, "5:00", "5:00")
    assert "requeue signal in 171600 s (600 s before the end)" in _requeue_timer(tmp_path, "2-00:00:00", "1-23:50:00")
    assert "requeue signal in 3540 s (60 s before the end)" in _requeue_timer(tmp_path, "1:00:00", "1:00:00", lead="60")
    assert "no requeue timer" in _requeue_timer(tmp_path, "UNLIMITED", "UNLIMITED")
    for script in ("final_train.sh", "advaa_train.sh"):
        text = (REPO / "slurm" / script).read_text()
        assert "--signal" not in "".join(ln for ln in text.splitlines() if ln.startswith("#SBATCH"))
        assert f"requeue_timer {script}" in text


# ------------------------------------------------------------------ final stage length
def test_final_stage_trains_aws_final_epochs(demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--stage final` (what slurm/final_train.sh runs) and run_final train aws.final_epochs
    epochs; train.epochs does not change the final stage's length."""
    from hpcaug.submit import main
    from hpcaug.train.stages import run_final

    monkeypatch.delenv("SLURM_CONF", raising=False)
    common = [f"data.dir={demo_data}", "train.steps_per_epoch=1", "data.batch_size=8", "data.workers=1",
              "data.backend=torch", "train.epochs=5", "aws.final_epochs=2", "dist.backend=single"]
    run = tmp_path / "cli"
    assert main(["--stage", "final", "--config", str(REPO / "configs" / "demo.yaml"), "--executor", "inline",
                 "--policy", "uniform", "--set", f"run_dir={run}", *common]) == 0
    info = json.loads((run / "final" / "train.json").read_text())
    assert len(info["history"]) == 2 and info["steps"] == 2
    res = run_final(load_config(REPO / "configs" / "demo.yaml", common), tmp_path / "direct", "uniform")
    assert len(res.history) == 2 and res.steps == 2


def test_final_configs_set_the_final_stage_length() -> None:
    """A config for the final stage sets aws.final_epochs, not train.epochs (which it ignores)."""
    finals = [p for p in sorted((REPO / "configs").glob("*.yaml")) if "--stage final" in p.read_text()]
    assert finals, "no config documents --stage final"
    for p in finals:
        raw = yaml.safe_load(p.read_text())
        assert "epochs" not in raw.get("train", {}), f"{p.name}: train.epochs is not read by the final stage"
        assert "final_epochs" in raw.get("aws", {}), f"{p.name}: set aws.final_epochs"
    assert load_config(REPO / "configs" / "imagenet_resnet50_final.yaml").aws.final_epochs == 270


def test_final_train_sh_with_a_short_time_limit_requeues_near_its_end(tmp_path: Path, slurm_cluster,
                                                                       demo_data: Path) -> None:
    """`sbatch --time=1 slurm/final_train.sh`: the requeue comes 6 s before the end (a tenth of
    the limit), not at once (a fixed --signal=B:USR1@600 would fire at once, forever)."""
    import re
    import time

    env = {**slurm_cluster.env, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "RUN_DIR": str(tmp_path / "run")}
    p = subprocess.run(
        ["sbatch", "--parsable", "-p", slurm_cluster.partition, "--time=1", "--nodes=1", "--ntasks-per-node=1",
         "--gpus-per-node=0", "--cpus-per-task=1", f"--output={tmp_path}/slurm-%j.out", "slurm/final_train.sh",
         "configs/demo.yaml", "uniform", f"data.dir={demo_data}", "data.backend=torch", "data.workers=1",
         "data.batch_size=8", "train.steps_per_epoch=1", "aws.final_epochs=100000", "dist.backend=single"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    log = tmp_path / f"slurm-{job}.out"
    try:
        started = None
        deadline = time.monotonic() + 150
        while True:
            text = log.read_text() if log.exists() else ""
            if started is None and text:
                started = time.monotonic()  # the script's first line: the job is running
            if "requeueing job" in text:
                break
            assert time.monotonic() < deadline, f"no requeue: {text[-3000:]}"
            time.sleep(0.5)
        ran = time.monotonic() - started
        m = re.search(r"final_train\.sh: time limit 60 s, (\d+) s left: "
                      r"requeue signal in (\d+) s \(6 s before the end\)", text)
        assert m and int(m.group(2)) == int(m.group(1)) - 6, text[-3000:]
        assert ran > 35, f"requeued {ran:.0f} s after the start: {text[-3000:]}"
        assert text.count("requeueing job") == 1, text[-3000:]
    finally:
        subprocess.run(["scancel", job], env=env, timeout=60)
    states = slurm_cluster.run("sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", job).stdout
    assert "REQUEUED" in states, states
