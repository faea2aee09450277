"""Batched torch backend: apply a per-sample program to uint8 NCHW images (CPU or CUDA).

No per-image Python loop for the pixel work: at each step the samples are grouped by op and each
op's implementation (declared with `@IMPLS(name)` beside it) runs once on its group: shears and
rotations as one nearest-neighbour gather with per-sample maps, point ops as per-sample LUTs,
Equalize with one histogram pass for the whole group. Any input layout is accepted; results are
contiguous. Rounding: float results are rounded to the nearest integer and clamped to 0..255.

Two paths, the same pixels (tests/test_ops_parity.py, `device_parity`):
- CPU: each group runs in chunks of CHUNK images (the float temporaries stay in cache) and
  translations are in-place slice copies per sample;
- CUDA (any non-CPU device): one kernel call per op group, translations as gathers, and no host
  synchronisation: the grouping is planned on the CPU copy of the program (where policies make
  it), coefficients are computed on the device, constants are cached per device and the
  histogram uses atomic adds (`torch.bincount` reads the maximum back to the host on CUDA).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._formulas import CROSS_TERMS, GRAY, TRANSLATE_X, TRANSLATE_Y, affine_coeffs
from .table import FILL, IDENTITY, NUM_BINS, OPS, PARAM_EPS, Implementations, op_id


class Group(NamedTuple):
    """One op's samples at one program step: what the op's implementation receives with the images."""

    op: int  # the op id (one implementation may serve several ops)
    v: torch.Tensor  # [m] float32 physical parameter (hpcaug.ops.table)
    u: torch.Tensor  # [m, 2] float32 (u1, u2)
    partner: torch.Tensor | None = None  # SamplePairing: [m, C, H, W] partners, the batch as before this step

    def part(self, start: int, stop: int) -> Group:
        """Samples start..stop-1 of the group."""
        p = None if self.partner is None else self.partner[start:stop]
        return Group(self.op, self.v[start:stop], self.u[start:stop], p)


_Impl = Callable[[torch.Tensor, Group], torch.Tensor]
IMPLS: Implementations[_Impl] = Implementations("torch")  # op id -> (images [m,C,H,W], group) -> new images


@cache
def _const(name: str, device: torch.device) -> torch.Tensor:
    """Constant tensors, made once per device (no copy from the host on every call)."""
    if name == "levels":
        return torch.arange(256, device=device, dtype=torch.float32).view(1, 1, 256)
    if name == "gray":
        return torch.tensor(GRAY, device=device)
    raise KeyError(name)


@cache
def _centres(n: int, device: torch.device) -> torch.Tensor:
    """Pixel centres 0.5 .. n - 0.5 (float32) on `device`."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """float -> uint8: floor(x + 0.5) clamped to 0..255 (the DALI backend rounds the same way)."""
    return x.add_(0.5).clamp_(0, 255).to(torch.uint8)  # truncation of values >= 0 is floor


def _col(v: torch.Tensor) -> torch.Tensor:
    """Per-sample scalar [m] -> [m, 1, 1, 1] float32."""
    return v.to(torch.float32).view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------ geometric ops
def _coeffs(op: int | torch.Tensor, v: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    """Per-sample affine map (m00, m01, m02, m10, m11, m12) as float32 [m] tensors on v's device
    (evaluated in float64 there, then rounded once to float32)."""
    return [t.to(torch.float32)  # op: an int (a group) or per-sample ids; either way every term depends on v
            for t in affine_coeffs(op, v.to(torch.float64), float(h), float(w), torch.cos, torch.sin, torch.round)]


@IMPLS("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
def geometric(x: torch.Tensor, g: Group) -> torch.Tensor:
    """Nearest-neighbour gather with per-sample maps (`_formulas.affine_coeffs`).

    Nearest neighbour is AutoAugment's (PIL) and torchvision's AutoAugment default. The image is
    padded by one FILL pixel on each side and source coordinates are clamped onto that frame, so
    pixels mapped from outside the image get FILL without a mask.
    """
    m, c, h, w = x.shape
    return _gather(x.contiguous(), _coeffs(g.op, g.v, h, w), CROSS_TERMS[g.op])


def _gather(x: torch.Tensor, coeffs: list[torch.Tensor], cross: tuple[bool, bool] = (True, True)) -> torch.Tensor:
    """The gather of `geometric`. cross = (m01, m10 may be non-zero): where one is always 0 the
    row index (m10) or the column index (m01) is computed on one line, not the whole image."""
    m, c, h, w = x.shape
    dev = x.device
    m00, m01, m02, m10, m11, m12 = (t.view(m, 1, 1) for t in coeffs)
    jx = _centres(w, dev).view(1, 1, w)
    iy = _centres(h, dev).view(1, h, 1)
    col_rows = iy if cross[0] else iy[:, :1]
    row_cols = jx if cross[1] else jx[:, :, :1]
    # +1: coordinates in the padded image
    col = torch.addcmul(m01 * col_rows + (m02 + 1), m00, jx).floor_().clamp_(0, w + 1)
    row = torch.addcmul(m11 * iy + (m12 + 1), m10, row_cols).floor_().clamp_(0, h + 1)
    idx = torch.add(col, row, alpha=float(w + 2)).to(torch.int64).view(m, 1, h * w)  # exact: small integers
    padded = F.pad(x, (1, 1, 1, 1), value=FILL).reshape(m, c, (h + 2) * (w + 2))
    return padded.gather(2, idx.expand(m, c, h * w)).view(m, c, h, w)


def _shift_in_place(img: torch.Tensor, dy: int, dx: int) -> None:
    """img[:, i, j] = img[:, i + dy, j + dx], FILL where that is outside (a translation)."""
    c, h, w = img.shape
    src = img.clone()
    img.fill_(FILL)
    if abs(dy) < h and abs(dx) < w:
        img[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            src[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]


def _is_shift(coeffs: list[torch.Tensor]) -> torch.Tensor:
    """Samples whose map is a pure integer shift for every pixel (TranslateX/Y): m00 = m11 = 1,
    m01 = m10 = 0 and offsets small enough that floor(m02 + x + 0.5) = x + floor(m02 + 0.5)
    holds exactly in float32 (|m02|, |m12| < 2^12 with the NUDGE fraction: exact sums)."""
    m00, m01, m02, m10, m11, m12 = coeffs
    return (m00 == 1) & (m11 == 1) & (m01 == 0) & (m10 == 0) & (m02.abs() < 4096) & (m12.abs() < 4096)


def _translate_rows(out: torch.Tensor, rows: torch.Tensor, g: Group) -> bool:
    """CPU fast path: translate out[rows] in place by slice copies (the gather's pixels, see
    _is_shift); False (nothing done) if some map is not a pure shift."""
    h, w = out.shape[2:]
    coeffs = _coeffs(g.op, g.v, h, w)
    if not bool(_is_shift(coeffs).all()):
        return False
    # source col = j + floor(m02 + 0.5), source row = i + floor(m12 + 0.5) (exact, see _is_shift)
    ox = torch.floor(coeffs[2].to(torch.float64) + 0.5).to(torch.int64)
    oy = torch.floor(coeffs[5].to(torch.float64) + 0.5).to(torch.int64)
    for r, dy, dx in zip(rows.tolist(), oy.tolist(), ox.tolist(), strict=True):
        _shift_in_place(out[r], dy, dx)
    return True


# ------------------------------------------------------------------------------ colour ops
def _gray(xf: torch.Tensor) -> torch.Tensor:
    """[m, 3, H, W] float -> luma [m, 1, H, W] (one fused pass per channel)."""
    if xf.shape[1] == 1:
        return xf
    g = xf[:, 0:1] * GRAY[0]
    g.add_(xf[:, 1:2], alpha=GRAY[1]).add_(xf[:, 2:3], alpha=GRAY[2])
    return g


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel lookup: x uint8 [m, c, H, W], lut uint8 [m, c or 1, 256]."""
    m, c, h, w = x.shape
    lut = lut.expand(m, c, 256).reshape(m * c * 256)
    offs = torch.arange(0, m * c * 256, 256, device=x.device, dtype=torch.int32).view(m, c, 1, 1)
    key = x.to(torch.int32, memory_format=torch.contiguous_format).add_(offs)
    return lut.index_select(0, key.view(-1)).view(m, c, h, w)


