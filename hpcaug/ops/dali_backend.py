"""DALI backend: the op table's elements as DALI operators, one op per sample chosen in-graph.

`apply_program(images, op_ids, params)` works on DataNodes inside any pipeline defined with
`enable_conditionals=True`: images are HWC uint8 (RGB) samples, op_ids int64 [K] and params
float32 [K, 3] per sample (fed by `fn.external_source` from a policy's `sample`). At every step
the batch is split among the ops by a binary tree of per-sample `if`s (the
`nvidia.dali.auto_aug.core.select` scheme); each op (declared with `@IMPLS(name)` beside it) is
plain DALI arithmetic or one operator. The same code runs on CPU (`device_id=None`) and on GPU:
the images' device decides where the pixel work runs, the per-sample parameters stay on the CPU.

`run_program(images, op_ids, params)` runs a standalone pipeline on a torch uint8 NCHW batch
(tests, benchmarks). Differences to the torch backend are measured in tests/test_ops_backends.py
and listed in docs/ops.md.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline

from . import torch_backend
from ._formulas import GRAY, SHARPEN_KERNEL, affine_coeffs
from .table import FILL, IDENTITY, OP_NAMES, OPS, Implementations, op_id
from .torch_backend import check_program

warnings.filterwarnings("ignore", category=DeprecationWarning, module="nvidia.dali")

_Branch = Callable[[DataNode, dict[str, Any]], DataNode]
IMPLS: Implementations[_Branch] = Implementations("DALI")  # op id -> (images, step values) -> images


def _u8(x: DataNode) -> DataNode:
    """float -> uint8 with the torch backend's rounding (floor(x + 0.5), clamped to 0..255)."""
    return fn.cast(dmath.clamp(dmath.floor(x + 0.5), 0.0, 255.0), dtype=types.UINT8)


def _f32(x: DataNode) -> DataNode:
    return fn.cast(x, dtype=types.FLOAT)


def _gpu(x: DataNode) -> bool:
    return getattr(x, "device", "cpu") == "gpu"


def _on(node: DataNode, like: DataNode) -> DataNode:
    """Move a per-sample parameter to the images' device when it enters pixel arithmetic."""
    return node.gpu() if getattr(like, "device", "cpu") == "gpu" and node.device == "cpu" else node


# ------------------------------------------------------------------------------------ the ops
# Each op gets x (the images of its branch) and s: "op", "v", "u1", "u2" (per-sample CPU
# scalars), "h", "w" (the images' size: CPU scalars or Python floats), "hw" (int32 [2] on the
# CPU) and, where SamplePairing is built, "partner" (the partner images).
def _identity(x: DataNode, s: dict[str, Any]) -> DataNode:
    return x


