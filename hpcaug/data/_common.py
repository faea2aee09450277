"""What both loader backends share: the Batch, reading and checking encoded images, the
per-step programs, and the epoch/step bookkeeping that makes a loader resumable."""
from __future__ import annotations

import collections
import functools
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpcaug.config import Config

from . import _plan
from .index import SplitList

__all__ = ["Batch", "CorruptImageError", "ImageReader", "StepInput", "StepReader", "LoaderBase", "policy_steps",
           "sample_programs", "to_device"]


@dataclass
class Batch:
    """One step of a loader. Row `n * M + m` is image n under policy (copy) m.

    images: float32/float16 [N*M, 3, S, S], normalised, on the loader's device (on CUDA with
    channels_last memory when train.channels_last); labels, copy_ids: int64 [N*M] on the
    loader's device; choices, indices: int64 [N*M] always on the CPU (bookkeeping: counting
    them needs no device sync; indices = rows of the split list). N can be smaller than
    data.batch_size in the val loader's last step(s) and when data.on_corrupt=skip dropped
    samples.
    """

    images: torch.Tensor
    labels: torch.Tensor
    choices: torch.Tensor
    copy_ids: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class CorruptImageError(RuntimeError):
    """An image in a list cannot be read or decoded (and data.on_corrupt is 'error')."""


_SKIP_HINT = ("remove it from the list (re-run data_prep) or set data.on_corrupt: skip to skip and count "
              "such files (loader.skipped)")

_MAGIC: tuple[bytes, ...] = (b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"\x00\x00\x00\x0cjP")


def read_encoded(path: str) -> tuple[np.ndarray | None, str | None]:
    """The file's bytes, or None and why it cannot be used (missing, unreadable, not a whole image)."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        return None, "file not found (is the image root in dataset.json right?)"
    except OSError as e:
        return None, f"cannot read it ({e})"
    return buf, check_encoded(buf)


def check_encoded(buf: np.ndarray) -> str | None:
    """Why the bytes cannot be a whole image, or None if they look fine (cheap: no decode).

    Catches empty files, non-image files and truncated JPEGs (no end-of-image marker), the
    usual damage of an interrupted copy; a decode failure is caught later by the decoder.
    """
    if buf.size == 0:
        return "empty file"
    head = buf[:12].tobytes()
    if head.startswith(b"\xff\xd8\xff"):
        if buf.size >= 4 and buf[-2] == 0xFF and buf[-1] == 0xD9:  # the usual case: EOI is last
            return None
        if buf[-65536:].tobytes().rfind(b"\xff\xd9") < 0:  # allow trailing bytes after EOI
            return "truncated JPEG (no end-of-image marker)"
        return None
    if head.startswith(_MAGIC):
        return None
    return f"not an image file (starts with {head[:4]!r})"


@dataclass
class StepInput:
    """What one step reads: the kept rows, their encoded bytes and labels, and the programs."""

    step: int
    indices: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]
    encoded: list[np.ndarray]
    programs: list[Any]  # per copy: a policy Sampled (op_ids [n,K], params [n,K,3], choice [n])


class ImageReader:
    """Reads encoded images of a split with a small thread pool, checking each one.

    Bad files raise CorruptImageError (on_corrupt='error') or are left out and recorded in
    `skipped` (on_corrupt='skip'). `bad` holds rows found bad later by a decoder.
    """

    def __init__(self, split: SplitList, on_corrupt: str, threads: int) -> None:
        self.split = split
        self.on_corrupt = on_corrupt
        self.paths = split.abs_files()
        self.skipped: dict[int, str] = {}  # row -> reason
        self.bad: set[int] = set()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(threads, 8)), thread_name_prefix="hpcaug-read")

    def describe(self, row: int) -> str:
        return (f"{self.paths[row]!r} (line {row + 1} of {str(self.split.list_path)!r}, "
                f"label {int(self.split.labels[row])})")

    def fail(self, row: int, reason: str) -> None:
        """Record a bad row: raise in 'error' mode, count it in 'skip' mode."""
        if self.on_corrupt == "error":
            raise CorruptImageError(f"cannot use image {self.describe(row)}: {reason}; {_SKIP_HINT}")
        if row not in self.skipped:
            warnings.warn(f"hpcaug.data: skipping {self.describe(row)}: {reason}", RuntimeWarning, stacklevel=2)
        self.skipped[row] = reason
        self.bad.add(row)

    def _read(self, row: int) -> tuple[np.ndarray | None, str | None]:
        return read_encoded(self.paths[row])

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Encoded bytes of the good rows among `rows` (in order) and those rows."""
        rows = np.asarray([r for r in rows if int(r) not in self.bad], dtype=np.int64)
        results = list(self._pool.map(self._read, rows.tolist()))
        keep: list[int] = []
        bufs: list[np.ndarray] = []
        for row, (buf, why) in zip(rows.tolist(), results, strict=True):
            if why is not None or buf is None:
                self.fail(row, why or "unreadable")
                continue
            keep.append(row)
            bufs.append(buf)
        return np.asarray(keep, dtype=np.int64), bufs

    def check_paths(self, sample: int = 8) -> None:
        """Fail early (whatever on_corrupt says) when the list's paths do not resolve at all."""
        n = len(self.paths)
        if n == 0:
            raise ValueError(f"the list {str(self.split.list_path)!r} is empty; prepare the dataset again (data_prep)")
        rows = sorted({0, n - 1, *np.linspace(0, n - 1, num=min(sample, n)).astype(int).tolist()})
        missing = [r for r in rows if not os.path.exists(self.paths[r])]
        if len(missing) == len(rows):
            raise FileNotFoundError(
                f"none of the {len(rows)} images checked from {str(self.split.list_path)!r} exists "
                f"(e.g. {self.paths[missing[0]]!r}); the image root {str(self.split.root)!r} in dataset.json is "
                "wrong or the images moved: prepare the dataset again with the right --root")

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class StepReader:
    """Hands out the StepInputs of one epoch in order, preparing (reading + checking the files,
    sampling the programs) up to `depth` steps ahead of the one being taken on `pool`, a
    single background thread, so that file reading overlaps the training step instead of
    running inside it. depth 0 (or no pool): each step is prepared when taken, on the caller's
    thread. A step's error (CorruptImageError) is raised when that step is taken.
    """

    def __init__(self, prepare: Callable[[int], StepInput], start: int, end: int, depth: int,
                 pool: ThreadPoolExecutor | None) -> None:
        self._prepare, self._next, self._end = prepare, start, end
        self._depth = depth if pool is not None else 0
        self._pool = pool
        self._ahead: collections.deque[Future[StepInput]] = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < self._depth and self._next < self._end:
            self._ahead.append(self._pool.submit(self._prepare, self._next))  # type: ignore[union-attr]
            self._next += 1

    def take(self) -> StepInput | None:
        """The next step's input, or None after the epoch's last step."""
        if self._ahead:
            fut = self._ahead.popleft()
            self._fill()  # keep `depth` steps in flight while this one is finished and used
            return fut.result()
        if self._next >= self._end:
            return None
        self._next += 1
        return self._prepare(self._next - 1)

    def cancel(self) -> None:
        """Drop the steps read ahead (a rebuilt pipeline or an abandoned epoch re-reads them)."""
        for fut in self._ahead:
            fut.cancel()
        self._ahead.clear()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to CUDA through pinned memory without blocking the host."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def image_dtype(cfg: Config, device: torch.device) -> torch.dtype:
    """float16 with data.fp16, and on CUDA under train.amp (autocast casts the first layer's
    input to half precision anyway; fp16 holds normalised pixels finer than one grey level)."""
    return torch.float16 if cfg.data.fp16 or (device.type == "cuda" and cfg.train.amp) else torch.float32