def _affine_lut(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """floor(a * x + b + 0.5) clamped, as a per-sample/channel LUT (a, b: [m, 1 or c, 1])."""
    lut = torch.addcmul(b + 0.5, a, _const("levels", x.device)).clamp_(0, 255).to(torch.uint8)
    return _apply_lut(x, lut)


def _affine_u8(xf: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """uint8(floor(a * xf + b + 0.5)) clamped; a per sample [m,1,1,1], b broadcastable to xf."""
    out = torch.addcmul(b + 0.5, xf, a)
    return out.clamp_(0, 255).to(torch.uint8)


@IMPLS("Color")
def color(x: torch.Tensor, g: Group) -> torch.Tensor:
    """PIL Color: blend with the luma image, f * x + (1 - f) * gray."""
    if x.shape[1] == 1:
        return x.clone()
    xf = x.to(torch.float32)
    f = _col(g.v)
    return _affine_u8(xf, f, _gray(xf) * (1 - f))


@IMPLS("Contrast")
def contrast(x: torch.Tensor, g: Group) -> torch.Tensor:
    """PIL Contrast: blend with the mean luma, f * x + (1 - f) * mean (a point op: one LUT per sample)."""
    m, c, h, w = x.shape
    means = x.sum(dim=(2, 3), dtype=torch.int64).to(torch.float32) / (h * w)  # [m, c]
    mean = (means * _const("gray", x.device)).sum(1) if c == 3 else means[:, 0]
    f = g.v.to(torch.float32).view(m, 1, 1)
    return _affine_lut(x, f, mean.view(m, 1, 1) * (1 - f))


@IMPLS("Brightness")
def brightness(x: torch.Tensor, g: Group) -> torch.Tensor:
    """PIL Brightness: blend with black, f * x (one LUT per sample)."""
    f = g.v.to(torch.float32).view(-1, 1, 1)
    return _affine_lut(x, f, torch.zeros_like(f))


@IMPLS("Sharpness")
def sharpness(x: torch.Tensor, g: Group) -> torch.Tensor:
    """PIL Sharpness: blend with the SMOOTH-filtered image (kernel [[1,1,1],[1,5,1],[1,1,1]] / 13,
    rounded to uint8); the 1-pixel border keeps the input."""
    m, c, h, w = x.shape
    if h < 3 or w < 3:
        return x.clone()
    xf = x.to(torch.float32)
    rows = xf[:, :, :, :-2] + xf[:, :, :, 1:-1]
    rows += xf[:, :, :, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1]
    box += rows[:, :, 2:]
    centre = xf[:, :, 1:-1, 1:-1]
    # deg = round(sum / 13) with sum = box + 4 * centre an integer: floor((sum + 6.5) / 13) never ties
    deg = box.add_(centre, alpha=4.0).add_(6.5).mul_(1.0 / 13.0).floor_()
    d = torch.zeros_like(xf)
    d[:, :, 1:-1, 1:-1] = deg.sub_(centre)
    # f * x + (1 - f) * deg = x + (1 - f) * (deg - x)
    return _affine_u8(d, 1 - _col(g.v), xf)


@IMPLS("Posterize")
def posterize(x: torch.Tensor, g: Group) -> torch.Tensor:
    bits = g.v.round().to(torch.int32).clamp(0, 8)
    mask = ((255 << (8 - bits)) & 255).to(torch.uint8).view(-1, 1, 1, 1)
    return x & mask


@IMPLS("Solarize")
def solarize(x: torch.Tensor, g: Group) -> torch.Tensor:
    # a LUT: uint8 comparisons with a per-sample threshold measured 2x slower than the lookup
    lv = _const("levels", x.device)
    lut = torch.where(lv >= g.v.to(torch.float32).view(-1, 1, 1), 255 - lv, lv).to(torch.uint8)
    return _apply_lut(x, lut)


@IMPLS("AutoContrast")
def autocontrast(x: torch.Tensor, g: Group) -> torch.Tensor:
    """Per channel: stretch [min, max] to [0, 255] (channels with min == max stay as they are)."""
    lo = x.amin(dim=(2, 3)).to(torch.float32).unsqueeze(-1)  # [m, c, 1]
    hi = x.amax(dim=(2, 3)).to(torch.float32).unsqueeze(-1)
    ok = hi > lo
    scale = torch.where(ok, 255.0 / (hi - lo).clamp(min=1), 1.0)
    lo = torch.where(ok, lo, 0.0)
    return _affine_lut(x, scale, -lo * scale)


def _histogram(key: torch.Tensor, size: int, *, atomic: bool) -> torch.Tensor:
    """Counts of each value 0..size-1 in `key` (int64). atomic: scatter-add, which needs no
    host synchronisation (torch.bincount reads key.max() back to the host on CUDA)."""
    if not atomic:
        return torch.bincount(key, minlength=size)
    ones = torch.ones(1, dtype=torch.int64, device=key.device).expand(key.numel())
    return torch.zeros(size, dtype=torch.int64, device=key.device).index_add_(0, key, ones)


def _equalize_keys(key: torch.Tensor, planes: int, per_plane: int) -> torch.Tensor:
    """PIL's Equalize on `planes` channel planes of `per_plane` pixels each, given as one flat
    int32 key = plane * 256 + level per pixel (any pixel order) -> the new levels, uint8, same order.

    Per plane, in integer arithmetic (PIL.ImageOps.equalize): step = (total - hist[last
    non-empty bin]) // 255; lut[i] = (step // 2 + pixels below level i) // step, clamped to 255;
    the identity where step == 0 (a constant plane, or fewer than 255 pixels off the last bin).
    """
    hist = _histogram(key, planes * 256, atomic=not key.is_cpu).view(planes, 256)
    idx = torch.arange(256, device=key.device).expand(planes, 256)
    last = torch.where(hist > 0, idx, 0).amax(1, keepdim=True)
    step = (per_plane - hist.gather(1, last)) // 255
    below = hist.cumsum(1) - hist
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, idx).to(torch.uint8)
    return lut.view(-1).index_select(0, key)


@IMPLS("Equalize")
def equalize(x: torch.Tensor, g: Group) -> torch.Tensor:
    """PIL's ImageOps.equalize (AutoAugment's op) per channel (`_equalize_keys`). Channels-last
    memory (the DALI backend's HWC samples) is kept as it is, without a copy."""
    m, c, h, w = x.shape
    planes = torch.arange(m * c, device=x.device, dtype=torch.int32) * 256
    hwc = x.permute(0, 2, 3, 1)
    if hwc.is_contiguous():
        key = (hwc.to(torch.int32) + planes.view(m, 1, 1, c)).view(-1)
        return _equalize_keys(key, m * c, h * w).view(m, h, w, c).permute(0, 3, 1, 2)
    key = (x.contiguous().to(torch.int32) + planes.view(m, c, 1, 1)).view(-1)
    return _equalize_keys(key, m * c, h * w).view(m, c, h, w)


@IMPLS("Invert")
def invert(x: torch.Tensor, g: Group) -> torch.Tensor:
    return 255 - x


# ------------------------------------------------------------------------------------ mix ops
def cutout_box(v: torch.Tensor, u: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """(y0, x0, y1, x1) int64 of the Cutout square, clipped to the image (same rule as DALI's)."""
    side = torch.round(v.to(torch.float64) * min(h, w)).to(torch.int64)
    cx = torch.floor(u[:, 0].to(torch.float64) * w).to(torch.int64)
    cy = torch.floor(u[:, 1].to(torch.float64) * h).to(torch.int64)
    x0, y0 = cx - side // 2, cy - side // 2
    return y0.clamp(0, h), x0.clamp(0, w), (y0 + side).clamp(0, h), (x0 + side).clamp(0, w)


@IMPLS("Cutout")
def cutout(x: torch.Tensor, g: Group) -> torch.Tensor:
    m, c, h, w = x.shape
    y0, x0, y1, x1 = (t.view(-1, 1, 1, 1) for t in cutout_box(g.v, g.u, h, w))
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return torch.where(inside, torch.full_like(x, FILL), x)


def partner_index(u1: torch.Tensor, n: int) -> torch.Tensor:
    """SamplePairing partner of each sample: floor(u1 * n), n = the batch size."""
    return torch.floor(u1.to(torch.float64) * n).to(torch.int64).clamp(0, n - 1)


@IMPLS("SamplePairing")
def sample_pairing(x: torch.Tensor, g: Group) -> torch.Tensor:
    """(1 - w) * x + w * partner, rounded (partners: `Group.partner`)."""
    assert g.partner is not None, "SamplePairing needs Group.partner"
    w = _col(g.v)
    return _affine_u8(x.to(torch.float32), 1 - w, g.partner.to(torch.float32) * w)


IMPLS.check_complete()
_SAMPLE_PAIRING = op_id("SamplePairing")
_LO = torch.tensor([op.param_range[0] for op in OPS], dtype=torch.float32) - PARAM_EPS
_HI = torch.tensor([op.param_range[1] for op in OPS], dtype=torch.float32) + PARAM_EPS


def check_program(images: torch.Tensor, op_ids: torch.Tensor, params: torch.Tensor) -> None:
    """TypeError / ValueError, saying how to fix it, unless (images, op_ids, params) is valid."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (uint8 [n, C, H, W]), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}; convert with "
                        f"(x * 255).round().clamp(0, 255).to(torch.uint8) if they are floats in [0, 1]")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be NCHW with C in (1, 3), got shape {tuple(images.shape)}; "
                         f"for HWC/NHWC images use images.permute(0, 3, 1, 2)")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is an empty batch (n = 0); skip the call for empty batches")
    if images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"images have an empty spatial size {tuple(images.shape[2:])}")
    if not isinstance(op_ids, torch.Tensor) or op_ids.dtype != torch.int64 or op_ids.dim() != 2:
        raise TypeError(f"op_ids must be an int64 tensor [n, K] (from policy.sample), got "
                        f"{getattr(op_ids, 'dtype', type(op_ids).__name__)} {tuple(getattr(op_ids, 'shape', ()))}")
    if (not isinstance(params, torch.Tensor) or params.dtype != torch.float32 or params.dim() != 3
            or params.shape[2] != 3):
        raise TypeError(f"params must be a float32 tensor [n, K, 3] (value, u1, u2), got "
                        f"{getattr(params, 'dtype', type(params).__name__)} {tuple(getattr(params, 'shape', ()))}")
    if op_ids.shape[0] != n or params.shape[:2] != op_ids.shape:
        raise ValueError(f"shapes do not match: images {tuple(images.shape)}, op_ids {tuple(op_ids.shape)}, "
                         f"params {tuple(params.shape)}; need op_ids [n, K] and params [n, K, 3] with n = {n}")
    ids = op_ids.cpu()
    if ((ids < IDENTITY) | (ids >= len(OPS))).any():
        unknown = ids[(ids < IDENTITY) | (ids >= len(OPS))][0].item()
        raise ValueError(f"unknown op id {unknown}; valid ids are -1 (identity) and 0..{len(OPS) - 1} "
                         "(hpcaug.ops.table.OPS)")
    p = params.cpu()
    used = ids >= 0
    safe = ids.clamp(min=0)
    val = p[..., 0]
    bad = used & ((val < _LO[safe]) | (val > _HI[safe]) | ~torch.isfinite(val))
    if bad.any():
        i, k = bad.nonzero()[0].tolist()
        spec = OPS[int(ids[i, k])]
        lo, hi = spec.param_range
        raise ValueError(f"sample {i} step {k}: {spec.name} parameter {float(val[i, k])} is out of range "
                         f"[{lo:.4g}, {hi:.4g}]; build params with OpSpec.param(bin, sign) or policy.sample()")
    u = p[..., 1:]
    if (used.unsqueeze(-1) & ((u < 0) | (u > 1) | ~torch.isfinite(u))).any():
        raise ValueError("params[..., 1:] (u1, u2) must be in [0, 1]")


# ------------------------------------------------------------------------------ applying programs
CHUNK = 4  # CPU: images per kernel call; keeps float temporaries in cache (3x faster than whole groups)


def _plan(op_ids: torch.Tensor) -> tuple[torch.Tensor, list[list[tuple[int, int, int]]]]:
    """Group each step's samples by op, on the CPU: -> (order int64 [K, n], per step a list of
    (op, start, stop)) where order[k, start:stop] are the samples of op at step k (identity left out)."""
    ids = op_ids.cpu()
    n, k = ids.shape
    order = torch.argsort(ids.t(), dim=1, stable=True)
    span = len(OPS) + 1
    counts = torch.bincount((ids + 1 + torch.arange(k) * span).view(-1), minlength=k * span).view(k, span)
    plan = []
    for row in counts.tolist():
        groups, start = [], row[0]  # identity (-1) sorts first
        for op, cnt in enumerate(row[1:]):
            if cnt:
                groups.append((op, start, start + cnt))
                start += cnt
        plan.append(groups)
    return order, plan


def _put(out: torch.Tensor, rows: torch.Tensor, value: torch.Tensor) -> None:
    """out[rows] = value; copies whole images as int64 words when it can (uint8 index_copy_ is slow)."""
    n = out.shape[0]
    per = out[0].numel()
    if per % 8 == 0 and out.is_contiguous():
        out.view(n, per).view(torch.int64).index_copy_(0, rows, value.contiguous().view(-1, per).view(torch.int64))
    else:
        out.index_copy_(0, rows, value.contiguous())


def _run_group(out: torch.Tensor, rows: torch.Tensor, g: Group, chunk: int | None) -> None:
    """out[rows] = IMPLS[g.op](out[rows], g), in chunks of `chunk` samples (None: all at once)."""
    impl = IMPLS[g.op]
    m = rows.numel()
    step = chunk or m
    for start in range(0, m, step):
        sl = rows[start:start + step]
        _put(out, sl, impl(out.index_select(0, sl), g.part(start, start + step)))


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A CPU tensor on `dev` without blocking the host (pinned, non_blocking) where dev is CUDA."""
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def _apply(images: torch.Tensor, op_ids: torch.Tensor, params: torch.Tensor, *, cpu_path: bool) -> torch.Tensor:
    """apply_program without validation; cpu_path picks the CPU path (chunks, slice translations)
    or the device path (whole groups, no host synchronisation), on any device."""
    dev = images.device
    out = images.clone(memory_format=torch.contiguous_format)
    n = images.shape[0]
    order_cpu, plan = _plan(op_ids)
    order = _to_device(order_cpu, dev)
    prm = _to_device(params.cpu(), dev)
    chunk = CHUNK if cpu_path else None
    for k, groups in enumerate(plan):
        v_k, u_k = prm[:, k, 0], prm[:, k, 1:]
        partners = None
        for op, a, b in groups:  # read the pre-step batch before any op of this step writes
            if op == _SAMPLE_PAIRING:
                rows = order[k, a:b]
                partners = out.index_select(0, partner_index(u_k.index_select(0, rows)[:, 0], n))
        for op, a, b in groups:
            rows = order[k, a:b]
            g = Group(op, v_k.index_select(0, rows), u_k.index_select(0, rows),
                      partners if op == _SAMPLE_PAIRING else None)
            if cpu_path and op in (TRANSLATE_X, TRANSLATE_Y) and _translate_rows(out, rows, g):
                continue
            _run_group(out, rows, g, chunk)
    return out


def apply_program(images: torch.Tensor, op_ids: torch.Tensor, params: torch.Tensor,
                  *, validate: bool = True) -> torch.Tensor:
    """Apply program (op_ids int64 [n, K], params float32 [n, K, 3]) to uint8 [n, C, H, W] images.

    Steps run in order k = 0..K-1; op -1 leaves a sample unchanged. Returns a new uint8 tensor on
    the images' device. SamplePairing at step k mixes with the batch as it was before step k.
    Keep op_ids / params on the CPU (as policy.sample makes them): the grouping is planned
    there, so CUDA images are augmented without a host synchronisation (validate=True reads
    them on the CPU as well).
    """
    if validate:
        check_program(images, op_ids, params)
    return _apply(images, op_ids, params, cpu_path=images.device.type == "cpu")


def augment(images: torch.Tensor, policy: Policy, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a program from `policy` for this batch and apply it: -> (images, choice)."""
    s = policy.sample(int(images.shape[0]), generator)
    return apply_program(images, s.op_ids, s.params), s.choice


# ------------------------------------------------------------------------------ device parity
class Parity(NamedTuple):
    """One op on a device against the CPU path on the CPU, over every bin and sign."""

    max_abs_diff: int  # largest |device - cpu| of any pixel, in levels
    differing: float  # fraction of pixels that differ at all
    ok: bool  # within PARITY_TOLERANCE


# Per op: (largest |diff| in levels, largest fraction of differing pixels) allowed between a device
# and the CPU. Integer ops must agree exactly; float ops round floor(x + 0.5), which a fused
# multiply-add can move by 1 level; sample points of shears and rotations sit >= 1/1024 px
# (NUDGE) from pixel boundaries except by chance, where float error may pick the neighbour
# pixel (any level, rarely).
_EXACT_OPS = ("TranslateX", "TranslateY", "Posterize", "Solarize", "Equalize", "Invert", "Cutout")
PARITY_TOLERANCE: dict[str, tuple[int, float]] = {
    op.name: (0, 0.0) if op.name in _EXACT_OPS else (255, 1e-3) if op.kind == "geometric" else (1, 0.01)
    for op in OPS}


def every_bin_program(op: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n one-step samples of op cycling through every (bin, sign); u1/u2 random (seeded)."""
    spec = OPS[op]
    combos = [(b, s) for b in range(NUM_BINS) for s in ((1, -1) if spec.signed else (1,))]
    params = torch.zeros(n, 1, 3)
    params[:, 0, 0] = torch.tensor([spec.param(*combos[i % len(combos)]) for i in range(n)])
    params[:, 0, 1:] = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed))
    return torch.full((n, 1), op, dtype=torch.int64), params


