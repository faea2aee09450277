"""DALI train and val loaders: one pipeline definition, `mixed` (GPU) or `cpu` decode.

The sample order is not DALI's: Python reads each step's files (the plan in _plan.py),
checks them, samples the step's programs and feeds encoded bytes + labels + programs to the
pipeline through one external_source. DALI decodes, crops, flips, colour-jitters, applies
the programs (hpcaug.ops.dali_backend) and normalises. Labels, choices and rows travel
through the pipeline beside the images, so they cannot get out of step with them.

DALI (nvidia.dali, and hpcaug.ops.dali_backend, which imports it) is imported inside the
functions that build or read a pipeline: it is an optional extra (`hpcaug[dali]`) and takes
~0.7 s to import, and hpcaug.data imports this module for every loader, torch backend too.
"""
from __future__ import annotations

import collections
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from hpcaug.config import Config
from hpcaug.ops.table import op_id

from ._common import Batch, CorruptImageError, LoaderBase, StepInput, StepReader, TrainPolicies, policy_steps, to_device
from .index import SplitList

__all__ = ["DaliTrainLoader", "DaliValLoader", "decode_device", "pipelines_alive"]

_WITH_PIPELINE: weakref.WeakSet[_DaliLoader] = weakref.WeakSet()


def pipelines_alive() -> bool:
    """Whether a DALI pipeline of one of our loaders exists in this process (forking then is unsafe)."""
    return any(ld._pipe is not None for ld in list(_WITH_PIPELINE))


def _shutdown(pipe: Any) -> None:
    """Stop a pipeline's threads now instead of when the last reference goes (maybe only at a
    garbage collection: a pipeline left as cyclic garbage and copied into a forked child is
    destroyed by the child's collector, and DALI's destructor then blocks for ever)."""
    stop = getattr(pipe, "_shutdown", None)  # what Pipeline.__del__ calls
    if stop is not None:
        stop()


def _np(x: Any, dtype: Any) -> np.ndarray:
    """A numpy array of `dtype` from a torch tensor or array-like (a copy: it is modified)."""
    if isinstance(x, torch.Tensor):  # np.asarray(tensor) warns under numpy 2 (no copy= in __array__)
        return x.detach().cpu().numpy().astype(dtype, copy=True)
    return np.array(x, dtype=dtype, copy=True)


warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"nvidia\.dali.*")


def decode_device(device: torch.device) -> str:
    """'mixed' (nvJPEG on the GPU) for a CUDA device, else 'cpu'."""
    return "mixed" if device.type == "cuda" else "cpu"


def _device_id(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None  # DALI CPU-only mode (types.CPU_ONLY_DEVICE_ID raises in DALI 2.4)
    return device.index if device.index is not None else torch.cuda.current_device()


def _to_torch(tl: Any, device: torch.device) -> torch.Tensor:
    """A dense DALI TensorList -> a torch tensor of its own (copied): a GPU list (images with
    `mixed` decode) on `device`, copied on torch's current stream without a host sync; a CPU
    list (labels etc., all outputs in CPU mode) on the CPU."""
    from nvidia.dali.backend import TensorListGPU  # DALI: see the module docstring
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    t = tl.as_tensor()
    on_gpu = isinstance(tl, TensorListGPU)
    out = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=device if on_gpu else "cpu")
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(device) if on_gpu else None)
    return out


def _decoder_hints(decode: str) -> dict[str, int]:
    """nvJPEG memory hints from NVIDIA's ResNet-50 DALI examples: padded device/host buffers and
    a preallocation for the largest ImageNet image (5980 x 6430, hardware decoder), so that the
    buffers are not reallocated (a sync) whenever a bigger image arrives. `mixed` only."""
    if decode != "mixed":
        return {}
    return {"device_memory_padding": 211025920, "host_memory_padding": 140544512,
            "preallocate_width_hint": 5980, "preallocate_height_hint": 6430}


@dataclass(frozen=True)
class _Format:
    """How a pipeline decodes and what it emits: `mixed`/`cpu` decode, image dtype, and HWC
    (becomes channels_last NCHW by a free permute) or CHW."""

    decode: str
    fp16: bool
    hwc: bool
    hints: dict[str, int] = field(default_factory=dict)

    def normalize(self, x: Any, **kw: Any) -> Any:
        from nvidia.dali import fn, types  # DALI: see the module docstring

        return fn.crop_mirror_normalize(x, dtype=types.FLOAT16 if self.fp16 else types.FLOAT,
                                        output_layout="HWC" if self.hwc else "CHW", **kw)


