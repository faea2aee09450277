"""Batched torch backend: apply a per-sample program to uint8 NCHW images (CPU or CUDA).

No per-image Python loop for the pixel work: at each step the samples are grouped by op and each
op runs once on its group (translations as slice copies, shears and rotations as one
nearest-neighbour gather per op with per-sample maps; point ops as per-sample LUTs; Equalize
uses one bincount for the whole group). Any input layout is accepted; results are contiguous.
Rounding: float results are rounded to the nearest integer and clamped to 0..255.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._formulas import GRAY, affine_coeffs
from .table import FILL, GEOMETRIC_OPS, IDENTITY, OPS, PARAM_EPS, op_id

_Impl = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """float -> uint8: floor(x + 0.5) clamped to 0..255 (the DALI backend rounds the same way)."""
    return x.add_(0.5).clamp_(0, 255).to(torch.uint8)  # truncation of values >= 0 is floor


def _col(v: torch.Tensor) -> torch.Tensor:
    """Per-sample scalar [m] -> [m, 1, 1, 1] float32."""
    return v.to(torch.float32).view(-1, 1, 1, 1)


def _coeffs(ops: torch.Tensor, v: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    """Per-sample affine map (m00, m01, m02, m10, m11, m12) as float32 [m] tensors (CPU)."""
    return [t.to(torch.float32) for t in affine_coeffs(ops.cpu().to(torch.float64), v.cpu().to(torch.float64),
                                                      float(h), float(w), torch.cos, torch.sin, torch.round)]


def geometric(x: torch.Tensor, ops: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ShearX/Y, TranslateX/Y, Rotate for a group: nearest-neighbour gather with per-sample maps.

    Nearest neighbour is AutoAugment's (PIL) and torchvision's AutoAugment default. The image is
    padded by one FILL pixel on each side and source coordinates are clamped onto that frame, so
    pixels mapped from outside the image get FILL without a mask. Where every map of the group
    has m10 == 0 (no rotation, no ShearY) the row index depends on the row only and is computed
    on [m, H, 1] (the product with x is an exact 0, so the pixels are the same); likewise the
    column index on [m, 1, W] where m01 == 0.
    """
    x = x.contiguous()
    m, c, h, w = x.shape
    return _gather(x, _coeffs(ops, v, h, w))


def _gather(x: torch.Tensor, coeffs: list[torch.Tensor]) -> torch.Tensor:
    m, c, h, w = x.shape
    dev = x.device
    m00, m01, m02, m10, m11, m12 = (t.to(dev).view(m, 1, 1) for t in coeffs)
    jx = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5).view(1, 1, w)
    iy = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5).view(1, h, 1)
    col_rows = iy if bool((coeffs[1] != 0).any()) else iy[:, :1]  # m01 == 0: column index per column
    row_cols = jx if bool((coeffs[3] != 0).any()) else jx[:, :, :1]  # m10 == 0: row index per row
    # +1: coordinates in the padded image
    col = torch.addcmul(m01 * col_rows + (m02 + 1), m00, jx).floor_().clamp_(0, w + 1)
    row = torch.addcmul(m11 * iy + (m12 + 1), m10, row_cols).floor_().clamp_(0, h + 1)
    idx = torch.addcmul(col, row, torch.tensor(float(w + 2), device=dev)).to(torch.int64).view(m, 1, h * w)
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


def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(256, device=x.device, dtype=torch.float32).view(1, 1, 256)