@IMPLS("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
def _geometric(x: DataNode, s: dict[str, Any]) -> DataNode:
    """One warp_affine with the shared destination->source map (all five ops: one branch)."""
    m = affine_coeffs(s["op"], s["v"], s["h"], s["w"], dmath.cos, dmath.sin, lambda t: dmath.floor(t + 0.5))
    matrix = fn.reshape(fn.stack(*m), shape=[2, 3])
    return fn.warp_affine(x, matrix=matrix, fill_value=float(FILL), interp_type=types.INTERP_NN,
                          inverse_map=True)


def _gray(xf: DataNode) -> DataNode:
    return fn.reductions.sum(xf * types.Constant(np.array(GRAY, np.float32)), axes=[2], keep_dims=True)


@IMPLS("Color")
def _color(x: DataNode, s: dict[str, Any]) -> DataNode:
    if not _gpu(x):
        f = s["v"]
        g = [(1.0 - f) * c for c in GRAY]
        m = fn.stack(f + g[0], g[1], g[2], g[0], f + g[1], g[2], g[0], g[1], f + g[2])
        return fn.coord_transform(x, M=fn.reshape(m, shape=[3, 3]), dtype=types.UINT8)
    xf = _f32(x)
    g = _gray(xf)
    return _u8(g + _on(s["v"], x) * (xf - g))


@IMPLS("Contrast")
def _contrast(x: DataNode, s: dict[str, Any]) -> DataNode:
    if _gpu(x):
        xf = _f32(x)
        mean = fn.reductions.mean(_gray(xf), axes=[0, 1, 2])
        return _u8(mean + _on(s["v"], x) * (xf - mean))
    # CPU: uint8 -> uint8 in one pass (float arithmetic + fn.cast to uint8 cost ~1 ms/img on
    # DALI's CPU); brightness_contrast rounds half away from zero = our floor(x + 0.5) here
    means = fn.reductions.mean(x, axes=[0, 1])  # per channel
    mean = means[0] * GRAY[0] + means[1] * GRAY[1] + means[2] * GRAY[2]
    return fn.brightness_contrast(x, contrast=s["v"], contrast_center=mean)


@IMPLS("Brightness")
def _brightness(x: DataNode, s: dict[str, Any]) -> DataNode:
    if _gpu(x):  # the GPU kernel rounds half to even: keep floor(x + 0.5)
        return _u8(_f32(x) * _on(s["v"], x))
    return fn.brightness_contrast(x, brightness=s["v"])


@IMPLS("Sharpness")
def _sharpness(x: DataNode, s: dict[str, Any]) -> DataNode:
    """PIL: blend with the SMOOTH-filtered image (rounded); the 1-pixel border keeps the input."""
    k = np.array(SHARPEN_KERNEL, np.float32) / 13.0
    blur = fn.filter(x, k, mode="valid")  # (H-2, W-2, C) uint8, rounded
    d = _f32(blur) - _f32(x[1:-1, 1:-1])
    dpad = fn.slice(d, start=types.Constant(np.array([-1, -1], np.int32)), shape=s["hw"], axes=[0, 1],
                    out_of_bounds_policy="pad", fill_values=0.0)
    return _u8(_f32(x) + (1.0 - _on(s["v"], x)) * dpad)


@IMPLS("Posterize")
def _posterize(x: DataNode, s: dict[str, Any]) -> DataNode:
    bits = dmath.floor(s["v"] + 0.5)
    mask = fn.cast(255.0 - (dmath.pow(2.0, 8.0 - bits) - 1.0), dtype=types.UINT8)
    return x & _on(mask, x)


@IMPLS("Solarize")
def _solarize(x: DataNode, s: dict[str, Any]) -> DataNode:
    inv = x >= _on(s["v"], x)
    keep = inv ^ True
    return keep * x + inv * (types.Constant(255, dtype=types.UINT8) - x)


@IMPLS("AutoContrast")
def _autocontrast(x: DataNode, s: dict[str, Any]) -> DataNode:
    lo = _f32(fn.reductions.min(x, axes=[0, 1], keep_dims=True))
    hi = _f32(fn.reductions.max(x, axes=[0, 1], keep_dims=True))
    ok = hi > lo
    scale = 255.0 / ((hi - lo) * ok + (ok ^ True))  # 255 / (hi - lo), or 255 where hi == lo ...
    scale = scale * ok + (ok ^ True)  # ... replaced by 1
    return _u8((_f32(x) - lo * ok) * scale)


def _equalize_batch(samples: Sequence[Any]) -> list[Any]:
    """dl_tensor_python_function body: PIL's Equalize by the torch backend's implementation on
    the branch's HWC samples (CPU or GPU memory, shared through DLPack)."""
    xs = [torch.utils.dlpack.from_dlpack(t) for t in samples]
    if not xs:
        return []
    # chunks of CHUNK images on the CPU (the temporaries stay in cache), the whole batch on GPU;
    # NCHW views of the HWC memory: equalize keeps that layout (no transposing copies)
    step = len(xs) if xs[0].is_cuda else torch_backend.CHUNK
    outs = []
    for i in range(0, len(xs), step):
        part = xs[i:i + step]
        if any(t.shape != part[0].shape for t in part):
            outs += [torch_backend.equalize(t.permute(2, 0, 1)[None], _NO_GROUP)[0].permute(1, 2, 0) for t in part]
        else:
            outs += list(torch_backend.equalize(torch.stack(part).permute(0, 3, 1, 2), _NO_GROUP).permute(0, 2, 3, 1))
    if outs[0].is_cuda:
        torch.cuda.current_stream(outs[0].device).synchronize()  # done before DALI reads the outputs
    # DALI takes DLPack capsules; torch exports to_dlpack without listing it in __all__
    return [torch.utils.dlpack.to_dlpack(t) for t in outs]  # type: ignore[attr-defined]


_NO_GROUP = torch_backend.Group(op_id("Equalize"), torch.zeros(0), torch.zeros(0, 2))


@IMPLS("Equalize")
def _equalize(x: DataNode, s: dict[str, Any]) -> DataNode:
    """PIL's Equalize (as the torch backend): DALI has no histogram operator and its
    fn.equalize uses OpenCV's formula (docs/ops.md), so the torch implementation runs on the
    branch's samples through DLPack. Cost measured in docs/ops.md."""
    return fn.dl_tensor_python_function(x, function=_equalize_batch, batch_processing=True,
                                        output_layouts="HWC", synchronize_stream=True)


@IMPLS("Invert")
def _invert(x: DataNode, s: dict[str, Any]) -> DataNode:
    return types.Constant(255, dtype=types.UINT8) - x


@IMPLS("Cutout")
def _cutout(x: DataNode, s: dict[str, Any]) -> DataNode:
    """Square of side round(v * min(H, W)) centred at (floor(u1 W), floor(u2 H)), clipped; FILL."""
    h, w = s["h"], s["w"]
    side = dmath.floor(s["v"] * (min(h, w) if isinstance(h, float) else dmath.min(h, w)) + 0.5)
    half = dmath.floor(side * 0.5)
    x0 = dmath.floor(s["u1"] * w) - half
    y0 = dmath.floor(s["u2"] * h) - half
    y0c, x0c = dmath.clamp(y0, 0.0, h), dmath.clamp(x0, 0.0, w)
    y1c, x1c = dmath.clamp(y0 + side, 0.0, h), dmath.clamp(x0 + side, 0.0, w)
    anchor = fn.stack(y0c, x0c)
    shape = fn.stack(y1c - y0c, x1c - x0c)
    return fn.erase(x, anchor=anchor, shape=shape, axis_names="HW", fill_value=float(FILL))


@IMPLS("SamplePairing")
def _sample_pairing(x: DataNode, s: dict[str, Any]) -> DataNode:
    xf = _f32(x)
    return _u8(xf + _on(s["v"], x) * (_f32(s["partner"]) - xf))


IMPLS.check_complete()
_SAMPLE_PAIRING = op_id("SamplePairing")


# ------------------------------------------------------------------------------------ the tree
def _branches(augmentations: Collection[str] | None) -> tuple[list[_Branch], np.ndarray]:
    """The branches for these ops (None: every op) -> (branch implementations, branch index
    for op id + 1). Branch 0 is the identity; ops sharing an implementation share a branch;
    ops left out map to the identity."""
    names = set(OP_NAMES if augmentations is None else augmentations)
    unknown = names - set(OP_NAMES)
    if unknown:
        raise ValueError(f"unknown op(s) {sorted(unknown)} in augmentations; valid ops: {', '.join(OP_NAMES)}")
    branches: list[_Branch] = [_identity]
    lut = np.zeros(len(OPS) + 1, np.int32)
    for op in OPS:
        if op.name in names:
            impl = IMPLS[op.id]
            if impl not in branches:
                branches.append(impl)
            lut[op.id + 1] = branches.index(impl)
    return branches, lut


def _split(branches: list[_Branch], lo: int, hi: int, branch: DataNode, x: DataNode, s: dict[str, Any]) -> DataNode:
    """Binary tree of per-sample conditionals over branches lo..hi (core.select's scheme)."""
    if lo == hi:
        return branches[lo](x, s)
    mid = (lo + hi) // 2
    if branch <= mid:
        out = _split(branches, lo, mid, branch, x, s)
    else:
        out = _split(branches, mid + 1, hi, branch, x, s)
    return out


def _size(images: DataNode, shape: DataNode | tuple[int, int] | None) -> dict[str, Any]:
    """The images' (H, W) as step values: from `shape` ((H, W) or a CPU shape node), else from
    the CPU images themselves."""
    if shape is None:
        if _gpu(images):
            raise ValueError("dali_backend.apply_program on GPU images needs shape=: the images' (H, W) "
                             "(e.g. the resize size) or `cpu_images.shape()` taken before `.gpu()` (a GPU "
                             "shape cannot reach the CPU unless the pipeline runs the dynamic executor)")
        shape = images.shape()
    if isinstance(shape, DataNode):
        if _gpu(shape):
            raise ValueError("apply_program: shape= must be a CPU DataNode or (H, W)")
        hw = fn.cast(shape[0:2], dtype=types.INT32)
        f = fn.cast(shape, dtype=types.FLOAT)
        return {"h": f[0], "w": f[1], "hw": hw}
    h, w = (int(v) for v in shape)
    return {"h": float(h), "w": float(w), "hw": types.Constant(np.array([h, w], np.int32))}


def apply_program(images: DataNode, op_ids: DataNode, params: DataNode, *, num_steps: int = 2,
                  augmentations: Collection[str] | None = None, shape: DataNode | tuple[int, int] | None = None,
                  batch_size: int | None = None) -> DataNode:
    """Apply per-sample programs inside a DALI pipeline (needs `enable_conditionals=True`).

    images: HWC uint8 RGB (cpu or gpu); op_ids: int64 [num_steps] per sample (-1 = identity);
    params: float32 [num_steps, 3] per sample (value, u1, u2), both on the CPU.
    augmentations: the op names the programs can hold (a policy's `augmentations`; None: all
    ops); only their branches are built, other ops leave the image as it is. Without
    SamplePairing no partner batch is copied per step.
    shape: the images' (H, W), or a CPU shape node; needed for GPU images (a fixed-size batch
    passes its size); CPU images give their own.
    SamplePairing's partner is floor(u1 * batch_size) with batch_size = the pipeline's
    max_batch_size unless given, so batches must be full (readers pad the last batch).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1 (the K of the program), got {num_steps!r}")
    pipe = Pipeline.current()
    if pipe is None:
        raise RuntimeError("dali_backend.apply_program must be called inside a pipeline definition")
    if not getattr(pipe, "_conditionals_enabled", True):
        raise RuntimeError("dali_backend.apply_program needs @pipeline_def(enable_conditionals=True)")
    branches, lut = _branches(augmentations)
    pairing = _sample_pairing in branches
    size = _size(images, shape)  # ops keep the size: one for all steps
    bs = batch_size or pipe.max_batch_size
    keys, values = list(range(len(OPS) + 1)), [float(b) for b in lut]
    x = images
    for k in range(num_steps):
        op = op_ids[k]
        branch = fn.cast(fn.lookup_table(fn.cast(op + 1, dtype=types.INT32), keys=keys, values=values,
                                          default_value=0.0), dtype=types.INT32)
        s = {"op": op, "v": params[k, 0], "u1": params[k, 1], "u2": params[k, 2], **size}
        if pairing:
            pidx = fn.cast(dmath.min(dmath.floor(params[k, 1] * float(bs)), float(bs - 1)), dtype=types.INT32)
            s["partner"] = fn.permute_batch(x, indices=pidx)
        x = _split(branches, 0, len(branches) - 1, branch, x, s)
    return x


# ----------------------------------------------------------------------------- standalone runs
def pipeline_device() -> str:
    """'gpu' when CUDA is available (torch's view), else 'cpu'."""
    return "gpu" if torch.cuda.is_available() else "cpu"


_PIPES: dict[tuple[Any, ...], Pipeline] = {}


@pipeline_def(enable_conditionals=True)
def _standalone(num_steps: int, device: str, augmentations: frozenset[str] | None) -> DataNode:
    imgs = fn.external_source(name="images", dtype=types.UINT8, layout="HWC")
    ids = fn.external_source(name="op_ids", dtype=types.INT64)
    prm = fn.external_source(name="params", dtype=types.FLOAT)
    shape = imgs.shape()  # of the CPU images: a GPU shape would need the dynamic executor
    if device == "gpu":
        imgs = imgs.gpu()
    return apply_program(imgs, ids, prm, num_steps=num_steps, augmentations=augmentations, shape=shape)


def _pipeline(batch_size: int, num_steps: int, device: str, num_threads: int,
              augmentations: Collection[str] | None) -> Pipeline:
    """The standalone pipeline, defined and not built (the synchronous executor: one batch at a time)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    ops = None if augmentations is None else frozenset(augmentations)
    return _standalone(num_steps, device, ops, batch_size=batch_size, num_threads=num_threads,
                       device_id=0 if device == "gpu" else None, seed=0, prefetch_queue_depth=1,
                       exec_async=False, exec_pipelined=False)


def build_pipeline(batch_size: int, num_steps: int, *, device: str | None = None, num_threads: int = 2,
                   augmentations: Collection[str] | None = None) -> Pipeline:
    """A built standalone pipeline fed by name: 'images' (HWC uint8), 'op_ids', 'params'."""
    pipe = _pipeline(batch_size, num_steps, device or pipeline_device(), num_threads, augmentations)
    pipe.build()
    return pipe


def run_program(images: torch.Tensor, op_ids: torch.Tensor, params: torch.Tensor, *,
                device: str | None = None, num_threads: int = 2) -> torch.Tensor:
    """Apply a program to uint8 NCHW torch images with a (cached) standalone DALI pipeline."""
    check_program(images, op_ids, params)
    n, k = op_ids.shape
    if k == 0:
        return images.clone()
    device = device or pipeline_device()
    key = (n, k, device, num_threads)
    if key not in _PIPES:
        _PIPES[key] = build_pipeline(n, k, device=device, num_threads=num_threads)
    pipe = _PIPES[key]
    hwc = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    pipe.feed_input("images", [hwc[i] for i in range(n)], layout="HWC")
    pipe.feed_input("op_ids", [a for a in op_ids.cpu().numpy()])
    pipe.feed_input("params", [a for a in params.cpu().numpy()])
    (out,) = pipe.run()
    if device == "gpu":
        out = out.as_cpu()
    arr = np.stack([np.asarray(out.at(i)) for i in range(n)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


__all__ = ["IMPLS", "apply_program", "build_pipeline", "run_program", "pipeline_device", "OP_NAMES", "IDENTITY"]