def _dali_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([0xDA11, *map(int, parts)]).generate_state(1)[0] & 0x7FFFFFFF)


def _train_pipeline(cfg: Config, source: Any, steps: Sequence[tuple[int, frozenset[str]] | None], fmt: _Format,
                    **kw: Any) -> Any:
    """The train pipeline: decode -> per copy (random resized crop, colour, program, flip +
    normalise). `steps[m]` = (K, the ops policy m can emit) of copy m's programs, None for none."""
    from nvidia.dali import fn, pipeline_def, types  # DALI: see the module docstring

    d = cfg.data
    copies = len(steps)
    area = [float(d.crop_scale[0]), float(d.crop_scale[1])]
    ratio = [3.0 / 4.0, 4.0 / 3.0]
    s = d.image_size
    dev = fmt.decode

    @pipeline_def(enable_conditionals=True)
    def pipe() -> Any:
        n_prog = sum(bool(k) for k in steps)
        outs = fn.external_source(source=source, num_outputs=4 + 2 * n_prog, batch=True,
                                  dtype=[types.UINT8, types.INT64, types.INT64, types.INT64]
                                  + [types.INT64, types.FLOAT] * n_prog)
        enc, labels, choices, rows = outs[:4]
        if copies == 1:  # decode only the crop window (libjpeg-turbo / nvJPEG ROI decode)
            crops = [fn.resize(fn.decoders.image_random_crop(enc, device=dev, output_type=types.RGB,
                                                             random_area=area, random_aspect_ratio=ratio,
                                                             num_attempts=10, **fmt.hints),
                               resize_x=s, resize_y=s)]
        else:  # decode once, then an independent crop per copy
            img = fn.decoders.image(enc, device=dev, output_type=types.RGB, **fmt.hints)
            crops = [fn.random_resized_crop(img, size=(s, s), random_area=area, random_aspect_ratio=ratio,
                                            num_attempts=10) for _ in range(copies)]
        images = []
        for m, x in enumerate(crops):
            if d.color_jitter > 0:
                lo, hi = max(0.0, 1.0 - d.color_jitter), 1.0 + d.color_jitter
                x = fn.color_twist(x, brightness=fn.random.uniform(range=[lo, hi]),
                                   contrast=fn.random.uniform(range=[lo, hi]),
                                   saturation=fn.random.uniform(range=[lo, hi]))
            step = steps[m]
            if step:
                from hpcaug.ops import dali_backend  # imports DALI: see the module docstring

                j = 4 + 2 * sum(bool(k) for k in steps[:m])
                k, ops = step
                x = dali_backend.apply_program(x, outs[j], outs[j + 1], num_steps=k, augmentations=ops, shape=(s, s))
            mirror = fn.random.coin_flip() if d.flip else 0
            images.append(fmt.normalize(x, mean=list(d.mean), std=list(d.std), mirror=mirror))
        return (*images, labels, choices, rows)

    return pipe(**kw)


def _val_pipeline(cfg: Config, source: Any, fmt: _Format, **kw: Any) -> Any:
    """The val pipeline: decode -> resize shorter side to data.val_resize -> centre crop -> normalise."""
    from nvidia.dali import fn, pipeline_def, types  # DALI: see the module docstring

    d = cfg.data

    @pipeline_def
    def pipe() -> Any:
        enc, labels, choices, rows = fn.external_source(source=source, num_outputs=4, batch=True,
                                                        dtype=[types.UINT8, types.INT64, types.INT64, types.INT64])
        x = fn.decoders.image(enc, device=fmt.decode, output_type=types.RGB, **fmt.hints)
        x = fn.resize(x, resize_shorter=d.val_resize)
        x = fmt.normalize(x, crop=(d.image_size, d.image_size), mean=list(d.mean), std=list(d.std))
        return x, labels, choices, rows

    return pipe(**kw)


_PAIRING_ID = int(op_id("SamplePairing"))


