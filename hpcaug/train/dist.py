"""Distributed backends behind one small interface: Horovod, torch.distributed (DDP), single process.

`init_dist(cfg.dist) -> Dist` picks the backend and logs (rank 0) which one and why:

- ``horovod``: under ``horovodrun`` (gloo or MPI), under ``mpirun``/``srun --mpi=...`` with an
  MPI build, or under plain ``srun`` with a gloo-only build (rank 0 then hosts Horovod's gloo
  rendezvous: hpcaug/train/rendezvous.py).
- ``torch``: torch.distributed with DistributedDataParallel (nccl on CUDA, else gloo) from
  torchrun's or SLURM's environment.
- ``single``: one process, no communication.
- ``auto`` (default): horovod under horovodrun / mpirun, torch under torchrun, horovod
  under srun (torch when Horovod is not installed), else single.

Where the process sits in the job (launcher, SLURM step) is read by hpcaug/train/job_env.py.
Every collective must be called by every rank in the same order (a mismatch hangs).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as td
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcaug.config import DistConfig
from hpcaug.train import job_env
from hpcaug.train._logging import setup_logging
from hpcaug.train.rendezvous import Rendezvous, rendezvous_port, setup_horovod_from_slurm

log = logging.getLogger("hpcaug.train")

__all__ = ["Dist", "SingleDist", "HorovodDist", "TorchDist", "init_dist"]

_OPS = ("sum", "mean", "max", "min")


@dataclass
class Dist:
    """Single-process base class; subclasses override the collectives.

    `compression` ("none" | "fp16", dist.compression) applies to the gradient allreduce.
    `reason` says why this backend was chosen (logged by init_dist).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "single"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compression: str = "none"
    reason: str = ""

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

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy rank 0's parameters, buffers (and optimizer state) to every rank."""

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                micro_batches: int = 1) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The (model, optimizer) to train with: gradients are averaged over ranks once per
        optimizer step, after `micro_batches` backward passes (gradient accumulation).
        Save and evaluate the model passed in, not the returned one (DDP wraps it)."""
        return model, optimizer

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Around forward + backward of every micro-batch but the last: no gradient allreduce."""
        return contextlib.nullcontext()

    def step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
        """Average gradients over ranks (if not done already), then step (through `scaler` if given)."""
        if scaler is not None and scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def joined(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Around an epoch's training steps: on leaving it normally, this rank keeps answering the
        others' gradient allreduces until every rank is out of batches (uneven shards)."""
        return contextlib.nullcontext()

    def barrier(self) -> None:
        """Wait for every rank."""

    def shutdown(self) -> None:
        """Release the backend (idempotent)."""

    @contextlib.contextmanager
    def stop_job_on_error(self) -> Iterator[None]:
        """Around a rank's share of a multi-rank job: an exception on this rank ends the whole
        job at once (the other ranks would wait for this one at their next collective, forever).
        The error and its traceback go to stderr; the process exits with status 1 without
        running clean-up that could wait for the other ranks; the launcher (srun
        --kill-on-bad-exit, horovodrun, torchrun) or the broken connections stop the rest."""
        try:
            yield
        except Exception as e:
            if self.size == 1:
                raise
            print(f"hpcaug: rank {self.rank} of {self.size} failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exception(e, file=sys.stderr)
            print(f"hpcaug: rank {self.rank} of {self.size} failed; stopping the whole job", file=sys.stderr,
                  flush=True)
            sys.stdout.flush()
            self._tell_others_and_exit()

    def _tell_others_and_exit(self) -> None:
        os._exit(1)


class SingleDist(Dist):
    pass


def _check_op(op: str) -> None:
    if op not in _OPS:
        raise ValueError(f"allreduce op must be one of {_OPS}, got {op!r}")


# --------------------------------------------------------------------------------------------
class HorovodDist(Dist):
    """Horovod: DistributedOptimizer, broadcast_parameters/optimizer_state, hvd.join."""

    def __init__(self, hvd: Any, device: torch.device, rendezvous: Rendezvous | None = None,
                 compression: str = "none", reason: str = "") -> None:
        super().__init__(hvd.rank(), hvd.size(), hvd.local_rank(), "horovod", device, compression, reason)
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

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if optimizer is not None:
            self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                micro_batches: int = 1) -> tuple[nn.Module, torch.optim.Optimizer]:
        # The allreduce of a parameter starts once its gradient has been accumulated over
        # `micro_batches` backward passes (overlapping the rest of the last backward); it sums
        # and divides by the rank count only, so the loop scales each micro-batch's loss.
        compression = self._hvd.Compression.fp16 if self.compression == "fp16" else self._hvd.Compression.none
        return model, self._hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), op=self._hvd.Average,
            backward_passes_per_step=micro_batches, compression=compression)

    def step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
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

    @contextlib.contextmanager
    def joined(self, model: nn.Module) -> Iterator[None]:
        yield
        self._hvd.join()  # not on an exception: that rank is leaving, and must not wait for the others

    def barrier(self) -> None:
        self._hvd.barrier()

    def _tell_others_and_exit(self) -> None:
        # hvd.shutdown() on this rank fails the other ranks' pending collectives ("Horovod has
        # been shut down"), whatever launched them; bounded, in case it cannot reach them
        t = threading.Thread(target=self._hvd.shutdown, daemon=True)
        t.start()
        t.join(timeout=15)
        os._exit(1)

    def shutdown(self) -> None:
        global _HOROVOD
        if self._rendezvous is not None:
            self._hvd.shutdown()
            self._rendezvous.stop()
            self._rendezvous = None
        if _HOROVOD is self:
            _HOROVOD = None


