"""Horovod's gloo rendezvous under plain `srun` (no horovodrun, no MPI).

`horovodrun --gloo` starts a small HTTP rendezvous server and hands every rank its
HOROVOD_* variables. Under srun, `setup_horovod_from_slurm(info)` does the same: rank 0
hosts Horovod's own `RendezvousHTTPServer` on a port derived from the job, the other ranks
find it, and every rank exports what horovodrun would have set. docs/training.md
("srun without MPI") explains the port choice.
"""
from __future__ import annotations

import atexit
import http.client
import logging
import os
import random
import socket
import threading
import time

from hpcaug.train.job_env import SlurmLaunch, node_address

log = logging.getLogger("hpcaug.train")

__all__ = ["Rendezvous", "setup_horovod_from_slurm", "rendezvous_ports", "rendezvous_port", "rendezvous_id"]

# Candidate ports of the rank-0 rendezvous lie below Linux's default ephemeral range
# (ip_local_port_range 32768-60999), where the kernel puts the outgoing sockets of gloo and
# every other client on the node; a port still taken (another job's server, a socket of this
# job's previous incarnation) makes rank 0 try the next candidate.
_PORT_RANGE = (20000, 32000)
_PORT_TRIES = 16
_ID_PATH = "/hpcaug/rendezvous-id"


def rendezvous_id(info: SlurmLaunch) -> str:
    """Names this launch: job, step and requeue count (a requeued job gets fresh ports)."""
    return f"{info.job_id}.{info.step_id}.{os.environ.get('SLURM_RESTART_COUNT') or 0}"


def rendezvous_ports(info: SlurmLaunch) -> list[int]:
    """The ports rank 0 tries, in order; every rank computes the same list without talking.
    HPCAUG_RENDEZVOUS_PORT (or MASTER_PORT) pins a single port."""
    fixed = os.environ.get("HPCAUG_RENDEZVOUS_PORT") or os.environ.get("MASTER_PORT")
    if fixed:
        return [int(fixed)]
    return random.Random(rendezvous_id(info)).sample(range(*_PORT_RANGE), _PORT_TRIES)


def rendezvous_port(info: SlurmLaunch) -> int:
    """One port derived from the job (torch.distributed's MASTER_PORT under srun)."""
    return rendezvous_ports(info)[0]


class Rendezvous:
    """Horovod's gloo rendezvous HTTP server (as horovodrun starts it), hosted by rank 0."""

    def __init__(self, ports: list[int], info: SlurmLaunch) -> None:
        # Horovod is optional (hpcaug[horovod]): imported only when a Horovod job under srun starts
        from horovod.runner.common.util.hosts import SlotInfo
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        ident = rendezvous_id(info).encode()

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


def _iface_for(addr: str) -> str:
    """The network interface this host uses to reach `addr` (gloo binds to it)."""
    import psutil  # a Horovod dependency, needed only here

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


def setup_horovod_from_slurm(info: SlurmLaunch) -> Rendezvous | None:
    """Export the HOROVOD_* variables horovodrun would set; rank 0 starts (and returns) the server."""
    addr = os.environ.get("HPCAUG_RENDEZVOUS_ADDR") or node_address(info.nodes[0])
    ports = rendezvous_ports(info)
    server = None
    if info.rank == 0:
        server = Rendezvous(ports, info)
        port = server.port
        # atexit runs last-in first-out: registered before hvd.init, this runs after Horovod's own
        # atexit shutdown, so the server outlives every rank's finalize even without dist.shutdown()
        atexit.register(server.stop)
    else:
        timeout_s = float(os.environ.get("HOROVOD_GLOO_TIMEOUT_SECONDS") or 300)
        port = _find_server(addr, ports, rendezvous_id(info), timeout_s)
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
