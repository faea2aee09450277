"""Formulas both backends evaluate: written once over plain arithmetic, so they run on torch
tensors and on DALI DataNodes alike (only `+ - * comparisons` and the given cos/sin/round).
"""
from __future__ import annotations

import math
from typing import Any, Callable

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma (PIL's "L" conversion), used by Color and Contrast
NUDGE = 1.0 / 1024  # pixels, see affine_coeffs
SHARPEN_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL ImageFilter.SMOOTH; /13


def affine_coeffs(op: Any, v: Any, h: Any, w: Any, cos: Callable[[Any], Any], sin: Callable[[Any], Any],
                  rnd: Callable[[Any], Any]) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Destination -> source map (x_in = m00 x + m01 y + m02, y_in = m10 x + m11 y + m12) in
    continuous pixel coordinates (corner at 0, pixel centres at i + 0.5) for geometric op ids
    0..4 (ShearX, ShearY, TranslateX, TranslateY, Rotate) with physical parameter v.

    ShearX: x_in = x + v*y (PIL / torchvision AutoAugment, about the top-left corner);
    Translate: content moves by round(v * side) pixels (positive: right / down);
    Rotate: v degrees counter-clockwise on screen about the image centre.
    `op` and `v` are per-sample values; exactly one op applies per sample.
    The map is nudged by NUDGE pixels so that nearest-neighbour sampling never lands exactly on a
    pixel boundary (nice shear values put whole columns there, and then float rounding, which
    differs between backends, would decide the pixel).
    """
    sx = (op == 0) * v
    sy = (op == 1) * v
    tx = rnd((op == 2) * v * w)
    ty = rnd((op == 3) * v * h)
    r = (op == 4) * v * (math.pi / 180.0)
    c, s = cos(r), sin(r)
    cx, cy = w * 0.5, h * 0.5
    m00 = c
    m01 = sx - s
    m02 = cx - c * cx + s * cy - tx + NUDGE
    m10 = sy + s
    m11 = c
    m12 = cy - s * cx - c * cy - ty + NUDGE
    return m00, m01, m02, m10, m11, m12