# --------------------------------------------------------------------------------------------
class TorchDist(Dist):
    """torch.distributed (gloo or nccl): DistributedDataParallel averages the gradients in
    buckets while the backward pass runs."""

    def __init__(self, device: torch.device, compression: str = "none", reason: str = "") -> None:
        self._td = td
        super().__init__(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), "torch", device,
                         compression, reason)
        self._comm_device = device if td.get_backend() == "nccl" else torch.device("cpu")
        self._ops = {"sum": td.ReduceOp.SUM, "max": td.ReduceOp.MAX, "min": td.ReduceOp.MIN}

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

    def broadcast_model(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        for t in list(model.parameters()) + list(model.buffers()):
            c = t.detach().to(self._comm_device, copy=True)
            self._td.broadcast(c, src=0)
            t.data.copy_(c.to(t.device))
        if optimizer is not None:
            state = self.broadcast_object(optimizer.state_dict() if self.rank == 0 else None, name="opt_state")
            optimizer.load_state_dict(state)

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                micro_batches: int = 1) -> tuple[nn.Module, torch.optim.Optimizer]:
        # BatchNorm buffers stay per rank (as under Horovod) and are averaged before each
        # validation (loop._average_buffers) instead of being broadcast in every forward.
        ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                  broadcast_buffers=False, gradient_as_bucket_view=True)
        if self.compression == "fp16":
            ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
        return ddp, optimizer

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return model.no_sync() if isinstance(model, DDP) else contextlib.nullcontext()

    def joined(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        # DDP's Join: a rank out of batches shadows the others' allreduces until all are out
        return model.join() if isinstance(model, DDP) else contextlib.nullcontext()

    def barrier(self) -> None:
        self._td.barrier()

    def shutdown(self) -> None:
        if self._td.is_initialized():
            self._td.barrier()  # without it gloo sometimes aborts at exit
            self._td.destroy_process_group()


# --------------------------------------------------------------------------------------------
def _horovod_import_error() -> str | None:
    """None when horovod.torch imports, else why not."""
    try:  # Horovod is optional (hpcaug[horovod]) and slow to import: only for its backend
        import horovod.torch  # noqa: F401  (importable?)
    except ImportError as e:
        return str(e)
    return None


def _auto_backend() -> tuple[str, str]:
    """(backend, why): horovodrun/mpirun -> horovod; torchrun -> torch; srun -> horovod (else
    torch); else single."""
    size = job_env.launched_size()
    if size <= 1:
        return "single", "one process (no launcher started more than one rank)"
    if job_env.horovodrun_launched() or job_env.mpi_launched():
        launcher = "horovodrun" if job_env.horovodrun_launched() else "an MPI launcher (mpirun / srun --mpi)"
        err = _horovod_import_error()
        if err is not None:
            raise RuntimeError(f"launched by {launcher} but horovod.torch cannot be imported ({err}): "
                               "install Horovod as docs/cluster.md section 3 says")
        return "horovod", f"launched by {launcher} with {size} ranks"
    if job_env.torchrun_launched():
        return "torch", f"launched by torchrun with {size} ranks"
    info = job_env.slurm_launch_info()
    if info is not None:
        err = _horovod_import_error()
        if err is None:
            return "horovod", f"srun step of {info.size} tasks and Horovod is installed"
        return "torch", (f"srun step of {info.size} tasks and Horovod is not installed ({err}); "
                         "set dist.backend=torch to choose it explicitly, or install Horovod (docs/cluster.md)")
    return "single", "no launcher this process recognises"


def _pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _share_cpus(local_size: int) -> None:
    """Split this task's CPUs (srun --cpus-per-task, bound with --cpu-bind) among the ranks of a node."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cpus // max(1, local_size)))


def init_dist(cfg: DistConfig | None = None) -> Dist:
    """Initialise the configured backend (see the module docstring) and return its `Dist`;
    rank 0 logs which backend and why."""
    cfg = cfg or DistConfig()
    _check_not_split_local_job()
    if cfg.backend == "auto":
        backend, reason = _auto_backend()
    else:
        backend, reason = cfg.backend, f"dist.backend={cfg.backend} in the config"
    if backend == "single":
        d: Dist = SingleDist(device=_pick_device(0), compression=cfg.compression, reason=reason)
    elif backend == "horovod":
        d = _init_horovod(cfg.compression, reason)
    elif backend == "torch":
        d = _init_torch(cfg.compression, reason)
    else:
        raise ValueError(f"unknown dist.backend {backend!r}")
    if d.is_root:
        setup_logging(True)
        log.info("distributed backend: %s, %d rank(s), device %s: %s", d.backend, d.size, d.device, d.reason)
    return d


def _check_not_split_local_job() -> None:
    """submitit's LocalExecutor starts its tasks without any launcher: N tasks would be N
    separate single-process runs writing into the same directory, not one group of N ranks."""
    n = job_env.submitit_local_tasks()
    if n > 1 and job_env.launched_size() <= 1 and not job_env.mpi_launched():
        raise RuntimeError(f"submitit's local executor started {n} tasks of this job; they do not form a "
                           "Horovod or torch.distributed group. Submit local jobs with tasks_per_node=1 "
                           "(hpcaug.search.jobs.make_executor does), or launch the ranks with horovodrun/torchrun")


_HOROVOD: HorovodDist | None = None


def _init_horovod(compression: str, reason: str) -> HorovodDist:
    err = _horovod_import_error()
    if err is not None:
        raise RuntimeError(f"dist.backend=horovod but horovod.torch cannot be imported ({err}): "
                           "install it as docs/cluster.md section 3 says")
    import horovod.torch as hvd  # optional: see _horovod_import_error

    global _HOROVOD
    if _HOROVOD is not None and hvd.is_initialized():
        # init_dist is called by several stages in one process: one rendezvous, one init
        _HOROVOD.compression, _HOROVOD.reason = compression, reason
        return _HOROVOD
    server = None
    info = job_env.slurm_launch_info()
    if not job_env.horovodrun_launched() and info is not None and info.size > 1 and not job_env.mpi_launched():
        if not hvd.gloo_built():
            raise RuntimeError("launched by srun without MPI and this Horovod has no gloo: use `srun --mpi=pmix` "
                               "with an MPI build of Horovod, or rebuild with HOROVOD_WITH_GLOO=1")
        server = setup_horovod_from_slurm(info)
    hvd.init()
    device = _pick_device(hvd.local_rank())
    _share_cpus(hvd.local_size())
    _HOROVOD = HorovodDist(hvd, device, server, compression, reason)
    return _HOROVOD


def _init_torch(compression: str, reason: str) -> TorchDist:
    if not td.is_initialized():
        info = job_env.slurm_launch_info()
        if "RANK" not in os.environ and info is not None:
            os.environ.update({"RANK": str(info.rank), "WORLD_SIZE": str(info.size),
                               "LOCAL_RANK": str(info.local_rank), "LOCAL_WORLD_SIZE": str(info.local_size)})
            os.environ.setdefault("MASTER_ADDR", job_env.node_address(info.nodes[0]))
            os.environ.setdefault("MASTER_PORT", str(rendezvous_port(info)))
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError("dist.backend=torch needs torchrun (or srun) to set RANK/WORLD_SIZE/MASTER_ADDR")
        device = _pick_device(int(os.environ.get("LOCAL_RANK", 0)))
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _share_cpus(int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    else:
        device = _pick_device(int(os.environ.get("LOCAL_RANK", 0)))
    return TorchDist(device, compression, reason)