def policy_steps(policies: Sequence[Any]) -> tuple[int, ...]:
    """K (program steps) of each policy, read from a one-sample draw."""
    return tuple(int(p.sample(1, torch.Generator().manual_seed(0)).op_ids.shape[1]) for p in policies)


def sample_programs(policies: Sequence[Any], n: int, seed: int, epoch: int, rank: int, step: int) -> list[Any]:
    """One program per image and copy: copy m draws from policies[m] (resume-exact generator)."""
    g = _plan.step_generator(seed, epoch, rank, step)
    return [p.sample(n, g) for p in policies]


def warn_empty_classes(split: SplitList, num_classes: int) -> None:
    counts = np.bincount(split.labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        warnings.warn(f"hpcaug.data: {empty.size} of {num_classes} classes have no image in "
                      f"{str(split.list_path)!r} (labels {empty[:10].tolist()}...); their outputs never train",
                      RuntimeWarning, stacklevel=3)


class LoaderBase:
    """Epoch/step bookkeeping shared by the train and val loaders of both backends.

    `state_dict()` = {epoch, step, samples}: step = batches already handed out in `epoch`. A
    loader given that state continues with the next batch of the same (seeded) epoch order.
    An epoch that is fully consumed moves the state to (epoch + 1, 0).
    """

    train: bool = True
    num_classes: int = 0  # set by the build_* functions from the dataset index

    def __init__(self, cfg: Config, split: SplitList, rank: int, world: int, device: torch.device) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} must be in 0..{world - 1} (world {world})")
        self.cfg = cfg
        self.split = split
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.batch_size = cfg.data.batch_size
        self.seed = cfg.data.seed
        self.epoch = 0
        self.step = 0
        # image format: float16 under AMP on CUDA; channels_last memory where the model uses it
        self.dtype = image_dtype(cfg, self.device)
        self.channels_last = self.device.type == "cuda" and cfg.train.channels_last
        self.read_ahead = cfg.data.read_ahead
        self._ahead_pool: ThreadPoolExecutor | None = None
        self.reader = ImageReader(split, cfg.data.on_corrupt, cfg.data.workers)
        self.reader.check_paths()

    # ---- plan ----
    def _steps(self, epoch: int) -> list[np.ndarray]:
        """Rows of the split read at each step of `epoch` by this rank."""
        if self.train:
            n = len(self.split)
            steps = _plan.train_steps(n, self.batch_size, self.world, self.cfg.train.steps_per_epoch)
            order = _plan.epoch_order(n, self.seed, epoch)
            return [_plan.train_step_indices(order, s, self.batch_size, self.rank, self.world) for s in range(steps)]
        return _plan.val_batches(len(self.split), self.batch_size, self.rank, self.world)

    def __len__(self) -> int:
        if self.train:
            return _plan.train_steps(len(self.split), self.batch_size, self.world, self.cfg.train.steps_per_epoch)
        return len(self._steps(0))

    @property
    def skipped(self) -> dict[int, str]:
        """Rows skipped as corrupt so far (data.on_corrupt=skip): row -> reason."""
        return self.reader.skipped

    # ---- state ----
    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` at its first step, unless the loader already stands in it (resume)."""
        if epoch != self.epoch:
            self.epoch, self.step = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "samples": self.step * self.batch_size * self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at state['step'] of state['epoch']; a changed world size or batch size is
        accepted when the samples already read form whole global batches of the new size."""
        self.epoch = int(state["epoch"])
        step = int(state["step"])
        samples = int(state.get("samples", step * self.batch_size * self.world))
        per_step = self.batch_size * self.world
        if samples != step * per_step:
            if samples % per_step:
                raise ValueError(f"cannot resume: {samples} samples of epoch {self.epoch} were read, which is not "
                                 f"a whole number of global batches of {per_step} (batch size x ranks changed); "
                                 "resume with the old data.batch_size and rank count, or from an epoch boundary")
            step = samples // per_step
        self.step = step
        if self.step > len(self):
            raise ValueError(f"cannot resume at step {self.step}: an epoch has {len(self)} steps")

    def __iter__(self) -> Iterator[Batch]:
        steps = self._steps(self.epoch)
        if self.step >= len(steps):  # a finished epoch that nobody advanced
            self.epoch, self.step = (self.epoch + 1, 0) if self.train else (self.epoch, 0)
            steps = self._steps(self.epoch)
        for batch in self._run(steps, self.step):
            self.step += 1
            yield batch
        if self.train:
            self.epoch, self.step = self.epoch + 1, 0
        else:
            self.step = 0

    def _run(self, steps: list[np.ndarray], start: int) -> Iterator[Batch]:
        raise NotImplementedError

    # ---- helpers for the backends ----
    def _prepare(self, steps: list[np.ndarray], epoch: int, policies: Sequence[Any], step: int) -> StepInput:
        rows, bufs = self.reader.read(steps[step])
        programs = sample_programs(policies, len(rows), self.seed, epoch, self.rank, step) if policies else []
        return StepInput(step=step, indices=rows, labels=self.split.labels[rows], encoded=bufs, programs=programs)

    def _step_reader(self, steps: list[np.ndarray], start: int) -> StepReader:
        """The steps of the current epoch from `start` on, read `self.read_ahead` steps ahead.
        The epoch and the policies are bound now, so a step read ahead is the step a resumed
        loader would read (same rows, same programs)."""
        if self.read_ahead > 0 and self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcaug-read-ahead")
        # through a weak proxy: the reader lives in the DALI feed, which the pipeline holds
        prepare = functools.partial(LoaderBase._prepare, weakref.proxy(self), steps, self.epoch,
                                    tuple(getattr(self, "policies", ())))
        return StepReader(prepare, start, len(steps), self.read_ahead, self._ahead_pool)

    def close(self) -> None:
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=False, cancel_futures=True)
            self._ahead_pool = None
        self.reader.close()


class TrainPolicies:
    """The train loaders' half shared by both backends: M = len(policies) augmentation policies.

    Mixed in before a backend's loader class (`class DaliTrainLoader(TrainPolicies, _DaliLoader)`).
    """

    train = True
    policies: tuple[Any, ...]

    def __init__(self, cfg: Config, split: SplitList, policies: Sequence[Any], rank: int, world: int,
                 device: torch.device) -> None:
        super().__init__(cfg, split, rank, world, device)  # type: ignore[call-arg]
        self.set_policies(policies)

    def set_policies(self, policies: Sequence[Any]) -> None:
        """Use these policies from the next epoch (or the next iter) on; M is fixed per loader."""
        if len(policies) < 1:
            raise ValueError("build_train_loader needs at least one policy (hpcaug.ops.policy.NoPolicy() for none)")
        if self.policies and len(policies) != len(self.policies):
            raise ValueError(f"set_policies got {len(policies)} policies but the loader was built for "
                             f"M = {len(self.policies)} copies; build a new loader to change M")
        self.policies = tuple(policies)
        self.copies = len(self.policies)