def _affine_lut(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """floor(a * x + b + 0.5) clamped, as a per-sample/channel LUT (a, b: [m, 1 or c, 1])."""
    lut = torch.addcmul(b + 0.5, a, _levels(x)).clamp_(0, 255).to(torch.uint8)
    return _apply_lut(x, lut)


def _affine_u8(xf: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """uint8(floor(a * xf + b + 0.5)) clamped; a per sample [m,1,1,1], b broadcastable to xf."""
    out = torch.addcmul(b + 0.5, xf, a)
    return out.clamp_(0, 255).to(torch.uint8)


def color(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """PIL Color: blend with the luma image, f * x + (1 - f) * gray."""
    if x.shape[1] == 1:
        return x.clone()
    xf = x.to(torch.float32)
    f = _col(v)
    return _affine_u8(xf, f, _gray(xf) * (1 - f))


def contrast(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """PIL Contrast: blend with the mean luma, f * x + (1 - f) * mean (a point op: one LUT per sample)."""
    m, c, h, w = x.shape
    means = x.sum(dim=(2, 3), dtype=torch.int64).to(torch.float32) / (h * w)  # [m, c]
    mean = (means * torch.tensor(GRAY, device=x.device)).sum(1) if c == 3 else means[:, 0]
    f = v.to(torch.float32).view(m, 1, 1)
    return _affine_lut(x, f, mean.view(m, 1, 1) * (1 - f))


def brightness(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """PIL Brightness: blend with black, f * x (one LUT per sample)."""
    f = v.to(torch.float32).view(-1, 1, 1)
    return _affine_lut(x, f, torch.zeros_like(f))


def sharpness(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
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
    return _affine_u8(d, 1 - _col(v), xf)


def posterize(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    bits = v.round().to(torch.int32).clamp(0, 8).to(x.device)
    mask = ((255 << (8 - bits)) & 255).to(torch.uint8).view(-1, 1, 1, 1)
    return x & mask


def solarize(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # a LUT: uint8 comparisons with a per-sample threshold measured 2x slower than the lookup
    lv = _levels(x)
    lut = torch.where(lv >= v.to(torch.float32).to(x.device).view(-1, 1, 1), 255 - lv, lv).to(torch.uint8)
    return _apply_lut(x, lut)


def autocontrast(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per channel: stretch [min, max] to [0, 255] (channels with min == max stay as they are)."""
    lo = x.amin(dim=(2, 3)).to(torch.float32).unsqueeze(-1)  # [m, c, 1]
    hi = x.amax(dim=(2, 3)).to(torch.float32).unsqueeze(-1)
    ok = hi > lo
    scale = torch.where(ok, 255.0 / (hi - lo).clamp(min=1), 1.0)
    lo = torch.where(ok, lo, 0.0)
    return _affine_lut(x, scale, -lo * scale)


def equalize(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation with OpenCV's formula (DALI's fn.equalize):
    lut[i] = round((cdf[i] - hist[first]) * 255 / (total - hist[first])) from the first non-empty
    bin on; a constant channel is left as it is. (PIL/torchvision round the LUT differently:
    docs/ops.md gives the measured difference.)"""
    x = x.contiguous()
    m, c, h, w = x.shape
    flat = x.view(m * c, h * w)
    offs = torch.arange(m * c, device=x.device, dtype=torch.int32).view(-1, 1) * 256
    key = (flat.to(torch.int32) + offs).view(-1)
    hist = torch.bincount(key, minlength=m * c * 256).view(m * c, 256)
    idx = torch.arange(256, device=x.device).expand(m * c, 256)
    first = torch.where(hist > 0, idx, 256).amin(1, keepdim=True)
    h_first = hist.gather(1, first)
    total = h * w
    scale = 255.0 / (total - h_first).clamp(min=1).to(torch.float32)
    lut = torch.round((hist.cumsum(1) - h_first).to(torch.float32) * scale).clamp_(0, 255)
    lut = torch.where((idx < first) | (h_first == total), idx.to(torch.float32), lut).to(torch.uint8)
    return lut.view(-1).index_select(0, key).view(m, c, h, w)


def invert(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return 255 - x


def cutout_box(v: torch.Tensor, u: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """(y0, x0, y1, x1) int64 of the Cutout square, clipped to the image (same rule as DALI's)."""
    side = torch.round(v.to(torch.float64) * min(h, w)).to(torch.int64)
    cx = torch.floor(u[:, 0].to(torch.float64) * w).to(torch.int64)
    cy = torch.floor(u[:, 1].to(torch.float64) * h).to(torch.int64)
    x0, y0 = cx - side // 2, cy - side // 2
    return y0.clamp(0, h), x0.clamp(0, w), (y0 + side).clamp(0, h), (x0 + side).clamp(0, w)


def cutout(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    m, c, h, w = x.shape
    y0, x0, y1, x1 = (t.to(x.device).view(-1, 1, 1, 1) for t in cutout_box(v, u, h, w))
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return torch.where(inside, torch.full_like(x, FILL), x)


def partner_index(u1: torch.Tensor, n: int) -> torch.Tensor:
    """SamplePairing partner of each sample: floor(u1 * n), n = the batch size."""
    return torch.floor(u1.to(torch.float64) * n).to(torch.int64).clamp(0, n - 1)


def sample_pairing(x: torch.Tensor, v: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """(1 - w) * x + w * partner, rounded."""
    w = _col(v)
    return _affine_u8(x.to(torch.float32), 1 - w, partner.to(torch.float32) * w)


IMPLS: dict[int, _Impl] = {
    op_id("Color"): color, op_id("Posterize"): posterize, op_id("Solarize"): solarize,
    op_id("Contrast"): contrast, op_id("Sharpness"): sharpness, op_id("Brightness"): brightness,
    op_id("AutoContrast"): autocontrast, op_id("Equalize"): equalize, op_id("Invert"): invert,
    op_id("Cutout"): cutout,
}
_SAMPLE_PAIRING = op_id("SamplePairing")
_GEO = torch.tensor(sorted(GEOMETRIC_OPS))
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
    if not isinstance(params, torch.Tensor) or params.dtype != torch.float32 or params.dim() != 3 or params.shape[2] != 3:
        raise TypeError(f"params must be a float32 tensor [n, K, 3] (value, u1, u2), got "
                        f"{getattr(params, 'dtype', type(params).__name__)} {tuple(getattr(params, 'shape', ()))}")
    if op_ids.shape[0] != n or params.shape[:2] != op_ids.shape:
        raise ValueError(f"shapes do not match: images {tuple(images.shape)}, op_ids {tuple(op_ids.shape)}, "
                         f"params {tuple(params.shape)}; need op_ids [n, K] and params [n, K, 3] with n = {n}")
    ids = op_ids.cpu()
    if ((ids < IDENTITY) | (ids >= len(OPS))).any():
        bad = ids[(ids < IDENTITY) | (ids >= len(OPS))][0].item()
        raise ValueError(f"unknown op id {bad}; valid ids are -1 (identity) and 0..{len(OPS) - 1} (hpcaug.ops.table.OPS)")
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


CHUNK = 4  # images per kernel call: keeps float temporaries in cache (3x faster on CPU than whole batches)


def _put(out: torch.Tensor, rows: torch.Tensor, value: torch.Tensor) -> None:
    """out[rows] = value; copies whole images as int64 words when it can (uint8 index_copy_ is slow)."""
    n = out.shape[0]
    per = out[0].numel()
    if per % 8 == 0 and out.is_contiguous():
        out.view(n, per).view(torch.int64).index_copy_(0, rows, value.contiguous().view(-1, per).view(torch.int64))
    else:
        out.index_copy_(0, rows, value.contiguous())


def _run(fn: Callable[..., torch.Tensor], out: torch.Tensor, idx: torch.Tensor, *args: torch.Tensor) -> None:
    """out[idx] = fn(out[idx], *args[idx]) in chunks of CHUNK samples."""
    for start in range(0, idx.numel(), CHUNK):
        sl = idx[start:start + CHUNK]
        _put(out, sl, fn(out.index_select(0, sl), *(a[start:start + CHUNK] for a in args)))


def _geometric_step(out: torch.Tensor, idx: torch.Tensor, ids: torch.Tensor, v: torch.Tensor) -> None:
    """The geometric samples idx of one step: translations as in-place slice copies (the same
    pixels as the gather), the rest as gathers grouped by op (so that a group's row or column
    index can be computed on a line instead of the whole image)."""
    h, w = out.shape[2:]
    gids, gv = ids[idx].cpu(), v[idx].cpu()
    coeffs = _coeffs(gids, gv, h, w)
    shift = _is_shift(coeffs)
    if bool(shift.any()):
        # source col = j + floor(m02 + 0.5), source row = i + floor(m12 + 0.5) (exact, see _is_shift)
        ox = torch.floor(coeffs[2].to(torch.float64) + 0.5).to(torch.int64)
        oy = torch.floor(coeffs[5].to(torch.float64) + 0.5).to(torch.int64)
        for r, dy, dx in zip(idx[shift.to(idx.device)].tolist(), oy[shift].tolist(), ox[shift].tolist()):
            _shift_in_place(out[r], dy, dx)
    rest = ~shift
    for op in torch.unique(gids[rest]).tolist():
        sel = rest & (gids == op)
        rows = idx[sel.to(idx.device)]
        cs = [t[sel] for t in coeffs]
        for start in range(0, rows.numel(), CHUNK):
            sl = rows[start:start + CHUNK]
            _put(out, sl, _gather(out.index_select(0, sl), [t[start:start + CHUNK] for t in cs]))


def apply_program(images: torch.Tensor, op_ids: torch.Tensor, params: torch.Tensor,
                  *, validate: bool = True) -> torch.Tensor:
    """Apply program (op_ids int64 [n, K], params float32 [n, K, 3]) to uint8 [n, C, H, W] images.

    Steps run in order k = 0..K-1; op -1 leaves a sample unchanged. Returns a new uint8 tensor on
    the images' device. SamplePairing at step k mixes with the batch as it was before step k.
    """
    if validate:
        check_program(images, op_ids, params)
    dev = images.device
    out = images.clone(memory_format=torch.contiguous_format)
    ids_all = op_ids.to(dev)
    prm_all = params.to(dev)
    n = images.shape[0]
    for k in range(op_ids.shape[1]):
        ids = ids_all[:, k]
        present = torch.unique(ids).tolist()
        if present == [IDENTITY]:
            continue
        v, u = prm_all[:, k, 0], prm_all[:, k, 1:]
        partners = None
        if _SAMPLE_PAIRING in present:  # read the pre-step batch before any op of this step writes
            sp = (ids == _SAMPLE_PAIRING).nonzero().squeeze(1)
            partners = out.index_select(0, partner_index(u[sp, 0], n).to(dev))
        geo = torch.isin(ids, _GEO.to(dev))
        if bool(geo.any()):
            _geometric_step(out, geo.nonzero().squeeze(1), ids, v)
        for op in present:
            if op == IDENTITY or op in GEOMETRIC_OPS:
                continue
            idx = (ids == op).nonzero().squeeze(1)
            if op == _SAMPLE_PAIRING:
                _run(sample_pairing, out, idx, v[idx], partners)
            else:
                _run(IMPLS[op], out, idx, v[idx], u[idx])
    return out


def augment(images: torch.Tensor, policy: "Policy", generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a program from `policy` for this batch and apply it: -> (images, choice)."""
    s = policy.sample(int(images.shape[0]), generator)
    return apply_program(images, s.op_ids, s.params), s.choice


from .policy import Policy  # noqa: E402  (for the annotation only; policy does not import us)
