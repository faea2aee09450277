"""Formulas both backends evaluate: written once over plain arithmetic, so they run on torch
tensors and on DALI DataNodes alike (only `+ - * comparisons` and the given cos/sin/round).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .table import op_id

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma (PIL's "L" conversion), used by Color and Contrast
NUDGE = 1.0 / 1024  # pixels, see affine_coeffs
SHARPEN_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL ImageFilter.SMOOTH; /13

SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE = (
    op_id(n) for n in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"))
# Which of affine_coeffs' cross terms an op can make non-zero: (m01: the source column
# depends on the row, m10: the source row depends on the column). Where one is always 0, a
# backend may compute that index on one line instead of the whole image (same pixels: the
# product with 0 is an exact 0).
CROSS_TERMS: dict[int, tuple[bool, bool]] = {SHEAR_X: (True, False), SHEAR_Y: (False, True),
                                             TRANSLATE_X: (False, False), TRANSLATE_Y: (False, False),
                                             ROTATE: (True, True)}


def affine_coeffs(op: Any, v: Any, h: Any, w: Any, cos: Callable[[Any], Any], sin: Callable[[Any], Any],
                  rnd: Callable[[Any], Any]) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Destination -> source map (x_in = m00 x + m01 y + m02, y_in = m10 x + m11 y + m12) in
    continuous pixel coordinates (corner at 0, pixel centres at i + 0.5) for the geometric ops
    (ShearX, ShearY, TranslateX, TranslateY, Rotate) with physical parameter v.

    ShearX: x_in = x + v*y (PIL / torchvision AutoAugment, about the top-left corner);
    Translate: content moves by round(v * side) pixels (positive: right / down);
    Rotate: v degrees counter-clockwise on screen about the image centre.
    `op` and `v` are per-sample values; exactly one op applies per sample.
    The map is nudged by NUDGE pixels so that nearest-neighbour sampling never lands exactly on a
    pixel boundary (nice shear values put whole columns there, and then float rounding, which
    differs between backends, would decide the pixel).
    """
    sx = (op == SHEAR_X) * v
    sy = (op == SHEAR_Y) * v
    tx = rnd((op == TRANSLATE_X) * v * w)
    ty = rnd((op == TRANSLATE_Y) * v * h)
    r = (op == ROTATE) * v * (math.pi / 180.0)
    c, s = cos(r), sin(r)
    cx, cy = w * 0.5, h * 0.5
    m00 = c
    m01 = sx - s
    m02 = cx - c * cx + s * cy - tx + NUDGE
    m10 = sy + s
    m11 = c
    m12 = cy - s * cx - c * cy - ty + NUDGE
    return m00, m01, m02, m10, m11, m12
