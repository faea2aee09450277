"""Distributed backends behind one small interface: Horovod, torch.distributed, single process.

`init_dist(cfg.dist) -> Dist` picks the backend:

- ``horovod``: under ``horovodrun`` (gloo or MPI), under ``mpirun``/``srun --mpi=...`` with an
  MPI build, or under plain ``srun`` with a gloo-only build: then rank 0 hosts Horovod's gloo
  rendezvous server (the one horovodrun would start) and every rank derives the HOROVOD_*
  variables from SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID / SLURM_NODEID.
- ``torch``: torch.distributed (nccl on CUDA, else gloo) from torchrun's or SLURM's env.
- ``single``: one process, no communication.
- ``auto`` (default): horovod under horovodrun / mpirun, torch under torchrun, horovod
  under srun (torch when Horovod is not installed), else single.

Every collective must be called by every rank in the same order (a mismatch hangs).
"""
from __future__ import annotations

import atexit
import http.client
import logging
import os
import random
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn

from hpcaug.config import DistConfig

log = logging.getLogger("hpcaug.train")

__all__ = ["Dist", "SingleDist", "HorovodDist", "TorchDist", "init_dist", "slurm_launch_info"]

_OPS = ("sum", "mean", "max", "min")


@dataclass
class Dist:
    """Single-process base class; subclasses override the collectives."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "single"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce `tensor` over ranks (op: sum | mean | max | min); returns a new tensor."""
        _check_op(op)
        return tensor.clone()

    def broadcast_object(self, obj: Any, name: str) -> Any:
        """Rank 0's `obj` on every rank; `name` must be the same string on every rank."""
        return obj

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        return [obj]

    def broadcast_model(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Copy rank 0's parameters, buffers (and optimizer state) to every rank."""

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer to use: gradients are averaged over ranks before each step."""
        return optimizer

    def step(self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """Average gradients over ranks (if not done already), then step (through `scaler` if given)."""
        if scaler is not None and scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def join(self) -> None:
        """Call when this rank has no more training batches this epoch (uneven shards)."""

    def barrier(self) -> None:
        """Wait for every rank."""

    def shutdown(self) -> None:
        """Release the backend (idempotent)."""


class SingleDist(Dist):
    pass


def _check_op(op: str) -> None:
    if op not in _OPS:
        raise ValueError(f"allreduce op must be one of {_OPS}, got {op!r}")


# --------------------------------------------------------------------------------------------
# Horovod
# --------------------------------------------------------------------------------------------
class HorovodDist(Dist):
    """Horovod: DistributedOptimizer, broadcast_parameters/optimizer_state, hvd.join."""

    def __init__(self, hvd: Any, device: torch.device, rendezvous: Any = None) -> None:
        super().__init__(hvd.rank(), hvd.size(), hvd.local_rank(), "horovod", device)
        self._hvd = hvd
        self._rendezvous = rendezvous
        self._ops = {"sum": hvd.Sum, "mean": hvd.Average, "max": hvd.Max, "min": hvd.Min}
        self._counter = 0

    def _name(self, base: str) -> str:
        self._counter += 1
        return f"{base}.{self._counter}"

    def allreduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        _check_op(op)
        # Horovod's gloo CPU ops reduce CPU tensors; the result comes back on the input device.
        return self._hvd.allreduce(tensor.detach(), op=self._ops[op], name=self._name("allreduce"))

    def broadcast_object(self, obj: Any, name: str) -> Any:
        return self._hvd.broadcast_object(obj if self.rank == 0 else None, root_rank=0, name=name)

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        return list(self._hvd.allgather_object(obj, name=name))

    def broadcast_model(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if optimizer is not None:
            self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        return self._hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                              op=self._hvd.Average)

    def step(self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        if scaler is not None and scaler.is_enabled():
            # Horovod + AMP recipe: finish the allreduce first so every rank sees the same
            # (averaged) gradients, hence the same inf/NaN check and the same skip decision.
            optimizer.synchronize()  # type: ignore[attr-defined]
            scaler.unscale_(optimizer)
            with optimizer.skip_synchronize():  # type: ignore[attr-defined]
                scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def join(self) -> None:
        self._hvd.join()

    def barrier(self) -> None:
        self._hvd.barrier()

    def shutdown(self) -> None:
        global _HOROVOD
        if self._rendezvous is not None:
            self._hvd.shutdown()
            self._rendezvous.stop()
            self._rendezvous = None
        if _HOROVOD is self:
            _HOROVOD = None


# --------------------------------------------------------------------------------------------
# torch.distributed
# --------------------------------------------------------------------------------------------
class TorchDist(Dist):
    """torch.distributed (gloo or nccl); gradients are averaged with one flat allreduce."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as td

        self._td = td
        super().__init__(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), "torch", device)
        self._comm_device = device if td.get_backend() == "nccl" else torch.device("cpu")
        self._ops = {"sum": td.ReduceOp.SUM, "max": td.ReduceOp.MAX, "min": td.ReduceOp.MIN}
        self._model: Optional[nn.Module] = None

    def allreduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        _check_op(op)
        t = tensor.detach().to(self._comm_device, copy=True)
        self._td.all_reduce(t, op=self._ops["sum" if op == "mean" else op])
        if op == "mean":
            t = t / self.size
        return t.to(tensor.device)

    def broadcast_object(self, obj: Any, name: str) -> Any:
        box = [obj if self.rank == 0 else None]
        self._td.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        out: list[Any] = [None] * self.size
        self._td.all_gather_object(out, obj)
        return out

    def broadcast_model(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        for t in list(model.parameters()) + list(model.buffers()):
            c = t.detach().to(self._comm_device, copy=True)
            self._td.broadcast(c, src=0)
            t.data.copy_(c.to(t.device))
        if optimizer is not None:
            state = self.broadcast_object(optimizer.state_dict() if self.rank == 0 else None, name="opt_state")
            optimizer.load_state_dict(state)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        self._model = model
        return optimizer

    def _average_grads(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads or self.size == 1:
            return
        flat = torch.cat([g.flatten() for g in grads]).to(self._comm_device)
        self._td.all_reduce(flat)
        flat = flat.to(grads[0].device) / self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def step(self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        self._average_grads(optimizer)
        super().step(optimizer, scaler)

    def join(self) -> None:
        self.barrier()

    def barrier(self) -> None:
        self._td.barrier()

    def shutdown(self) -> None:
        if self._td.is_initialized():
            self._td.barrier()  # without it gloo sometimes aborts at exit
            self._td.destroy_process_group()


# --------------------------------------------------------------------------------------------
# SLURM launch -> Horovod gloo rendezvous
# --------------------------------------------------------------------------------------------
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


def _expand_counts(spec: str) -> list[int]:
    """SLURM's '2(x3),1' -> [2, 2, 2, 1]."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot parse SLURM tasks-per-node {spec!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def _expand_hostlist(spec: str) -> list[str]:
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


def slurm_launch_info(env: Optional[dict[str, str]] = None) -> Optional[SlurmLaunch]:
    """This task's place in an `srun` step, or None outside one (e.g. in an sbatch script body)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    size = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    tpn = _expand_counts(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(size))
    nodes = _expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost")
    return SlurmLaunch(rank=int(env["SLURM_PROCID"]), size=size, local_rank=int(env.get("SLURM_LOCALID", 0)),
                       node=int(env.get("SLURM_NODEID", 0)), tasks_per_node=tuple(tpn), nodes=tuple(nodes),
                       job_id=env.get("SLURM_JOB_ID", "0"), step_id=env.get("SLURM_STEP_ID", "0"))


def _node_address(name: str) -> str:
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


def _iface_for(addr: str) -> str:
    """The network interface this host uses to reach `addr` (gloo binds to it)."""
    import psutil

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((addr, 9))  # UDP connect sends nothing; it only picks the route
        local_ip = s.getsockname()[0]
    finally:
        s.close()
    for iface, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local_ip for a in addrs):
            return iface
    raise RuntimeError(f"no interface holds {local_ip}; set HOROVOD_GLOO_IFACE (e.g. ib0, eth0)")


# Candidate ports of the rank-0 rendezvous lie below Linux's default ephemeral range
# (ip_local_port_range 32768-60999), where the kernel puts the outgoing sockets of gloo and
# every other client on the node; a port still taken (another job's server, a socket of this
# job's previous incarnation) makes rank 0 try the next candidate.
_PORT_RANGE = (20000, 32000)
_PORT_TRIES = 16
_ID_PATH = "/hpcaug/rendezvous-id"


def _rendezvous_id(info: SlurmLaunch) -> str:
    """Names this launch: job, step and requeue count (a requeued job gets fresh ports)."""
    return f"{info.job_id}.{info.step_id}.{os.environ.get('SLURM_RESTART_COUNT') or 0}"


def _rendezvous_ports(info: SlurmLaunch) -> list[int]:
    """The ports rank 0 tries, in order; every rank computes the same list without talking.
    HPCAUG_RENDEZVOUS_PORT (or MASTER_PORT) pins a single port."""
    fixed = os.environ.get("HPCAUG_RENDEZVOUS_PORT") or os.environ.get("MASTER_PORT")
    if fixed:
        return [int(fixed)]
    return random.Random(_rendezvous_id(info)).sample(range(*_PORT_RANGE), _PORT_TRIES)


def _rendezvous_port(info: SlurmLaunch) -> int:
    """One port derived from the job (torch.distributed's MASTER_PORT under srun)."""
    return _rendezvous_ports(info)[0]


class _Rendezvous:
    """Horovod's gloo rendezvous HTTP server (as horovodrun starts it), hosted by rank 0."""

    def __init__(self, ports: list[int], info: SlurmLaunch) -> None:
        from horovod.runner.common.util.hosts import SlotInfo
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        ident = _rendezvous_id(info).encode()

        class Handler(RendezvousHandler):  # counts the ranks' final DELETEs (see stop())
            def do_GET(self) -> None:
                if self.path != _ID_PATH:
                    return super().do_GET()
                # the other ranks probe the candidate ports for this answer (_find_server)
                self.send_response(200)
                self.send_header("Content-Length", str(len(ident)))
                self.end_headers()
                self.wfile.write(ident)

            def do_DELETE(self) -> None:
                super().do_DELETE()
                with lock:
                    deletes[0] += 1

        lock, deletes = threading.Lock(), [0]
        self._lock, self._deletes = lock, deletes
        self._expected = 3 * info.size  # each rank finalizes its global, local and cross store
        self._httpd = None
        errors = []
        for port in ports:  # HTTPServer binds with SO_REUSEADDR: a closed socket in TIME_WAIT does not block it
            try:
                self._httpd = RendezvousHTTPServer(("", port), Handler, 0)
                break
            except OSError as e:
                errors.append(f"{port}: {e.strerror or e}")
        if self._httpd is None:
            raise RuntimeError(f"rank 0 cannot listen on any rendezvous port ({'; '.join(errors)}); "
                               "set HPCAUG_RENDEZVOUS_PORT to a free port")
        self.port = self._httpd.server_address[1]
        plan = []
        rank = 0
        for node, k in enumerate(info.tasks_per_node):
            for lr in range(k):
                cr, cs = info.cross(lr)
                plan.append(SlotInfo(hostname=_slot_host(node), rank=rank, local_rank=lr, cross_rank=cr,
                                     size=info.size, local_size=k, cross_size=cs))
                rank += 1
        self._httpd.init(plan)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 60.0) -> None:
        """Stop serving once every rank has finalized (hvd.shutdown sends DELETEs), or after
        `wait_s`: a rank still finalizing against a closed server aborts."""
        if self._httpd is None:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._deletes[0] >= self._expected:
                    break
            time.sleep(0.05)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None


def _slot_host(node: int) -> str:
    # Horovod groups ranks into "local" scopes by HOROVOD_HOSTNAME; SLURM's node index is
    # unique per node even when several fake nodes share one host.
    return f"node{node}"


def _answers(addr: str, port: int, ident: str) -> bool:
    """Is this launch's rendezvous (rank 0's server, not another job's) listening at addr:port?"""
    conn = http.client.HTTPConnection(addr, port, timeout=2)
    try:
        conn.request("GET", _ID_PATH)
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().decode(errors="replace") == ident
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _find_server(addr: str, ports: list[int], ident: str, timeout_s: float) -> int:
    """Non-root ranks: the candidate port on which rank 0's rendezvous answers with this launch's
    id; waits while rank 0 is still starting (importing torch). Horovod's own client gives up
    after a few quick retries, so this runs before hvd.init."""
    deadline = time.monotonic() + timeout_s
    while True:
        for port in ports:
            if _answers(addr, port, ident):
                return port
        if time.monotonic() > deadline:
            raise RuntimeError(f"rank 0's Horovod rendezvous (launch {ident}) did not answer at {addr} on any of "
                               f"the ports {ports} within {timeout_s:.0f} s; check that rank 0 started, that "
                               "the ports are reachable between nodes, or set HPCAUG_RENDEZVOUS_ADDR/PORT")
        time.sleep(0.2)


def _setup_horovod_from_slurm(info: SlurmLaunch) -> Optional[_Rendezvous]:
    """Export the HOROVOD_* variables horovodrun would set; rank 0 starts the rendezvous."""
    addr = os.environ.get("HPCAUG_RENDEZVOUS_ADDR") or _node_address(info.nodes[0])
    ports = _rendezvous_ports(info)
    server = None
    if info.rank == 0:
        server = _Rendezvous(ports, info)
        port = server.port
        # atexit runs last-in first-out: registered before hvd.init, this runs after Horovod's own
        # atexit shutdown, so the server outlives every rank's finalize even without dist.shutdown()
        atexit.register(server.stop)
    else:
        port = _find_server(addr, ports, _rendezvous_id(info), float(os.environ.get("HOROVOD_GLOO_TIMEOUT_SECONDS") or 300))
    cr, cs = info.cross(info.local_rank)
    os.environ.update({
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": os.environ.get("HOROVOD_GLOO_IFACE") or _iface_for(addr),
        "HOROVOD_HOSTNAME": _slot_host(info.node),
        "HOROVOD_RANK": str(info.rank),
        "HOROVOD_SIZE": str(info.size),
        "HOROVOD_LOCAL_RANK": str(info.local_rank),
        "HOROVOD_LOCAL_SIZE": str(info.local_size),
        "HOROVOD_CROSS_RANK": str(cr),
        "HOROVOD_CROSS_SIZE": str(cs),
    })
    if os.environ.get("HOROVOD_GLOO_TIMEOUT_SECONDS") is None:
        os.environ["HOROVOD_GLOO_TIMEOUT_SECONDS"] = "120"
    log.debug("horovod gloo rendezvous %s:%s rank %d/%d", addr, port, info.rank, info.size)
    return server


def _mpi_launched() -> bool:
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def _launched_size() -> int:
    """How many ranks the launcher started (1 when run as a plain process)."""
    for key in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"):
        if os.environ.get(key):
            return int(os.environ[key])
    info = slurm_launch_info()
    return info.size if info else 1


def _auto_backend() -> str:
    """horovodrun/mpirun -> horovod; torchrun -> torch; srun -> horovod (else torch); else single."""
    if _launched_size() <= 1:
        return "single"
    if "HOROVOD_RANK" in os.environ or _mpi_launched():
        if not _horovod_available():
            raise RuntimeError("launched by horovodrun/mpirun but horovod.torch cannot be imported: "
                               "install Horovod as docs/training.md says")
        return "horovod"
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "MASTER_ADDR" in os.environ):
        return "torch"  # torchrun
    if slurm_launch_info() is not None:
        return "horovod" if _horovod_available() else "torch"
    return "single"


