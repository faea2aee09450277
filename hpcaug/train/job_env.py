"""Where this process sits in a job: which launcher started it, and its place in a SLURM step.

Read-only facts from the environment (as submitit's JobEnvironment), kept apart from starting
a distributed backend (hpcaug/train/dist.py) and from the Horovod rendezvous under plain
srun (hpcaug/train/rendezvous.py).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["SlurmLaunch", "slurm_launch_info", "expand_counts", "expand_hostlist", "node_address",
           "mpi_launched", "horovodrun_launched", "torchrun_launched", "launched_size", "submitit_local_tasks"]


@dataclass(frozen=True)
class SlurmLaunch:
    """Where this task sits in a SLURM job step (srun): rank, sizes, node index."""

    rank: int
    size: int
    local_rank: int
    node: int
    tasks_per_node: tuple[int, ...]
    nodes: tuple[str, ...]
    job_id: str
    step_id: str

    @property
    def local_size(self) -> int:
        return self.tasks_per_node[self.node]

    def cross(self, local_rank: int) -> tuple[int, int]:
        """Horovod's cross rank/size: index among the nodes that hold local rank `local_rank`."""
        holders = [n for n, k in enumerate(self.tasks_per_node) if k > local_rank]
        return holders.index(self.node) if self.node in holders else -1, len(holders)


def expand_counts(spec: str) -> list[int]:
    """SLURM's '2(x3),1' -> [2, 2, 2, 1]."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot parse SLURM tasks-per-node {spec!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def expand_hostlist(spec: str) -> list[str]:
    """SLURM hostlist 'n[1-3,5],gpu07' -> ['n1', 'n2', 'n3', 'n5', 'gpu07'] (scontrol if possible)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", spec], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", spec):
        prefix, ranges = m.group(1), m.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{i:0{len(lo)}d}")
    return hosts


def slurm_launch_info(env: Mapping[str, str] | None = None) -> SlurmLaunch | None:
    """This task's place in an `srun` step, or None outside one (e.g. in an sbatch script body)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    size = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    tpn = expand_counts(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(size))
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost")
    return SlurmLaunch(rank=int(env["SLURM_PROCID"]), size=size, local_rank=int(env.get("SLURM_LOCALID", 0)),
                       node=int(env.get("SLURM_NODEID", 0)), tasks_per_node=tuple(tpn), nodes=tuple(nodes),
                       job_id=env.get("SLURM_JOB_ID", "0"), step_id=env.get("SLURM_STEP_ID", "0"))


def node_address(name: str) -> str:
    """IP of a SLURM node: DNS first, then the NodeAddr SLURM knows (fake/multi-slurmd nodes)."""
    try:
        return socket.gethostbyname(name)
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", name], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        m = re.search(r"NodeAddr=(\S+)", out)
        if m:
            return socket.gethostbyname(m.group(1))
    except (OSError, subprocess.SubprocessError):
        pass
    raise RuntimeError(f"cannot resolve SLURM node {name!r}; set HPCAUG_RENDEZVOUS_ADDR to rank 0's IP")


def mpi_launched() -> bool:
    """Started by mpirun / srun --mpi=... (an MPI process manager set its variables)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def horovodrun_launched() -> bool:
    return "HOROVOD_RANK" in os.environ


def torchrun_launched() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "MASTER_ADDR" in os.environ)


def launched_size() -> int:
    """How many ranks the launcher started (1 when run as a plain process)."""
    for key in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"):
        if os.environ.get(key):
            return int(os.environ[key])
    info = slurm_launch_info()
    return info.size if info else 1


def submitit_local_tasks() -> int:
    """Tasks submitit's LocalExecutor started for this job (1 outside one)."""
    return int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or 1)
