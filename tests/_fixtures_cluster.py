"""SLURM fixtures: a real SLURM cluster on this host (slurm/local/), shared by the whole session.

`scripts/test.sh` starts the cluster (NODES=2) and exports SLURM_CONF; the `slurm_cluster`
fixture then reuses it. Run pytest on its own and the fixture starts the cluster itself
through slurm/local/start.sh and stops it at the end of the session (unless another
session registered under $BASE/clients/ still uses it).
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "slurm" / "local"
DEFAULT_BASE = "/tmp/hpcaug-slurm"
WANT_NODES = 2  # multi-node tests (2-node srun, Horovod over 2 nodes) need at least 2


@dataclass(frozen=True)
class SlurmCluster:
    """A running SLURM cluster the tests may submit to."""

    conf: Path  # slurm.conf; clients need SLURM_CONF pointing here
    nodes: int  # compute nodes in `partition`
    partition: str
    cpus_per_node: int
    env: dict[str, str] = field(repr=False)  # os.environ copy with SLURM_CONF set, for subprocesses
    started_here: bool = False

    def run(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (sbatch, srun, sacct ...) against this cluster."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def sacct_states(self, job_ids: list[str]) -> dict[str, str]:
        """{job id (array tasks as 12_3): state} from the accounting database, e.g. COMPLETED."""
        out = self.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)).stdout
        states = {}
        for line in out.splitlines():
            if "|" in line:
                jid, state = line.split("|", 1)
                states[jid] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        return states

    def wait_states(
        self, job_ids: list[str], done: set[str] | None = None, timeout: float = 120
    ) -> dict[str, str]:
        """Poll sacct until every job in `job_ids` is in a state of `done` (default: terminal)."""
        done = done or {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.sacct_states(job_ids)
            if all(states.get(j) in done for j in job_ids):
                return states
            time.sleep(0.5)
        raise TimeoutError(f"jobs {job_ids} not in {sorted(done)} after {timeout} s: {states}")

    def executor(self, folder: str | os.PathLike[str], **params: Any) -> Any:
        """A submitit executor on this cluster's partition (params as for update_parameters)."""
        import submitit

        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(slurm_partition=self.partition, timeout_min=10, **params)
        return ex


def _ping(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["scontrol", "ping"], env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _describe(conf: Path, env: dict[str, str], started_here: bool) -> SlurmCluster:
    # the default partition is marked with '*' by sinfo
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P %D %c"], env=env, capture_output=True, text=True, timeout=20, check=True
    ).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    if not rows:
        pytest.fail(f"the SLURM cluster at {conf} has no partitions (sinfo printed nothing)")
    row = next((r for r in rows if r[0].endswith("*")), rows[0])
    return SlurmCluster(
        conf=conf, nodes=int(row[1]), partition=row[0].rstrip("*"), cpus_per_node=int(row[2]),
        env=env, started_here=started_here,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real SLURM cluster (>= 2 fake nodes, accounting on); sets os.environ["SLURM_CONF"]."""
    old_conf = os.environ.get("SLURM_CONF")
    base = Path(os.environ.get("HPCAUG_SLURM_BASE", DEFAULT_BASE))
    started_here = False
    client_file: Path | None = None
    if old_conf:
        conf = Path(old_conf)
        env = {**os.environ, "SLURM_CONF": str(conf)}
        if not _ping(env):
            pytest.fail(
                f"SLURM_CONF={conf} is set but its slurmctld does not answer `scontrol ping`. "
                "Start it (scripts/test.sh does: slurm/local/start.sh) or unset SLURM_CONF to let "
                "the tests start their own cluster."
            )
    else:
        env = {**os.environ, "BASE": str(base), "NODES": str(WANT_NODES)}
        was_up = subprocess.run([str(LOCAL / "status.sh"), "-q"], env=env).returncode == 0
        # start.sh is idempotent: on a running cluster it only checks it (and adds nodes if needed)
        proc = subprocess.run(
            [str(LOCAL / "start.sh")], env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            pytest.fail(
                "could not start the local SLURM cluster with slurm/local/start.sh "
                f"(needs root and Debian's slurm packages: run scripts/setup.sh):\n{proc.stdout}\n{proc.stderr}"
            )
        started_here = not was_up
        conf = base / "etc" / "slurm.conf"
        env = {**os.environ, "SLURM_CONF": str(conf)}
    # register as a user so that another session's stop.sh --if-unused leaves the cluster up
    clients = conf.parent.parent / "clients"
    if clients.is_dir():
        client_file = clients / str(os.getpid())
        client_file.touch()
    os.environ["SLURM_CONF"] = str(conf)  # submitit and plain subprocess calls find the cluster
    try:
        yield _describe(conf, env, started_here)
    finally:
        if client_file is not None:
            client_file.unlink(missing_ok=True)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        if started_here:
            subprocess.run(
                [str(LOCAL / "stop.sh"), "--if-unused"], env={**os.environ, "BASE": str(base)}, timeout=120
            )