class _Feed:
    """The external_source callable: hands DALI the steps of one epoch in order.

    DALI calls it on the training thread (inside `pipe.run()`), so it only takes steps that
    the loader's StepReader has read ahead on its background thread. `pending` holds the
    StepInput of every step handed to DALI and not yet returned by it; steps whose samples
    were all skipped are queued with n == 0 and never reach DALI.
    """

    def __init__(self, loader: _DaliLoader, steps: list[np.ndarray], start: int) -> None:
        # a proxy, not a reference: loader -> pipeline -> feed -> loader would be a cycle that
        # keeps the pipeline (and its threads) alive until the garbage collector runs
        self.loader = weakref.proxy(loader)
        self.reader: StepReader | None = None
        self.restart(steps, start)

    def restart(self, steps: list[np.ndarray], start: int) -> None:
        """Feed `steps` from `start` on (a new epoch on a reused pipeline)."""
        self.cancel()
        self.next = start  # the first step not yet handed to DALI
        self.reader = self.loader._step_reader(steps, start)
        self.pending: collections.deque[StepInput] = collections.deque()
        self.error: Exception | None = None

    def cancel(self) -> None:
        if self.reader is not None:
            self.reader.cancel()

    def __call__(self) -> tuple[Any, ...]:
        assert self.reader is not None
        try:
            while (inp := self.reader.take()) is not None:
                self.next = inp.step + 1
                self.pending.append(inp)
                if len(inp.indices):
                    return self.loader._feed_arrays(inp)
        except Exception as e:  # noqa: BLE001  kept so that the loader re-raises it as it was
            self.error = e
            raise
        raise StopIteration