def _horovod_available() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_dist(cfg: Optional[DistConfig] = None) -> Dist:
    """Initialise the configured backend (see the module docstring) and return its `Dist`."""
    cfg = cfg or DistConfig()
    _check_not_split_local_job()
    backend = cfg.backend
    if backend == "auto":
        backend = _auto_backend()
    if backend == "single":
        return SingleDist(device=_pick_device(0))
    if backend == "horovod":
        return _init_horovod()
    if backend == "torch":
        return _init_torch()
    raise ValueError(f"unknown dist.backend {backend!r}")


def _check_not_split_local_job() -> None:
    """submitit's LocalExecutor starts its tasks without any launcher: N tasks would be N
    separate single-process runs writing into the same directory, not one group of N ranks."""
    n = int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or 1)
    if n > 1 and _launched_size() <= 1 and not _mpi_launched():
        raise RuntimeError(f"submitit's local executor started {n} tasks of this job; they do not form a "
                           "Horovod or torch.distributed group. Submit local jobs with tasks_per_node=1 "
                           "(hpcaug.search.jobs.make_executor does), or launch the ranks with horovodrun/torchrun")


def _init_horovod() -> HorovodDist:
    if not _horovod_available():
        raise RuntimeError("dist.backend=horovod but horovod.torch cannot be imported: "
                           "install it as docs/training.md says (HOROVOD_WITH_PYTORCH=1 pip install horovod)")
    import horovod.torch as hvd

    global _HOROVOD
    if _HOROVOD is not None and hvd.is_initialized():
        return _HOROVOD  # init_dist is called by several stages in one process: one rendezvous, one init
    server = None
    info = slurm_launch_info()
    if "HOROVOD_RANK" not in os.environ and info is not None and info.size > 1 and not _mpi_launched():
        if not hvd.gloo_built():
            raise RuntimeError("launched by srun without MPI and this Horovod has no gloo: use `srun --mpi=pmix` "
                               "with an MPI build of Horovod, or rebuild with HOROVOD_WITH_GLOO=1")
        server = _setup_horovod_from_slurm(info)
    hvd.init()
    device = _pick_device(hvd.local_rank())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cpus // max(1, hvd.local_size())))
    _HOROVOD = HorovodDist(hvd, device, server)
    return _HOROVOD


_HOROVOD: Optional[HorovodDist] = None


def _init_torch() -> TorchDist:
    import torch.distributed as td

    if not td.is_initialized():
        info = slurm_launch_info()
        if "RANK" not in os.environ and info is not None:
            os.environ.update({"RANK": str(info.rank), "WORLD_SIZE": str(info.size),
                               "LOCAL_RANK": str(info.local_rank)})
            os.environ.setdefault("MASTER_ADDR", _node_address(info.nodes[0]))
            os.environ.setdefault("MASTER_PORT", str(_rendezvous_port(info)))
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError("dist.backend=torch needs torchrun (or srun) to set RANK/WORLD_SIZE/MASTER_ADDR")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = _pick_device(local_rank)
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    else:
        device = _pick_device(int(os.environ.get("LOCAL_RANK", 0)))
    return TorchDist(device)