def parity_images(n: int = 20, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Synthetic uint8 [n, 3, size, size] test images: smooth gradients, noise and flat areas
    (edges for Sharpness, non-trivial histograms for Equalize / AutoContrast)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    base = torch.rand(n, 3, 1, 1, generator=g) * t.view(1, 1, -1, 1) + torch.rand(n, 3, 1, 1, generator=g) * t
    x = base * 160 + torch.rand(n, 3, size, size, generator=g) * 60
    x[:, :, : size // 3, : size // 3] = 255.0  # a flat white corner
    return x.round().clamp(0, 255).to(torch.uint8)


def device_parity(device: str | torch.device, images: torch.Tensor | None = None) -> dict[str, Parity]:
    """Every op at every bin and sign: the device path on `device` against the CPU path on the
    CPU -> {op name: Parity}. On "cpu" this compares the two paths (whole groups, gather
    translations, atomic histograms vs chunks and slices) with the same arithmetic; on
    "cuda" also the device's arithmetic. images: uint8 [n, C, H, W] (default parity_images())."""
    dev = torch.device(device)
    x = (parity_images() if images is None else images).cpu().contiguous()
    x = torch.cat([x, x.flip(-1)])  # two samples per image: every (bin, sign) on several images
    out = {}
    for spec in OPS:
        ids, params = every_bin_program(spec.id, len(x), seed=spec.id)
        check_program(x, ids, params)
        want = _apply(x, ids, params, cpu_path=True)
        got = _apply(x.to(dev), ids, params, cpu_path=False).cpu()
        d = (got.int() - want.int()).abs()
        worst, frac = int(d.max()), float((d > 0).float().mean())
        tol = PARITY_TOLERANCE[spec.name]
        out[spec.name] = Parity(worst, frac, worst <= tol[0] and frac <= tol[1])
    return out


from .policy import Policy  # noqa: E402  (for the annotation only; policy does not import us)
