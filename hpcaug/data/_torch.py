"""The torchvision fallback loaders (data.backend: torch): same plans, same Batch.

A DataLoader over *steps*: worker processes read, decode (torchvision.io), crop, flip and
colour-jitter a whole step and apply its programs with hpcaug.ops.torch_backend (batched,
grouped by op); the main process normalises on the target device. Every random draw of a
step comes from a generator seeded by (seed, epoch, rank, step), so a step's pixels do not
depend on which worker made it.
"""
from __future__ import annotations

import ctypes
import functools
import math
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing import forkserver, spawn
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from hpcaug.config import Config
from hpcaug.ops import torch_backend

from . import _plan
from ._common import Batch, CorruptImageError, LoaderBase, TrainPolicies, read_encoded, sample_programs, to_device
from .index import SplitList

__all__ = ["LoaderTimeoutError", "TorchTrainLoader", "TorchValLoader", "worker_timeout"]

# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which has no CPU wheel here
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

_CROP_SALT = 0xC80


def _crop_box(h: int, w: int, scale: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    """Inception random-resized-crop box (top, left, height, width): torchvision's algorithm,
    drawn from `g`."""
    area = h * w
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        ratio = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h  # fallback: the central crop of the allowed aspect ratios
    if in_ratio < 3 / 4:
        cw, ch = w, int(round(w / (3 / 4)))
    elif in_ratio > 4 / 3:
        ch, cw = h, int(round(h * (4 / 3)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


# Seconds the loader waits for one step from its DataLoader workers before it gives up with
# LoaderTimeoutError (a stuck worker would otherwise hang the job until its time limit).
WORKER_TIMEOUT_ENV = "HPCAUG_LOADER_TIMEOUT"
DEFAULT_WORKER_TIMEOUT_S = 600.0


class LoaderTimeoutError(RuntimeError):
    """The torch loader's DataLoader workers delivered no step within the timeout."""


def worker_timeout() -> float:
    raw = os.environ.get(WORKER_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_WORKER_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{WORKER_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{WORKER_TIMEOUT_ENV}={raw!r} must be > 0 seconds")
    return value


_TLS = threading.local()
_PATCH_LOCK = threading.Lock()


def _skip_main_in_workers() -> None:
    """Let the workers we start skip the re-import of the parent's `__main__`.

    A spawn/forkserver child normally re-runs the parent's main script (as `__mp_main__`) so
    that objects defined there unpickle; a script without the `if __name__ == "__main__":`
    guard (horovodrun/srun drivers, notebooks exported as scripts) would then run again in
    every worker. Our workers need nothing from `__main__` (the dataset, the policies and
    torch's worker loop live in importable modules), so the preparation data of *our* worker
    processes (flagged per thread) leaves the main module out; other processes are unchanged.
    """
    with _PATCH_LOCK:
        if getattr(spawn.get_preparation_data, "_hpcaug_skip_main", False):
            return
        original = spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data = original(name)
            if getattr(_TLS, "skip_main", False):
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data._hpcaug_skip_main = True  # type: ignore[attr-defined]
        spawn.get_preparation_data = get_preparation_data


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        _TLS.skip_main = True
        try:
            return multiprocessing.context.ForkServerProcess._Popen(process_obj)
        finally:
            _TLS.skip_main = False


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess


def _worker_context() -> tuple[Any, int]:
    """DataLoader workers come from Python's forkserver: a process started fresh (fork + exec)
    that only imports this module, and forks a worker per request. A worker forked from *this*
    process would inherit whatever it holds: a DALI pipeline (DALI's threads are gone in the
    child; if the child's garbage collector frees a pipeline it inherited as cyclic garbage,
    DALI's destructor blocks for ever), locks held by other threads, Horovod/OpenMP state.
    The preload makes a worker start in milliseconds; if other code started the forkserver
    without it, workers import torch themselves (slower, just as safe). Workers do not re-run
    the parent's main script (see _skip_main_in_workers).

    Returns the context and the forkserver's pid (workers tie their life to it: _die_with_server)."""
    _skip_main_in_workers()
    ctx = _WorkerContext()
    ctx.set_forkserver_preload(["hpcaug.data._torch", "hpcaug.ops.torch_backend"])
    forkserver.ensure_running()
    return ctx, int(forkserver._forkserver._forkserver_pid)  # type: ignore[attr-defined]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_server(server_pid: int, worker_id: int) -> None:
    """DataLoader worker_init_fn: a worker must not outlive the process that loads the data.

    The forkserver exits when every holder of its "alive" pipe is gone, and each worker it
    forks inherits that pipe's write end; a worker's torch watchdog in turn watches only its
    parent, the forkserver. So after the loading process was killed, server and workers kept
    each other alive for ever (seen: orphans of killed Horovod ranks, ~855 MB each). The
    worker closes its copy of the pipe (the server then exits with the loading process) and
    asks the kernel for SIGKILL when the server exits; if the server is already gone it exits.
    """
    server: Any = forkserver._forkserver  # private: typeshed does not declare its alive fd
    if server._forkserver_alive_fd is not None:  # our workers start no processes of their own
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != server_pid:  # the server died before the prctl: no signal will come
        os._exit(1)


class _Steps(Dataset[dict[str, Any]]):
    """Item s = the whole step s of an epoch, as uint8 images + metadata."""

    def __init__(self, cfg: Config, split: SplitList, steps: list[np.ndarray], policies: Sequence[Any],
                 epoch: int, rank: int, train: bool, bad: set[int]) -> None:
        self.cfg, self.steps, self.policies = cfg, steps, tuple(policies)
        self.paths, self.labels = split.abs_files(), split.labels
        self.epoch, self.rank, self.train, self.bad = epoch, rank, train, set(bad)
        self.list_path = str(split.list_path)

    def __len__(self) -> int:
        return len(self.steps)

    def describe(self, row: int) -> str:
        return f"{self.paths[row]!r} (line {row + 1} of {self.list_path!r}, label {int(self.labels[row])})"

    def _decode(self, row: int) -> tuple[torch.Tensor | None, str | None]:
        buf, why = read_encoded(self.paths[row])
        if buf is None or why:
            return None, why
        try:
            return decode_image(torch.from_numpy(buf), mode=ImageReadMode.RGB), None
        except Exception as e:  # noqa: BLE001  any decoder complaint marks the file bad
            return None, f"cannot be decoded ({str(e).splitlines()[0][:200]})"

    def _train_view(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        d = self.cfg.data
        top, left, h, w = _crop_box(img.shape[-2], img.shape[-1], d.crop_scale, g)
        x = F.resized_crop(img, top, left, h, w, [d.image_size, d.image_size], antialias=True)
        if d.color_jitter > 0:
            lo, hi = max(0.0, 1.0 - d.color_jitter), 1.0 + d.color_jitter
            b, c, s = (float(v) for v in torch.empty(3).uniform_(lo, hi, generator=g))
            x = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(x, b), c), s)
        if d.flip and float(torch.rand(1, generator=g)) < 0.5:
            x = x.flip(-1)
        return x

    def _val_view(self, img: torch.Tensor) -> torch.Tensor:
        d = self.cfg.data
        x = F.resize(img, [d.val_resize], antialias=True)
        return F.center_crop(x, [d.image_size, d.image_size])

    def __getitem__(self, step: int) -> dict[str, Any]:
        d = self.cfg.data
        rows, imgs, skipped = [], [], []
        for row in self.steps[step].tolist():
            if row in self.bad:
                continue
            img, why = self._decode(row)
            if img is None:
                if d.on_corrupt == "error":
                    raise CorruptImageError(f"cannot use image {self.describe(row)}: {why}; remove it from the list "
                                            "(re-run data_prep) or set data.on_corrupt: skip to skip and count such "
                                            "files (loader.skipped)")
                skipped.append((row, why))
                continue
            rows.append(row)
            imgs.append(img)
        n, s = len(rows), d.image_size
        copies = len(self.policies) if self.train else 1
        out = torch.empty(n, copies, 3, s, s, dtype=torch.uint8)
        choices = torch.full((n, copies), -1, dtype=torch.int64)
        if self.train:
            g = _plan.step_generator(d.seed ^ _CROP_SALT, self.epoch, self.rank, step)
            for i, img in enumerate(imgs):
                for m in range(copies):
                    out[i, m] = self._train_view(img, g)
            programs = sample_programs(self.policies, n, d.seed, self.epoch, self.rank, step)
            for m, (p, prog) in enumerate(zip(self.policies, programs, strict=True)):
                choices[:, m] = torch.as_tensor(prog.choice, dtype=torch.int64).reshape(n)
                if n and getattr(p, "kind", "") != "none":
                    out[:, m] = torch_backend.apply_program(out[:, m].contiguous(), prog.op_ids, prog.params)
        else:
            for i, img in enumerate(imgs):
                out[i, 0] = self._val_view(img)
        r = torch.as_tensor(rows, dtype=torch.int64)
        return {"images": out.reshape(n * copies, 3, s, s), "labels": torch.from_numpy(self.labels[rows]),
                "choices": choices.reshape(n * copies), "rows": r, "copies": copies, "skipped": skipped}


class _TorchLoader(LoaderBase):
    policies: tuple[Any, ...] = ()
    copies = 1

    def _run(self, steps: list[np.ndarray], start: int) -> Iterator[Batch]:
        d = self.cfg.data
        ds = _Steps(self.cfg, self.split, steps, self.policies, self.epoch, self.rank, self.train, self.reader.bad)
        workers = d.workers if len(steps) - start > 1 else 0
        timeout = worker_timeout() if workers else 0
        ctx, server = _worker_context() if workers else (None, 0)
        dl = DataLoader(ds, batch_size=None, sampler=range(start, len(steps)), num_workers=workers,
                        pin_memory=self.device.type == "cuda", prefetch_factor=2 if workers else None,
                        multiprocessing_context=ctx, timeout=timeout,
                        worker_init_fn=functools.partial(_die_with_server, server) if workers else None)
        mean = to_device(torch.tensor(d.mean).view(1, 3, 1, 1), self.device)
        inv_std = to_device(1.0 / torch.tensor(d.std).view(1, 3, 1, 1), self.device)
        it = iter(dl)
        step = start
        try:
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    break
                except RuntimeError as e:
                    if workers and "timed out" in str(e):
                        raise LoaderTimeoutError(
                            f"hpcaug.data (torch backend): the {workers} DataLoader workers made no batch in "
                            f"{timeout:g} s (step {step} of epoch {self.epoch}, rank {self.rank}); a worker is "
                            f"stuck or far too slow. For steps that really take longer, set {WORKER_TIMEOUT_ENV} "
                            "(seconds)") from e
                    raise
                for row, why in item["skipped"]:
                    self.reader.fail(row, why)
                m, n, dev = item["copies"], item["rows"].shape[0], self.device
                x = item["images"].to(dev, non_blocking=True)  # pinned by the DataLoader on CUDA
                if self.channels_last:  # on the uint8 images (4x less to move); the ops below keep it
                    x = x.contiguous(memory_format=torch.channels_last)
                images = ((x.float() - mean) * inv_std).to(self.dtype)
                step += 1
                yield Batch(images=images, labels=to_device(item["labels"].repeat_interleave(m), dev),
                            choices=item["choices"], copy_ids=torch.arange(m, device=dev).repeat(n),
                            indices=item["rows"].repeat_interleave(m))
        finally:  # stop the workers now (an abandoned or failed epoch too), not when `it` is collected
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it


class TorchTrainLoader(TrainPolicies, _TorchLoader):
    """Train loader on torchvision + the ops torch backend (see build_train_loader)."""


class TorchValLoader(_TorchLoader):
    """Val loader on torchvision (see build_val_loader)."""

    train = False