class _DaliLoader(LoaderBase):
    """Runs a pipeline over the steps of an epoch; rebuilds it after a decode error or an
    abandoned epoch, restarting at the first step not yet handed out."""

    copies = 1
    policies: tuple[Any, ...] = ()

    def __init__(self, cfg: Config, split: SplitList, rank: int, world: int, device: torch.device) -> None:
        super().__init__(cfg, split, rank, world, device)
        self._pipe: Any = None
        self._feed: _Feed | None = None
        self._key: Any = None

    # subclasses: the pipeline and how a StepInput becomes external_source arrays
    def _build(self, source: _Feed, **kw: Any) -> Any:
        raise NotImplementedError

    def _pipe_key(self) -> Any:
        return None

    def _feed_arrays(self, inp: StepInput) -> tuple[Any, ...]:
        n = len(inp.indices)
        labels = [np.array([v], np.int64) for v in inp.labels]
        rows = [np.array([v], np.int64) for v in inp.indices]
        if inp.programs:
            ch = np.stack([_np(p.choice, np.int64).reshape(n) for p in inp.programs], 1)
        else:
            ch = np.full((n, 1), -1, np.int64)
        out: list[Any] = [inp.encoded, labels, list(ch), rows]
        for p, used in zip(inp.programs, self._key or (), strict=False):  # no key: no programs fed
            if used:
                ids, prm = _np(p.op_ids, np.int64), _np(p.params, np.float32)
                if n < self.batch_size:  # SamplePairing partner = floor(u1 * max batch): keep it in this batch
                    prm[..., 1] = np.where(ids == _PAIRING_ID, prm[..., 1] * (n - 1e-3) / self.batch_size,
                                           prm[..., 1])
                out += [list(ids), list(prm)]
        return tuple(out)

    def _start(self, steps: list[np.ndarray], start: int) -> None:
        """A fresh pipeline whose feed begins at `start` (seeded by epoch and start step)."""
        self.close_pipeline()  # stop the old pipeline's threads first
        self._feed = _Feed(self, steps, start)
        kw = dict(batch_size=self.batch_size, num_threads=self.cfg.data.workers, device_id=_device_id(self.device),
                  seed=_dali_seed(self.seed, self.rank, self.epoch, start), prefetch_queue_depth=2)
        self._key = self._pipe_key()
        self._pipe = self._build(self._feed, **kw)
        self._pipe.build()
        _WITH_PIPELINE.add(self)

    def _run(self, steps: list[np.ndarray], start: int) -> Iterator[Batch]:
        if self._pipe is not None and self._feed is not None and self._key == self._pipe_key():
            self._feed.restart(steps, start)  # the last epoch ended cleanly: reuse its pipeline
        else:
            self._start(steps, start)
        clean = False
        try:
            while True:
                feed = self._feed
                assert feed is not None
                while feed.pending and len(feed.pending[0].indices) == 0:
                    yield self._empty(feed.pending.popleft())
                try:
                    outs = self._pipe.run()
                except StopIteration:
                    self._pipe.reset()
                    break
                except Exception as err:
                    if feed.error is not None:  # raised by our own feed (e.g. CorruptImageError)
                        raise feed.error from None
                    # a decode failure: find the file, then raise or skip it
                    restart = self._on_error(err, feed)
                    self._start(steps, restart)
                    continue
                while feed.pending and len(feed.pending[0].indices) == 0:
                    yield self._empty(feed.pending.popleft())
                inp = feed.pending.popleft()
                yield self._batch(outs, inp)
            while self._feed is not None and self._feed.pending:
                yield self._empty(self._feed.pending.popleft())
            clean = True
        finally:
            if not clean:  # abandoned or failed mid-epoch: in-flight batches would be stale next time
                self.close_pipeline()

    def close_pipeline(self) -> None:
        """Free the DALI pipeline (and its threads) and drop the steps read ahead; the next
        epoch builds a new one. A process that forks while a DALI pipeline lives can hang; the
        torch loader never forks this process."""
        pipe, feed, self._pipe, self._feed = self._pipe, self._feed, None, None
        if feed is not None:
            feed.cancel()
        if pipe is not None:
            _shutdown(pipe)

    def close(self) -> None:
        self.close_pipeline()
        super().close()

    def _on_error(self, err: Exception, feed: _Feed) -> int:
        """Decode every in-flight file to find the bad ones; raise (error) or mark them (skip).
        Returns the step to restart at."""
        bad: list[tuple[int, str]] = []
        for inp in feed.pending:
            for row, buf in zip(inp.indices.tolist(), inp.encoded, strict=True):
                try:
                    decode_image(torch.from_numpy(buf), mode=ImageReadMode.RGB)
                except Exception as e:  # noqa: BLE001  any decoder complaint marks the file bad
                    bad.append((row, f"cannot be decoded ({str(e).splitlines()[0][:200]})"))
        if not bad:
            raise RuntimeError(f"the DALI pipeline failed on a batch whose files all decode with torchvision: "
                               f"{err}") from err
        for row, why in bad:
            try:
                self.reader.fail(row, why)
            except CorruptImageError as e:
                raise e from err
        return feed.pending[0].step if feed.pending else feed.next

    def _format(self) -> _Format:
        decode = decode_device(self.device)
        return _Format(decode, self.dtype == torch.float16, self.channels_last, _decoder_hints(decode))

    def _empty(self, inp: StepInput) -> Batch:
        s = self.cfg.data.image_size
        z = torch.zeros(0, dtype=torch.int64)
        return Batch(torch.zeros(0, 3, s, s, dtype=self.dtype, device=self.device), z.clone().to(self.device),
                     z.clone(), z.clone().to(self.device), z.clone())

    def _batch(self, outs: Any, inp: StepInput) -> Batch:
        """Batch from the pipeline's outputs: images stay where DALI made them (no host sync);
        labels, choices and rows are CPU outputs: the rows are checked on the CPU, the labels
        go to the device through pinned memory."""
        copies = self.copies
        imgs = [_to_torch(o, self.device) for o in outs[:copies]]
        n = imgs[0].shape[0]
        images = imgs[0] if copies == 1 else torch.stack(imgs, 1).reshape(n * copies, *imgs[0].shape[1:])
        if self.channels_last:  # [N*M, S, S, 3] -> NCHW shape over NHWC memory (channels_last), no copy
            images = images.permute(0, 3, 1, 2)
        labels = _to_torch(outs[copies], self.device).reshape(n)
        choices = _to_torch(outs[copies + 1], self.device).reshape(n * copies)
        rows = _to_torch(outs[copies + 2], self.device).reshape(n)
        if not torch.equal(rows, torch.from_numpy(inp.indices)):
            raise RuntimeError("internal error: DALI outputs out of step with the fed rows")  # never expected
        return Batch(images=images, labels=to_device(labels.repeat_interleave(copies), self.device),
                     choices=choices, copy_ids=torch.arange(copies, device=self.device).repeat(n),
                     indices=rows.repeat_interleave(copies))


class DaliTrainLoader(TrainPolicies, _DaliLoader):
    """Train loader (see hpcaug.data.build_train_loader)."""

    def _pipe_key(self) -> Any:
        # the graph depends on the ops a policy kind can emit, not on this epoch's policies
        return tuple((k, p.augmentations) if p.augmentations and k > 0 else None
                     for p, k in zip(self.policies, policy_steps(self.policies), strict=True))

    def _build(self, source: _Feed, **kw: Any) -> Any:
        return _train_pipeline(self.cfg, source, self._key, self._format(), **kw)


class DaliValLoader(_DaliLoader):
    """Val loader (see hpcaug.data.build_val_loader)."""

    train = False

    def _build(self, source: _Feed, **kw: Any) -> Any:
        return _val_pipeline(self.cfg, source, self._format(), **kw)
